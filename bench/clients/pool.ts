/**
 * A pool of workload client processes (workload.ts), driven together: `total` connections spread
 * over `processes` child processes, each connection a distinct peer of the server.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ClientMode, FromClient, ToClient } from './workload.js';

const clientScript = fileURLToPath(new URL('./workload.js', import.meta.url));
const IPC_SLACK_MS = 10_000;

export interface Opened {
  /** Per call, ms from request to its first complete message (only calls that got one). */
  latencies: number[];
  errors: string[];
}

export interface Arrived {
  /** Absolute times (ms since the epoch) at which each connection got its n-th message. */
  times: number[];
  missing: number;
  errors: string[];
}

export class ClientPool {
  readonly #children: ChildProcess[];
  readonly #counts: number[];
  readonly total: number;

  private constructor(children: ChildProcess[], counts: number[]) {
    this.#children = children;
    this.#counts = counts;
    this.total = counts.reduce((a, b) => a + b, 0);
  }

  /** Spawns min(processes, total) client processes, ready for `connect`. */
  static async start(total: number, processes: number): Promise<ClientPool> {
    const n = Math.max(1, Math.min(processes, total));
    const counts = Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
    const children = counts.map(() => fork(clientScript, ['--bench-client'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    await Promise.all(children.map((c) => new Promise<void>((ok, bad) => (c.pid !== undefined ? ok() : c.once('error', bad)))));
    return new ClientPool(children, counts);
  }

  /** Sends `msg(i)` to every child and collects one reply each (in child order). */
  async #all<R extends FromClient>(msg: (i: number) => ToClient, expect: R['op'], timeoutMs: number): Promise<R[]> {
    return Promise.all(
      this.#children.map(
        (c, i) =>
          new Promise<R>((resolve, reject) => {
            const timer = setTimeout(() => done(new Error(`workload client ${c.pid} did not answer ${expect} in ${timeoutMs} ms`)), timeoutMs);
            const onMsg = (m: FromClient): void => {
              if (m.op === 'fatal') return done(new Error(`workload client ${c.pid} failed: ${m.error}`));
              if (m.op === expect) done(undefined, m as R);
            };
            const onExit = (code: number | null): void => done(new Error(`workload client ${c.pid} exited with ${code}`));
            function done(err: Error | undefined, r?: R): void {
              clearTimeout(timer);
              c.off('message', onMsg);
              c.off('exit', onExit);
              if (err) reject(err);
              else resolve(r!);
            }
            c.on('message', onMsg);
            c.once('exit', onExit);
            c.send(msg(i));
          }),
      ),
    );
  }

  /** Opens every connection; resolves with the slowest process's connect time. */
  async connect(socketPath: string, mode: ClientMode, timeoutMs: number, frameBytes?: number): Promise<{ ms: number }> {
    const rs = await this.#all<Extract<FromClient, { op: 'connected' }>>(
      (i) => ({ op: 'connect', socketPath, count: this.#counts[i]!, mode, ...(frameBytes !== undefined ? { frameBytes } : {}) }),
      'connected',
      timeoutMs + IPC_SLACK_MS,
    );
    const errors = rs.flatMap((r) => r.errors);
    if (errors.length > 0) throw new Error(`${errors.length} of ${this.total} connections to ${socketPath} failed: ${errors[0]}`);
    return { ms: Math.max(...rs.map((r) => r.ms)) };
  }

  /** Opens one server-streaming call per connection, all at once; waits for every first message. */
  async open(path: string, timeoutMs: number): Promise<Opened> {
    const rs = await this.#all<Extract<FromClient, { op: 'opened' }>>(() => ({ op: 'open', path, timeoutMs }), 'opened', timeoutMs + IPC_SLACK_MS);
    return { latencies: rs.flatMap((r) => r.latencies), errors: rs.flatMap((r) => r.errors) };
  }

  /** Waits until every connection has its n-th message (or `timeoutMs`). */
  async awaitMessage(n: number, timeoutMs: number): Promise<Arrived> {
    const rs = await this.#all<Extract<FromClient, { op: 'arrived' }>>(() => ({ op: 'await', n, timeoutMs }), 'arrived', timeoutMs + IPC_SLACK_MS);
    return { times: rs.flatMap((r) => r.times), missing: rs.reduce((a, r) => a + r.missing, 0), errors: rs.flatMap((r) => r.errors) };
  }

  /** Closes every connection and ends the processes (SIGKILL after a grace period). */
  async close(): Promise<void> {
    await Promise.all(
      this.#children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const kill = setTimeout(() => c.kill('SIGKILL'), 2000);
            c.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            try {
              c.send({ op: 'close' } satisfies ToClient);
            } catch {
              c.kill('SIGKILL');
            }
          }),
      ),
    );
  }
}

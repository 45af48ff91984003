/**
 * Reconnect storm clients spread over several child processes, so the measuring side is not the
 * bottleneck: one Node process running 1,000 TLS handshakes and protobuf decodes on one thread
 * saturates long before the server does (the server's main thread was 70% idle in such a run).
 *
 * Each child (`fork` of this file) receives its share of the agent identities and prepares one
 * raw HTTP/2 SyncAuthorized client per identity (rawsync.ts: its TLS context, ~5 ms of key and
 * CA parsing, is what a reconnecting agent already holds), waits for a common start time on the
 * wall clock (so every child starts together and latencies from different processes share one
 * origin), then connects and opens SyncAuthorized on every client at once, checks each first
 * message and reports the latencies. Two kinds of storm:
 * - full: agents that hold nothing (first start, or an agent restart) get full snapshots;
 * - resume: agents that hold the entries of their last snapshot send them (id + revision, as
 *   spindle-agent does when its stream drops, e.g. on a server restart) and get the difference.
 * Streams stay open until the parent says `disconnect` or `close` (idle CPU is measured with
 * them open).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import type { AgentIdentity, ServerTarget } from './agentclient.js';
import { rawSyncClient, secureContextFor, type KnownState, type RawSyncClient } from './rawsync.js';

type ToChild =
  | { type: 'init'; target: ServerTarget; ids: AgentIdentity[]; expectEntries: number }
  | { type: 'go'; at: number; resume: boolean }
  | { type: 'disconnect' }
  | { type: 'close' };
type FromChild = { type: 'ready' } | { type: 'done'; latencies: number[]; errors: string[]; cpuMs: number } | { type: 'disconnected' };

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
const epochNow = (): number => performance.timeOrigin + performance.now();

export interface Storm {
  /**
   * Starts every client together; resolves with each connection's time to its first message
   * (ms) and the CPU time the client processes spent on it (ms, user + system, all processes).
   * `resume`: each client sends what its previous run's first message gave it.
   */
  run(opts: { resume: boolean }): Promise<{ latencies: number[]; clientCpuMs: number }>;
  /** Closes every connection; the clients keep what they hold, for a resume run. */
  disconnect(): Promise<void>;
  /** Closes every stream and ends the children. */
  close(): Promise<void>;
}

/** Forks `procs` client processes sharing `ids` round-robin; resolves once all are ready. */
export async function startStorm(target: ServerTarget, ids: readonly AgentIdentity[], expectEntries: number, procs: number): Promise<Storm> {
  const n = Math.max(1, Math.min(procs, ids.length));
  const children: ChildProcess[] = [];
  const waitFor = <T extends FromChild['type']>(c: ChildProcess, type: T): Promise<Extract<FromChild, { type: T }>> =>
    new Promise((resolve, reject) => {
      const onMsg = (m: FromChild): void => {
        if (m.type !== type) return;
        cleanup();
        resolve(m as Extract<FromChild, { type: T }>);
      };
      const onExit = (code: number | null): void => {
        cleanup();
        reject(new Error(`storm client process exited with ${code} while waiting for ${type}`));
      };
      const cleanup = (): void => {
        c.off('message', onMsg);
        c.off('exit', onExit);
      };
      c.on('message', onMsg);
      c.on('exit', onExit);
    });
  const kill = (): void => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  try {
    for (let i = 0; i < n; i++) {
      // BENCH_STORM_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"): profile the clients.
      const execArgv = process.env.BENCH_STORM_NODE_ARGS?.split(' ').filter((a) => a !== '') ?? [];
      const c = fork(fileURLToPath(import.meta.url), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
      children.push(c);
    }
    await Promise.all(
      children.map((c, i) => {
        const ready = waitFor(c, 'ready');
        const share = ids.filter((_, j) => j % n === i);
        c.send({ type: 'init', target, ids: share, expectEntries } satisfies ToChild);
        return ready;
      }),
    );
  } catch (err) {
    kill();
    throw err;
  }
  return {
    async run({ resume }) {
      // Far enough ahead for the message to reach every child.
      const at = epochNow() + 100;
      const done = children.map((c) => waitFor(c, 'done'));
      for (const c of children) c.send({ type: 'go', at, resume } satisfies ToChild);
      const results = await Promise.all(done);
      const errors = results.flatMap((r) => r.errors);
      if (errors.length > 0) throw new Error(`${errors.length} storm connections failed, e.g.: ${errors[0]}`);
      return { latencies: results.flatMap((r) => r.latencies), clientCpuMs: results.reduce((a, r) => a + r.cpuMs, 0) };
    },
    async disconnect() {
      const done = children.map((c) => waitFor(c, 'disconnected'));
      for (const c of children) c.send({ type: 'disconnect' } satisfies ToChild);
      await Promise.all(done);
    },
    async close() {
      await Promise.all(
        children.map(async (c) => {
          if (c.exitCode !== null || c.signalCode !== null) return;
          const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
          const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
          try {
            c.send({ type: 'close' } satisfies ToChild);
          } catch {
            c.kill('SIGKILL');
          }
          await exited;
          clearTimeout(timer);
        }),
      );
    },
  };
}

/** What a client holds after a first message (for the next resume run). */
function held(m: SyncAuthorizedResponse): KnownState {
  return {
    entries: m.entries.map((e) => ({ id: e.id, revisionNumber: BigInt(e.revisionNumber) })),
    bundleSequences: new Map(m.bundles.map((b) => [b.trustDomain, BigInt(b.sequence)])),
    revision: BigInt(m.revision),
  };
}

/** The child side. */
function child(): void {
  let init: Extract<ToChild, { type: 'init' }> | undefined;
  let clients: RawSyncClient[] = [];
  let state: Array<KnownState | undefined> = [];
  const send = (m: FromChild): void => void process.send!(m);
  process.on('message', (m: ToChild) => {
    if (m.type === 'init') {
      init = m;
      // IPC turns Buffers into Uint8Arrays under some serializations: normalise.
      for (const id of init.ids) id.chain = id.chain.map((c) => Buffer.from(c));
      init.target.bundle = init.target.bundle.map((c) => Buffer.from(c));
      const target = init.target;
      clients = init.ids.map((id) => rawSyncClient(target, secureContextFor(target, id)));
      state = init.ids.map(() => undefined);
      send({ type: 'ready' });
    } else if (m.type === 'go') {
      const { ids, expectEntries } = init!;
      setTimeout(() => {
        void (async () => {
          const latencies: number[] = [];
          const errors: string[] = [];
          const cpu0 = process.cpuUsage();
          await Promise.all(
            ids.map(async (id, i) => {
              try {
                const known = m.resume ? state[i] : undefined;
                if (m.resume && known === undefined) throw new Error('nothing held to resume from');
                const first = await clients[i]!.sync(known);
                latencies.push(epochNow() - m.at);
                if (!m.resume) {
                  if (!first.snapshot || first.entries.length !== expectEntries) {
                    errors.push(`agent ${id.agentId} got ${first.entries.length} entries (snapshot ${first.snapshot}), expected a snapshot of ${expectEntries}`);
                  }
                  state[i] = held(first);
                } else if (first.snapshot || first.entries.length !== 0 || first.removedEntryIds.length !== 0) {
                  errors.push(`agent ${id.agentId} resumed with nothing changed but got snapshot=${first.snapshot}, ${first.entries.length} entries, ${first.removedEntryIds.length} removals`);
                }
              } catch (err) {
                errors.push(`agent ${id.agentId}: ${(err as Error).message}`);
              }
            }),
          );
          const cpu = process.cpuUsage(cpu0);
          send({ type: 'done', latencies, errors, cpuMs: (cpu.user + cpu.system) / 1000 });
        })();
      }, Math.max(0, m.at - epochNow()));
    } else if (m.type === 'disconnect') {
      for (const c of clients) c.close();
      send({ type: 'disconnected' });
    } else if (m.type === 'close') {
      for (const c of clients) c.close();
      process.disconnect();
      setTimeout(() => process.exit(0), 200).unref();
    }
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send !== undefined) child();

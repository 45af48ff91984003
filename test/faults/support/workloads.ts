/**
 * Runs watcher.ts (Workload API watches in a separate process, optionally as another uid so the
 * agent attests it as a different workload) and collects its JSON-line events.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { forOtherUid } from '../../support/otheruid.js';
import { fileURLToPath } from 'node:url';

export const watcherScript = fileURLToPath(new URL('./watcher.js', import.meta.url));

export interface UpdateEvent {
  t: 'update';
  i: number;
  wall: number;
  ids: string[];
  serials: string[];
  notAfter: number[];
  bundle: number;
}
export interface ErrorEvent {
  t: 'error';
  i: number;
  wall: number;
  code: number;
  message: string;
  final: boolean;
}
export interface SummaryEvent {
  t: 'summary';
  wall: number;
  updates: number;
  errors: number;
  withIdentity: number;
  expired: number;
}
export type WatcherEvent = UpdateEvent | ErrorEvent | SummaryEvent;

export interface WatcherProcess {
  proc: ChildProcess;
  events: WatcherEvent[];
  stderr(): string;
  /** The first event (at index >= from) matching pred. */
  waitFor<E extends WatcherEvent>(pred: (e: WatcherEvent) => e is E, timeoutMs: number, what: string, from?: number): Promise<E & { index: number }>;
  waitFor(pred: (e: WatcherEvent) => boolean, timeoutMs: number, what: string, from?: number): Promise<WatcherEvent & { index: number }>;
  stop(): Promise<void>;
}

export function startWatchers(opts: {
  address: string;
  count?: number;
  backoffMs?: number;
  /** Longest retry interval of the SDK clients; default max(backoffMs, 1000). */
  maxBackoffMs?: number;
  summary?: boolean;
  uid?: number;
  channelBackoffMs?: number;
}): WatcherProcess {
  const args = [opts.uid !== undefined ? forOtherUid(watcherScript) : watcherScript, opts.address, String(opts.count ?? 1), String(opts.backoffMs ?? 200), ...(opts.summary ? ['summary'] : [])];
  const proc = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: '/',
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...(opts.channelBackoffMs ? { WATCHER_CHANNEL_BACKOFF_MS: String(opts.channelBackoffMs) } : {}), ...(opts.maxBackoffMs ? { WATCHER_MAX_BACKOFF_MS: String(opts.maxBackoffMs) } : {}) },
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
  });
  const events: WatcherEvent[] = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() === '') continue;
      try {
        events.push(JSON.parse(line) as WatcherEvent);
      } catch {
        err += `unparsable line: ${line}\n`;
      }
    }
    for (const f of waiters.splice(0)) f();
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const waitFor = (pred: (e: WatcherEvent) => boolean, timeoutMs: number, what: string, from = 0): Promise<WatcherEvent & { index: number }> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const tail = events.slice(-5).map((e) => JSON.stringify(e)).join('\n');
        reject(new Error(`no ${what} within ${timeoutMs} ms (${events.length} events; last:\n${tail}\nstderr: ${err.slice(-1000)})`));
      }, timeoutMs);
      const check = (): void => {
        for (let i = from; i < events.length; i++) {
          if (pred(events[i]!)) {
            clearTimeout(timer);
            resolve({ ...events[i]!, index: i });
            return;
          }
        }
        if (proc.exitCode !== null || proc.signalCode !== null) {
          clearTimeout(timer);
          reject(new Error(`watcher process exited (${proc.exitCode ?? proc.signalCode}) before ${what}: ${err.slice(-1000)}`));
          return;
        }
        waiters.push(check);
      };
      check();
    });
  proc.once('exit', () => {
    for (const f of waiters.splice(0)) f();
  });
  return {
    proc,
    events,
    stderr: () => err,
    waitFor: waitFor as WatcherProcess['waitFor'],
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
        proc.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        proc.kill('SIGTERM');
      }),
  };
}

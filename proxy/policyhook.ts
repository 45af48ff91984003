/**
 * Where the policy engine plugs into the proxy, and how a listener's policy file follows edits.
 *
 * `loadDecider(file)` turns a listener's `policy:` file into a PolicyDecider (proxy/decision.ts)
 * with the policy engine (proxy/policy/). What the data plane relies on:
 * - it reads and checks the whole file, and rejects (a PolicyError naming file:line:col) on any
 *   problem: the caller keeps the decider it had;
 * - the returned decider is used synchronously on every connection or request of the listeners
 *   whose `policy:` is this file, with `facts.listener` set to the listener's name;
 * - `needsHttp(listener)` true on a listener without `http: true` is a config error at start and
 *   a refused reload later.
 *
 * `watchPolicy` keeps a listener's decider current: fs.watch on the file's directory (editors
 * replace files by rename), debounced; a file that no longer loads is logged and the previous
 * decider stays; live connections and requests in flight are never touched (TCP decisions are
 * made once per connection, HTTP ones per request from the decider current at that moment).
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { PolicyDecider } from './decision.js';
import { loadPolicyFile } from './policy/policy.js';

/** Loads a policy file into a decider (see the module comment). */
export async function loadDecider(file: string): Promise<PolicyDecider> {
  return loadPolicyFile(file);
}

/** A decider that can be swapped while listeners hold it. */
export class DeciderRef {
  constructor(public current: PolicyDecider) {}
}

export interface PolicyWatchLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface PolicyWatch {
  close(): void;
  /** Resolves after the next reload attempt (for tests and logs). */
  readonly reloads: number;
}

/**
 * Reloads `file` into `ref` when it changes (debounced by `debounceMs`). `check` may refuse a
 * loaded decider (throws); the old one then stays. `load` defaults to loadDecider.
 */
export function watchPolicy(
  file: string,
  ref: DeciderRef,
  log: PolicyWatchLog,
  opts: { debounceMs?: number; load?: (file: string) => Promise<PolicyDecider>; check?: (d: PolicyDecider) => void; onReload?: (ok: boolean) => void } = {},
): PolicyWatch {
  const load = opts.load ?? loadDecider;
  const debounceMs = opts.debounceMs ?? 250;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let running = false;
  let again = false;
  let reloads = 0;
  const name = basename(file);
  const reload = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        let ok = false;
        try {
          const next = await load(file);
          opts.check?.(next);
          if (!closed) {
            ref.current = next;
            ok = true;
            log.info({ policy: file }, 'policy reloaded');
          }
        } catch (err) {
          log.error({ policy: file, err: (err as Error).message }, 'policy reload failed; keeping the previous policy');
        }
        reloads++;
        opts.onReload?.(ok);
      } while (again && !closed);
    } finally {
      running = false;
    }
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
      if (closed || (changed !== null && changed !== name)) return;
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        void reload();
      }, debounceMs);
    });
    watcher.on('error', (err) => log.error({ policy: file, err: err.message }, 'watching the policy file failed; it will not be reloaded'));
  } catch (err) {
    log.error({ policy: file, err: (err as Error).message }, 'cannot watch the policy file; it will not be reloaded');
  }
  return {
    close(): void {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      watcher?.close();
    },
    get reloads(): number {
      return reloads;
    },
  };
}

/** Spawning a program and waiting for a line that says it is ready. */
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Spawns `bin args` (optionally under `umask 000`, as another uid, in `cwd`) and resolves once
 * its output (stdout or stderr) contains `ready`; rejects if it exits first or takes longer
 * than `timeoutMs` (default 30 s). The caller stops the process.
 */
export function startUntilReady(
  bin: string,
  args: string[],
  ready: string,
  opts: { umask000?: boolean; uid?: number; cwd?: string; timeoutMs?: number } = {},
): { proc: ChildProcess; ready: Promise<{ proc: ChildProcess; log: () => string }> } {
  const [cmd, argv] = opts.umask000 ? ['sh', ['-c', 'umask 000; exec "$0" "$@"', bin, ...args]] : [bin, args];
  const proc = spawn(cmd as string, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}), ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}) });
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let log = '';
  const whenReady = new Promise<{ proc: ChildProcess; log: () => string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} not ready in ${timeoutMs / 1000} s:\n${log}`)), timeoutMs);
    const on = (d: Buffer): void => {
      log += d.toString();
      if (log.includes(ready)) {
        clearTimeout(timer);
        resolve({ proc, log: () => log });
      }
    };
    proc.stdout!.on('data', on);
    proc.stderr!.on('data', on);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${bin} exited ${code}:\n${log}`));
    });
  });
  return { proc, ready: whenReady };
}

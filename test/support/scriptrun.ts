/**
 * A script under dist/scripts/ (the quickstart, the mesh demo) run as a real process for tests:
 * its own process group (so a failed test kills it and the server, agent and workloads it
 * started), stdout and stderr collected, `waitFor` a pattern in stdout, `interrupt` as Ctrl-C.
 */
import { after } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';

export interface ScriptRun {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  /** Resolves with the first match of `re` in stdout; on timeout or exit, interrupts the script and throws with its output. */
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>;
  /** Sends SIGINT and resolves with the exit code. */
  interrupt(): Promise<number | null>;
  /** The exit code, once the process exited and its stdout ended (or 2 s later). */
  exited: Promise<number | null>;
}

/** Every script started, so a failed test never leaves one (and what it started) running. */
const started: ChildProcess[] = [];
// Registered when the test file imports this module (top level: after the whole file).
after(() => {
  for (const c of started) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    try {
      process.kill(-c.pid!, 'SIGKILL'); // its own process group: the script and what it started
    } catch {
      // already gone
    }
  }
});

export function runScript(name: string, js: string, args: string[], opts: { cwd: string; env?: Record<string, string> }): ScriptRun {
  const child = spawn(process.execPath, [js, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  started.push(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  // 'exit', not 'close': a server or agent left behind would hold the output pipes open.
  const exited = new Promise<number | null>((res) =>
    child.once('exit', (code) => {
      const ended = new Promise((r) => child.stdout!.once('end', r));
      void Promise.race([ended, new Promise((r) => setTimeout(r, 2_000))]).then(() => res(code));
    }),
  );
  /** On a failed expectation: Ctrl-C (which stops what it started), SIGKILL if that hangs. */
  const abandon = async (): Promise<void> => {
    child.kill('SIGINT');
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  };
  return {
    child,
    out: () => out,
    err: () => err,
    exited,
    async waitFor(re, ms = 45_000) {
      const until = Date.now() + ms;
      for (;;) {
        const m = re.exec(out);
        if (m) return m;
        if (child.exitCode !== null || Date.now() > until) {
          await abandon();
          throw new Error(`${name} output never matched ${re}\n--- stdout\n${out}\n--- stderr\n${err}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async interrupt() {
      child.kill('SIGINT');
      return exited;
    },
  };
}

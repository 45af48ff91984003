/**
 * A local spindle-server and spindle-agent run as child processes by the scripts that show
 * Spindle on one machine (`npm start`: scripts/start.ts; `npm run demo:mesh`:
 * scripts/demomesh.ts). What they share:
 * - `start` runs bin/spindle-server or bin/spindle-agent logging to <state>/<name>.log and
 *   resolves when the log says ready; a process that does not start is reported with what it
 *   printed on stderr (fatal start errors go there, not to the log) and its log's last lines;
 * - a process that exits while the script runs (not through the script stopping it) is reported
 *   once through `onStoppedOnItsOwn`, with the last ERROR line of its log (its cause);
 * - `stopAll` stops every started process, last started first (SIGTERM, SIGKILL after 10 s);
 *   any still running when the script exits get SIGTERM;
 * - `cli` runs `spindle-server <args> -socketPath <admin socket>`; `joinToken` makes a join
 *   token for a node alias; `sh` quotes a word so printed commands paste into a shell.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const serverBin = join(repoRoot, 'bin', 'spindle-server');
export const agentBin = join(repoRoot, 'bin', 'spindle-agent');

/** Quotes a word for a POSIX shell when it needs it, so printed commands paste as they are. */
export function sh(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export interface LocalStackOptions {
  /** Where <name>.log files go. */
  state: string;
  /** The server's admin socket (for `cli`). */
  adminSocket: string;
  /**
   * A server or agent exited while the script runs (not stopped by `stopAll`): `name` is
   * `server` or `agent`, `description` says how it ended and quotes its log.
   */
  onStoppedOnItsOwn: (name: string, description: string) => void;
}

export class LocalStack {
  readonly children: ChildProcess[] = [];
  #stopping = false;
  readonly #o: LocalStackOptions;

  constructor(o: LocalStackOptions) {
    this.#o = o;
    // The script dying without stopping them (an uncaught error, a closed stdout pipe) must not
    // leave a server and an agent running in the background.
    process.once('exit', () => {
      for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    });
  }

  /** True once stopAll has begun. */
  get stopping(): boolean {
    return this.#stopping;
  }

  cli(args: string[]): SpawnSyncReturns<string> {
    return spawnSync(serverBin, [...args, '-socketPath', this.#o.adminSocket], { encoding: 'utf8' });
  }

  /** A fresh join token whose agent gets the alias `nodeId` (entries are parented to it). */
  joinToken(nodeId: string): string {
    const gen = this.cli(['token', 'generate', '-spiffeID', nodeId]);
    const tok = /^Token: (\S+)$/m.exec(gen.stdout);
    if (!tok) throw new Error(`could not generate a join token: ${(gen.stderr || gen.stdout).trim()}`);
    return tok[1]!;
  }

  /**
   * Starts a server or agent process logging to <state>/<name>.log; resolves when the log shows
   * `ready`. On failure the error carries what the process printed on stderr and the log's last
   * lines (also as `output`), so the cause is in front of the user.
   */
  start(bin: string, args: string[], name: string, ready: string): Promise<ChildProcess> {
    const logFile = join(this.#o.state, `${name}.log`);
    writeFileSync(logFile, '');
    const child = spawn(bin, [...args, '-logFile', logFile], { stdio: ['ignore', 'inherit', 'pipe'] });
    this.children.push(child);
    let stderr = '';
    let started = false;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      if (started) process.stderr.write(chunk);
      else stderr += chunk;
    });
    return new Promise((resolveReady, reject) => {
      const since = Date.now();
      const fail = (why: string): void => {
        clearInterval(poll);
        this.children.splice(this.children.indexOf(child), 1);
        if (child.exitCode === null) child.kill('SIGKILL');
        const log = readFileSync(logFile, 'utf8');
        const parts = [stderr.trim() ? `${name} said:\n${tail(stderr, 15)}` : '', log.trim() ? `last lines of ${logFile}:\n${tail(log, 15)}` : `${logFile} is empty`];
        reject(Object.assign(new Error(`${name} ${why}\n${parts.filter(Boolean).join('\n')}`), { output: stderr + log }));
      };
      const poll = setInterval(() => {
        const log = readFileSync(logFile, 'utf8');
        if (log.includes(ready)) {
          clearInterval(poll);
          started = true;
          if (stderr) process.stderr.write(stderr);
          child.once('exit', (code, signal) => this.#stoppedOnItsOwn(name, logFile, code, signal));
          resolveReady(child);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          // Let the last stderr bytes arrive before reporting them.
          clearInterval(poll);
          child.stderr!.once('close', () => fail(`did not start (exit code ${child.exitCode ?? child.signalCode}).`));
          if (child.stderr!.closed) fail(`did not start (exit code ${child.exitCode ?? child.signalCode}).`);
        } else if (Date.now() - since > 30_000) {
          fail('did not report ready within 30 s.');
        }
      }, 100);
    });
  }

  /**
   * A server or agent that exits while the script runs (not through stopAll): says which, with
   * the last ERROR line of its log (the cause: an evicted agent says so there; the lines after
   * it are its shutdown), else its last line.
   */
  #stoppedOnItsOwn(name: string, logFile: string, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#stopping) return;
    // Ctrl-C in a terminal signals the whole process group: the server and agent get SIGINT as
    // the script does, and one of them may be seen exiting before the script's own handler runs.
    const now = (): void => this.#stoppedOnItsOwnNow(name, logFile, code, signal);
    if (code === 0 || signal === 'SIGINT' || signal === 'SIGTERM') setTimeout(now, 1_000);
    else now();
  }

  #stoppedOnItsOwnNow(name: string, logFile: string, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#stopping) return;
    let last = '';
    let which = 'last line';
    try {
      const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n');
      const error = lines.findLast((l) => / (ERROR|FATAL) /.test(l));
      if (error !== undefined) [last, which] = [error, 'last error'];
      else last = lines[lines.length - 1] ?? '';
    } catch {
      // The log went away: the exit status alone is still worth saying.
    }
    this.#o.onStoppedOnItsOwn(name, `spindle-${name} stopped on its own (${code !== null ? `exit code ${code}` : `signal ${signal}`})${last ? `; the ${which} in ${logFile}:\n  ${last}` : ''}`);
  }

  /** From now on an exit is expected (the script is stopping other things first): not reported. */
  beginStop(): void {
    this.#stopping = true;
  }

  /** Stops every started process, last started first (the agent before the server). */
  async stopAll(): Promise<void> {
    this.#stopping = true;
    for (const c of [...this.children].reverse()) await stopChild(c);
  }
}

/** SIGTERM, then SIGKILL after `killAfterMs`; resolves when the process has exited. */
export function stopChild(c: ChildProcess, killAfterMs = 10_000): Promise<void> {
  return new Promise<void>((res) => {
    if (c.exitCode !== null || c.signalCode !== null) return res();
    const kill = setTimeout(() => c.kill('SIGKILL'), killAfterMs);
    c.once('exit', () => {
      clearTimeout(kill);
      res();
    });
    c.kill('SIGTERM');
  });
}

/**
 * Real spindle-server processes for end-to-end tests: started through bin/spindle-server with
 * flags in a temp dir, ready when the log says so, stopped with SIGTERM (or SIGKILL).
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forOtherUid } from './otheruid.js';
import { serverBin } from './paths.js';

export { agentBin, repoRoot, serverBin } from './paths.js';

/** A TCP port that was free a moment ago on 127.0.0.1. */
/** Temp dirs made by these helpers: removed when the test process exits (SPINDLE_E2E_KEEP=1 keeps them). */
const madeDirs = new Set<string>();

/** A fresh temp dir under os.tmpdir(), removed at process exit. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (madeDirs.size === 0) {
    process.once('exit', () => {
      if (process.env['SPINDLE_E2E_KEEP']) return;
      for (const d of madeDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  madeDirs.add(dir);
  return dir;
}

const handedOut = new Set<number>();

/** A port nothing listens on now, never the same one twice in this process (callers often take
 * several before binding any, and the kernel may offer a just-closed port again). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await pickPort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function pickPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface ServerProcess {
  dir: string;
  /** The loopback address the agent API listens on (127.0.0.1 unless given). */
  host: string;
  dataDir: string;
  socketPath: string;
  port: number;
  trustDomain: string;
  proc: ChildProcess;
  /** Everything the process wrote to stderr so far. */
  log(): string;
  /** Runs an admin CLI command against this server (adds -socketPath). */
  cli(args: string[], opts?: { input?: string; uid?: number; gid?: number }): SpawnSyncReturns<string>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startServerProcess(opts: { dir?: string; trustDomain?: string; port?: number; bindAddress?: string; extraArgs?: string[] } = {}): Promise<ServerProcess> {
  const host = opts.bindAddress ?? '127.0.0.1';
  const dir = opts.dir ?? tempDir('spindle-e2e-');
  const dataDir = join(dir, 'data');
  const socketPath = join(dir, 'admin', 'api.sock');
  const port = opts.port ?? (await freePort());
  const trustDomain = opts.trustDomain ?? 'example.org';
  const args = ['run', '-trustDomain', trustDomain, '-dataDir', dataDir, '-socketPath', socketPath, '-bindAddress', host, '-serverPort', String(port), '-logLevel', 'DEBUG', ...(opts.extraArgs ?? [])];
  const proc = spawn(serverBin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not become ready in 20 s:\n${log}`)), 20_000);
    const check = (): void => {
      if (log.includes('spindle-server is ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before it was ready:\n${log}`));
    });
  });
  return {
    dir,
    host,
    dataDir,
    socketPath,
    port,
    trustDomain,
    proc,
    log: () => log,
    cli: (cliArgs, o = {}) =>
      // Another uid runs the CLI from where it can read it (a copy when it cannot enter the checkout).
      spawnSync(o.uid !== undefined ? forOtherUid(serverBin) : serverBin, [...cliArgs, '-socketPath', socketPath], {
        encoding: 'utf8',
        input: o.input,
        ...(o.uid !== undefined ? { uid: o.uid, gid: o.gid ?? o.uid } : {}),
        timeout: 20_000,
      }),
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        // Already gone (exited, or killed by a signal: then exitCode stays null).
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode);
        proc.once('exit', (code) => resolve(code));
        proc.kill(signal);
      }),
  };
}

/**
 * Lean launchers for the server-side benchmarks: real spindle-server / spindle-agent processes
 * (bin/ entry points, INFO logging so log volume does not distort timings), ready when their
 * log says so. Only the tail of each log is kept (for error messages).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentBin, freePort, repoRoot, serverBin } from '../../test/support/serverproc.js';

export { freePort, repoRoot };
const LOG_TAIL = 16 * 1024;

export interface Proc {
  proc: ChildProcess;
  pid: number;
  /** Milliseconds from spawn to the ready log line. */
  readyMs: number;
  log(): string;
  stop(): Promise<void>;
}

/** Spawns `bin args`, resolves once `readyText` appears in its output. */
async function launch(bin: string, args: string[], cwd: string, readyText: string, timeoutMs: number, nodeArgs: string[] = []): Promise<Proc> {
  const t0 = performance.now();
  const proc = nodeArgs.length > 0 ? spawn(process.execPath, [...nodeArgs, bin, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(bin, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  let seen = false;
  let readyAt = 0;
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer): void => {
    tail = (tail + d.toString()).slice(-LOG_TAIL);
    if (!seen && tail.includes(readyText)) {
      seen = true;
      readyAt = performance.now();
      for (const w of waiters.splice(0)) w();
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
      proc.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      proc.kill('SIGTERM');
    });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${bin} did not become ready in ${timeoutMs} ms:\n${tail}`)), timeoutMs);
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${bin}: ${err.message}`));
      });
      proc.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`${bin} exited with ${code ?? sig} before it was ready:\n${tail}`));
      });
      waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { proc, pid: proc.pid!, readyMs: readyAt - t0, log: () => tail, stop };
}

export interface BenchServer extends Proc {
  dir: string;
  dataDir: string;
  /** The SQLite datastore file. */
  dbPath: string;
  socketPath: string;
  port: number;
  trustDomain: string;
}

export const TRUST_DOMAIN = 'bench.example';

/** Extra node flags for every server process started after this call (e.g. --cpu-prof). */
let serverNodeArgs: string[] = [];
export function setServerNodeArgs(args: string[]): void {
  serverNodeArgs = [...args];
}

/** Server layout inside `dir` (a temp dir owned by the caller). */
export function serverPaths(dir: string): { dataDir: string; dbPath: string; socketPath: string } {
  const dataDir = join(dir, 'data');
  return { dataDir, dbPath: join(dataDir, 'datastore.sqlite3'), socketPath: join(dir, 'admin', 'api.sock') };
}

/**
 * `postgres`: a PostgreSQL connection string; the server's datastore is then that database
 * (a server config file in `dir` sets the DataStore), else the SQLite file in its data dir.
 */
export async function startBenchServer(opts: { dir: string; port?: number; nodeArgs?: string[]; timeoutMs?: number; postgres?: string }): Promise<BenchServer> {
  mkdirSync(opts.dir, { recursive: true });
  const { dataDir, dbPath, socketPath } = serverPaths(opts.dir);
  const port = opts.port ?? (await freePort());
  const args = ['run', '-trustDomain', TRUST_DOMAIN, '-dataDir', dataDir, '-socketPath', socketPath, '-bindAddress', '127.0.0.1', '-serverPort', String(port), '-logLevel', 'INFO'];
  if (opts.postgres !== undefined) {
    const config = join(opts.dir, 'server.json');
    const datastore = { DataStore: { sql: { plugin_data: { database_type: 'postgres', connection_string: opts.postgres } } } };
    writeFileSync(config, `${JSON.stringify({ plugins: datastore })}\n`);
    args.push('-config', config);
  }
  const p = await launch(serverBin, args, opts.dir, 'spindle-server is ready', opts.timeoutMs ?? 60_000, opts.nodeArgs ?? serverNodeArgs);
  return { ...p, dir: opts.dir, dataDir, dbPath, socketPath, port, trustDomain: TRUST_DOMAIN };
}

export interface BenchAgent extends Proc {
  /** Workload API socket path. */
  socketPath: string;
}

/** An agent process attesting with `joinToken`; `bundlePem`: the server's X.509 authorities. */
export async function startBenchAgent(opts: { dir: string; server: BenchServer; joinToken: string; bundlePem: string; config?: string }): Promise<BenchAgent> {
  chmodSync(opts.dir, 0o755);
  const socketDir = join(opts.dir, 'public');
  mkdirSync(socketDir, { recursive: true, mode: 0o755 });
  const socketPath = join(socketDir, 'api.sock');
  const bundlePath = join(opts.dir, 'bundle.pem');
  writeFileSync(bundlePath, opts.bundlePem);
  const args = [
    'run',
    '-trustDomain', opts.server.trustDomain,
    '-serverAddress', '127.0.0.1',
    '-serverPort', String(opts.server.port),
    '-socketPath', socketPath,
    '-dataDir', join(opts.dir, 'data'),
    '-trustBundle', bundlePath,
    '-logLevel', 'INFO',
    '-joinToken', opts.joinToken,
  ];
  if (opts.config !== undefined) {
    const configPath = join(opts.dir, 'agent.yaml');
    writeFileSync(configPath, opts.config);
    args.push('-config', configPath);
  }
  const p = await launch(agentBin, args, opts.dir, 'spindle-agent is ready', 60_000);
  return { ...p, socketPath };
}

/** utime + stime of `pid` in clock ticks (USER_HZ, 100 on Linux) from /proc/<pid>/stat. */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces: fields after the last ')' are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** Resident set size of `pid` in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

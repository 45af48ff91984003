/**
 * A private, throwaway PostgreSQL cluster for tests: one per test process, started on first use
 * and stopped and removed when the process exits. initdb and pg_ctl run as uid 65534 (PostgreSQL
 * refuses to run as root) on a temporary data directory, with trust authentication, a Unix
 * socket directory of its own and TCP on 127.0.0.1 only (a free port), fsync on.
 *
 * Outage tests stop it and start it again on the same port and data directory: `kill()` sends
 * SIGKILL to the postmaster and every process of the cluster (a crash: the next start replays
 * the WAL), `stop()` is a fast shutdown, `start()` brings it back.
 *
 * The server binaries come from Debian's postgresql package (/usr/lib/postgresql/<version>/bin,
 * the highest version). When they are missing the tests FAIL, saying what to install: a skipped
 * datastore backend would let its contract rot unnoticed.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const NOBODY = 65534;
const ROOT = '/usr/lib/postgresql';

/** The bin directory of the newest installed PostgreSQL server; throws saying what to install. */
export function postgresBinDir(root = ROOT): string {
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')) && existsSync(join(root, v, 'bin', 'pg_ctl')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new Error(
      `PostgreSQL server binaries (initdb, pg_ctl) not found under ${root}/<version>/bin: the postgres datastore tests need them. ` +
        'Install them with `apt-get install postgresql` (.ci/run does this when they are missing)',
    );
  }
  return join(root, versions[0]!, 'bin');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function runAsNobody(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { uid: NOBODY, gid: NOBODY, encoding: 'utf8', timeout: 120_000, env: { PATH: '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' } });
  if (r.status !== 0) {
    throw new Error(`${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr || r.stdout}`);
  }
}

export interface PostgresCluster {
  port: number;
  /** The data directory (owned by uid 65534). */
  dataDir: string;
  /** SIGKILL to the postmaster and all its children, as a crash would; waits until they are gone. */
  kill(): void;
  /** A fast shutdown (`pg_ctl stop -m fast`). */
  stop(): void;
  /** Starts it again on the same port (after kill or stop; running: nothing); waits until it accepts connections. */
  start(): void;
  /** A URI for `database` as the cluster's superuser over TCP (127.0.0.1). */
  uri(database: string): string;
  /** A new, empty database; returns its name. */
  createDatabase(): Promise<string>;
}

let started: Promise<PostgresCluster> | undefined;
let dbCounter = 0;

/** The process's cluster, started on first call. */
export function postgresCluster(): Promise<PostgresCluster> {
  started ??= start();
  return started;
}

async function start(): Promise<PostgresCluster> {
  const bin = postgresBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'spindle-pg-'));
  const data = join(dir, 'data');
  const sock = join(dir, 'sock');
  const log = join(dir, 'postgres.log');
  mkdirSync(sock);
  for (const p of [dir, sock]) chownSync(p, NOBODY, NOBODY);
  let running = false;
  const stop = (): void => {
    if (running) spawnSync(join(bin, 'pg_ctl'), ['stop', '-D', data, '-m', 'immediate', '-w'], { uid: NOBODY, gid: NOBODY, stdio: 'ignore', timeout: 60_000 });
    running = false;
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(sig, () => {
      stop();
      process.exit(code);
    });
  }
  runAsNobody(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], 'initdb');
  let port = 0;
  const optsFor = (p: number): string =>
    [
      `-c listen_addresses=127.0.0.1`,
      `-p ${p}`,
      `-k ${sock}`,
      '-c unix_socket_permissions=0700',
      '-c fsync=on',
      '-c shared_buffers=16MB',
      '-c max_connections=200',
    ].join(' ');
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const opts = optsFor(port);
    try {
      runAsNobody(join(bin, 'pg_ctl'), ['start', '-D', data, '-l', log, '-w', '-t', '60', '-o', opts], 'pg_ctl start');
      running = true;
      break;
    } catch (err) {
      const detail = existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : '';
      if (attempt >= 3) throw new Error(`${(err as Error).message}\n${detail}`);
    }
  }
  const uri = (database: string): string => `postgresql://postgres@127.0.0.1:${port}/${encodeURIComponent(database)}?sslmode=disable`;
  /** The cluster's processes: the postmaster (first line of postmaster.pid) and its children. */
  const pids = (): number[] => {
    const pidFile = join(data, 'postmaster.pid');
    if (!existsSync(pidFile)) return [];
    const main = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    if (!Number.isSafeInteger(main) || main <= 0) return [];
    const children = spawnSync('pgrep', ['-P', String(main)], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l !== '').map(Number);
    return [main, ...children];
  };
  /**
   * The process still exists, a zombie included: PostgreSQL refuses to start while the PID in
   * postmaster.pid exists, and a killed postmaster stays a zombie until init reaps it.
   */
  const exists = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const pause = (ms: number): void => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  };
  const admin = new pg.Pool({ connectionString: uri('postgres'), max: 2, idleTimeoutMillis: 1000 });
  admin.on('error', () => undefined);
  return {
    port,
    dataDir: data,
    uri,
    kill(): void {
      const all = pids();
      for (const pid of all) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      // Bounded wait (20 s) for the processes to be gone, zombies reaped by init included.
      for (let i = 0; i < 400 && all.some(exists); i++) pause(50);
      running = false;
    },
    stop(): void {
      runAsNobody(join(bin, 'pg_ctl'), ['stop', '-D', data, '-m', 'fast', '-w', '-t', '60'], 'pg_ctl stop');
      running = false;
    },
    start(): void {
      if (running) return;
      try {
        runAsNobody(join(bin, 'pg_ctl'), ['start', '-D', data, '-l', log, '-w', '-t', '60', '-o', optsFor(port)], 'pg_ctl start');
      } catch (err) {
        const detail = existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : '';
        throw new Error(`${(err as Error).message}\n${detail}`);
      }
      running = true;
    },
    async createDatabase(): Promise<string> {
      const name = `t${process.pid}_${++dbCounter}`;
      await admin.query(`CREATE DATABASE ${name}`);
      return name;
    },
  };
}

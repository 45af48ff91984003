/**
 * Admin writes: registration entries created over the admin API (gRPC on the server's Unix
 * socket, as the CLI does) against a real spindle-server process with its durable SQLite
 * datastore (WAL, synchronous=FULL). Single creates (a BatchCreateEntry of one entry) one at a
 * time and with several calls in flight; batched creates of `batchSize` entries per call.
 * Baselines: this disk's fsync rate (write 4 KiB + fdatasync in the data directory), the floor
 * of one durable commit at a time, and the round trip of a trivial admin-socket call (health
 * check): one call at a time can go no faster than 1 / (round trip + fsync).
 */
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import { HealthClient } from '../../proto/gen/grpc/health/v1/health.js';
import { BenchAdmin, type BenchEntry } from '../server/admin.js';
import { startBenchServer, TRUST_DOMAIN, type BenchServer } from '../server/proc.js';
import { perSecond, type Row } from '../table.js';

export interface AdminWritesOptions {
  /** Single creates per measured figure. */
  singles: number;
  /** Calls in flight for the concurrent single-create figure. */
  concurrency: number;
  /** Entries created by batches in total. */
  batched: number;
  batchSize: number;
}

export const ADMIN_DEFAULTS: AdminWritesOptions = { singles: 3000, concurrency: 32, batched: 50_000, batchSize: 500 };
export const ADMIN_QUICK: AdminWritesOptions = { singles: 300, concurrency: 16, batched: 5000, batchSize: 500 };

/** Durable commits per second this disk allows one at a time (write 4 KiB + fdatasync). */
export function fsyncRate(dir: string, n = 200): number {
  const file = join(dir, 'fsync-probe');
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(4096, 1);
  try {
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      writeSync(fd, block, 0, block.length, (i % 16) * 4096);
      fdatasyncSync(fd);
    }
    return (n * 1000) / (performance.now() - start);
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

const PARENT = `spiffe://${TRUST_DOMAIN}/spire/agent/bench/admin`;
let seq = 0;
const entry = (): BenchEntry => {
  const n = seq++;
  return { spiffeId: `spiffe://${TRUST_DOMAIN}/admin/w${n}`, parentId: PARENT, selectors: [{ type: 'unix', value: `uid:${n % 1000}` }] };
};

/** The three admin-write figures on one server; `postgres`: its datastore's connection string. */
async function adminWrites(opts: AdminWritesOptions, postgres?: string): Promise<{ sequential: number; concurrent: number; batched: number; rttMs: number; fsync: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-admin-'));
  let server: BenchServer | undefined;
  let admin: BenchAdmin | undefined;
  try {
    server = await startBenchServer({ dir, ...(postgres !== undefined ? { postgres } : {}) });
    admin = new BenchAdmin(server.socketPath);
    const a = admin;
    const fsync = fsyncRate(server.dataDir);
    const health = new HealthClient(`unix:${server.socketPath}`, credentials.createInsecure());
    const check = (): Promise<void> => new Promise((ok, fail) => health.check({ service: '' }, new Metadata(), (err) => (err ? fail(err) : ok())));
    for (let i = 0; i < 200; i++) await check();
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) await check();
    const rttMs = (performance.now() - t0) / 1000;
    health.close();
    // Warm-up: connection, statement caches, JIT.
    for (let i = 0; i < 50; i++) await a.createEntries([entry()]);

    let t = performance.now();
    for (let i = 0; i < opts.singles; i++) await a.createEntries([entry()]);
    const sequential = (opts.singles * 1000) / (performance.now() - t);

    let next = 0;
    t = performance.now();
    await Promise.all(
      Array.from({ length: opts.concurrency }, async () => {
        while (next++ < opts.singles) await a.createEntries([entry()]);
      }),
    );
    const concurrent = (opts.singles * 1000) / (performance.now() - t);

    const batches = Math.max(1, Math.round(opts.batched / opts.batchSize));
    const payloads = Array.from({ length: batches }, () => Array.from({ length: opts.batchSize }, entry));
    t = performance.now();
    for (const b of payloads) await a.createEntries(b);
    const batched = (batches * opts.batchSize * 1000) / (performance.now() - t);
    return { sequential, concurrent, batched, rttMs, fsync };
  } finally {
    admin?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchAdminWrites(opts: AdminWritesOptions): Promise<Row[]> {
  const { sequential, concurrent, batched, rttMs, fsync } = await adminWrites(opts);
  const oneAtATimeFloor = 1000 / (rttMs + 1000 / fsync);
  const fsyncBase = `fsync floor ${perSecond(fsync)} (1 commit at a time)`;
  return [
    {
      figure: 'single entry creates, 1 call at a time',
      measured: perSecond(sequential),
      target: '- (latency-bound)',
      baseline: `${perSecond(oneAtATimeFloor)} = 1/(admin RTT ${rttMs.toFixed(2)} ms + fsync)`,
    },
    { figure: `single entry creates, ${opts.concurrency} calls in flight`, measured: perSecond(concurrent), target: '>= 2,000/s', baseline: fsyncBase, pass: concurrent >= 2000 },
    { figure: `batched creates (${opts.batchSize}/call)`, measured: perSecond(batched), target: '>= 20,000/s', baseline: fsyncBase, pass: batched >= 20_000 },
  ];
}

/**
 * The same admin writes with the server on PostgreSQL (a private cluster from the test support,
 * fsync on, on this machine's loopback), beside SQLite's in the same run: the target is at least
 * half of SQLite's rate for each figure.
 */
export async function benchAdminWritesPostgres(opts: AdminWritesOptions): Promise<Row[]> {
  const { postgresCluster } = await import('../../test/support/postgres.js');
  const cluster = await postgresCluster();
  const sqlite = await adminWrites(opts);
  const pg = await adminWrites(opts, cluster.uri(await cluster.createDatabase()));
  const row = (figure: string, measured: number, base: number, target: boolean): Row => ({
    figure: `PostgreSQL: ${figure}`,
    measured: perSecond(measured),
    target: target ? ">= 50% of SQLite's" : '-',
    baseline: `SQLite, same run: ${perSecond(base)} (${Math.round((100 * measured) / base)}%)`,
    ...(target ? { pass: measured >= base / 2 } : {}),
  });
  return [
    row('single entry creates, 1 call at a time', pg.sequential, sqlite.sequential, false),
    row(`single entry creates, ${opts.concurrency} calls in flight`, pg.concurrent, sqlite.concurrent, true),
    row(`batched creates (${opts.batchSize}/call)`, pg.batched, sqlite.batched, true),
  ];
}

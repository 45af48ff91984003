/**
 * Server scale on PostgreSQL, beside SQLite in the same run: the same fleet as the scale
 * scenario (scale.ts) built twice, once per backend. `agents` agents attested through the agent
 * API with join tokens, then, with the servers stopped, `entries` entries written straight into
 * the datastore through our datastore module (SQLite: the server's file; PostgreSQL: set-wise
 * inserts of 5,000 entries, bench/server/seed.ts), spread evenly over the agents. Then:
 * - cold start: process spawn to the "ready" log line (listeners up, every entry loaded) of
 *   one server (the others down), `coldStarts` times per backend, alternating SQLite and
 *   PostgreSQL so both see the same machine; the median is the figure, the range is shown;
 * - reconnect storm over `servers` servers: the agents split evenly between them (PostgreSQL:
 *   two servers on one database; SQLite: one server, the baseline), every agent opens a new
 *   mTLS connection and SyncAuthorized at once with nothing held (full snapshots); then every
 *   server restarts (all at once) and every agent reconnects at once sending the entries it
 *   holds, as spindle-agent does when its stream drops: time from that instant until each
 *   agent's first message; the last one is when all agents have re-synced.
 * The storm clients are bench/server/storm.ts's (raw HTTP/2 clients in child processes), the
 * same number of client processes for both backends.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BenchAdmin } from '../server/admin.js';
import { attestWithJoinToken, type AgentIdentity, type ServerTarget } from '../server/agentclient.js';
import { freePort, serverPaths, startBenchServer, TRUST_DOMAIN, type BenchServer } from '../server/proc.js';
import { seedEntries, seedEntriesPostgres } from '../server/seed.js';
import { startStorm, type Storm } from '../server/storm.js';
import { ms, percentile } from '../stats.js';
import type { Row } from '../table.js';

export interface PostgresScaleOptions {
  entries: number;
  agents: number;
  /** Cold starts measured in a row per backend. */
  coldStarts: number;
  /** Storm client processes in all (split evenly between the servers). */
  stormProcs: number;
}

export const POSTGRES_SCALE_DEFAULTS: PostgresScaleOptions = { entries: 100_000, agents: 1000, coldStarts: 3, stormProcs: 4 };
export const POSTGRES_SCALE_QUICK: PostgresScaleOptions = { entries: 5000, agents: 50, coldStarts: 2, stormProcs: 2 };

const ATTEST_IN_FLIGHT = 16;
const BUNDLE_WAIT_MS = 30_000;

interface StormFigures {
  full: number[];
  resumed: number[];
  /** Milliseconds from stopping the servers to all of them ready again. */
  restartMs: number;
}

interface BackendFigures {
  coldStartsMs: number[];
  seedMs: number;
  storm?: StormFigures;
}

/** Polls every server's bundle until each lists `n` X.509 authorities (one per server); returns one of them. */
async function sharedBundle(servers: readonly BenchServer[]): Promise<Buffer[]> {
  const deadline = performance.now() + BUNDLE_WAIT_MS;
  for (;;) {
    const bundles = await Promise.all(
      servers.map(async (s) => {
        const admin = new BenchAdmin(s.socketPath);
        try {
          return await admin.x509Authorities(s.trustDomain);
        } finally {
          admin.close();
        }
      }),
    );
    if (bundles.every((b) => b.length >= servers.length)) return bundles[0]!;
    if (performance.now() > deadline) throw new Error(`servers' bundles did not list all ${servers.length} servers' authorities in ${BUNDLE_WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One backend's servers (their dirs and ports, stopped between phases), agents and bundle. */
interface Fleet {
  dirs: string[];
  ports: number[];
  postgres?: string;
  ids: AgentIdentity[];
  bundle: Buffer[];
  seedMs: number;
}

const startServer = (f: Fleet, i: number): Promise<BenchServer> =>
  startBenchServer({ dir: f.dirs[i]!, port: f.ports[i]!, ...(f.postgres !== undefined ? { postgres: f.postgres } : {}) });

/**
 * Builds one backend's fleet in `dir`, every server stopped at the end: `servers` servers on
 * the PostgreSQL database `postgres`, or one server on SQLite.
 */
async function buildFleet(dir: string, opts: PostgresScaleOptions, servers: number, postgres?: string): Promise<Fleet> {
  const dirs = Array.from({ length: servers }, (_, i) => join(dir, `server${i}`));
  const ports = await Promise.all(dirs.map(() => freePort()));
  const partial = { dirs, ports, ...(postgres !== undefined ? { postgres } : {}) };
  const running: BenchServer[] = [];
  try {
    // Start the servers (one after another: the first migrates an empty database) and attest
    // the agents through the first one; every server trusts every server's authority.
    for (let i = 0; i < servers; i++) running.push(await startServer({ ...partial, ids: [], bundle: [], seedMs: 0 }, i));
    const bundle = await sharedBundle(running);
    const admin = new BenchAdmin(running[0]!.socketPath);
    const target0: ServerTarget = { port: ports[0]!, trustDomain: TRUST_DOMAIN, bundle };
    const ids: AgentIdentity[] = [];
    let next = 0;
    try {
      await Promise.all(
        Array.from({ length: ATTEST_IN_FLIGHT }, async () => {
          while (next++ < opts.agents) ids.push(await attestWithJoinToken(target0, await admin.joinToken()));
        }),
      );
    } finally {
      admin.close();
    }
    await Promise.all(running.splice(0).map((s) => s.stop()));

    // Seed the entries while every server is down.
    const seedStart = performance.now();
    const parents = ids.map((i) => i.agentId);
    if (postgres !== undefined) await seedEntriesPostgres(postgres, TRUST_DOMAIN, parents, opts.entries);
    else await seedEntries(serverPaths(dirs[0]!).dbPath, TRUST_DOMAIN, parents, opts.entries);
    return { ...partial, ids, bundle, seedMs: performance.now() - seedStart };
  } finally {
    await Promise.all(running.map((s) => s.stop()));
  }
}

/** Spawn to ready of the fleet's first server, the others down. */
async function coldStart(f: Fleet): Promise<number> {
  const s = await startServer(f, 0);
  await s.stop();
  return s.readyMs;
}

/** The two storms over every server of the fleet (agent k -> server k % servers). */
async function stormFleet(f: Fleet, opts: PostgresScaleOptions): Promise<StormFigures> {
  const servers = f.dirs.length;
  let running: BenchServer[] = [];
  const storms: Storm[] = [];
  try {
    running = await Promise.all(f.dirs.map((_, i) => startServer(f, i)));
    const perAgent = opts.entries / opts.agents;
    const procsEach = Math.max(1, Math.floor(opts.stormProcs / servers));
    for (let i = 0; i < servers; i++) {
      const share = f.ids.filter((_, k) => k % servers === i);
      storms.push(await startStorm({ port: f.ports[i]!, trustDomain: TRUST_DOMAIN, bundle: f.bundle }, share, perAgent, procsEach));
    }
    const runAll = async (resume: boolean): Promise<number[]> => (await Promise.all(storms.map((s) => s.run({ resume })))).flatMap((r) => r.latencies);
    const full = await runAll(false);

    // Every server restarts at once; every agent resumes at once with what it holds.
    await Promise.all(storms.map((s) => s.disconnect()));
    const t = performance.now();
    await Promise.all(running.splice(0).map((s) => s.stop()));
    running = await Promise.all(f.dirs.map((_, i) => startServer(f, i)));
    const restartMs = performance.now() - t;
    const resumed = await runAll(true);
    return { full, resumed, restartMs };
  } finally {
    await Promise.all(storms.map((s) => s.close()));
    await Promise.all(running.map((s) => s.stop()));
  }
}

const median = (v: number[]): number => percentile(v, 50);
const range = (v: number[]): string => `${ms(Math.min(...v))}-${ms(Math.max(...v))}`;

/**
 * Runs the fleet on SQLite (one server) and on PostgreSQL (`pgServers` servers on one
 * database); returns the cold-start rows and/or the storm rows.
 */
export async function benchPostgresScale(opts: PostgresScaleOptions, want: { coldStart: boolean; storm: boolean }, pgServers = 2): Promise<Row[]> {
  const { postgresCluster } = await import('../../test/support/postgres.js');
  const cluster = await postgresCluster();
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-pgscale-'));
  try {
    const sqliteFleet = await buildFleet(join(dir, 'sqlite'), opts, 1);
    const pgFleet = await buildFleet(join(dir, 'postgres'), opts, pgServers, cluster.uri(await cluster.createDatabase()));
    // Cold starts alternate between the backends, so both see the same machine.
    const sqlite: BackendFigures = { coldStartsMs: [], seedMs: sqliteFleet.seedMs };
    const pg: BackendFigures = { coldStartsMs: [], seedMs: pgFleet.seedMs };
    for (let i = 0; i < opts.coldStarts; i++) {
      sqlite.coldStartsMs.push(await coldStart(sqliteFleet));
      pg.coldStartsMs.push(await coldStart(pgFleet));
    }
    if (want.storm) {
      sqlite.storm = await stormFleet(sqliteFleet, opts);
      pg.storm = await stormFleet(pgFleet, opts);
    }
    const data = `${opts.entries.toLocaleString('en-US')} entries, ${opts.agents.toLocaleString('en-US')} agents`;
    const rows: Row[] = [];
    if (want.coldStart) {
      const pgCold = median(pg.coldStartsMs);
      const sqCold = median(sqlite.coldStartsMs);
      rows.push({
        figure: `PostgreSQL: server cold start to ready (${data}), median of ${pg.coldStartsMs.length}`,
        measured: `${ms(pgCold)} (${range(pg.coldStartsMs)})`,
        target: '<= 2,000 ms',
        baseline: `SQLite, same run: ${ms(sqCold)} (${range(sqlite.coldStartsMs)}); seeding ${ms(pg.seedMs)} vs ${ms(sqlite.seedMs)}`,
        pass: pgCold <= 2000,
      });
    }
    if (want.storm && pg.storm !== undefined && sqlite.storm !== undefined) {
      const p = pg.storm;
      const s = sqlite.storm;
      const fleet = `${opts.agents.toLocaleString('en-US')} agents over ${pgServers} servers on one PostgreSQL`;
      rows.push(
        {
          figure: `PostgreSQL storm (full: nothing held): ${fleet}, p99 (p50)`,
          measured: `${ms(percentile(p.full, 99))} (${ms(percentile(p.full, 50))})`,
          target: '-',
          baseline: `SQLite, 1 server, same run: ${ms(percentile(s.full, 99))} (${ms(percentile(s.full, 50))})`,
        },
        {
          figure: `PostgreSQL storm (every server restarted, agents resume): ${fleet}, p99 (p50)`,
          measured: `${ms(percentile(p.resumed, 99))} (${ms(percentile(p.resumed, 50))})`,
          target: "<= 2x SQLite's",
          baseline: `SQLite, 1 server, same run: ${ms(percentile(s.resumed, 99))} (${ms(percentile(s.resumed, 50))}); ${(percentile(p.resumed, 99) / percentile(s.resumed, 99)).toFixed(2)}x`,
          pass: percentile(p.resumed, 99) <= 2 * percentile(s.resumed, 99),
        },
        {
          figure: `PostgreSQL storm (every server restarted, agents resume): all ${opts.agents.toLocaleString('en-US')} re-synced`,
          measured: ms(Math.max(...p.resumed)),
          target: '-',
          baseline: `SQLite, same run: ${ms(Math.max(...s.resumed))}; servers stopped -> all ready: ${ms(p.restartMs)} vs ${ms(s.restartMs)}`,
        },
      );
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

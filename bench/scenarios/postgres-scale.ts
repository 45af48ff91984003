/**
 * Server scale on PostgreSQL, beside SQLite in the same run: the same fleet as the scale
 * scenario (scale.ts) built twice, once per backend. `agents` agents attested through the agent
 * API with join tokens, then, with the servers stopped, `entries` entries written straight into
 * the datastore through our datastore module (SQLite: the server's file; PostgreSQL: set-wise
 * inserts of 5,000 entries, bench/server/seed.ts), spread evenly over the agents. Then:
 * - cold start: process spawn to the "ready" log line (listeners up, every entry loaded),
 *   `coldStarts` times in a row; the median is the figure, the range is shown;
 * - reconnect storm over `servers` servers: the agents split evenly between them (PostgreSQL:
 *   two servers on one database; SQLite: one server, the baseline), every agent opens a new
 *   mTLS connection and SyncAuthorized at once with nothing held (full snapshots); then every
 *   server restarts (all at once) and every agent reconnects at once sending the entries it
 *   holds, as spindle-agent does when its stream drops: time from that instant until each
 *   agent's first message; the last one is when all agents have re-synced.
 * The storm clients are bench/server/storm.ts's (raw HTTP/2 clients in child processes), the
 * same number of client processes for both backends.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
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

/**
 * Builds one backend's fleet in `dir` and measures it. `postgres`: the database's connection
 * string (servers: how many share it); else one server on SQLite.
 */
async function measureBackend(dir: string, opts: PostgresScaleOptions, servers: number, storm: boolean, postgres?: string): Promise<BackendFigures> {
  const dirs = Array.from({ length: servers }, (_, i) => join(dir, `server${i}`));
  const ports = await Promise.all(dirs.map(() => freePort()));
  const pgOpt = postgres !== undefined ? { postgres } : {};
  const start = (i: number): Promise<BenchServer> => startBenchServer({ dir: dirs[i]!, port: ports[i]!, ...pgOpt });
  let running: BenchServer[] = [];
  const storms: Storm[] = [];
  const stopAll = async (): Promise<void> => {
    const r = running;
    running = [];
    await Promise.all(r.map((s) => s.stop()));
  };
  try {
    // 1. Start the servers (one after another: the first migrates an empty database) and attest
    //    the agents through the first one; every server trusts every server's authority.
    for (let i = 0; i < servers; i++) running.push(await start(i));
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
    await stopAll();

    // 2. Seed the entries while every server is down.
    const seedStart = performance.now();
    const parents = ids.map((i) => i.agentId);
    if (postgres !== undefined) await seedEntriesPostgres(postgres, TRUST_DOMAIN, parents, opts.entries);
    else await seedEntries(serverPaths(dirs[0]!).dbPath, TRUST_DOMAIN, parents, opts.entries);
    const seedMs = performance.now() - seedStart;

    // 3. Cold starts of the first server, the others down.
    const coldStartsMs: number[] = [];
    for (let i = 0; i < opts.coldStarts; i++) {
      const s = await start(0);
      running.push(s);
      coldStartsMs.push(s.readyMs);
      if (i < opts.coldStarts - 1 || !storm) await stopAll();
    }
    if (!storm) return { coldStartsMs, seedMs };

    // 4. Storm: every server up, agents split evenly (agent k -> server k % servers).
    for (let i = 1; i < servers; i++) running.push(await start(i));
    const perAgent = opts.entries / opts.agents;
    const procsEach = Math.max(1, Math.floor(opts.stormProcs / servers));
    for (let i = 0; i < servers; i++) {
      const share = ids.filter((_, k) => k % servers === i);
      storms.push(await startStorm({ port: ports[i]!, trustDomain: TRUST_DOMAIN, bundle }, share, perAgent, procsEach));
    }
    const runAll = async (resume: boolean): Promise<number[]> => (await Promise.all(storms.map((s) => s.run({ resume })))).flatMap((r) => r.latencies);
    const full = await runAll(false);

    // 5. Every server restarts at once; every agent resumes at once with what it holds.
    await Promise.all(storms.map((s) => s.disconnect()));
    const t = performance.now();
    await stopAll();
    running = await Promise.all(dirs.map((_, i) => start(i)));
    const restartMs = performance.now() - t;
    const resumed = await runAll(true);
    return { coldStartsMs, seedMs, storm: { full, resumed, restartMs } };
  } finally {
    await Promise.all(storms.map((s) => s.close()));
    await stopAll();
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
    mkdirSync(join(dir, 'sqlite'));
    mkdirSync(join(dir, 'postgres'));
    const sqlite = await measureBackend(join(dir, 'sqlite'), opts, 1, want.storm);
    const pg = await measureBackend(join(dir, 'postgres'), opts, pgServers, want.storm, cluster.uri(await cluster.createDatabase()));
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

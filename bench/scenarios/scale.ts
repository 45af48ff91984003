/**
 * Server scale: `agents` agents attested through the agent API with join tokens (real agent
 * SVIDs, accepted as any agent's), then, with the server stopped, `entries` entries seeded into
 * its SQLite file through our datastore module (spread evenly over the agents). Then:
 * - cold start: process spawn to the "ready" log line (both listeners up, every entry loaded);
 * - one agent's full sync: new mTLS connection + SyncAuthorized until the snapshot arrives;
 * - reconnect storm: every agent opens its connection and SyncAuthorized at once (each its own
 *   TCP+TLS connection; the clients are spread over `stormProcs` child processes so the
 *   measuring side is not the bottleneck): p50/p99 of time to each one's snapshot;
 * - idle CPU of the server with all those streams open, from /proc/<pid>/stat.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentApiConnection } from '../../agent/client/serverclient.js';
import { BenchAdmin } from '../server/admin.js';
import { attestWithJoinToken, connectAs, openSync, type AgentIdentity, type ServerTarget } from '../server/agentclient.js';
import { cpuTicks, startBenchServer, type BenchServer } from '../server/proc.js';
import { seedEntries } from '../server/seed.js';
import { startStorm, type Storm } from '../server/storm.js';
import { ms, percentile } from '../stats.js';
import type { Row } from '../table.js';

export interface ScaleOptions {
  entries: number;
  agents: number;
  /** Seconds of idle CPU sampling. */
  idleSeconds: number;
  /** Client processes the reconnect storm's connections are spread over. */
  stormProcs: number;
}

export const SCALE_DEFAULTS: ScaleOptions = { entries: 100_000, agents: 1000, idleSeconds: 10, stormProcs: 4 };
export const SCALE_QUICK: ScaleOptions = { entries: 5000, agents: 50, idleSeconds: 2, stormProcs: 2 };

const ATTEST_IN_FLIGHT = 16;

export async function benchScale(opts: ScaleOptions): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-scale-'));
  let server: BenchServer | undefined;
  const conns: AgentApiConnection[] = [];
  let storm: Storm | undefined;
  try {
    // 1. Attest the agents against a fresh server.
    server = await startBenchServer({ dir });
    const admin = new BenchAdmin(server.socketPath);
    const target: ServerTarget = { port: server.port, trustDomain: server.trustDomain, bundle: await admin.x509Authorities(server.trustDomain) };
    const ids: AgentIdentity[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: ATTEST_IN_FLIGHT }, async () => {
        while (next++ < opts.agents) ids.push(await attestWithJoinToken(target, await admin.joinToken()));
      }),
    );
    admin.close();
    await server.stop();
    server = undefined;

    // 2. Seed the entries while the server is down.
    const seedStart = performance.now();
    await seedEntries(join(dir, 'data', 'datastore.sqlite3'), target.trustDomain, ids.map((i) => i.agentId), opts.entries);
    const seedMs = performance.now() - seedStart;

    // 3. Cold start on the same port (the agents' target).
    server = await startBenchServer({ dir, port: target.port });
    const coldStart = server.readyMs;

    // 4. One agent's full sync on a new connection.
    const one = connectAs(target, ids[0]!);
    conns.push(one);
    let t = performance.now();
    const first = await openSync(one.client);
    const oneSync = performance.now() - t;
    const perAgent = first.first.entries.length;
    first.stream.cancel();
    one.close();

    // 5. Reconnect storm: every agent at once, from several client processes.
    storm = await startStorm(target, ids, perAgent, opts.stormProcs);
    const stormTicks0 = cpuTicks(server.pid);
    const { latencies, clientCpuMs } = await storm.run();
    const serverStormCpuMs = (cpuTicks(server.pid) - stormTicks0) * 10;

    // 6. Idle CPU with every stream open.
    await new Promise((r) => setTimeout(r, 1000));
    const ticks0 = cpuTicks(server.pid);
    t = performance.now();
    await new Promise((r) => setTimeout(r, opts.idleSeconds * 1000));
    const idleCpu = ((cpuTicks(server.pid) - ticks0) / 100 / ((performance.now() - t) / 1000)) * 100;
    const p99 = percentile(latencies, 99);

    const data = `${opts.entries.toLocaleString('en-US')} entries, ${opts.agents.toLocaleString('en-US')} agents`;
    return [
      { figure: `server cold start to ready (${data})`, measured: ms(coldStart), target: '<= 1,000 ms', baseline: `seeding took ${ms(seedMs)}`, pass: coldStart <= 1000 },
      { figure: `one agent's full sync (${perAgent} entries, new connection)`, measured: ms(oneSync), target: '-', baseline: 'includes the mTLS handshake' },
      {
        figure: `reconnect storm: ${opts.agents} agents at once, p50`,
        measured: ms(percentile(latencies, 50)),
        target: '-',
        baseline: `each: new mTLS connection + snapshot; ${opts.stormProcs} client processes`,
      },
      { figure: `reconnect storm: ${opts.agents} agents at once, p99`, measured: ms(p99), target: '<= 2,000 ms', baseline: `all done in ${ms(Math.max(...latencies))}; CPU: server ${ms(serverStormCpuMs)}, clients ${ms(clientCpuMs)}`, pass: p99 <= 2000 },
      { figure: `server idle CPU (${opts.agents} streams open, ${opts.idleSeconds} s)`, measured: `${idleCpu.toFixed(2)}% of a core`, target: '<= 1%', baseline: '/proc/<pid>/stat utime+stime', pass: idleCpu <= 1 },
    ];
  } finally {
    await storm?.close();
    for (const c of conns) c.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Server scale: `agents` agents attested through the agent API with join tokens (real agent
 * SVIDs, accepted as any agent's), then, with the server stopped, `entries` entries seeded into
 * its SQLite file through our datastore module (spread evenly over the agents). Then:
 * - cold start: process spawn to the "ready" log line (both listeners up, every entry loaded);
 * - one agent's full sync: new mTLS connection + SyncAuthorized until the snapshot arrives;
 * - reconnect storm, full: every agent opens its connection and SyncAuthorized at once with
 *   nothing held (each its own TCP+TLS connection; the clients are spread over `stormProcs`
 *   child processes so the measuring side is not the bottleneck): p50/p99 of time to each one's
 *   snapshot;
 * - idle CPU of the server with all those streams open, from /proc/<pid>/stat;
 * - reconnect storm, resume: the server restarts (cold caches) and every agent reconnects at
 *   once sending the entries it holds, as spindle-agent does when its stream drops: p50/p99 of
 *   time to each one's first message (the difference: nothing);
 * - the storm's floor: the same clients against a bare grpc-js mTLS server (bare.ts) that reads
 *   the peer certificate and answers SyncAuthorized with agent 0's snapshot, cached.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentApiConnection } from '../../agent/client/serverclient.js';
import { BenchAdmin } from '../server/admin.js';
import { attestWithJoinToken, connectAs, openSync, type AgentIdentity, type ServerTarget } from '../server/agentclient.js';
import { cpuTicks, startBenchServer, type BenchServer } from '../server/proc.js';
import { SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { certificatesToPem, pemToCertificates } from '../../spiffe/pem.js';
import { bareTls, startBareServer } from '../server/bare.js';
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
    const snapshot = SyncAuthorizedResponse.encode(first.first).finish();
    first.stream.cancel();
    one.close();

    // 5. Reconnect storm: every agent at once, from several client processes, nothing held.
    storm = await startStorm(target, ids, perAgent, opts.stormProcs);
    let ticks = cpuTicks(server.pid);
    const full = await storm.run({ resume: false });
    const fullServerCpuMs = (cpuTicks(server.pid) - ticks) * 10;

    // 6. Idle CPU with every stream open.
    await new Promise((r) => setTimeout(r, 1000));
    const ticks0 = cpuTicks(server.pid);
    t = performance.now();
    await new Promise((r) => setTimeout(r, opts.idleSeconds * 1000));
    const idleCpu = ((cpuTicks(server.pid) - ticks0) / 100 / ((performance.now() - t) / 1000)) * 100;

    // 7. Server restart; every agent resumes at once with what it holds.
    await storm.disconnect();
    await server.stop();
    server = await startBenchServer({ dir, port: target.port });
    ticks = cpuTicks(server.pid);
    const resumed = await storm.run({ resume: true });
    const resumeServerCpuMs = (cpuTicks(server.pid) - ticks) * 10;
    await storm.close();
    storm = undefined;
    await server.stop();
    server = undefined;

    // 8. The floor: a bare grpc-js server, same clients, same snapshot (cached).
    const tls = await bareTls();
    const bareServer = await startBareServer({ ...tls, clientCaPem: certificatesToPem(target.bundle) }, 600, snapshot);
    let bare: { latencies: number[]; clientCpuMs: number };
    let bareServerCpuMs: number;
    try {
      storm = await startStorm({ ...target, port: bareServer.port, bundle: pemToCertificates(tls.caPem) }, ids, perAgent, opts.stormProcs);
      ticks = cpuTicks(bareServer.pid);
      bare = await storm.run({ resume: false });
      bareServerCpuMs = (cpuTicks(bareServer.pid) - ticks) * 10;
    } finally {
      bareServer.stop();
    }
    const bareP99 = percentile(bare.latencies, 99);

    const stormRows = (kind: string, r: { latencies: number[]; clientCpuMs: number }, serverCpuMs: number): Row[] => {
      const p99 = percentile(r.latencies, 99);
      return [
        { figure: `reconnect storm (${kind}): ${opts.agents} agents at once, p50`, measured: ms(percentile(r.latencies, 50)), target: '-', baseline: `each: new mTLS connection + SyncAuthorized; ${opts.stormProcs} client processes` },
        {
          figure: `reconnect storm (${kind}): ${opts.agents} agents at once, p99`,
          measured: ms(p99),
          target: '<= 2,000 ms',
          baseline: `bare grpc-js: ${ms(bareP99)} (${(p99 / bareP99).toFixed(1)}x); CPU: server ${ms(serverCpuMs)}, clients ${ms(r.clientCpuMs)}`,
          pass: p99 <= 2000,
        },
      ];
    };
    const data = `${opts.entries.toLocaleString('en-US')} entries, ${opts.agents.toLocaleString('en-US')} agents`;
    return [
      { figure: `server cold start to ready (${data})`, measured: ms(coldStart), target: '<= 1,000 ms', baseline: `seeding took ${ms(seedMs)}`, pass: coldStart <= 1000 },
      { figure: `one agent's full sync (${perAgent} entries, new connection)`, measured: ms(oneSync), target: '-', baseline: 'includes the mTLS handshake' },
      ...stormRows('full: nothing held, snapshots', full, fullServerCpuMs),
      ...stormRows('resume after a server restart: entries held', resumed, resumeServerCpuMs),
      {
        figure: `reconnect storm floor: bare grpc-js mTLS server, same clients, cached snapshot, p99 (p50)`,
        measured: `${ms(bareP99)} (${ms(percentile(bare.latencies, 50))})`,
        target: '-',
        baseline: `CPU: server ${ms(bareServerCpuMs)}, clients ${ms(bare.clientCpuMs)}`,
      },
      { figure: `server idle CPU (${opts.agents} streams open, ${opts.idleSeconds} s)`, measured: `${idleCpu.toFixed(2)}% of a core`, target: '<= 1%', baseline: '/proc/<pid>/stat utime+stime', pass: idleCpu <= 1 },
    ];
  } finally {
    await storm?.close();
    for (const c of conns) c.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

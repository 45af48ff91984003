/**
 * Cross-server propagation: two spindle-server processes (A and B) on one PostgreSQL database
 * (a private local cluster, fsync on), a real spindle-agent process attested to and connected
 * to B, and a workload's open FetchX509SVID stream on that agent (this process, attested by
 * uid). An entry for the workload is created through A's admin API: A commits it with its
 * change-feed event and NOTIFY -> B hears the notification on its LISTEN connection, reads the
 * event and pushes the entry on the agent's SyncAuthorized stream -> the agent makes a key, B
 * signs its CSR -> the agent pushes the new SVID on the workload stream. Measured from the start
 * of the create call to the first FetchX509SVID response carrying the entry's SPIFFE ID (the
 * same end points as the propagation scenario).
 *
 * Baseline in the same run: the same path through one server, the entry created through B's
 * own admin API (same database, same agent, same stream). The two kinds alternate, one entry at
 * a time (each waits for its delivery, then a short pause), so both see the same machine.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificatesToPem } from '../../spiffe/pem.js';
import { BenchAdmin, type BenchEntry } from '../server/admin.js';
import { startBenchAgent, startBenchServer, type BenchAgent, type BenchServer } from '../server/proc.js';
import { watchWorkload, type WorkloadWatch } from '../server/workloadwatch.js';
import { ms, percentile } from '../stats.js';
import type { Row } from '../table.js';

export interface CrossPropagationOptions {
  /** Entries created through each path (A's admin API, B's), alternating. */
  entries: number;
  /** Pause between one delivery and the next create, milliseconds. */
  pauseMs: number;
}

export const CROSS_PROPAGATION_DEFAULTS: CrossPropagationOptions = { entries: 200, pauseMs: 20 };
export const CROSS_PROPAGATION_QUICK: CrossPropagationOptions = { entries: 30, pauseMs: 20 };

const DELIVERY_TIMEOUT_MS = 30_000;
/** The whole measuring loop stops after this long, whatever it has measured. */
const LOOP_LIMIT_MS = 240_000;
const BUNDLE_WAIT_MS = 30_000;

export async function benchCrossPropagation(opts: CrossPropagationOptions): Promise<Row[]> {
  const { postgresCluster } = await import('../../test/support/postgres.js');
  const cluster = await postgresCluster();
  const postgres = cluster.uri(await cluster.createDatabase());
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-xprop-'));
  const servers: BenchServer[] = [];
  const admins: BenchAdmin[] = [];
  let agent: BenchAgent | undefined;
  let watch: WorkloadWatch | undefined;
  try {
    // A first (it migrates the empty database), then B.
    for (const name of ['a', 'b']) servers.push(await startBenchServer({ dir: join(dir, name), postgres }));
    const [a, b] = servers as [BenchServer, BenchServer];
    const adminA = new BenchAdmin(a.socketPath);
    const adminB = new BenchAdmin(b.socketPath);
    admins.push(adminA, adminB);
    const td = b.trustDomain;
    // B's bundle lists both servers' authorities once B has heard of A's (NOTIFY).
    let bundle = await adminB.x509Authorities(td);
    for (const deadline = performance.now() + BUNDLE_WAIT_MS; bundle.length < 2; bundle = await adminB.x509Authorities(td)) {
      if (performance.now() > deadline) throw new Error(`server B's bundle did not list server A's authority in ${BUNDLE_WAIT_MS} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const token = await adminB.joinToken();
    const agentId = `spiffe://${td}/spire/agent/join_token/${token}`;
    const uid = process.getuid?.() ?? 0;
    const entry = (name: string): BenchEntry => ({ spiffeId: `spiffe://${td}/xprop/${name}`, parentId: agentId, selectors: [{ type: 'unix', value: `uid:${uid}` }] });
    await adminB.createEntries([entry('initial')]);
    const agentDir = join(dir, 'agent');
    mkdirSync(agentDir);
    agent = await startBenchAgent({ dir: agentDir, server: b, joinToken: token, bundlePem: certificatesToPem(bundle) });
    watch = watchWorkload(agent.socketPath);
    const w = watch;
    await w.delivered([entry('initial').spiffeId], DELIVERY_TIMEOUT_MS);

    const cross: number[] = [];
    const same: number[] = [];
    const stopAt = performance.now() + LOOP_LIMIT_MS;
    for (let i = 0; i < opts.entries && performance.now() < stopAt; i++) {
      for (const [via, into, kind] of [
        [adminA, cross, 'a'],
        [adminB, same, 'b'],
      ] as const) {
        const e = entry(`${kind}${i}`);
        const wait = w.delivered([e.spiffeId], DELIVERY_TIMEOUT_MS);
        const t0 = performance.now();
        await via.createEntries([e]);
        await wait;
        into.push(w.firstSeen.get(e.spiffeId)! - t0);
        await new Promise((r) => setTimeout(r, opts.pauseMs));
      }
    }
    const n = cross.length;
    const p99 = percentile(cross, 99);
    const path = 'admin API of A -> PostgreSQL NOTIFY -> B -> agent on B -> workload FetchX509SVID';
    return [
      { figure: `cross-server propagation p50 (${n} creates on A, agent on B)`, measured: ms(percentile(cross, 50)), target: '-', baseline: `one server (created on B): ${ms(percentile(same, 50))}; ${path}` },
      {
        figure: `cross-server propagation p99 (${n} creates on A, agent on B)`,
        measured: ms(p99),
        target: '<= 250 ms',
        baseline: `one server (created on B), same run: ${ms(percentile(same, 99))}`,
        pass: n === opts.entries && p99 <= 250,
      },
    ];
  } finally {
    watch?.close();
    for (const a of admins) a.close();
    await agent?.stop();
    for (const s of servers.reverse()) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

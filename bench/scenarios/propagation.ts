/**
 * Propagation, the honest path end to end: an entry is created over the admin API (gRPC on the
 * server's Unix socket) -> the server's change feed pushes it on the agent's SyncAuthorized
 * stream -> a real spindle-agent process makes a key, has the server sign its CSR, and pushes
 * the new SVID on the workload's open FetchX509SVID stream (this process, attested by uid).
 * Measured from the start of the create call to the first FetchX509SVID response that carries
 * the entry's SPIFFE ID:
 * - `sequential` entries created one after another (each waits for its delivery): p50/p99;
 * - a burst of `burst` entries in one BatchCreateEntry call: time until all are delivered and
 *   the p99 of per-entry delivery.
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

export interface PropagationOptions {
  sequential: number;
  burst: number;
}

export const PROPAGATION_DEFAULTS: PropagationOptions = { sequential: 100, burst: 1000 };
export const PROPAGATION_QUICK: PropagationOptions = { sequential: 20, burst: 100 };

const DELIVERY_TIMEOUT_MS = 60_000;

export async function benchPropagation(opts: PropagationOptions): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-prop-'));
  let server: BenchServer | undefined;
  let agent: BenchAgent | undefined;
  let admin: BenchAdmin | undefined;
  let watch: WorkloadWatch | undefined;
  try {
    server = await startBenchServer({ dir: join(dir, 'server') });
    admin = new BenchAdmin(server.socketPath);
    const a = admin;
    const td = server.trustDomain;
    const bundlePem = certificatesToPem(await a.x509Authorities(td));
    const token = await a.joinToken();
    const agentId = `spiffe://${td}/spire/agent/join_token/${token}`;
    const uid = process.getuid?.() ?? 0;
    const entry = (name: string): BenchEntry => ({ spiffeId: `spiffe://${td}/prop/${name}`, parentId: agentId, selectors: [{ type: 'unix', value: `uid:${uid}` }] });
    await a.createEntries([entry('initial')]);
    const agentDir = join(dir, 'agent');
    mkdirSync(agentDir);
    agent = await startBenchAgent({ dir: agentDir, server, joinToken: token, bundlePem });

    // The workload's stream: remember when each SPIFFE ID was first seen.
    const w = watchWorkload(agent.socketPath);
    watch = w;
    const { firstSeen } = w;
    const delivered = (ids: string[]): Promise<void> => w.delivered(ids, DELIVERY_TIMEOUT_MS);
    await delivered([entry('initial').spiffeId]);

    const seq: number[] = [];
    for (let i = 0; i < opts.sequential; i++) {
      const e = entry(`seq${i}`);
      const t0 = performance.now();
      const wait = delivered([e.spiffeId]);
      await a.createEntries([e]);
      await wait;
      seq.push(firstSeen.get(e.spiffeId)! - t0);
    }

    const burst = Array.from({ length: opts.burst }, (_, i) => entry(`burst${i}`));
    const t0 = performance.now();
    const wait = delivered(burst.map((e) => e.spiffeId));
    await a.createEntries(burst);
    await wait;
    const perEntry = burst.map((e) => firstSeen.get(e.spiffeId)! - t0);
    const all = Math.max(...perEntry);

    const path = 'admin API -> agent process -> workload FetchX509SVID';
    return [
      { figure: `propagation p50 (${opts.sequential} sequential creates)`, measured: ms(percentile(seq, 50)), target: '-', baseline: path },
      { figure: `propagation p99 (${opts.sequential} sequential creates)`, measured: ms(percentile(seq, 99)), target: '<= 200 ms', baseline: "SPIRE default: up to 5-10 s", pass: percentile(seq, 99) <= 200 },
      { figure: `burst of ${opts.burst}: all delivered`, measured: ms(all), target: '<= 2,000 ms', baseline: `one BatchCreateEntry of ${opts.burst}`, pass: all <= 2000 },
      { figure: `burst of ${opts.burst}: per-entry delivery p99`, measured: ms(percentile(perEntry, 99)), target: '<= 2,000 ms', baseline: `p50 ${ms(percentile(perEntry, 50))}`, pass: percentile(perEntry, 99) <= 2000 },
    ];
  } finally {
    watch?.close();
    admin?.close();
    await agent?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

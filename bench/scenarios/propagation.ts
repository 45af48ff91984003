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
import { credentials, Metadata, type ClientReadableStream } from '@grpc/grpc-js';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeWorkloadAPIClient, type X509SVIDResponse } from '../../proto/gen/workload/workload.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { BenchAdmin, type BenchEntry } from '../server/admin.js';
import { startBenchAgent, startBenchServer, type BenchAgent, type BenchServer } from '../server/proc.js';
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
  let stream: ClientReadableStream<X509SVIDResponse> | undefined;
  let wl: InstanceType<typeof SpiffeWorkloadAPIClient> | undefined;
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
    const firstSeen = new Map<string, number>();
    let waiter: { ids: Set<string>; done: () => void } | undefined;
    const check = (): void => {
      if (!waiter) return;
      for (const id of waiter.ids) if (!firstSeen.has(id)) return;
      const w = waiter;
      waiter = undefined;
      w.done();
    };
    wl = new SpiffeWorkloadAPIClient(`unix:${agent.socketPath}`, credentials.createInsecure(), { 'grpc.max_receive_message_length': 256 * 1024 * 1024 });
    const md = new Metadata();
    md.set('workload.spiffe.io', 'true');
    stream = wl.fetchX509Svid({}, md) as ClientReadableStream<X509SVIDResponse>;
    let streamError: Error | undefined;
    stream.on('data', (resp: X509SVIDResponse) => {
      const t = performance.now();
      for (const s of resp.svids) if (!firstSeen.has(s.spiffeId)) firstSeen.set(s.spiffeId, t);
      check();
    });
    stream.on('error', (err: Error) => {
      streamError = err;
    });
    const delivered = (ids: string[]): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          const missing = ids.filter((id) => !firstSeen.has(id)).length;
          reject(new Error(`${missing} of ${ids.length} entries not delivered to the workload stream in ${DELIVERY_TIMEOUT_MS} ms${streamError ? ` (stream error: ${streamError.message})` : ''}`));
        }, DELIVERY_TIMEOUT_MS);
        waiter = {
          ids: new Set(ids),
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        check();
      });
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
    stream?.cancel();
    wl?.close();
    admin?.close();
    await agent?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

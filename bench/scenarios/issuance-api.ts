/**
 * Issuance through the agent API: a real spindle-server process; this process attests as an
 * agent (join token), the entries it signs for are parented to it (created over the admin API),
 * and it holds a SyncAuthorized stream as a real agent does. Then:
 * - BatchNewX509SVID with batches of fresh CSRs (distinct P-256 keys, made before timing),
 *   several calls in flight: X509-SVIDs per second, next to `openssl speed ecdsap256`'s
 *   single-core sign rate measured in this run (target: >= 7% of it).
 * - NewJWTSVID with many calls in flight: JWT-SVIDs per second, next to a bare grpc-js server
 *   over mutual TLS answering a cached payload with the same number of calls in flight (the
 *   per-call transport floor; measured in slices alternating with the JWT run, so both see the
 *   same load), and the server's CPU per minted JWT-SVID.
 * The server's CPU time (from /proc, all its threads) during each run gives the rate per server
 * core-second. The server verifies and signs batches on its signing pool (server/ca/signpool.ts,
 * one worker thread per core, at most 4), so the X.509 run can use every core.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '../../spiffe/keys.js';
import { createCsr } from '../../spiffe/x509/index.js';
import { DEFAULT_SIGNING_WORKERS } from '../../server/ca/manager.js';
import { opensslEcdsaP256 } from '../openssl.js';
import { BenchAdmin, type BenchEntry } from '../server/admin.js';
import { attestWithJoinToken, batchNewX509Svid, connectAs, newJwtSvid, openSync, type ServerTarget } from '../server/agentclient.js';
import { bareTls, bareUnaryRate, startBareServer } from '../server/bare.js';
import { cpuTicks, startBenchServer, type BenchServer } from '../server/proc.js';
import { perSecond, type Row } from '../table.js';

export interface IssuanceApiOptions {
  /** CSRs signed in the measured X.509 run. */
  csrs: number;
  /** CSRs per BatchNewX509SVID call. */
  batchSize: number;
  /** BatchNewX509SVID calls in flight. */
  inFlight: number;
  /** NewJWTSVID calls in flight. */
  jwtInFlight: number;
  /** Seconds for the JWT run, the bare baseline and openssl speed. */
  seconds: number;
}

export const ISSUANCE_API_DEFAULTS: IssuanceApiOptions = { csrs: 8000, batchSize: 100, inFlight: 4, jwtInFlight: 64, seconds: 3 };
export const ISSUANCE_API_QUICK: IssuanceApiOptions = { csrs: 800, batchSize: 100, inFlight: 4, jwtInFlight: 32, seconds: 1 };

const ENTRIES = 64;
const TICKS_PER_SECOND = 100;

export async function benchIssuanceApi(opts: IssuanceApiOptions): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-issue-'));
  let server: BenchServer | undefined;
  const closers: Array<() => void> = [];
  try {
    server = await startBenchServer({ dir });
    const admin = new BenchAdmin(server.socketPath);
    closers.push(() => admin.close());
    const target: ServerTarget = { port: server.port, trustDomain: server.trustDomain, bundle: await admin.x509Authorities(server.trustDomain) };
    const id = await attestWithJoinToken(target, await admin.joinToken());
    const entries: BenchEntry[] = Array.from({ length: ENTRIES }, (_, i) => ({
      spiffeId: `spiffe://${server!.trustDomain}/issue/w${i}`,
      parentId: id.agentId,
      selectors: [{ type: 'unix', value: `uid:${i}` }],
    }));
    const entryIds = await admin.createEntries(entries);
    const conn = connectAs(target, id);
    closers.push(() => conn.close());
    const sync = await openSync(conn.client);
    closers.push(() => sync.stream.cancel());
    if (sync.first.entries.length !== ENTRIES) throw new Error(`sync snapshot has ${sync.first.entries.length} entries, expected ${ENTRIES}`);

    // Fresh keys and CSRs, made before timing.
    const total = Math.ceil(opts.csrs / opts.batchSize) * opts.batchSize;
    const warm = opts.batchSize * opts.inFlight;
    const csrs: Buffer[] = [];
    for (let i = 0; i < total + warm; i++) csrs.push(createCsr((await generateKeyPair('ec-p256')).privateKey));
    const batches: Array<Array<{ entryId: string; csr: Buffer }>> = [];
    for (let i = 0; i < csrs.length; i += opts.batchSize) {
      batches.push(csrs.slice(i, i + opts.batchSize).map((csr, k) => ({ entryId: entryIds[(i + k) % ENTRIES]!, csr })));
    }
    const ossl = opensslEcdsaP256(opts.seconds);

    const runBatches = async (list: typeof batches): Promise<number> => {
      let next = 0;
      let signed = 0;
      await Promise.all(
        Array.from({ length: opts.inFlight }, async () => {
          for (let b = list[next++]; b !== undefined; b = list[next++]) {
            const res = await batchNewX509Svid(conn.client, b);
            for (const r of res.results) {
              if (r.status?.code !== 0 || !r.svid) throw new Error(`BatchNewX509SVID item failed: ${r.status?.code} ${r.status?.message}`);
              signed++;
            }
          }
        }),
      );
      return signed;
    };
    await runBatches(batches.slice(0, opts.inFlight));
    let ticks = cpuTicks(server.pid);
    let t = performance.now();
    const signed = await runBatches(batches.slice(opts.inFlight));
    const x509Rate = (signed * 1000) / (performance.now() - t);
    const x509Cpu = (cpuTicks(server.pid) - ticks) / TICKS_PER_SECOND;

    // JWT-SVIDs: many unary calls in flight for `seconds`.
    const jwtRun = async (ms: number): Promise<number> => {
      let n = 0;
      const end = performance.now() + ms;
      await Promise.all(
        Array.from({ length: opts.jwtInFlight }, async (_, k) => {
          while (performance.now() < end) {
            await newJwtSvid(conn.client, entryIds[k % ENTRIES]!, ['bench']);
            n++;
          }
        }),
      );
      return n;
    };
    // The bare baseline runs in slices alternating with the JWT slices, so both see the same
    // machine (on a shared machine, load changes within seconds).
    const tls = await bareTls();
    const bare = await startBareServer(tls, 600);
    closers.push(() => bare.stop());
    const SLICES = 3;
    await jwtRun(300);
    let minted = 0;
    let jwtElapsed = 0;
    let jwtCpu = 0;
    const bareRates: number[] = [];
    for (let k = 0; k < SLICES; k++) {
      ticks = cpuTicks(server.pid);
      t = performance.now();
      minted += await jwtRun((opts.seconds * 1000) / SLICES);
      jwtElapsed += performance.now() - t;
      jwtCpu += (cpuTicks(server.pid) - ticks) / TICKS_PER_SECOND;
      bareRates.push(await bareUnaryRate(tls, bare.port, opts.jwtInFlight, opts.seconds / SLICES));
    }
    const jwtRate = (minted * 1000) / jwtElapsed;
    const bareRate = bareRates.reduce((a, b) => a + b, 0) / bareRates.length;

    const pct = (v: number, of: number): string => `${((100 * v) / of).toFixed(1)}%`;
    return [
      {
        figure: `X509-SVIDs via BatchNewX509SVID (${opts.batchSize}/call, ${opts.inFlight} in flight)`,
        measured: perSecond(x509Rate),
        target: '>= 7% of openssl sign',
        baseline: `${pct(x509Rate, ossl.signPerSecond)} of openssl ${perSecond(ossl.signPerSecond)}`,
        pass: x509Rate >= 0.07 * ossl.signPerSecond,
      },
      {
        figure: 'X509-SVIDs per server CPU-second (batch path)',
        measured: perSecond(signed / Math.max(x509Cpu, 0.01)),
        target: '-',
        baseline: `server used ${x509Cpu.toFixed(2)} CPU-s for ${signed} SVIDs (main thread + ${DEFAULT_SIGNING_WORKERS} signing workers)`,
      },
      {
        figure: `JWT-SVIDs via NewJWTSVID (${opts.jwtInFlight} in flight)`,
        measured: perSecond(jwtRate),
        target: '>= 50% of bare grpc-js mTLS unary',
        baseline: `bare ${perSecond(bareRate)} (${pct(jwtRate, bareRate)}); ${pct(jwtRate, ossl.signPerSecond)} of openssl sign`,
        pass: jwtRate >= 0.5 * bareRate,
      },
      {
        figure: 'JWT-SVIDs per server CPU-second (API path)',
        measured: perSecond(minted / Math.max(jwtCpu, 0.01)),
        target: '-',
        baseline: `server used ${jwtCpu.toFixed(2)} CPU-s in ${(jwtElapsed / 1000).toFixed(1)} s (${SLICES} slices alternating with the bare baseline)`,
      },
    ];
  } finally {
    for (const c of closers.reverse()) {
      try {
        c();
      } catch {
        // best effort
      }
    }
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Per-caller limits of the agent socket (limits.ts): token buckets and stream budgets on their
// own with an injected clock, then on a real endpoint (real Unix socket, real SO_PEERCRED, the
// unix attestor, child processes as other callers) with the Workload API, SDS, health and
// reflection on one socket, and the Prometheus metrics the agent exports from them.
import { credentials, status as GrpcStatus, type Client, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import { UnixWorkloadAttestor } from '../../attestors/workload/unix/unix.js';
import type { DiscoveryRequest, DiscoveryResponse } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { SecretDiscoveryServiceClient } from '../../proto/gen/envoy/service/secret/v3/sds.js';
import { HealthCheckResponse_ServingStatus, HealthClient } from '../../proto/gen/grpc/health/v1/health.js';
import type { JWTSVIDResponse, X509SVIDResponse } from '../../proto/gen/workload/workload.js';
import { OPEN_STREAMS_METRIC, REFUSED_METRIC, registerWorkloadApiMetrics } from '../telemetry.js';
import { CallerLimits, RateLimiter, StreamLimiter } from './limits.js';
import { SECRET_TYPE_URL } from './sds.js';
import { collect, FakeIdentityCache, headerMetadata, sel, silentLogger, TestTrustDomain, within, workloadClient } from './testkit.js';
import type { PeerContext } from './types.js';
import { startAgentEndpoint, type AgentEndpoint, type AgentEndpointLimits } from './endpoint.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'fixtures', 'client.js');
const UID = process.getuid!();

// ---------------------------------------------------------------------------------------------
// Units, with a hand-driven clock

const peerCtx = (processKey: string, uid: number): PeerContext => ({ key: `k-${processKey}`, peer: { pid: 1, uid, gid: 0, groups: [] }, processKey, whyNotSameProcess: () => undefined, stillSameProcess: () => true });

describe('token bucket and stream budget', () => {
  it('a bucket gives its burst at once, then refills at the rate, never beyond the burst', () => {
    let now = 0;
    const r = new RateLimiter(2, 3, () => now);
    const takes = (n: number, key = 'a'): number => Array.from({ length: n }, () => r.take(key)).filter(Boolean).length;
    assert.equal(takes(10), 3, 'the burst, then nothing while the clock stands still');
    assert.equal(takes(1, 'b'), 1, 'another key has its own bucket');
    now += 499;
    assert.equal(takes(1), 0, 'not yet one token after 499 ms at 2/s');
    now += 1;
    assert.equal(takes(5), 1, 'one token after 500 ms at 2/s');
    now += 3_600_000;
    assert.equal(takes(10), 3, 'an hour idle refills only up to the burst');
    const off = new RateLimiter(0, 0, () => now);
    assert.equal(Array.from({ length: 10_000 }, () => off.take('a')).filter(Boolean).length, 10_000, 'rate 0: no limit');
    assert.throws(() => new RateLimiter(5, 0, () => now), /burst must be at least 1, got 0/);
    assert.throws(() => new RateLimiter(-1, 5, () => now), /non-negative number, got -1/);
  });

  it('buckets of callers that went quiet are forgotten (memory follows recent callers)', () => {
    let now = 0;
    const r = new RateLimiter(10, 20, () => now);
    for (let i = 0; i < 1000; i++) r.take(`p${i}`);
    assert.equal(r.size, 1000);
    now += 2_000; // 20 tokens at 10/s: full again after 2 s
    r.take('fresh');
    assert.equal(r.size, 1, 'only the caller of the sweeping call is left');
  });

  it('stream budget per key; 0 means no limit', () => {
    const s = new StreamLimiter(2);
    const a1 = s.acquire('a');
    const a2 = s.acquire('a');
    assert.ok(a1 && a2);
    assert.equal(s.acquire('a'), undefined);
    assert.ok(s.acquire('b'), 'another key has its own budget');
    a1();
    a1(); // idempotent: frees one slot only
    assert.ok(s.acquire('a'));
    assert.equal(s.acquire('a'), undefined);
    const unlimited = new StreamLimiter(0);
    for (let i = 0; i < 1000; i++) assert.ok(unlimited.acquire('a'));
    assert.throws(() => new StreamLimiter(-1), /non-negative integer, got -1/);
  });

  it('per-uid aggregates bound a uid forking many processes; other uids are unaffected; refusals are counted', () => {
    let now = 0;
    const limits = new CallerLimits({ ratePerPid: 100, burstPerPid: 100, ratePerUid: 1, burstPerUid: 3, maxStreamsPerPid: 10, maxStreamsPerUid: 2 }, { now: () => now });
    const forks = [peerCtx('10:1', 1000), peerCtx('11:1', 1000), peerCtx('12:1', 1000)];
    const stranger = peerCtx('20:1', 2000);
    for (const p of forks) limits.admitCall(p, 'workload');
    assert.throws(() => limits.admitCall(peerCtx('13:1', 1000), 'sds'), (err: Error & { grpcCode?: number }) => {
      assert.equal(err.grpcCode, GrpcStatus.RESOURCE_EXHAUSTED);
      assert.match(err.message, /rate limit exceeded for uid 1000: at most 1 calls per second, burst 3 over all its processes \(agent\.workload_api_rate_limit_per_uid\)/);
      return true;
    });
    limits.admitCall(stranger, 'workload');
    now += 1000;
    limits.admitCall(forks[0]!, 'workload'); // refilled one
    const r1 = limits.openStream(forks[0]!, 'workload');
    limits.openStream(forks[1]!, 'sds');
    assert.throws(() => limits.openStream(forks[2]!, 'workload'), /too many open streams for uid 1000 \(limit 2 over all its processes, agent\.workload_api_max_streams_per_uid\)/);
    assert.deepEqual(limits.stats().openStreams, { workload: 1, sds: 1 }, 'a refused stream holds no slot');
    limits.openStream(stranger, 'workload');
    r1();
    limits.openStream(forks[2]!, 'workload');
    assert.equal(limits.refusedCount('sds', 'rate', 'uid'), 1);
    assert.equal(limits.refusedCount('workload', 'streams', 'uid'), 1);
    assert.equal(limits.refusedCount('workload', 'rate', 'process'), 0);
    assert.throws(() => new CallerLimits({ maxStreamsPerPid: -1 }), /agent\.workload_api_max_streams_per_pid must be a non-negative integer, got -1/);
  });
});

// ---------------------------------------------------------------------------------------------
// A real endpoint

let own: TestTrustDomain;
const root = mkdtempSync(join(tmpdir(), 'spindle-limits-'));
chmodSync(root, 0o755);
let n = 0;
before(async () => {
  own = await TestTrustDomain.create('example.org');
});
after(() => rmSync(root, { recursive: true, force: true }));

interface Env {
  ep: AgentEndpoint;
  socketPath: string;
  cache: FakeIdentityCache;
  /** Attestations run so far (each is kernel and /proc work). */
  attestations(): number;
  clock: { now: number };
  metrics(): Promise<string>;
  clients: Client[];
}
const envs: Env[] = [];
after(async () => {
  for (const e of envs) {
    for (const c of e.clients) c.close();
    await e.ep.close();
  }
});

async function setup(limits: AgentEndpointLimits): Promise<Env> {
  const cache = new FakeIdentityCache(own);
  cache.entries = [{ selectors: [sel(`unix:uid:${UID}`)], identity: await own.identity('spiffe://example.org/workload') }];
  const unix = new UnixWorkloadAttestor();
  let attestations = 0;
  const counting: WorkloadAttestor = {
    name: 'unix',
    attest(peer, signal) {
      attestations++;
      return unix.attest(peer, signal);
    },
  };
  const clock = { now: 0 };
  const socketPath = join(root, `s${++n}.sock`);
  const ep = await startAgentEndpoint({
    socketPath,
    cache,
    attestors: [counting],
    logger: silentLogger,
    limits,
    limitsClock: () => clock.now,
  });
  const registry = new Registry();
  registerWorkloadApiMetrics(registry, () => ep.limits.stats());
  const e: Env = { ep, socketPath, cache, attestations: () => attestations, clock, metrics: () => registry.metrics(), clients: [] };
  envs.push(e);
  return e;
}

function wl(e: Env): ReturnType<typeof workloadClient> {
  const c = workloadClient(e.socketPath);
  e.clients.push(c);
  return c;
}
function sds(e: Env): InstanceType<typeof SecretDiscoveryServiceClient> {
  const c = new SecretDiscoveryServiceClient(`unix:${e.socketPath}`, credentials.createInsecure());
  e.clients.push(c);
  return c;
}

/** One FetchJWTSVID: status code (0 = OK) and details. */
function fetchJwt(client: ReturnType<typeof workloadClient>): Promise<{ code: number; details: string }> {
  return new Promise((resolve) =>
    client.fetchJwtsvid({ audience: ['a'], spiffeId: '' }, headerMetadata(), (err: ServiceError | null, _res?: JWTSVIDResponse) =>
      resolve(err ? { code: err.code, details: err.details } : { code: 0, details: '' }),
    ),
  );
}

const sdsReq = (names: string[]): DiscoveryRequest => ({ versionInfo: '', node: undefined, resourceNames: names, typeUrl: SECRET_TYPE_URL, responseNonce: '', errorDetail: undefined });

function count(results: Array<{ code: number }>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) out[GrpcStatus[r.code] ?? r.code] = (out[GrpcStatus[r.code] ?? r.code] ?? 0) + 1;
  return out;
}

/** The value of one sample in Prometheus text (undefined when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.indexOf('}'));
    const got = Object.fromEntries(body.split(',').map((kv) => [kv.slice(0, kv.indexOf('=')), JSON.parse(kv.slice(kv.indexOf('=') + 1)) as string]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/** Runs the endpoint fixture child (`node client.js <args>`) and parses its JSON line. */
function child<T>(args: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CHILD, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()!) as T);
    });
  });
}

async function reflectionList(socketPath: string): Promise<string[]> {
  const require = createRequire(import.meta.url);
  const dir = join(require.resolve('@grpc/reflection/package.json'), '..', 'build', 'proto');
  const pkg = grpc.loadPackageDefinition(loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [dir], keepCase: true })) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => Client & { ServerReflectionInfo(): ClientDuplexStream<object, Record<string, unknown>> } } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(`unix:${socketPath}`, credentials.createInsecure());
  try {
    return await within(
      new Promise<string[]>((resolve, reject) => {
        const call = client.ServerReflectionInfo();
        call.on('data', (m) => {
          resolve((m['list_services_response'] as { service: Array<{ name: string }> }).service.map((s) => s.name));
          call.end();
        });
        call.on('error', reject);
        call.write({ list_services: '*' });
      }),
      5000,
      'reflection',
    );
  } finally {
    client.close();
  }
}

describe('per-caller limits on a real agent socket', () => {
  it('a flooding process gets RESOURCE_EXHAUSTED before any attestation; another process keeps being served; health and reflection still answer', async () => {
    const e = await setup({ ratePerPid: 2, burstPerPid: 10 });
    const flooder = wl(e);
    const results: Array<{ code: number; details: string }> = [];
    let flooding = true;
    const flood = (async () => {
      while (flooding) results.push(...(await Promise.all(Array.from({ length: 50 }, () => fetchJwt(flooder)))));
    })();
    try {
      // Another process on the same socket, during the flood: every call served, each fast.
      const other = await child<{ codes: Record<string, number>; maxMs: number }>(['jwt', e.socketPath, '8']);
      assert.deepEqual(other.codes, { 0: 8 }, `the other process is served: ${JSON.stringify(other)}`);
      assert.ok(other.maxMs < 2000, `the other process's slowest call took ${other.maxMs.toFixed(0)} ms during the flood`);
      // Health and reflection are not rate limited.
      const health = new HealthClient(`unix:${e.socketPath}`, credentials.createInsecure());
      e.clients.push(health);
      const st = await within(new Promise<number>((res, rej) => health.check({ service: '' }, (err, r) => (err ? rej(err) : res(r.status)))), 5000, 'health check');
      assert.equal(st, HealthCheckResponse_ServingStatus.SERVING);
      assert.ok((await reflectionList(e.socketPath)).includes('SpiffeWorkloadAPI'));
    } finally {
      flooding = false;
      await flood;
    }
    const outcome = count(results);
    // The clock stood still: exactly the burst was admitted, everything else refused.
    assert.equal(outcome.OK, 10, JSON.stringify(outcome));
    assert.equal(outcome.RESOURCE_EXHAUSTED, results.length - 10, JSON.stringify(outcome));
    assert.ok(results.length >= 100, `the flood made ${results.length} calls`);
    const refused = results.find((r) => r.code === GrpcStatus.RESOURCE_EXHAUSTED)!;
    assert.equal(refused.details, 'rate limit exceeded for this process: at most 2 calls per second, burst 10 (agent.workload_api_rate_limit_per_pid); retry later');
    assert.equal(e.attestations(), 10 + 8, 'refused calls cost no attestation (10 of the flooder, 8 of the other process)');

    // SDS shares the caller's bucket: refused too, counted under api="sds".
    const sdsRefused = await new Promise<ServiceError | null>((resolve) => sds(e).fetchSecrets(sdsReq(['ROOTCA']), (err) => resolve(err)));
    assert.equal(sdsRefused?.code, GrpcStatus.RESOURCE_EXHAUSTED, String(sdsRefused?.details));
    assert.match(sdsRefused.details, /agent\.workload_api_rate_limit_per_pid/);

    // The bucket refills with the (injected) clock: 2 per second, never beyond the burst.
    e.clock.now += 1000;
    assert.deepEqual(count(await Promise.all(Array.from({ length: 5 }, () => fetchJwt(flooder)))), { OK: 2, RESOURCE_EXHAUSTED: 3 });
    e.clock.now += 3_600_000;
    assert.deepEqual(count(await Promise.all(Array.from({ length: 15 }, () => fetchJwt(flooder)))), { OK: 10, RESOURCE_EXHAUSTED: 5 });

    const text = await e.metrics();
    assert.equal(sample(text, REFUSED_METRIC, { api: 'workload', reason: 'rate', scope: 'process' }), results.length - 10 + 3 + 5);
    assert.equal(sample(text, REFUSED_METRIC, { api: 'sds', reason: 'rate', scope: 'process' }), 1);
    assert.equal(sample(text, REFUSED_METRIC, { api: 'workload', reason: 'streams', scope: 'process' }), 0);
  });

  it('stream opens take a token too, so a reconnect loop is bounded by the rate as well as the stream cap', async () => {
    const e = await setup({ ratePerPid: 1, burstPerPid: 3, maxStreamsPerPid: 100 });
    const c = wl(e);
    const outcomes: string[] = [];
    for (let i = 0; i < 5; i++) {
      const s = collect<X509SVIDResponse>(c.fetchX509Svid({}, headerMetadata()));
      const first = await Promise.race([s.next().then(() => 'OK'), s.ended.then((err) => (err ? GrpcStatus[err.code]! : 'END'))]);
      outcomes.push(first);
      s.cancel();
    }
    assert.deepEqual(outcomes, ['OK', 'OK', 'OK', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED']);
    assert.equal(e.attestations(), 3);
  });

  it('the stream cap is per process over the Workload API and SDS; health Watch is not starved; open streams are a gauge', async () => {
    const e = await setup({ maxStreamsPerPid: 3, ratePerPid: 0 });
    const c = wl(e);
    const s = sds(e);
    const a = collect<X509SVIDResponse>(c.fetchX509Svid({}, headerMetadata()));
    const b = collect<X509SVIDResponse>(c.fetchX509Bundles({}, headerMetadata()));
    const duplex = s.streamSecrets();
    const d = collect<DiscoveryResponse>(duplex);
    duplex.write(sdsReq(['ROOTCA']));
    await Promise.all([a.next(), b.next(), d.next()]);
    let text = await e.metrics();
    assert.equal(sample(text, OPEN_STREAMS_METRIC, { api: 'workload' }), 2);
    assert.equal(sample(text, OPEN_STREAMS_METRIC, { api: 'sds' }), 1);

    const over = collect(c.fetchJwtBundles({}, headerMetadata()));
    const overErr = await within(over.ended, 5000, 'the refused stream');
    assert.equal(overErr?.code, GrpcStatus.RESOURCE_EXHAUSTED);
    assert.equal(overErr.details, 'too many open streams for this process (limit 3, agent.workload_api_max_streams_per_pid)');
    const sdsOver = s.streamSecrets();
    const sdsOverC = collect<DiscoveryResponse>(sdsOver);
    sdsOver.write(sdsReq(['ROOTCA']));
    assert.equal((await within(sdsOverC.ended, 5000, 'the refused SDS stream'))?.code, GrpcStatus.RESOURCE_EXHAUSTED);

    // Health Watch has its own budget: still served while the API budget is spent.
    const health = new HealthClient(`unix:${e.socketPath}`, credentials.createInsecure());
    e.clients.push(health);
    const w = collect<{ status: number }>(health.watch({ service: '' }));
    assert.equal((await w.next()).status, HealthCheckResponse_ServingStatus.SERVING);
    w.cancel();

    // Unary calls are not streams: served.
    assert.equal((await fetchJwt(c)).code, 0);
    // Another process is not affected by this one's streams.
    const otherX509 = await child<{ ids?: string[]; code?: number }>(['x509', e.socketPath]);
    assert.deepEqual(otherX509.ids, ['spiffe://example.org/workload'], JSON.stringify(otherX509));

    text = await e.metrics();
    assert.equal(sample(text, REFUSED_METRIC, { api: 'workload', reason: 'streams', scope: 'process' }), 1);
    assert.equal(sample(text, REFUSED_METRIC, { api: 'sds', reason: 'streams', scope: 'process' }), 1);
    // Closing streams frees slots and the gauge follows.
    a.cancel();
    duplex.cancel();
    for (let i = 0; i < 300 && e.ep.limits.stats().openStreams.workload + e.ep.limits.stats().openStreams.sds > 1; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(e.ep.limits.stats().openStreams, { workload: 1, sds: 0 });
    const again = collect<X509SVIDResponse>(c.fetchX509Svid({}, headerMetadata()));
    await again.next();
    again.cancel();
    b.cancel();
  });

  it('per-uid stream limit (when enabled) covers every process of the uid', async () => {
    const e = await setup({ maxStreamsPerPid: 10, maxStreamsPerUid: 2, ratePerPid: 0 });
    const c = wl(e);
    const a = collect<X509SVIDResponse>(c.fetchX509Svid({}, headerMetadata()));
    const b = collect<X509SVIDResponse>(c.fetchX509Bundles({}, headerMetadata()));
    await Promise.all([a.next(), b.next()]);
    // A second process of the same uid: its own process budget is untouched, the uid's is spent.
    const forked = await child<{ ids?: string[]; code?: number; details?: string }>(['x509', e.socketPath]);
    assert.equal(forked.code, GrpcStatus.RESOURCE_EXHAUSTED, JSON.stringify(forked));
    assert.equal(forked.details, `too many open streams for uid ${UID} (limit 2 over all its processes, agent.workload_api_max_streams_per_uid)`);
    a.cancel();
    for (let i = 0; i < 300 && e.ep.limits.stats().openStreams.workload > 1; i++) await new Promise((r) => setImmediate(r));
    const served = await child<{ ids?: string[] }>(['x509', e.socketPath]);
    assert.deepEqual(served.ids, ['spiffe://example.org/workload'], JSON.stringify(served));
    b.cancel();
    assert.equal(sample(await e.metrics(), REFUSED_METRIC, { api: 'workload', reason: 'streams', scope: 'uid' }), 1);
  });

  it('0 disables the limits', async () => {
    const e = await setup({ maxStreamsPerPid: 0, ratePerPid: 0 });
    const c = wl(e);
    assert.deepEqual(count(await Promise.all(Array.from({ length: 600 }, () => fetchJwt(c)))), { OK: 600 });
    const streams = Array.from({ length: 120 }, () => collect<X509SVIDResponse>(c.fetchX509Svid({}, headerMetadata())));
    await Promise.all(streams.map((s) => s.next()));
    assert.equal(e.ep.limits.stats().openStreams.workload, 120);
    for (const s of streams) s.cancel();
  });
});

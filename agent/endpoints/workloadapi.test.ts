import { credentials, Server, ServerCredentials, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { fork, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WorkloadAttestationError, type WorkloadAttestor } from '../../attestors/workload/types.js';
import { UnixWorkloadAttestor } from '../../attestors/workload/unix/unix.js';
import { HealthCheckResponse_ServingStatus, HealthClient } from '../../proto/gen/grpc/health/v1/health.js';
import {
  JWTSVIDRequest,
  SpiffeWorkloadAPIService,
  type JWTBundlesResponse,
  JWTSVIDResponse,
  type ValidateJWTSVIDResponse,
  type X509BundlesResponse,
  type X509SVIDResponse,
} from '../../proto/gen/workload/workload.js';
import { parseJwtBundleJwks, parseX509BundleDer } from '../../spiffe/bundle.js';
import { parseTrustDomain } from '../../spiffe/id.js';
import { mintJwtSvid, parseJwtSvidInsecure } from '../../spiffe/jwtsvid.js';
import { importPrivateKeyPkcs8 } from '../../spiffe/keys.js';
import { splitConcatenatedDer } from '../../spiffe/pem.js';
import { certificateMatchesKey } from '../../spiffe/x509/parse.js';
import { verifyX509Svid } from '../../spiffe/x509/verify.js';
import type { X509Identity } from '../manager/types.js';

import { collect, FakeIdentityCache, headerMetadata, rawUnaryCall, recordingLogger, sel, silentLogger, TestTrustDomain, within, workloadClient } from './testkit.js';
import type { PeerContext } from './types.js';
import { forOtherUid } from '../../test/support/otheruid.js';
import { createWorkloadApiService, WORKLOAD_API_SERVICE } from './workloadapi.js';
import { startAgentEndpoint, type AgentEndpoint, type AgentEndpointLimits } from './endpoint.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'fixtures', 'client.js');
const root = mkdtempSync(join(tmpdir(), 'spindle-workloadapi-'));
chmodSync(root, 0o755); // uid 65534 must reach the socket
let n = 0;
const socketIn = (): string => join(root, `s${++n}`, 'api.sock');

const UID = process.getuid!();
const NOBODY = 65534;

let own: TestTrustDomain;
let partner: TestTrustDomain;
let other: TestTrustDomain;
let rootId: X509Identity;
let rootDbId: X509Identity;
let nobodyId: X509Identity;

before(async () => {
  [own, partner, other] = await Promise.all([TestTrustDomain.create('example.org'), TestTrustDomain.create('partner.org'), TestTrustDomain.create('other.org')]);
  rootId = await own.identity('spiffe://example.org/workload/root', { hint: 'default', federatesWith: [partner.trustDomain] });
  rootDbId = await own.identity('spiffe://example.org/workload/db', { hint: 'db' });
  nobodyId = await own.identity('spiffe://example.org/workload/nobody');
});
after(() => rmSync(root, { recursive: true, force: true }));

interface Env {
  cache: FakeIdentityCache;
  ep: AgentEndpoint;
  socketPath: string;
  client: ReturnType<typeof workloadClient>;
  close(): Promise<void>;
}

const envs: Env[] = [];
after(async () => {
  for (const e of envs) await e.close();
});

async function setup(opts: { limits?: AgentEndpointLimits; attestors?: WorkloadAttestor[]; logger?: ReturnType<typeof recordingLogger> } = {}): Promise<Env> {
  const cache = new FakeIdentityCache(own);
  cache.federated.set(partner.trustDomain, partner.bundle);
  cache.federated.set(other.trustDomain, other.bundle);
  cache.entries = [
    { selectors: [sel(`unix:uid:${UID}`)], identity: rootId },
    { selectors: [sel(`unix:uid:${UID}`), sel(`unix:gid:${process.getgid!()}`)], identity: rootDbId },
    { selectors: [sel(`unix:uid:${NOBODY}`)], identity: nobodyId },
  ];
  const socketPath = socketIn();
  const ep = await startAgentEndpoint({
    socketPath,
    cache,
    attestors: opts.attestors ?? [new UnixWorkloadAttestor()],
    logger: opts.logger ?? silentLogger,
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
  const client = workloadClient(socketPath);
  let closed = false;
  const env: Env = {
    cache,
    ep,
    socketPath,
    client,
    async close() {
      if (closed) return;
      closed = true;
      client.close();
      await ep.close();
    },
  };
  envs.push(env);
  return env;
}

type Unary<Req, Res> = (req: Req, md: ReturnType<typeof headerMetadata>, cb: (err: ServiceError | null, res: Res) => void) => unknown;
function call<Req, Res>(fn: Unary<Req, Res>, self: unknown, req: Req, md = headerMetadata()): Promise<Res> {
  return new Promise((resolve, reject) => fn.call(self, req, md, (err, res) => (err ? reject(err) : resolve(res))));
}
const fetchJwt = (e: Env, req: Partial<JWTSVIDRequest>, md = headerMetadata()): Promise<JWTSVIDResponse> =>
  call(e.client.fetchJwtsvid as Unary<JWTSVIDRequest, JWTSVIDResponse>, e.client, { audience: [], spiffeId: '', ...req }, md);
const validateJwt = (e: Env, audience: string, svid: string, md = headerMetadata()): Promise<ValidateJWTSVIDResponse> =>
  call(e.client.validateJwtsvid as Unary<{ audience: string; svid: string }, ValidateJWTSVIDResponse>, e.client, { audience, svid }, md);

/** The selectors a call was looked up with carry this process's uid and no other. */
function assertOwnUid(selectors: string[], what: string): void {
  assert.deepEqual(selectors.filter((s) => s.startsWith('unix:uid:')), [`unix:uid:${UID}`], `${what}: ${JSON.stringify(selectors)}`);
}

function rejectsWith(p: Promise<unknown>, code: GrpcStatus, details?: RegExp): Promise<void> {
  return assert.rejects(p, (err: ServiceError) => {
    assert.equal(GrpcStatus[err.code], GrpcStatus[code], `${err.code} ${err.details}`);
    if (details) assert.match(err.details, details);
    return true;
  });
}

async function streamStatus(stream: ReturnType<typeof collect>, code: GrpcStatus, details?: RegExp): Promise<void> {
  const err = await within(stream.ended, 10_000, 'the end of the stream');
  assert.ok(err, 'the stream must end with an error status');
  assert.equal(GrpcStatus[err.code], GrpcStatus[code], `${err.code} ${err.details}`);
  if (details) assert.match(err.details, details);
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

const x509Stream = (e: Env, md = headerMetadata()) => collect<X509SVIDResponse>(e.client.fetchX509Svid({}, md));

describe('Workload API: socket, header, health', () => {
  it('socket is world-connectable (0777) and health reports SERVING without a security header', async () => {
    const e = await setup();
    assert.equal(statSync(e.socketPath).mode & 0o777, 0o777);
    const health = new HealthClient(`unix:${e.socketPath}`, credentials.createInsecure());
    const check = (service: string) => new Promise<unknown>((resolve, reject) => health.check({ service }, (err, res) => (err ? reject(err) : resolve(res.status))));
    assert.equal(await check(''), HealthCheckResponse_ServingStatus.SERVING);
    assert.equal(await check('SpiffeWorkloadAPI'), HealthCheckResponse_ServingStatus.SERVING);
    await rejectsWith(check('nope'), GrpcStatus.NOT_FOUND);
    const watch = collect<{ status: number }>(health.watch({ service: '' }));
    assert.equal((await watch.next()).status, HealthCheckResponse_ServingStatus.SERVING);
    watch.cancel();
    health.close();
  });

  it('every method: security header absent or not exactly "true" -> INVALID_ARGUMENT', async () => {
    const e = await setup();
    for (const md of [headerMetadata(null), headerMetadata('false'), headerMetadata('TRUE'), headerMetadata('')]) {
      await streamStatus(x509Stream(e, md), GrpcStatus.INVALID_ARGUMENT, /security header missing/);
      await streamStatus(collect(e.client.fetchX509Bundles({}, md)), GrpcStatus.INVALID_ARGUMENT);
      await streamStatus(collect(e.client.fetchJwtBundles({}, md)), GrpcStatus.INVALID_ARGUMENT);
      // Checked before the fields: even a request with a missing audience gets the header error.
      await rejectsWith(fetchJwt(e, { audience: [] }, md), GrpcStatus.INVALID_ARGUMENT, /security header missing/);
      await rejectsWith(validateJwt(e, 'a', 'b', md), GrpcStatus.INVALID_ARGUMENT, /security header missing/);
    }
    assert.equal(e.cache.subscriberCount, 0);
  });

  it('unknown methods (FetchWITSVID) are UNIMPLEMENTED', async () => {
    const e = await setup();
    const res = await new Promise<ServiceError | null>((resolve) => {
      e.client.makeUnaryRequest('/SpiffeWorkloadAPI/FetchWITSVID', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), headerMetadata(), (err) => resolve(err));
    });
    assert.equal(res?.code, GrpcStatus.UNIMPLEMENTED);
  });
});

describe('Workload API: FetchX509SVID', () => {
  it('first message: full identities, key matches leaf, chain verifies against the bundle bytes, federated bundles', async () => {
    const e = await setup();
    const s = x509Stream(e);
    const m = await s.next();
    assert.deepEqual(m.svids.map((x) => x.spiffeId), [rootId.spiffeId, rootDbId.spiffeId]); // cache order: default first
    assert.deepEqual(m.svids.map((x) => x.hint), ['default', 'db']);
    for (const svid of m.svids) {
      const certs = splitConcatenatedDer(svid.x509Svid);
      assert.ok(certs.length >= 1);
      assert.ok(certificateMatchesKey(certs[0]!, importPrivateKeyPkcs8(svid.x509SvidKey)), 'PKCS#8 key matches the leaf');
      const bundle = parseX509BundleDer(own.trustDomain, svid.bundle);
      assert.equal(verifyX509Svid(svid.x509Svid, bundle).id, svid.spiffeId);
    }
    assert.deepEqual(m.svids[0]!.x509Svid, Buffer.concat(rootId.chain));
    assert.deepEqual(m.crl, []);
    // Federated: only what the caller's identities federate with, keyed spiffe://<td>.
    assert.deepEqual([...m.federatedBundles.keys()], ['spiffe://partner.org']);
    assert.deepEqual(m.federatedBundles.get('spiffe://partner.org'), partner.ca.rootDer);
    s.cancel();
    await until(() => e.cache.subscriberCount === 0, 'unsubscribe on cancel');
  });

  it('pushes on rotation and on bundle change, skips identical states, ends PERMISSION_DENIED when identities go', async () => {
    const e = await setup();
    const s = x509Stream(e);
    const first = await s.next();
    // Rotation: a new SVID for the same entry.
    const rotated = await own.identity(rootId.spiffeId, { hint: 'default', federatesWith: [partner.trustDomain] });
    e.cache.entries[0] = { ...e.cache.entries[0]!, identity: rotated };
    e.cache.notify();
    const second = await s.next();
    assert.deepEqual(second.svids[0]!.x509Svid, Buffer.concat(rotated.chain));
    assert.notDeepEqual(second.svids[0]!.x509Svid, first.svids[0]!.x509Svid);
    // Nothing changed: no message. Then a bundle change: pushed.
    e.cache.notify();
    const extraRoot = (await TestTrustDomain.create('example.org')).ca.rootDer;
    const oldBundle = own.bundle;
    const newBundle = oldBundle.clone();
    newBundle.addX509Authority(extraRoot);
    own.bundle = newBundle;
    try {
      e.cache.notify();
      const third = await s.next();
      assert.deepEqual(splitConcatenatedDer(third.svids[0]!.bundle), [own.ca.rootDer, extraRoot]);
      assert.equal(s.messages.length, 3, 'the identical state was not sent again');
      // A federated bundle change is pushed too.
      const fed = partner.bundle.clone();
      fed.addX509Authority(extraRoot);
      e.cache.federated.set(partner.trustDomain, fed);
      e.cache.notify();
      const fourth = await s.next();
      assert.equal(splitConcatenatedDer(fourth.federatedBundles.get('spiffe://partner.org')!).length, 2);
    } finally {
      own.bundle = oldBundle;
    }
    // Every identity removed: the stream ends with PERMISSION_DENIED (never an empty svids list).
    e.cache.entries = [];
    e.cache.notify();
    await streamStatus(s, GrpcStatus.PERMISSION_DENIED, /no identity issued/);
    assert.ok(s.messages.every((m) => m.svids.length > 0));
    await until(() => e.cache.subscriberCount === 0, 'unsubscribe after the stream ended');
  });

  it('a caller with no entry gets PERMISSION_DENIED on every method that issues or shows bundles', async () => {
    const e = await setup();
    e.cache.entries = e.cache.entries.filter((x) => x.identity !== rootId && x.identity !== rootDbId);
    await streamStatus(x509Stream(e), GrpcStatus.PERMISSION_DENIED, /no identity issued/);
    await streamStatus(collect(e.client.fetchX509Bundles({}, headerMetadata())), GrpcStatus.PERMISSION_DENIED);
    await streamStatus(collect(e.client.fetchJwtBundles({}, headerMetadata())), GrpcStatus.PERMISSION_DENIED);
    await rejectsWith(fetchJwt(e, { audience: ['x'] }), GrpcStatus.PERMISSION_DENIED, /no identity issued/);
    await until(() => e.cache.subscriberCount === 0, 'no subscription left');
    // What the endpoint asked the cache for: this caller's attested selectors on every call (the
    // cache's answer, nothing, became PERMISSION_DENIED; the matching itself is the manager's).
    assert.deepEqual(new Set(e.cache.asked.map((a) => a.method)), new Set(['subscribe', 'fetchJwt']));
    for (const a of e.cache.asked) assertOwnUid(a.selectors, a.method);
  });

  it('cache not ready -> UNAVAILABLE', async () => {
    const e = await setup();
    e.cache.failInitial = new Error('agent not attested yet');
    await streamStatus(x509Stream(e), GrpcStatus.UNAVAILABLE, /not available/);
  });

  it('two uids, real SO_PEERCRED + unix attestor: a uid-65534 child gets its identity, this root caller gets its own', async () => {
    const e = await setup();
    const childProc = spawn(process.execPath, [forOtherUid(CHILD), 'x509', e.socketPath], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'inherit'] });
    const line = new Promise<Record<string, unknown>>((resolve, reject) => {
      createInterface({ input: childProc.stdout! }).once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>));
      childProc.once('exit', (code) => reject(new Error(`child exited ${code}`)));
    });
    const [kid, mine] = await Promise.all([line, x509Stream(e).next()]);
    assert.equal(kid['uid'], NOBODY);
    assert.deepEqual(kid['ids'], [nobodyId.spiffeId], JSON.stringify(kid));
    assert.deepEqual(mine.svids.map((s) => s.spiffeId), [rootId.spiffeId, rootDbId.spiffeId]);
    // No entry for 65534 any more: the child is denied.
    e.cache.entries = e.cache.entries.filter((x) => x.identity !== nobodyId);
    const denied = spawn(process.execPath, [forOtherUid(CHILD), 'x509', e.socketPath], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'inherit'] });
    const deniedLine = await new Promise<Record<string, unknown>>((resolve) => createInterface({ input: denied.stdout! }).once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>)));
    assert.equal(deniedLine['code'], GrpcStatus.PERMISSION_DENIED, JSON.stringify(deniedLine));
    // Each process was looked up with its own kernel-attested uid (65534's calls with 65534's).
    const uids = e.cache.asked.map((a) => a.selectors.filter((s) => s.startsWith('unix:uid:')));
    assert.ok(uids.some((u) => u.length === 1 && u[0] === `unix:uid:${NOBODY}`), JSON.stringify(uids));
    assert.ok(uids.every((u) => u.length === 1 && (u[0] === `unix:uid:${NOBODY}` || u[0] === `unix:uid:${UID}`)), JSON.stringify(uids));
  });
});

describe('Workload API: bundle streams', () => {
  it('FetchX509Bundles: our td + the caller\'s federated bundles, pushed on change, identical states skipped', async () => {
    const e = await setup();
    const s = collect<X509BundlesResponse>(e.client.fetchX509Bundles({}, headerMetadata()));
    const m = await s.next();
    assert.deepEqual([...m.bundles.keys()].sort(), ['spiffe://example.org', 'spiffe://partner.org']);
    assert.deepEqual(m.bundles.get('spiffe://example.org'), own.ca.rootDer);
    assert.deepEqual(m.crl, []);
    e.cache.notify(); // nothing changed
    const fed = partner.bundle.clone();
    fed.addX509Authority(other.ca.rootDer);
    e.cache.federated.set(partner.trustDomain, fed);
    e.cache.notify();
    const m2 = await s.next();
    assert.equal(splitConcatenatedDer(m2.bundles.get('spiffe://partner.org')!).length, 2);
    assert.equal(s.messages.length, 2);
    // A rotated SVID does not change the bundles: no message.
    e.cache.entries[0] = { ...e.cache.entries[0]!, identity: await own.identity(rootId.spiffeId, { hint: 'default', federatesWith: [partner.trustDomain] }) };
    e.cache.notify();
    e.cache.entries = [];
    e.cache.notify();
    await streamStatus(s, GrpcStatus.PERMISSION_DENIED);
    assert.equal(s.messages.length, 2);
  });

  it('FetchJWTBundles: JWKS per trust domain, every key with a kid', async () => {
    const e = await setup();
    const s = collect<JWTBundlesResponse>(e.client.fetchJwtBundles({}, headerMetadata()));
    const m = await s.next();
    assert.deepEqual([...m.bundles.keys()].sort(), ['spiffe://example.org', 'spiffe://partner.org']);
    for (const [key, jwks] of m.bundles) {
      const doc = JSON.parse(jwks.toString('utf8')) as { keys: Array<{ kid?: string }> };
      assert.ok(doc.keys.length > 0 && doc.keys.every((k) => typeof k.kid === 'string' && k.kid !== ''), key);
      const td = parseTrustDomain(key.slice('spiffe://'.length));
      assert.ok(parseJwtBundleJwks(td, jwks).hasJwtAuthority(`kid-${td}`));
    }
    s.cancel();
    await until(() => e.cache.subscriberCount === 0, 'unsubscribe');
  });
});

describe('Workload API: JWT-SVIDs', () => {
  it('FetchJWTSVID: all identities or the one asked for, with every audience; argument and permission errors', async () => {
    const e = await setup();
    const all = await fetchJwt(e, { audience: ['svc-a', 'svc-b'] });
    assert.deepEqual(all.svids.map((s) => [s.spiffeId, s.hint]), [[rootId.spiffeId, 'default'], [rootDbId.spiffeId, 'db']]);
    for (const s of all.svids) {
      const parsed = parseJwtSvidInsecure(s.svid);
      assert.equal(parsed.id, s.spiffeId);
      assert.deepEqual(parsed.claims['aud'], ['svc-a', 'svc-b']);
    }
    const one = await fetchJwt(e, { audience: ['svc-a'], spiffeId: rootDbId.spiffeId });
    assert.deepEqual(one.svids.map((s) => s.spiffeId), [rootDbId.spiffeId]);
    await rejectsWith(fetchJwt(e, { audience: [] }), GrpcStatus.INVALID_ARGUMENT, /audience must be specified/);
    await rejectsWith(fetchJwt(e, { audience: ['a', ''] }), GrpcStatus.INVALID_ARGUMENT, /audience/);
    e.cache.asked.length = 0;
    await rejectsWith(fetchJwt(e, { audience: ['a'], spiffeId: nobodyId.spiffeId }), GrpcStatus.PERMISSION_DENIED, /no identity issued for/);
    // Asked with this caller's selectors and the requested ID: the cache decides (agent/manager).
    assert.equal(e.cache.asked.length, 1);
    assert.equal(e.cache.asked[0]!.method, 'fetchJwt');
    assert.equal(e.cache.asked[0]!.spiffeId, nobodyId.spiffeId);
    assertOwnUid(e.cache.asked[0]!.selectors, 'fetchJwt');
    await rejectsWith(fetchJwt(e, { audience: ['a'], spiffeId: 'spiffe://example.org/a/../workload/db' }), GrpcStatus.INVALID_ARGUMENT, /invalid requested SPIFFE ID/);
    await rejectsWith(fetchJwt(e, { audience: ['a'], spiffeId: 'not an id' }), GrpcStatus.INVALID_ARGUMENT);
  });

  it('FetchJWTSVID: more than 32 distinct audiences is INVALID_ARGUMENT naming the limit, before the cache (no server round trip)', async () => {
    const e = await setup();
    const aud = (n: number): string[] => Array.from({ length: n }, (_, i) => `aud-${i}`);
    const before = e.cache.fetchJwtCalls.length;
    await rejectsWith(fetchJwt(e, { audience: aud(33) }), GrpcStatus.INVALID_ARGUMENT, /too many audiences: 33 distinct values, at most 32 per JWT-SVID request/);
    assert.equal(e.cache.fetchJwtCalls.length, before, 'refused before asking the cache (and so the server)');
    // The limit counts distinct values, as the server does after the agent removes duplicates.
    const ok = await fetchJwt(e, { audience: [...aud(32), ...aud(32)] });
    assert.equal((parseJwtSvidInsecure(ok.svids[0]!.svid).claims['aud'] as string[]).length, 32);
  });

  it('ValidateJWTSVID: claims of a good token; wrong audience, junk, foreign keys and missing fields are INVALID_ARGUMENT', async () => {
    const e = await setup();
    const [jwt] = (await fetchJwt(e, { audience: ['backend'] })).svids;
    const ok = await validateJwt(e, 'backend', jwt!.svid);
    assert.equal(ok.spiffeId, rootId.spiffeId);
    assert.equal(ok.claims?.['sub'], rootId.spiffeId);
    assert.deepEqual(ok.claims?.['aud'], ['backend']);
    assert.equal(typeof ok.claims?.['exp'], 'number');
    // A federated trust domain's token validates against the bundles the agent knows.
    const fedToken = (await mintJwtSvid({ id: 'spiffe://partner.org/api' as never, audience: ['backend'], signer: partner.signer })).token;
    assert.equal((await validateJwt(e, 'backend', fedToken)).spiffeId, 'spiffe://partner.org/api');
    await rejectsWith(validateJwt(e, 'frontend', jwt!.svid), GrpcStatus.INVALID_ARGUMENT, /audience/);
    await rejectsWith(validateJwt(e, '', jwt!.svid), GrpcStatus.INVALID_ARGUMENT, /audience must be specified/);
    await rejectsWith(validateJwt(e, 'backend', ''), GrpcStatus.INVALID_ARGUMENT, /svid must be specified/);
    await rejectsWith(validateJwt(e, 'backend', 'not.a.jwt'), GrpcStatus.INVALID_ARGUMENT);
    const stranger = await TestTrustDomain.create('example.org');
    const forged = (await mintJwtSvid({ id: rootId.spiffeId, audience: ['backend'], signer: stranger.signer })).token;
    await rejectsWith(validateJwt(e, 'backend', forged), GrpcStatus.INVALID_ARGUMENT, /signature is not valid/); // same kid, another key
    const [, payload] = jwt!.svid.split('.');
    const algNone = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${payload}.`;
    await rejectsWith(validateJwt(e, 'backend', algNone), GrpcStatus.INVALID_ARGUMENT);
  });

  it('oversized requests are refused (64 KiB receive limit)', async () => {
    const e = await setup();
    await rejectsWith(validateJwt(e, 'backend', 'x'.repeat(70 * 1024)), GrpcStatus.RESOURCE_EXHAUSTED);
  });

  it('never logs keys or tokens', async () => {
    const logger = recordingLogger();
    const e = await setup({ logger });
    const [jwt] = (await fetchJwt(e, { audience: ['backend'] })).svids;
    await validateJwt(e, 'backend', jwt!.svid);
    await rejectsWith(validateJwt(e, 'other', jwt!.svid), GrpcStatus.INVALID_ARGUMENT);
    const m = await x509Stream(e).next();
    const text = JSON.stringify(logger.records);
    const [, , sig] = jwt!.svid.split('.');
    assert.ok(!text.includes(sig!), 'no token in logs');
    assert.ok(!text.includes(m.svids[0]!.x509SvidKey.toString('base64')), 'no key in logs');
    assert.ok(logger.records.length > 0);
  });
});

describe('Workload API: caller identity threats and limits', () => {
  it('socket handed to another process after the caller exited -> UNAVAILABLE', async () => {
    const e = await setup();
    const kid = fork(CHILD, ['handoff', e.socketPath], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const sock = await new Promise<Socket>((resolve) => kid.once('message', (_m, handle) => resolve(handle as Socket)));
    await new Promise<void>((r) => (kid.exitCode !== null ? r() : kid.once('exit', () => r())));
    // The connection's peer (per SO_PEERCRED) is the exited child; this process now holds the socket.
    const req = JWTSVIDRequest.encode({ audience: ['x'], spiffeId: '' }).finish();
    const res = await rawUnaryCall(sock, SpiffeWorkloadAPIService.fetchJwtsvid.path, req, { 'workload.spiffe.io': 'true' });
    assert.equal(res.grpcStatus, GrpcStatus.UNAVAILABLE, res.grpcMessage);
    assert.match(res.grpcMessage, /workload attestation failed|caller process changed|not tracked/);
    sock.destroy();
  });

  it('socket handed over SCM_RIGHTS while the connector (uid 65534) is alive -> served as the connector, not as the holder', async () => {
    const e = await setup();
    const kid = fork(forOtherUid(CHILD), ['handoff-hold', e.socketPath], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    try {
      const sock = await new Promise<Socket>((resolve) => kid.once('message', (_m, handle) => resolve(handle as Socket)));
      // SO_PEERCRED names the process that called connect(): this root process holds the socket,
      // but the call is attested as the live uid-65534 child (it chose to share its identity).
      const req = JWTSVIDRequest.encode({ audience: ['x'], spiffeId: '' }).finish();
      const res = await rawUnaryCall(sock, SpiffeWorkloadAPIService.fetchJwtsvid.path, req, { 'workload.spiffe.io': 'true' });
      assert.equal(res.grpcStatus, GrpcStatus.OK, res.grpcMessage);
      const svids = JWTSVIDResponse.decode(res.body.subarray(5)).svids.map((s) => s.spiffeId);
      assert.deepEqual(svids, [nobodyId.spiffeId], 'the connector\'s identity, none of root\'s');
      sock.destroy();
    } finally {
      kid.send('exit');
      await new Promise<void>((r) => (kid.exitCode !== null ? r() : kid.once('exit', () => r())));
    }
  });

  it('caller no longer the same process after attestation (pid reuse) -> UNAVAILABLE; attestation failure -> UNAVAILABLE', async () => {
    const cache = new FakeIdentityCache(own);
    cache.entries = [{ selectors: [sel(`unix:uid:${UID}`)], identity: rootId }];
    let same = true;
    let attestations = 0;
    let checks = 0;
    const ctx: PeerContext = {
      key: 'k',
      peer: { pid: process.pid, uid: UID, gid: 0, groups: [] },
      processKey: `${process.pid}:test`,
      whyNotSameProcess: () => {
        checks++;
        return same ? undefined : 'process 1 exited or its pid was reused';
      },
      stillSameProcess: () => ctx.whyNotSameProcess() === undefined,
    };
    const attestor: WorkloadAttestor = {
      name: 'unix',
      async attest(peer) {
        attestations++;
        if (peer.pid === -1) throw new WorkloadAttestationError('process -1 is gone');
        return [sel(`unix:uid:${UID}`)];
      },
    };
    const svc = createWorkloadApiService({ cache, attestors: [attestor], peerOf: () => ctx, logger: silentLogger });
    const server = new Server();
    server.addService(WORKLOAD_API_SERVICE, svc.implementation);
    const path = socketIn();
    mkdirSync(dirname(path), { recursive: true });
    await new Promise<void>((r, j) => server.bindAsync(`unix:${path}`, ServerCredentials.createInsecure(), (err) => (err ? j(err) : r())));
    const client = workloadClient(path);
    const e = { client } as Env;
    try {
      assert.equal((await fetchJwt(e, { audience: ['a'] })).svids.length, 1);
      // An open stream whose caller changes gets nothing more: the next push ends it.
      const open = x509Stream(e);
      await open.next();
      const before = checks;
      cache.notify(); // an unchanged update: checked (nothing to send)
      assert.equal(checks - before, 1, 'every push after the first checks the caller again');
      same = false;
      cache.notify();
      await streamStatus(open, GrpcStatus.UNAVAILABLE, /caller process changed/);
      assert.equal(open.messages.length, 1); // e.g. the pidfd reports the original process exited, or the start time changed
      await rejectsWith(fetchJwt(e, { audience: ['a'] }), GrpcStatus.UNAVAILABLE, /caller process changed/);
      await streamStatus(x509Stream(e), GrpcStatus.UNAVAILABLE, /caller process changed/);
      assert.equal(cache.subscriberCount, 0, 'nothing subscribed for a refused caller');
      same = true;
      (ctx.peer as { pid: number }).pid = -1;
      await rejectsWith(fetchJwt(e, { audience: ['a'] }), GrpcStatus.UNAVAILABLE, /workload attestation failed/);
      assert.ok(attestations >= 4);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it('per-process stream limit -> RESOURCE_EXHAUSTED; a closed stream frees its slot', async () => {
    const e = await setup({ limits: { maxStreamsPerPid: 2 } });
    const second = workloadClient(e.socketPath); // another connection of the same process counts too
    try {
      const a = x509Stream(e);
      const b = collect<X509BundlesResponse>(second.fetchX509Bundles({}, headerMetadata()));
      await Promise.all([a.next(), b.next()]);
      await streamStatus(collect(e.client.fetchJwtBundles({}, headerMetadata())), GrpcStatus.RESOURCE_EXHAUSTED, /limit 2/);
      // Unary calls are not streams: still served.
      assert.equal((await fetchJwt(e, { audience: ['a'] })).svids.length, 2);
      a.cancel();
      await until(() => e.cache.subscriberCount === 1, 'the cancelled stream to close');
      const c = x509Stream(e);
      await c.next();
      c.cancel();
      b.cancel();
    } finally {
      second.close();
    }
  });

  it('closing the endpoint ends open streams with UNAVAILABLE and removes the socket', async () => {
    const e = await setup();
    const s = x509Stream(e);
    await s.next();
    await e.ep.close();
    await streamStatus(s, GrpcStatus.UNAVAILABLE, /shutting down/);
    assert.equal(e.cache.subscriberCount, 0);
    assert.throws(() => statSync(e.socketPath), /ENOENT/);
  });
});

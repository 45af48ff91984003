// The Workload API client against a real grpc-js fake agent on a temp Unix socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { credentials, Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { Bundle, BundleSet } from '../bundle.js';
import { isSpiffeError } from '../errors.js';
import { validateJwtSvid } from '../jwtsvid.js';
import { generateKeyPair } from '../keys.js';
import { certificateMatchesKey, verifyX509Svid } from '../x509/index.js';
import { SpiffeWorkloadAPIClient } from '../../proto/gen/workload/workload.js';
import {
  createWorkloadApiClient,
  isWorkloadApiError,
  type WatchErrorInfo,
  type WorkloadApiClient,
  type WorkloadApiError,
  type X509Context,
} from './index.js';
import { createTestTrust, FakeAgent, td, type TestTrust } from './testkit.js';

let trust: TestTrust;
let agent: FakeAgent;
const clients: WorkloadApiClient[] = [];

/** Fast channel reconnects, so restart tests take milliseconds. */
const FAST = { 'grpc.initial_reconnect_backoff_ms': 50, 'grpc.max_reconnect_backoff_ms': 200, 'grpc.min_reconnect_backoff_ms': 50 };

function client(address = agent.address, extra: { timeoutMs?: number } = {}): WorkloadApiClient {
  const c = createWorkloadApiClient({ address, channelOptions: FAST, backoff: { initialMs: 50, maxMs: 200 }, ...extra });
  clients.push(c);
  return c;
}

async function rejectsWith(p: Promise<unknown>, code: number, re?: RegExp): Promise<WorkloadApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isWorkloadApiError(err), `expected a WorkloadApiError, got ${String(err)}`);
    assert.equal(err.code, code, `code ${err.code}: ${err.message}`);
    if (re) assert.match(err.message, re);
    return err;
  }
  assert.fail('expected a rejection');
}

/** Collects watch callbacks; `next()` waits for the next one. */
class Inbox<T> {
  readonly items: T[] = [];
  #waiters: ((v: T) => void)[] = [];
  push = (v: T): void => {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.items.push(v);
  };
  next(timeoutMs = 5000): Promise<T> {
    const v = this.items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`nothing received within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }
}

before(async () => {
  trust = await createTestTrust();
  agent = await FakeAgent.start({ identities: [trust.web, trust.db], ...trust.material });
});

after(async () => {
  for (const c of clients) c.close();
  await agent.close();
});

describe('addresses', () => {
  test('SPIFFE_ENDPOINT_SOCKET from the env option (unix:/path form), canonical address kept', async () => {
    const c = createWorkloadApiClient({ env: { SPIFFE_ENDPOINT_SOCKET: `unix:${agent.socketPath}` } });
    clients.push(c);
    assert.equal(c.address, `unix://${agent.socketPath}`);
    assert.equal((await c.fetchX509Context()).defaultSvid.id, 'spiffe://example.org/web');
  });

  test('an explicit address wins over the env', async () => {
    const c = createWorkloadApiClient({ address: agent.address, env: { SPIFFE_ENDPOINT_SOCKET: 'unix:///nonexistent/x.sock' } });
    clients.push(c);
    assert.equal(c.address, agent.address);
  });

  test('no address, or a bad one, fails at construction with ERR_ENDPOINT_ADDRESS_INVALID', () => {
    assert.throws(() => createWorkloadApiClient({ env: {} }), (e: unknown) => isSpiffeError(e) && e.reason === 'missing' && /SPIFFE_ENDPOINT_SOCKET/.test(e.message));
    assert.throws(() => createWorkloadApiClient({ address: 'tcp://localhost:8080' }), (e: unknown) => isSpiffeError(e) && e.reason === 'tcp_not_ip');
    assert.throws(() => createWorkloadApiClient({ address: '/tmp/agent.sock' }), (e: unknown) => isSpiffeError(e) && e.reason === 'scheme');
    assert.throws(() => createWorkloadApiClient({ address: agent.address, timeoutMs: 0 }), RangeError);
  });

  test('a socket nobody listens on: UNAVAILABLE, reason unreachable, says where and what to check', async () => {
    const c = client(`unix://${agent.socketPath}.missing`);
    const err = await rejectsWith(c.fetchX509Context(), Status.UNAVAILABLE, /cannot reach the Workload API at unix:\/\/.*\.missing \(no such socket\): is the agent running/);
    assert.equal(err.reason, 'unreachable');
    assert.equal(err.rpc, 'FetchX509SVID');
    await rejectsWith(c.fetchJwtSvid({ audience: ['a'] }), Status.UNAVAILABLE);
  });
});

describe('fetch', () => {
  test('fetchX509Context: every SVID parsed, own and federated bundles, header on every call', async () => {
    const before = agent.calls.length;
    const ctx = await client().fetchX509Context();
    assert.deepEqual(ctx.svids.map((s) => [s.id, s.hint]), [
      ['spiffe://example.org/web', 'web'],
      ['spiffe://example.org/db', 'db'],
    ]);
    assert.equal(ctx.defaultSvid, ctx.svids[0]);
    assert.deepEqual(ctx.svids[0]!.certificates, trust.webSvid.chain);
    assert.ok(certificateMatchesKey(ctx.svids[0]!.certificates[0]!, ctx.svids[0]!.privateKey));
    assert.deepEqual(ctx.bundles.trustDomains(), ['example.org', 'partner.org']);
    assert.deepEqual(ctx.bundles.get(td('example.org'))!.x509Authorities(), [trust.ca.rootDer]);
    assert.deepEqual(ctx.bundles.get(td('partner.org'))!.x509Authorities(), [trust.partner.rootDer]);
    for (const s of ctx.svids) assert.equal(verifyX509Svid(s.certificates, ctx.bundles).id, s.id);
    const calls = agent.calls.slice(before);
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]!.header, ['true']);
    assert.equal((await client().fetchX509Svid()).id, 'spiffe://example.org/web');
  });

  test('the fake agent refuses a call without the security header (INVALID_ARGUMENT)', async () => {
    const raw = new SpiffeWorkloadAPIClient(agent.address, credentials.createInsecure());
    const err = await new Promise<ServiceError>((resolve) => {
      raw.fetchJwtsvid({ audience: ['a'], spiffeId: '' }, new Metadata(), (e) => resolve(e!));
    });
    raw.close();
    assert.equal(err.code, Status.INVALID_ARGUMENT);
    assert.match(err.details, /security header/);
  });

  test('fetchX509Bundles and fetchJwtBundles: one bundle per trust domain', async () => {
    const c = client();
    const x509 = await c.fetchX509Bundles();
    assert.deepEqual(x509.trustDomains(), ['example.org', 'partner.org']);
    assert.deepEqual(x509.get(td('partner.org'))!.x509Authorities(), [trust.partner.rootDer]);
    const jwt = await c.fetchJwtBundles();
    assert.deepEqual(jwt.trustDomains(), ['example.org', 'partner.org']);
    assert.deepEqual([...jwt.get(td('example.org'))!.jwtAuthorities().keys()], ['kid-example']);
    assert.deepEqual([...jwt.get(td('partner.org'))!.jwtAuthorities().keys()], ['kid-partner']);
  });

  test('fetchJwtSvid: tokens parsed, every audience carried, spiffeId selects one identity', async () => {
    const c = client();
    const all = await c.fetchJwtSvid({ audience: ['svc-a', 'svc-b'] });
    assert.deepEqual(all.map((s) => [s.id, s.hint]), [
      ['spiffe://example.org/web', 'web'],
      ['spiffe://example.org/db', 'db'],
    ]);
    for (const s of all) {
      assert.deepEqual(s.audience, ['svc-a', 'svc-b']);
      assert.ok(s.expiresAt.getTime() > Date.now());
      const v = await validateJwtSvid(s.token, { audience: 'svc-b', bundles: trust.material.jwtBundles });
      assert.equal(v.id, s.id);
    }
    const one = await c.fetchJwtSvid({ audience: ['svc-a'], spiffeId: 'spiffe://example.org/db' });
    assert.deepEqual(one.map((s) => s.id), ['spiffe://example.org/db']);
  });

  test('fetchJwtSvid: arguments checked before sending; PERMISSION_DENIED for an identity not held', async () => {
    const c = client();
    const before = agent.calls.length;
    const e1 = await rejectsWith(c.fetchJwtSvid({ audience: [] }), Status.INVALID_ARGUMENT, /audience/);
    assert.equal(e1.reason, 'bad_request');
    await rejectsWith(c.fetchJwtSvid({ audience: ['a'], spiffeId: 'spiffe://example.org/../x' }), Status.INVALID_ARGUMENT, /spiffeId/);
    assert.equal(agent.calls.length, before, 'nothing was sent');
    const e2 = await rejectsWith(c.fetchJwtSvid({ audience: ['a'], spiffeId: 'spiffe://example.org/other' }), Status.PERMISSION_DENIED, /FetchJWTSVID failed: PERMISSION_DENIED: no identity issued/);
    assert.equal(e2.reason, 'rpc');
    assert.match(e2.details, /no identity issued/);
  });

  test('validateJwtSvid: subject and claims; a refused token keeps INVALID_ARGUMENT and the reason', async () => {
    const c = client();
    const [svid] = await c.fetchJwtSvid({ audience: ['svc'] });
    const ok = await c.validateJwtSvid(svid!.token, 'svc');
    assert.equal(ok.spiffeId, 'spiffe://example.org/web');
    assert.equal(ok.claims['sub'], 'spiffe://example.org/web');
    assert.deepEqual(ok.claims['aud'], ['svc']);
    const bad = await rejectsWith(c.validateJwtSvid(svid!.token, 'other'), Status.INVALID_ARGUMENT, /ValidateJWTSVID failed: INVALID_ARGUMENT: .*audience/);
    assert.equal(bad.reason, 'rpc');
    await rejectsWith(c.validateJwtSvid('', 'svc'), Status.INVALID_ARGUMENT, /non-empty/);
    await rejectsWith(c.validateJwtSvid(svid!.token, ''), Status.INVALID_ARGUMENT, /audience/);
  });

  test('PERMISSION_DENIED (no identity) surfaces with its code on every X.509 path', async () => {
    const denied = await FakeAgent.start({ identities: [], ...trust.material });
    try {
      const c = client(denied.address);
      const err = await rejectsWith(c.fetchX509Context(), Status.PERMISSION_DENIED, /no identity issued/);
      assert.equal(err.rpc, 'FetchX509SVID');
      const errors = new Inbox<[WorkloadApiError, WatchErrorInfo]>();
      const w = c.watchX509Context(() => assert.fail('no update expected'), (e, i) => errors.push([e, i]));
      const [e, info] = await errors.next();
      assert.equal(e.code, Status.PERMISSION_DENIED);
      assert.deepEqual(info, { final: true });
      assert.equal(await w.done, e);
      assert.equal(denied.calls.filter((x) => x.rpc === 'FetchX509SVID').length, 2, 'no retry after PERMISSION_DENIED');
    } finally {
      await denied.close();
    }
  });

  test('unary calls and first messages have deadlines', async () => {
    const slow = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    slow.hang = true;
    try {
      const c = client(slow.address, { timeoutMs: 150 });
      const e1 = await rejectsWith(c.fetchX509Context(), Status.DEADLINE_EXCEEDED, /FetchX509SVID: timed out after 150ms/);
      assert.equal(e1.reason, 'timeout');
      await rejectsWith(c.fetchJwtSvid({ audience: ['a'] }, { timeoutMs: 100 }), Status.DEADLINE_EXCEEDED, /after 100ms/);
      await rejectsWith(c.validateJwtSvid('x.y.z', 'a'), Status.DEADLINE_EXCEEDED);
    } finally {
      await slow.close();
    }
  });

  test('an agent refusing the caller (UNAVAILABLE: attestation failed) fails the fetch at once with its code', async () => {
    const quick = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    quick.refuse = { code: Status.UNAVAILABLE, details: 'attestation failed' };
    try {
      await rejectsWith(client(quick.address).fetchX509Bundles(), Status.UNAVAILABLE, /FetchX509Bundles failed: UNAVAILABLE: attestation failed/);
    } finally {
      await quick.close();
    }
  });
});

describe('responses are decoded strictly', () => {
  test('a bad FetchX509SVID message: INTERNAL bad_response saying what is wrong', async () => {
    const bad = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const c = client(bad.address);
      const good = bad.x509Response();
      const first = good.svids[0]!;
      bad.rawX509 = { ...good, svids: [{ ...first, spiffeId: 'spiffe://example.org/db' }] };
      const e1 = await rejectsWith(c.fetchX509Context(), Status.INTERNAL, /does not match the certificate's ID/);
      assert.equal(e1.reason, 'bad_response');
      bad.rawX509 = { ...good, svids: [{ ...first, x509SvidKey: Buffer.from('not a key') }] };
      await rejectsWith(c.fetchX509Context(), Status.INTERNAL, /not a valid X509-SVID/);
      bad.rawX509 = { ...good, svids: [{ ...first, bundle: Buffer.alloc(0) }] };
      await rejectsWith(c.fetchX509Context(), Status.INTERNAL, /bundle/);
      bad.rawX509 = { ...good, federatedBundles: new Map([['spiffe://Partner.org', trust.partner.rootDer]]) };
      await rejectsWith(c.fetchX509Context(), Status.INTERNAL, /federated_bundles key "spiffe:\/\/Partner.org" is not a trust domain ID/);
      bad.rawX509 = { ...good, svids: [] };
      await rejectsWith(c.fetchX509Context(), Status.INTERNAL, /holds no X509-SVID/);
    } finally {
      await bad.close();
    }
  });
});

describe('watch', () => {
  test('watchX509Context: first state, pushed changes, federated bundle removal, restart of the agent', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const c = client(live.address);
      const updates = new Inbox<X509Context>();
      const errors = new Inbox<[WorkloadApiError, WatchErrorInfo]>();
      const w = c.watchX509Context(updates.push, (e, i) => errors.push([e, i]));
      let ctx = await updates.next();
      assert.deepEqual(ctx.svids.map((s) => s.id), ['spiffe://example.org/web']);
      assert.deepEqual(ctx.bundles.trustDomains(), ['example.org', 'partner.org']);

      live.update({ identities: [trust.web, trust.db] });
      ctx = await updates.next();
      assert.deepEqual(ctx.svids.map((s) => s.id), ['spiffe://example.org/web', 'spiffe://example.org/db']);

      live.update({ x509Authorities: new Map([[trust.ca.trustDomain, [trust.ca.rootDer]]]) });
      ctx = await updates.next();
      assert.deepEqual(ctx.bundles.trustDomains(), ['example.org'], 'a federated bundle absent from a message is removed');

      // The agent dies and comes back on the same socket: the watch reconnects by itself.
      await live.stop();
      const [err, info] = await errors.next();
      assert.equal(info.final, false);
      assert.ok(info.retryInMs !== undefined && info.retryInMs > 0);
      assert.ok(err.code !== Status.OK);
      live.update({ identities: [trust.db] });
      await live.listen();
      ctx = await updates.next(8000);
      assert.deepEqual(ctx.svids.map((s) => s.id), ['spiffe://example.org/db']);

      // An agent that ends the stream normally is reconnected to as well.
      live.endStreams(Status.OK);
      ctx = await updates.next(8000);
      assert.deepEqual(ctx.svids.map((s) => s.id), ['spiffe://example.org/db']);

      // Losing every identity ends the stream with PERMISSION_DENIED: reported, final.
      live.update({ identities: [] });
      let last: [WorkloadApiError, WatchErrorInfo];
      do last = await errors.next();
      while (!last[1].final);
      assert.equal(last[0].code, Status.PERMISSION_DENIED);
      assert.equal(await w.done, last[0]);
      assert.equal(live.openStreams('FetchX509SVID'), 0);
    } finally {
      await live.close();
    }
  });

  test('a message that does not decode is reported and skipped; the stream stays open', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const c = client(live.address);
      const updates = new Inbox<X509Context>();
      const errors = new Inbox<[WorkloadApiError, WatchErrorInfo]>();
      const w = c.watchX509Context(updates.push, (e, i) => errors.push([e, i]));
      await updates.next();
      const good = live.x509Response();
      live.pushRawX509({ ...good, svids: [{ ...good.svids[0]!, x509Svid: Buffer.from([0x30, 0x82, 0xff]) }] });
      const [err, info] = await errors.next();
      assert.equal(err.reason, 'bad_response');
      assert.equal(err.code, Status.INTERNAL);
      assert.deepEqual(info, { final: false });
      live.rawX509 = undefined;
      live.update({ identities: [trust.db] });
      assert.deepEqual((await updates.next()).svids.map((s) => s.id), ['spiffe://example.org/db']);
      assert.equal(live.calls.filter((x) => x.rpc === 'FetchX509SVID').length, 1, 'same stream');
      w.close();
      assert.equal(await w.done, undefined);
      assert.equal(errors.items.length, 0, 'close() reports nothing');
    } finally {
      await live.close();
    }
  });

  test('a reader that falls behind gets the newest state, not every superseded message', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const c = client(live.address);
      const updates = new Inbox<X509Context>();
      let calls = 0;
      const w = c.watchX509Context((ctx) => {
        calls++;
        // A slow consumer: everything pushed meanwhile waits in the socket.
        const until = performance.now() + 50;
        while (performance.now() < until);
        updates.push(ctx);
      });
      await updates.next();
      const before = calls;
      for (let i = 0; i < 30; i++) live.update({ identities: i % 2 === 0 ? [trust.web, trust.db] : [trust.db] });
      live.update({ identities: [trust.db, trust.web] });
      let ctx: X509Context;
      do ctx = await updates.next();
      while (ctx.svids.length !== 2 || ctx.svids[0]!.id !== 'spiffe://example.org/db');
      const handled = calls - before;
      assert.ok(handled < 10, `31 messages sent together reach onUpdate coalesced (${handled} calls)`);
      w.close();
    } finally {
      await live.close();
    }
  });

  test('the channel reconnect backoff follows the watch backoff (a restarted agent is found within it)', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      // No channelOptions: the SDK's defaults. grpc-js alone would wait 1 s, 1.6 s, 2.56 s... between dials.
      const c = createWorkloadApiClient({ address: live.address, backoff: { initialMs: 50, maxMs: 200 } });
      clients.push(c);
      const updates = new Inbox<X509Context>();
      const w = c.watchX509Context(updates.push);
      await updates.next();
      await live.stop();
      // Down long enough for grpc-js's own backoff to have grown past a second.
      await new Promise((r) => setTimeout(r, 3500));
      await live.listen();
      const t0 = performance.now();
      await updates.next(8000);
      const ms = performance.now() - t0;
      // By design at most ~450 ms (channel backoff 200 ms +20%, a 200 ms watch retry, reconnect);
      // grpc-js's default backoff would dial next 1.1-2.2 s after the agent listened.
      console.log(`# restarted agent found ${ms.toFixed(0)} ms after it listened`);
      assert.ok(ms < 1000, `the watch got the restarted agent's state ${ms.toFixed(0)} ms after it listened (watch backoff max 200 ms)`);
      w.close();
    } finally {
      await live.close();
    }
  });

  test('watchX509Bundles and watchJwtBundles push bundle changes', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const c = client(live.address);
      const x509 = new Inbox<BundleSet>();
      const jwt = new Inbox<BundleSet>();
      const w1 = c.watchX509Bundles(x509.push);
      const w2 = c.watchJwtBundles(jwt.push);
      assert.deepEqual((await x509.next()).trustDomains(), ['example.org', 'partner.org']);
      assert.deepEqual((await jwt.next()).trustDomains(), ['example.org', 'partner.org']);
      const key = await generateKeyPair();
      live.update({
        x509Authorities: new Map([[trust.ca.trustDomain, [trust.ca.rootDer]]]),
        jwtBundles: new BundleSet([new Bundle(trust.ca.trustDomain, { jwtAuthorities: [['kid-2', key.publicKey]] })]),
      });
      assert.deepEqual((await x509.next()).trustDomains(), ['example.org']);
      const j = await jwt.next();
      assert.deepEqual([...j.get(td('example.org'))!.jwtAuthorities().keys()], ['kid-2']);
      c.close();
      assert.equal(await w1.done, undefined);
      assert.equal(await w2.done, undefined);
      const closed = await rejectsWith(c.fetchX509Bundles(), Status.CANCELLED, /closed/);
      assert.equal(closed.reason, 'closed');
    } finally {
      await live.close();
    }
  });
});

test('every call the SDK made carried exactly `workload.spiffe.io: true` (only the raw test call had none)', () => {
  const headerless = agent.calls.filter((c) => c.header.length === 0);
  assert.equal(headerless.length, 1);
  const sdkCalls = agent.calls.filter((c) => c.header.length > 0);
  assert.ok(sdkCalls.length > 5);
  for (const c of sdkCalls) assert.deepEqual(c.header, ['true'], c.rpc);
});

// JWT-SVIDs in the SDK: JwtSource (cache, coalescing, bundles), BundleSource (X.509 + JWT
// bundles, rotation), and JWT-SVIDs over HTTP (Bearer headers, validation, the middleware
// shapes) against the Workload API test kit (real grpc-js on a Unix socket) and real HTTP
// servers on 127.0.0.1.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { status as Status } from '@grpc/grpc-js';
import { Bundle, BundleSet } from '../bundle.js';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { parseSpiffeId, parseTrustDomain } from '../id.js';
import { MAX_JWT_SVID_LENGTH, mintJwtSvid, type JwtSigner } from '../jwtsvid.js';
import { generateKeyPair } from '../keys.js';
import { TestCa } from '../../test/support/testca.js';
import { createTestTrust, FakeAgent, type FakeIdentity, type TestTrust } from '../workloadapi/testkit.js';
import {
  authorizeID,
  bearerTokenOf,
  BundleSource,
  createWorkloadApiClient,
  fastifyJwtSvid,
  JwtSource,
  jwtAuthHeaders,
  jwtSvidMiddleware,
  koaJwtSvid,
  validateJwtFromRequest,
  withJwtSvid,
  type BundleUpdate,
  type JwtAuthOptions,
  type KoaLikeContext,
  type SpiffeJwtAuth,
} from './index.js';

const WEB = 'spiffe://example.org/web';
const DB = 'spiffe://example.org/db';
const PAYMENTS = 'spiffe://example.org/payments';
const SEC = 1000;

let trust: TestTrust;
const agents: FakeAgent[] = [];
const closers: Array<{ close(): void }> = [];

before(async () => {
  trust = await createTestTrust();
});

after(async () => {
  for (const c of closers) c.close();
  for (const a of agents) await a.close();
});

async function agentFor(...identities: FakeIdentity[]): Promise<FakeAgent> {
  const a = await FakeAgent.start({ identities, ...trust.material });
  agents.push(a);
  return a;
}

async function jwtSourceOf(agent: FakeAgent, extra: Parameters<typeof JwtSource.create>[0] = {}): Promise<JwtSource> {
  const s = await JwtSource.create({ socketPath: agent.socketPath, ...extra });
  closers.push(s);
  return s;
}

function assertTyped(err: unknown, code: string, reason: string): asserts err is SpiffeError {
  assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.reason, reason, err.message);
}

const jwtCalls = (agent: FakeAgent): number => agent.calls.filter((c) => c.rpc === 'FetchJWTSVID').length;

/** A clock the test moves: real time plus `offsetMs`. */
function testClock(): { now: () => Date; offsetMs: number } {
  const c = { offsetMs: 0, now: () => new Date(Date.now() + c.offsetMs) };
  return c;
}

describe('JwtSource', () => {
  test('no address: one error naming SPIFFE_ENDPOINT_SOCKET; a missing socket likewise (ERR_JWT_SOURCE)', async () => {
    await assert.rejects(JwtSource.create({ env: {} }), (err) => {
      assertTyped(err, ErrorCode.JWT_SOURCE, 'no_endpoint');
      assert.match(err.message, /SPIFFE_ENDPOINT_SOCKET/);
      return true;
    });
    await assert.rejects(JwtSource.create({ env: { SPIFFE_ENDPOINT_SOCKET: 'unix:///nonexistent/spindle/agent.sock' } }), (err) => {
      assertTyped(err, ErrorCode.JWT_SOURCE, 'socket_missing');
      assert.match(err.message, /\/nonexistent\/spindle\/agent\.sock.*SPIFFE_ENDPOINT_SOCKET/);
      return true;
    });
  });

  test('fetchJwtSvid: token, id, audience, expiry from the agent; extra audiences and subject in the request', async () => {
    const agent = await agentFor(trust.web, trust.db);
    const source = await JwtSource.create({ env: { SPIFFE_ENDPOINT_SOCKET: agent.address } });
    closers.push(source);
    const svid = await source.fetchJwtSvid({ audience: PAYMENTS });
    assert.equal(svid.id, WEB);
    assert.deepEqual(svid.audience, [PAYMENTS]);
    assert.equal(svid.token.split('.').length, 3);
    assert.ok(svid.expiresAt.getTime() > Date.now());

    const db = await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['spiffe://example.org/audit'], subject: DB });
    assert.equal(db.id, DB);
    assert.deepEqual([...db.audience].sort(), ['spiffe://example.org/audit', PAYMENTS]);
    const req = agent.calls.filter((c) => c.rpc === 'FetchJWTSVID').at(-1)!.request as { audience: string[]; spiffeId: string };
    assert.deepEqual(req, { audience: [PAYMENTS, 'spiffe://example.org/audit'], spiffeId: DB });

    const all = await source.fetchJwtSvids({ audience: PAYMENTS });
    assert.deepEqual(all.map((s) => s.id), [WEB, DB]);

    await assert.rejects(source.fetchJwtSvid({ audience: '' }), (err) => (assertTyped(err, ErrorCode.JWT_SOURCE, 'bad_params'), true));
    await assert.rejects(source.fetchJwtSvid({ audience: PAYMENTS, subject: 'web' }), (err) => (assertTyped(err, ErrorCode.JWT_SOURCE, 'bad_params'), true));
  });

  test('cached per (audiences, subject) until half its lifetime, then fetched again; never an expired one', async () => {
    const agent = await agentFor(trust.web, trust.db);
    const clock = testClock();
    agent.jwtClock = clock.now; // the agent and the workload share the (moved) clock
    const source = await jwtSourceOf(agent, { now: clock.now });
    const first = await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'] });
    assert.equal(jwtCalls(agent), 1);
    // The agent's tokens live 300 s: half is 150 s after iat.
    const iat = first.claims['iat'] as number;
    assert.equal(first.expiresAt.getTime() - iat * SEC, 300 * SEC);

    clock.offsetMs = 140 * SEC;
    assert.equal((await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'] })).token, first.token);
    // The same set of audiences in another order is the same key.
    assert.equal((await source.fetchJwtSvid({ audience: 'b', extraAudiences: [PAYMENTS, 'b'] })).token, first.token);
    assert.equal(jwtCalls(agent), 1);
    // Another subject, another audience set: other keys.
    assert.equal((await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'], subject: DB })).id, DB);
    assert.notEqual((await source.fetchJwtSvid({ audience: PAYMENTS })).token, first.token);
    assert.equal(jwtCalls(agent), 3);

    // Past half its lifetime: fetched again, and the new one is cached in its turn.
    clock.offsetMs = 160 * SEC;
    const second = await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'] });
    assert.notEqual(second.token, first.token);
    assert.ok((second.claims['iat'] as number) >= iat + 160);
    assert.equal(jwtCalls(agent), 4);
    clock.offsetMs = 300 * SEC;
    assert.equal((await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'] })).token, second.token);
    assert.equal(jwtCalls(agent), 4);

    // Past its exp a cached token is never handed out: a new one is fetched.
    clock.offsetMs = 1000 * SEC;
    const third = await source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'] });
    assert.equal(jwtCalls(agent), 5);
    assert.ok(third.expiresAt.getTime() > clock.now().getTime());

    // Nor a fresh one that has expired by the workload's clock (an agent whose clock lags).
    agent.jwtClock = undefined;
    clock.offsetMs = 2000 * SEC;
    await assert.rejects(source.fetchJwtSvid({ audience: PAYMENTS, extraAudiences: ['b'] }), (err) => {
      assertTyped(err, ErrorCode.JWT_SOURCE, 'svid_expired');
      assert.match(err.message, /spiffe:\/\/example\.org\/web expired/);
      return true;
    });
    assert.equal(jwtCalls(agent), 6);
  });

  test('the cache is bounded: the least recently used key is evicted', async () => {
    const agent = await agentFor(trust.web);
    const source = await jwtSourceOf(agent, { cacheSize: 2 });
    const a = await source.fetchJwtSvid({ audience: 'a' });
    await source.fetchJwtSvid({ audience: 'b' });
    assert.equal((await source.fetchJwtSvid({ audience: 'a' })).token, a.token); // a is now the most recent
    await source.fetchJwtSvid({ audience: 'c' }); // evicts b
    assert.equal(source.cachedCount, 2);
    assert.equal(jwtCalls(agent), 3);
    assert.equal((await source.fetchJwtSvid({ audience: 'a' })).token, a.token);
    assert.equal(jwtCalls(agent), 3);
    await source.fetchJwtSvid({ audience: 'b' });
    assert.equal(jwtCalls(agent), 4);
    await assert.rejects(JwtSource.create({ socketPath: agent.socketPath, cacheSize: 0 }), RangeError);
  });

  test('concurrent calls for one key share one RPC; a failure reaches every caller and is not cached', async () => {
    const agent = await agentFor(trust.web);
    const source = await jwtSourceOf(agent);
    const results = await Promise.all(Array.from({ length: 8 }, () => source.fetchJwtSvid({ audience: PAYMENTS })));
    assert.equal(jwtCalls(agent), 1);
    assert.equal(new Set(results.map((r) => r.token)).size, 1);
    // Different keys at once: one RPC each.
    await Promise.all([source.fetchJwtSvid({ audience: 'x' }), source.fetchJwtSvid({ audience: 'y' }), source.fetchJwtSvid({ audience: 'x' })]);
    assert.equal(jwtCalls(agent), 3);

    agent.refuse = { code: Status.PERMISSION_DENIED, details: 'no identity issued' };
    const failures = await Promise.allSettled(Array.from({ length: 4 }, () => source.fetchJwtSvid({ audience: 'z' })));
    assert.equal(jwtCalls(agent), 4);
    for (const f of failures) {
      assert.equal(f.status, 'rejected');
      assertTyped((f as PromiseRejectedResult).reason, ErrorCode.JWT_SOURCE, 'fetch_failed');
      assert.match(((f as PromiseRejectedResult).reason as Error).message, /"z".*no identity issued/);
    }
    agent.refuse = undefined;
    assert.equal((await source.fetchJwtSvid({ audience: 'z' })).id, WEB);
    assert.equal(jwtCalls(agent), 5);
  });

  test('JWT bundles (own and federated) kept current from the watch; updated; close', async () => {
    const agent = await agentFor(trust.web);
    const source = await jwtSourceOf(agent);
    assert.deepEqual([...source.getJwtBundleForTrustDomain('example.org').jwtAuthorities().keys()], ['kid-example']);
    assert.deepEqual([...source.getJwtBundleForTrustDomain('spiffe://partner.org').jwtAuthorities().keys()], ['kid-partner']);
    assert.throws(() => source.getJwtBundleForTrustDomain('other.org'), (err) => (assertTyped(err, ErrorCode.JWT_SOURCE, 'no_bundle'), true));
    assert.equal(source.getJwtAuthorities(parseTrustDomain('other.org')), undefined);

    const next = await generateKeyPair('ec-p256');
    const rotated = trust.material.jwtBundles.clone();
    rotated.get(parseTrustDomain('example.org'))!.addJwtAuthority('kid-next', next.publicKey);
    const updated = once(source, 'updated');
    agent.update({ jwtBundles: rotated });
    const [set] = (await updated) as [BundleSet];
    assert.ok(set.get(parseTrustDomain('example.org'))!.hasJwtAuthority('kid-next'));
    assert.deepEqual([...source.getJwtBundleForTrustDomain('example.org').jwtAuthorities().keys()].sort(), ['kid-example', 'kid-next']);

    source.close();
    assert.throws(() => source.getJwtBundleForTrustDomain('example.org'), (err) => (assertTyped(err, ErrorCode.JWT_SOURCE, 'closed'), true));
    await assert.rejects(source.fetchJwtSvid({ audience: PAYMENTS }), (err) => (assertTyped(err, ErrorCode.JWT_SOURCE, 'closed'), true));
  });

  test('an agent restart: the last bundles stay served, the client reconnects and the source catches up', async () => {
    const agent = await agentFor(trust.web);
    const client = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 50, maxMs: 200 } });
    closers.push(client);
    const source = await JwtSource.create({ client });
    closers.push(source);
    const errors: Error[] = [];
    source.on('error', (err: Error) => errors.push(err));
    await agent.stop();
    const next = await generateKeyPair('ec-p256');
    const rotated = trust.material.jwtBundles.clone();
    rotated.get(parseTrustDomain('example.org'))!.addJwtAuthority('kid-after-restart', next.publicKey);
    agent.state = { ...agent.state, jwtBundles: rotated };
    assert.ok(source.getJwtBundleForTrustDomain('example.org').hasJwtAuthority('kid-example'));
    const caughtUp = new Promise<void>((resolve) => {
      const on = (set: BundleSet): void => {
        if (set.get(parseTrustDomain('example.org'))?.hasJwtAuthority('kid-after-restart')) {
          source.off('updated', on);
          resolve();
        }
      };
      source.on('updated', on);
    });
    await agent.listen();
    await caughtUp;
    assert.ok(errors.length > 0, 'the broken stream was reported to the error listener');
    assert.equal((await source.fetchJwtSvid({ audience: PAYMENTS })).id, WEB);
  });

  test('create() rejects when the watch ends on a fatal status', async () => {
    const agent = await agentFor(trust.web);
    agent.refuse = { code: Status.PERMISSION_DENIED, details: 'no' };
    await assert.rejects(JwtSource.create({ socketPath: agent.socketPath }), (err) => (assertTyped(err, ErrorCode.JWT_SOURCE, 'watch_ended'), true));
  });
});

/** The next `updated` of this kind (the fake agent pushes every stream on each change). */
function nextUpdate(source: BundleSource, kind: BundleUpdate['kind']): Promise<BundleUpdate> {
  return new Promise((resolve) => {
    const on = (u: BundleUpdate): void => {
      if (u.kind !== kind) return;
      source.off('updated', on);
      resolve(u);
    };
    source.on('updated', on);
  });
}

describe('BundleSource', () => {
  test('address errors are ERR_BUNDLE_SOURCE naming SPIFFE_ENDPOINT_SOCKET', async () => {
    await assert.rejects(BundleSource.create({ env: {} }), (err) => {
      assertTyped(err, ErrorCode.BUNDLE_SOURCE, 'no_endpoint');
      assert.match(err.message, /SPIFFE_ENDPOINT_SOCKET/);
      return true;
    });
  });

  test('X.509 and JWT bundles of own and federated trust domains; rotation of each is seen', async () => {
    const agent = await agentFor(trust.web);
    const source = await BundleSource.create({ socketPath: agent.socketPath });
    closers.push(source);
    const ex = parseTrustDomain('example.org');
    const partner = parseTrustDomain('partner.org');
    assert.deepEqual(source.trustDomains(), [ex, partner]);
    assert.deepEqual(source.getX509Authorities(ex), [trust.ca.rootDer]);
    assert.deepEqual(source.getX509Authorities(partner), [trust.partner.rootDer]);
    assert.deepEqual([...source.getJwtAuthorities(partner)!.keys()], ['kid-partner']);
    const both = source.getBundleForTrustDomain('example.org');
    assert.deepEqual(both.x509Authorities(), [trust.ca.rootDer]);
    assert.deepEqual([...both.jwtAuthorities().keys()], ['kid-example']);
    assert.equal(source.getJwtAuthorities(parseTrustDomain('other.org')), undefined);
    assert.throws(() => source.getX509BundleForTrustDomain('other.org'), (err) => (assertTyped(err, ErrorCode.BUNDLE_SOURCE, 'no_bundle'), true));

    // JWT key rotation: the new key arrives, the old one leaves; a token signed by the new key
    // validates against the source, one signed by the old key no longer does.
    const next = await generateKeyPair('ec-p256');
    const nextSigner: JwtSigner = { kid: 'kid-next', privateKey: next.privateKey };
    const rotated = new BundleSet([new Bundle(ex, { jwtAuthorities: [['kid-next', next.publicKey]] }), trust.material.jwtBundles.get(partner)!]);
    const jwtUpdate = nextUpdate(source, 'jwt');
    agent.update({ jwtBundles: rotated });
    await jwtUpdate;
    assert.deepEqual([...source.getJwtAuthorities(ex)!.keys()], ['kid-next']);
    const fresh = await mintJwtSvid({ id: parseSpiffeId(WEB), audience: [PAYMENTS], signer: nextSigner });
    const old = await mintJwtSvid({ id: parseSpiffeId(WEB), audience: [PAYMENTS], signer: trust.signer });
    const auth: JwtAuthOptions = { bundles: source, audience: PAYMENTS };
    assert.equal((await validateJwtFromRequest({ headers: { authorization: `Bearer ${fresh.token}` } }, auth)).id, WEB);
    await assert.rejects(validateJwtFromRequest({ headers: { authorization: `Bearer ${old.token}` } }, auth), (err) => (assertTyped(err, ErrorCode.JWT_SVID_UNTRUSTED, 'unknown_kid'), true));

    // X.509 rotation: a new root for example.org.
    const newRoot = await TestCa.create({ trustDomain: 'example.org' });
    const x509Update = nextUpdate(source, 'x509');
    agent.update({ x509Authorities: new Map([[ex, [trust.ca.rootDer, newRoot.rootDer]], [partner, [trust.partner.rootDer]]]) });
    await x509Update;
    assert.deepEqual(source.getX509Authorities(ex), [trust.ca.rootDer, newRoot.rootDer]);

    source.close();
    assert.throws(() => source.getJwtAuthorities(ex), (err) => (assertTyped(err, ErrorCode.BUNDLE_SOURCE, 'closed'), true));
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP

interface Served {
  url: string;
  rejected: SpiffeError[];
  seen: SpiffeJwtAuth[];
}

const servers: http.Server[] = [];
after(() => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

async function listen(server: http.Server): Promise<string> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

/** A node:http server behind withJwtSvid that answers `hello <id>`. */
async function plainServer(opts: JwtAuthOptions, serverOpts: http.ServerOptions = {}): Promise<Served> {
  const rejected: SpiffeError[] = [];
  const seen: SpiffeJwtAuth[] = [];
  const server = http.createServer(
    serverOpts,
    withJwtSvid({ ...opts, onRejected: (err) => rejected.push(err) }, (req, res, spiffe) => {
      seen.push(req.spiffe);
      res.end(`hello ${spiffe.id}`);
    }),
  );
  return { url: await listen(server), rejected, seen };
}

/** RFC 6750 challenge parameters. */
function challenge(res: Response): Record<string, string> {
  const h = res.headers.get('www-authenticate') ?? '';
  assert.match(h, /^Bearer\b/);
  const out: Record<string, string> = {};
  for (const m of h.matchAll(/(\w+)="([^"]*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` });

describe('JWT-SVIDs over HTTP', () => {
  let agent: FakeAgent;
  let jwt: JwtSource;
  let bundles: BundleSource;
  before(async () => {
    agent = await agentFor(trust.web);
    jwt = await jwtSourceOf(agent);
    bundles = await BundleSource.create({ socketPath: agent.socketPath });
    closers.push(bundles);
  });

  const mint = (over: { id?: string; audience?: string[]; signer?: JwtSigner; now?: Date; ttlSeconds?: number; issuer?: string } = {}): Promise<string> =>
    mintJwtSvid({
      id: parseSpiffeId(over.id ?? WEB),
      audience: over.audience ?? [PAYMENTS],
      signer: over.signer ?? trust.signer,
      ...(over.now === undefined ? {} : { now: over.now }),
      ...(over.ttlSeconds === undefined ? {} : { ttlSeconds: over.ttlSeconds }),
      ...(over.issuer === undefined ? {} : { issuer: over.issuer }),
    }).then((m) => m.token);

  test('a client with jwtAuthHeaders (fetch and http.request) reaches the handler with its ID', async () => {
    const s = await plainServer({ bundles, audience: PAYMENTS, authorizer: authorizeID(WEB) });
    const headers = await jwtAuthHeaders(jwt, PAYMENTS);
    assert.match(headers.authorization, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    const res = await fetch(s.url, { headers });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `hello ${WEB}`);

    const body = await new Promise<string>((resolve, reject) => {
      const req = http.request(s.url, { headers: { ...headers, 'x-other': '1' } }, (r) => {
        let b = '';
        r.on('data', (d: Buffer) => (b += d.toString()));
        r.on('end', () => resolve(`${r.statusCode} ${b}`));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(body, `200 hello ${WEB}`);
    assert.equal(s.seen.length, 2);
    assert.equal(s.seen[0]!.id, WEB);
    assert.deepEqual(s.seen[0]!.audience, [PAYMENTS]);
    assert.equal(s.seen[0]!.claims['sub'], WEB);
    assert.deepEqual(s.rejected, []);
  });

  test('refusals: 401 with an RFC 6750 invalid_token challenge naming the reason, the typed error to the caller', async () => {
    const other = await generateKeyPair('ec-p256');
    const issuerServer = await plainServer({ bundles, audience: PAYMENTS, issuer: 'https://oidc.example.org' });
    const s = await plainServer({ bundles, audience: PAYMENTS });
    const hour = 3600 * SEC;
    const cases: Array<[string, string, string, string, Served?]> = [
      ['another audience', (await jwtAuthHeaders(jwt, 'spiffe://example.org/other')).authorization.slice(7), ErrorCode.JWT_SVID_INVALID, 'audience'],
      ['expired', await mint({ now: new Date(Date.now() - hour), ttlSeconds: 60 }), ErrorCode.JWT_SVID_INVALID, 'expired'],
      ['bad signature (our kid, another key)', await mint({ signer: { kid: trust.signer.kid, privateKey: other.privateKey } }), ErrorCode.JWT_SVID_UNTRUSTED, 'signature'],
      ['unknown trust domain', await mint({ id: 'spiffe://unknown.org/svc' }), ErrorCode.JWT_SVID_UNTRUSTED, 'no_bundle'],
      ['not a JWT', 'abc.def', ErrorCode.JWT_SVID_INVALID, 'malformed'],
      ['wrong issuer', await mint({ issuer: 'https://evil.example' }), ErrorCode.JWT_SVID_INVALID, 'issuer', issuerServer],
      ['no issuer', await mint(), ErrorCode.JWT_SVID_INVALID, 'issuer', issuerServer],
    ];
    for (const [name, token, code, reason, server = s] of cases) {
      const before = server.rejected.length;
      const res = await fetch(server.url, { headers: bearer(token) });
      assert.equal(res.status, 401, name);
      const c = challenge(res);
      assert.equal(c['error'], 'invalid_token', name);
      assert.match(c['error_description']!, new RegExp(`^${reason}: `), name);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.match(await res.text(), new RegExp(`^${code} ${reason}: `), name);
      assert.equal(server.rejected.length, before + 1, name);
      assertTyped(server.rejected.at(-1), code, reason);
    }
    // The other-audience refusal names the audience this server expects.
    const audErr = s.rejected[0]!;
    assert.match(audErr.message, /does not include "spiffe:\/\/example\.org\/payments"/);
    // The right issuer passes.
    assert.equal((await fetch(issuerServer.url, { headers: bearer(await mint({ issuer: 'https://oidc.example.org' })) })).status, 200);
    assert.equal(s.seen.length + issuerServer.seen.length, 1);
  });

  test('no Bearer credentials: 401 with a bare Bearer challenge; the reason in the body and the typed error', async () => {
    const s = await plainServer({ bundles, audience: PAYMENTS, realm: 'payments' });
    const tries: Array<[Record<string, string>, string]> = [
      [{}, 'missing_token'],
      [{ authorization: 'Basic dXNlcjpwYXNz' }, 'not_bearer'],
      [{ authorization: 'Bearer a b' }, 'malformed_header'],
    ];
    for (const [headers, reason] of tries) {
      const res = await fetch(s.url, { headers });
      assert.equal(res.status, 401, reason);
      const www = res.headers.get('www-authenticate')!;
      if (reason === 'malformed_header') assert.match(www, /^Bearer realm="payments", error="invalid_token", error_description="malformed_header: /);
      else assert.equal(www, 'Bearer realm="payments"');
      assert.match(await res.text(), new RegExp(`^ERR_JWT_AUTH ${reason}: `));
      assertTyped(s.rejected.at(-1), ErrorCode.JWT_AUTH, reason);
    }
    assert.equal(s.seen.length, 0);
  });

  test('a token longer than MAX_JWT_SVID_LENGTH is refused before parsing (token_too_large)', async () => {
    const s = await plainServer({ bundles, audience: PAYMENTS }, { maxHeaderSize: 4 * MAX_JWT_SVID_LENGTH });
    const huge = `${'a'.repeat(MAX_JWT_SVID_LENGTH)}.b.c`;
    const res = await fetch(s.url, { headers: bearer(huge) });
    assert.equal(res.status, 401);
    assert.match(challenge(res)['error_description']!, /^token_too_large: /);
    assertTyped(s.rejected.at(-1), ErrorCode.JWT_AUTH, 'token_too_large');
    assert.throws(() => bearerTokenOf({ headers: { authorization: `Bearer ${'x'.repeat(2 * MAX_JWT_SVID_LENGTH)}` } }), (err) => (assertTyped(err, ErrorCode.JWT_AUTH, 'token_too_large'), true));
  });

  test('the authorizer refuses the subject: 403 insufficient_scope with its reason', async () => {
    const s = await plainServer({ bundles, audience: PAYMENTS, authorizer: authorizeID(DB) });
    const res = await fetch(s.url, { headers: await jwtAuthHeaders(jwt, PAYMENTS) });
    assert.equal(res.status, 403);
    const c = challenge(res);
    assert.equal(c['error'], 'insufficient_scope');
    assert.match(c['error_description']!, /^id_mismatch: peer spiffe:\/\/example\.org\/web is not the expected spiffe:\/\/example\.org\/db/);
    assertTyped(s.rejected.at(-1), ErrorCode.UNAUTHORIZED, 'id_mismatch');

    // A custom authorizer throwing a plain Error: wrapped, still 403.
    const custom = await plainServer({
      bundles,
      audience: PAYMENTS,
      authorizer: () => {
        throw new Error('not today');
      },
    });
    const r2 = await fetch(custom.url, { headers: await jwtAuthHeaders(jwt, PAYMENTS) });
    assert.equal(r2.status, 403);
    assertTyped(custom.rejected.at(-1), ErrorCode.UNAUTHORIZED, 'refused');
    assert.match(custom.rejected.at(-1)!.message, /not today/);
  });

  test('a server fault (closed bundle source) is 500, not 401; Express middleware hands it to next(err)', async () => {
    const closed = await BundleSource.create({ socketPath: agent.socketPath });
    closed.close();
    const s = await plainServer({ bundles: closed, audience: PAYMENTS });
    const res = await fetch(s.url, { headers: await jwtAuthHeaders(jwt, PAYMENTS) });
    assert.equal(res.status, 500);
    assert.deepEqual(s.rejected, []);

    const nextErrors: unknown[] = [];
    const mw = jwtSvidMiddleware({ bundles: closed, audience: PAYMENTS });
    const url = await listen(
      http.createServer((req, res2) =>
        mw(req, res2, (err) => {
          nextErrors.push(err);
          res2.writeHead(502).end();
        }),
      ),
    );
    assert.equal((await fetch(url, { headers: await jwtAuthHeaders(jwt, PAYMENTS) })).status, 502);
    assertTyped(nextErrors[0], ErrorCode.BUNDLE_SOURCE, 'closed');
  });

  test('Express/Connect middleware sets req.spiffe and calls next(); validateJwtFromRequest takes a fetch Request', async () => {
    const mw = jwtSvidMiddleware({ bundles, audience: PAYMENTS });
    const url = await listen(
      http.createServer((req, res) =>
        mw(req, res, (err) => {
          assert.equal(err, undefined);
          const spiffe = (req as http.IncomingMessage & { spiffe: SpiffeJwtAuth }).spiffe;
          res.end(`${spiffe.id} ${String(spiffe.claims['aud'])}`);
        }),
      ),
    );
    const headers = await jwtAuthHeaders(jwt, PAYMENTS);
    const res = await fetch(url, { headers });
    assert.equal(await res.text(), `${WEB} ${PAYMENTS}`);
    assert.equal((await fetch(url)).status, 401);

    const auth = await validateJwtFromRequest(new Request(url, { headers }), { bundles, audience: PAYMENTS });
    assert.equal(auth.id, WEB);
  });

  // Koa and Fastify are not dependencies of this project: these drive the two wrappers over a
  // real HTTP server through the few context/reply members they use (KoaLikeContext, FastifyLike*).
  test('Koa (ctx, next) and Fastify preHandler shapes', async () => {
    const koa = koaJwtSvid({ bundles, audience: PAYMENTS });
    const koaUrl = await listen(
      http.createServer((req, res) => {
        const headers: Record<string, string> = {};
        const ctx: KoaLikeContext = { req, state: {}, status: 404, body: undefined, set: (k, v) => void (headers[k] = v) };
        void koa(ctx, async () => {
          ctx.status = 200;
          ctx.body = `koa ${(ctx.state['spiffe'] as SpiffeJwtAuth).id}`;
        }).then(() => res.writeHead(ctx.status, headers).end(String(ctx.body)));
      }),
    );
    const good = await jwtAuthHeaders(jwt, PAYMENTS);
    assert.equal(await (await fetch(koaUrl, { headers: good })).text(), `koa ${WEB}`);
    const koaBad = await fetch(koaUrl, { headers: bearer(await mint({ audience: ['elsewhere'] })) });
    assert.equal(koaBad.status, 401);
    assert.equal(challenge(koaBad)['error'], 'invalid_token');

    const hook = fastifyJwtSvid({ bundles, audience: PAYMENTS });
    const fastifyUrl = await listen(
      http.createServer((req, res) => {
        const request: { headers: http.IncomingHttpHeaders; spiffe?: SpiffeJwtAuth } = { headers: req.headers };
        let code = 200;
        const h: Record<string, string> = {};
        let sent = false;
        const reply = {
          code: (c: number) => ((code = c), reply),
          headers: (v: Record<string, string>) => (Object.assign(h, v), reply),
          send: (b: unknown) => ((sent = true), res.writeHead(code, h).end(String(b)), reply),
        };
        void hook(request, reply).then(() => {
          if (!sent) res.end(`fastify ${request.spiffe!.id}`);
        });
      }),
    );
    assert.equal(await (await fetch(fastifyUrl, { headers: good })).text(), `fastify ${WEB}`);
    const fBad = await fetch(fastifyUrl);
    assert.equal(fBad.status, 401);
    assert.equal(fBad.headers.get('www-authenticate'), 'Bearer');
  });
});

// An HTTP listener (startInbound, in process) with a PolicyDecider that uses every fact the data
// plane gives it: method, path, bearer JWT-SVIDs validated against the Workload API's JWT bundles
// (audience, signature, issuer), dry-run decisions, and a decider swapped (a policy reload) while
// a keep-alive connection stays open. The Workload API test kit serves the SVIDs and bundles;
// TLS is real, on loopback.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { generateKeyPair } from '../spiffe/keys.js';
import { mintJwtSvid } from '../spiffe/jwtsvid.js';
import { parseSpiffeId } from '../spiffe/id.js';
import { toPem } from '../spiffe/pem.js';
import { X509Source } from '../spiffe/sdk/x509source.js';
import { createTestTrust, FakeAgent, type TestTrust } from '../spiffe/workloadapi/testkit.js';
import { privateKeyPem } from '../test/support/testca.js';
import type { Decision, PolicyDecider, RequestFacts } from './decision.js';
import { startInbound, type RunningListener } from './inbound.js';
import { JwtBundleWatch } from './jwt.js';
import { DeciderRef } from './policyhook.js';
import { httpInboundConfig } from './testkit.js';
import { ProxyMetrics, type AccessRecord } from './telemetry.js';

const WEB = 'spiffe://example.org/web';

/** A decider for the test: allows GET /api/* with a JWT-SVID of `WEB` for audience "payments"; remembers the facts. */
class JwtDecider implements PolicyDecider {
  readonly seen: RequestFacts[] = [];
  constructor(
    readonly opts: { issuer?: string; dryRun?: boolean; allowAll?: boolean } = {},
  ) {}
  decide(facts: RequestFacts): Decision {
    this.seen.push(facts);
    const dryRun = this.opts.dryRun ?? false;
    if (this.opts.allowAll) return { allow: true, wouldAllow: true, rule: 'allow-all', reason: 'everything', dryRun };
    if (facts.method !== 'GET' || !facts.path?.startsWith('/api/')) return { allow: dryRun, wouldAllow: false, rule: 'default-deny', reason: `${facts.method} ${facts.path} is not allowed`, dryRun };
    if (facts.jwt?.subject !== WEB) return { allow: dryRun, wouldAllow: false, rule: 'need-jwt', reason: facts.jwtError ?? 'no bearer JWT-SVID', dryRun };
    return { allow: true, wouldAllow: true, rule: 'web-api', reason: 'web with a JWT-SVID', dryRun };
  }
  needsHttp(): boolean {
    return true;
  }
  jwtAudiences(): readonly string[] {
    return ['billing', 'payments'];
  }
  jwtIssuer(): string | undefined {
    return this.opts.issuer;
  }
}

let trust: TestTrust;
let agent: FakeAgent;
let source: X509Source;
let jwtBundles: JwtBundleWatch;
let listener: RunningListener;
let service: http.Server;
const ref = new DeciderRef(new JwtDecider());
const access: AccessRecord[] = [];
let port: number;

before(async () => {
  trust = await createTestTrust();
  agent = await FakeAgent.start({ identities: [trust.db], ...trust.material });
  source = await X509Source.create({ socketPath: agent.socketPath });
  service = http.createServer((req, res) => {
    req.resume();
    res.end(`ok ${req.method} ${req.url}\n`);
  });
  service.listen(0, '127.0.0.1');
  await once(service, 'listening');
  const log = { info: () => undefined, warn: () => undefined, debug: () => undefined };
  jwtBundles = new JwtBundleWatch(agent.socketPath, log);
  const l = httpInboundConfig((service.address() as AddressInfo).port);
  listener = await startInbound(l, ref, { source, metrics: new ProxyMetrics(10), access: (r) => access.push(r), log, jwtBundles });
  port = listener.address().port;
});

after(async () => {
  await listener?.close();
  jwtBundles?.close();
  source?.close();
  service?.closeAllConnections();
  service?.close();
  await agent?.close();
});

const keepAlive = new https.Agent({ keepAlive: true, maxSockets: 1 });
after(() => keepAlive.destroy());

/**
 * One request; resolves once its access record is in too: the listener writes it when the
 * response closes on its side, which can come after the caller has read the whole response.
 */
async function call(method: string, path: string, token?: string, agentOpt: https.Agent | false = false): Promise<{ status: number; body: string; socketPort: number }> {
  const logged = access.length;
  const reply = await send(method, path, token, agentOpt);
  for (const deadline = Date.now() + 5000; access.length === logged && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
  return reply;
}

function send(method: string, path: string, token: string | undefined, agentOpt: https.Agent | false): Promise<{ status: number; body: string; socketPort: number }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: agentOpt,
        ca: [toPem('CERTIFICATE', trust.ca.rootDer)],
        key: privateKeyPem(trust.webSvid.privateKey),
        cert: trust.webSvid.chain.map((c) => toPem('CERTIFICATE', c)).join(''),
        checkServerIdentity: () => undefined,
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      },
      (res) => {
        let body = '';
        const socketPort = res.socket.localPort ?? 0;
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, socketPort }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const mint = (audience: string[], extra: { issuer?: string; signer?: typeof trust.signer } = {}) =>
  mintJwtSvid({ id: parseSpiffeId(WEB), audience, signer: extra.signer ?? trust.signer, ...(extra.issuer === undefined ? {} : { issuer: extra.issuer }) }).then((m) => m.token);

function lastFacts(): RequestFacts {
  return (ref.current as JwtDecider).seen.at(-1)!;
}

test('a valid bearer JWT-SVID for one of the audiences reaches the decider as jwt; method and path too', async () => {
  // The JWT bundle watch starts with the first request that needs it: wait (bounded) for it.
  const token = await mint(['payments']);
  const deadline = Date.now() + 10_000;
  let r = await call('GET', '/api/orders?x=1', token);
  while (r.status !== 200 && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 50));
    r = await call('GET', '/api/orders?x=1', token);
  }
  assert.equal(r.status, 200, r.body);
  assert.equal(r.body, 'ok GET /api/orders?x=1\n');
  const f = lastFacts();
  assert.equal(f.sourceId, WEB);
  assert.equal(f.method, 'GET');
  assert.equal(f.path, '/api/orders');
  assert.equal(f.jwt?.subject, WEB);
  assert.deepEqual(f.jwt?.audience, ['payments']);
  assert.equal(f.jwtError, undefined);
  const line = access.at(-1)!;
  assert.equal(line.jwt_subject, WEB);
  assert.equal(line.rule, 'web-api');
});

test('no token: neither jwt nor jwtError; a bad token: jwtError says why, and the 403 names the rule', async () => {
  let r = await call('GET', '/api/orders');
  assert.equal(r.status, 403);
  assert.match(r.body, /rule "need-jwt": no bearer JWT-SVID/);
  assert.equal(lastFacts().jwt, undefined);
  assert.equal(lastFacts().jwtError, undefined);

  r = await call('GET', '/api/orders', await mint(['other-service']));
  assert.equal(r.status, 403);
  assert.match(lastFacts().jwtError!, /^audience mismatch: the token is for none of billing, payments/);

  const stranger = await generateKeyPair('ec-p256');
  r = await call('GET', '/api/orders', await mint(['payments'], { signer: { kid: 'kid-example', privateKey: stranger.privateKey } }));
  assert.equal(r.status, 403);
  assert.match(lastFacts().jwtError!, /^signature: /);
  assert.equal(access.at(-1)!.jwt_error, lastFacts().jwtError);

  // A Bearer header that holds no single token is a malformed token, not "no token".
  r = await call('GET', '/api/orders', 'two tokens');
  assert.equal(r.status, 403);
  assert.match(lastFacts().jwtError!, /^malformed_header: /);

  r = await call('POST', '/api/orders', await mint(['payments']));
  assert.equal(r.status, 403);
  assert.match(r.body, /rule "default-deny": POST \/api\/orders is not allowed/);
});

test('jwtIssuer: a token without the required iss is refused', async () => {
  const prev = ref.current;
  ref.current = new JwtDecider({ issuer: 'https://oidc.example.org' });
  try {
    let r = await call('GET', '/api/x', await mint(['payments']));
    assert.equal(r.status, 403);
    assert.match(lastFacts().jwtError!, /^issuer mismatch/);
    r = await call('GET', '/api/x', await mint(['payments'], { issuer: 'https://oidc.example.org' }));
    assert.equal(r.status, 200);
  } finally {
    ref.current = prev;
  }
});

test('dry-run: a denial that lets the request through is logged as such', async () => {
  const prev = ref.current;
  ref.current = new JwtDecider({ dryRun: true });
  try {
    const r = await call('DELETE', '/admin');
    assert.equal(r.status, 200);
    const line = access.at(-1)!;
    assert.equal(line.decision, 'allow');
    assert.equal(line.dry_run, true);
    assert.equal(line.rule, 'default-deny');
  } finally {
    ref.current = prev;
  }
});

test('a decider swapped while a keep-alive connection is open: the next request on it follows the new one, the connection stays', async () => {
  const token = await mint(['payments']);
  const first = await call('GET', '/api/a', token, keepAlive);
  assert.equal(first.status, 200);
  const prev = ref.current;
  ref.current = new JwtDecider({ allowAll: true });
  try {
    const second = await call('POST', '/anything', undefined, keepAlive);
    assert.equal(second.status, 200, 'decided by the new decider');
    assert.equal(second.socketPort, first.socketPort, 'same connection');
  } finally {
    ref.current = prev;
  }
  const third = await call('POST', '/anything', undefined, keepAlive);
  assert.equal(third.status, 403);
  assert.equal(third.socketPort, first.socketPort);
});

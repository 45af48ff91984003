// Attacks on an HTTP listener's policy through the bytes of the request itself, each performed on
// the wire (raw TLS writes, real listener in process, real local service) and each required to be
// refused before the local service sees anything the policy did not decide:
// - request smuggling: a body the proxy forwards without framing (a GET with Transfer-Encoding:
//   chunked, or a Content-Length the caller names in Connection) would be read by the service as a
//   second request, one the policy never saw, with a forged X-Forwarded-Client-Cert;
// - x-forwarded-for forged by the caller (the proxy appends the address it saw);
// - path forms the policy and the service read differently: a fragment (`#`), percent-encoded
//   unreserved characters (`%61` for `a`), path parameters (`;`, `..;`), malformed escapes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { toPem } from '../spiffe/pem.js';
import { X509Source } from '../spiffe/sdk/x509source.js';
import { createTestTrust, FakeAgent, type TestTrust } from '../spiffe/workloadapi/testkit.js';
import { privateKeyPem } from '../test/support/testca.js';
import { startInbound, type RunningListener } from './inbound.js';
import { parsePolicy } from './policy/policy.js';
import { DeciderRef } from './policyhook.js';
import { httpInboundConfig } from './testkit.js';
import { ProxyMetrics, type AccessRecord } from './telemetry.js';

const POLICY = `rules:
  - name: no-admin
    action: DENY
    to: { paths: ["/admin/**"] }
  - name: web-reads
    action: ALLOW
    from: { ids: [spiffe://example.org/web] }
    to: { methods: [GET], paths: ["*"] }
`;

let trust: TestTrust;
let agent: FakeAgent;
let source: X509Source;
let listener: RunningListener;
let service: http.Server;
const handled: { method: string; url: string; xfcc: string | undefined; xff: string | undefined; body: string }[] = [];
const access: AccessRecord[] = [];

before(async () => {
  trust = await createTestTrust();
  agent = await FakeAgent.start({ identities: [trust.db], ...trust.material });
  source = await X509Source.create({ socketPath: agent.socketPath });
  service = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      handled.push({ method: req.method ?? '', url: req.url ?? '', xfcc: req.headers['x-forwarded-client-cert'] as string | undefined, xff: req.headers['x-forwarded-for'] as string | undefined, body });
      res.end(`ok ${req.method} ${req.url}\n`);
    });
  });
  service.listen(0, '127.0.0.1');
  await once(service, 'listening');
  const log = { info: () => undefined, warn: () => undefined, debug: () => undefined };
  const l = httpInboundConfig((service.address() as AddressInfo).port);
  listener = await startInbound(l, new DeciderRef(parsePolicy(POLICY, 'policy.yaml')), { source, metrics: new ProxyMetrics(10), access: (r) => access.push(r), log });
});

after(async () => {
  await listener?.close();
  source?.close();
  service?.closeAllConnections();
  service?.close();
  await agent?.close();
});

/** Writes `raw` on a fresh mTLS connection as web, and returns everything the proxy answers until it closes or 1.5 s pass. */
async function rawExchange(raw: string): Promise<string> {
  const s = tls.connect({
    host: '127.0.0.1',
    port: listener.address().port,
    ca: [toPem('CERTIFICATE', trust.ca.rootDer)],
    key: privateKeyPem(trust.webSvid.privateKey),
    cert: trust.webSvid.chain.map((c) => toPem('CERTIFICATE', c)).join(''),
    checkServerIdentity: () => undefined,
  });
  await once(s, 'secureConnect');
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString()));
  s.write(raw);
  await Promise.race([once(s, 'close'), new Promise((r) => setTimeout(r, 1500))]);
  s.destroy();
  // Let the service finish reading anything that reached it.
  await new Promise((r) => setTimeout(r, 200));
  return got;
}

const SMUGGLED = 'DELETE /admin/users HTTP/1.1\r\nHost: svc\r\nX-Forwarded-Client-Cert: By=spiffe://example.org/db;Hash=00;URI=spiffe://example.org/admin\r\nContent-Length: 0\r\n\r\n';

test('a chunked body on a GET reaches the service as a body, never as a second request', async () => {
  handled.length = 0;
  const chunk = SMUGGLED;
  const raw = `GET /public/x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`;
  const got = await rawExchange(raw);
  assert.match(got, /^HTTP\/1\.1 200/);
  assert.deepEqual(
    handled.map((h) => `${h.method} ${h.url}`),
    ['GET /public/x'],
    'the service handled only the request the policy decided',
  );
  assert.equal(handled[0]!.body, SMUGGLED, 'the smuggled bytes arrive as the body they were');
  assert.ok(!handled.some((h) => h.xfcc?.includes('spiffe://example.org/admin')));
});

test('a Content-Length the caller names in Connection is kept: the body cannot become a request', async () => {
  handled.length = 0;
  const raw = `GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, Content-Length\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`;
  const got = await rawExchange(raw);
  assert.match(got, /^HTTP\/1\.1 200/);
  assert.deepEqual(handled.map((h) => `${h.method} ${h.url}`), ['GET /public/x']);
  assert.equal(handled[0]!.body, SMUGGLED);
});

test('path forms the policy and services read differently are refused before any rule', async () => {
  for (const path of ['/admin#/users', '/%61dmin/users', '/ADMIN/../admin/x', '/admin;x/users', '/public/..;/admin/x', '/public/x;jsessionid=1', '/public/%zz', '/public/%7euser']) {
    handled.length = 0;
    const got = await rawExchange(`GET ${path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n`);
    assert.match(got, /^HTTP\/1\.1 403/, `${path}: ${got.split('\r\n')[0]}`);
    assert.deepEqual(handled, [], `${path} must not reach the service`);
  }
  // The plain forms still work.
  const ok = await rawExchange('GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n');
  assert.match(ok, /^HTTP\/1\.1 200/);
  const denied = await rawExchange('GET /admin/users HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n');
  assert.match(denied, /^HTTP\/1\.1 403[\s\S]*no-admin/);
});

test('x-forwarded-for: the address the proxy saw is appended after whatever the caller claims', async () => {
  handled.length = 0;
  await rawExchange('GET /public/x HTTP/1.1\r\nHost: svc\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n');
  assert.equal(handled[0]?.xff, '10.9.9.9, 127.0.0.1');
  handled.length = 0;
  await rawExchange('GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n');
  assert.equal(handled[0]?.xff, '127.0.0.1');
});

// spindle-proxy end to end: real bin/spindle-proxy processes against the Workload API test kit
// (a fake agent on a Unix socket), real TLS on loopback, real local services behind them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { toPem } from '../spiffe/pem.js';
import { createTestTrust, FakeAgent, type FakeIdentity, type TestTrust } from '../spiffe/workloadapi/testkit.js';
import { repoRoot } from '../test/support/paths.js';
import { freePort } from '../test/support/serverproc.js';
import { scrapeMetrics } from '../test/support/metrics.js';
import { privateKeyPem, TestCa, type TestSvid } from '../test/support/testca.js';

const proxyBin = join(repoRoot, 'bin', 'spindle-proxy');
const WEB = 'spiffe://example.org/web';
const DB = 'spiffe://example.org/db';

let trust: TestTrust;
let dir: string;
const agents: FakeAgent[] = [];
const procs: ChildProcess[] = [];
const closers: (() => void)[] = [];

interface Proxy {
  proc: ChildProcess;
  access: Record<string, unknown>[];
  stderr: () => string;
  admin: number;
}

/** Runs bin/spindle-proxy with `args` and waits until /ready answers 200 (bounded). */
async function startProxy(args: string[], admin: number, socketPath: string): Promise<Proxy> {
  const proc = spawn(proxyBin, args, { env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${socketPath}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  const access: Record<string, unknown>[] = [];
  let err = '';
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    let i;
    while ((i = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      if (line.trim() !== '') access.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`spindle-proxy exited ${proc.exitCode}: ${err}`);
    const code = await new Promise<number>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: admin, path: '/ready' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(0));
    });
    if (code === 200) break;
    if (Date.now() > deadline) throw new Error(`spindle-proxy not ready in 20 s: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, access, stderr: () => err, admin };
}

/** Waits (bounded) for an access log line matching `pred`. */
async function accessLine(p: Proxy, pred: (r: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const hit = p.access.find(pred);
    if (hit !== undefined) return hit;
    if (Date.now() > deadline) throw new Error(`no access log line ${what}; lines: ${JSON.stringify(p.access.slice(-10))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function ident(svid: TestSvid): FakeIdentity {
  return { id: svid.id, chain: svid.chain, keyPkcs8: svid.keyPkcs8 };
}

/** TLS options of a caller presenting `svid` (none: no client certificate), trusting example.org's root. */
function callerTls(svid: TestSvid | undefined): tls.ConnectionOptions {
  return {
    ca: [toPem('CERTIFICATE', trust.ca.rootDer)],
    ...(svid === undefined ? {} : { key: privateKeyPem(svid.privateKey), cert: svid.chain.map((c) => toPem('CERTIFICATE', c)).join('') }),
    checkServerIdentity: () => undefined,
  };
}

/** Connects to `port` as `svid` (from `localAddress`, default the kernel's choice) and resolves once the handshake is done. */
function tlsConnect(port: number, svid: TestSvid | undefined, localAddress?: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...callerTls(svid), host: '127.0.0.1', port, ...(localAddress === undefined ? {} : { localAddress }) });
    closers.push(() => s.destroy());
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Writes `msg` and reads one line back, or resolves `closed` when the proxy closes the connection first (bounded). */
function roundTrip(s: net.Socket, msg: string): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const timer = setTimeout(() => finish('timeout'), 10_000);
    const finish = (v: string): void => {
      clearTimeout(timer);
      s.off('data', onData);
      resolve(v);
    };
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) finish(buf.slice(0, i));
    };
    s.on('data', onData);
    s.once('close', () => finish(buf === '' ? 'closed' : buf));
    s.once('error', () => undefined);
    s.write(`${msg}\n`);
  });
}

/** TLS to the proxy as `svid`, one line written, what came back ('closed' when refused). */
async function tcpCall(port: number, svid: TestSvid | undefined, msg = 'ping', localAddress?: string): Promise<string> {
  let s: tls.TLSSocket;
  try {
    s = await tlsConnect(port, svid, localAddress);
  } catch {
    return 'closed';
  }
  const r = await roundTrip(s, msg);
  s.destroy();
  return r;
}

interface HttpReply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

function httpsCall(port: number, svid: TestSvid | undefined, opts: { method?: string; path?: string; headers?: http.OutgoingHttpHeaders; body?: string } = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = https.request({ ...callerTls(svid), host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers ?? {}, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

function metricValue(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const ok = Object.entries(labels).every(([k, v]) => inner.includes(`${k}="${v}"`));
    if (ok) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

// Local services behind the proxies.
let echoPort: number;
let echoConnections = 0;
let httpPort: number;
const seenRequests: { method: string; url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[] }[] = [];
let firstChunkSeen: (() => void) | undefined;

// Proxy A: the service `db` (inbound listeners), run from a config file.
let A: Proxy;
let tcpInPort: number;
let httpInPort: number;
let cappedPort: number;
// SVIDs of callers.
let intruder: TestSvid;
let partnerWeb: TestSvid;
let evilWeb: TestSvid;
let forgedWeb: TestSvid;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-proxy-'));
  trust = await createTestTrust();
  const [evil, forger] = await Promise.all([TestCa.create({ trustDomain: 'evil.org' }), TestCa.create({ trustDomain: 'example.org' })]);
  [intruder, partnerWeb, evilWeb, forgedWeb] = await Promise.all([
    trust.ca.issueSvid('spiffe://example.org/intruder'),
    trust.partner.issueSvid('spiffe://partner.org/web'),
    evil.issueSvid('spiffe://evil.org/web'),
    forger.issueSvid(WEB),
  ]);

  const echo = net.createServer((s) => {
    echoConnections++;
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        s.write(`echo: ${buf.slice(0, i)}\n`);
        buf = buf.slice(i + 1);
      }
    });
    s.on('error', () => undefined);
  });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  echoPort = (echo.address() as net.AddressInfo).port;
  closers.push(() => echo.close());

  const svc = http.createServer((req, res) => {
    seenRequests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    if (req.url === '/stream') {
      let n = 0;
      req.on('data', (d: Buffer) => {
        n += d.length;
        firstChunkSeen?.();
      });
      req.on('end', () => res.end(`got ${n} bytes\n`));
      return;
    }
    req.resume();
    res.end(`hello ${req.url}\n`);
  });
  svc.listen(0, '127.0.0.1');
  await once(svc, 'listening');
  httpPort = (svc.address() as net.AddressInfo).port;
  closers.push(() => {
    svc.closeAllConnections();
    svc.close();
  });

  const agentDb = await FakeAgent.start({ identities: [trust.db], ...trust.material });
  agents.push(agentDb);
  [tcpInPort, httpInPort, cappedPort] = [await freePort(), await freePort(), await freePort()];
  const adminA = await freePort();
  const cfg = join(dir, 'a.yaml');
  writeFileSync(
    cfg,
    `admin: 127.0.0.1:${adminA}
log_level: DEBUG
listeners:
  - name: tcp-in
    mode: inbound
    listen: 127.0.0.1:${tcpInPort}
    forward: 127.0.0.1:${echoPort}
    allow: [${WEB}]
    max_connections: 400
    handshake_timeout: 5s
  - name: http-in
    mode: inbound
    listen: 127.0.0.1:${httpInPort}
    forward: 127.0.0.1:${httpPort}
    http: true
    allow: ${WEB}
    header_timeout: 1s
  - name: capped
    mode: inbound
    listen: 127.0.0.1:${cappedPort}
    forward: 127.0.0.1:${echoPort}
    allow: [spiffe://example.org]
    max_connections: 20
    max_pending_handshakes: 15
    max_pending_per_address: 10
    handshake_timeout: 30s
`,
  );
  A = await startProxy(['run', '-config', cfg], adminA, agentDb.socketPath);
});

after(async () => {
  for (const c of closers) c();
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  for (const a of agents) await a.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('inbound TCP listener', () => {
  test('an allowed caller reaches the service; the access log and metrics record it', async () => {
    assert.equal(await tcpCall(tcpInPort, trust.webSvid), 'echo: ping');
    const line = await accessLine(A, (r) => r.listener === 'tcp-in' && r.source_id === WEB && r.decision === 'allow', 'for the allowed caller');
    assert.equal(line.kind, 'connection');
    assert.equal(line.own_id, DB);
    assert.equal(line.rule, `allow ${WEB}`);
    assert.equal(line.bytes_in, 5);
    assert.equal(line.bytes_out, 11);
    const m = await scrapeMetrics(A.admin);
    assert.ok(metricValue(m, 'spindle_proxy_connections_total', { listener: 'tcp-in', source: WEB, decision: 'allow' }) >= 1);
    assert.ok(metricValue(m, 'spindle_proxy_received_bytes_total', { listener: 'tcp-in', source: WEB }) >= 5);
    assert.ok(metricValue(m, 'spindle_proxy_connection_duration_seconds_count', { listener: 'tcp-in', source: WEB, decision: 'allow' }) >= 1);
  });

  test('a caller whose ID is not allowed is closed before the service sees a byte', async () => {
    const before = echoConnections;
    assert.equal(await tcpCall(tcpInPort, intruder), 'closed');
    assert.equal(await tcpCall(tcpInPort, partnerWeb), 'closed', 'a federated trust domain is trusted but not allowed');
    assert.equal(echoConnections, before);
    const line = await accessLine(A, (r) => r.source_id === 'spiffe://example.org/intruder', 'for the intruder');
    assert.equal(line.decision, 'deny');
    assert.equal(line.rule, 'default-deny');
    assert.equal(line.bytes_in, 0);
    const m = await scrapeMetrics(A.admin);
    assert.ok(metricValue(m, 'spindle_proxy_refusals_total', { listener: 'tcp-in', source: 'spiffe://example.org/intruder', rule: 'default-deny' }) >= 1);
    assert.ok(metricValue(m, 'spindle_proxy_connections_total', { listener: 'tcp-in', source: 'spiffe://partner.org/web', decision: 'deny' }) >= 1);
  });

  test('a caller with no SVID, or an SVID of an untrusted trust domain, is refused at the TLS layer', async () => {
    const before = echoConnections;
    assert.equal(await tcpCall(tcpInPort, undefined), 'closed');
    assert.equal(await tcpCall(tcpInPort, evilWeb), 'closed', 'a trust domain with no bundle here');
    assert.equal(await tcpCall(tcpInPort, forgedWeb), 'closed', 'spiffe://example.org/web signed by another CA');
    assert.equal(echoConnections, before);
    const none = await accessLine(A, (r) => r.listener === 'tcp-in' && String(r.reason).startsWith('no_peer_certificate'), 'for the caller without a certificate');
    assert.equal(none.decision, 'deny');
    assert.equal(none.rule, 'spiffe-verification');
    assert.equal(none.source_id, undefined);
    const untrusted = await accessLine(A, (r) => r.listener === 'tcp-in' && String(r.reason).startsWith('no_bundle'), 'for the untrusted trust domain');
    assert.match(String(untrusted.reason), /evil\.org/);
    await accessLine(A, (r) => r.listener === 'tcp-in' && r.rule === 'spiffe-verification' && !/^(no_peer_certificate|no_bundle)/.test(String(r.reason)), 'for the forged SVID');
    const m = await scrapeMetrics(A.admin);
    assert.ok(metricValue(m, 'spindle_proxy_handshake_errors_total', { listener: 'tcp-in', reason: 'no_peer_certificate' }) >= 1);
    assert.ok(metricValue(m, 'spindle_proxy_refusals_total', { listener: 'tcp-in', source: 'none', rule: 'spiffe-verification' }) >= 1);
  });

  test('admission: pending connections capped per address and per listener, verified ones by max_connections; each shed counted', async () => {
    // `capped`: max_pending_per_address 10, max_pending_handshakes 15, max_connections 20.
    const held: net.Socket[] = [];
    let closedByProxy = 0;
    const idleFrom = async (n: number, localAddress: string): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const s = net.connect({ port: cappedPort, host: '127.0.0.1', localAddress });
        closers.push(() => s.destroy());
        s.on('error', () => undefined);
        s.on('close', () => closedByProxy++);
        held.push(s);
        await once(s, 'connect');
      }
    };
    const waitFor = async (what: string, pred: () => boolean | Promise<boolean>): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while (!(await pred())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const gauge = async (name: string): Promise<number> => metricValue(await scrapeMetrics(A.admin), name, { listener: 'capped' });
    const shed = async (reason: string): Promise<number> => metricValue(await scrapeMetrics(A.admin), 'spindle_proxy_connections_shed_total', { listener: 'capped', reason });

    // 30 idle connections from 127.0.0.1: 10 pending, 20 closed at accept.
    await idleFrom(30, '127.0.0.1');
    await waitFor('20 closed', () => closedByProxy >= 20);
    // 10 from 127.0.0.2: the listener has room for 5 more pending (15 in all).
    await idleFrom(10, '127.0.0.2');
    await waitFor('25 closed', () => closedByProxy >= 25);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(closedByProxy, 25, 'exactly the sockets over the pending limits were closed');
    assert.equal(await shed('pending_per_address'), 20);
    assert.equal(await shed('max_pending_handshakes'), 5);
    assert.equal(await gauge('spindle_proxy_pending_connections'), 15);
    for (const s of held) s.destroy();
    await waitFor('the pending slots back', async () => (await gauge('spindle_proxy_pending_connections')) === 0);

    // 20 verified callers fill max_connections (one at a time: pending never exceeds the caps).
    const verified: tls.TLSSocket[] = [];
    for (let i = 0; i < 20; i++) {
      const s = await tlsConnect(cappedPort, trust.webSvid);
      assert.equal(await roundTrip(s, `v${i}`), `echo: v${i}`);
      verified.push(s);
    }
    assert.equal(await gauge('spindle_proxy_pending_connections'), 0, 'verified callers leave the pending pool');
    // More callers, even valid ones, are closed at accept while 20 are verified.
    for (let i = 0; i < 10; i++) assert.equal(await tcpCall(cappedPort, trust.webSvid, 'over'), 'closed');
    assert.equal(await shed('max_connections'), 10);
    const m = await scrapeMetrics(A.admin);
    assert.equal(metricValue(m, 'spindle_proxy_connections_over_limit_total', { listener: 'capped' }), 10);
    // A verified caller leaving frees its slot for the next one.
    verified.pop()!.destroy();
    await waitFor('a verified slot back', async () => (await gauge('spindle_proxy_active_connections')) === 19);
    assert.equal(await tcpCall(cappedPort, trust.webSvid, 'again'), 'echo: again');
    for (const s of verified) s.destroy();
    await waitFor('every slot back', async () => (await gauge('spindle_proxy_active_connections')) === 0);
  });
});

describe('inbound HTTP listener', () => {
  test('forwards with Envoy X-Forwarded-Client-Cert (the caller\'s own removed) and the caller\'s traceparent', async () => {
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const r = await httpsCall(httpInPort, trust.webSvid, {
      path: '/orders?id=7',
      headers: { 'x-forwarded-client-cert': 'By=spiffe://example.org/db;URI=spiffe://example.org/admin', traceparent: tp },
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello /orders?id=7\n');
    const seen = seenRequests.find((q) => q.url === '/orders?id=7');
    assert.ok(seen);
    const hash = createHash('sha256').update(trust.webSvid.chain[0]!).digest('hex');
    assert.equal(seen.headers['x-forwarded-client-cert'], `By=${DB};Hash=${hash};URI=${WEB}`);
    const xfccCount = seen.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === 'x-forwarded-client-cert').length;
    assert.equal(xfccCount, 1, 'one XFCC header reaches the service');
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('spiffe://example.org/admin'), 'the spoofed XFCC never reaches the service');
    assert.equal(seen.headers.traceparent, tp);
    const line = await accessLine(A, (q) => q.listener === 'http-in' && q.path === '/orders', 'for the request');
    assert.equal(line.kind, 'request');
    assert.equal(line.decision, 'allow');
    assert.equal(line.status, 200);
    assert.equal(line.method, 'GET');
    assert.equal(line.traceparent, tp);
    assert.equal(line.source_id, WEB);
  });

  test('starts a traceparent when the caller sent none (or an invalid one)', async () => {
    for (const [path, headers] of [
      ['/no-trace', {}],
      ['/bad-trace', { traceparent: '00-00000000000000000000000000000000-b7ad6b7169203331-01', tracestate: 'x=1' }],
    ] as const) {
      const r = await httpsCall(httpInPort, trust.webSvid, { path, headers });
      assert.equal(r.status, 200);
      const seen = seenRequests.find((q) => q.url === path);
      assert.ok(seen);
      const tp = String(seen.headers.traceparent);
      assert.match(tp, /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      assert.doesNotMatch(tp, /^00-0{32}-/);
      assert.equal(seen.headers.tracestate, undefined, 'tracestate of a trace we replaced is dropped');
      const line = await accessLine(A, (q) => q.path === path, `for ${path}`);
      assert.equal(line.traceparent, tp);
    }
  });

  test('a refused request gets 403 naming the rule; the service never sees it; metrics and log record it', async () => {
    const n = seenRequests.length;
    const r = await httpsCall(httpInPort, intruder, { path: '/admin', method: 'POST', body: 'x'.repeat(1000) });
    assert.equal(r.status, 403);
    assert.match(r.body, /rule "default-deny"/);
    assert.match(r.body, /spiffe:\/\/example\.org\/intruder matches no allowed ID/);
    assert.equal(seenRequests.length, n);
    const line = await accessLine(A, (q) => q.listener === 'http-in' && q.decision === 'deny', 'for the refused request');
    assert.equal(line.status, 403);
    assert.equal(line.method, 'POST');
    assert.equal(line.path, '/admin');
    assert.equal(line.rule, 'default-deny');
    const m = await scrapeMetrics(A.admin);
    assert.ok(metricValue(m, 'spindle_proxy_requests_total', { listener: 'http-in', source: 'spiffe://example.org/intruder', decision: 'deny' }) >= 1);
    assert.ok(metricValue(m, 'spindle_proxy_requests_total', { listener: 'http-in', source: WEB, decision: 'allow' }) >= 1);
    assert.ok(metricValue(m, 'spindle_proxy_request_duration_seconds_count', { listener: 'http-in', decision: 'deny' }) >= 1);
  });

  test('request bodies are streamed: the service gets the first chunk before the caller has sent the rest', async () => {
    const s = await tlsConnect(httpInPort, trust.webSvid);
    const chunk = 'a'.repeat(64 * 1024);
    const gotFirst = new Promise<boolean>((resolve) => {
      firstChunkSeen = () => resolve(true);
      setTimeout(() => resolve(false), 10_000);
    });
    s.write(`POST /stream HTTP/1.1\r\nhost: svc\r\ncontent-length: ${chunk.length * 2}\r\n\r\n${chunk}`);
    assert.equal(await gotFirst, true, 'the first half of the body reached the service while the second was unsent');
    firstChunkSeen = undefined;
    let reply = '';
    s.on('data', (d: Buffer) => (reply += d.toString()));
    s.write(chunk);
    const deadline = Date.now() + 10_000;
    while (!reply.includes('bytes') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.match(reply, /^HTTP\/1\.1 200/);
    assert.match(reply, /got 131072 bytes/);
    s.destroy();
  });

  test('slowloris: a request head trickled slower than header_timeout is cut off', async () => {
    const s = await tlsConnect(httpInPort, trust.webSvid);
    let reply = '';
    let closed = false;
    s.on('data', (d: Buffer) => (reply += d.toString()));
    s.on('close', () => (closed = true));
    s.on('error', () => undefined);
    s.write('GET /slow HTTP/1.1\r\nhost: svc\r\n');
    // One header byte every 200 ms for at most 40 writes (8 s); header_timeout is 1 s.
    for (let i = 0; i < 40 && !closed; i++) {
      s.write('x');
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(closed, true, 'the proxy closed the connection');
    assert.match(reply, /^HTTP\/1\.1 408/);
    assert.ok(!seenRequests.some((q) => q.url === '/slow'));
  });
});

describe('outbound listener', () => {
  let agentWeb: FakeAgent;
  before(async () => {
    agentWeb = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    agents.push(agentWeb);
  });

  test('relays to a target presenting the expected ID (outbound -> inbound -> service)', async () => {
    const [listen, admin] = [await freePort(), await freePort()];
    const B = await startProxy(['outbound', '-listen', `127.0.0.1:${listen}`, '-connect', `127.0.0.1:${tcpInPort}`, '-expect', DB, '-admin', `127.0.0.1:${admin}`], admin, agentWeb.socketPath);
    const s = net.connect(listen, '127.0.0.1');
    closers.push(() => s.destroy());
    await once(s, 'connect');
    assert.equal(await roundTrip(s, 'through'), 'echo: through');
    s.destroy();
    const line = await accessLine(B, (r) => r.decision === 'allow', 'for the relayed connection');
    assert.equal(line.destination_id, DB);
    assert.equal(line.own_id, WEB);
    assert.equal(line.mode, 'outbound');
    await accessLine(A, (r) => r.listener === 'tcp-in' && r.source_id === WEB && r.bytes_in === 8, 'on the inbound side');
    // SIGTERM stops it cleanly (exit 0), within a bound.
    B.proc.kill('SIGTERM');
    const [code] = (await Promise.race([once(B.proc, 'exit'), new Promise((r) => setTimeout(() => r(['timeout']), 10_000))])) as [number | string];
    assert.equal(code, 0, B.stderr());
    assert.match(B.stderr(), /shutting down/);
  });

  test('refuses a target presenting another ID: the local connection is closed, nothing reaches the service', async () => {
    const [listen, admin] = [await freePort(), await freePort()];
    const C = await startProxy(
      ['outbound', '-listen', `127.0.0.1:${listen}`, '-connect', `127.0.0.1:${tcpInPort}`, '-expect', 'spiffe://example.org/database', '-admin', `127.0.0.1:${admin}`],
      admin,
      agentWeb.socketPath,
    );
    const before = echoConnections;
    const s = net.connect(listen, '127.0.0.1');
    closers.push(() => s.destroy());
    await once(s, 'connect');
    assert.equal(await roundTrip(s, 'secret'), 'closed');
    assert.equal(echoConnections, before);
    const line = await accessLine(C, (r) => r.decision === 'deny', 'for the refused target');
    assert.match(String(line.reason), /^not_expected: peer spiffe:\/\/example\.org\/db is not the expected spiffe:\/\/example\.org\/database/);
    const m = await scrapeMetrics(admin);
    assert.equal(metricValue(m, 'spindle_proxy_handshake_errors_total', { listener: 'outbound', reason: 'not_expected' }), 1);
  });

  test('an outbound listener must listen on loopback', () => {
    const r = spawnSync(proxyBin, ['outbound', '-listen', '0.0.0.0:9000', '-connect', '127.0.0.1:1', '-expect', DB], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /-listen: an outbound listener accepts plain TCP, so it must listen on loopback/);
  });
});

/**
 * The flooding process (`node --input-type=module -e FLOOD_SCRIPT <port> <total> <holdMs>`): opens
 * <total> sockets to 127.0.0.1:<port> from 127.0.0.1, 250 at a time; a quarter each: idle TCP
 * (two quarters), a real ClientHello (captured first) that is never followed by the client's
 * Finished, a TLS client without a certificate. Every socket is kept until <holdMs> after the
 * start (or the proxy closes it), all are destroyed then, and `done {json}` is printed.
 */
const FLOOD_SCRIPT = `
import * as net from 'node:net';
import * as tls from 'node:tls';
import { once } from 'node:events';
const [port, total, holdMs] = process.argv.slice(1).map(Number);
const start = Date.now();
const catcher = net.createServer();
catcher.listen(0, '127.0.0.1');
await once(catcher, 'listening');
const hello = new Promise((resolve) => catcher.once('connection', (c) => c.once('data', (d) => { resolve(d); c.destroy(); })));
const probe = tls.connect({ host: '127.0.0.1', port: catcher.address().port, rejectUnauthorized: false });
probe.on('error', () => undefined);
const clientHello = await hello;
probe.destroy();
catcher.close();
const ctx = tls.createSecureContext({});
const sockets = [];
let open = 0, maxHeld = 0, closedByProxy = 0, errors = 0, stopping = false;
for (let i = 0; i < total; i++) {
  const kind = i % 4;
  const s = kind === 3
    ? tls.connect({ host: '127.0.0.1', port, secureContext: ctx, rejectUnauthorized: false })
    : net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' });
  open++;
  maxHeld = Math.max(maxHeld, open);
  if (kind === 2) s.once('connect', () => s.write(clientHello));
  s.on('error', () => errors++);
  s.once('close', () => { open--; if (!stopping) closedByProxy++; });
  sockets.push(s);
  if (i % 250 === 249) await new Promise((r) => setImmediate(r));
}
const openedMs = Date.now() - start;
process.stdout.write('opened ' + openedMs + '\\n');
const hard = setTimeout(() => process.exit(2), 15_000);
await new Promise((r) => setTimeout(r, Math.max(0, holdMs - (Date.now() - start))));
stopping = true;
const heldOpen = sockets.filter((s) => !s.destroyed).length;
for (const s of sockets) s.destroy();
clearTimeout(hard);
process.stdout.write('done ' + JSON.stringify({ opened: sockets.length, openedMs, heldOpen, maxHeld, closedByProxy, errors }) + '\\n');
process.exit(0);
`;

describe('load and rotation', () => {
  test('a flood of 10,000 connections held at once from 127.0.0.1: a canary caller from 127.0.0.2 keeps being served; sheds counted; every slot given back', async (t) => {
    // The flooding process needs a file descriptor per socket (the proxy keeps at most
    // max_pending_per_address of them): 10,000 plus headroom.
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const nofile = Number(/^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1]?.replace('unlimited', 'Infinity'));
    assert.ok(nofile >= 12_000, `this test holds 10,000 sockets: run it with ulimit -n 20000 (soft limit is ${nofile})`);

    const TOTAL = 10_000;
    const HOLD_MS = 12_000;
    const pid = A.proc.pid!;
    const procStat = (): { fds: number; rssKb: number } => ({
      fds: readdirSync(`/proc/${pid}/fd`).length,
      rssKb: Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0),
    });
    const before = await scrapeMetrics(A.admin);
    const shedBefore = metricValue(before, 'spindle_proxy_connections_shed_total', { listener: 'tcp-in' });
    const timeoutsBefore = metricValue(before, 'spindle_proxy_handshake_errors_total', { listener: 'tcp-in', reason: 'timeout' });

    // The canary: a valid SVID from another address, a round trip on a new connection every 20 ms.
    let stop = false;
    let canaryOk = 0;
    const okAt: number[] = [];
    const canaryFailures: string[] = [];
    const canary = (async () => {
      for (let i = 0; i < 5000 && !stop; i++) {
        const r = await tcpCall(tcpInPort, trust.webSvid, `canary${i}`, '127.0.0.2');
        if (r === `echo: canary${i}`) {
          canaryOk++;
          okAt.push(Date.now());
        } else canaryFailures.push(r);
        await new Promise((res) => setTimeout(res, 20));
      }
    })();

    // The flood, from a process of its own (an attacker does not share the canary's event loop):
    // FLOOD_SCRIPT opens 10,000 sockets from 127.0.0.1, holds them all until HOLD_MS after its
    // start (each destroyed by 15 s at the latest), then reports.
    const floodStart = Date.now();
    const flooder = spawn(process.execPath, ['--input-type=module', '-e', FLOOD_SCRIPT, String(tcpInPort), String(TOTAL), String(HOLD_MS)], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(flooder);
    let floodOut = '';
    let floodErr = '';
    flooder.stdout!.on('data', (d: Buffer) => (floodOut += d.toString()));
    flooder.stderr!.on('data', (d: Buffer) => (floodErr += d.toString()));
    const flooderDone = new Promise<void>((resolve) => flooder.once('exit', () => resolve()));
    const killer = setTimeout(() => flooder.kill('SIGKILL'), 20_000);
    // While held: the flooding address never has more than max_pending_per_address (64) pending;
    // the canary adds at most one.
    let maxPending = 0;
    let maxFds = 0;
    let maxRssKb = 0;
    while (Date.now() - floodStart < HOLD_MS && flooder.exitCode === null) {
      const m = await scrapeMetrics(A.admin);
      maxPending = Math.max(maxPending, metricValue(m, 'spindle_proxy_pending_connections', { listener: 'tcp-in' }));
      const st = procStat();
      maxFds = Math.max(maxFds, st.fds);
      maxRssKb = Math.max(maxRssKb, st.rssKb);
      await new Promise((r) => setTimeout(r, 500));
    }
    await flooderDone;
    clearTimeout(killer);
    const canaryDuringFlood = canaryOk;
    const floodMs = Date.now() - floodStart;
    stop = true;
    await canary;
    const report = /^done (.*)$/m.exec(floodOut);
    assert.ok(report !== null, `the flooder reported: ${floodOut} ${floodErr}`);
    const fr = JSON.parse(report[1]!) as { opened: number; openedMs: number; heldOpen: number; maxHeld: number; closedByProxy: number; errors: number };
    assert.equal(fr.opened, TOTAL);
    const m = await scrapeMetrics(A.admin);
    const shed = metricValue(m, 'spindle_proxy_connections_shed_total', { listener: 'tcp-in' }) - shedBefore;
    const shedPerAddress = metricValue(m, 'spindle_proxy_connections_shed_total', { listener: 'tcp-in', reason: 'pending_per_address' });
    const timeouts = metricValue(m, 'spindle_proxy_handshake_errors_total', { listener: 'tcp-in', reason: 'timeout' }) - timeoutsBefore;
    const half = floodStart + HOLD_MS / 2;
    t.diagnostic(
      `flood: ${TOTAL} sockets opened in ${fr.openedMs} ms, ${floodMs} ms in all (at most ${fr.maxHeld} open at once on the flooder's side, ${fr.heldOpen} still open at the end, ${fr.closedByProxy} closed by the proxy, ${fr.errors} socket errors); ` +
        `shed ${shed} (pending_per_address ${shedPerAddress}), handshake timeouts ${timeouts}; pending at most ${maxPending}; ` +
        `canary: ${canaryDuringFlood} round trips during the flood (${okAt.filter((x) => x < half).length} in the first half), ${canaryFailures.length} failed; ` +
        `proxy: at most ${maxFds} fds, VmRSS at most ${Math.round(maxRssKb / 1024)} MB`,
    );
    assert.equal(A.proc.exitCode, null, A.stderr().slice(-3000));
    assert.deepEqual(canaryFailures, [], 'every canary round trip succeeded');
    assert.ok(canaryDuringFlood >= 50, `the canary kept going during the flood (${canaryDuringFlood} round trips)`);
    assert.ok(okAt.filter((x) => x >= floodStart && x < half).length >= 10, 'canary round trips in the first half of the flood');
    assert.ok(okAt.filter((x) => x >= half).length >= 10, 'canary round trips in the second half of the flood');
    assert.ok(maxPending <= 64 + 1, `pending connections stayed within max_pending_per_address (+ the canary): ${maxPending}`);
    assert.ok(maxFds < 1000, `the proxy's open files stayed bounded: ${maxFds}`);
    // Most of the flood was refused at accept and counted; the rest was admitted as pending and
    // ended by the SPIFFE check (no certificate) or handshake_timeout (5 s), which freed its slot.
    assert.ok(shedPerAddress >= TOTAL / 2, `sheds counted: ${shedPerAddress}`);
    assert.ok(shed <= fr.closedByProxy, 'every shed socket was closed by the proxy');
    assert.ok(timeouts >= 1, 'admitted handshakes that never finished were ended by handshake_timeout');
    assert.match(A.stderr(), /connections closed at accept/, 'the sheds were logged (summarized)');
    const shedLines = A.stderr().split('\n').filter((l) => l.includes('connections closed at accept') && l.includes('tcp-in')).length;
    assert.ok(shedLines <= 5, `shed log lines are summaries, not one per socket: ${shedLines}`);
    // The flooding address itself is served again, and every slot comes back.
    assert.equal(await tcpCall(tcpInPort, trust.webSvid, 'after'), 'echo: after');
    const deadline = Date.now() + 10_000;
    let open = -1;
    let pending = -1;
    while (Date.now() < deadline) {
      const mm = await scrapeMetrics(A.admin);
      open = metricValue(mm, 'spindle_proxy_active_connections', { listener: 'tcp-in' });
      pending = metricValue(mm, 'spindle_proxy_pending_connections', { listener: 'tcp-in' });
      if (open === 0 && pending === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(open, 0);
    assert.equal(pending, 0);
  });

  test('rotation: new connections get the new SVID, a live connection stays up', async () => {
    const live = await tlsConnect(tcpInPort, trust.webSvid);
    assert.equal(await roundTrip(live, 'before'), 'echo: before');
    const oldLeaf = live.getPeerX509Certificate()!.raw;
    const rotated = await trust.ca.issueSvid(DB);
    agents[0]!.update({ identities: [ident(rotated)] });
    const deadline = Date.now() + 10_000;
    let leaf: Buffer | undefined;
    for (;;) {
      const s = await tlsConnect(tcpInPort, trust.webSvid);
      leaf = s.getPeerX509Certificate()!.raw;
      assert.equal(await roundTrip(s, 'new'), 'echo: new');
      s.destroy();
      if (leaf.equals(rotated.certDer) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(leaf.equals(rotated.certDer), 'a new connection presents the rotated SVID');
    assert.ok(!leaf.equals(oldLeaf));
    assert.equal(await roundTrip(live, 'still'), 'echo: still', 'the live connection is untouched');
    live.destroy();
  });
});

// spindle-proxy end to end: real bin/spindle-proxy processes against the Workload API test kit
// (a fake agent on a Unix socket), real TLS on loopback, real local services behind them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

/** Connects to `port` as `svid` and resolves once the handshake is done. */
function tlsConnect(port: number, svid: TestSvid | undefined): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...callerTls(svid), host: '127.0.0.1', port });
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
async function tcpCall(port: number, svid: TestSvid | undefined, msg = 'ping'): Promise<string> {
  let s: tls.TLSSocket;
  try {
    s = await tlsConnect(port, svid);
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

  test('max_connections: connections over the limit are closed at accept', async () => {
    const held: net.Socket[] = [];
    let closedEarly = 0;
    for (let i = 0; i < 30; i++) {
      const s = net.connect(cappedPort, '127.0.0.1');
      closers.push(() => s.destroy());
      s.on('error', () => undefined);
      s.on('close', () => closedEarly++);
      held.push(s);
      await once(s, 'connect');
    }
    const deadline = Date.now() + 10_000;
    while (closedEarly < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(closedEarly, 10, 'exactly the 10 connections over max_connections 20 were closed');
    const m = await scrapeMetrics(A.admin);
    assert.equal(metricValue(m, 'spindle_proxy_connections_over_limit_total', { listener: 'capped' }), 10);
    for (const s of held) s.destroy();
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

describe('load and rotation', () => {
  test('a bounded flood of 2,000 connections: a canary caller keeps being served', async (t) => {
    let stop = false;
    let canaryOk = 0;
    const canaryFailures: string[] = [];
    const canary = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) {
        const r = await tcpCall(tcpInPort, trust.webSvid, `canary${i}`);
        if (r === `echo: canary${i}`) canaryOk++;
        else canaryFailures.push(r);
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    // 2,000 connections, 100 at a time, each bounded (closed by us after 50 ms, or 10 s at most):
    // half idle TCP,
    // half TLS handshakes without a client certificate (refused by the SPIFFE check).
    const TOTAL = 2000;
    const WAVE = 100;
    const floodStart = Date.now();
    for (let w = 0; w < TOTAL / WAVE; w++) {
      await Promise.all(
        Array.from({ length: WAVE }, (_, i) =>
          i % 2 === 0
            ? new Promise<void>((resolve) => {
                const s = net.connect(tcpInPort, '127.0.0.1');
                s.on('error', () => resolve());
                s.on('connect', () => setTimeout(() => s.destroy(), 50));
                s.setTimeout(10_000, () => s.destroy());
                s.on('close', () => resolve());
              })
            : new Promise<void>((resolve) => {
                const s = tls.connect({ ...callerTls(undefined), host: '127.0.0.1', port: tcpInPort });
                s.on('error', () => resolve());
                s.on('close', () => resolve());
                s.setTimeout(10_000, () => s.destroy());
              }),
        ),
      );
    }
    const floodMs = Date.now() - floodStart;
    stop = true;
    await canary;
    t.diagnostic(`flood of ${TOTAL} connections took ${floodMs} ms; the canary made ${canaryOk} round trips meanwhile, ${canaryFailures.length} failed`);
    assert.equal(A.proc.exitCode, null, A.stderr().slice(-3000));
    assert.deepEqual(canaryFailures, []);
    assert.ok(canaryOk > 0, 'the canary ran during the flood');
    assert.equal(await tcpCall(tcpInPort, trust.webSvid, 'after'), 'echo: after');
    const m = await scrapeMetrics(A.admin);
    assert.ok(metricValue(m, 'spindle_proxy_handshake_errors_total', { listener: 'tcp-in', reason: 'no_peer_certificate' }) >= TOTAL / 2);
    // Every flood connection gave its slot back (a leaked slot would fill max_connections).
    const deadline = Date.now() + 10_000;
    let open = -1;
    while (Date.now() < deadline) {
      open = metricValue(await scrapeMetrics(A.admin), 'spindle_proxy_active_connections', { listener: 'tcp-in' });
      if (open === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(open, 0);
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

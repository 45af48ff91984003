// The SPIFFE bundle endpoint over real TLS on loopback, in process, serving a real CaManager's
// bundle (SQLite datastore, disk keys, an injected clock that the tests move to rotate).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request, type RequestOptions } from 'node:https';
import { connect, type ConnectionOptions, type PeerCertificate, type TLSSocket } from 'node:tls';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Registry } from 'prom-client';
import { parseBundle } from '../../spiffe/bundle.js';
import { parseCertificate, verifyX509Svid } from '../../spiffe/x509/index.js';
import { pemToDer } from '../../spiffe/pem.js';
import { DiskKeyManager } from '../ca/keymanager.js';
import type { CaManager } from '../ca/manager.js';
import { Clock, TD, TempDirs, captureLogger, openssl, startCa } from '../ca/testkit.js';
import { BUNDLE_ENDPOINT_LIMITS, startBundleEndpoint, type BundleEndpoint, type BundleEndpointOptions } from './endpoint.js';

const dirs = new TempDirs();
after(() => dirs.cleanup());

const CA_TTL = 3600;
const SVID_TTL = 600;
const HINT = 123;
/** Every wait below is bounded by this. */
const WAIT_MS = 15_000;

async function newCa(): Promise<{ ca: CaManager; clock: Clock; dir: string }> {
  const dir = dirs.make('spindle-fedep-');
  const ds = await dirs.store(dir);
  const clock = new Clock(Date.now());
  const ca = await startCa({ datastore: ds, keyManager: new DiskKeyManager(join(dir, 'keys')), now: clock.now, caTtlSeconds: CA_TTL, defaultX509SvidTtlSeconds: SVID_TTL });
  return { ca, clock, dir };
}

const endpoints: BundleEndpoint[] = [];
after(async () => {
  for (const e of endpoints) await e.close();
});

async function serve(ca: CaManager, over: Partial<BundleEndpointOptions> = {}): Promise<BundleEndpoint> {
  const e = await startBundleEndpoint({
    trustDomain: TD,
    address: '127.0.0.1',
    port: 0,
    refreshHintSeconds: HINT,
    profile: { name: 'https_spiffe' },
    bundles: ca,
    serverSvid: ca,
    logger: captureLogger(),
    ...over,
  });
  endpoints.push(e);
  return e;
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The certificates the server presented, leaf first (DER). */
  chain: Buffer[];
}

function peerChain(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c: PeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (c !== undefined && c.raw !== undefined && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(c.raw);
    c = (c as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
  }
  return out;
}

/** One HTTPS request on a fresh connection; the certificate is checked by the test, not by TLS. */
function fetch(port: number, opts: RequestOptions & { body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const { body, ...rest } = opts;
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'GET', rejectUnauthorized: false, agent: false, timeout: WAIT_MS, ...rest }, (res) => {
      const chain = peerChain(res.socket as TLSSocket);
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), chain }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A raw TLS connection (handshake done). */
function tlsOpen(port: number, localAddress = '127.0.0.1'): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    // localAddress is passed on to net.connect (the TLS options type does not list it).
    const options: ConnectionOptions & { localAddress: string } = { host: '127.0.0.1', port, localAddress, rejectUnauthorized: false };
    const s = connect(options, () => resolve(s));
    s.once('error', reject);
    s.once('close', () => reject(new Error('closed during the handshake')));
  });
}

/** Resolves when `s` closes (bounded). */
function closed(s: TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (s.destroyed) return resolve();
    const t = setTimeout(() => reject(new Error('the server did not close the connection')), WAIT_MS);
    s.once('close', () => {
      clearTimeout(t);
      resolve();
    });
    s.on('error', () => undefined);
  });
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + WAIT_MS;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting until ${what}`);
}

describe('bundle endpoint, https_spiffe', () => {
  it('serves the trust domain bundle document on GET /, with the sequence and refresh hint', async () => {
    const { ca, clock } = await newCa();
    const e = await serve(ca);
    assert.equal(e.url, `https://127.0.0.1:${e.port}/`);
    const r = await fetch(e.port);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(Number(r.headers['content-length']), r.body.length);
    const served = parseBundle(TD, r.body);
    const own = ca.bundle();
    assert.equal(served.sequence, own.sequence);
    assert.ok(served.sequence > 0n);
    assert.equal(served.refreshHintSeconds, HINT);
    const expected = own.clone();
    expected.refreshHintSeconds = HINT;
    assert.ok(served.equals(expected), 'the served authorities are the CA bundle');
    assert.equal(served.x509Authorities().length, 1);
    assert.equal(served.jwtAuthorities().size, 1);
    // The client authenticates the endpoint with the trust domain's bundle and checks the ID.
    const verified = verifyX509Svid(r.chain, served, { now: clock.now() });
    assert.equal(verified.id, 'spiffe://example.org/spire/server');
    // HEAD: the same headers, no body.
    const h = await fetch(e.port, { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal(Number(h.headers['content-length']), r.body.length);
    assert.equal(h.body.length, 0);
  });

  it('follows CA rotation and server SVID renewal without a restart', async () => {
    const { ca, clock } = await newCa();
    const e = await serve(ca);
    const before = await fetch(e.port);
    const seq0 = parseBundle(TD, before.body).sequence;
    const leaf0 = parseCertificate(before.chain[0]!).serialHex;
    assert.equal(leaf0, ca.serverSvid().serialHex);

    // Past half the CA's life: a new X.509 CA and JWT key are prepared and published.
    clock.advance(CA_TTL / 2 + 1);
    const step = await ca.rotate();
    assert.ok(step.bundleChanged);
    assert.ok(step.serverSvidRenewed, 'the server SVID passed half its life too');
    const after = await fetch(e.port);
    const served = parseBundle(TD, after.body);
    assert.equal(served.sequence, ca.bundle().sequence);
    assert.ok(served.sequence > seq0);
    assert.equal(served.x509Authorities().length, 2);
    assert.equal(served.refreshHintSeconds, HINT);
    // New connections get the renewed server SVID, and it verifies against the new bundle.
    const leaf1 = parseCertificate(after.chain[0]!).serialHex;
    assert.notEqual(leaf1, leaf0);
    assert.equal(leaf1, ca.serverSvid().serialHex);
    assert.equal(verifyX509Svid(after.chain, served, { now: clock.now() }).id, 'spiffe://example.org/spire/server');
  });

  it('answers 404 to other paths, 405 to other methods and 400 to a GET with a body', async () => {
    const { ca } = await newCa();
    const registry = new Registry();
    const e = await serve(ca, { registry });
    assert.equal((await fetch(e.port, { path: '/bundle' })).status, 404);
    assert.equal((await fetch(e.port, { path: '//' })).status, 404);
    assert.equal((await fetch(e.port, { path: '/.well-known/openid-configuration' })).status, 404);
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
      const r = await fetch(e.port, { method });
      assert.equal(r.status, 405, method);
      assert.equal(r.headers['allow'], 'GET, HEAD');
    }
    const withBody = await fetch(e.port, { method: 'GET', headers: { 'content-length': '5' }, body: 'hello' });
    assert.equal(withBody.status, 400);
    assert.equal((await fetch(e.port, { path: '/?x=1' })).status, 200, 'a query string does not change the path');
    const text = await registry.metrics();
    assert.match(text, /spindle_server_bundle_endpoint_requests_total\{result="not_found"\} 3/);
    assert.match(text, /spindle_server_bundle_endpoint_requests_total\{result="method_not_allowed"\} 5/);
    assert.match(text, /spindle_server_bundle_endpoint_requests_total\{result="bad_request"\} 1/);
    assert.match(text, /spindle_server_bundle_endpoint_requests_total\{result="ok"\} 1/);
  });
});

describe('bundle endpoint, hostile clients', () => {
  it('refuses a POST with a 10 MB body without reading it', async () => {
    const { ca } = await newCa();
    const e = await serve(ca);
    const total = 10 * 1024 * 1024;
    const s = await tlsOpen(e.port);
    let response = '';
    s.on('data', (d: Buffer) => (response += d.toString('latin1')));
    const gone = closed(s);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    s.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${total}\r\n\r\n`);
    s.write(chunk);
    let written = chunk.length;
    await until('the server answers', async () => response.includes('\r\n\r\n'));
    assert.match(response, /^HTTP\/1\.1 405 /);
    assert.ok(written < total);
    // The rest of the body has nowhere to go: the connection is closed under the client.
    let writeFailed = false;
    s.on('error', () => (writeFailed = true));
    while (written < total && !s.destroyed && !writeFailed) {
      const ok = s.write(chunk);
      written += chunk.length;
      if (!ok) await Promise.race([new Promise((r) => s.once('drain', r)), gone]);
    }
    await gone;
    assert.ok(s.destroyed);
    assert.ok(written < total || writeFailed, `the client could push its whole body (${written} bytes) into a connection the server kept`);
  });

  it('cuts off a client that never finishes its headers (slowloris)', async () => {
    const { ca } = await newCa();
    const e = await serve(ca, { limits: { headersTimeoutMs: 1000, requestTimeoutMs: 2000, checkIntervalMs: 200 } });
    const s = await tlsOpen(e.port);
    s.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a');
    const drip = setInterval(() => {
      if (!s.destroyed) s.write('a');
    }, 100);
    try {
      await closed(s);
    } finally {
      clearInterval(drip);
    }
    assert.equal((await fetch(e.port)).status, 200, 'others are still served');
  });

  it('refuses connections past maxConnections, and serves again once they close', async () => {
    const { ca } = await newCa();
    const registry = new Registry();
    const max = 4;
    const e = await serve(ca, { registry, limits: { maxConnections: max, maxConnectionsPerClient: 100 } });
    const held: TLSSocket[] = [];
    for (let i = 0; i < max; i++) held.push(await tlsOpen(e.port));
    for (let i = 0; i < 3; i++) await assert.rejects(fetch(e.port), 'a connection past the maximum is closed');
    assert.match(await registry.metrics(), /spindle_server_bundle_endpoint_connections_refused_total\{reason="max_connections"\} [1-9]/);
    for (const s of held) s.destroy();
    await until('a canary GET is served', async () => (await fetch(e.port)).status === 200);
  });

  it('caps connections per client address, leaving others served', async () => {
    const { ca } = await newCa();
    const registry = new Registry();
    const e = await serve(ca, { registry, limits: { maxConnectionsPerClient: 2 } });
    const held = [await tlsOpen(e.port, '127.0.0.2'), await tlsOpen(e.port, '127.0.0.2')];
    await assert.rejects(tlsOpen(e.port, '127.0.0.2'));
    assert.equal((await fetch(e.port, { localAddress: '127.0.0.3' })).status, 200, 'another client address is served');
    assert.match(await registry.metrics(), /spindle_server_bundle_endpoint_connections_refused_total\{reason="per_client"\} 1/);
    for (const s of held) s.destroy();
    await until('the first client is served again', async () => (await fetch(e.port, { localAddress: '127.0.0.2' })).status === 200);
  });

  it('has small, bounded defaults', () => {
    assert.ok(BUNDLE_ENDPOINT_LIMITS.maxHeaderSize <= 8192);
    assert.ok(BUNDLE_ENDPOINT_LIMITS.headersTimeoutMs < BUNDLE_ENDPOINT_LIMITS.requestTimeoutMs);
    assert.ok(BUNDLE_ENDPOINT_LIMITS.maxConnectionsPerClient < BUNDLE_ENDPOINT_LIMITS.maxConnections);
  });
});

describe('bundle endpoint, https_web', () => {
  function makeCert(dir: string, name: string): { cert: string; key: string } {
    const cert = join(dir, `${name}.crt`);
    const key = join(dir, `${name}.key`);
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-days', '1', '-keyout', key, '-out', cert]);
    return { cert, key };
  }
  const der = (certPath: string): Buffer => pemToDer(readFileSync(certPath, 'utf8'), 'CERTIFICATE');

  it("serves the files' certificate and picks up a replaced one; a broken file keeps the last good pair", async () => {
    const { ca, dir } = await newCa();
    const a = makeCert(dir, 'first');
    const b = makeCert(dir, 'second');
    const certFilePath = join(dir, 'serving.crt');
    const keyFilePath = join(dir, 'serving.key');
    writeFileSync(certFilePath, readFileSync(a.cert));
    writeFileSync(keyFilePath, readFileSync(a.key));
    const logger = captureLogger();
    const e = await serve(ca, { profile: { name: 'https_web', certFilePath, keyFilePath, fileSyncInterval: 1 }, logger });
    const first = await fetch(e.port);
    assert.equal(first.status, 200);
    assert.deepEqual(first.chain[0], der(a.cert));
    assert.equal(parseBundle(TD, first.body).sequence, ca.bundle().sequence);

    writeFileSync(keyFilePath, readFileSync(b.key));
    writeFileSync(certFilePath, readFileSync(b.cert));
    await until('the new certificate is served', async () => (await fetch(e.port)).chain[0]!.equals(der(b.cert)));

    // A broken certificate file: the last good pair stays, and it is logged once.
    writeFileSync(certFilePath, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
    await until('the broken file is noticed', async () => logger.lines.some((l) => l.level === 'warn'));
    await sleep(2500); // two more re-reads (file_sync_interval 1s) of the same broken file
    assert.deepEqual((await fetch(e.port)).chain[0], der(b.cert));
    assert.equal(logger.lines.filter((l) => l.level === 'warn').length, 1, 'logged once, not every interval');
    // A key that is not the certificate's: also refused.
    writeFileSync(certFilePath, readFileSync(a.cert));
    await sleep(2500);
    assert.deepEqual((await fetch(e.port)).chain[0], der(b.cert));
  });

  it('refuses to start with files that do not load, naming them', async () => {
    const { ca, dir } = await newCa();
    const a = makeCert(dir, 'one');
    const b = makeCert(dir, 'two');
    await assert.rejects(
      startBundleEndpoint({
        trustDomain: TD,
        address: '127.0.0.1',
        port: 0,
        refreshHintSeconds: HINT,
        profile: { name: 'https_web', certFilePath: a.cert, keyFilePath: b.key, fileSyncInterval: 60 },
        bundles: ca,
        logger: captureLogger(),
      }),
      (err: Error) => err.message.includes(a.cert) && err.message.includes(b.key) && /serving_cert_file/.test(err.message),
    );
  });
});

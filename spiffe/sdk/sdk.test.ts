// The SDK (X509Source, authorizers, SPIFFE TLS) against the Workload API test kit (real grpc-js on
// a Unix socket) and real TLS over loopback.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { parseSpiffeId, parseTrustDomain } from '../id.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import { TestCa, type TestSvid } from '../../test/support/testca.js';
import { createTestTrust, FakeAgent, type FakeIdentity, type TestTrust } from '../workloadapi/testkit.js';
import {
  authorizeAny,
  authorizeID,
  authorizeMatchesPath,
  authorizeMemberOf,
  authorizeOneOf,
  createMtlsHttpsServer,
  createMtlsServer,
  createTlsServer,
  mtlsClientOptions,
  peerIdOf,
  tlsClientOptions,
  X509Source,
} from './index.js';

const WEB = 'spiffe://example.org/web';
const DB = 'spiffe://example.org/db';
const HOUR = 3600_000;

let trust: TestTrust;
const agents: FakeAgent[] = [];
const sources: X509Source[] = [];
const servers: tls.Server[] = [];
const sockets: tls.TLSSocket[] = [];

function ident(svid: TestSvid, hint = ''): FakeIdentity {
  return { id: svid.id, chain: svid.chain, keyPkcs8: svid.keyPkcs8, hint };
}

async function agentFor(...identities: FakeIdentity[]): Promise<FakeAgent> {
  const a = await FakeAgent.start({ identities, ...trust.material });
  agents.push(a);
  return a;
}

async function sourceOf(agent: FakeAgent, extra: Parameters<typeof X509Source.create>[0] = {}): Promise<X509Source> {
  const s = await X509Source.create({ socketPath: agent.socketPath, ...extra });
  sources.push(s);
  return s;
}

async function listen<S extends tls.Server>(server: S): Promise<number> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

function connect(port: number, opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  const s = tls.connect({ ...opts, host: '127.0.0.1', port });
  sockets.push(s);
  return new Promise((resolve, reject) => {
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads one line. */
function line(s: tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) {
        s.off('data', onData);
        resolve(buf.slice(0, i));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('close', () => reject(new Error(`closed after ${JSON.stringify(buf)}`)));
  });
}

function assertTyped(err: unknown, code: string, reason: string): asserts err is SpiffeError {
  assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.reason, reason, err.message);
}

/** An echo server: greets with the peer's ID, then echoes lines; records what it received. */
function echoServer(svids: X509Source, bundles: X509Source, authorizer: ReturnType<typeof authorizeAny>): { server: tls.Server; received: string[] } {
  const received: string[] = [];
  const server = createMtlsServer(svids, bundles, authorizer, (socket) => {
    socket.write(`hello ${peerIdOf(socket)}\n`);
    socket.on('data', (d) => {
      received.push(d.toString());
      socket.write(d);
    });
    socket.on('error', () => {});
  });
  return { server, received };
}

before(async () => {
  trust = await createTestTrust();
});

after(async () => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
  for (const s of sources) s.close();
  for (const a of agents) await a.close();
});

describe('X509Source', () => {
  test('no address: one error naming SPIFFE_ENDPOINT_SOCKET; a missing socket likewise', async () => {
    await assert.rejects(X509Source.create({ env: {} }), (err) => {
      assertTyped(err, ErrorCode.X509_SOURCE, 'no_endpoint');
      assert.match(err.message, /SPIFFE_ENDPOINT_SOCKET/);
      return true;
    });
    await assert.rejects(X509Source.create({ env: { SPIFFE_ENDPOINT_SOCKET: 'unix:///nonexistent/spindle/agent.sock' } }), (err) => {
      assertTyped(err, ErrorCode.X509_SOURCE, 'socket_missing');
      assert.match(err.message, /\/nonexistent\/spindle\/agent\.sock.*SPIFFE_ENDPOINT_SOCKET/);
      return true;
    });
  });

  test('resolves with the first context: default SVID, picker, own and federated bundles; updates; close', async () => {
    const agent = await agentFor(trust.web, trust.db);
    const viaEnv = await X509Source.create({ env: { SPIFFE_ENDPOINT_SOCKET: agent.address } });
    sources.push(viaEnv);
    assert.equal(viaEnv.getX509Svid().id, WEB);
    const picked = await sourceOf(agent, { picker: (svids) => svids.find((s) => s.id === DB)! });
    assert.equal(picked.getX509Svid().id, DB);
    assert.deepEqual(picked.getX509BundleForTrustDomain(parseTrustDomain('example.org')).x509Authorities(), [trust.ca.rootDer]);
    assert.deepEqual(picked.getX509BundleForTrustDomain(parseTrustDomain('partner.org')).x509Authorities(), [trust.partner.rootDer]);
    assert.throws(() => picked.getX509BundleForTrustDomain(parseTrustDomain('other.org')), (err) => (assertTyped(err, ErrorCode.X509_SOURCE, 'no_bundle'), true));

    const fresh = await trust.ca.issueSvid(DB);
    const updated = once(picked, 'updated');
    agent.update({ identities: [trust.web, ident(fresh, 'db')] });
    await updated;
    assert.ok(picked.getX509Svid().certificates[0]!.equals(fresh.certDer));

    picked.close();
    assert.throws(() => picked.getX509Svid(), (err) => (assertTyped(err, ErrorCode.X509_SOURCE, 'closed'), true));
  });

  test('never hands out an expired SVID', async () => {
    const stale = await trust.ca.issueSvid(WEB, { now: new Date(Date.now() - 3 * HOUR), ttlSeconds: 3600 });
    const agent = await agentFor(ident(stale));
    const source = await sourceOf(agent);
    assert.throws(() => source.getX509Svid(), (err) => {
      assertTyped(err, ErrorCode.X509_SOURCE, 'svid_expired');
      assert.match(err.message, /spiffe:\/\/example\.org\/web expired/);
      return true;
    });
  });

  test('create() rejects when the agent refuses (no identity)', async () => {
    const agent = await agentFor();
    await assert.rejects(X509Source.create({ socketPath: agent.socketPath }), (err) => (assertTyped(err, ErrorCode.X509_SOURCE, 'watch_ended'), true));
  });
});

describe('authorizers', () => {
  const id = parseSpiffeId('spiffe://example.org/ns/prod/sa/web');
  const refused = (fn: () => void, reason: string): void =>
    assert.throws(fn, (err) => (assertTyped(err, ErrorCode.UNAUTHORIZED, reason), true));
  test('accept what they name and refuse the rest with a reason', () => {
    authorizeAny()(id, []);
    authorizeID('spiffe://example.org/ns/prod/sa/web')(id, []);
    refused(() => authorizeID(WEB)(id, []), 'id_mismatch');
    authorizeOneOf(DB, 'spiffe://example.org/ns/prod/sa/web')(id, []);
    refused(() => authorizeOneOf(DB, WEB)(id, []), 'not_one_of');
    authorizeMemberOf('example.org')(id, []);
    authorizeMemberOf('spiffe://example.org')(id, []);
    refused(() => authorizeMemberOf('example.com')(id, []), 'not_member');
    authorizeMatchesPath(/^\/ns\/prod\//)(id, []);
    authorizeMatchesPath((p) => p.endsWith('/web'))(id, []);
    refused(() => authorizeMatchesPath(/^\/ns\/dev\//)(id, []), 'path_mismatch');
    assert.throws(() => authorizeID('spiffe://example.org/a/'), (err) => isSpiffeError(err, ErrorCode.SPIFFE_ID_INVALID));
  });
});

describe('mTLS over loopback', () => {
  let serverSource: X509Source;
  let clientSource: X509Source;
  let serverAgent: FakeAgent;
  let port: number;
  let received: string[];
  let server: tls.Server;

  before(async () => {
    serverAgent = await agentFor(trust.web);
    serverSource = await sourceOf(serverAgent);
    clientSource = await sourceOf(await agentFor(trust.db));
    ({ server, received } = echoServer(serverSource, serverSource, authorizeID(DB)));
    port = await listen(server);
  });

  test('an authorized client talks; both sides see the peer ID', async () => {
    const s = await connect(port, mtlsClientOptions(clientSource, clientSource, authorizeID(WEB)));
    assert.equal(await line(s), `hello ${DB}`);
    assert.equal(peerIdOf(s), WEB);
    s.write('ping\n');
    assert.equal(await line(s), 'ping');
    s.end();
  });

  test('a client with another ID is refused before the handler sees it (ERR_SPIFFE_UNAUTHORIZED id_mismatch)', async () => {
    const otherSource = await sourceOf(await agentFor(ident(await trust.ca.issueSvid('spiffe://example.org/other'))));
    const before = received.length;
    const rejected = once(server, 'spiffeRejected');
    const s = tls.connect({ ...mtlsClientOptions(otherSource, otherSource, authorizeID(WEB)), host: '127.0.0.1', port });
    sockets.push(s);
    let got = '';
    s.on('data', (d) => (got += d.toString()));
    s.on('error', () => {});
    s.on('secureConnect', () => s.write('secret\n'));
    const [err] = await rejected;
    assertTyped(err, ErrorCode.UNAUTHORIZED, 'id_mismatch');
    await once(s, 'close');
    assert.equal(got, '');
    assert.equal(received.length, before);
  });

  test('the client refuses a server its authorizer does not accept (typed, before sending)', async () => {
    const before = received.length;
    await assert.rejects(connect(port, mtlsClientOptions(clientSource, clientSource, authorizeID('spiffe://example.org/not-web'))), (err) => {
      assertTyped(err, ErrorCode.UNAUTHORIZED, 'id_mismatch');
      return true;
    });
    assert.equal(received.length, before);
  });

  test('rotation: new connections get the new SVID, a live one stays up', async () => {
    const live = await connect(port, mtlsClientOptions(clientSource, clientSource, authorizeID(WEB)));
    assert.equal(await line(live), `hello ${DB}`);
    const oldLeaf = live.getPeerX509Certificate()!.raw;
    const next = await trust.ca.issueSvid(WEB);
    const updated = once(serverSource, 'updated');
    serverAgent.update({ identities: [ident(next, 'web')] });
    await updated;
    const fresh = await connect(port, mtlsClientOptions(clientSource, clientSource, authorizeID(WEB)));
    assert.equal(await line(fresh), `hello ${DB}`);
    assert.ok(fresh.getPeerX509Certificate()!.raw.equals(next.certDer), 'new connection presents the new SVID');
    assert.ok(!oldLeaf.equals(next.certDer));
    live.write('still here\n');
    assert.equal(await line(live), 'still here', 'the connection made before the rotation still works');
    live.end();
    fresh.end();
  });

  describe('hostile clients are refused with a typed reason, before any application data', () => {
    async function attempt(svid: TestSvid | undefined): Promise<unknown> {
      const before = received.length;
      const rejected = once(server, 'spiffeRejected');
      const creds = svid === undefined ? {} : { key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey)), cert: svid.chain.map((c) => toPem('CERTIFICATE', c)).join('') };
      const s = tls.connect({ ...creds, host: '127.0.0.1', port, rejectUnauthorized: false });
      sockets.push(s);
      let got = '';
      s.on('data', (d) => (got += d.toString()));
      s.on('error', () => {});
      s.on('secureConnect', () => s.write('secret\n'));
      const [err] = await rejected;
      if (!s.closed) await once(s, 'close');
      assert.equal(got, '', 'the refused client received nothing');
      assert.equal(received.length, before, 'the handler saw nothing');
      return err;
    }

    test('a certificate from an untrusted trust domain: no_bundle', async () => {
      const evil = await TestCa.create({ trustDomain: 'evil.org' });
      assertTyped(await attempt(await evil.issueSvid('spiffe://evil.org/db')), ErrorCode.X509_SVID_UNTRUSTED, 'no_bundle');
    });
    test('our trust domain\'s ID signed by another CA: unknown_authority', async () => {
      const evil = await TestCa.create({ trustDomain: 'example.org' });
      assertTyped(await attempt(await evil.issueSvid(DB)), ErrorCode.X509_SVID_UNTRUSTED, 'unknown_authority');
    });
    test('a federated trust domain\'s valid SVID passes verification and meets the authorizer', async () => {
      assertTyped(await attempt(await trust.partner.issueSvid('spiffe://partner.org/db')), ErrorCode.UNAUTHORIZED, 'id_mismatch');
    });
    test('two URI SANs: multiple_uri_sans', async () => {
      assertTyped(await attempt(await trust.ca.evilLeaf('two_uri_sans', { id: DB })), ErrorCode.X509_SVID_INVALID, 'multiple_uri_sans');
    });
    test('a CA certificate as leaf: leaf_is_ca', async () => {
      assertTyped(await attempt(await trust.ca.evilLeaf('ca_leaf', { id: DB })), ErrorCode.X509_SVID_INVALID, 'leaf_is_ca');
    });
    test('an expired SVID: expired', async () => {
      assertTyped(await attempt(await trust.ca.evilLeaf('expired', { id: DB })), ErrorCode.X509_SVID_UNTRUSTED, 'expired');
    });
    test('no client certificate: no_peer_certificate', async () => {
      assertTyped(await attempt(undefined), ErrorCode.TLS_PEER, 'no_peer_certificate');
    });
  });

  test('a hostile server (two URI SANs under a trusted root) is refused by the client: multiple_uri_sans', async () => {
    const evil = await trust.ca.evilLeaf('two_uri_sans', { id: WEB });
    const hostile = tls.createServer({ key: toPem('PRIVATE KEY', evil.keyPkcs8), cert: toPem('CERTIFICATE', evil.certDer) }, (s) => s.end('hello\n'));
    const p = await listen(hostile);
    await assert.rejects(connect(p, tlsClientOptions(clientSource, authorizeAny())), (err) => (assertTyped(err, ErrorCode.X509_SVID_INVALID, 'multiple_uri_sans'), true));
  });

  test('server-authenticated TLS: createTlsServer and tlsClientOptions (no client certificate)', async () => {
    const ts = createTlsServer(serverSource, (socket) => socket.end('hi\n'));
    const tp = await listen(ts);
    const s = await connect(tp, tlsClientOptions(clientSource, authorizeID(WEB)));
    assert.equal(peerIdOf(s), WEB);
    assert.equal(await line(s), 'hi');
  });

  test('https: createMtlsHttpsServer and https.request with mtlsClientOptions; sessions are never resumed', async () => {
    const hs = createMtlsHttpsServer(serverSource, serverSource, authorizeMemberOf('example.org'), (req, res) => res.end(`you are ${peerIdOf(req)}`));
    const hp = await listen(hs);
    const opts = mtlsClientOptions(clientSource, clientSource, authorizeID(WEB));
    const get = (): Promise<{ body: string; reused: boolean }> =>
      new Promise((resolve, reject) => {
        const req = https.request({ ...opts, host: '127.0.0.1', port: hp, path: '/' }, (res) => {
          let b = '';
          const reused = (res.socket as tls.TLSSocket).isSessionReused();
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve({ body: b, reused }));
        });
        req.on('error', reject);
        req.end();
      });
    assert.deepEqual(await get(), { body: `you are ${DB}`, reused: false });
    // A second request through the same options (same agent): a full handshake again, so the
    // server is verified again.
    assert.deepEqual(await get(), { body: `you are ${DB}`, reused: false });
    (hs as https.Server).closeAllConnections();
  });
});

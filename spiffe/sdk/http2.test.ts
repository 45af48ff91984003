// HTTP/2 over mTLS with X509-SVIDs: createMtlsHttp2Server (clients verified and authorized before
// any session exists), connectMtlsHttp2 (servers verified before any HTTP/2 byte), http2PeerId,
// and SVID rotation on both sides. Identities from the Workload API test kit, real TLS on loopback.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import { TestCa, type TestSvid } from '../../test/support/testca.js';
import { createTestTrust, FakeAgent, type FakeIdentity, type TestTrust } from '../workloadapi/testkit.js';
import { authorizeID, connectMtlsHttp2, createMtlsHttp2Server, http2PeerId, X509Source, type Authorizer } from './index.js';

const WEB = 'spiffe://example.org/web';
const DB = 'spiffe://example.org/db';
const OTHER = 'spiffe://example.org/other';

let trust: TestTrust;
const agents: FakeAgent[] = [];
const sources: X509Source[] = [];
const servers: tls.Server[] = [];
const sessions: http2.ClientHttp2Session[] = [];

function ident(svid: TestSvid, hint = ''): FakeIdentity {
  return { id: svid.id, chain: svid.chain, keyPkcs8: svid.keyPkcs8, hint };
}

async function workload(svid: TestSvid): Promise<{ agent: FakeAgent; source: X509Source }> {
  const agent = await FakeAgent.start({ identities: [ident(svid)], ...trust.material });
  agents.push(agent);
  const source = await X509Source.create({ socketPath: agent.socketPath });
  sources.push(source);
  return { agent, source };
}

async function listen(server: tls.Server): Promise<number> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

function assertTyped(err: unknown, code: string, reason: string): asserts err is SpiffeError {
  assert.ok(isSpiffeError(err), `expected a SpiffeError ${code} ${reason}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.reason, reason, err.message);
}

function get(session: http2.ClientHttp2Session, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path });
    let body = '';
    let status = 0;
    req.setEncoding('utf8');
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: string) => (body += d));
    req.on('end', () => (status === 200 ? resolve(body) : reject(new Error(`no response (status ${status})`))));
    req.on('close', () => reject(new Error(`stream closed (rst ${req.rstCode})`)));
    req.on('error', reject);
    session.once('error', reject);
    req.end();
  });
}

async function connect(port: number, source: X509Source, authorizer: Authorizer): Promise<http2.ClientHttp2Session> {
  const s = await connectMtlsHttp2(`https://127.0.0.1:${port}`, source, source, authorizer);
  sessions.push(s);
  return s;
}

/** The server: answers each stream with the client's verified ID and the SHA-256 of its leaf. */
interface Served {
  port: number;
  server: http2.Http2SecureServer;
  streams: number;
  sessions: number;
  rejected: Error[];
}

async function serve(source: X509Source, authorizer: Authorizer): Promise<Served> {
  const server = createMtlsHttp2Server(source, source, authorizer);
  const s: Served = { port: 0, server, streams: 0, sessions: 0, rejected: [] };
  server.on('session', () => s.sessions++);
  server.on('stream', (stream) => {
    s.streams++;
    const leaf = (stream.session!.socket as tls.TLSSocket).getPeerX509Certificate()!;
    stream.respond({ ':status': 200 });
    stream.end(`${http2PeerId(stream)} ${leaf.fingerprint256}`);
  });
  server.on('spiffeRejected', (err: Error) => s.rejected.push(err));
  s.port = await listen(server);
  return s;
}

let web: { agent: FakeAgent; source: X509Source };
let db: { agent: FakeAgent; source: X509Source };

before(async () => {
  trust = await createTestTrust();
  web = await workload(trust.webSvid);
  db = await workload(await trust.ca.issueSvid(DB));
});

after(async () => {
  for (const s of sessions) s.destroy();
  for (const s of servers) s.close();
  for (const s of sources) s.close();
  for (const a of agents) await a.close();
});

describe('createMtlsHttp2Server', () => {
  test('an authorized client gets its streams served; the handler sees its ID; the client sees the server\'s', async () => {
    const srv = await serve(web.source, authorizeID(DB));
    const session = await connect(srv.port, db.source, authorizeID(WEB));
    assert.equal(http2PeerId(session), WEB);
    const [id, fp] = (await get(session)).split(' ');
    assert.equal(id, DB);
    assert.equal(fp, new (await import('node:crypto')).X509Certificate(db.source.getX509Svid().certificates[0]!).fingerprint256);
    assert.equal((await get(session, '/again')).split(' ')[0], DB, 'a second stream on the same session');
    assert.deepEqual(srv.rejected, []);
  });

  test('refused clients never get a session: another ID, another trust domain, no certificate', async () => {
    const srv = await serve(web.source, authorizeID(DB));
    const other = await workload(await trust.ca.issueSvid(OTHER));
    const session = await connect(srv.port, other.source, authorizeID(WEB));
    await assert.rejects(get(session));

    const evil = await TestCa.create({ trustDomain: 'evil.org' });
    const evilSvid = await evil.issueSvid('spiffe://evil.org/db');
    const raw = http2.connect(`https://127.0.0.1:${srv.port}`, {
      key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(evilSvid.privateKey)),
      cert: evilSvid.chain.map((c) => toPem('CERTIFICATE', c)).join(''),
      rejectUnauthorized: false,
    });
    raw.on('error', () => {});
    await assert.rejects(get(raw));
    const bare = http2.connect(`https://127.0.0.1:${srv.port}`, { rejectUnauthorized: false });
    bare.on('error', () => {});
    await assert.rejects(get(bare));

    assert.equal(srv.streams, 0, 'no stream handler ran');
    assert.equal(srv.sessions, 0, 'no HTTP/2 session was made');
    assert.equal(srv.rejected.length, 3);
    assertTyped(srv.rejected[0], ErrorCode.UNAUTHORIZED, 'id_mismatch');
    assert.match(srv.rejected[0]!.message, /example\.org\/other/);
    assertTyped(srv.rejected[1], ErrorCode.X509_SVID_UNTRUSTED, 'no_bundle');
    assertTyped(srv.rejected[2], ErrorCode.TLS_PEER, 'no_peer_certificate');
  });

  test('rotation: new sessions get the new server SVID, an open session keeps working', async () => {
    const srvAgent = await workload(await trust.ca.issueSvid(WEB));
    const srv = await serve(srvAgent.source, authorizeID(DB));
    const seen: Buffer[] = [];
    const recording: Authorizer = (id, chain) => {
      authorizeID(WEB)(id, chain);
      seen.push(chain[0]!);
    };
    const live = await connect(srv.port, db.source, recording);
    assert.equal((await get(live)).split(' ')[0], DB);
    const next = await trust.ca.issueSvid(WEB);
    const updated = once(srvAgent.source, 'updated');
    srvAgent.agent.update({ identities: [ident(next)] });
    await updated;
    const fresh = await connect(srv.port, db.source, recording);
    assert.equal((await get(fresh)).split(' ')[0], DB);
    assert.equal(seen.length, 2);
    assert.ok(!seen[0]!.equals(next.certDer), 'the first session saw the old SVID');
    assert.ok(seen[1]!.equals(next.certDer), 'the new session sees the new SVID');
    assert.equal((await get(live, '/after')).split(' ')[0], DB, 'the session made before the rotation still works');
  });

  test('rotation of the client SVID: the next session presents the new one', async () => {
    const cli = await workload(await trust.ca.issueSvid(DB));
    const srv = await serve(web.source, authorizeID(DB));
    const live = await connect(srv.port, cli.source, authorizeID(WEB));
    const before = (await get(live)).split(' ')[1];
    const next = await trust.ca.issueSvid(DB);
    const updated = once(cli.source, 'updated');
    cli.agent.update({ identities: [ident(next)] });
    await updated;
    const fresh = await connect(srv.port, cli.source, authorizeID(WEB));
    const { X509Certificate } = await import('node:crypto');
    assert.equal((await get(fresh)).split(' ')[1], new X509Certificate(next.certDer).fingerprint256);
    assert.notEqual(before, new X509Certificate(next.certDer).fingerprint256);
    assert.equal((await get(live)).split(' ')[1], before, 'the open session keeps its client certificate');
  });
});

/** A TLS server speaking ALPN h2 with `svid` that records any application data it receives. */
async function recorder(svid: TestSvid, alpn = true): Promise<{ port: number; received: Buffer[]; closed: Promise<unknown>[] }> {
  const rec = { port: 0, received: [] as Buffer[], closed: [] as Promise<unknown>[] };
  const server = tls.createServer(
    {
      key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey)),
      cert: svid.chain.map((c) => toPem('CERTIFICATE', c)).join(''),
      requestCert: true,
      rejectUnauthorized: false,
      ...(alpn ? { ALPNProtocols: ['h2'] } : {}),
    },
    (socket) => {
      socket.on('data', (d: Buffer) => rec.received.push(d));
      socket.on('error', () => {});
    },
  );
  server.on('connection', (raw) => rec.closed.push(once(raw, 'close')));
  server.on('tlsClientError', () => {});
  rec.port = await listen(server);
  return rec;
}

describe('connectMtlsHttp2', () => {
  const cases: Array<{ name: string; make: () => Promise<TestSvid>; code: string; reason: string }> = [
    { name: 'a valid SVID with the wrong ID', make: () => trust.ca.issueSvid(OTHER), code: ErrorCode.UNAUTHORIZED, reason: 'id_mismatch' },
    { name: 'another trust domain', make: async () => (await TestCa.create({ trustDomain: 'evil.org' })).issueSvid('spiffe://evil.org/web'), code: ErrorCode.X509_SVID_UNTRUSTED, reason: 'no_bundle' },
    { name: 'our ID from a foreign CA', make: async () => (await TestCa.create({ trustDomain: 'example.org' })).issueSvid(WEB), code: ErrorCode.X509_SVID_UNTRUSTED, reason: 'unknown_authority' },
  ];
  for (const c of cases) {
    test(`a hostile server (${c.name}) is refused with ${c.code} ${c.reason}; it receives no HTTP/2 byte`, async () => {
      const rec = await recorder(await c.make());
      await assert.rejects(connectMtlsHttp2(`127.0.0.1:${rec.port}`, db.source, db.source, authorizeID(WEB)), (err) => (assertTyped(err, c.code, c.reason), true));
      await Promise.all(rec.closed);
      assert.deepEqual(rec.received, [], 'not even the HTTP/2 preface was sent');
    });
  }

  test('a server without ALPN h2: ERR_TLS_PEER no_h2, nothing sent', async () => {
    const rec = await recorder(trust.webSvid, false);
    await assert.rejects(connectMtlsHttp2(`https://127.0.0.1:${rec.port}`, db.source, db.source, authorizeID(WEB)), (err) => (assertTyped(err, ErrorCode.TLS_PEER, 'no_h2'), true));
    await Promise.all(rec.closed);
    assert.deepEqual(rec.received, []);
  });

  test('http2PeerId refuses a session it did not verify', async () => {
    const rec = await recorder(trust.webSvid);
    const plain = http2.connect(`https://127.0.0.1:${rec.port}`, { rejectUnauthorized: false });
    plain.on('error', () => {});
    sessions.push(plain);
    await once(plain, 'connect');
    assert.throws(() => http2PeerId(plain), (err) => (assertTyped(err, ErrorCode.TLS_PEER, 'not_verified'), true));
  });
});

// gRPC (@grpc/grpc-js) with X509-SVIDs: mtlsServerCredentials (clients verified and authorized
// before any handler runs, refusals as UNAUTHENTICATED / PERMISSION_DENIED naming the reason),
// grpcPeerId, mtlsClientCredentials / tlsClientCredentials (servers authorized by SPIFFE ID, never
// by hostname), and SVID rotation on both sides. The service is the generated gRPC health service;
// identities come from the Workload API test kit; real TLS on loopback.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import {
  Server,
  ServerCredentials,
  credentials as grpcCredentials,
  Metadata,
  status as Status,
  type ChannelCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import { TestCa, type TestSvid } from '../../test/support/testca.js';
import { createTestTrust, FakeAgent, type FakeIdentity, type TestTrust } from '../workloadapi/testkit.js';
import {
  HealthCheckResponse_ServingStatus,
  HealthClient,
  HealthService,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from '../../proto/gen/grpc/health/v1/health.js';
import {
  authorizeID,
  grpcPeerId,
  mtlsClientCredentials,
  mtlsServerCredentials,
  tlsClientCredentials,
  tlsServerCredentials,
  X509Source,
  type Authorizer,
} from './index.js';

const WEB = 'spiffe://example.org/web';
const DB = 'spiffe://example.org/db';
const OTHER = 'spiffe://example.org/other';
const SERVING = HealthCheckResponse_ServingStatus.SERVING;
/** Own connections per client, so a new client makes a new connection (and presents the current SVID). */
const OWN_CONNECTION = { 'grpc.use_local_subchannel_pool': 1 };

let trust: TestTrust;
const agents: FakeAgent[] = [];
const sources: X509Source[] = [];
const servers: Server[] = [];
const clients: HealthClient[] = [];

function ident(svid: TestSvid): FakeIdentity {
  return { id: svid.id, chain: svid.chain, keyPkcs8: svid.keyPkcs8, hint: '' };
}

async function workload(svid: TestSvid): Promise<{ agent: FakeAgent; source: X509Source }> {
  const agent = await FakeAgent.start({ identities: [ident(svid)], ...trust.material });
  agents.push(agent);
  const source = await X509Source.create({ socketPath: agent.socketPath });
  sources.push(source);
  return { agent, source };
}

const fingerprint = (der: Buffer): string => new X509Certificate(der).fingerprint256;

/** What the health service saw: each call's verified client ID and client leaf fingerprint. */
interface Served {
  port: number;
  calls: Array<{ id: string; leaf: string }>;
  watches: number;
  rejected: Array<{ err: Error; code: number; details: string }>;
}

async function serve(creds: ServerCredentials, served: Served = { port: 0, calls: [], watches: 0, rejected: [] }): Promise<Served> {
  const server = new Server();
  server.addService(HealthService, {
    check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: sendUnaryData<HealthCheckResponse>) => {
      const leaf = call.getAuthContext().sslPeerCertificate;
      served.calls.push({ id: grpcPeerId(call), leaf: leaf === undefined ? '' : fingerprint(leaf.raw) });
      cb(null, { status: SERVING });
    },
    watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
      served.watches++;
      call.write({ status: SERVING });
      call.end();
    },
  });
  servers.push(server);
  served.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, port) => (err ? reject(err) : resolve(port))));
  return served;
}

function client(port: number, creds: ChannelCredentials): HealthClient {
  const c = new HealthClient(`127.0.0.1:${port}`, creds, OWN_CONNECTION);
  clients.push(c);
  return c;
}

function check(c: HealthClient): Promise<HealthCheckResponse> {
  return new Promise((resolve, reject) => c.check({ service: '' }, new Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res))));
}

async function watchStatus(c: HealthClient): Promise<number> {
  const stream = c.watch({ service: '' }, { deadline: Date.now() + 10_000 });
  stream.on('data', () => {});
  stream.on('error', () => {}); // a non-OK status is also an 'error'; the 'status' event has it
  return new Promise((resolve) => stream.on('status', (st: { code: number }) => resolve(st.code)));
}

function assertStatus(err: unknown, code: Status, details: RegExp): void {
  const e = err as ServiceError;
  assert.equal(e.code, code, `status ${e.code} ${e.details}`);
  assert.match(e.details, details);
}

function staticSvid(svid: TestSvid): { getX509Svid(): { id: typeof svid.id; certificates: Buffer[]; privateKey: typeof svid.privateKey } } {
  return { getX509Svid: () => ({ id: svid.id, certificates: svid.chain, privateKey: svid.privateKey }) };
}

let web: { agent: FakeAgent; source: X509Source };
let db: { agent: FakeAgent; source: X509Source };

before(async () => {
  trust = await createTestTrust();
  web = await workload(trust.webSvid);
  db = await workload(await trust.ca.issueSvid(DB));
});

after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) s.forceShutdown();
  for (const s of sources) s.close();
  for (const a of agents) await a.close();
});

/** A fresh record, and mtlsServerCredentials options that log its refusals into it. */
function recorded(): { served: Served; options: { onRejected: (err: Error, st: { code: number; details: string }) => void } } {
  const served: Served = { port: 0, calls: [], watches: 0, rejected: [] };
  return { served, options: { onRejected: (err, st) => void served.rejected.push({ err, code: st.code, details: st.details }) } };
}

describe('mtlsServerCredentials', () => {
  test('an authorized client is served; grpcPeerId and the auth context name it', async () => {
    const rec = recorded();
    const srv = await serve(mtlsServerCredentials(web.source, web.source, authorizeID(DB), rec.options), rec.served);
    const c = client(srv.port, mtlsClientCredentials(db.source, db.source, authorizeID(WEB)));
    assert.equal((await check(c)).status, SERVING);
    assert.equal((await check(c)).status, SERVING);
    assert.equal(await watchStatus(c), Status.OK);
    assert.deepEqual(
      srv.calls.map((x) => x.id),
      [DB, DB],
    );
    assert.equal(srv.calls[0]!.leaf, fingerprint(db.source.getX509Svid().certificates[0]!));
    assert.equal(srv.watches, 1);
    assert.deepEqual(srv.rejected, []);
  });

  test('refused clients: PERMISSION_DENIED for an unauthorized ID, UNAUTHENTICATED for an untrusted or missing certificate; no handler runs', async () => {
    const rec = recorded();
    const srv = await serve(mtlsServerCredentials(web.source, web.source, authorizeID(DB), rec.options), rec.served);

    const other = await workload(await trust.ca.issueSvid(OTHER));
    const c1 = client(srv.port, mtlsClientCredentials(other.source, other.source, authorizeID(WEB)));
    await assert.rejects(check(c1), (err) => (assertStatus(err, Status.PERMISSION_DENIED, /^ERR_SPIFFE_UNAUTHORIZED id_mismatch: .*example\.org\/other/), true));
    assert.equal(await watchStatus(c1), Status.PERMISSION_DENIED, 'a streaming call is refused the same way');

    const evil = await (await TestCa.create({ trustDomain: 'evil.org' })).issueSvid('spiffe://evil.org/db');
    const c2 = client(srv.port, mtlsClientCredentials(staticSvid(evil), db.source, authorizeID(WEB)));
    await assert.rejects(check(c2), (err) => (assertStatus(err, Status.UNAUTHENTICATED, /^ERR_X509_SVID_UNTRUSTED no_bundle: /), true));

    const forged = await (await TestCa.create({ trustDomain: 'example.org' })).issueSvid(DB);
    const c3 = client(srv.port, mtlsClientCredentials(staticSvid(forged), db.source, authorizeID(WEB)));
    await assert.rejects(check(c3), (err) => (assertStatus(err, Status.UNAUTHENTICATED, /^ERR_X509_SVID_UNTRUSTED unknown_authority: /), true));

    const c4 = client(srv.port, tlsClientCredentials(db.source, authorizeID(WEB)));
    await assert.rejects(check(c4), (err) => (assertStatus(err, Status.UNAUTHENTICATED, /^ERR_TLS_PEER no_peer_certificate: /), true));

    assert.deepEqual(srv.calls, [], 'no check handler ran');
    assert.equal(srv.watches, 0, 'no watch handler ran');
    assert.deepEqual(
      srv.rejected.map((r) => [r.code, isSpiffeError(r.err) ? `${r.err.code} ${r.err.reason}` : String(r.err)]),
      [
        [Status.PERMISSION_DENIED, `${ErrorCode.UNAUTHORIZED} id_mismatch`],
        [Status.PERMISSION_DENIED, `${ErrorCode.UNAUTHORIZED} id_mismatch`],
        [Status.UNAUTHENTICATED, `${ErrorCode.X509_SVID_UNTRUSTED} no_bundle`],
        [Status.UNAUTHENTICATED, `${ErrorCode.X509_SVID_UNTRUSTED} unknown_authority`],
        [Status.UNAUTHENTICATED, `${ErrorCode.TLS_PEER} no_peer_certificate`],
      ],
    );
  });

  test('grpcPeerId refuses a call that the SPIFFE credentials did not verify', async () => {
    let seen: unknown;
    const server = new Server();
    server.addService(HealthService, {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: sendUnaryData<HealthCheckResponse>) => {
        try {
          grpcPeerId(call);
        } catch (err) {
          seen = err;
        }
        cb(null, { status: SERVING });
      },
      watch: () => {},
    });
    servers.push(server);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    assert.equal((await check(client(port, grpcCredentials.createInsecure()))).status, SERVING);
    assert.ok(isSpiffeError(seen) && seen.code === ErrorCode.TLS_PEER && seen.reason === 'not_verified', String(seen));
  });
});

describe('mtlsClientCredentials', () => {
  const hostile: Array<{ name: string; make: () => Promise<TestSvid>; details: RegExp }> = [
    { name: 'a valid SVID with the wrong ID', make: () => trust.ca.issueSvid(OTHER), details: /ERR_SPIFFE_UNAUTHORIZED id_mismatch: .*example\.org\/other/ },
    { name: 'another trust domain', make: async () => (await TestCa.create({ trustDomain: 'evil.org' })).issueSvid('spiffe://evil.org/web'), details: /ERR_X509_SVID_UNTRUSTED no_bundle: / },
    { name: 'our ID from a foreign CA', make: async () => (await TestCa.create({ trustDomain: 'example.org' })).issueSvid(WEB), details: /ERR_X509_SVID_UNTRUSTED unknown_authority: / },
  ];
  for (const h of hostile) {
    test(`a hostile server (${h.name}) is refused: UNAVAILABLE naming the reason, its handler never runs`, async () => {
      const svid = await h.make();
      // A server that accepts any client, presenting `svid` (ours would be as good: the client decides).
      const srv = await serve(
        ServerCredentials.createSsl(null, [{ private_key: Buffer.from(toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey))), cert_chain: Buffer.from(svid.chain.map((c) => toPem('CERTIFICATE', c)).join('')) }], false),
      );
      for (const creds of [mtlsClientCredentials(db.source, db.source, authorizeID(WEB)), tlsClientCredentials(db.source, authorizeID(WEB))]) {
        await assert.rejects(check(client(srv.port, creds)), (err) => (assertStatus(err, Status.UNAVAILABLE, h.details), true));
      }
      assert.equal(srv.calls.length, 0);
    });
  }

  test('tlsServerCredentials + tlsClientCredentials: the server is verified, no client certificate, so no client ID', async () => {
    let seen: unknown;
    const server = new Server();
    server.addService(HealthService, {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: sendUnaryData<HealthCheckResponse>) => {
        try {
          grpcPeerId(call);
        } catch (err) {
          seen = err;
        }
        cb(null, { status: SERVING });
      },
      watch: () => {},
    });
    servers.push(server);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', tlsServerCredentials(web.source), (e, p) => (e ? reject(e) : resolve(p))));
    assert.equal((await check(client(port, tlsClientCredentials(db.source, authorizeID(WEB))))).status, SERVING);
    assert.ok(isSpiffeError(seen) && seen.reason === 'not_verified', String(seen));
    await assert.rejects(check(client(port, tlsClientCredentials(db.source, authorizeID(DB)))), (err) => (assertStatus(err, Status.UNAVAILABLE, /ERR_SPIFFE_UNAUTHORIZED id_mismatch: /), true));
  });

  test('the server is authorized by its SPIFFE ID, not its hostname: a target name that is not in the certificate is fine', async () => {
    const srv = await serve(mtlsServerCredentials(web.source, web.source, authorizeID(DB)));
    const c = new HealthClient(`localhost:${srv.port}`, mtlsClientCredentials(db.source, db.source, authorizeID(WEB)), { ...OWN_CONNECTION, 'grpc.ssl_target_name_override': 'not-a-name-in-the-cert.example' });
    clients.push(c);
    assert.equal((await check(c)).status, SERVING);
  });
});

describe('rotation', () => {
  test('server SVID: new channels see the new one, an open channel keeps working', async () => {
    const srvW = await workload(await trust.ca.issueSvid(WEB));
    const srv = await serve(mtlsServerCredentials(srvW.source, srvW.source, authorizeID(DB)));
    const seen: Buffer[] = [];
    const recording: Authorizer = (id, chain) => {
      authorizeID(WEB)(id, chain);
      seen.push(chain[0]!);
    };
    const live = client(srv.port, mtlsClientCredentials(db.source, db.source, recording));
    assert.equal((await check(live)).status, SERVING);
    const next = await trust.ca.issueSvid(WEB);
    const updated = once(srvW.source, 'updated');
    srvW.agent.update({ identities: [ident(next)] });
    await updated;
    const fresh = client(srv.port, mtlsClientCredentials(db.source, db.source, recording));
    assert.equal((await check(fresh)).status, SERVING);
    assert.equal(seen.length, 2, 'one handshake per channel');
    assert.ok(!seen[0]!.equals(next.certDer));
    assert.ok(seen[1]!.equals(next.certDer), 'the new channel got the new server SVID');
    assert.equal((await check(live)).status, SERVING, 'the channel opened before the rotation still works');
    assert.equal(seen.length, 2, 'on its old connection');
  });

  test('client SVID: a new channel presents the new one, an open channel keeps its own', async () => {
    const cli = await workload(await trust.ca.issueSvid(DB));
    const srv = await serve(mtlsServerCredentials(web.source, web.source, authorizeID(DB)));
    const creds = mtlsClientCredentials(cli.source, cli.source, authorizeID(WEB));
    const live = client(srv.port, creds);
    await check(live);
    const oldLeaf = srv.calls[0]!.leaf;
    const next = await trust.ca.issueSvid(DB);
    const updated = once(cli.source, 'updated');
    cli.agent.update({ identities: [ident(next)] });
    await updated;
    await check(client(srv.port, creds));
    await check(live);
    assert.deepEqual(
      srv.calls.map((c) => c.leaf),
      [oldLeaf, fingerprint(next.certDer), oldLeaf],
    );
    assert.notEqual(oldLeaf, fingerprint(next.certDer));
  });
});

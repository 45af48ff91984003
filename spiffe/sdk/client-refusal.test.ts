// Client-side refusals of hostile servers: every refusal is a typed SpiffeError (the same code
// and reason a server gives for the same certificate), through https.request with
// mtlsClientOptions and tlsClientOptions, and through tlsconfig.dial / dialMtls / dialTls; and
// a refused server receives no application data. Real TLS over loopback, identities from the
// Workload API test kit.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as https from 'node:https';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import { TestCa, type TestSvid } from '../../test/support/testca.js';
import { createTestTrust, FakeAgent, type TestTrust } from '../workloadapi/testkit.js';
import { authorizeAny, authorizeID, mtlsClientOptions, peerIdOf, tlsClientOptions, tlsconfig, X509Source, type Authorizer } from './index.js';

const WEB = 'spiffe://example.org/web';
const OK_RESPONSE = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok';

let trust: TestTrust;
let agent: FakeAgent;
let source: X509Source;
const servers: net.Server[] = [];

function assertTyped(err: unknown, code: string, reason: string): asserts err is SpiffeError {
  assert.ok(isSpiffeError(err), `expected a SpiffeError ${code} ${reason}, got ${String((err as { code?: string }).code ?? '')} ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.reason, reason, err.message);
}

/**
 * A TLS server presenting `svid` (asking for a client certificate, judging none) that records
 * every byte of application data it receives and answers any with an HTTP response.
 * `settled()` resolves once every TCP connection it accepted has closed.
 */
interface Recorder {
  port: number;
  received: Buffer[];
  connections: number;
  settled(): Promise<void>;
}

async function hostileServer(svid: TestSvid): Promise<Recorder> {
  const closes: Promise<unknown>[] = [];
  const rec: Recorder = {
    port: 0,
    received: [],
    connections: 0,
    settled: async () => {
      await Promise.all(closes);
    },
  };
  const server = tls.createServer(
    {
      key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey)),
      cert: svid.chain.map((c) => toPem('CERTIFICATE', c)).join(''),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (socket) => {
      socket.on('data', (d: Buffer) => {
        rec.received.push(d);
        socket.end(OK_RESPONSE);
      });
      socket.on('error', () => {});
    },
  );
  server.on('connection', (raw: net.Socket) => {
    rec.connections++;
    closes.push(once(raw, 'close'));
  });
  server.on('tlsClientError', () => {});
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  rec.port = (server.address() as AddressInfo).port;
  return rec;
}

/** https.request GET / through `opts`; resolves with the body and the verified server ID. */
function httpsGet(port: number, opts: https.RequestOptions): Promise<{ body: string; peer: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ ...opts, host: '127.0.0.1', port, path: '/secret-path', method: 'POST', headers: { 'x-token': 'request-secret' } }, (res) => {
      let body = '';
      const peer = peerIdOf(res.socket as tls.TLSSocket);
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ body, peer }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end('request-body-secret');
  });
}

/** Reads until the server closes. */
async function readAll(s: tls.TLSSocket): Promise<string> {
  let out = '';
  s.on('data', (d: Buffer) => (out += d.toString()));
  await once(s, 'end');
  return out;
}

type Path = { name: string; connect(port: number, authorizer: Authorizer): Promise<string> };

/** The three client paths; each sends application data only through what the library hands it. */
function paths(): Path[] {
  return [
    {
      name: 'https.request + mtlsClientOptions',
      connect: async (port, authorizer) => {
        const r = await httpsGet(port, mtlsClientOptions(source, source, authorizer));
        return `${r.peer} ${r.body}`;
      },
    },
    {
      name: 'https.request + tlsClientOptions',
      connect: async (port, authorizer) => {
        const r = await httpsGet(port, tlsClientOptions(source, authorizer));
        return `${r.peer} ${r.body}`;
      },
    },
    {
      name: 'tlsconfig.dialMtls',
      connect: async (port, authorizer) => {
        const s = await tlsconfig.dialMtls({ host: '127.0.0.1', port }, source, source, authorizer);
        s.write('dial-secret');
        return `${peerIdOf(s)} ${(await readAll(s)).split('\r\n\r\n')[1]}`;
      },
    },
    {
      name: 'tlsconfig.dial (TLS, no client certificate)',
      connect: async (port, authorizer) => {
        const s = await tlsconfig.dial(`127.0.0.1:${port}`, undefined, source, authorizer);
        s.write('dial-secret');
        return `${peerIdOf(s)} ${(await readAll(s)).split('\r\n\r\n')[1]}`;
      },
    },
  ];
}

before(async () => {
  trust = await createTestTrust();
  agent = await FakeAgent.start({ identities: [trust.db], ...trust.material });
  source = await X509Source.create({ socketPath: agent.socketPath });
});

after(async () => {
  for (const s of servers) s.close();
  source?.close();
  await agent?.close();
});

describe('the client refuses hostile servers with typed reasons, before sending anything', () => {
  test('control: a server with a valid SVID the authorizer accepts gets the data through every path', async () => {
    const good = await hostileServer(await trust.ca.issueSvid(WEB));
    for (const p of paths()) assert.equal(await p.connect(good.port, authorizeID(WEB)), `${WEB} ok`, p.name);
    await good.settled();
    const got = Buffer.concat(good.received).toString();
    assert.match(got, /POST \/secret-path/, 'the recorder sees request bytes when they are sent');
    assert.match(got, /request-body-secret/);
    assert.match(got, /dial-secret/);
  });

  const cases: Array<{ name: string; make: () => Promise<TestSvid>; authorizer?: () => Authorizer; code: string; reason: string }> = [
    { name: 'another trust domain', make: async () => (await TestCa.create({ trustDomain: 'evil.org' })).issueSvid('spiffe://evil.org/web'), code: ErrorCode.X509_SVID_UNTRUSTED, reason: 'no_bundle' },
    { name: 'our trust domain\'s ID from a foreign CA', make: async () => (await TestCa.create({ trustDomain: 'example.org' })).issueSvid(WEB), code: ErrorCode.X509_SVID_UNTRUSTED, reason: 'unknown_authority' },
    { name: 'two URI SANs', make: () => trust.ca.evilLeaf('two_uri_sans', { id: WEB }), code: ErrorCode.X509_SVID_INVALID, reason: 'multiple_uri_sans' },
    { name: 'a CA certificate as leaf', make: () => trust.ca.evilLeaf('ca_leaf', { id: WEB }), code: ErrorCode.X509_SVID_INVALID, reason: 'leaf_is_ca' },
    { name: 'an expired SVID', make: () => trust.ca.evilLeaf('expired', { id: WEB }), code: ErrorCode.X509_SVID_UNTRUSTED, reason: 'expired' },
    { name: 'a valid SVID with the wrong ID', make: () => trust.ca.issueSvid('spiffe://example.org/not-web'), authorizer: () => authorizeID(WEB), code: ErrorCode.UNAUTHORIZED, reason: 'id_mismatch' },
  ];

  for (const c of cases) {
    test(`${c.name}: ${c.code} ${c.reason} through every path; the server receives no application data`, async () => {
      const hostile = await hostileServer(await c.make());
      for (const p of paths()) {
        await assert.rejects(p.connect(hostile.port, (c.authorizer ?? authorizeAny)()), (err) => (assertTyped(err, c.code, c.reason), true), p.name);
      }
      await hostile.settled();
      assert.equal(hostile.connections, paths().length, 'every path reached the server');
      assert.deepEqual(hostile.received, [], 'the refused server received no application data');
    });
  }

  test('plain tls.connect with the options: refused too, typed after OpenSSL accepts the chain, Node\'s code when it cannot build one', async () => {
    for (const c of cases) {
      const hostile = await hostileServer(await c.make());
      const s = tls.connect({ ...mtlsClientOptions(source, source, (c.authorizer ?? authorizeAny)()), host: '127.0.0.1', port: hostile.port });
      s.on('secureConnect', () => s.write('plain-secret'));
      const [err] = (await once(s, 'error')) as [Error & { code?: string }];
      if (['no_bundle', 'unknown_authority', 'expired'].includes(c.reason)) {
        assert.ok(!isSpiffeError(err), c.name);
        assert.match(String(err.code), /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|CERT_HAS_EXPIRED)$/, c.name);
      } else {
        assertTyped(err, c.code, c.reason);
      }
      await hostile.settled();
      assert.deepEqual(hostile.received, [], `${c.name}: no application data`);
    }
  });
});

describe('dial', () => {
  test('resolves only with a verified socket; peerIdOf names the server; address forms', async () => {
    const good = await hostileServer(await trust.ca.issueSvid(WEB));
    const s = await tlsconfig.dial(`127.0.0.1:${good.port}`, source, source, authorizeID(WEB));
    assert.equal(peerIdOf(s), WEB);
    assert.equal(s.authorized, false, 'OpenSSL\'s verdict is not what accepted it');
    s.write('x');
    assert.match(await readAll(s), /200 OK/);
    await assert.rejects(tlsconfig.dial('127.0.0.1', source, source, authorizeAny()), TypeError);
    await assert.rejects(tlsconfig.dial('127.0.0.1:0', source, source, authorizeAny()), TypeError);
  });

  test('a server that never answers the handshake: ERR_TLS_PEER handshake_timeout; an abort signal rejects with its reason', async () => {
    const silent = net.createServer((s) => s.on('error', () => {}));
    const held: net.Socket[] = [];
    silent.on('connection', (s) => held.push(s));
    servers.push(silent);
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as AddressInfo).port;
    await assert.rejects(tlsconfig.dialTls({ host: '127.0.0.1', port }, source, authorizeAny(), { timeoutMs: 200 }), (err) => (assertTyped(err, ErrorCode.TLS_PEER, 'handshake_timeout'), true));
    const ac = new AbortController();
    const p = tlsconfig.dialTls({ host: '127.0.0.1', port }, source, authorizeAny(), { signal: ac.signal });
    ac.abort(new Error('stop'));
    await assert.rejects(p, /stop/);
    for (const s of held) s.destroy();
  });

  test('a connection refused is Node\'s error, not a SPIFFE refusal', async () => {
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, 'close');
    await assert.rejects(tlsconfig.dialMtls({ host: '127.0.0.1', port }, source, source, authorizeAny()), (err: Error & { code?: string }) => err.code === 'ECONNREFUSED');
  });
});

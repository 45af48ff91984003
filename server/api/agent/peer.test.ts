// peerCertificateDer against a real grpc-js server over mutual TLS: with the pinned grpc-js the
// fast path (the call's TLSSocket) is taken, for unary and server-streaming calls, through an
// interceptor chain; it returns exactly what getAuthContext() returns, and nothing when the
// client presented no certificate or one the handshake did not verify.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { TLSSocket } from 'node:tls';
import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  Server,
  experimental,
  ServerInterceptingCall,
  type ServerInterceptor,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { certificatesToPem, toPem } from '../../../spiffe/pem.js';
import { TestCa, privateKeyPem } from '../../../test/support/testca.js';
import { peerCertificateDer, tlsSocketOf, type AuthContextCall } from './peer.js';

const id = (b: Buffer): Buffer => b;
const SERVICE: ServiceDefinition = {
  unary: { path: '/t.T/Unary', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
  stream: { path: '/t.T/Stream', requestStream: false, responseStream: true, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
};

interface Seen {
  fast: boolean;
  der: Buffer | undefined;
  viaAuthContext: Buffer | undefined;
}

let server: Server;
let port: number;
let ca: TestCa;
let serverSvid: Awaited<ReturnType<TestCa['issueSvid']>>;
const seen: Seen[] = [];

const look = (call: AuthContextCall): void => {
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  seen.push({ fast: tlsSocketOf(call) instanceof TLSSocket, der: peerCertificateDer(call), viaAuthContext: raw });
};

before(async () => {
  ca = await TestCa.create({ trustDomain: 'example.org' });
  serverSvid = await ca.issueSvid('spiffe://example.org/spire/server');
  // A pass-through interceptor, as the metrics one: the stream is one call object deeper.
  const passThrough: ServerInterceptor = (_methodDescriptor, call) => new ServerInterceptingCall(call);
  server = new Server({ interceptors: [passThrough, passThrough] });
  server.addService(SERVICE, {
    unary: (call: AuthContextCall, cb: (e: null, r: Buffer) => void) => {
      look(call);
      cb(null, Buffer.from('ok'));
    },
    stream: (call: AuthContextCall & { write(b: Buffer): void; end(): void }) => {
      look(call);
      call.write(Buffer.from('ok'));
      call.end();
    },
  });
  // As the agent API listener (server.ts): client certificates requested, verified against
  // the bundle, not required.
  const provider: experimental.CertificateProvider = {
    addCaCertificateListener: (l) => queueMicrotask(() => l({ caCertificate: Buffer.from(toPem('CERTIFICATE', ca.rootDer)) })),
    removeCaCertificateListener: () => undefined,
    addIdentityCertificateListener: (l) =>
      queueMicrotask(() => l({ certificate: Buffer.from(certificatesToPem(serverSvid.chain)), privateKey: Buffer.from(privateKeyPem(serverSvid.privateKey)) })),
    removeIdentityCertificateListener: () => undefined,
  };
  const creds = experimental.createCertificateProviderServerCredentials(provider, provider, false);
  port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
});

after(() => {
  server?.forceShutdown();
});

/** Two unary calls on one raw HTTP/2 connection with TLS at most `maxVersion`. */
async function twoCallsOneConnection(client: { key: string; chain: Buffer[] }, maxVersion: 'TLSv1.2' | 'TLSv1.3'): Promise<Seen[]> {
  seen.length = 0;
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    ca: toPem('CERTIFICATE', ca.rootDer),
    cert: certificatesToPem(client.chain),
    key: client.key,
    maxVersion,
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => undefined);
  try {
    for (let i = 0; i < 2; i++) {
      await new Promise<void>((ok, fail) => {
        const req = session.request({ ':method': 'POST', ':path': '/t.T/Unary', 'content-type': 'application/grpc', te: 'trailers' });
        req.on('trailers', () => ok());
        req.on('error', fail);
        req.on('data', () => undefined);
        req.end(Buffer.from([0, 0, 0, 0, 1, 0x78]));
      });
    }
  } finally {
    session.close();
  }
  return [...seen];
}

async function callBoth(client: { key: string; chain: Buffer[] } | undefined): Promise<Seen[]> {
  seen.length = 0;
  const creds = credentials.createSsl(
    Buffer.from(toPem('CERTIFICATE', ca.rootDer)),
    client ? Buffer.from(client.key) : null,
    client ? Buffer.from(certificatesToPem(client.chain)) : null,
    { checkServerIdentity: () => undefined },
  );
  const Client = makeGenericClientConstructor(SERVICE, 'T');
  const c = new Client(`127.0.0.1:${port}`, creds) as unknown as {
    unary(r: Buffer, m: Metadata, cb: (e: Error | null) => void): void;
    stream(r: Buffer): NodeJS.EventEmitter;
    close(): void;
  };
  try {
    await new Promise<void>((ok, fail) => c.unary(Buffer.from('x'), new Metadata(), (e) => (e ? fail(e) : ok())));
    await new Promise<void>((ok, fail) => {
      const s = c.stream(Buffer.from('x'));
      s.on('data', () => undefined);
      s.on('end', ok);
      s.on('error', fail);
    });
  } finally {
    c.close();
  }
  return [...seen];
}

test('a verified client certificate: the fast path gives the same DER as getAuthContext, unary and streaming', async () => {
  const agent = await ca.issueSvid('spiffe://example.org/spire/agent/join_token/t');
  const got = await callBoth({ key: privateKeyPem(agent.privateKey), chain: agent.chain });
  assert.equal(got.length, 2);
  for (const s of got) {
    assert.equal(s.fast, true, 'the TLS socket is reached through the pinned grpc-js call objects');
    assert.ok(s.der !== undefined, `no DER (viaAuthContext: ${s.viaAuthContext?.length})`);
    assert.ok(s.der.equals(agent.certDer));
    assert.ok(s.viaAuthContext !== undefined && s.der.equals(s.viaAuthContext));
  }
});

test('TLS 1.3: the certificate is read once per connection; TLS 1.2: on every call (renegotiation could change it)', async () => {
  const agent = await ca.issueSvid('spiffe://example.org/spire/agent/join_token/t');
  const client = { key: privateKeyPem(agent.privateKey), chain: agent.chain };
  const v13 = await twoCallsOneConnection(client, 'TLSv1.3');
  assert.equal(v13.length, 2);
  assert.ok(v13[0]!.der?.equals(agent.certDer) && v13[1]!.der?.equals(agent.certDer));
  assert.equal(v13[1]!.der, v13[0]!.der, 'the same remembered Buffer on the second call');
  const v12 = await twoCallsOneConnection(client, 'TLSv1.2');
  assert.equal(v12.length, 2);
  assert.ok(v12[0]!.der?.equals(agent.certDer) && v12[1]!.der?.equals(agent.certDer));
  assert.notEqual(v12[1]!.der, v12[0]!.der, 'read again on TLS 1.2');
});

test('no client certificate, or one from another CA: nothing, as getAuthContext', async () => {
  const none = await callBoth(undefined);
  assert.equal(none.length, 2);
  for (const s of none) {
    assert.equal(s.fast, true);
    assert.equal(s.der, undefined);
    assert.equal(s.viaAuthContext, undefined);
  }
  const other = await TestCa.create({ trustDomain: 'example.org' });
  const stranger = await other.issueSvid('spiffe://example.org/spire/agent/join_token/t');
  const unverified = await callBoth({ key: privateKeyPem(stranger.privateKey), chain: stranger.chain });
  assert.equal(unverified.length, 2);
  for (const s of unverified) {
    assert.equal(s.der, undefined, 'a certificate the handshake did not verify is not returned');
    assert.equal(s.viaAuthContext, undefined);
  }
});

test('a call object of unknown shape falls back to getAuthContext', () => {
  const raw = Buffer.from('cert');
  assert.equal(tlsSocketOf({ getAuthContext: () => ({}) }), undefined);
  assert.equal(peerCertificateDer({ getAuthContext: () => ({ sslPeerCertificate: { raw } }) }), raw);
  assert.equal(peerCertificateDer({ getAuthContext: () => ({}) }), undefined);
  // A stream whose session has a non-TLS socket: nothing (as grpc-js without TLS).
  const plain = { call: { stream: { session: { socket: {} } } }, getAuthContext: () => ({ sslPeerCertificate: { raw } }) };
  assert.equal(tlsSocketOf(plain), undefined);
});

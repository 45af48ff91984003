// The TLS helpers' per-connection caches (peercache.ts): a reused chain verification must never
// accept what a fresh verification would refuse, and the authorizer runs every time. Plus
// peerIdOf on a client socket, which must not use up the peer certificate (real TLS on loopback).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { ErrorCode, isSpiffeError } from '../errors.js';
import { parseTrustDomain } from '../id.js';
import { toPem } from '../pem.js';
import type { X509BundleSource } from '../source.js';
import { TestCa } from '../../test/support/testca.js';
import { authorizeAny, authorizeID, type Authorizer } from './authorizer.js';
import { authorityPems, PeerVerificationCache, svidPem } from './peercache.js';
import { createMtlsServer, mtlsClientOptions, peerIdOf } from './tlsconfig.js';

const WEB = 'spiffe://example.org/web';
const MINUTE = 60_000;

function code(c: string, reason?: string): (err: unknown) => boolean {
  return (err) => isSpiffeError(err) && err.code === c && (reason === undefined || err.reason === reason);
}

/** A bundle whose authorities can be changed, and an authorizer that counts its calls. */
function mutableBundle(authorities: Buffer[]): X509BundleSource & { set(a: Buffer[]): void } {
  let current = authorities;
  const td = parseTrustDomain('example.org');
  return { getX509Authorities: (t) => (t === td ? current : undefined), set: (a) => (current = a) };
}

function counting(inner: Authorizer): Authorizer & { calls: number } {
  const f = ((id, chain) => {
    f.calls++;
    inner(id, chain);
  }) as Authorizer & { calls: number };
  f.calls = 0;
  return f;
}

test('a cached verification: the authorizer runs on every connection, and its refusal stands', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const web = await ca.issueSvid(WEB);
  const cache = new PeerVerificationCache();
  const bundle = ca.bundle();
  const any = counting(authorizeAny());
  assert.equal(cache.verify(web.chain, bundle, any), WEB);
  assert.equal(cache.verify(web.chain, bundle, any), WEB);
  assert.equal(any.calls, 2);
  assert.equal(cache.size, 1);
  const other = counting(authorizeID('spiffe://example.org/db'));
  assert.throws(() => cache.verify(web.chain, bundle, other), code(ErrorCode.UNAUTHORIZED, 'id_mismatch'));
  assert.equal(other.calls, 1);
});

test('a cached chain is verified afresh once a certificate of its path is outside its validity', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const web = await ca.issueSvid(WEB, { ttlSeconds: 600 });
  const cache = new PeerVerificationCache();
  const now = Date.now();
  assert.equal(cache.verify(web.chain, ca.bundle(), authorizeAny(), now), WEB);
  assert.throws(() => cache.verify(web.chain, ca.bundle(), authorizeAny(), now + 11 * MINUTE), code(ErrorCode.X509_SVID_UNTRUSTED, 'expired'));
  assert.throws(() => cache.verify(web.chain, ca.bundle(), authorizeAny(), now - 5 * MINUTE), code(ErrorCode.X509_SVID_UNTRUSTED, 'not_yet_valid'));
  // The failures replaced nothing that is still valid: at `now` it verifies again.
  assert.equal(cache.verify(web.chain, ca.bundle(), authorizeAny(), now), WEB);
});

test('a cached chain is verified afresh when its authority leaves the bundle (and accepted again under a new one only if it chains to it)', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const other = await TestCa.create({ trustDomain: 'example.org' });
  const web = await ca.issueSvid(WEB);
  const bundle = mutableBundle([ca.rootDer]);
  const cache = new PeerVerificationCache();
  assert.equal(cache.verify(web.chain, bundle, authorizeAny()), WEB);
  bundle.set([other.rootDer]);
  assert.throws(() => cache.verify(web.chain, bundle, authorizeAny()), code(ErrorCode.X509_SVID_UNTRUSTED));
  // Both authorities (a CA rotation's overlap): accepted.
  bundle.set([other.rootDer, ca.rootDer]);
  assert.equal(cache.verify(web.chain, bundle, authorizeAny()), WEB);
});

test('only the same chain bytes reuse a verification: the leaf without its intermediate is refused', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const inter = await ca.createIntermediate();
  const web = await ca.issueSvid(WEB, { via: inter });
  const cache = new PeerVerificationCache();
  assert.equal(web.chain.length, 2);
  assert.equal(cache.verify(web.chain, ca.bundle(), authorizeAny()), WEB);
  assert.throws(() => cache.verify([web.certDer], ca.bundle(), authorizeAny()), code(ErrorCode.X509_SVID_UNTRUSTED, 'unknown_authority'));
  // A tampered copy of the leaf (one bit of its signature) is not the cached chain either.
  const tampered = Buffer.from(web.certDer);
  tampered[tampered.length - 1]! ^= 0x01;
  assert.throws(() => cache.verify([tampered, inter.certDer], ca.bundle(), authorizeAny()), code(ErrorCode.X509_SVID_UNTRUSTED));
});

test('failures are not cached, and the cache is bounded', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const evil = await ca.evilLeaf('ca_leaf');
  const cache = new PeerVerificationCache(2);
  assert.throws(() => cache.verify(evil.chain, ca.bundle(), authorizeAny()), code(ErrorCode.X509_SVID_INVALID));
  assert.equal(cache.size, 0);
  for (const path of ['a', 'b', 'c']) {
    const s = await ca.issueSvid(`spiffe://example.org/${path}`);
    assert.equal(cache.verify(s.chain, ca.bundle(), authorizeAny()), s.id);
  }
  assert.equal(cache.size, 2);
});

test('svidPem: one PEM text per SVID object, a new one for a rotated SVID', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const a = await ca.issueSvid(WEB);
  const b = await ca.issueSvid(WEB);
  const svidA = { id: a.id, certificates: a.chain, privateKey: a.privateKey };
  const svidB = { id: b.id, certificates: b.chain, privateKey: b.privateKey };
  const first = svidPem(svidA);
  assert.equal(svidPem(svidA), first);
  assert.equal(first.cert, toPem('CERTIFICATE', a.certDer));
  assert.notEqual(svidPem(svidB).cert, first.cert);
});

test('authorityPems: the same PEM list while the authorities are the same bytes, a new one when they change', async () => {
  const [a, b] = await Promise.all([TestCa.create({ trustDomain: 'example.org' }), TestCa.create({ trustDomain: 'example.org' })]);
  const pems = authorityPems();
  const first = pems([Buffer.from(a.rootDer)]);
  assert.deepEqual(first, [toPem('CERTIFICATE', a.rootDer)]);
  assert.deepEqual(pems([Buffer.from(a.rootDer)]), first);
  assert.deepEqual(pems([Buffer.from(a.rootDer), Buffer.from(b.rootDer)]), [toPem('CERTIFICATE', a.rootDer), toPem('CERTIFICATE', b.rootDer)]);
  assert.deepEqual(pems([Buffer.from(b.rootDer)]), [toPem('CERTIFICATE', b.rootDer)]);
});

test('peerIdOf on a client socket leaves the peer certificate to the caller (Node 20 hands getPeerX509Certificate out once per client socket)', async () => {
  const ca = await TestCa.create({ trustDomain: 'example.org' });
  const db = await ca.issueSvid('spiffe://example.org/db');
  const web = await ca.issueSvid(WEB);
  const bundle = { ...ca.bundle(), allX509Authorities: () => [ca.rootDer] };
  const server = createMtlsServer({ getX509Svid: () => ({ id: db.id, certificates: db.chain, privateKey: db.privateKey }) }, bundle, authorizeID(WEB), (s) => s.end('k'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const opts = mtlsClientOptions({ getX509Svid: () => ({ id: web.id, certificates: web.chain, privateKey: web.privateKey }) }, bundle, authorizeID(db.id));
    const socket = tls.connect({ ...opts, host: '127.0.0.1', port: (server.address() as AddressInfo).port });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve);
        socket.once('error', reject);
      });
      assert.equal(peerIdOf(socket), db.id);
      assert.equal(socket.getPeerX509Certificate()?.raw.equals(db.certDer), true, 'the certificate is still there for the caller');
      assert.equal(peerIdOf(socket), db.id);
    } finally {
      socket.destroy();
    }
  } finally {
    server.close();
  }
});

import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { isSpiffeError } from '../errors.js';
import { parseSpiffeId } from '../id.js';
import { exportPublicKeySpki, generateKeyPair, type KeyType } from '../keys.js';
import { TestCa, openssl, opensslText, opensslVerify, opensslVerifyCsr, withTempDir } from '../../test/support/testca.js';
import * as der from './der.js';
import { MAX_CSR_BYTES, createCsr, parseCsr } from './csr.js';
import { issueX509SvidFromCsr } from './issue.js';
import { OID } from './oids.js';
import { parseCertificate } from './parse.js';

function csrError(reason: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_X509_CSR_INVALID', err.message);
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

/** A CSR made by `openssl req` with the given key/digest/extension arguments (DER). */
function opensslCsr(args: string[]): Buffer {
  return withTempDir((dir) => {
    const out = join(dir, 'req.der');
    openssl(['req', '-new', '-nodes', '-keyout', join(dir, 'key.pem'), '-subj', '/CN=evil', '-outform', 'DER', '-out', out, ...args]);
    return readFileSync(out);
  });
}

const ID = parseSpiffeId('spiffe://example.org/workload');

describe('createCsr', () => {
  for (const type of ['ec-p256', 'ec-p384', 'rsa-2048'] as KeyType[]) {
    it(`makes a ${type} CSR that openssl req -verify accepts and parseCsr round-trips`, async () => {
      const kp = await generateKeyPair(type);
      const csr = createCsr(kp.privateKey);
      const out = opensslVerifyCsr(csr);
      assert.match(out, /verify OK/i);
      assert.match(out, type === 'ec-p384' ? /ecdsa-with-SHA384/ : type === 'rsa-2048' ? /sha256WithRSAEncryption/ : /ecdsa-with-SHA256/);
      const parsed = parseCsr(csr);
      assert.deepEqual(parsed.spki, exportPublicKeySpki(kp.publicKey));
      assert.deepEqual(parsed.publicKey.export({ format: 'der', type: 'spki' }), exportPublicKeySpki(kp.publicKey));
      assert.deepEqual(parsed.subject, {});
      assert.deepEqual(parsed.requestedUris, []);
      assert.deepEqual(parsed.requestedExtensions, []);
      assert.equal(parsed.keyInfo.kind, type.startsWith('ec') ? 'ec' : 'rsa');
    });
  }

  it('can carry a subject and requested SANs', async () => {
    const kp = await generateKeyPair('ec-p256');
    const csr = createCsr(kp.privateKey, {
      subject: { country: 'US', organization: 'SPIRE', commonName: 'w' },
      dnsNames: ['a.example.org'],
      uris: ['spiffe://example.org/w'],
    });
    const out = opensslVerifyCsr(csr);
    assert.match(out, /Subject: C = US, O = SPIRE, CN = w/);
    assert.match(out, /DNS:a\.example\.org, URI:spiffe:\/\/example\.org\/w/);
    const parsed = parseCsr(csr);
    assert.deepEqual(parsed.subject, { country: 'US', organization: 'SPIRE', commonName: 'w' });
    assert.deepEqual(parsed.requestedUris, ['spiffe://example.org/w']);
    assert.deepEqual(parsed.requestedDnsNames, ['a.example.org']);
    assert.throws(() => createCsr(kp.privateKey, { dnsNames: ['bad name'] }), csrError('dns_name'));
    assert.throws(() => createCsr(kp.publicKey), (e: unknown) => isSpiffeError(e, 'ERR_KEY_INVALID'));
  });
});

describe('parseCsr / issueX509SvidFromCsr on hostile CSRs', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  it('ignores everything in a CSR but its key: CA=true, extra SANs, other SPIFFE IDs, subject', () => {
    const csr = opensslCsr([
      '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:3',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', 'subjectAltName=URI:spiffe://example.org/admin,URI:spiffe://evil.org/x,DNS:evil.com,IP:10.0.0.1',
    ]);
    const parsed = parseCsr(csr);
    assert.deepEqual(parsed.requestedUris, ['spiffe://example.org/admin', 'spiffe://evil.org/x']);
    assert.deepEqual(parsed.requestedDnsNames, ['evil.com']);
    assert.deepEqual(parsed.requestedExtensions, [OID.basicConstraints, OID.keyUsage, OID.subjectAltName]);
    assert.equal(parsed.subject.commonName, 'evil');

    const leaf = issueX509SvidFromCsr({ csr, id: ID, dnsNames: ['w.example.org'], ttlSeconds: 600, issuer: ca.issuer });
    const info = parseCertificate(leaf.der);
    assert.deepEqual(info.uriSans, ['spiffe://example.org/workload']);
    assert.deepEqual(info.dnsSans, ['w.example.org']);
    assert.deepEqual(info.ipSans, []);
    assert.equal(info.isCa, false);
    assert.equal(info.keyUsage?.keyCertSign, false);
    assert.equal(info.keyUsage?.cRLSign, false);
    assert.equal(info.subject.length, 0);
    assert.deepEqual(info.spki, parsed.spki);
    const text = opensslText(leaf.der);
    assert.match(text, /CA:FALSE/);
    assert.doesNotMatch(text, /evil|admin|10\.0\.0\.1/);
    opensslVerify([ca.rootDer], leaf.der);
  });

  it('rejects a tampered signature (reason signature)', async () => {
    const kp = await generateKeyPair('ec-p256');
    const csr = createCsr(kp.privateKey);
    const bad = Buffer.from(csr);
    bad[bad.length - 3]! ^= 0x01; // inside the ECDSA s integer
    assert.throws(() => parseCsr(bad), csrError('signature'));
    assert.throws(() => issueX509SvidFromCsr({ csr: bad, id: ID, ttlSeconds: 60, issuer: ca.issuer }), csrError('signature'));
    // a changed subject invalidates the signature too
    const csr2 = createCsr(kp.privateKey, { subject: { commonName: 'aaaa' } });
    const i = csr2.indexOf(Buffer.from('aaaa'));
    csr2.write('bbbb', i, 'latin1');
    assert.throws(() => parseCsr(csr2), csrError('signature'));
    // an RSA CSR with a flipped bit
    const rsa = createCsr((await generateKeyPair('rsa-2048')).privateKey);
    rsa[rsa.length - 10]! ^= 0x80;
    assert.throws(() => issueX509SvidFromCsr({ csr: rsa, id: ID, ttlSeconds: 60, issuer: ca.issuer }), csrError('signature'));
  });

  it('rejects SHA-1 (and other unaccepted) signature algorithms (reason algorithm)', () => {
    const sha1 = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-sha1']);
    assert.throws(() => parseCsr(sha1), csrError('algorithm'));
    assert.throws(() => issueX509SvidFromCsr({ csr: sha1, id: ID, ttlSeconds: 60, issuer: ca.issuer }), csrError('algorithm'));
    const rsaSha1 = opensslCsr(['-newkey', 'rsa:2048', '-sha1']);
    assert.throws(() => parseCsr(rsaSha1), csrError('algorithm'));
    const sha512 = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-sha512']);
    assert.throws(() => parseCsr(sha512), csrError('algorithm'));
    const ed25519 = opensslCsr(['-newkey', 'ed25519']);
    assert.throws(() => parseCsr(ed25519), csrError('algorithm'));
    const pss = opensslCsr(['-newkey', 'rsa:2048', '-sigopt', 'rsa_padding_mode:pss']);
    assert.throws(() => parseCsr(pss), csrError('algorithm'));
  });

  it('rejects a signature algorithm that does not match the key (reason algorithm)', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const cri = der.sequence(der.smallInt(0), der.sequence(), createPublicKey(privateKey).export({ format: 'der', type: 'spki' }), Buffer.from('a000', 'hex'));
    const csr = der.sequence(cri, der.sequence(der.oid(OID.ecdsaWithSha256)), der.bitString(cryptoSign('sha256', cri, privateKey)));
    assert.throws(() => parseCsr(csr), csrError('algorithm'));
    const withParams = der.sequence(cri, der.sequence(der.oid(OID.sha256WithRsa), der.smallInt(1)), der.bitString(cryptoSign('sha256', cri, privateKey)));
    assert.throws(() => parseCsr(withParams), csrError('algorithm'));
    const ok = der.sequence(cri, der.sequence(der.oid(OID.sha256WithRsa), der.nullValue()), der.bitString(cryptoSign('sha256', cri, privateKey)));
    assert.equal(parseCsr(ok).keyInfo.kind, 'rsa');
  });

  it('rejects RSA-1024 and unsupported curves (reason key)', () => {
    const rsa1024 = opensslCsr(['-newkey', 'rsa:1024']);
    assert.throws(() => parseCsr(rsa1024), csrError('key'));
    assert.throws(() => issueX509SvidFromCsr({ csr: rsa1024, id: ID, ttlSeconds: 60, issuer: ca.issuer }), csrError('key'));
    const p521 = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521', '-sha384']);
    assert.throws(() => parseCsr(p521), csrError('key'));
    const k1 = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1']);
    assert.throws(() => parseCsr(k1), csrError('key'));
    // a P-256 "point" that is not on the curve
    const kp = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const csr = createCsr(kp.privateKey);
    const spki = kp.publicKey.export({ format: 'der', type: 'spki' });
    const bad = Buffer.from(csr);
    const at = bad.indexOf(spki);
    bad[at + spki.length - 1]! ^= 0x01;
    assert.throws(() => parseCsr(bad), (e: unknown) => isSpiffeError(e, 'ERR_X509_CSR_INVALID') && (e.reason === 'key' || e.reason === 'signature'));
  });

  it('rejects trailing garbage, truncation and non-DER (reason der)', async () => {
    const csr = createCsr((await generateKeyPair('ec-p256')).privateKey);
    assert.doesNotThrow(() => parseCsr(csr));
    assert.throws(() => parseCsr(Buffer.concat([csr, Buffer.from([0])])), csrError('der'));
    assert.throws(() => issueX509SvidFromCsr({ csr: Buffer.concat([csr, Buffer.from('garbage')]), id: ID, ttlSeconds: 60, issuer: ca.issuer }), csrError('der'));
    assert.throws(() => parseCsr(csr.subarray(0, csr.length - 1)), csrError('der'));
    assert.throws(() => parseCsr(Buffer.alloc(0)), csrError('der'));
    assert.throws(() => parseCsr(Buffer.from('not a csr')), csrError('der'));
    assert.throws(() => parseCsr(Buffer.alloc(MAX_CSR_BYTES + 1, 0x30)), csrError('der'));
    // BER indefinite length of the outer SEQUENCE
    const indefinite = Buffer.concat([Buffer.from([0x30, 0x80]), csr.subarray(csr[1]! & 0x80 ? 2 + (csr[1]! & 0x7f) : 2), Buffer.from([0, 0])]);
    assert.throws(() => parseCsr(indefinite), csrError('der'));
    // a version other than v1
    const v2 = Buffer.from(csr);
    const vAt = v2.indexOf(Buffer.from([0x02, 0x01, 0x00]));
    v2[vAt + 2] = 1;
    assert.throws(() => parseCsr(v2), csrError('der'));
  });

  it('checks the entry ID before spending a signature verification', async () => {
    const csr = createCsr((await generateKeyPair('ec-p256')).privateKey);
    assert.throws(
      () => issueX509SvidFromCsr({ csr, id: parseSpiffeId('spiffe://example.org'), ttlSeconds: 60, issuer: ca.issuer }),
      (e: unknown) => isSpiffeError(e, 'ERR_SPIFFE_ID_INVALID') && e.reason === 'root_path',
    );
    assert.throws(
      () => issueX509SvidFromCsr({ csr, id: parseSpiffeId('spiffe://evil.org/w'), ttlSeconds: 60, issuer: ca.issuer }),
      (e: unknown) => isSpiffeError(e, 'ERR_X509_ISSUE_INVALID') && e.reason === 'trust_domain_mismatch',
    );
  });
});

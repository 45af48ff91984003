import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { before, describe, it } from 'node:test';
import * as pkijs from 'pkijs';
import { isSpiffeError } from '../errors.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../id.js';
import { generateKeyPair, type KeyPair, type KeyType } from '../keys.js';
import { TestCa, opensslText, opensslVerify } from '../../test/support/testca.js';
import { createCsr } from './csr.js';
import { createIssuer, type Issuer } from './issuer.js';
import { createSelfSignedCa, issueIntermediateCa, issueX509Svid, issueX509SvidFromCsr } from './issue.js';
import { OID } from './oids.js';
import { parseCertificate } from './parse.js';

const TD = parseTrustDomain('example.org');
const ID = parseSpiffeId('spiffe://example.org/ns/prod/sa/web');
const KEY_TYPES: KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];
const SIG_ALG_TEXT: Record<string, string> = {
  'ec-p256': 'ecdsa-with-SHA256',
  'ec-p384': 'ecdsa-with-SHA384',
  'rsa-2048': 'sha256WithRSAEncryption',
};

function count(haystack: string, needle: string | RegExp): number {
  return haystack.split(needle).length - 1;
}

function expectCode(code: string, reason: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

/** Section of `openssl x509 -text` output following a header line. */
function extensionBlock(text: string, header: string): string {
  const i = text.indexOf(header);
  assert.ok(i >= 0, `missing ${header} in:\n${text}`);
  return text.slice(i, text.indexOf('\n', text.indexOf('\n', i) + 1) + 1);
}

const keys = new Map<KeyType, KeyPair[]>();
async function keyPair(type: KeyType, index = 0): Promise<KeyPair> {
  const list = keys.get(type) ?? [];
  keys.set(type, list);
  while (list.length <= index) list.push(await generateKeyPair(type));
  return list[index]!;
}

describe('createSelfSignedCa', () => {
  for (const type of KEY_TYPES) {
    it(`makes a valid ${type} root CA (checked by openssl, node and pkijs)`, async () => {
      const kp = await keyPair(type);
      const der = createSelfSignedCa({ trustDomain: TD, keyPair: kp, ttlSeconds: 3600 });

      opensslVerify([der], der);
      const text = opensslText(der);
      assert.match(extensionBlock(text, 'X509v3 Basic Constraints'), /critical\s+CA:TRUE/);
      assert.match(extensionBlock(text, 'X509v3 Key Usage'), /critical\s+Digital Signature, Certificate Sign, CRL Sign/);
      assert.equal(count(text, 'URI:'), 1);
      assert.match(text, /URI:spiffe:\/\/example\.org\s*\n/);
      assert.match(text, new RegExp(`Signature Algorithm: ${SIG_ALG_TEXT[type]}`));
      assert.doesNotMatch(text, /sha1With|ecdsa-with-SHA1/i);
      const ski = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(text)?.[1];
      const aki = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
      assert.ok(ski && ski === aki, 'self-signed: AKI = SKI');
      assert.match(text, /Subject: C = US, O = SPIFFE, serialNumber = \d+/);

      const x = new X509Certificate(der);
      assert.equal(x.ca, true);
      assert.equal(x.subjectAltName, 'URI:spiffe://example.org');
      assert.ok(x.verify(x.publicKey));
      assert.ok(x.checkIssued(x));

      const pk = pkijs.Certificate.fromBER(der);
      assert.equal(pk.version, 2);
      const expectedAlg: Record<string, string> = { 'ec-p256': OID.ecdsaWithSha256, 'ec-p384': OID.ecdsaWithSha384, 'rsa-2048': OID.sha256WithRsa };
      assert.equal(pk.signatureAlgorithm.algorithmId, expectedAlg[type]);
      assert.ok(await pk.verify(), 'pkijs verifies the self-signature');

      const info = parseCertificate(der);
      assert.equal(info.isCa, true);
      assert.equal(info.pathLen, undefined);
      assert.deepEqual(info.uriSans, ['spiffe://example.org']);
      assert.ok(info.keyUsage?.keyCertSign && info.keyUsage.cRLSign && info.keyUsageCritical);
    });
  }

  it('backdates notBefore, uses ttl for notAfter, and takes an injected serial and subject', async () => {
    const now = new Date('2030-03-04T05:06:07.890Z');
    const der = createSelfSignedCa({
      trustDomain: TD,
      keyPair: await keyPair('ec-p256'),
      ttlSeconds: 7200,
      now,
      serial: Buffer.from('0102', 'hex'),
      subject: { country: 'DE', organization: 'Acme', commonName: 'Acme Root' },
    });
    const info = parseCertificate(der);
    assert.equal(info.notBefore.toISOString(), '2030-03-04T05:05:57.000Z');
    assert.equal(info.notAfter.toISOString(), '2030-03-04T07:06:07.000Z');
    assert.equal(info.serialHex, '0102');
    assert.match(opensslText(der), /Subject: C = DE, O = Acme, CN = Acme Root, serialNumber = 258\n/);
  });

  it('refuses mismatched key pairs, bad ttl, bad trust domains and bad serials', async () => {
    const a = await keyPair('ec-p256', 0);
    const b = await keyPair('ec-p256', 1);
    assert.throws(() => createSelfSignedCa({ trustDomain: TD, keyPair: { privateKey: a.privateKey, publicKey: b.publicKey }, ttlSeconds: 60 }), expectCode('ERR_X509_ISSUE_INVALID', 'key_mismatch'));
    assert.throws(() => createSelfSignedCa({ trustDomain: TD, keyPair: a, ttlSeconds: 0 }), expectCode('ERR_X509_ISSUE_INVALID', 'ttl'));
    assert.throws(() => createSelfSignedCa({ trustDomain: TD, keyPair: a, ttlSeconds: NaN }), expectCode('ERR_X509_ISSUE_INVALID', 'ttl'));
    assert.throws(() => createSelfSignedCa({ trustDomain: 'Bad.Domain' as typeof TD, keyPair: a, ttlSeconds: 60 }), expectCode('ERR_TRUST_DOMAIN_INVALID', 'trust_domain_char'));
    assert.throws(() => createSelfSignedCa({ trustDomain: TD, keyPair: a, ttlSeconds: 60, serial: Buffer.alloc(3) }), expectCode('ERR_X509_ISSUE_INVALID', 'serial'));
    assert.throws(() => createSelfSignedCa({ trustDomain: TD, keyPair: a, ttlSeconds: 60, serial: Buffer.alloc(21, 1) }), expectCode('ERR_X509_ISSUE_INVALID', 'serial'));
    assert.throws(() => createSelfSignedCa({ trustDomain: TD, keyPair: a, ttlSeconds: 60, subject: { country: 'usa' } }), expectCode('ERR_X509_ISSUE_INVALID', 'subject'));
  });
});

describe('createIssuer', () => {
  it('precomputes issuer facts from the CA certificate', async () => {
    const kp = await keyPair('ec-p384');
    const der = createSelfSignedCa({ trustDomain: TD, keyPair: kp, ttlSeconds: 3600 });
    const issuer = createIssuer([der], kp.privateKey);
    const info = parseCertificate(der);
    assert.equal(issuer.trustDomain, 'example.org');
    assert.equal(issuer.keyType, 'ec-p384');
    assert.equal(issuer.hash, 'sha384');
    assert.deepEqual(issuer.subjectDer, info.subjectDer);
    assert.deepEqual(issuer.keyId, info.ski);
    assert.equal(issuer.notAfter.getTime(), info.notAfter.getTime());
    assert.doesNotMatch(JSON.stringify(issuer), /PRIVATE|"d"/);
  });

  it('rejects non-CA certificates, CAs without keyCertSign, wrong keys and misordered chains', async () => {
    const ca = await TestCa.create({ trustDomain: 'example.org' });
    const svid = await ca.issueSvid('spiffe://example.org/w');
    assert.throws(() => createIssuer([svid.certDer], svid.privateKey), expectCode('ERR_X509_ISSUE_INVALID', 'not_ca'));
    const noSign = await ca.rawIntermediate({ keyUsage: ['digitalSignature', 'cRLSign'] });
    assert.throws(() => createIssuer([noSign.certDer], noSign.privateKey), expectCode('ERR_X509_ISSUE_INVALID', 'no_key_cert_sign'));
    assert.throws(() => createIssuer([ca.rootDer], svid.privateKey), expectCode('ERR_X509_ISSUE_INVALID', 'key_mismatch'));
    assert.throws(() => createIssuer([], ca.keyPair.privateKey), expectCode('ERR_X509_ISSUE_INVALID', 'empty_chain'));
    const inter = await ca.createIntermediate();
    const other = await TestCa.create({ trustDomain: 'example.org' });
    assert.throws(() => createIssuer([inter.certDer, other.rootDer], inter.privateKey), expectCode('ERR_X509_ISSUE_INVALID', 'chain_order'));
    assert.doesNotThrow(() => createIssuer([inter.certDer, ca.rootDer], inter.privateKey));
    assert.throws(() => createIssuer([Buffer.from('3000', 'hex')], ca.keyPair.privateKey), expectCode('ERR_X509_CERT_INVALID', 'der'));
  });
});

describe('issueIntermediateCa', () => {
  it('issues an intermediate that openssl accepts, capped at the issuer notAfter', async () => {
    const rootKp = await keyPair('ec-p256');
    const rootDer = createSelfSignedCa({ trustDomain: TD, keyPair: rootKp, ttlSeconds: 3600 });
    const root = createIssuer([rootDer], rootKp.privateKey);
    const interKp = await keyPair('ec-p384');
    const interDer = issueIntermediateCa({ trustDomain: TD, publicKey: interKp.publicKey, issuer: root, ttlSeconds: 10 * 3600, pathLen: 0 });
    const info = parseCertificate(interDer);
    assert.equal(info.notAfter.getTime(), root.notAfter.getTime(), 'capped at the root notAfter');
    assert.equal(info.isCa, true);
    assert.equal(info.pathLen, 0);
    assert.deepEqual(info.aki, root.keyId);
    assert.deepEqual(info.issuerDer, root.subjectDer);
    assert.notDeepEqual(info.subjectDer, root.subjectDer, 'distinct Names');
    opensslVerify([rootDer], interDer);
    const text = opensslText(interDer);
    assert.match(extensionBlock(text, 'X509v3 Basic Constraints'), /critical\s+CA:TRUE, pathlen:0/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.equal(count(text, 'URI:spiffe://example.org'), 1);

    // A leaf under it, from a CSR: openssl verify with -untrusted
    const inter = createIssuer([interDer, rootDer], interKp.privateKey);
    const leafKp = await keyPair('ec-p256');
    const leaf = issueX509SvidFromCsr({ csr: createCsr(leafKp.privateKey), id: ID, ttlSeconds: 600, issuer: inter });
    opensslVerify([rootDer], leaf.der, [interDer]);
    assert.match(opensslText(leaf.der), /Signature Algorithm: ecdsa-with-SHA384/);
    // pathLen 0: no further CA below it
    assert.throws(
      () => issueIntermediateCa({ trustDomain: TD, publicKey: leafKp.publicKey, issuer: inter, ttlSeconds: 60 }),
      expectCode('ERR_X509_ISSUE_INVALID', 'path_len'),
    );
  });

  it('inherits and bounds pathLen, and refuses other trust domains', async () => {
    const rootKp = await keyPair('ec-p256');
    const rootDer = createSelfSignedCa({ trustDomain: TD, keyPair: rootKp, ttlSeconds: 3600 });
    const root = createIssuer([rootDer], rootKp.privateKey);
    const k1 = await keyPair('ec-p256', 1);
    const i1Der = issueIntermediateCa({ trustDomain: TD, publicKey: k1.publicKey, issuer: root, ttlSeconds: 600, pathLen: 2 });
    const i1 = createIssuer([i1Der], k1.privateKey);
    const k2 = await keyPair('ec-p256', 2);
    assert.equal(parseCertificate(issueIntermediateCa({ trustDomain: TD, publicKey: k2.publicKey, issuer: i1, ttlSeconds: 600 })).pathLen, 1);
    assert.throws(() => issueIntermediateCa({ trustDomain: TD, publicKey: k2.publicKey, issuer: i1, ttlSeconds: 600, pathLen: 2 }), expectCode('ERR_X509_ISSUE_INVALID', 'path_len'));
    assert.throws(
      () => issueIntermediateCa({ trustDomain: parseTrustDomain('other.org'), publicKey: k2.publicKey, issuer: root, ttlSeconds: 600 }),
      expectCode('ERR_X509_ISSUE_INVALID', 'trust_domain_mismatch'),
    );
  });
});

describe('issueX509Svid / issueX509SvidFromCsr', () => {
  const issuers = new Map<KeyType, { issuer: Issuer; rootDer: Buffer }>();
  before(async () => {
    for (const type of KEY_TYPES) {
      const kp = await keyPair(type);
      const rootDer = createSelfSignedCa({ trustDomain: TD, keyPair: kp, ttlSeconds: 24 * 3600 });
      issuers.set(type, { issuer: createIssuer([rootDer], kp.privateKey), rootDer });
    }
  });

  for (const caType of KEY_TYPES) {
    for (const leafType of KEY_TYPES) {
      it(`issues a leaf from a ${leafType} CSR under a ${caType} CA that openssl, node and pkijs accept`, async () => {
        const { issuer, rootDer } = issuers.get(caType)!;
        const leafKp = await keyPair(leafType);
        const issued = issueX509SvidFromCsr({ csr: createCsr(leafKp.privateKey), id: ID, dnsNames: ['web.example.org'], ttlSeconds: 600, issuer });

        opensslVerify([rootDer], issued.der);
        opensslVerify([rootDer], issued.der, [], ['-purpose', 'sslserver']);
        opensslVerify([rootDer], issued.der, [], ['-purpose', 'sslclient']);
        const text = opensslText(issued.der);
        assert.match(extensionBlock(text, 'X509v3 Key Usage'), leafType.startsWith('ec') ? /critical\s+Digital Signature, Key Agreement\n/ : /critical\s+Digital Signature, Key Encipherment\n/);
        assert.match(extensionBlock(text, 'X509v3 Basic Constraints'), /critical\s+CA:FALSE/);
        assert.match(extensionBlock(text, 'X509v3 Extended Key Usage'), /TLS Web Server Authentication, TLS Web Client Authentication/);
        assert.match(extensionBlock(text, 'X509v3 Subject Alternative Name'), /critical\s+DNS:web\.example\.org, URI:spiffe:\/\/example\.org\/ns\/prod\/sa\/web\n/);
        assert.equal(count(text, 'URI:'), 1);
        assert.match(text, /X509v3 Subject Key Identifier/);
        assert.match(text, /X509v3 Authority Key Identifier/);
        assert.match(text, new RegExp(`Signature Algorithm: ${SIG_ALG_TEXT[caType]}`));
        assert.match(text, /Subject: ?\n/);

        const x = new X509Certificate(issued.der);
        assert.equal(x.ca, false);
        assert.equal(x.subjectAltName, 'DNS:web.example.org, URI:spiffe://example.org/ns/prod/sa/web');
        assert.equal(new Date(x.validTo).getTime(), issued.notAfter.getTime());
        assert.equal(x.serialNumber.toLowerCase(), issued.serialHex);
        assert.ok(x.checkPrivateKey(leafKp.privateKey));
        assert.ok(x.verify(new X509Certificate(rootDer).publicKey));

        const pk = pkijs.Certificate.fromBER(issued.der);
        assert.ok(await pk.verify(pkijs.Certificate.fromBER(rootDer)), 'pkijs verifies the signature');
        const info = parseCertificate(issued.der);
        assert.deepEqual(info.aki, issuer.keyId);
        assert.deepEqual(info.extKeyUsage, [OID.serverAuth, OID.clientAuth]);
      });
    }
  }

  it('takes a KeyObject or SPKI DER public key', async () => {
    const { issuer, rootDer } = issuers.get('ec-p256')!;
    const kp = await keyPair('ec-p256', 3);
    const a = issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer });
    const b = issueX509Svid({ id: ID, publicKey: kp.publicKey.export({ format: 'der', type: 'spki' }), ttlSeconds: 60, issuer });
    const c = issueX509Svid({ id: ID, publicKey: kp.privateKey, ttlSeconds: 60, issuer });
    for (const cert of [a, b, c]) {
      assert.ok(new X509Certificate(cert.der).checkPrivateKey(kp.privateKey));
      opensslVerify([rootDer], cert.der);
    }
  });

  it('caps notAfter at the CA notAfter and backdates notBefore by 10 s', async () => {
    const kp = await keyPair('ec-p256');
    const now = new Date('2031-01-01T00:00:00.500Z');
    const rootDer = createSelfSignedCa({ trustDomain: TD, keyPair: kp, ttlSeconds: 3600, now });
    const issuer = createIssuer([rootDer], kp.privateKey);
    const leafKp = await keyPair('ec-p256', 1);
    const later = new Date('2031-01-01T00:30:00Z');
    const capped = issueX509Svid({ id: ID, publicKey: leafKp.publicKey, ttlSeconds: 10 * 3600, issuer, now: later });
    assert.equal(capped.notAfter.getTime(), issuer.notAfter.getTime());
    const info = parseCertificate(capped.der);
    assert.equal(info.notAfter.getTime(), issuer.notAfter.getTime());
    assert.equal(info.notBefore.toISOString(), '2031-01-01T00:29:50.000Z');
    const short = issueX509Svid({ id: ID, publicKey: leafKp.publicKey, ttlSeconds: 300, issuer, now: later });
    assert.equal(short.notAfter.toISOString(), '2031-01-01T00:35:00.000Z');
    assert.throws(
      () => issueX509Svid({ id: ID, publicKey: leafKp.publicKey, ttlSeconds: 300, issuer, now: new Date('2031-01-01T01:00:01Z') }),
      expectCode('ERR_X509_ISSUE_INVALID', 'issuer_expired'),
    );
  });

  it('uses random, positive serials of at least 64 bits; two issuances differ', async () => {
    const { issuer } = issuers.get('ec-p256')!;
    const kp = await keyPair('ec-p256');
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const cert = issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer });
      const info = parseCertificate(cert.der);
      assert.equal(info.serialHex, cert.serialHex);
      const serial = BigInt(`0x${cert.serialHex}`);
      assert.ok(serial > 0n);
      assert.ok(serial >= 1n << 64n, 'at least 64 bits');
      assert.ok(serial < 1n << 127n, 'fits 16 positive bytes');
      assert.ok(!seen.has(cert.serialHex), 'unique');
      seen.add(cert.serialHex);
    }
    const now = new Date();
    const a = issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer, now });
    const b = issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer, now });
    assert.notDeepEqual(a.der, b.der);
    const fixed = issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer, serial: Buffer.from('00ff01', 'hex') });
    assert.equal(fixed.serialHex, 'ff01');
    assert.equal(new X509Certificate(fixed.der).serialNumber, 'FF01');
  });

  it('takes identity only from its arguments: subject optional, SAN critical only for an empty subject', async () => {
    const { issuer, rootDer } = issuers.get('ec-p256')!;
    const kp = await keyPair('ec-p256');
    const withSubject = issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer, subject: { country: 'US', organization: 'SPIRE' } });
    const text = opensslText(withSubject.der);
    assert.match(text, /Subject: C = US, O = SPIRE\n/);
    assert.match(text, /X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/example\.org\/ns\/prod\/sa\/web/);
    opensslVerify([rootDer], withSubject.der);
    const info = parseCertificate(withSubject.der);
    assert.equal(info.sanCritical, false);
    const empty = parseCertificate(issueX509Svid({ id: ID, publicKey: kp.publicKey, ttlSeconds: 60, issuer }).der);
    assert.equal(empty.sanCritical, true);
    assert.equal(empty.subject.length, 0);
  });

  it('validates IDs, DNS names, keys and ttl', async () => {
    const { issuer } = issuers.get('ec-p256')!;
    const kp = await keyPair('ec-p256');
    const base = { publicKey: kp.publicKey, ttlSeconds: 60, issuer };
    assert.throws(() => issueX509Svid({ ...base, id: parseSpiffeId('spiffe://example.org') }), expectCode('ERR_SPIFFE_ID_INVALID', 'root_path'));
    assert.throws(() => issueX509Svid({ ...base, id: 'spiffe://example.org/a/../b' as SpiffeId }), expectCode('ERR_SPIFFE_ID_INVALID', 'path_dot_segment'));
    assert.throws(() => issueX509Svid({ ...base, id: parseSpiffeId('spiffe://other.org/w') }), expectCode('ERR_X509_ISSUE_INVALID', 'trust_domain_mismatch'));
    for (const bad of ['', 'a..b', '-a.org', 'a-.org', 'a_b.org', 'a b', '*', '*.', 'a.*.org', 'x'.repeat(64) + '.org', `${'a.'.repeat(127)}ab`, 'é.org']) {
      assert.throws(() => issueX509Svid({ ...base, id: ID, dnsNames: [bad] }), expectCode('ERR_X509_ISSUE_INVALID', 'dns_name'), bad);
    }
    const ok = issueX509Svid({ ...base, id: ID, dnsNames: ['*.svc.example.org', 'A-1.example.org', 'localhost', 'A-1.example.org'] });
    assert.deepEqual(parseCertificate(ok.der).dnsSans, ['*.svc.example.org', 'A-1.example.org', 'localhost']);
    assert.throws(() => issueX509Svid({ ...base, id: ID, ttlSeconds: -1 }), expectCode('ERR_X509_ISSUE_INVALID', 'ttl'));
    assert.throws(() => issueX509Svid({ ...base, id: ID, publicKey: Buffer.from('3000', 'hex') }), expectCode('ERR_X509_ISSUE_INVALID', 'key'));
    const p521 = await import('node:crypto').then((c) => c.generateKeyPairSync('ec', { namedCurve: 'secp521r1' }));
    assert.throws(() => issueX509Svid({ ...base, id: ID, publicKey: p521.publicKey }), expectCode('ERR_X509_ISSUE_INVALID', 'key'));
    const rsa1024 = await import('node:crypto').then((c) => c.generateKeyPairSync('rsa', { modulusLength: 1024 }));
    assert.throws(() => issueX509Svid({ ...base, id: ID, publicKey: rsa1024.publicKey }), expectCode('ERR_X509_ISSUE_INVALID', 'key'));
  });

  it('issues via the test CA helper (production path)', async () => {
    const ca = await TestCa.create({ trustDomain: 'example.org', keyType: 'ec-p384' });
    const inter = await ca.createIntermediate();
    const svid = await ca.issueSvid('spiffe://example.org/db', { via: inter, dnsNames: ['db.example.org'] });
    opensslVerify([ca.rootDer], svid.certDer, svid.chain.slice(1));
    assert.equal(svid.chain.length, 2);
  });
});

import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { isSpiffeError } from '../errors.js';
import { TestCa, openssl, withTempDir } from '../../test/support/testca.js';
import * as der from './der.js';
import { extension } from './extensions.js';
import { OID } from './oids.js';
import { certificateMatchesKey, parseCertificate } from './parse.js';

function certError(reason: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_X509_CERT_INVALID', err.message);
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

/** Splits a certificate into its three top-level parts. */
function parts(cert: Buffer): { tbs: Buffer; alg: Buffer; sig: Buffer } {
  const [tbs, alg, sig] = der.readChildren(cert, der.readRoot(cert));
  const slice = (n: der.DerNode): Buffer => cert.subarray(n.start, n.end);
  return { tbs: slice(tbs!), alg: slice(alg!), sig: slice(sig!) };
}

describe('parseCertificate', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  it('agrees with node X509Certificate and openssl on an issued leaf', async () => {
    const svid = await ca.issueSvid('spiffe://example.org/ns/a', { dnsNames: ['a.example.org'] });
    const info = parseCertificate(svid.certDer);
    const x = new X509Certificate(svid.certDer);
    assert.equal(info.version, 3);
    assert.equal(info.serialHex, x.serialNumber.toLowerCase());
    assert.equal(info.notBefore.getTime(), new Date(x.validFrom).getTime());
    assert.equal(info.notAfter.getTime(), new Date(x.validTo).getTime());
    assert.deepEqual(info.uriSans, ['spiffe://example.org/ns/a']);
    assert.deepEqual(info.dnsSans, ['a.example.org']);
    assert.equal(info.isCa, false);
    assert.equal(info.keyUsageCritical, true);
    assert.equal(info.keyUsage?.digitalSignature, true);
    assert.equal(info.keyUsage?.keyAgreement, true);
    assert.equal(info.keyUsage?.keyEncipherment, false);
    assert.deepEqual(info.extKeyUsage, [OID.serverAuth, OID.clientAuth]);
    assert.deepEqual(info.tbs, parts(svid.certDer).tbs);
    assert.equal(info.signatureAlgorithmOid, OID.ecdsaWithSha256);
    assert.equal(info.publicKeyAlgorithmOid, OID.ecPublicKey);
    assert.deepEqual(info.spki, x.publicKey.export({ format: 'der', type: 'spki' }));
    assert.ok(info.publicKey.equals(x.publicKey));
    assert.deepEqual(info.issuerDer, parseCertificate(ca.rootDer).subjectDer);
    assert.equal(info.selfIssued, false);
    assert.equal(parseCertificate(ca.rootDer).selfIssued, true);
    const text = openssl(['x509', '-noout', '-ext', 'subjectKeyIdentifier,authorityKeyIdentifier', '-inform', 'DER'], svid.certDer);
    assert.ok(text.replace(/:/g, '').includes(info.ski!.toString('hex').toUpperCase()));
    assert.ok(text.replace(/:/g, '').includes(info.aki!.toString('hex').toUpperCase()));
    assert.ok(certificateMatchesKey(svid.certDer, svid.privateKey));
    assert.ok(!certificateMatchesKey(svid.certDer, ca.keyPair.privateKey));
  });

  it('parses an openssl-made certificate with GeneralizedTime, IP SANs and name constraints', () => {
    const pem = withTempDir((dir) => {
      const out = join(dir, 'c.pem');
      openssl([
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', out, '-days', '20000', '-subj', '/C=US/O=Example/CN=Root',
        '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:2',
        '-addext', 'nameConstraints=critical,permitted;URI:.example.org,permitted;DNS:example.org,excluded;IP:10.0.0.0/255.0.0.0,excluded;email:evil.org',
        '-addext', 'subjectAltName=IP:192.168.0.1,IP:::1,email:a@example.org,URI:spiffe://example.org',
        '-addext', 'certificatePolicies=critical,2.5.29.32.0',
      ]);
      return readFileSync(out, 'utf8');
    });
    const x = new X509Certificate(pem);
    const info = parseCertificate(x.raw);
    assert.ok(info.notAfter.getUTCFullYear() > 2050);
    assert.equal(info.notAfter.getTime(), new Date(x.validTo).getTime());
    assert.equal(info.isCa, true);
    assert.equal(info.pathLen, 2);
    assert.deepEqual(info.ipSans, ['192.168.0.1', '0:0:0:0:0:0:0:1']);
    assert.deepEqual(info.emailSans, ['a@example.org']);
    assert.deepEqual(info.uriSans, ['spiffe://example.org']);
    assert.deepEqual(info.nameConstraints?.permitted, [
      { type: 'uri', value: '.example.org' },
      { type: 'dns', value: 'example.org' },
    ]);
    assert.deepEqual(info.nameConstraints?.excluded.map((s) => s.type), ['ip', 'email']);
    assert.deepEqual(info.subject.map((a) => a.value), ['US', 'Example', 'Root']);
    assert.equal(info.signatureAlgorithmOid, OID.sha256WithRsa);
    assert.equal(info.publicKey.asymmetricKeyType, 'rsa');
    assert.ok(info.publicKey.equals(x.publicKey));
  });

  it('rejects unknown critical extensions but keeps unknown non-critical ones', async () => {
    const unknown = '1.3.6.1.4.1.99999.1';
    const crit = await ca.issueRaw({ extraExtensions: [extension(unknown, true, der.nullValue())] });
    assert.throws(() => parseCertificate(crit.certDer), certError('critical_extension'));
    const nonCrit = await ca.issueRaw({ extraExtensions: [extension(unknown, false, der.nullValue())] });
    assert.deepEqual(
      parseCertificate(nonCrit.certDer).extensions.find((e) => e.oid === unknown),
      { oid: unknown, critical: false, value: der.nullValue() },
    );
    // policyConstraints (critical) is not processed here: refused
    const pc = await ca.issueRaw({ extraExtensions: [extension('2.5.29.36', true, der.sequence(der.implicit(0, der.smallInt(0))))] });
    assert.throws(() => parseCertificate(pc.certDer), certError('critical_extension'));
  });

  it('rejects duplicate extensions, trailing bytes, negative serials and signature algorithm mismatches', async () => {
    const dup = await ca.issueRaw({ extraExtensions: [extension(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth)))] });
    assert.throws(() => parseCertificate(dup.certDer), certError('duplicate_extension'));
    const svid = await ca.issueSvid('spiffe://example.org/w');
    assert.throws(() => parseCertificate(Buffer.concat([svid.certDer, Buffer.from([0])])), certError('der'));
    assert.throws(() => parseCertificate(svid.certDer.subarray(0, 100)), certError('der'));
    const neg = await ca.issueRaw({ serial: Buffer.from('80', 'hex') });
    assert.doesNotThrow(() => parseCertificate(neg.certDer), 'der.integer pads: 0x80 is positive');
    const p = parts(svid.certDer);
    const [tbsVersion, tbsSerial, ...rest] = der.readChildren(p.tbs, der.readRoot(p.tbs)).map((n) => p.tbs.subarray(n.start, n.end));
    const negTbs = der.sequence(tbsVersion!, Buffer.from('0201ff', 'hex'), ...rest);
    assert.throws(() => parseCertificate(der.sequence(negTbs, p.alg, p.sig)), certError('der'));
    assert.ok(tbsSerial);
    const mismatched = der.sequence(p.tbs, der.sequence(der.oid(OID.ecdsaWithSha384)), p.sig);
    assert.throws(() => parseCertificate(mismatched), certError('signature_algorithm'));
    assert.throws(() => parseCertificate(Buffer.from('not a certificate')), certError('der'));
  });

  it('rejects malformed times and non-ASCII general names', async () => {
    const svid = await ca.issueSvid('spiffe://example.org/w');
    const bad = Buffer.from(svid.certDer);
    const tbs = der.readChildren(bad, der.readRoot(bad))[0]!;
    const validity = der.readChildren(bad, tbs)[4]!;
    const notBefore = der.readChildren(bad, validity)[0]!;
    assert.equal(bad[notBefore.end - 1], 0x5a); // 'Z'
    bad[notBefore.end - 1] = 0x2b; // '+': not Zulu
    assert.throws(() => parseCertificate(bad), certError('der'));
    const nonAscii = await ca.issueRaw({ extraExtensions: [], uris: ['spiffe://example.org/w\u00e9'] });
    assert.throws(() => parseCertificate(nonAscii.certDer), certError('der'));
  });

  it('matches keys by value', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const made = withTempDir((dir) => {
      const key = join(dir, 'k.pem');
      const out = join(dir, 'c.pem');
      openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', out, '-subj', '/CN=x', '-days', '1']);
      return { cert: readFileSync(out, 'utf8'), key: readFileSync(key, 'utf8') };
    });
    const x = new X509Certificate(made.cert);
    assert.ok(!certificateMatchesKey(x.raw, privateKey));
    assert.ok(certificateMatchesKey(x.raw, createPrivateKey(made.key)));
  });
});

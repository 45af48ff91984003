import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { sign as cryptoSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { isSpiffeError, type SpiffeError } from '../errors.js';
import { parseSpiffeId } from '../id.js';
import { generateKeyPair } from '../keys.js';
import { TestCa, opensslVerify, type EvilKind, type TestSigner } from '../../test/support/testca.js';
import * as der from './der.js';
import { extension } from './extensions.js';
import { encodeName, nameToString } from './name.js';
import { OID } from './oids.js';
import { parseCertificate } from './parse.js';
import { MAX_CHAIN_CERTIFICATES, parseX509Svid, verifyX509Svid } from './verify.js';

function fails(code: 'ERR_X509_SVID_INVALID' | 'ERR_X509_SVID_UNTRUSTED' | 'ERR_X509_CERT_INVALID', reason: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

const MINUTE = 60_000;

describe('verifyX509Svid: valid chains', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  it('accepts a leaf signed by the root', async () => {
    const svid = await ca.issueSvid('spiffe://example.org/web');
    const r = verifyX509Svid(svid.chain, ca.bundle());
    assert.equal(r.id, 'spiffe://example.org/web');
    assert.deepEqual(r.chain, [svid.certDer, ca.rootDer]);
    // concatenated DER as the Workload API carries it
    assert.equal(verifyX509Svid(Buffer.concat(svid.chain), ca.bundle()).id, 'spiffe://example.org/web');
  });

  it('accepts root + intermediate, and two intermediates', async () => {
    const i1 = await ca.createIntermediate();
    const i2 = await ca.createIntermediate({ via: i1 });
    const svid = await ca.issueSvid('spiffe://example.org/db', { via: i2 });
    assert.deepEqual(svid.chain, [svid.certDer, i2.certDer, i1.certDer]);
    const r = verifyX509Svid(svid.chain, ca.bundle());
    assert.deepEqual(r.chain, [svid.certDer, i2.certDer, i1.certDer, ca.rootDer]);
    // presented out of order, with the root and a stranger included: still found
    const stranger = await TestCa.create({ trustDomain: 'example.org' });
    const shuffled = [svid.certDer, stranger.rootDer, i1.certDer, ca.rootDer, i2.certDer];
    assert.deepEqual(verifyX509Svid(shuffled, ca.bundle()).chain, [svid.certDer, i2.certDer, i1.certDer, ca.rootDer]);
    opensslVerify([ca.rootDer], svid.certDer, [i2.certDer, i1.certDer]);
  });

  it('accepts an intermediate in the bundle as trust anchor', async () => {
    const inter = await ca.createIntermediate();
    const svid = await ca.issueSvid('spiffe://example.org/api', { via: inter });
    const bundle = TestCa.bundleOf(['example.org', [inter.certDer]]);
    assert.deepEqual(verifyX509Svid([svid.certDer], bundle).chain, [svid.certDer, inter.certDer]);
    assert.deepEqual(verifyX509Svid(svid.chain, bundle).chain, [svid.certDer, inter.certDer]);
  });

  it('skips unparseable bundle entries', async () => {
    const svid = await ca.issueSvid('spiffe://example.org/web');
    assert.equal(verifyX509Svid(svid.chain, ca.bundle([Buffer.from('garbage')])).id, 'spiffe://example.org/web');
  });

  it('honours the now option for validity windows (no sleeping)', async () => {
    const svid = await ca.issueSvid('spiffe://example.org/web', { ttlSeconds: 600 });
    const now = Date.now();
    assert.doesNotThrow(() => verifyX509Svid(svid.chain, ca.bundle(), { now: new Date(now + 5 * MINUTE) }));
    assert.throws(() => verifyX509Svid(svid.chain, ca.bundle(), { now: new Date(now + 11 * MINUTE) }), fails('ERR_X509_SVID_UNTRUSTED', 'expired'));
    assert.throws(() => verifyX509Svid(svid.chain, ca.bundle(), { now: new Date(now - MINUTE) }), fails('ERR_X509_SVID_UNTRUSTED', 'not_yet_valid'));
  });
});

describe('verifyX509Svid: leaf rules (one reason each)', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  const cases: [EvilKind, 'ERR_X509_SVID_INVALID' | 'ERR_X509_SVID_UNTRUSTED', string][] = [
    ['ca_leaf', 'ERR_X509_SVID_INVALID', 'leaf_is_ca'],
    ['two_uri_sans', 'ERR_X509_SVID_INVALID', 'multiple_uri_sans'],
    ['no_uri_san', 'ERR_X509_SVID_INVALID', 'no_uri_san'],
    ['root_path', 'ERR_X509_SVID_INVALID', 'root_path'],
    ['invalid_uri', 'ERR_X509_SVID_INVALID', 'invalid_spiffe_id'],
    ['key_cert_sign', 'ERR_X509_SVID_INVALID', 'leaf_key_cert_sign'],
    ['crl_sign', 'ERR_X509_SVID_INVALID', 'leaf_crl_sign'],
    ['no_digital_signature', 'ERR_X509_SVID_INVALID', 'leaf_no_digital_signature'],
    ['no_key_usage', 'ERR_X509_SVID_INVALID', 'leaf_no_digital_signature'],
    ['expired', 'ERR_X509_SVID_UNTRUSTED', 'expired'],
    ['not_yet_valid', 'ERR_X509_SVID_UNTRUSTED', 'not_yet_valid'],
    ['bad_signature', 'ERR_X509_SVID_UNTRUSTED', 'bad_signature'],
  ];
  for (const [kind, code, reason] of cases) {
    it(`${kind} -> ${reason}`, async () => {
      const evil = await ca.evilLeaf(kind);
      assert.throws(() => verifyX509Svid(evil.chain, ca.bundle()), fails(code, reason));
    });
  }

  it('the evil-leaf template is otherwise valid', async () => {
    const control = await ca.issueRaw({ ca: false });
    assert.equal(verifyX509Svid([control.certDer], ca.bundle()).id, 'spiffe://example.org/evil');
    opensslVerify([ca.rootDer], control.certDer);
  });

  it('rejects an empty chain and unparseable certificates', async () => {
    assert.throws(() => verifyX509Svid([], ca.bundle()), fails('ERR_X509_SVID_INVALID', 'empty_chain'));
    assert.throws(() => verifyX509Svid([Buffer.from('3000', 'hex')], ca.bundle()), fails('ERR_X509_CERT_INVALID', 'der'));
    const svid = await ca.issueSvid('spiffe://example.org/w');
    assert.throws(() => verifyX509Svid([svid.certDer, Buffer.from('junk')], ca.bundle()), fails('ERR_X509_CERT_INVALID', 'der'));
    const many = Array.from({ length: MAX_CHAIN_CERTIFICATES + 1 }, () => svid.certDer);
    assert.throws(() => verifyX509Svid(many, ca.bundle()), fails('ERR_X509_SVID_INVALID', 'too_many_certificates'));
  });
});

describe('verifyX509Svid: trust', () => {
  let a: TestCa;
  let b: TestCa;
  let other: TestCa;
  before(async () => {
    a = await TestCa.create({ trustDomain: 'example.org' });
    b = await TestCa.create({ trustDomain: 'example.org' }); // same name, different CA
    other = await TestCa.create({ trustDomain: 'other.org' });
  });

  it('unknown_authority: a leaf claiming trust domain A signed by another CA', async () => {
    const forged = await b.issueSvid('spiffe://example.org/admin');
    assert.throws(() => verifyX509Svid(forged.chain, a.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'unknown_authority'));
    // presenting B's root as an intermediate does not help: it is not in A's bundle
    assert.throws(() => verifyX509Svid([forged.certDer, b.rootDer], a.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'unknown_authority'));
    // other.org's bundle holding B's root does not make B trusted for example.org
    const mixed = TestCa.bundleOf(['example.org', [a.rootDer]], ['other.org', [b.rootDer]]);
    assert.throws(() => verifyX509Svid(forged.chain, mixed), fails('ERR_X509_SVID_UNTRUSTED', 'unknown_authority'));
  });

  it('bad_signature: a forged leaf naming the real CA as issuer', async () => {
    // Same subject Name, different key: name matching finds A's root, the signature fails.
    const sameName = { organization: 'Shared', serialNumber: '1' };
    const real = await TestCa.create({ trustDomain: 'example.org', subject: sameName });
    const fake = await TestCa.create({ trustDomain: 'example.org', subject: sameName });
    const forged = await fake.issueSvid('spiffe://example.org/admin');
    assert.throws(() => verifyX509Svid(forged.chain, real.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'bad_signature'));
    // and it verifies under its own CA
    assert.equal(verifyX509Svid(forged.chain, fake.bundle()).id, 'spiffe://example.org/admin');
    // tampered intermediate signature
    const inter = await a.createIntermediate();
    const bad = Buffer.from(inter.certDer);
    bad[bad.length - 2]! ^= 0x01;
    const svid = await a.issueSvid('spiffe://example.org/w', { via: inter });
    assert.throws(() => verifyX509Svid([svid.certDer, bad], a.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'bad_signature'));
  });

  it('no_bundle: a leaf of a trust domain with no bundle', async () => {
    const svid = await other.issueSvid('spiffe://other.org/w');
    assert.throws(() => verifyX509Svid(svid.chain, a.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'no_bundle'));
    assert.equal(verifyX509Svid(svid.chain, TestCa.bundleOf(['example.org', [a.rootDer]], ['other.org', [other.rootDer]])).id, 'spiffe://other.org/w');
    // an empty bundle trusts nothing
    assert.throws(() => verifyX509Svid(svid.chain, TestCa.bundleOf(['other.org', []])), fails('ERR_X509_SVID_UNTRUSTED', 'unknown_authority'));
  });
});

describe('verifyX509Svid: path rules', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  async function leafUnder(signer: TestSigner, id = 'spiffe://example.org/w'): Promise<Buffer[]> {
    const leaf = await ca.issueRaw({ signer, uris: [id], ca: false });
    return [leaf.certDer, ...signer.chain];
  }

  it('intermediate_not_ca: without the CA flag, or without basicConstraints', async () => {
    const notCa = await ca.rawIntermediate({ ca: false, keyUsage: ['digitalSignature', 'keyCertSign'] });
    const chain1 = await leafUnder(notCa);
    assert.throws(() => verifyX509Svid(chain1, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'intermediate_not_ca'));
    const noBc = await ca.rawIntermediate({ ca: undefined, keyUsage: ['digitalSignature', 'keyCertSign'] });
    const chain2 = await leafUnder(noBc);
    assert.throws(() => verifyX509Svid(chain2, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'intermediate_not_ca'));
  });

  it('intermediate_no_key_cert_sign', async () => {
    const noSign = await ca.rawIntermediate({ keyUsage: ['digitalSignature', 'cRLSign'] });
    const chain3 = await leafUnder(noSign);
    assert.throws(() => verifyX509Svid(chain3, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'intermediate_no_key_cert_sign'));
    const noKu = await ca.rawIntermediate({ keyUsage: null });
    const chain4 = await leafUnder(noKu);
    assert.throws(() => verifyX509Svid(chain4, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'intermediate_no_key_cert_sign'));
  });

  it('a trust anchor must be a CA with keyCertSign too', async () => {
    const notCa = await ca.rawIntermediate({ ca: false, keyUsage: ['digitalSignature', 'keyCertSign'] });
    const chain = await leafUnder(notCa);
    assert.throws(() => verifyX509Svid([chain[0]!], TestCa.bundleOf(['example.org', [notCa.certDer]])), fails('ERR_X509_SVID_UNTRUSTED', 'intermediate_not_ca'));
  });

  it('expired intermediate while the leaf is still valid', async () => {
    const now = Date.now();
    const inter = await ca.rawIntermediate({ notAfter: new Date(now + 10 * MINUTE) });
    const leaf = await ca.issueRaw({ signer: inter, ca: false, notAfter: new Date(now + 60 * MINUTE) });
    const chain = [leaf.certDer, inter.certDer];
    assert.doesNotThrow(() => verifyX509Svid(chain, ca.bundle(), { now: new Date(now + 5 * MINUTE) }));
    assert.throws(() => verifyX509Svid(chain, ca.bundle(), { now: new Date(now + 30 * MINUTE) }), fails('ERR_X509_SVID_UNTRUSTED', 'expired'));
  });

  it('path_len: a CA below a pathLen 0 intermediate', async () => {
    const i1 = await ca.rawIntermediate({ pathLen: 0 });
    const i2 = await ca.rawIntermediate({ signer: i1 });
    const chain5 = await leafUnder(i2);
    assert.throws(() => verifyX509Svid(chain5, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'path_len'));
    const chain6 = await leafUnder(i2);
    assert.throws(() => opensslVerify([ca.rootDer], (chain6)[0]!, [i2.certDer, i1.certDer]), /path length/i);
    const j1 = await ca.rawIntermediate({ pathLen: 1 });
    const j2 = await ca.rawIntermediate({ signer: j1 });
    assert.equal(verifyX509Svid(await leafUnder(j2), ca.bundle()).chain.length, 4);
    // pathLen 0 directly above the leaf is fine
    assert.equal(verifyX509Svid(await leafUnder(i1), ca.bundle()).chain.length, 3);
    // a root with pathLen 0 and an intermediate under it
    const strict = await ca.rawIntermediate({ signer: 'self', pathLen: 0, subject: { commonName: 'strict root' } });
    const under = await ca.rawIntermediate({ signer: strict });
    const chain7 = await leafUnder(under);
    assert.throws(() => verifyX509Svid(chain7, TestCa.bundleOf(['example.org', [strict.certDer]])), fails('ERR_X509_SVID_UNTRUSTED', 'path_len'));
  });

  it('name_constraints: URI (host / .domain) and DNS subtrees, permitted and excluded', async () => {
    const permitted = await ca.rawIntermediate({ nameConstraints: { permittedUris: ['example.org'] } });
    assert.equal(verifyX509Svid(await leafUnder(permitted), ca.bundle()).id, 'spiffe://example.org/w');
    opensslVerify([ca.rootDer], (await leafUnder(permitted))[0]!, [permitted.certDer]);

    const elsewhere = await ca.rawIntermediate({ nameConstraints: { permittedUris: ['other.org'] } });
    const chain8 = await leafUnder(elsewhere);
    assert.throws(() => verifyX509Svid(chain8, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));
    const chain9 = await leafUnder(elsewhere);
    assert.throws(() => opensslVerify([ca.rootDer], (chain9)[0]!, [elsewhere.certDer]), /subtree violation/i);

    const excluded = await ca.rawIntermediate({ nameConstraints: { excludedUris: ['example.org'] } });
    const chain10 = await leafUnder(excluded);
    assert.throws(() => verifyX509Svid(chain10, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));

    // ".example.org" permits subdomains only, not example.org itself
    const subOnly = await ca.rawIntermediate({ nameConstraints: { permittedUris: ['.example.org'] }, uris: [] });
    const chain11 = await leafUnder(subOnly);
    assert.throws(() => verifyX509Svid(chain11, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));

    // DNS constraints apply to DNS SANs (and not to URIs)
    const dnsOnly = await ca.rawIntermediate({ nameConstraints: { permittedDns: ['example.org'] } });
    const good = await ca.issueRaw({ signer: dnsOnly, ca: false, dnsNames: ['api.example.org'] });
    assert.doesNotThrow(() => verifyX509Svid([good.certDer, dnsOnly.certDer], ca.bundle()));
    const evil = await ca.issueRaw({ signer: dnsOnly, ca: false, dnsNames: ['evil.com'] });
    assert.throws(() => verifyX509Svid([evil.certDer, dnsOnly.certDer], ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));

    // constraints on the root bind the intermediate's own SAN too
    const root = await ca.rawIntermediate({ signer: 'self', subject: { commonName: 'nc root' }, nameConstraints: { permittedUris: ['other.org'] }, uris: [] });
    const inter = await ca.rawIntermediate({ signer: root });
    const leafChain = await leafUnder(inter, 'spiffe://other.org/w');
    assert.throws(() => verifyX509Svid(leafChain, TestCa.bundleOf(['other.org', [root.certDer]])), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));
  });

  it('fails closed on name constraint types it does not enforce when the path has such names', async () => {
    // permitted iPAddress 10.0.0.0/8 and directoryName O=Acme
    const ipSubtree = der.sequence(der.contextPrimitive(7, Buffer.from([10, 0, 0, 0, 255, 0, 0, 0])));
    const dnSubtree = der.sequence(der.explicit(4, encodeName({ organization: 'Acme' })));
    const nc = extension(OID.nameConstraints, true, der.sequence(der.explicit(0, Buffer.concat([ipSubtree, dnSubtree]))));
    const inter = await ca.rawIntermediate({ extraExtensions: [nc] });
    // vacuous: the leaf has neither IP SANs nor a subject
    assert.equal(verifyX509Svid(await leafUnder(inter), ca.bundle()).id, 'spiffe://example.org/w');
    // a leaf with a subject (directoryName) or an IP SAN cannot be proven inside the subtrees
    const withSubject = await ca.issueRaw({ signer: inter, ca: false, subject: { organization: 'Acme' } });
    assert.throws(() => verifyX509Svid([withSubject.certDer, inter.certDer], ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));
    const san = extension(OID.subjectAltName, true, der.sequence(der.contextPrimitive(6, Buffer.from('spiffe://example.org/w')), der.contextPrimitive(7, Buffer.from([10, 1, 2, 3]))));
    const withIp = await ca.issueRaw({ signer: inter, ca: false, uris: [], dnsNames: [], extraExtensions: [san] });
    assert.throws(() => verifyX509Svid([withIp.certDer, inter.certDer], ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'name_constraints'));
  });

  it('bounds path length and survives loops', async () => {
    // A chain of 8 intermediates: 10 certificates with leaf and root -> accepted.
    let signer: TestSigner = ca.root;
    const chainOf = async (n: number): Promise<TestSigner> => {
      signer = ca.root;
      for (let i = 0; i < n; i++) signer = await ca.rawIntermediate({ signer });
      return signer;
    };
    assert.equal(verifyX509Svid(await leafUnder(await chainOf(8)), ca.bundle()).chain.length, 10);
    const chain12 = await leafUnder(await chainOf(9));
    assert.throws(() => verifyX509Svid(chain12, ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'unknown_authority'));

    // Two CAs that certify each other, and a leaf under one of them: no path, no hang.
    const kx = await generateKeyPair('ec-p256');
    const ky = await generateKeyPair('ec-p256');
    const x0 = await ca.issueRaw({ signer: 'self', keyPair: kx, ca: true, subject: { commonName: 'X' }, uris: [] });
    const y0 = await ca.issueRaw({ signer: 'self', keyPair: ky, ca: true, subject: { commonName: 'Y' }, uris: [] });
    const xByY = await ca.issueRaw({ signer: { certDer: y0.certDer, privateKey: ky.privateKey, chain: [] }, keyPair: kx, ca: true, subject: { commonName: 'X' }, uris: [] });
    const yByX = await ca.issueRaw({ signer: { certDer: x0.certDer, privateKey: kx.privateKey, chain: [] }, keyPair: ky, ca: true, subject: { commonName: 'Y' }, uris: [] });
    const leaf = await ca.issueRaw({ signer: { certDer: x0.certDer, privateKey: kx.privateKey, chain: [] }, ca: false });
    const start = Date.now();
    assert.throws(() => verifyX509Svid([leaf.certDer, xByY.certDer, yByX.certDer, x0.certDer, y0.certDer], ca.bundle()), fails('ERR_X509_SVID_UNTRUSTED', 'unknown_authority'));
    assert.ok(Date.now() - start < 2000);
    // ... and with Y in the bundle the same soup verifies
    const viaY = verifyX509Svid([leaf.certDer, xByY.certDer, yByX.certDer], TestCa.bundleOf(['example.org', [y0.certDer]]));
    assert.deepEqual(viaY.chain, [leaf.certDer, xByY.certDer, y0.certDer]);
  });
});

describe('parseX509Svid', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  it('parses certificates + PKCS#8 key and checks they match', async () => {
    const inter = await ca.createIntermediate();
    const svid = await ca.issueSvid('spiffe://example.org/w', { via: inter });
    const parsed = parseX509Svid(svid.chain, svid.keyPkcs8);
    assert.equal(parsed.id, 'spiffe://example.org/w');
    assert.deepEqual(parsed.certificates, svid.chain);
    assert.ok(parsed.privateKey.equals(svid.privateKey));
    assert.equal(parseX509Svid(Buffer.concat(svid.chain), svid.keyPkcs8).certificates.length, 2);
    const other = await ca.issueSvid('spiffe://example.org/other');
    assert.throws(() => parseX509Svid(svid.chain, other.keyPkcs8), fails('ERR_X509_SVID_INVALID', 'key_mismatch'));
    assert.throws(() => parseX509Svid(svid.chain, Buffer.from('nope')), fails('ERR_X509_SVID_INVALID', 'key'));
    assert.throws(() => parseX509Svid([], svid.keyPkcs8), fails('ERR_X509_SVID_INVALID', 'empty_chain'));
  });

  it('enforces the leaf rules and CA-ness of the rest', async () => {
    const evil = await ca.evilLeaf('two_uri_sans');
    assert.throws(() => parseX509Svid(evil.chain, evil.keyPkcs8), fails('ERR_X509_SVID_INVALID', 'multiple_uri_sans'));
    const svid = await ca.issueSvid('spiffe://example.org/w');
    const notCa = await ca.issueSvid('spiffe://example.org/x');
    assert.throws(() => parseX509Svid([svid.certDer, notCa.certDer], svid.keyPkcs8), fails('ERR_X509_SVID_INVALID', 'intermediate_not_ca'));
    const noSign = await ca.rawIntermediate({ keyUsage: ['cRLSign'] });
    assert.throws(() => parseX509Svid([svid.certDer, noSign.certDer], svid.keyPkcs8), fails('ERR_X509_SVID_INVALID', 'intermediate_no_key_cert_sign'));
  });
});

// ---- exact messages, validity edges, signature algorithms, name constraints, pathLen ----------

/** What a call throws, as `code/reason: message [cause code or -]` (`-`: no cause property). */
function thrown(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    const e = err as SpiffeError;
    return `${e.code}/${e.reason}: ${e.message} [${Object.hasOwn(e, 'cause') ? String((e.cause as { code?: string }).code) : '-'}]`;
  }
  return 'accepted';
}

/** How verify.ts names a certificate in its messages: serial, and the subject when there is one. */
function who(certDer: Buffer): string {
  const info = parseCertificate(certDer);
  const subject = nameToString(info.subject);
  return `certificate ${info.serialHex}${subject ? ` (${subject})` : ''}`;
}

/** `certDer` with its signature algorithm (both copies) and optionally its subject replaced, signed by `sign`. */
function resign(certDer: Buffer, algDer: Buffer, sign: (tbs: Buffer) => Buffer, subjectDer?: Buffer): Buffer {
  const [tbsNode] = der.readChildren(certDer, der.readRoot(certDer));
  const tbsDer = Buffer.from(der.bytesOf(certDer, tbsNode!));
  const parts: Buffer[] = der.readChildren(tbsDer, der.readRoot(tbsDer)).map((n): Buffer => Buffer.from(der.bytesOf(tbsDer, n)));
  parts[2] = algDer;
  if (subjectDer !== undefined) parts[5] = subjectDer;
  const tbs = der.sequence(...parts);
  return der.sequence(tbs, algDer, der.bitString(sign(tbs)));
}

const UNTRUSTED = 'ERR_X509_SVID_UNTRUSTED';
const INVALID = 'ERR_X509_SVID_INVALID';
const SECOND = 1000;

describe('verifyX509Svid: exact messages', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  it('leaf rules', async () => {
    const id = 'spiffe://example.org/evil';
    const of = async (kind: EvilKind): Promise<string> => {
      const evil = await ca.evilLeaf(kind);
      return thrown(() => verifyX509Svid(evil.chain, ca.bundle()));
    };
    assert.equal(await of('no_uri_san'), `${INVALID}/no_uri_san: leaf certificate has no URI SAN: an X509-SVID has exactly one [-]`);
    assert.equal(await of('two_uri_sans'), `${INVALID}/multiple_uri_sans: leaf certificate has 2 URI SANs: an X509-SVID has exactly one [-]`);
    let why = '';
    try {
      parseSpiffeId('spiffe://example.org/a/../b');
    } catch (err) {
      why = (err as Error).message;
    }
    assert.equal(await of('invalid_uri'), `${INVALID}/invalid_spiffe_id: leaf URI SAN "spiffe://example.org/a/../b" is not a valid SPIFFE ID: ${why} [ERR_SPIFFE_ID_INVALID]`);
    assert.equal(await of('root_path'), `${INVALID}/root_path: leaf SPIFFE ID "spiffe://example.org" has no path: it names a trust domain, not a workload [-]`);
    assert.equal(await of('ca_leaf'), `${INVALID}/leaf_is_ca: leaf certificate for "${id}" is a CA (basicConstraints CA=true) [-]`);
    assert.equal(await of('key_cert_sign'), `${INVALID}/leaf_key_cert_sign: leaf certificate for "${id}" has keyUsage keyCertSign [-]`);
    assert.equal(await of('crl_sign'), `${INVALID}/leaf_crl_sign: leaf certificate for "${id}" has keyUsage cRLSign [-]`);
    assert.equal(await of('no_digital_signature'), `${INVALID}/leaf_no_digital_signature: leaf certificate for "${id}" lacks keyUsage digitalSignature [-]`);
    assert.equal(await of('no_key_usage'), `${INVALID}/leaf_no_digital_signature: leaf certificate for "${id}" lacks keyUsage digitalSignature [-]`);
  });

  it('chain size, bundle, authority and signature', async () => {
    const svid = await ca.issueSvid('spiffe://example.org/w');
    assert.equal(thrown(() => verifyX509Svid([], ca.bundle())), `${INVALID}/empty_chain: no certificates presented [-]`);
    assert.equal(thrown(() => verifyX509Svid(Buffer.alloc(0), ca.bundle())), `${INVALID}/empty_chain: no certificates presented [-]`);
    const many = Array.from({ length: MAX_CHAIN_CERTIFICATES + 1 }, () => svid.certDer);
    assert.equal(thrown(() => verifyX509Svid(many, ca.bundle())), `${INVALID}/too_many_certificates: 33 certificates presented, at most 32 accepted [-]`);
    // Exactly MAX_CHAIN_CERTIFICATES certificates (the root repeated) are accepted.
    const full = [svid.certDer, ...Array.from({ length: MAX_CHAIN_CERTIFICATES - 1 }, () => ca.rootDer)];
    assert.equal(verifyX509Svid(full, ca.bundle()).id, 'spiffe://example.org/w');
    assert.equal(thrown(() => verifyX509Svid(svid.chain, TestCa.bundleOf(['other.org', [ca.rootDer]]))), `${UNTRUSTED}/no_bundle: no X.509 bundle for trust domain "example.org" of "spiffe://example.org/w" [-]`);
    const stranger = await TestCa.create({ trustDomain: 'example.org' });
    assert.equal(thrown(() => verifyX509Svid(svid.chain, stranger.bundle())), `${UNTRUSTED}/unknown_authority: no path from "spiffe://example.org/w" to an authority in the bundle of "example.org" [-]`);
    const bad = await ca.evilLeaf('bad_signature');
    assert.equal(thrown(() => verifyX509Svid(bad.chain, ca.bundle())), `${UNTRUSTED}/bad_signature: a certificate in the chain of "spiffe://example.org/evil" has a signature that does not verify with its issuer's key [-]`);
  });

  it('path rules name the certificate (serial, subject when it has one)', async () => {
    const notCa = await ca.rawIntermediate({ ca: false, keyUsage: ['digitalSignature', 'keyCertSign'] });
    const l1 = await ca.issueRaw({ signer: notCa, ca: false });
    assert.equal(thrown(() => verifyX509Svid([l1.certDer, notCa.certDer], ca.bundle())), `${UNTRUSTED}/intermediate_not_ca: ${who(notCa.certDer)} signs certificates but is not a CA [-]`);
    const noSign = await ca.rawIntermediate({ keyUsage: ['digitalSignature', 'cRLSign'] });
    const l2 = await ca.issueRaw({ signer: noSign, ca: false });
    assert.equal(thrown(() => verifyX509Svid([l2.certDer, noSign.certDer], ca.bundle())), `${UNTRUSTED}/intermediate_no_key_cert_sign: ${who(noSign.certDer)} lacks keyUsage keyCertSign [-]`);
    const i1 = await ca.rawIntermediate({ pathLen: 0 });
    const i2 = await ca.rawIntermediate({ signer: i1 });
    const l3 = await ca.issueRaw({ signer: i2, ca: false });
    assert.equal(thrown(() => verifyX509Svid([l3.certDer, i2.certDer, i1.certDer], ca.bundle())), `${UNTRUSTED}/path_len: ${who(i1.certDer)} allows 0 CA certificates below it, the path has 1 [-]`);
    const nc = await ca.rawIntermediate({ nameConstraints: { permittedUris: ['other.org'] } });
    const l4 = await ca.issueRaw({ signer: nc, ca: false });
    assert.match(who(l4.certDer), /^certificate [0-9a-f]+$/); // the leaf has no subject
    assert.equal(
      thrown(() => verifyX509Svid([l4.certDer, nc.certDer], ca.bundle())),
      `${UNTRUSTED}/name_constraints: ${who(l4.certDer)} violates the name constraints of ${who(nc.certDer)}: URI SAN "spiffe://example.org/evil" is outside the permitted URI subtrees [-]`,
    );
  });
});

describe('verifyX509Svid: validity windows at their exact edges', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  it('leaf: valid at notBefore and at notAfter, not a millisecond outside', async () => {
    const nb = new Date(Math.ceil(Date.now() / SECOND) * SECOND + 60 * SECOND);
    const na = new Date(nb.getTime() + 120 * SECOND);
    const leaf = await ca.issueRaw({ ca: false, notBefore: nb, notAfter: na });
    const at = (t: number): string => thrown(() => verifyX509Svid([leaf.certDer], ca.bundle(), { now: new Date(t) }));
    assert.equal(at(nb.getTime()), 'accepted');
    assert.equal(at(na.getTime()), 'accepted');
    assert.equal(at(nb.getTime() - 1), `${UNTRUSTED}/not_yet_valid: ${who(leaf.certDer)} is not valid before ${nb.toISOString()} [-]`);
    assert.equal(at(na.getTime() + 1), `${UNTRUSTED}/expired: ${who(leaf.certDer)} expired at ${na.toISOString()} [-]`);
  });

  it('intermediate: its own window bounds the path while the leaf is valid', async () => {
    const nb = new Date(Math.ceil(Date.now() / SECOND) * SECOND + 30 * SECOND);
    const na = new Date(nb.getTime() + 90 * SECOND);
    const inter = await ca.rawIntermediate({ notBefore: nb, notAfter: na });
    const leaf = await ca.issueRaw({ signer: inter, ca: false, notBefore: new Date(nb.getTime() - 3600 * SECOND), notAfter: new Date(na.getTime() + 3600 * SECOND) });
    const at = (t: number): string => thrown(() => verifyX509Svid([leaf.certDer, inter.certDer], ca.bundle(), { now: new Date(t) }));
    assert.equal(at(nb.getTime()), 'accepted');
    assert.equal(at(na.getTime()), 'accepted');
    assert.equal(at(nb.getTime() - 1), `${UNTRUSTED}/not_yet_valid: ${who(inter.certDer)} is not valid before ${nb.toISOString()} [-]`);
    assert.equal(at(na.getTime() + 1), `${UNTRUSTED}/expired: ${who(inter.certDer)} expired at ${na.toISOString()} [-]`);
  });

  it('a complete path that fails validation is reported before a bad signature elsewhere', async () => {
    // Bundle: an impostor root with the real root's subject (tried first, its signature fails),
    // then the real root. The leaf is expired: the real path's error wins.
    const subject = { organization: 'Edge', commonName: 'Edge Root' };
    const real = await ca.rawIntermediate({ signer: 'self', subject });
    const fake = await ca.rawIntermediate({ signer: 'self', subject });
    const now = Date.now();
    const leaf = await ca.issueRaw({ signer: real, ca: false, notBefore: new Date(now - 7200 * SECOND), notAfter: new Date(now - 3600 * SECOND) });
    const bundle = TestCa.bundleOf(['example.org', [fake.certDer, real.certDer]]);
    assert.equal(thrown(() => verifyX509Svid([leaf.certDer], bundle)).split(':')[0], `${UNTRUSTED}/expired`);
    // Valid leaf: the real root is found past the impostor.
    const ok = await ca.issueRaw({ signer: real, ca: false });
    assert.deepEqual(verifyX509Svid([ok.certDer], bundle).chain, [ok.certDer, real.certDer]);
  });
});

describe('verifyX509Svid: signature algorithms', () => {
  it('the signature algorithm must be supported and fit the issuer key type', async () => {
    const rsaCa = await TestCa.create({ trustDomain: 'example.org', keyType: 'rsa-2048' });
    const ecCa = await TestCa.create({ trustDomain: 'example.org' });
    const rsaLeaf = await rsaCa.issueRaw({ ca: false });
    const ecLeaf = await ecCa.issueRaw({ ca: false });
    const rsaKey: KeyObject = rsaCa.keyPair.privateKey;
    const ecKey: KeyObject = ecCa.keyPair.privateKey;
    const alg = (oid: string, params: boolean): Buffer => (params ? der.sequence(der.oid(oid), der.nullValue()) : der.sequence(der.oid(oid)));
    const verdict = (cert: Buffer, ca: TestCa): string => thrown(() => verifyX509Svid([cert], ca.bundle())).split(':')[0]!;
    // Correctly signed with each supported hash: accepted.
    for (const [oid, hash] of [[OID.sha256WithRsa, 'sha256'], [OID.sha384WithRsa, 'sha384'], [OID.sha512WithRsa, 'sha512']] as const) {
      assert.equal(verdict(resign(rsaLeaf.certDer, alg(oid, true), (tbs) => cryptoSign(hash, tbs, rsaKey)), rsaCa), 'accepted', oid);
    }
    for (const [oid, hash] of [[OID.ecdsaWithSha256, 'sha256'], [OID.ecdsaWithSha384, 'sha384'], [OID.ecdsaWithSha512, 'sha512']] as const) {
      assert.equal(verdict(resign(ecLeaf.certDer, alg(oid, false), (tbs) => cryptoSign(hash, tbs, ecKey)), ecCa), 'accepted', oid);
    }
    // SHA-1 (correctly signed) is not accepted.
    assert.equal(verdict(resign(rsaLeaf.certDer, alg(OID.sha1WithRsa, true), (tbs) => cryptoSign('sha1', tbs, rsaKey)), rsaCa), `${UNTRUSTED}/bad_signature`);
    assert.equal(verdict(resign(ecLeaf.certDer, alg(OID.ecdsaWithSha1, false), (tbs) => cryptoSign('sha1', tbs, ecKey)), ecCa), `${UNTRUSTED}/bad_signature`);
    // A valid RSA signature labelled ECDSA, and a valid ECDSA signature labelled RSA: refused.
    assert.equal(verdict(resign(rsaLeaf.certDer, alg(OID.ecdsaWithSha256, false), (tbs) => cryptoSign('sha256', tbs, rsaKey)), rsaCa), `${UNTRUSTED}/bad_signature`);
    assert.equal(verdict(resign(ecLeaf.certDer, alg(OID.sha256WithRsa, true), (tbs) => cryptoSign('sha256', tbs, ecKey)), ecCa), `${UNTRUSTED}/bad_signature`);
    // The hash named must be the hash used.
    assert.equal(verdict(resign(ecLeaf.certDer, alg(OID.ecdsaWithSha384, false), (tbs) => cryptoSign('sha256', tbs, ecKey)), ecCa), `${UNTRUSTED}/bad_signature`);
  });
});

describe('verifyX509Svid: candidate issuers whose key cannot serve', () => {
  it('an issuer with an unusable key (invalid EC point, Ed25519) is passed over, not fatal', async () => {
    const ca = await TestCa.create({ trustDomain: 'example.org' });
    const subject = { commonName: 'Shared Issuer Name' };
    const real = await ca.rawIntermediate({ signer: 'self', subject, uris: [] });
    /** The real root with another SubjectPublicKeyInfo: same subject, so Name matching finds it. */
    const withSpki = (spki: Buffer): Buffer => {
      const [tbsNode] = der.readChildren(real.certDer, der.readRoot(real.certDer));
      const tbsDer = Buffer.from(der.bytesOf(real.certDer, tbsNode!));
      const parts: Buffer[] = der.readChildren(tbsDer, der.readRoot(tbsDer)).map((n): Buffer => Buffer.from(der.bytesOf(tbsDer, n)));
      parts[6] = spki;
      const tbs = der.sequence(...parts);
      return der.sequence(tbs, der.sequence(der.oid(OID.ecdsaWithSha256)), der.bitString(cryptoSign('sha256', tbs, real.privateKey)));
    };
    const badPoint = Buffer.from(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ format: 'der', type: 'spki' }));
    badPoint[badPoint.length - 1]! ^= 0x01;
    const broken = withSpki(badPoint);
    assert.throws(() => parseCertificate(broken).publicKey);
    const ed = withSpki(generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }));
    const leaf = await ca.issueRaw({ signer: real, ca: false });
    for (const odd of [broken, ed]) {
      assert.deepEqual(verifyX509Svid([leaf.certDer], TestCa.bundleOf(['example.org', [odd, real.certDer]])).chain, [leaf.certDer, real.certDer]);
      assert.equal(thrown(() => verifyX509Svid([leaf.certDer], TestCa.bundleOf(['example.org', [odd]]))).split(':')[0], `${UNTRUSTED}/bad_signature`);
    }
  });
});

describe('verifyX509Svid: name constraints in detail', () => {
  let ca: TestCa;
  before(async () => {
    ca = await TestCa.create({ trustDomain: 'example.org' });
  });

  /** Verdict for root(nc) -> intermediate(uris, own nc) -> leaf(id, dnsNames, extra extensions). */
  async function verdict(
    nc: Parameters<TestCa['rawIntermediate']>[0],
    interUris: string[],
    leaf: { id?: string; dnsNames?: string[]; extraExtensions?: Buffer[]; uris?: string[] } = {},
    interNc?: Parameters<TestCa['rawIntermediate']>[0],
  ): Promise<string> {
    const id = leaf.id ?? 'spiffe://example.org/w';
    const root = await ca.rawIntermediate({ signer: 'self', subject: { commonName: `nc root ${Math.random()}` }, uris: [], ...nc });
    const inter = await ca.rawIntermediate({ signer: root, uris: interUris, ...interNc });
    const l = await ca.issueRaw({ signer: inter, ca: false, uris: leaf.uris ?? [id], dnsNames: leaf.dnsNames ?? [], extraExtensions: leaf.extraExtensions ?? [] });
    const td = new URL(id).host;
    const r = thrown(() => verifyX509Svid([l.certDer, inter.certDer], TestCa.bundleOf([td, [root.certDer]])));
    const i = r.indexOf(': ', r.indexOf(' violates '));
    return r.startsWith(`${UNTRUSTED}/name_constraints`) ? r.slice(i + 2, -4) : r;
  }

  it('URI hosts: userinfo, port, case, query and fragment do not hide the host', async () => {
    const nc = { nameConstraints: { permittedUris: ['example.org'] } };
    for (const uri of ['https://user@example.org:8443/x', 'HTTPS://EXAMPLE.ORG/x', 'https://example.org?q', 'https://example.org#f', 'spiffe://example.org']) {
      assert.equal(await verdict(nc, [uri]), 'accepted', uri);
    }
    assert.equal(await verdict(nc, ['https://example.org@evil.com/']), 'URI SAN "https://example.org@evil.com/" is outside the permitted URI subtrees');
    assert.equal(await verdict(nc, ['https://evil.com:443/example.org']), 'URI SAN "https://evil.com:443/example.org" is outside the permitted URI subtrees');
    for (const uri of ['https://[::1]/x', 'urn:example.org', 'https:///x', 'https://user@/x', '1https://example.org/']) {
      assert.equal(await verdict(nc, [uri]), `URI SAN ${JSON.stringify(uri)} has no host to match URI name constraints`, uri);
    }
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['EXAMPLE.org'] } }, []), 'accepted');
  });

  it('URI subtrees: exact host, .domain for subdomains only, empty for all; excluded', async () => {
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['.example.org'] } }, [], { id: 'spiffe://sub.example.org/w' }), 'accepted');
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['.example.org'] } }, [], { id: 'spiffe://badexample.org/w' }), 'URI SAN "spiffe://badexample.org/w" is outside the permitted URI subtrees');
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['example.org'] } }, [], { id: 'spiffe://sub.example.org/w' }), 'URI SAN "spiffe://sub.example.org/w" is outside the permitted URI subtrees');
    // A host that is the `.domain` text itself is not a subdomain of it.
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['.example.org'] } }, ['https://.example.org/'], { id: 'spiffe://sub.example.org/w' }), 'URI SAN "https://.example.org/" is outside the permitted URI subtrees');
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['other.org', 'example.org'] } }, []), 'accepted');
    assert.equal(await verdict({ nameConstraints: { permittedUris: [''] } }, ['https://anything.test/']), 'accepted');
    assert.equal(await verdict({ nameConstraints: { excludedUris: ['.evil.com'] } }, ['https://a.evil.com/']), 'URI SAN "https://a.evil.com/" is in the excluded URI subtree ".evil.com"');
    assert.equal(await verdict({ nameConstraints: { excludedUris: ['.evil.com'] } }, ['https://evil.com/']), 'accepted');
    assert.equal(await verdict({ nameConstraints: { excludedUris: [''] } }, []), 'URI SAN "spiffe://example.org/w" is in the excluded URI subtree ""');
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['example.org'], excludedUris: ['example.org'] } }, []), 'URI SAN "spiffe://example.org/w" is in the excluded URI subtree "example.org"');
    // URI subtrees say nothing about DNS SANs.
    assert.equal(await verdict({ nameConstraints: { permittedUris: ['example.org'] } }, [], { dnsNames: ['evil.com'] }), 'accepted');
  });

  it('dNSName subtrees: the domain and its subdomains, .domain for subdomains only, case-insensitive; excluded', async () => {
    const dns = (permittedDns?: string[], excludedDns?: string[]) => ({ nameConstraints: { ...(permittedDns ? { permittedDns } : {}), ...(excludedDns ? { excludedDns } : {}) } });
    assert.equal(await verdict(dns(['example.org']), [], { dnsNames: ['example.org', 'api.example.org'] }), 'accepted');
    assert.equal(await verdict(dns(['EXAMPLE.ORG']), [], { dnsNames: ['api.example.org'] }), 'accepted');
    assert.equal(await verdict(dns(['example.org']), [], { dnsNames: ['badexample.org'] }), 'DNS SAN "badexample.org" is outside the permitted DNS subtrees');
    assert.equal(await verdict(dns(['.example.org']), [], { dnsNames: ['a.example.org'] }), 'accepted');
    assert.equal(await verdict(dns(['.example.org']), [], { dnsNames: ['example.org'] }), 'DNS SAN "example.org" is outside the permitted DNS subtrees');
    assert.equal(await verdict(dns(['']), [], { dnsNames: ['anything.test'] }), 'accepted');
    assert.equal(await verdict(dns(undefined, ['example.org']), [], { dnsNames: ['a.example.org'] }), 'DNS SAN "a.example.org" is in the excluded DNS subtree "example.org"');
    assert.equal(await verdict(dns(undefined, ['.example.org']), [], { dnsNames: ['example.org'] }), 'accepted');
    assert.equal(await verdict(dns(undefined, ['example.org']), [], { dnsNames: ['example.com'] }), 'accepted');
  });

  it('email and otherName subtrees fail closed only when the path holds such names (permitted or excluded)', async () => {
    const ncExt = (tag: 0 | 1, subtree: Buffer): Buffer => extension(OID.nameConstraints, true, der.sequence(der.explicit(tag, subtree)));
    const emailSubtree = der.sequence(der.contextPrimitive(1, Buffer.from('example.org')));
    const otherName = der.explicit(0, Buffer.concat([der.oid('1.3.6.1.4.1.311.20.2.3'), der.explicit(0, der.utf8String('w@example.org'))]));
    const otherSubtree = der.sequence(otherName);
    const san = (...extra: Buffer[]): Buffer => extension(OID.subjectAltName, true, der.sequence(der.contextPrimitive(6, Buffer.from('spiffe://example.org/w')), ...extra));
    const leafWith = (ext: Buffer) => ({ uris: [], extraExtensions: [ext] });
    for (const tag of [0, 1] as const) {
      const email = { extraExtensions: [ncExt(tag, emailSubtree)] };
      assert.equal(await verdict(email, [], leafWith(san())), 'accepted');
      assert.equal(await verdict(email, [], leafWith(san(der.contextPrimitive(1, Buffer.from('w@example.org'))))), 'email name constraints are not supported and the certificate has email names');
      const other = { extraExtensions: [ncExt(tag, otherSubtree)] };
      assert.equal(await verdict(other, [], leafWith(san())), 'accepted');
      assert.equal(await verdict(other, [], leafWith(san(otherName))), 'other name constraints are not supported and the certificate has other names');
    }
  });

  it('an emailAddress attribute in the subject counts as an email name', async () => {
    const root = await ca.rawIntermediate({ signer: 'self', subject: { commonName: 'email nc root' }, uris: [], extraExtensions: [extension(OID.nameConstraints, true, der.sequence(der.explicit(0, der.sequence(der.contextPrimitive(1, Buffer.from('example.org'))))))] });
    const l = await ca.issueRaw({ signer: root, ca: false, uris: ['spiffe://example.org/w'] });
    const withEmail = resign(l.certDer, der.sequence(der.oid(OID.ecdsaWithSha256)), (tbs) => cryptoSign('sha256', tbs, root.privateKey), der.sequence(der.set(der.sequence(der.oid('1.2.840.113549.1.9.1'), der.ia5String('w@example.org')))));
    const withCn = resign(l.certDer, der.sequence(der.oid(OID.ecdsaWithSha256)), (tbs) => cryptoSign('sha256', tbs, root.privateKey), encodeName({ commonName: 'w' }));
    const bundle = TestCa.bundleOf(['example.org', [root.certDer]]);
    assert.equal(thrown(() => verifyX509Svid([l.certDer], bundle)), 'accepted');
    assert.equal(thrown(() => verifyX509Svid([withCn], bundle)), 'accepted');
    assert.match(thrown(() => verifyX509Svid([withEmail], bundle)), /name_constraints: .*: email name constraints are not supported and the certificate has email names \[-\]$/);
  });

  it('a CA\'s own names are not bound by its own constraints; a self-issued leaf is', async () => {
    // Intermediate with URI SAN spiffe://other.org constraining to example.org: its own name is exempt.
    assert.equal(await verdict({}, ['spiffe://other.org'], {}, { nameConstraints: { permittedUris: ['example.org'] } }), 'accepted');
    // A leaf whose subject equals its issuer's (self-issued) is still checked (RFC 5280 6.1.3 applies the exemption to CAs only).
    const subject = { commonName: 'self-issued leaf root' };
    const root = await ca.rawIntermediate({ signer: 'self', subject, uris: [], nameConstraints: { permittedUris: ['other.org'] } });
    const leaf = await ca.issueRaw({ signer: root, ca: false, subject });
    assert.ok(parseCertificate(leaf.certDer).selfIssued);
    assert.match(thrown(() => verifyX509Svid([leaf.certDer], TestCa.bundleOf(['example.org', [root.certDer]]))), /^ERR_X509_SVID_UNTRUSTED\/name_constraints: /);
  });
});

describe('verifyX509Svid: self-issued intermediates (key rollover certificates)', () => {
  it('do not count toward pathLen and are exempt from name constraints', async () => {
    const ca = await TestCa.create({ trustDomain: 'example.org' });
    const subject = { organization: 'Rollover', commonName: 'R' };
    const root = await ca.rawIntermediate({ signer: 'self', subject, uris: [], pathLen: 0, nameConstraints: { permittedUris: ['example.org'] } });
    // Same subject as the root, signed by the root, its own key and a name outside the subtree.
    const rollover = await ca.rawIntermediate({ signer: root, subject, uris: ['spiffe://other.org'] });
    assert.ok(parseCertificate(rollover.certDer).selfIssued);
    const leaf = await ca.issueRaw({ signer: rollover, ca: false });
    const bundle = TestCa.bundleOf(['example.org', [root.certDer]]);
    assert.deepEqual(verifyX509Svid([leaf.certDer, rollover.certDer], bundle).chain, [leaf.certDer, rollover.certDer, root.certDer]);
    // A CA that is not self-issued in the same place breaks both rules.
    const other = await ca.rawIntermediate({ signer: root, subject: { commonName: 'not R' }, uris: ['spiffe://example.org'] });
    const leaf2 = await ca.issueRaw({ signer: other, ca: false });
    assert.match(thrown(() => verifyX509Svid([leaf2.certDer, other.certDer], bundle)), /^ERR_X509_SVID_UNTRUSTED\/path_len: .* allows 0 CA certificates below it, the path has 1 \[-\]$/);
  });
});

describe('parseX509Svid: exact messages', () => {
  it('names the certificate and keeps the key error as cause', async () => {
    const ca = await TestCa.create({ trustDomain: 'example.org' });
    const svid = await ca.issueSvid('spiffe://example.org/w');
    const notCa = await ca.issueSvid('spiffe://example.org/x');
    const noKu = await ca.rawIntermediate({ keyUsage: null });
    assert.equal(thrown(() => parseX509Svid([], svid.keyPkcs8)), `${INVALID}/empty_chain: no certificates in the X509-SVID [-]`);
    const many = Array.from({ length: MAX_CHAIN_CERTIFICATES + 1 }, () => svid.certDer);
    assert.equal(thrown(() => parseX509Svid(many, svid.keyPkcs8)), `${INVALID}/too_many_certificates: 33 certificates, at most 32 accepted [-]`);
    const full = [svid.certDer, ...Array.from({ length: MAX_CHAIN_CERTIFICATES - 1 }, () => ca.rootDer)];
    assert.equal(parseX509Svid(full, svid.keyPkcs8).certificates.length, MAX_CHAIN_CERTIFICATES);
    assert.equal(thrown(() => parseX509Svid([svid.certDer, notCa.certDer], svid.keyPkcs8)), `${INVALID}/intermediate_not_ca: ${who(notCa.certDer)} in the X509-SVID chain is not a CA [-]`);
    assert.equal(thrown(() => parseX509Svid([svid.certDer, noKu.certDer], svid.keyPkcs8)), `${INVALID}/intermediate_no_key_cert_sign: ${who(noKu.certDer)} in the X509-SVID chain lacks keyCertSign [-]`);
    assert.equal(thrown(() => parseX509Svid(svid.chain, notCa.keyPkcs8)), `${INVALID}/key_mismatch: the private key does not match the X509-SVID of "spiffe://example.org/w" [-]`);
    assert.match(thrown(() => parseX509Svid(svid.chain, Buffer.from('nope'))), /^ERR_X509_SVID_INVALID\/key: X509-SVID private key is not valid PKCS#8 DER \[ERR_KEY_INVALID\]$/);
  });
});

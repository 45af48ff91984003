import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Bundle,
  BundleSet,
  MAX_SEQUENCE,
  marshalBundle,
  marshalJwtBundle,
  parseBundle,
  parseJwtBundleJwks,
  parseX509BundleDer,
  parseX509BundlePem,
  rawTopLevelMember,
} from './bundle.js';
import { isSpiffeError } from './errors.js';
import { parseTrustDomain, trustDomainId } from './id.js';
import { exportPublicKeySpki, generateKeyPair } from './keys.js';
import { certificatesToPem, toPem } from './pem.js';

const td = parseTrustDomain('example.org');
const otherTd = parseTrustDomain('spiffe://other.example');

let dir: string;
interface Ca {
  der: Buffer;
  key: KeyObject;
}
/** openssl-made CA certificates: EC P-256, RSA-2048, EC P-384, and an Ed25519 one (unsupported). */
const ca: Record<'ec' | 'rsa' | 'p384' | 'ed25519', Ca> = {} as never;
/** JWT signing keys. */
let jwtEc: KeyObject;
let jwtRsa: KeyObject;
let jwtEc2: KeyObject;

function opensslCa(name: string, keyArgs: string[]): Ca {
  const out = join(dir, `${name}.der`);
  const keyFile = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-keyout', keyFile, '-out', out, '-outform', 'DER',
    '-subj', `/O=SPIFFE/CN=${name}`, '-days', '1',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-addext', 'subjectAltName=URI:spiffe://example.org'], { stdio: 'pipe' });
  return { der: readFileSync(out), key: createPrivateKey(readFileSync(keyFile)) };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-bundle-test-'));
  ca.ec = opensslCa('ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
  ca.rsa = opensslCa('rsa', ['-newkey', 'rsa:2048']);
  ca.p384 = opensslCa('p384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384']);
  ca.ed25519 = opensslCa('ed25519', ['-newkey', 'ed25519']);
  jwtEc = (await generateKeyPair('ec-p256')).publicKey;
  jwtRsa = (await generateKeyPair('rsa-2048')).publicKey;
  jwtEc2 = (await generateKeyPair('ec-p384')).publicKey;
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** A JWK of a public key computed by node itself (on a key imported from DER: safe to export). */
function nodeJwk(key: KeyObject): Record<string, unknown> {
  return createPublicKey({ key: exportPublicKeySpki(key), format: 'der', type: 'spki' }).export({ format: 'jwk' }) as Record<string, unknown>;
}

const bundleErr = (reason: string) => (err: unknown) => {
  assert.ok(isSpiffeError(err, 'ERR_BUNDLE_INVALID'), `expected ERR_BUNDLE_INVALID, got ${String(err)}`);
  assert.equal(err.reason, reason, err.message);
  return true;
};

function fullBundle(): Bundle {
  return new Bundle(td, {
    x509Authorities: [ca.ec.der, ca.rsa.der, ca.p384.der],
    jwtAuthorities: [['kid-ec', jwtEc], ['kid-rsa', jwtRsa], ['a-kid', jwtEc2]],
    sequence: 42n,
    refreshHintSeconds: 300,
  });
}

const doc = (keys: unknown[], extra = ''): string => `{"keys":${JSON.stringify(keys)}${extra}}`;
const x509Key = (c: Ca, over: Record<string, unknown> = {}) => ({ use: 'x509-svid', ...nodeJwk(c.key), x5c: [c.der.toString('base64')], ...over });
const jwtKey = (kid: string | undefined, key: KeyObject, over: Record<string, unknown> = {}) => ({ use: 'jwt-svid', ...(kid === undefined ? {} : { kid }), ...nodeJwk(key), ...over });

// ---------------------------------------------------------------------------------------------

test('marshal -> parse round trip gives an equal bundle; marshal is stable', () => {
  const b = fullBundle();
  const json = marshalBundle(b);
  const back = parseBundle(td, json);
  assert.ok(back.equals(b));
  assert.ok(b.equals(back));
  assert.equal(marshalBundle(back), json);
  assert.ok(parseBundle(td, Buffer.from(json)).equals(b), 'bytes input');
  assert.deepEqual(back.x509Authorities(), [ca.ec.der, ca.rsa.der, ca.p384.der], 'order kept');
  assert.equal(back.sequence, 42n);
  assert.equal(back.refreshHintSeconds, 300);
  for (const [kid, key] of [['kid-ec', jwtEc], ['kid-rsa', jwtRsa], ['a-kid', jwtEc2]] as const) {
    assert.ok(back.jwtAuthority(kid)!.equals(key), kid);
  }
});

test('marshalled JSON has the exact SPIFFE bundle shape', () => {
  const json = marshalBundle(fullBundle());
  const parsed = JSON.parse(json) as { keys: Record<string, unknown>[]; spiffe_sequence: number; spiffe_refresh_hint: number };
  assert.deepEqual(Object.keys(parsed), ['keys', 'spiffe_sequence', 'spiffe_refresh_hint']);
  assert.equal(parsed.spiffe_sequence, 42);
  assert.equal(parsed.spiffe_refresh_hint, 300);
  assert.equal(parsed.keys.length, 6);
  const [x1, x2, x3, ...jwt] = parsed.keys;
  for (const [k, c] of [[x1, ca.ec], [x2, ca.rsa], [x3, ca.p384]] as const) {
    assert.equal(k!['use'], 'x509-svid');
    assert.equal('kid' in k!, false, 'no kid on X.509 authorities');
    assert.deepEqual(k!['x5c'], [c.der.toString('base64')], 'x5c: exactly one standard-base64 DER');
    const x5c = k!['x5c'] as string[];
    assert.match(x5c[0]!, /^[A-Za-z0-9+/]+=*$/);
    const { use: _use, x5c: _x5c, ...params } = k!;
    assert.deepEqual(params, nodeJwk(c.key), 'kty + public params of the certificate key');
  }
  assert.deepEqual(Object.keys(x1!), ['use', 'kty', 'crv', 'x', 'y', 'x5c']);
  assert.deepEqual(Object.keys(x2!), ['use', 'kty', 'n', 'e', 'x5c']);
  // JWT authorities sorted by kid, with use + kid + params.
  assert.deepEqual(jwt.map((k) => k['kid']), ['a-kid', 'kid-ec', 'kid-rsa']);
  assert.deepEqual(Object.keys(jwt[1]!), ['use', 'kty', 'kid', 'crv', 'x', 'y']);
  assert.deepEqual(Object.keys(jwt[2]!), ['use', 'kty', 'kid', 'n', 'e']);
  for (const k of jwt) assert.equal(k['use'], 'jwt-svid');
  assert.deepEqual(jwt[1], { use: 'jwt-svid', kid: 'kid-ec', ...nodeJwk(jwtEc) });

  // Refresh hint omitted when undefined; sequence always present.
  const bare = new Bundle(td);
  assert.equal(marshalBundle(bare), '{"keys":[],"spiffe_sequence":0}');
});

test('marshal output does not depend on JWT authority insertion order', () => {
  const a = new Bundle(td, { jwtAuthorities: [['k1', jwtEc], ['k2', jwtRsa]] });
  const b = new Bundle(td, { jwtAuthorities: [['k2', jwtRsa], ['k1', jwtEc]] });
  assert.ok(a.equals(b));
  assert.equal(marshalBundle(a), marshalBundle(b));
  assert.equal(marshalJwtBundle(a), marshalJwtBundle(b));
});

test('spiffe_sequence keeps every digit: 2^64-1, 2^53+1 and neighbours round trip exactly', () => {
  for (const seq of [MAX_SEQUENCE, 2n ** 53n + 1n, 2n ** 53n, 2n ** 63n, 1n, 0n, 10000000000000000001n]) {
    const b = new Bundle(td, { x509Authorities: [ca.ec.der], sequence: seq });
    const json = marshalBundle(b);
    assert.ok(json.includes(`"spiffe_sequence":${seq.toString()}`), json.slice(-60));
    assert.equal(parseBundle(td, json).sequence, seq);
  }
  assert.equal(parseBundle(td, '{"keys":[],"spiffe_sequence":18446744073709551615}').sequence, 18446744073709551615n);
  assert.equal(parseBundle(td, '{"keys":[],"spiffe_sequence":9007199254740993}').sequence, 9007199254740993n);
  // Formatting, member order, escapes in member names, and look-alike members elsewhere.
  assert.equal(parseBundle(td, '{ "spiffe_sequence" :\n 9007199254740993 ,\t"keys" : [ ] }').sequence, 9007199254740993n);
  assert.equal(parseBundle(td, '{"keys":[],"spiffe\\u005fsequence":9007199254740993}').sequence, 9007199254740993n);
  const decoy = '{"keys":[{"use":"other","spiffe_sequence":99999999999999999999,"s":"\\"spiffe_sequence\\":1,"}],' +
    '"x":{"spiffe_sequence":5,"y":["]","}"]},"spiffe_sequence":18446744073709551615,"z":"spiffe_sequence"}';
  assert.equal(parseBundle(td, decoy).sequence, MAX_SEQUENCE);
  // Duplicate member: the last one wins, as JSON.parse does for every other member.
  assert.equal(parseBundle(td, '{"keys":[],"spiffe_sequence":1,"spiffe_sequence":9007199254740993}').sequence, 9007199254740993n);
  assert.equal(parseBundle(td, '{"keys":[]}').sequence, 0n, 'absent -> 0');
});

test('rawTopLevelMember finds the raw text of top-level members only', () => {
  assert.equal(rawTopLevelMember('{"a":{"b":1},"b":2.50}', 'b'), '2.50');
  assert.equal(rawTopLevelMember('{"a":{"b":1}}', 'b'), undefined);
  assert.equal(rawTopLevelMember('{"b":"x\\"y"}', 'b'), '"x\\"y"');
  assert.equal(rawTopLevelMember('{}', 'b'), undefined);
});

test('bad spiffe_sequence and spiffe_refresh_hint are rejected', () => {
  const table: Array<[string, string]> = [
    ['18446744073709551616', 'sequence'],
    ['99999999999999999999999', 'sequence'],
    ['-1', 'sequence'],
    ['1.5', 'sequence'],
    ['1.0', 'sequence'],
    ['1e3', 'sequence'],
    ['"5"', 'sequence'],
    ['null', 'sequence'],
    ['true', 'sequence'],
  ];
  for (const [raw, reason] of table) assert.throws(() => parseBundle(td, `{"keys":[],"spiffe_sequence":${raw}}`), bundleErr(reason), raw);
  for (const raw of ['-1', '1.5', '"300"', 'null', '1e300']) {
    assert.throws(() => parseBundle(td, `{"keys":[],"spiffe_refresh_hint":${raw}}`), bundleErr('refresh_hint'), raw);
  }
  assert.equal(parseBundle(td, '{"keys":[],"spiffe_refresh_hint":0}').refreshHintSeconds, 0);
  assert.equal(parseBundle(td, '{"keys":[]}').refreshHintSeconds, undefined);
  // The setters enforce the same ranges.
  const b = new Bundle(td);
  assert.throws(() => { b.sequence = MAX_SEQUENCE + 1n; }, bundleErr('sequence'));
  assert.throws(() => { b.sequence = -1n; }, bundleErr('sequence'));
  assert.throws(() => { b.refreshHintSeconds = 1.5; }, bundleErr('refresh_hint'));
  assert.throws(() => { b.refreshHintSeconds = -1; }, bundleErr('refresh_hint'));
});

test('keys with unknown use or unknown kty are ignored', () => {
  const json = doc([
    { use: 'enc', ...nodeJwk(jwtEc), kid: 'enc-key' },
    { use: 'x509-svid', kty: 'OKP', crv: 'Ed25519', x: 'AAAA', x5c: ['!!not even base64'] },
    { use: 'jwt-svid', kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' },
    { use: 'jwt-svid', kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo', kid: 'ed' },
    { use: 'wit-svid', kty: 'EC', kid: 'future' },
    x509Key(ca.ec),
    jwtKey('good', jwtEc),
  ]);
  const b = parseBundle(td, json);
  assert.deepEqual(b.x509Authorities(), [ca.ec.der]);
  assert.deepEqual([...b.jwtAuthorities().keys()], ['good']);
});

test('structural errors, each with its reason', () => {
  const two = x509Key(ca.ec, { x5c: [ca.ec.der.toString('base64'), ca.rsa.der.toString('base64')] });
  const table: Array<[string, string | Uint8Array, string]> = [
    ['not JSON', '{"keys":[', 'json'],
    ['empty text', '', 'json'],
    ['top-level array', '[]', 'json'],
    ['top-level null', 'null', 'json'],
    ['top-level string', '"keys"', 'json'],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), 'json'],
    ['no keys', '{}', 'keys'],
    ['keys not array', '{"keys":{}}', 'keys'],
    ['keys null', '{"keys":null}', 'keys'],
    ['key not an object', '{"keys":[1]}', 'keys'],
    ['key is an array', '{"keys":[[]]}', 'keys'],
    ['missing use (x509)', doc([{ ...x509Key(ca.ec), use: undefined }]), 'missing_use'],
    ['missing use (jwt)', doc([{ kid: 'k', ...nodeJwk(jwtEc) }]), 'missing_use'],
    ['use not a string', doc([{ ...jwtKey('k', jwtEc), use: 1 }]), 'jwk'],
    ['kty missing', doc([{ use: 'jwt-svid', kid: 'k' }]), 'jwk'],
    ['two x5c', doc([two]), 'x5c'],
    ['zero x5c', doc([x509Key(ca.ec, { x5c: [] })]), 'x5c'],
    ['no x5c', doc([x509Key(ca.ec, { x5c: undefined })]), 'x5c'],
    ['x5c not array', doc([x509Key(ca.ec, { x5c: ca.ec.der.toString('base64') })]), 'x5c'],
    ['x5c entry not string', doc([x509Key(ca.ec, { x5c: [5] })]), 'x5c'],
    ['x5c base64url', doc([x509Key(ca.ec, { x5c: [ca.ec.der.toString('base64url')] })]), 'x5c'],
    ['x5c not a certificate', doc([x509Key(ca.ec, { x5c: [Buffer.from('hello world!').toString('base64')] })]), 'x5c'],
    ['x5c trailing bytes', doc([x509Key(ca.ec, { x5c: [Buffer.concat([ca.ec.der, Buffer.from([0])]).toString('base64')] })]), 'x5c'],
    ['x5c key differs from JWK x', doc([x509Key(ca.ec, { x: nodeJwk(jwtEc)['x'] })]), 'x5c'],
    ['x5c kty differs', doc([x509Key(ca.ec, { ...nodeJwk(ca.rsa.key), crv: undefined, x: undefined, y: undefined })]), 'x5c'],
    ['x5c Ed25519 cert declared EC', doc([x509Key(ca.ed25519, { kty: 'EC' })]), 'x5c'],
    ['jwt key without kid', doc([jwtKey(undefined, jwtEc)]), 'kid'],
    ['jwt key with empty kid', doc([jwtKey('', jwtEc)]), 'kid'],
    ['jwt key with numeric kid', doc([jwtKey(undefined, jwtEc, { kid: 7 })]), 'kid'],
    ['duplicate kid', doc([jwtKey('k', jwtEc), jwtKey('k', jwtRsa)]), 'duplicate_kid'],
    ['duplicate kid, same key', doc([jwtKey('k', jwtEc), jwtKey('k', jwtEc)]), 'duplicate_kid'],
    ['jwt key with private d', doc([jwtKey('k', jwtEc, { d: 'AAAA' })]), 'jwk'],
    ['jwt key missing y', doc([jwtKey('k', jwtEc, { y: undefined })]), 'jwk'],
    ['jwt key off-curve', doc([jwtKey('k', jwtEc, { y: nodeJwk(jwtEc)['x'] })]), 'jwk'],
    ['jwt key unknown curve', doc([jwtKey('k', jwtEc, { crv: 'secp256k1' })]), 'jwk'],
  ];
  for (const [name, input, reason] of table) assert.throws(() => parseBundle(td, input), bundleErr(reason), name);
});

test('x509 keys: JWK params optional; duplicate certificates collapse; kid tolerated', () => {
  const b = parseBundle(td, doc([
    { use: 'x509-svid', kty: 'EC', x5c: [ca.ec.der.toString('base64')] },
    x509Key(ca.ec),
    x509Key(ca.rsa, { kid: 'ignored' }),
  ]));
  assert.deepEqual(b.x509Authorities(), [ca.ec.der, ca.rsa.der]);
});

test('"keys": [] is a valid empty bundle that trusts nothing', () => {
  const b = parseBundle(td, '{"keys":[],"spiffe_sequence":3}');
  assert.ok(b.isEmpty());
  assert.equal(b.sequence, 3n);
  assert.deepEqual(b.getX509Authorities(td), []);
  assert.equal(b.getJwtAuthorities(td)?.size, 0);
  assert.equal(b.x509AuthoritiesDer().length, 0);
  assert.equal(b.x509AuthoritiesPem(), '');
  assert.equal(b.getX509Authorities(otherTd), undefined);
});

test('a realistic SPIRE bundle document (spire-server bundle show -format spiffe) parses', () => {
  // Generated by openssl: the X.509 authority (EC P-256 CA) and the JWT authority (EC P-256).
  const jwtKeyPem = execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']).toString();
  const jwtPub = createPublicKey(createPrivateKey(jwtKeyPem));
  const caJwk = new X509Certificate(ca.ec.der).publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const jwtJwk = jwtPub.export({ format: 'jwk' }) as Record<string, string>;
  const spireDoc = `{
    "keys": [
        {
            "use": "x509-svid",
            "kty": "EC",
            "crv": "P-256",
            "x": "${caJwk['x']}",
            "y": "${caJwk['y']}",
            "x5c": [
                "${ca.ec.der.toString('base64')}"
            ]
        },
        {
            "use": "jwt-svid",
            "kty": "EC",
            "kid": "KQsp5wYd9KftvvOyGUFSMqXs7QKWwH4U",
            "crv": "P-256",
            "x": "${jwtJwk['x']}",
            "y": "${jwtJwk['y']}"
        }
    ],
    "spiffe_refresh_hint": 300,
    "spiffe_sequence": 1
}
`;
  const b = parseBundle(td, new TextEncoder().encode(spireDoc));
  assert.equal(b.trustDomain, td);
  assert.deepEqual(b.x509Authorities(), [ca.ec.der]);
  assert.ok(b.jwtAuthority('KQsp5wYd9KftvvOyGUFSMqXs7QKWwH4U')!.equals(jwtPub));
  assert.equal(b.sequence, 1n);
  assert.equal(b.refreshHintSeconds, 300);
  assert.ok(parseBundle(td, marshalBundle(b)).equals(b));
});

test('Bundle add/remove/has for both kinds, DER and PEM views, clone and equals', () => {
  const b = new Bundle(td);
  assert.equal(b.addX509Authority(ca.ec.der), true);
  assert.equal(b.addX509Authority(Buffer.from(ca.ec.der)), false, 'no duplicates');
  assert.equal(b.addX509Authority(ca.rsa.der), true);
  assert.ok(b.hasX509Authority(ca.rsa.der));
  assert.deepEqual(b.x509AuthoritiesDer(), Buffer.concat([ca.ec.der, ca.rsa.der]));
  assert.equal(b.x509AuthoritiesPem(), certificatesToPem([ca.ec.der, ca.rsa.der]));
  assert.throws(() => b.addX509Authority(Buffer.from('nope')), bundleErr('certificate'));
  assert.throws(() => b.addX509Authority(ca.ed25519.der), bundleErr('certificate'), 'Ed25519 CA: not expressible in a SPIFFE bundle');

  assert.equal(b.addJwtAuthority('k1', jwtEc), true);
  assert.equal(b.addJwtAuthority('k1', jwtEc), false, 'same key again: no-op');
  assert.throws(() => b.addJwtAuthority('k1', jwtRsa), bundleErr('duplicate_kid'));
  assert.throws(() => b.addJwtAuthority('', jwtRsa), bundleErr('kid'));
  assert.throws(() => b.addJwtAuthority('k9', ca.ed25519.key), bundleErr('jwk'));
  // A private key is reduced to its public half.
  assert.equal(b.addJwtAuthority('k2', ca.p384.key), true);
  assert.equal(b.jwtAuthority('k2')!.type, 'public');
  assert.ok(b.jwtAuthority('k2')!.equals(createPublicKey(ca.p384.key)));

  const c = b.clone();
  assert.ok(c.equals(b));
  c.sequence = 1n;
  assert.ok(!c.equals(b), 'sequence is part of equality');
  c.sequence = 0n;
  c.refreshHintSeconds = 60;
  assert.ok(!c.equals(b), 'refresh hint is part of equality');
  c.refreshHintSeconds = undefined;
  assert.ok(c.removeX509Authority(ca.rsa.der));
  assert.ok(!c.removeX509Authority(ca.rsa.der));
  assert.ok(b.hasX509Authority(ca.rsa.der), 'clone is independent');
  assert.ok(!c.equals(b));
  assert.ok(c.addX509Authority(ca.rsa.der));
  assert.ok(c.equals(b));
  const reordered = new Bundle(td, { x509Authorities: [ca.rsa.der, ca.ec.der], jwtAuthorities: b.jwtAuthorities() });
  assert.ok(!reordered.equals(b), 'X.509 order is part of the encoding, hence of equality');
  assert.ok(c.removeJwtAuthority('k1'));
  assert.ok(!c.hasJwtAuthority('k1'));
  assert.ok(b.hasJwtAuthority('k1'));
  assert.ok(!c.equals(b));
  c.addJwtAuthority('k1', jwtEc2);
  assert.ok(!c.equals(b), 'same kid, other key');
  assert.ok(!new Bundle(otherTd).equals(new Bundle(td)), 'trust domain is part of equality');

  // Returned collections are copies: mutating them does not touch the bundle.
  b.x509Authorities()[0]!.fill(0);
  (b.getX509Authorities(td) as Buffer[]).pop();
  b.jwtAuthorities().clear();
  assert.deepEqual(b.x509Authorities(), [ca.ec.der, ca.rsa.der]);
  assert.equal(b.jwtAuthorities().size, 2);
  // The bundle keeps its own copy of added DER.
  const mine = Buffer.from(ca.p384.der);
  b.addX509Authority(mine);
  mine.fill(0);
  assert.deepEqual(b.x509Authorities()[2], ca.p384.der);
});

test('Bundle as a source answers only for its own trust domain', () => {
  const b = fullBundle();
  assert.equal(b.getX509Authorities(td)?.length, 3);
  assert.equal(b.getJwtAuthorities(td)?.size, 3);
  assert.equal(b.getX509Authorities(otherTd), undefined);
  assert.equal(b.getJwtAuthorities(otherTd), undefined);
});

test('parseX509BundlePem / parseX509BundleDer', () => {
  const pem = certificatesToPem([ca.ec.der, ca.rsa.der]);
  const fromPem = parseX509BundlePem(td, pem);
  assert.deepEqual(fromPem.x509Authorities(), [ca.ec.der, ca.rsa.der]);
  assert.equal(fromPem.jwtAuthorities().size, 0);
  const fromDer = parseX509BundleDer(td, Buffer.concat([ca.ec.der, ca.rsa.der]));
  assert.ok(fromDer.equals(fromPem));
  assert.deepEqual(fromDer.x509AuthoritiesDer(), Buffer.concat([ca.ec.der, ca.rsa.der]));

  const table: Array<[string, () => unknown, string]> = [
    ['empty PEM', () => parseX509BundlePem(td, ''), 'pem'],
    ['key in PEM', () => parseX509BundlePem(td, pem + toPem('PRIVATE KEY', Buffer.from('k'))), 'pem'],
    ['truncated last PEM block', () => parseX509BundlePem(td, pem.slice(0, pem.lastIndexOf('-----END'))), 'pem'],
    ['PEM block not a cert', () => parseX509BundlePem(td, toPem('CERTIFICATE', Buffer.from([0x30, 0x00]))), 'certificate'],
    ['empty DER', () => parseX509BundleDer(td, Buffer.alloc(0)), 'der'],
    ['truncated DER', () => parseX509BundleDer(td, ca.ec.der.subarray(0, 50)), 'der'],
    ['DER not a cert', () => parseX509BundleDer(td, Buffer.from([0x30, 0x00])), 'certificate'],
  ];
  for (const [name, fn, reason] of table) assert.throws(fn, bundleErr(reason), name);
});

test('marshalJwtBundle / parseJwtBundleJwks: only JWT authorities, each with kid and use', () => {
  const b = fullBundle();
  const jwks = JSON.parse(marshalJwtBundle(b)) as { keys: Record<string, unknown>[] };
  assert.deepEqual(Object.keys(jwks), ['keys']);
  assert.deepEqual(jwks.keys.map((k) => [k['use'], k['kid']]), [['jwt-svid', 'a-kid'], ['jwt-svid', 'kid-ec'], ['jwt-svid', 'kid-rsa']]);
  for (const k of jwks.keys) assert.equal('x5c' in k, false);

  const back = parseJwtBundleJwks(td, marshalJwtBundle(b));
  assert.deepEqual(back.x509Authorities(), []);
  assert.deepEqual([...back.jwtAuthorities().keys()], ['a-kid', 'kid-ec', 'kid-rsa']);
  assert.ok(back.jwtAuthority('kid-rsa')!.equals(jwtRsa));

  // Client side is lenient about `use` (absent or sig) but still requires kid; X.509 keys skipped.
  const lenient = parseJwtBundleJwks(td, doc([{ kid: 'a', ...nodeJwk(jwtEc) }, { use: 'sig', kid: 'b', ...nodeJwk(jwtRsa) }, x509Key(ca.ec)]));
  assert.deepEqual([...lenient.jwtAuthorities().keys()], ['a', 'b']);
  assert.throws(() => parseJwtBundleJwks(td, doc([{ ...nodeJwk(jwtEc) }])), bundleErr('kid'));
  assert.throws(() => parseJwtBundleJwks(td, doc([jwtKey('a', jwtEc), jwtKey('a', jwtRsa)])), bundleErr('duplicate_kid'));
  assert.throws(() => parseJwtBundleJwks(td, '[]'), bundleErr('json'));
  assert.throws(() => parseJwtBundleJwks(td, '{"keys":5}'), bundleErr('keys'));
  assert.equal(parseJwtBundleJwks(td, '{"keys":[]}').isEmpty(), true);
});

test('BundleSet keeps trust domains apart and encodes the Workload API maps', () => {
  const tdC = parseTrustDomain('a.example');
  const ours = new Bundle(td, { x509Authorities: [ca.ec.der, ca.p384.der], jwtAuthorities: [['ours', jwtEc]] });
  const theirs = new Bundle(otherTd, { x509Authorities: [ca.rsa.der], jwtAuthorities: [['theirs', jwtRsa]] });
  const jwtOnly = new Bundle(tdC, { jwtAuthorities: [['c', jwtEc2]] });
  const set = new BundleSet([ours, theirs]).set(jwtOnly);
  assert.equal(set.size, 3);
  assert.deepEqual(set.trustDomains(), ['a.example', 'example.org', 'other.example'], 'sorted');
  assert.deepEqual([...set].map((b) => b.trustDomain), ['a.example', 'example.org', 'other.example']);

  // Sources: never mixed.
  assert.deepEqual(set.getX509Authorities(td), [ca.ec.der, ca.p384.der]);
  assert.deepEqual(set.getX509Authorities(otherTd), [ca.rsa.der]);
  assert.deepEqual([...set.getJwtAuthorities(td)!.keys()], ['ours']);
  assert.deepEqual([...set.getJwtAuthorities(otherTd)!.keys()], ['theirs']);
  assert.equal(set.getJwtAuthorities(parseTrustDomain('nobody.example')), undefined);

  const x509 = set.x509BundlesMap();
  assert.deepEqual([...x509.keys()], ['spiffe://example.org', 'spiffe://other.example'], 'no empty X.509 bundle values');
  assert.deepEqual(x509.get(trustDomainId(td)), Buffer.concat([ca.ec.der, ca.p384.der]));
  assert.deepEqual(x509.get(trustDomainId(otherTd)), ca.rsa.der);

  const jwt = set.jwtBundlesMap();
  assert.deepEqual([...jwt.keys()], ['spiffe://a.example', 'spiffe://example.org', 'spiffe://other.example']);
  for (const [id, bytes] of jwt) {
    assert.ok(Buffer.isBuffer(bytes));
    const parsed = parseJwtBundleJwks(parseTrustDomain(id), bytes);
    assert.ok(parsed.jwtAuthorities().size === 1);
    for (const k of (JSON.parse(bytes.toString()) as { keys: Record<string, unknown>[] }).keys) assert.equal(typeof k['kid'], 'string');
  }
  assert.ok(parseJwtBundleJwks(td, jwt.get(trustDomainId(td))!).jwtAuthority('ours')!.equals(jwtEc));

  // set() replaces, never merges; delete/has.
  set.set(new Bundle(td, { x509Authorities: [ca.rsa.der] }));
  assert.deepEqual(set.getX509Authorities(td), [ca.rsa.der]);
  assert.equal(set.getJwtAuthorities(td)!.size, 0);
  assert.ok(set.has(otherTd));
  assert.ok(set.delete(otherTd));
  assert.ok(!set.has(otherTd));
  assert.equal(set.getX509Authorities(otherTd), undefined);

  const copy = set.clone();
  assert.ok(copy.equals(set));
  copy.get(td)!.sequence = 9n;
  assert.ok(!copy.equals(set));
  assert.equal(set.get(td)!.sequence, 0n);
});

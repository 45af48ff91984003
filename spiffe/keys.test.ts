import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import {
  DEFAULT_KEY_TYPE,
  KEY_TYPES,
  exportPrivateKeyPkcs8,
  exportPublicKeySpki,
  generateKeyPair,
  hashFor,
  importPrivateKeyPkcs8,
  importPublicKeySpki,
  isKeyType,
  jwkToPublicKey,
  jwsAlgFor,
  keyTypeOf,
  parseKeyType,
  publicKeyToJwk,
  type KeyType,
} from './keys.js';
import { isSpiffeError } from './errors.js';

const expected: Record<KeyType, { asym: string; curve?: string; bits?: number; alg: string; hash: string }> = {
  'ec-p256': { asym: 'ec', curve: 'prime256v1', alg: 'ES256', hash: 'sha256' },
  'ec-p384': { asym: 'ec', curve: 'secp384r1', alg: 'ES384', hash: 'sha384' },
  'rsa-2048': { asym: 'rsa', bits: 2048, alg: 'RS256', hash: 'sha256' },
  'rsa-4096': { asym: 'rsa', bits: 4096, alg: 'RS256', hash: 'sha256' },
};

// Generate each type once (rsa-4096 is slow) and share.
const pairs = new Map<KeyType, Awaited<ReturnType<typeof generateKeyPair>>>();
async function pair(type: KeyType) {
  let p = pairs.get(type);
  if (!p) pairs.set(type, (p = await generateKeyPair(type)));
  return p;
}

/** A fresh KeyObject imported from DER: safe to export as JWK with node (see keys.ts). */
function reimportedPublic(key: KeyObject): KeyObject {
  return createPublicKey({ key: exportPublicKeySpki(key), format: 'der', type: 'spki' });
}

const isKeyErr = (reason?: string) => (err: unknown) => isSpiffeError(err, 'ERR_KEY_INVALID') && (reason === undefined || err.reason === reason);

for (const type of KEY_TYPES) {
  test(`generateKeyPair(${type}): right kind, keyTypeOf, jwsAlgFor, hashFor, sign/verify`, async () => {
    const { privateKey, publicKey } = await pair(type);
    const e = expected[type];
    assert.equal(privateKey.type, 'private');
    assert.equal(publicKey.type, 'public');
    assert.equal(privateKey.asymmetricKeyType, e.asym);
    if (e.curve) assert.equal(privateKey.asymmetricKeyDetails?.namedCurve, e.curve);
    if (e.bits) {
      assert.equal(privateKey.asymmetricKeyDetails?.modulusLength, e.bits);
      assert.equal(privateKey.asymmetricKeyDetails?.publicExponent, 65537n);
    }
    assert.equal(keyTypeOf(privateKey), type);
    assert.equal(keyTypeOf(publicKey), type);
    assert.equal(jwsAlgFor(privateKey), e.alg);
    assert.equal(hashFor(publicKey), e.hash);
    const data = Buffer.from('spindle');
    assert.ok(verify(e.hash, data, publicKey, sign(e.hash, data, privateKey)));
  });

  test(`PKCS#8 and SPKI DER round trips (${type})`, async () => {
    const { privateKey, publicKey } = await pair(type);
    const pkcs8 = exportPrivateKeyPkcs8(privateKey);
    const back = importPrivateKeyPkcs8(pkcs8);
    assert.ok(back.equals(privateKey));
    assert.deepEqual(exportPrivateKeyPkcs8(back), pkcs8);
    const spki = exportPublicKeySpki(publicKey);
    assert.deepEqual(exportPublicKeySpki(privateKey), spki, 'SPKI of the private key = SPKI of its public key');
    const pub = importPublicKeySpki(spki);
    assert.ok(pub.equals(publicKey));
    // A Uint8Array view into a bigger buffer imports too.
    const padded = Buffer.concat([Buffer.alloc(7), spki, Buffer.alloc(3)]);
    assert.ok(importPublicKeySpki(new Uint8Array(padded.buffer, padded.byteOffset + 7, spki.length)).equals(publicKey));
  });

  test(`publicKeyToJwk matches node's JWK export and jwkToPublicKey round trips (${type})`, async () => {
    const { privateKey, publicKey } = await pair(type);
    const imported = reimportedPublic(publicKey);
    const nodeJwk = imported.export({ format: 'jwk' });
    const ours = publicKeyToJwk(publicKey);
    assert.deepEqual({ ...ours }, { ...nodeJwk });
    assert.deepEqual(publicKeyToJwk(privateKey), ours, 'a private key gives its public JWK');
    assert.deepEqual(publicKeyToJwk(exportPublicKeySpki(publicKey)), ours, 'SPKI DER input');
    const back = jwkToPublicKey(ours as unknown as Record<string, unknown>);
    assert.ok(back.equals(publicKey));
  });
}

test('DEFAULT_KEY_TYPE is ec-p256; isKeyType / parseKeyType', () => {
  assert.equal(DEFAULT_KEY_TYPE, 'ec-p256');
  for (const t of KEY_TYPES) {
    assert.ok(isKeyType(t));
    assert.equal(parseKeyType(t), t);
  }
  for (const bad of ['', 'EC-P256', 'ec-p521', 'rsa-1024', 'ed25519', 'rsa']) {
    assert.equal(isKeyType(bad), false);
    assert.throws(() => parseKeyType(bad), isKeyErr('key_type'));
  }
});

test('unsupported keys -> ERR_KEY_INVALID', () => {
  const cases: Array<[string, KeyObject]> = [
    ['ed25519', generateKeyPairSync('ed25519').publicKey],
    ['ec p-521', generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).publicKey],
    ['secp256k1', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey],
    ['rsa-1024', generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey],
  ];
  for (const [name, key] of cases) {
    assert.throws(() => keyTypeOf(key), isKeyErr('key_type'), name);
    assert.throws(() => jwsAlgFor(key), isKeyErr('key_type'), name);
  }
  const ed = generateKeyPairSync('ed25519');
  assert.throws(() => publicKeyToJwk(ed.publicKey), isKeyErr('spki'));
  assert.throws(() => publicKeyToJwk(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey), isKeyErr('spki'));
  assert.throws(() => jwkToPublicKey({ kty: 'OKP', crv: 'Ed25519', x: 'AAAA' }), isKeyErr('jwk_kty'));
  assert.throws(() => jwkToPublicKey({ kty: 'oct', k: 'AAAA' }), isKeyErr('jwk_kty'));
});

test('P-521 public key converts to JWK (bundles may carry it) and back', () => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
  const jwk = publicKeyToJwk(publicKey);
  assert.equal(jwk.kty, 'EC');
  assert.deepEqual({ ...jwk }, { ...reimportedPublic(publicKey).export({ format: 'jwk' }) });
  assert.ok(jwkToPublicKey(jwk as unknown as Record<string, unknown>).equals(publicKey));
});

test('jwkToPublicKey refuses private members and bad parameters', async () => {
  const { publicKey } = await pair('ec-p256');
  const jwk = publicKeyToJwk(publicKey) as unknown as Record<string, unknown>;
  for (const member of ['d', 'p', 'q']) {
    assert.throws(() => jwkToPublicKey({ ...jwk, [member]: 'AAAA' }), isKeyErr('jwk_private'), member);
  }
  assert.throws(() => jwkToPublicKey({ ...jwk, x: undefined }), isKeyErr('jwk'));
  assert.throws(() => jwkToPublicKey({ ...jwk, crv: 'P-999' }), isKeyErr('jwk'));
  assert.throws(() => jwkToPublicKey({ ...jwk, y: jwk['x'] }), isKeyErr('jwk'), 'point not on the curve');
  assert.throws(() => jwkToPublicKey({ kty: 'RSA', n: 'AQAB' }), isKeyErr('jwk'));
  // Unrelated extra members (use, kid, alg) do not matter.
  assert.ok(jwkToPublicKey({ ...jwk, use: 'jwt-svid', kid: 'k1', alg: 'ES256' }).equals(publicKey));
});

test('import errors -> ERR_KEY_INVALID; export of a public key as PKCS#8 refused', async () => {
  const { publicKey } = await pair('ec-p256');
  assert.throws(() => importPrivateKeyPkcs8(Buffer.from('not a key')), isKeyErr('pkcs8'));
  assert.throws(() => importPublicKeySpki(Buffer.from('not a key')), isKeyErr('spki'));
  assert.throws(() => importPrivateKeyPkcs8(exportPublicKeySpki(publicKey)), isKeyErr('pkcs8'));
  assert.throws(() => exportPrivateKeyPkcs8(publicKey), isKeyErr('not_private'));
  assert.throws(() => publicKeyToJwk(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00])), isKeyErr('spki'));
  assert.throws(() => publicKeyToJwk(Buffer.from('garbage')), isKeyErr('spki'));
});

test('PEM-imported keys (openssl-style PKCS#8/SPKI) work the same', async () => {
  const { privateKey } = await pair('ec-p384');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  const imported = createPrivateKey(pem);
  assert.equal(keyTypeOf(imported), 'ec-p384');
  assert.deepEqual(publicKeyToJwk(imported), publicKeyToJwk(privateKey));
});

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign as nodeSign, webcrypto, type KeyObject } from 'node:crypto';
import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { Bundle, BundleSet } from './bundle.js';
import { isSpiffeError, type ErrorCode, type SpiffeError } from './errors.js';
import { parseSpiffeId, parseTrustDomain } from './id.js';
import { exportPublicKeySpki, generateKeyPair, type KeyPair, type KeyType } from './keys.js';
import {
  ALLOWED_JWT_ALGS,
  DEFAULT_JWT_SVID_TTL_SECONDS,
  MAX_JWT_SVID_LENGTH,
  mintJwtSvid,
  parseJwtSvidInsecure,
  validateJwtSvid,
  type ValidateJwtSvidOptions,
} from './jwtsvid.js';

const td = parseTrustDomain('example.org');
const tdB = parseTrustDomain('other.example');
const id = parseSpiffeId('spiffe://example.org/ns/prod/sa/web');
const idB = parseSpiffeId('spiffe://other.example/svc');
const AUD = 'spiffe://example.org/db';
const NOW = new Date('2030-01-01T00:00:00Z');
const nowSec = NOW.getTime() / 1000;

const keys = {} as Record<'ec256' | 'ec384' | 'rsa' | 'ec256b' | 'b', KeyPair>;
/** Our trust domain's bundle set: only `example.org` (kids ec256, ec384, rsa, ec256b). */
let ours: BundleSet;
/** Both trust domains. */
let both: BundleSet;

before(async () => {
  const types: Array<[keyof typeof keys, KeyType]> = [['ec256', 'ec-p256'], ['ec384', 'ec-p384'], ['rsa', 'rsa-2048'], ['ec256b', 'ec-p256'], ['b', 'ec-p256']];
  for (const [name, type] of types) keys[name] = await generateKeyPair(type);
  const a = new Bundle(td, {
    jwtAuthorities: [['ec256', keys.ec256.publicKey], ['ec384', keys.ec384.publicKey], ['rsa', keys.rsa.publicKey], ['ec256b', keys.ec256b.publicKey]],
  });
  const b = new Bundle(tdB, { jwtAuthorities: [['b', keys.b.publicKey]] });
  ours = new BundleSet([a]);
  both = new BundleSet([a, b]);
});

// ---- helpers --------------------------------------------------------------------------------

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** Signs `header.claims` by hand with node crypto (JWS raw signature format for EC). */
function forge(header: Record<string, unknown>, claims: Record<string, unknown>, key?: KeyObject, hash = 'sha256'): string {
  const input = `${b64(header)}.${b64(claims)}`;
  if (key === undefined) return `${input}.`;
  const sig = key.asymmetricKeyType === 'ed25519'
    ? nodeSign(null, Buffer.from(input), key)
    : nodeSign(hash, Buffer.from(input), key.asymmetricKeyType === 'ec' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${input}.${sig.toString('base64url')}`;
}

const goodClaims = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  sub: id, aud: [AUD], exp: nowSec + 300, iat: nowSec, ...over,
});
const hdr = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ alg: 'ES256', kid: 'ec256', typ: 'JWT', ...over });
const forgeGood = (claims: Record<string, unknown> = goodClaims(), header = hdr()) => forge(header, claims, keys.ec256.privateKey);

const opts = (over: Partial<ValidateJwtSvidOptions> = {}): ValidateJwtSvidOptions => ({ audience: AUD, bundles: ours, now: NOW, ...over });

async function rejects(token: string, code: ErrorCode, reason: string, o: ValidateJwtSvidOptions = opts()): Promise<void> {
  await assert.rejects(validateJwtSvid(token, o), (err: unknown) => {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    assert.equal(`${err.code}/${err.reason}`, `${code}/${reason}`, err.message);
    return true;
  });
}
const INVALID = 'ERR_JWT_SVID_INVALID' as const;
const UNTRUSTED = 'ERR_JWT_SVID_UNTRUSTED' as const;

function decodeParts(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [h, p] = token.split('.');
  return { header: JSON.parse(Buffer.from(h!, 'base64url').toString()), claims: JSON.parse(Buffer.from(p!, 'base64url').toString()) };
}

// ---- minting --------------------------------------------------------------------------------

for (const [name, alg] of [['ec256', 'ES256'], ['ec384', 'ES384'], ['rsa', 'RS256']] as const) {
  test(`mint + validate round trip (${alg})`, async () => {
    const audience = [AUD, 'spiffe://example.org/cache', 'https://api.example'];
    const minted = await mintJwtSvid({ id, audience, ttlSeconds: 120, signer: { kid: name, privateKey: keys[name].privateKey }, now: NOW });
    const { header, claims } = decodeParts(minted.token);
    assert.deepEqual(header, { alg, kid: name, typ: 'JWT' });
    assert.deepEqual(claims, { sub: id, aud: audience, exp: nowSec + 120, iat: nowSec });
    assert.equal(minted.expiresAt.getTime(), NOW.getTime() + 120_000);
    assert.equal(minted.issuedAt.getTime(), NOW.getTime());

    for (const aud of audience) {
      const v = await validateJwtSvid(minted.token, opts({ audience: aud }));
      assert.equal(v.id, id);
      assert.deepEqual(v.audience, audience);
      assert.equal(v.expiresAt.getTime(), minted.expiresAt.getTime());
      assert.equal(v.claims['sub'], id);
    }
    // A Bundle is a JwtBundleSource by itself, too.
    await validateJwtSvid(minted.token, opts({ bundles: ours.get(td)! }));
  });
}

for (const [name, alg] of [['ec256', 'ES256'], ['ec384', 'ES384'], ['rsa', 'RS256']] as const) {
  test(`mint: jose's jwtVerify accepts our tokens, and header/claims bytes are what jose's SignJWT makes (${alg})`, async () => {
    const audience = [AUD, 'https://api.example', AUD]; // duplicate dropped, order kept
    const signer = { kid: `kid-${name}`, privateKey: keys[name].privateKey };
    const minted = await mintJwtSvid({ id, audience, ttlSeconds: 90, signer, now: NOW });
    const params = name === 'rsa' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', namedCurve: name === 'ec256' ? 'P-256' : 'P-384' };
    const pub = await webcrypto.subtle.importKey('spki', exportPublicKeySpki(keys[name].publicKey), params, false, ['verify']);
    const verified = await jwtVerify(minted.token, pub, { algorithms: [alg], audience: AUD, currentDate: NOW, typ: 'JWT' });
    assert.deepEqual(verified.protectedHeader, { alg, kid: signer.kid, typ: 'JWT' });
    assert.deepEqual(verified.payload, { sub: id, aud: [AUD, 'https://api.example'], exp: nowSec + 90, iat: nowSec });

    // The same header and claims through jose: the first two parts are byte-identical; the
    // signature is raw r||s of the curve's size for ECDSA; RSA PKCS#1 v1.5 is deterministic,
    // so the whole token is identical.
    const priv = await webcrypto.subtle.importKey('pkcs8', keys[name].privateKey.export({ format: 'der', type: 'pkcs8' }), params, false, ['sign']);
    const viaJose = await new SignJWT({ sub: id, aud: [AUD, 'https://api.example'], exp: nowSec + 90, iat: nowSec })
      .setProtectedHeader({ alg, kid: signer.kid, typ: 'JWT' })
      .sign(priv);
    const ours3 = minted.token.split('.');
    const jose3 = viaJose.split('.');
    assert.equal(ours3.length, 3);
    assert.equal(ours3[0], jose3[0]);
    assert.equal(ours3[1], jose3[1]);
    const sigLen = Buffer.from(ours3[2]!, 'base64url').length;
    assert.equal(sigLen, { ec256: 64, ec384: 96, rsa: 256 }[name]);
    if (name === 'rsa') assert.equal(minted.token, viaJose);
    // A tampered signature is refused by jose too.
    const bad = `${ours3[0]}.${ours3[1]}.${Buffer.from(Buffer.from(ours3[2]!, 'base64url').map((b, i) => (i === 5 ? b ^ 1 : b))).toString('base64url')}`;
    await assert.rejects(jwtVerify(bad, pub, { algorithms: [alg], currentDate: NOW }), (err: unknown) => err instanceof joseErrors.JWSSignatureVerificationFailed);
  });
}

test('mint: single audience is still an array; default TTL 300 s; expiresAtMost caps exp', async () => {
  const signer = { kid: 'ec256', privateKey: keys.ec256.privateKey };
  const one = await mintJwtSvid({ id, audience: [AUD], signer, now: NOW });
  const { claims } = decodeParts(one.token);
  assert.deepEqual(claims['aud'], [AUD]);
  assert.equal(DEFAULT_JWT_SVID_TTL_SECONDS, 300);
  assert.equal((claims['exp'] as number) - (claims['iat'] as number), 300);

  const capped = await mintJwtSvid({ id, audience: [AUD], signer, now: NOW, ttlSeconds: 3600, expiresAtMost: new Date(NOW.getTime() + 90_500) });
  assert.equal(decodeParts(capped.token).claims['exp'], nowSec + 90);
  assert.equal(capped.expiresAt.getTime(), NOW.getTime() + 90_000);

  await assert.rejects(mintJwtSvid({ id, audience: [AUD], signer, now: NOW, expiresAtMost: NOW }), (e: unknown) => isSpiffeError(e, INVALID) && e.reason === 'signer_expired');
  // Without `now`: the real clock.
  const live = await mintJwtSvid({ id, audience: [AUD], signer });
  assert.ok(Math.abs(live.issuedAt.getTime() - Date.now()) < 5000);
  await validateJwtSvid(live.token, { audience: AUD, bundles: ours });
  assert.equal('iss' in claims, false, 'no issuer given: no iss');
});

test('mint: issuer becomes the iss claim; an empty issuer adds none', async () => {
  const signer = { kid: 'ec256', privateKey: keys.ec256.privateKey };
  const withIss = await mintJwtSvid({ id, audience: [AUD], signer, now: NOW, issuer: 'https://oidc.example.org' });
  assert.equal(decodeParts(withIss.token).claims['iss'], 'https://oidc.example.org');
  const { payload } = await jwtVerify(withIss.token, keys.ec256.publicKey, { issuer: 'https://oidc.example.org', audience: AUD, currentDate: NOW });
  assert.equal(payload.sub, id);
  const empty = await mintJwtSvid({ id, audience: [AUD], signer, now: NOW, issuer: '' });
  assert.equal('iss' in decodeParts(empty.token).claims, false);
});

test('mint: bad arguments are refused', async () => {
  const signer = { kid: 'ec256', privateKey: keys.ec256.privateKey };
  const table: Array<[string, Parameters<typeof mintJwtSvid>[0], string, string]> = [
    ['no audience', { id, audience: [], signer }, INVALID, 'audience'],
    ['empty audience', { id, audience: [AUD, ''], signer }, INVALID, 'audience'],
    ['zero ttl', { id, audience: [AUD], signer, ttlSeconds: 0 }, INVALID, 'ttl'],
    ['fractional ttl', { id, audience: [AUD], signer, ttlSeconds: 1.5 }, INVALID, 'ttl'],
    ['bad id', { id: 'spiffe://example.org/../x' as never, audience: [AUD], signer }, INVALID, 'sub'],
    ['empty kid', { id, audience: [AUD], signer: { ...signer, kid: '' } }, INVALID, 'kid'],
    ['public key as signer', { id, audience: [AUD], signer: { kid: 'x', privateKey: keys.ec256.publicKey } }, 'ERR_KEY_INVALID', 'not_private'],
    ['ed25519 signer', { id, audience: [AUD], signer: { kid: 'x', privateKey: generateKeyPairSync('ed25519').privateKey } }, 'ERR_KEY_INVALID', 'key_type'],
  ];
  for (const [name, o, code, reason] of table) {
    await assert.rejects(mintJwtSvid(o), (e: unknown) => isSpiffeError(e) && e.code === code && e.reason === reason, name);
  }
});

// ---- validation: the happy paths around the edges --------------------------------------------

test('typ absent, JWT or JOSE accepted; aud as a plain string accepted', async () => {
  for (const typ of [undefined, 'JWT', 'JOSE']) await validateJwtSvid(forgeGood(goodClaims(), hdr({ typ })), opts());
  const v = await validateJwtSvid(forgeGood(goodClaims({ aud: AUD })), opts());
  assert.deepEqual(v.audience, [AUD]);
});

test('leeway: expired within leeway accepted, beyond rejected; nbf/iat in the future within leeway accepted', async () => {
  const minted = await mintJwtSvid({ id, audience: [AUD], ttlSeconds: 60, signer: { kid: 'ec256', privateKey: keys.ec256.privateKey }, now: NOW });
  const at = (s: number) => opts({ now: new Date(NOW.getTime() + s * 1000) });
  await validateJwtSvid(minted.token, at(60 + 29));
  await rejects(minted.token, INVALID, 'expired', at(60 + 30));
  await rejects(minted.token, INVALID, 'expired', at(3600));
  await rejects(minted.token, INVALID, 'expired', opts({ now: new Date(NOW.getTime() + 61_000), leewaySeconds: 0 }));
  await validateJwtSvid(forgeGood(goodClaims({ nbf: nowSec + 29, iat: nowSec + 29 })), opts());
});

test('missing kid: accepted when a key of the trust domain verifies it (any of them)', async () => {
  for (const name of ['ec256', 'ec256b'] as const) {
    const token = forge({ alg: 'ES256', typ: 'JWT' }, goodClaims(), keys[name].privateKey);
    assert.equal((await validateJwtSvid(token, opts())).id, id, name);
  }
});

// ---- validation: forged and malformed tokens --------------------------------------------------

test('alg none is rejected before any key work (alg), whatever else the token says', async () => {
  for (const alg of ['none', 'None', 'NONE', '']) {
    await rejects(forge(hdr({ alg }), goodClaims()), INVALID, 'alg');
    await rejects(`${forge(hdr({ alg }), goodClaims())}AAAA`, INVALID, 'alg');
  }
  await rejects(forge({ typ: 'JWT', kid: 'ec256' }, goodClaims()) + 'AAAA', INVALID, 'alg', opts());
  // Checked first: unknown trust domain / kid / bad sub do not change the verdict.
  await rejects(forge(hdr({ alg: 'none', kid: 'nope' }), goodClaims({ sub: idB })), INVALID, 'alg');
  await rejects(forge(hdr({ alg: 'none' }), goodClaims({ sub: 'not-an-id' })), INVALID, 'alg');
});

test('HS256 signed with the public key bytes as HMAC secret is rejected (alg)', async () => {
  for (const name of ['ec256', 'rsa'] as const) {
    const pub = keys[name].publicKey;
    const secrets = [
      exportPublicKeySpki(pub),
      Buffer.from(pub.export({ format: 'pem', type: 'spki' })),
      Buffer.from(pub.export({ format: 'pem', type: 'spki' }).toString().trim()),
    ];
    for (const secret of secrets) {
      for (const [alg, hash] of [['HS256', 'sha256'], ['HS384', 'sha384'], ['HS512', 'sha512']] as const) {
        const input = `${b64(hdr({ alg, kid: name }))}.${b64(goodClaims())}`;
        const token = `${input}.${createHmac(hash, secret).update(input).digest('base64url')}`;
        await rejects(token, INVALID, 'alg');
      }
    }
  }
});

test('EdDSA (and other non-allow-listed algs) are rejected (alg)', async () => {
  const ed = generateKeyPairSync('ed25519');
  await rejects(forge(hdr({ alg: 'EdDSA', kid: 'ec256' }), goodClaims(), ed.privateKey), INVALID, 'alg');
  await rejects(forge(hdr({ alg: 'EdDSA' }), goodClaims(), ed.privateKey).replace(/^[^.]+/, b64({ alg: 'EdDSA' })), INVALID, 'alg');
  for (const alg of ['ES256K', 'RSA-OAEP', 'A128KW', 'dir', 'es256', 'ES256 ', 5, null]) {
    await rejects(forge(hdr({ alg }), goodClaims(), keys.ec256.privateKey), INVALID, 'alg');
  }
  assert.deepEqual([...ALLOWED_JWT_ALGS].sort(), ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512']);
});

test('missing kid and no key of the trust domain verifies it (signature)', async () => {
  const byB = forge({ alg: 'ES256', typ: 'JWT' }, goodClaims(), keys.b.privateKey);
  await rejects(byB, UNTRUSTED, 'signature');
  await rejects(byB, UNTRUSTED, 'signature', opts({ bundles: both }));
  // An empty JWT bundle for the trust domain: nothing can verify it.
  await rejects(forge({ alg: 'ES256' }, goodClaims(), keys.ec256.privateKey), UNTRUSTED, 'signature', opts({ bundles: new BundleSet([new Bundle(td)]) }));
});

test('unknown kid (unknown_kid)', async () => {
  await rejects(forge(hdr({ kid: 'nope' }), goodClaims(), keys.ec256.privateKey), UNTRUSTED, 'unknown_kid');
  await rejects(forge(hdr({ kid: '' }), goodClaims(), keys.ec256.privateKey), UNTRUSTED, 'unknown_kid');
  // kid of another trust domain's key.
  await rejects(forge(hdr({ kid: 'b' }), goodClaims(), keys.b.privateKey), UNTRUSTED, 'unknown_kid', opts({ bundles: both }));
});

test('missing exp (missing_exp), also through parseJwtSvidInsecure', async () => {
  const { exp: _exp, ...noExp } = goodClaims();
  const token = forgeGood(noExp);
  await rejects(token, INVALID, 'missing_exp');
  assert.throws(() => parseJwtSvidInsecure(token), (e: unknown) => isSpiffeError(e, INVALID) && e.reason === 'missing_exp');
  await rejects(forgeGood(goodClaims({ exp: String(nowSec + 300) })), INVALID, 'malformed');
  await rejects(forgeGood(goodClaims({ exp: null })), INVALID, 'malformed');
});

test('expired token (expired), checked with an injected clock', async () => {
  await rejects(forgeGood(goodClaims({ exp: nowSec - 31, iat: nowSec - 400 })), INVALID, 'expired');
  await rejects(forgeGood(goodClaims({ exp: 1, iat: 0 })), INVALID, 'expired');
});

test('nbf in the future (not_yet_valid); iat in the future (issued_in_future)', async () => {
  await rejects(forgeGood(goodClaims({ nbf: nowSec + 31 })), INVALID, 'not_yet_valid');
  await rejects(forgeGood(goodClaims({ nbf: nowSec + 3600, exp: nowSec + 7200 })), INVALID, 'not_yet_valid');
  await rejects(forgeGood(goodClaims({ iat: nowSec + 31 })), INVALID, 'issued_in_future');
  await rejects(forgeGood(goodClaims({ iat: 'yesterday' })), INVALID, 'malformed');
});

test('wrong audience (audience); missing aud (missing_aud)', async () => {
  await rejects(forgeGood(goodClaims({ aud: ['spiffe://example.org/other'] })), INVALID, 'audience');
  await rejects(forgeGood(goodClaims({ aud: 'spiffe://example.org/other' })), INVALID, 'audience');
  await rejects(forgeGood(goodClaims({ aud: [] })), INVALID, 'audience');
  await rejects(forgeGood(goodClaims({ aud: [`${AUD}/x`, AUD.toUpperCase()] })), INVALID, 'audience');
  const { aud: _aud, ...noAud } = goodClaims();
  await rejects(forgeGood(noAud), INVALID, 'missing_aud');
  // The validator must name the audience it is.
  await assert.rejects(validateJwtSvid(forgeGood(), opts({ audience: '' })), (e: unknown) => isSpiffeError(e, INVALID) && e.reason === 'audience');
});

test('sub that is not a SPIFFE ID (sub)', async () => {
  const { sub: _sub, ...noSub } = goodClaims();
  await rejects(forgeGood(noSub), INVALID, 'sub');
  for (const sub of ['web', 'https://example.org/web', 'spiffe://example.org/ns/../admin', 'spiffe://Example.org/web', 'spiffe://example.org/%41', 'spiffe://example.org/w/', 42, null, ['spiffe://example.org/x']]) {
    await rejects(forgeGood(goodClaims({ sub })), INVALID, 'sub');
  }
});

test('JWT of another trust domain, signed by that domain\'s key, bundle set only has ours (no_bundle)', async () => {
  const minted = await mintJwtSvid({ id: idB, audience: [AUD], signer: { kid: 'b', privateKey: keys.b.privateKey }, now: NOW });
  await rejects(minted.token, UNTRUSTED, 'no_bundle');
  assert.equal((await validateJwtSvid(minted.token, opts({ bundles: both }))).id, idB, 'trusted once its bundle is present');
  // Its kid would not help it into our trust domain either: sub decides the bundle.
  await rejects(forge(hdr({ kid: 'b' }), goodClaims({ sub: idB }), keys.b.privateKey), UNTRUSTED, 'no_bundle');
});

test('token signed by a key of domain B presented with the kid of domain A\'s key (signature)', async () => {
  const forged = forge(hdr({ kid: 'ec256' }), goodClaims(), keys.b.privateKey);
  await rejects(forged, UNTRUSTED, 'signature');
  await rejects(forged, UNTRUSTED, 'signature', opts({ bundles: both }));
  // Same with a minted one (jose-signed) using our kid.
  const minted = await mintJwtSvid({ id, audience: [AUD], signer: { kid: 'ec256', privateKey: keys.b.privateKey }, now: NOW });
  await rejects(minted.token, UNTRUSTED, 'signature', opts({ bundles: both }));
});

test('typ other than JWT/JOSE rejected (typ)', async () => {
  for (const typ of ['foo', 'jwt', 'at+jwt', 'application/jwt', '', 1]) await rejects(forgeGood(goodClaims(), hdr({ typ })), INVALID, 'typ');
});

test('tampered payload or header (signature)', async () => {
  const minted = await mintJwtSvid({ id, audience: [AUD], signer: { kid: 'ec256', privateKey: keys.ec256.privateKey }, now: NOW });
  const [h, , s] = minted.token.split('.');
  for (const claims of [goodClaims({ sub: 'spiffe://example.org/admin' }), goodClaims({ exp: nowSec + 86400 }), goodClaims({ aud: [AUD, 'x'] })]) {
    await rejects(`${h}.${b64(claims)}.${s}`, UNTRUSTED, 'signature');
  }
  // Header swapped for one without typ but same alg/kid: the signature covers the header.
  await rejects(`${b64({ alg: 'ES256', kid: 'ec256' })}.${minted.token.split('.')[1]}.${s}`, UNTRUSTED, 'signature');
  // Signature of another token.
  const other = await mintJwtSvid({ id, audience: ['other'], signer: { kid: 'ec256', privateKey: keys.ec256.privateKey }, now: NOW });
  await rejects(`${h}.${minted.token.split('.')[1]}.${other.token.split('.')[2]}`, UNTRUSTED, 'signature');
  // DER-encoded ECDSA signature instead of JWS raw r||s.
  const input = `${b64(hdr())}.${b64(goodClaims())}`;
  const der = nodeSign('sha256', Buffer.from(input), keys.ec256.privateKey).toString('base64url');
  await rejects(`${input}.${der}`, UNTRUSTED, 'signature');
});

test('key type must fit alg (key_mismatch)', async () => {
  // RS256 header naming an EC key.
  await rejects(forge(hdr({ alg: 'RS256', kid: 'ec256' }), goodClaims(), keys.rsa.privateKey), UNTRUSTED, 'key_mismatch');
  // ES384 header naming a P-256 key, ES256 naming the P-384 key, ES256 naming the RSA key.
  await rejects(forge(hdr({ alg: 'ES384', kid: 'ec256' }), goodClaims(), keys.ec384.privateKey, 'sha384'), UNTRUSTED, 'key_mismatch');
  await rejects(forge(hdr({ alg: 'ES256', kid: 'ec384' }), goodClaims(), keys.ec256.privateKey), UNTRUSTED, 'key_mismatch');
  await rejects(forge(hdr({ alg: 'ES256', kid: 'rsa' }), goodClaims(), keys.ec256.privateKey), UNTRUSTED, 'key_mismatch');
  // PS256 with our RSA key is a valid combination: accepted when really signed with PSS.
  const input = `${b64(hdr({ alg: 'PS256', kid: 'rsa' }))}.${b64(goodClaims())}`;
  const pss = nodeSign('sha256', Buffer.from(input), { key: keys.rsa.privateKey, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 });
  assert.equal((await validateJwtSvid(`${input}.${pss.toString('base64url')}`, opts())).id, id);
});

test('malformed tokens (malformed)', async () => {
  const good = forgeGood();
  const [h, p, s] = good.split('.');
  const table: Array<[string, unknown]> = [
    ['empty', ''],
    ['not a string', 42],
    ['two parts', `${h}.${p}`],
    ['four parts', `${good}.x`],
    ['header not base64url', `${h}!.${p}.${s}`],
    ['header padded', `${h}=.${p}.${s}`],
    ['header not JSON', `${b64('nope')}.${p}.${s}`],
    ['header is an array', `${b64([1])}.${p}.${s}`],
    ['payload not JSON', `${h}.${b64('{"sub":')}.${s}`],
    ['payload is a string', `${h}.${b64('"x"')}.${s}`],
    ['empty signature', `${h}.${p}.`],
    ['kid not a string', forgeGood(goodClaims(), hdr({ kid: 7 }))],
    ['unknown crit header', forgeGood(goodClaims(), hdr({ crit: ['exp'], exp: 1 }))],
    ['aud with a number in it', forgeGood(goodClaims({ aud: [AUD, 5] }))],
    ['too long', `${h}.${b64(goodClaims({ pad: 'x'.repeat(MAX_JWT_SVID_LENGTH) }))}.${s}`],
  ];
  for (const [name, token] of table) {
    await assert.rejects(validateJwtSvid(token as string, opts()), (e: unknown) => {
      assert.ok(isSpiffeError(e), `${name}: ${String(e)}`);
      assert.equal(`${e.code}/${e.reason}`, `${INVALID}/malformed`, `${name}: ${e.message}`);
      return true;
    });
  }
});

test('errors keep the jose error as cause', async () => {
  await assert.rejects(validateJwtSvid(forge(hdr({ kid: 'ec256' }), goodClaims(), keys.b.privateKey), opts()), (e: unknown) => {
    assert.ok(isSpiffeError(e, UNTRUSTED));
    assert.equal((e.cause as { code?: string }).code, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
    return true;
  });
});

// ---- parseJwtSvidInsecure ---------------------------------------------------------------------

test('parseJwtSvidInsecure: no signature or time check, but structure, alg, sub, exp, aud', () => {
  const expired = forge(hdr(), goodClaims({ exp: 1 }), keys.b.privateKey); // wrong key, expired: still readable
  const r = parseJwtSvidInsecure(expired);
  assert.equal(r.id, id);
  assert.equal(r.expiresAt.getTime(), 1000);
  assert.equal(parseJwtSvidInsecure(expired, AUD).id, id);
  const bad = (token: string, reason: string, audience?: string) =>
    assert.throws(() => parseJwtSvidInsecure(token, audience), (e: unknown) => isSpiffeError(e, INVALID) && e.reason === reason, reason);
  bad(expired, 'audience', 'spiffe://example.org/other');
  bad(forge(hdr(), goodClaims({ aud: undefined }), keys.b.privateKey), 'missing_aud', AUD);
  bad(forge(hdr({ alg: 'none' }), goodClaims()) + 'x', 'alg');
  bad(forge(hdr({ alg: 'HS256' }), goodClaims(), keys.b.privateKey), 'alg');
  bad(forge(hdr({ typ: 'foo' }), goodClaims(), keys.b.privateKey), 'typ');
  bad(forge(hdr(), goodClaims({ sub: 'spiffe://example.org/a/../b' }), keys.b.privateKey), 'sub');
  bad('a.b', 'malformed');
});

// ---- exact messages, causes, and the edges between accepted and refused ----------------------

/** The SpiffeError a validation rejects with (fails when the token is accepted or the error is another kind). */
async function errorOf(token: unknown, o: ValidateJwtSvidOptions = opts()): Promise<SpiffeError> {
  try {
    await validateJwtSvid(token as string, o);
  } catch (err) {
    assert.ok(isSpiffeError(err), `expected a SpiffeError, got ${String(err)}`);
    return err;
  }
  return assert.fail('the token was accepted');
}

/** `code/reason: message`, plus the cause's code (`-` when the error has no cause property at all). */
function summary(e: SpiffeError): string {
  const cause = Object.hasOwn(e, 'cause') ? String((e.cause as { code?: unknown } | undefined)?.code ?? (e.cause as Error | undefined)?.name) : '-';
  return `${e.code}/${e.reason}: ${e.message} [${cause}]`;
}

/** A token from raw header and claims JSON text, signed by `key` (ES256) when given. */
function forgeRaw(header: string | Buffer, claims: string | Buffer, key: KeyObject | undefined = keys.ec256.privateKey): string {
  const input = `${Buffer.from(header).toString('base64url')}.${Buffer.from(claims).toString('base64url')}`;
  if (key === undefined) return `${input}.`;
  return `${input}.${nodeSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

const ALG_LIST = 'RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512';

test('validation errors: exact code, reason, message and cause for every refusal', async () => {
  const good = forgeGood();
  const [h, p, s] = good.split('.') as [string, string, string];
  // A header whose base64url length is 1 mod 4 (never produced by an encoder).
  let h1 = h;
  while (h1.length % 4 !== 1) h1 += 'A';
  // A header whose last character differs only in the unused low bits: same bytes, not canonical.
  let hNc = b64(hdr({ x: 'y' }));
  for (let pad = 'y'; hNc.length % 4 === 0 || hNc.endsWith('_'); pad += 'y') hNc = b64(hdr({ x: pad }));
  const B64U = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  hNc = hNc.slice(0, -1) + B64U[B64U.indexOf(hNc.at(-1)!) + 1];
  assert.deepEqual(Buffer.from(hNc, 'base64url'), Buffer.from(b64(hdr({ x: JSON.parse(Buffer.from(hNc, 'base64url').toString()).x })), 'base64url'));
  const { exp: _e, ...noExp } = goodClaims();
  const { aud: _a, ...noAud } = goodClaims();
  const { sub: _s, ...noSub } = goodClaims();
  const rsaOther = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const rsNoKid = forge({ alg: 'RS256' }, goodClaims(), rsaOther);

  const table: Array<[string, unknown, string, ValidateJwtSvidOptions?]> = [
    ['empty', '', `${INVALID}/malformed: JWT-SVID must be a non-empty string [-]`],
    ['not a string', 42, `${INVALID}/malformed: JWT-SVID must be a non-empty string [-]`],
    ['too long', 'x'.repeat(MAX_JWT_SVID_LENGTH + 1), `${INVALID}/malformed: JWT-SVID is longer than 65536 characters [-]`],
    ['two parts', `${h}.${p}`, `${INVALID}/malformed: JWT-SVID must be a compact JWS with 3 parts, got 2 [-]`],
    ['four parts', `${good}.x`, `${INVALID}/malformed: JWT-SVID must be a compact JWS with 3 parts, got 4 [-]`],
    ['header not base64url', `${h}!.${p}.${s}`, `${INVALID}/malformed: JWT header is not base64url [-]`],
    ['header length 1 mod 4', `${h1}.${p}.${s}`, `${INVALID}/malformed: JWT header is not base64url [-]`],
    ['header not canonical', `${hNc}.${p}.${s}`, `${INVALID}/malformed: JWT header is not canonical base64url [-]`],
    ['header not JSON', `${b64('nope')}.${p}.${s}`, `${INVALID}/malformed: JWT header is not UTF-8 JSON [SyntaxError]`],
    ['header JSON null', `${b64('null')}.${p}.${s}`, `${INVALID}/malformed: JWT header is not a JSON object [-]`],
    ['header JSON number', `${b64('5')}.${p}.${s}`, `${INVALID}/malformed: JWT header is not a JSON object [-]`],
    ['header JSON array', `${b64([1])}.${p}.${s}`, `${INVALID}/malformed: JWT header is not a JSON object [-]`],
    // Invalid UTF-8 inside a JSON string of a correctly signed header: decoded leniently it
    // would be valid JSON.
    ['header not UTF-8', forgeRaw(Buffer.concat([Buffer.from('{"alg":"ES256","kid":"ec256","x":"'), Buffer.from([0xff]), Buffer.from('"}')]), JSON.stringify(goodClaims())), `${INVALID}/malformed: JWT header is not UTF-8 JSON [ERR_ENCODING_INVALID_ENCODED_DATA]`],
    ['alg HS256', forgeGood(goodClaims(), hdr({ alg: 'HS256' })), `${INVALID}/alg: JWT-SVID alg "HS256" is not allowed (expected one of ${ALG_LIST}) [-]`],
    ['alg absent', forge({ kid: 'ec256' }, goodClaims(), keys.ec256.privateKey), `${INVALID}/alg: JWT-SVID alg "undefined" is not allowed (expected one of ${ALG_LIST}) [-]`],
    ['alg long', forgeGood(goodClaims(), hdr({ alg: 'X'.repeat(25) })), `${INVALID}/alg: JWT-SVID alg "${'X'.repeat(20)}...(25 chars)" is not allowed (expected one of ${ALG_LIST}) [-]`],
    ['typ', forgeGood(goodClaims(), hdr({ typ: 'foo' })), `${INVALID}/typ: JWT-SVID typ "foo" is not JWT or JOSE [-]`],
    ['typ long', forgeGood(goodClaims(), hdr({ typ: 't'.repeat(45) })), `${INVALID}/typ: JWT-SVID typ "${'t'.repeat(40)}...(45 chars)" is not JWT or JOSE [-]`],
    ['kid not a string', forgeGood(goodClaims(), hdr({ kid: 7 })), `${INVALID}/malformed: JWT-SVID kid must be a string [-]`],
    ['no signature', `${h}.${p}.`, `${INVALID}/malformed: JWT-SVID has no signature [-]`],
    ['payload not base64url', `${h}.${p}*.${s}`, `${INVALID}/malformed: JWT payload is not base64url [-]`],
    ['payload not JSON', `${h}.${b64('{"sub":')}.${s}`, `${INVALID}/malformed: JWT payload is not UTF-8 JSON [SyntaxError]`],
    ['payload a string', `${h}.${b64('"x"')}.${s}`, `${INVALID}/malformed: JWT payload is not a JSON object [-]`],
    ['no sub', forgeGood(noSub), `${INVALID}/sub: JWT-SVID has no string sub claim [-]`],
    ['sub not an ID', forgeGood(goodClaims({ sub: 'web' })), `${INVALID}/sub: JWT-SVID sub "web" is not a valid SPIFFE ID [-]`],
    ['no bundle', forge(hdr({ kid: 'b' }), goodClaims({ sub: idB }), keys.b.privateKey), `${UNTRUSTED}/no_bundle: no JWT bundle for trust domain "other.example" of "spiffe://other.example/svc" [-]`],
    ['unknown kid', forgeGood(goodClaims(), hdr({ kid: 'nope' })), `${UNTRUSTED}/unknown_kid: no JWT authority with kid "nope" in trust domain "example.org" [-]`],
    ['unknown long kid', forgeGood(goodClaims(), hdr({ kid: 'k'.repeat(101) })), `${UNTRUSTED}/unknown_kid: no JWT authority with kid "${'k'.repeat(100)}...(101 chars)" in trust domain "example.org" [-]`],
    ['key type does not fit alg', forge(hdr({ alg: 'RS256' }), goodClaims(), keys.rsa.privateKey), `${UNTRUSTED}/key_mismatch: JWT authority "ec256" (ec) cannot verify RS256 [-]`],
    ['bad signature with kid', forge(hdr(), goodClaims(), keys.b.privateKey), `${UNTRUSTED}/signature: JWT-SVID signature is not valid [ERR_JWS_SIGNATURE_VERIFICATION_FAILED]`],
    // Without a kid only the keys that fit the alg are tried: the cause is the last signature failure.
    ['no kid, no key verifies', rsNoKid, `${UNTRUSTED}/signature: no JWT authority of trust domain "example.org" verifies this JWT-SVID (it has no kid) [ERR_JWS_SIGNATURE_VERIFICATION_FAILED]`],
    ['no kid, no key fits', forge({ alg: 'ES512' }, goodClaims(), keys.ec256.privateKey), `${UNTRUSTED}/signature: no JWT authority of trust domain "example.org" verifies this JWT-SVID (it has no kid) [-]`],
    ['expired', forgeGood(goodClaims({ exp: nowSec - 31 })), `${INVALID}/expired: JWT-SVID has expired [ERR_JWT_EXPIRED]`],
    ['no exp', forgeGood(noExp), `${INVALID}/missing_exp: JWT-SVID has no exp claim [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['exp a string', forgeGood(goodClaims({ exp: 'soon' })), `${INVALID}/malformed: JWT-SVID exp claim is invalid [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['exp infinite', forgeRaw(JSON.stringify(hdr()), JSON.stringify(goodClaims({ exp: 0 })).replace('"exp":0', '"exp":1e999')), `${INVALID}/malformed: JWT-SVID exp claim must be a number [-]`],
    ['exp beyond Date', forgeGood(goodClaims({ exp: 1e16 })), `${INVALID}/malformed: JWT-SVID exp claim is out of range [-]`],
    ['no aud', forgeGood(noAud), `${INVALID}/missing_aud: JWT-SVID has no aud claim [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['wrong aud', forgeGood(goodClaims({ aud: ['x'] })), `${INVALID}/audience: JWT-SVID audience does not include ${JSON.stringify(AUD)} [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['aud with a number', forgeGood(goodClaims({ aud: [AUD, 5] })), `${INVALID}/malformed: JWT-SVID aud claim must be a string or an array of strings [-]`],
    ['nbf future', forgeGood(goodClaims({ nbf: nowSec + 31 })), `${INVALID}/not_yet_valid: JWT-SVID is not valid yet (nbf) [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['nbf a string', forgeGood(goodClaims({ nbf: 'now' })), `${INVALID}/malformed: JWT-SVID nbf claim is invalid [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['iat a string', forgeGood(goodClaims({ iat: 'now' })), `${INVALID}/malformed: JWT-SVID iat claim is invalid [ERR_JWT_CLAIM_VALIDATION_FAILED]`],
    ['iat infinite', forgeRaw(JSON.stringify(hdr()), JSON.stringify(goodClaims({ iat: 0 })).replace('"iat":0', '"iat":1e999')), `${INVALID}/malformed: JWT-SVID iat claim must be a number [-]`],
    ['iat future', forgeGood(goodClaims({ iat: nowSec + 31 })), `${INVALID}/issued_in_future: JWT-SVID iat is in the future [-]`],
    ['unknown crit header', forgeGood(goodClaims(), hdr({ crit: ['exp'], exp: 1 })), `${INVALID}/malformed: JWT-SVID is malformed [ERR_JOSE_NOT_SUPPORTED]`],
    ['validator audience empty', good, `${INVALID}/audience: the expected audience must be a non-empty string [-]`, opts({ audience: '' })],
    ['validator audience not a string', good, `${INVALID}/audience: the expected audience must be a non-empty string [-]`, opts({ audience: 5 as never })],
  ];
  for (const [name, token, expected, o] of table) assert.equal(summary(await errorOf(token, o)), expected, name);
});

test('validation: bad options are TypeErrors naming the option', async () => {
  const good = forgeGood();
  for (const leewaySeconds of [-1, Number.NaN, Number.POSITIVE_INFINITY, '5' as never]) {
    await assert.rejects(validateJwtSvid(good, opts({ leewaySeconds })), { name: 'TypeError', message: 'leewaySeconds must be a non-negative number' });
  }
  for (const now of [new Date(Number.NaN), '2030-01-01' as never]) {
    await assert.rejects(validateJwtSvid(good, opts({ now })), { name: 'TypeError', message: 'now must be a valid Date' });
  }
});

test('validation edges: leeway 0, iat exactly at now + leeway, exp one second after now - leeway', async () => {
  const base = goodClaims({ exp: nowSec + 1, iat: nowSec });
  assert.equal((await validateJwtSvid(forgeGood(base), opts({ leewaySeconds: 0 }))).id, id);
  await rejects(forgeGood(base), INVALID, 'expired', opts({ leewaySeconds: 0, now: new Date(NOW.getTime() + 1000) }));
  assert.equal((await validateJwtSvid(forgeGood(goodClaims({ iat: nowSec + 30 })), opts())).id, id);
  await rejects(forgeGood(goodClaims({ iat: nowSec + 5 })), INVALID, 'issued_in_future', opts({ leewaySeconds: 4 }));
  assert.equal((await validateJwtSvid(forgeGood(goodClaims({ iat: nowSec + 4 })), opts({ leewaySeconds: 4 }))).id, id);
  assert.equal((await validateJwtSvid(forgeGood(goodClaims({ exp: nowSec - 29 })), opts())).expiresAt.getTime(), (nowSec - 29) * 1000);
  // A token of exactly MAX_JWT_SVID_LENGTH characters is read; one more is refused unread.
  // (An ES256 signature is 86 base64url characters; base64url of n bytes is ceil(4n/3) long.)
  let t = '';
  for (let extra = 0; t === ''; extra++) {
    const header = b64(hdr({ h: 'h'.repeat(extra) }));
    const target = MAX_JWT_SVID_LENGTH - header.length - 2 - 86;
    const bytes = Math.floor((3 * target) / 4);
    if (Math.ceil((4 * bytes) / 3) !== target) continue;
    const pad = bytes - JSON.stringify(goodClaims({ pad: '' })).length;
    t = forgeGood(goodClaims({ pad: 'p'.repeat(pad) }), hdr({ h: 'h'.repeat(extra) }));
  }
  assert.equal(t.length, MAX_JWT_SVID_LENGTH);
  assert.equal((await validateJwtSvid(t, opts())).id, id);
});

test('without a kid, a claim error of a token whose signature verified is reported, not skipped', async () => {
  await rejects(forge({ alg: 'ES256' }, goodClaims({ exp: nowSec - 100 }), keys.ec256.privateKey), INVALID, 'expired');
  await rejects(forge({ alg: 'ES256' }, goodClaims({ aud: ['x'] }), keys.ec256b.privateKey), INVALID, 'audience');
});

test('every allow-listed alg verifies with a key of its type and curve; RSA below 2048 bits is refused', async () => {
  const p521 = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
  const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const bundle = new Bundle(td, {
    jwtAuthorities: [['ec256', keys.ec256.publicKey], ['ec384', keys.ec384.publicKey], ['ec521', p521.publicKey], ['rsa', keys.rsa.publicKey], ['rsa1024', rsa1024.publicKey]],
  });
  const o = opts({ bundles: bundle });
  const PSS = { padding: 6 /* RSA_PKCS1_PSS_PADDING */ };
  const cases: Array<[string, string, KeyObject, string, object]> = [
    ['ES256', 'ec256', keys.ec256.privateKey, 'sha256', { dsaEncoding: 'ieee-p1363' }],
    ['ES384', 'ec384', keys.ec384.privateKey, 'sha384', { dsaEncoding: 'ieee-p1363' }],
    ['ES512', 'ec521', p521.privateKey, 'sha512', { dsaEncoding: 'ieee-p1363' }],
    ['RS256', 'rsa', keys.rsa.privateKey, 'sha256', {}],
    ['RS384', 'rsa', keys.rsa.privateKey, 'sha384', {}],
    ['RS512', 'rsa', keys.rsa.privateKey, 'sha512', {}],
    ['PS256', 'rsa', keys.rsa.privateKey, 'sha256', { ...PSS, saltLength: 32 }],
    ['PS384', 'rsa', keys.rsa.privateKey, 'sha384', { ...PSS, saltLength: 48 }],
    ['PS512', 'rsa', keys.rsa.privateKey, 'sha512', { ...PSS, saltLength: 64 }],
  ];
  // Twice round: the same KeyObject serves RS* and PS* (imported once per alg).
  for (const round of [1, 2]) {
    for (const [alg, kid, key, hash, extra] of cases) {
      for (const withKid of [true, false]) {
        const input = `${b64(withKid ? { alg, kid } : { alg })}.${b64(goodClaims())}`;
        const sig = nodeSign(hash, Buffer.from(input), { key, ...extra });
        assert.equal((await validateJwtSvid(`${input}.${sig.toString('base64url')}`, o)).id, id, `${alg} ${kid} kid=${withKid} round ${round}`);
      }
    }
  }
  // A curve that does not fit: ES512 naming the P-384 key, ES384 naming the P-521 key.
  assert.equal(summary(await errorOf(forge({ alg: 'ES512', kid: 'ec384' }, goodClaims(), p521.privateKey, 'sha512'), o)), `${UNTRUSTED}/key_mismatch: JWT authority "ec384" (ec) cannot verify ES512 [-]`);
  assert.equal(summary(await errorOf(forge({ alg: 'ES384', kid: 'ec521' }, goodClaims(), keys.ec384.privateKey, 'sha384'), o)), `${UNTRUSTED}/key_mismatch: JWT authority "ec521" (ec) cannot verify ES384 [-]`);
  // PS256 naming an EC key, RS256 naming a 1024-bit RSA key (even correctly signed).
  assert.equal(summary(await errorOf(forge({ alg: 'PS256', kid: 'ec256' }, goodClaims(), keys.rsa.privateKey), o)), `${UNTRUSTED}/key_mismatch: JWT authority "ec256" (ec) cannot verify PS256 [-]`);
  assert.equal(summary(await errorOf(forge({ alg: 'RS256', kid: 'rsa1024' }, goodClaims(), rsa1024.privateKey), o)), `${UNTRUSTED}/key_mismatch: JWT authority "rsa1024" (rsa) cannot verify RS256 [-]`);
  assert.equal((await errorOf(forge({ alg: 'RS256' }, goodClaims(), rsa1024.privateKey), o)).reason, 'signature');
  // PKCS#1 v1.5 signature presented as PS256 and the other way round: refused.
  await rejects(forge({ alg: 'PS256', kid: 'rsa' }, goodClaims(), keys.rsa.privateKey), UNTRUSTED, 'signature', o);
  const pssInput = `${b64({ alg: 'RS256', kid: 'rsa' })}.${b64(goodClaims())}`;
  await rejects(`${pssInput}.${nodeSign('sha256', Buffer.from(pssInput), { key: keys.rsa.privateKey, ...PSS, saltLength: 32 }).toString('base64url')}`, UNTRUSTED, 'signature', o);
});

test('parseJwtSvidInsecure: exact messages', () => {
  const msg = (token: string, audience?: string): string => {
    try {
      parseJwtSvidInsecure(token, audience);
    } catch (err) {
      assert.ok(isSpiffeError(err));
      return summary(err);
    }
    return 'accepted';
  };
  const { exp: _e, ...noExp } = goodClaims();
  const { aud: _a, ...noAud } = goodClaims();
  assert.equal(msg(forgeGood(noExp)), `${INVALID}/missing_exp: JWT-SVID has no exp claim [-]`);
  assert.equal(msg(forgeGood(goodClaims({ exp: 'x' }))), `${INVALID}/malformed: JWT-SVID exp claim must be a number [-]`);
  assert.equal(msg(forgeRaw(JSON.stringify(hdr()), JSON.stringify(goodClaims({ exp: 0 })).replace('"exp":0', '"exp":-1e999'))), `${INVALID}/malformed: JWT-SVID exp claim must be a number [-]`);
  assert.equal(msg(forgeGood(goodClaims({ exp: -1e16 }))), `${INVALID}/malformed: JWT-SVID exp claim is out of range [-]`);
  assert.equal(msg(forgeGood(noAud), AUD), `${INVALID}/missing_aud: JWT-SVID has no aud claim [-]`);
  assert.equal(msg(forgeGood(goodClaims({ aud: 5 })), AUD), `${INVALID}/malformed: JWT-SVID aud claim must be a string or an array of strings [-]`);
  assert.equal(msg(forgeGood(goodClaims({ aud: { a: AUD } })), AUD), `${INVALID}/malformed: JWT-SVID aud claim must be a string or an array of strings [-]`);
  assert.equal(msg(forgeGood(), 'spiffe://example.org/other'), `${INVALID}/audience: JWT-SVID audience does not include "spiffe://example.org/other" [-]`);
  assert.equal(msg(forgeGood(goodClaims({ aud: 'spiffe://example.org/x' })), 'spiffe://example.org/other'), `${INVALID}/audience: JWT-SVID audience does not include "spiffe://example.org/other" [-]`);
  // aud as a plain string, and without `audience` no aud is needed at all.
  assert.equal(parseJwtSvidInsecure(forgeGood(goodClaims({ aud: AUD })), AUD).id, id);
  assert.equal(parseJwtSvidInsecure(forgeGood(noAud)).expiresAt.getTime(), (nowSec + 300) * 1000);
  assert.deepEqual(parseJwtSvidInsecure(forgeGood()).claims, goodClaims());
});

test('mint: exact messages for bad arguments, and a cap one second after now still mints', async () => {
  const signer = { kid: 'ec256', privateKey: keys.ec256.privateKey };
  const msg = async (o: Parameters<typeof mintJwtSvid>[0]): Promise<string> => {
    try {
      await mintJwtSvid(o);
    } catch (err) {
      if (!isSpiffeError(err)) return `${(err as Error).name}: ${(err as Error).message}`;
      return summary(err);
    }
    return 'minted';
  };
  const AUDMSG = `${INVALID}/audience: JWT-SVID audience must be a non-empty list of non-empty strings [-]`;
  const table: Array<[Parameters<typeof mintJwtSvid>[0], string]> = [
    [{ id: 'spiffe://example.org/../x' as never, audience: [AUD], signer }, `${INVALID}/sub: JWT-SVID subject "spiffe://example.org/../x" is not a SPIFFE ID [-]`],
    [{ id, audience: [], signer }, AUDMSG],
    [{ id, audience: [AUD, ''], signer }, AUDMSG],
    [{ id, audience: ['', AUD], signer }, AUDMSG],
    [{ id, audience: [AUD, 5 as never], signer }, AUDMSG],
    [{ id, audience: AUD as never, signer }, AUDMSG],
    [{ id, audience: [AUD], signer, ttlSeconds: 0 }, `${INVALID}/ttl: JWT-SVID TTL must be a positive whole number of seconds, got 0 [-]`],
    [{ id, audience: [AUD], signer, ttlSeconds: -5 }, `${INVALID}/ttl: JWT-SVID TTL must be a positive whole number of seconds, got -5 [-]`],
    [{ id, audience: [AUD], signer, ttlSeconds: 1.5 }, `${INVALID}/ttl: JWT-SVID TTL must be a positive whole number of seconds, got 1.5 [-]`],
    [{ id, audience: [AUD], signer: { ...signer, kid: '' } }, `${INVALID}/kid: JWT signer needs a non-empty kid [-]`],
    [{ id, audience: [AUD], signer: { ...signer, kid: 5 as never } }, `${INVALID}/kid: JWT signer needs a non-empty kid [-]`],
    [{ id, audience: [AUD], signer: undefined as never }, `${INVALID}/kid: JWT signer needs a non-empty kid [-]`],
    [{ id, audience: [AUD], signer: { kid: 'x', privateKey: keys.ec256.publicKey } }, 'ERR_KEY_INVALID/not_private: JWT signer key must be a private key [-]'],
    [{ id, audience: [AUD], signer: { kid: 'x' } as never }, 'ERR_KEY_INVALID/not_private: JWT signer key must be a private key [-]'],
    [{ id, audience: [AUD], signer, now: NOW, expiresAtMost: new Date(NOW.getTime() + 999) }, `${INVALID}/signer_expired: the JWT signing key has expired: cannot mint a JWT-SVID [-]`],
    [{ id, audience: [AUD], signer, now: new Date(Number.NaN) }, 'TypeError: now must be a valid Date'],
    [{ id, audience: [AUD], signer, now: NOW, expiresAtMost: new Date(Number.NaN) }, 'TypeError: expiresAtMost must be a valid Date'],
    [{ id, audience: [AUD], signer, now: NOW, expiresAtMost: 5 as never }, 'TypeError: expiresAtMost must be a valid Date'],
  ];
  for (const [o, expected] of table) assert.equal(await msg(o), expected);
  const one = await mintJwtSvid({ id, audience: [AUD], signer, now: NOW, expiresAtMost: new Date(NOW.getTime() + 1000) });
  assert.equal(one.expiresAt.getTime(), NOW.getTime() + 1000);
  assert.equal(decodeParts(one.token).claims['exp'], nowSec + 1);
});

test('mint: the header follows the signer when kids and algs alternate', async () => {
  const signers = [
    { kid: 'ec256', privateKey: keys.ec256.privateKey, alg: 'ES256' },
    { kid: 'rsa', privateKey: keys.rsa.privateKey, alg: 'RS256' },
    { kid: 'ec384', privateKey: keys.ec384.privateKey, alg: 'ES384' },
    { kid: 'ec256b', privateKey: keys.ec256b.privateKey, alg: 'ES256' },
  ];
  for (const s of [...signers, ...signers.reverse(), signers[0]!, signers[0]!]) {
    const minted = await mintJwtSvid({ id, audience: [AUD], signer: { kid: s.kid, privateKey: s.privateKey }, now: NOW });
    assert.deepEqual(decodeParts(minted.token).header, { alg: s.alg, kid: s.kid, typ: 'JWT' });
    assert.equal((await validateJwtSvid(minted.token, opts())).id, id);
  }
});

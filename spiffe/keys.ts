/**
 * Key pairs for CAs, SVIDs and JWT signing: generation, DER import/export, JWK conversion.
 *
 * Keys are Node KeyObjects. Private keys leave this module only as PKCS#8 DER (or PEM of it);
 * callers decide where that goes (agent memory, a 0600 file). We never export a private key as
 * JWK, and public-key JWKs are built from SPKI DER here rather than with KeyObject.export({format:
 * 'jwk'}), which has been seen to deadlock on freshly generated keys under Node 20.20.
 */
import { createPrivateKey, createPublicKey, generateKeyPair as nodeGenerateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { ErrorCode, SpiffeError } from './errors.js';
import { parseSpki, type SpkiKey } from './x509/spki.js';

const generateKeyPairAsync = promisify(nodeGenerateKeyPair);

/** Key types, named as SPIRE names them in `ca_key_type` / `jwt_key_type`. */
export const KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-4096'] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export const DEFAULT_KEY_TYPE: KeyType = 'ec-p256';

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function isKeyType(s: string): s is KeyType {
  return (KEY_TYPES as readonly string[]).includes(s);
}

export function parseKeyType(s: string): KeyType {
  if (!isKeyType(s)) {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'key_type', `unsupported key type ${JSON.stringify(s)}: expected one of ${KEY_TYPES.join(', ')}`);
  }
  return s;
}

export async function generateKeyPair(type: KeyType = DEFAULT_KEY_TYPE): Promise<KeyPair> {
  switch (type) {
    case 'ec-p256':
      return generateKeyPairAsync('ec', { namedCurve: 'prime256v1' });
    case 'ec-p384':
      return generateKeyPairAsync('ec', { namedCurve: 'secp384r1' });
    case 'rsa-2048':
      return generateKeyPairAsync('rsa', { modulusLength: 2048, publicExponent: 0x10001 });
    case 'rsa-4096':
      return generateKeyPairAsync('rsa', { modulusLength: 4096, publicExponent: 0x10001 });
  }
}

/** The KeyType of a key, or throws ERR_KEY_INVALID for anything we do not support. */
export function keyTypeOf(key: KeyObject): KeyType {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') {
    if (details?.namedCurve === 'prime256v1') return 'ec-p256';
    if (details?.namedCurve === 'secp384r1') return 'ec-p384';
  } else if (key.asymmetricKeyType === 'rsa') {
    if (details?.modulusLength === 2048) return 'rsa-2048';
    if (details?.modulusLength === 4096) return 'rsa-4096';
  }
  throw new SpiffeError(
    ErrorCode.KEY_INVALID,
    'key_type',
    `unsupported key: ${key.asymmetricKeyType ?? key.type} ${details?.namedCurve ?? details?.modulusLength ?? ''}`.trim(),
  );
}

/** The JWS algorithm Spindle signs with for a key: ES256/ES384 for EC, RS256 for RSA. */
export function jwsAlgFor(key: KeyObject): 'ES256' | 'ES384' | 'RS256' {
  const type = keyTypeOf(key);
  if (type === 'ec-p256') return 'ES256';
  if (type === 'ec-p384') return 'ES384';
  return 'RS256';
}

/** The hash paired with a key's signatures in X.509: SHA-384 for P-384, SHA-256 otherwise. */
export function hashFor(key: KeyObject): 'sha256' | 'sha384' {
  return keyTypeOf(key) === 'ec-p384' ? 'sha384' : 'sha256';
}

export function exportPrivateKeyPkcs8(key: KeyObject): Buffer {
  if (key.type !== 'private') throw new SpiffeError(ErrorCode.KEY_INVALID, 'not_private', 'expected a private key');
  return key.export({ format: 'der', type: 'pkcs8' });
}

export function importPrivateKeyPkcs8(der: Uint8Array): KeyObject {
  try {
    return createPrivateKey({ key: Buffer.from(der.buffer, der.byteOffset, der.byteLength), format: 'der', type: 'pkcs8' });
  } catch (cause) {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'pkcs8', 'private key is not valid PKCS#8 DER', { cause });
  }
}

export function exportPublicKeySpki(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ format: 'der', type: 'spki' });
}

export function importPublicKeySpki(der: Uint8Array): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(der.buffer, der.byteOffset, der.byteLength), format: 'der', type: 'spki' });
  } catch (cause) {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'spki', 'public key is not valid SubjectPublicKeyInfo DER', { cause });
  }
}

/** A public JWK (RFC 7517) of the key kinds SPIFFE bundles carry. */
export type PublicJwk =
  | { kty: 'EC'; crv: 'P-256' | 'P-384' | 'P-521'; x: string; y: string }
  | { kty: 'RSA'; n: string; e: string };

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

/**
 * Public JWK of a key given as a KeyObject or SubjectPublicKeyInfo DER. The SPKI is read by
 * x509/spki.ts parseSpki (EC P-256/P-384/P-521, RSA of any size); any failure is reason `spki`.
 */
export function publicKeyToJwk(key: KeyObject | Uint8Array): PublicJwk {
  const spki = key instanceof Uint8Array ? key : exportPublicKeySpki(key);
  let k: SpkiKey;
  try {
    k = parseSpki(spki);
  } catch (cause) {
    const why = cause instanceof SpiffeError ? cause.message : String(cause);
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'spki', `cannot convert public key to JWK: ${why}`, { cause });
  }
  if (k.kind === 'ec') {
    const size = (k.keyBits.length - 1) / 2;
    return { kty: 'EC', crv: k.curve, x: b64url(k.keyBits.subarray(1, 1 + size)), y: b64url(k.keyBits.subarray(1 + size)) };
  }
  return { kty: 'RSA', n: b64url(k.modulus), e: b64url(k.exponent) };
}

/** Import a public JWK (EC or RSA). Private members, if present, are refused. */
export function jwkToPublicKey(jwk: Record<string, unknown>): KeyObject {
  if ('d' in jwk || 'p' in jwk || 'q' in jwk) {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'jwk_private', 'JWK holds private key material where a public key was expected');
  }
  const pub: Record<string, unknown> = { kty: jwk['kty'] };
  if (jwk['kty'] === 'EC') {
    pub['crv'] = jwk['crv'];
    pub['x'] = jwk['x'];
    pub['y'] = jwk['y'];
  } else if (jwk['kty'] === 'RSA') {
    pub['n'] = jwk['n'];
    pub['e'] = jwk['e'];
  } else {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'jwk_kty', `unsupported JWK key type ${JSON.stringify(jwk['kty'])}`);
  }
  try {
    return createPublicKey({ key: pub as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch (cause) {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'jwk', `invalid ${String(jwk['kty'])} JWK`, { cause });
  }
}

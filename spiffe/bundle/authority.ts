/**
 * Admission of one trust authority into a bundle: a DER CA certificate (exactly one certificate,
 * an EC or RSA key) or a JWT public key (EC or RSA, reduced to its public half), each turned into
 * the public JWK the bundle documents carry. Bytes are copied: callers may reuse their buffers.
 */
import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { quote } from '../errors.js';
import { exportPublicKeySpki, publicKeyToJwk, type PublicJwk } from '../keys.js';
import { bundleError } from './errors.js';

export interface X509Authority {
  der: Buffer;
  jwk: PublicJwk;
}

export interface JwtAuthority {
  key: KeyObject;
  spki: Buffer;
  jwk: PublicJwk;
}

function copyBytes(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes); // own copy: callers may reuse their buffers
}

/** Parse one DER certificate (exactly: no trailing bytes) and return its public JWK. */
export function x509Authority(der: Uint8Array, reason: 'certificate' | 'x5c'): X509Authority {
  const copy = copyBytes(der);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(copy);
  } catch (cause) {
    throw bundleError(reason, 'X.509 authority is not a valid DER certificate', cause);
  }
  if (!cert.raw.equals(copy)) throw bundleError(reason, 'X.509 authority has bytes after the certificate');
  let jwk: PublicJwk;
  try {
    jwk = publicKeyToJwk(exportPublicKeySpki(cert.publicKey));
  } catch (cause) {
    throw bundleError(reason, `X.509 authority ${quote(cert.subject)} has an unsupported public key`, cause);
  }
  return { der: copy, jwk };
}

export function jwtAuthority(key: KeyObject): JwtAuthority {
  let pub: KeyObject;
  let spki: Buffer;
  let jwk: PublicJwk;
  try {
    pub = key.type === 'private' ? createPublicKey(key) : key;
    if (pub.type !== 'public') throw new TypeError(`expected an asymmetric key, got a ${pub.type} key`);
    spki = exportPublicKeySpki(pub);
    jwk = publicKeyToJwk(spki);
  } catch (cause) {
    throw bundleError('jwk', 'JWT authority must be an EC or RSA public key', cause);
  }
  return { key: pub, spki, jwk };
}

export function checkKid(kid: unknown): string {
  if (typeof kid !== 'string' || kid.length === 0) {
    throw bundleError('kid', `JWT authority needs a non-empty string kid, got ${typeof kid === 'string' ? '""' : typeof kid}`);
  }
  return kid;
}

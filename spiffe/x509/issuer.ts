/**
 * A signing CA prepared for the hot path: everything derived from the CA certificate and key
 * (issuer Name bytes, key identifier for the AKI, notAfter, signature AlgorithmIdentifier) is
 * computed once here, so issuing a leaf is DER concatenation plus one signature.
 *
 * Signature algorithms (never SHA-1): ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for P-384,
 * sha256WithRSAEncryption for RSA keys (PKCS#1 v1.5).
 *
 * The CA private key is held outside the Issuer object (see signAsIssuer).
 *
 * createIssuer throws SpiffeError ERR_X509_ISSUE_INVALID with reasons:
 *   empty_chain      no certificate given
 *   not_ca           the first certificate is not a CA (basicConstraints cA)
 *   no_key_cert_sign the first certificate's keyUsage lacks keyCertSign
 *   key_mismatch     the private key is not the certificate's key
 *   key_type         the key is not one of the supported types (ec-p256, ec-p384, rsa-2048/4096)
 *   chain_order      a chain certificate is not the issuer (by Name) of the one before it
 *   not_issuer       (signAsIssuer) the object was not made by createIssuer
 * and ERR_X509_CERT_INVALID for certificates that do not parse.
 */
import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { ErrorCode, SpiffeError, quote } from '../errors.js';
import type { TrustDomain } from '../id.js';
import { isSpiffeId, parseSpiffeId, trustDomainOf, pathOf } from '../id.js';
import { keyTypeOf, type KeyType } from '../keys.js';
import { nullValue, oid, sequence } from './der.js';
import { keyIdentifier } from './extensions.js';
import { certificateMatchesKey, parseCertificate, type CertificateInfo } from './parse.js';
import { OID } from './oids.js';
import { inspectSpki, spkiKeyBits } from './spki.js';

export interface Issuer {
  /** The CA certificate (DER) that signs. */
  readonly certificate: Buffer;
  /** [CA certificate, ...its chain] as given to createIssuer. */
  readonly chain: readonly Buffer[];
  /** The CA certificate's subject Name DER: the issuer Name of everything it signs. */
  readonly subjectDer: Buffer;
  /** The CA's subject key identifier (from its SKI extension, else computed): the AKI of what it signs. */
  readonly keyId: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The CA's basicConstraints pathLen, if any. */
  readonly pathLen: number | undefined;
  /** Trust domain of the CA's `spiffe://<td>` URI SAN, when it has exactly one such SAN. */
  readonly trustDomain: TrustDomain | undefined;
  readonly keyType: KeyType;
  readonly hash: 'sha256' | 'sha384';
  /** AlgorithmIdentifier DER of the signatures this issuer makes. */
  readonly signatureAlgorithmDer: Buffer;
  /** Parsed CA certificate. */
  readonly info: CertificateInfo;
}

function issueError(reason: string, message: string): SpiffeError {
  return new SpiffeError(ErrorCode.X509_ISSUE_INVALID, reason, message);
}

const SIG_ALG_ECDSA_SHA256 = sequence(oid(OID.ecdsaWithSha256));
const SIG_ALG_ECDSA_SHA384 = sequence(oid(OID.ecdsaWithSha384));
const SIG_ALG_RSA_SHA256 = sequence(oid(OID.sha256WithRsa), nullValue());

/** Signature AlgorithmIdentifier and hash for a CA key type. */
export function signatureAlgorithmFor(keyType: KeyType): { der: Buffer; hash: 'sha256' | 'sha384' } {
  switch (keyType) {
    case 'ec-p256':
      return { der: SIG_ALG_ECDSA_SHA256, hash: 'sha256' };
    case 'ec-p384':
      return { der: SIG_ALG_ECDSA_SHA384, hash: 'sha384' };
    case 'rsa-2048':
    case 'rsa-4096':
      return { der: SIG_ALG_RSA_SHA256, hash: 'sha256' };
  }
}

/** Signs with a private key the way X.509 wants it (EC: DER Ecdsa-Sig-Value; RSA: PKCS#1 v1.5). */
export function signTbs(hash: 'sha256' | 'sha384', tbs: Uint8Array, privateKey: KeyObject): Buffer {
  return cryptoSign(hash, tbs, privateKey);
}

/**
 * CA keys by Issuer. The key is not a property of the Issuer, so an Issuer can be passed
 * around (and logged) without handing out a "sign anything" capability or the key itself.
 */
const issuerKeys = new WeakMap<Issuer, KeyObject>();

/**
 * Signs TBS bytes with the issuer's CA key (DER ECDSA signature or PKCS#1 v1.5) using the
 * issuer's hash. Internal to spiffe/x509 (issue.ts); deliberately not exported from index.ts.
 */
export function signAsIssuer(issuer: Issuer, tbs: Uint8Array): Buffer {
  const key = issuerKeys.get(issuer);
  if (key === undefined) throw issueError('not_issuer', 'the issuer was not made by createIssuer');
  return cryptoSign(issuer.hash, tbs, key);
}

class PreparedIssuer implements Issuer {
  readonly certificate: Buffer;
  readonly chain: readonly Buffer[];
  readonly subjectDer: Buffer;
  readonly keyId: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly pathLen: number | undefined;
  readonly trustDomain: TrustDomain | undefined;
  readonly keyType: KeyType;
  readonly hash: 'sha256' | 'sha384';
  readonly signatureAlgorithmDer: Buffer;
  readonly info: CertificateInfo;

  constructor(chain: Buffer[], info: CertificateInfo, keyType: KeyType) {
    this.certificate = chain[0]!;
    this.chain = Object.freeze([...chain]);
    this.info = info;
    this.subjectDer = Buffer.from(info.subjectDer);
    this.keyId = info.ski ?? keyIdentifier(spkiKeyBits(info.spki));
    this.notBefore = info.notBefore;
    this.notAfter = info.notAfter;
    this.pathLen = info.pathLen;
    const tdIds = info.uriSans.filter(isSpiffeId).map((u) => parseSpiffeId(u));
    this.trustDomain = tdIds.length === 1 && pathOf(tdIds[0]!) === '' ? trustDomainOf(tdIds[0]!) : undefined;
    this.keyType = keyType;
    const alg = signatureAlgorithmFor(keyType);
    this.hash = alg.hash;
    this.signatureAlgorithmDer = alg.der;
  }

  /** Never print key material. */
  toJSON(): object {
    return { certificateSerial: this.info.serialHex, trustDomain: this.trustDomain, keyType: this.keyType, notAfter: this.notAfter };
  }
}

/**
 * Prepares a CA for issuing. `certChainDer`: the CA certificate first, then its chain towards
 * the root (the root may be included or not); `privateKey`: the CA certificate's key.
 */
export function createIssuer(certChainDer: readonly Buffer[], privateKey: KeyObject): Issuer {
  if (certChainDer.length === 0) throw issueError('empty_chain', 'issuer chain is empty: expected the CA certificate first');
  const infos = certChainDer.map((d) => parseCertificate(d));
  const ca = infos[0]!;
  if (!ca.isCa) throw issueError('not_ca', `certificate ${ca.serialHex} is not a CA (basicConstraints cA is not set)`);
  if (ca.keyUsage === undefined || !ca.keyUsage.keyCertSign) {
    throw issueError('no_key_cert_sign', `CA certificate ${ca.serialHex} keyUsage lacks keyCertSign`);
  }
  let keyType: KeyType;
  try {
    keyType = keyTypeOf(privateKey);
    inspectSpki(ca.spki);
  } catch (cause) {
    throw new SpiffeError(ErrorCode.X509_ISSUE_INVALID, 'key_type', `unsupported CA key: ${(cause as Error).message}`, { cause });
  }
  if (privateKey.type !== 'private' || !certificateMatchesKey(ca, privateKey)) {
    throw issueError('key_mismatch', `the private key does not belong to CA certificate ${ca.serialHex}`);
  }
  for (let i = 1; i < infos.length; i++) {
    if (!infos[i - 1]!.issuerDer.equals(infos[i]!.subjectDer)) {
      throw issueError('chain_order', `chain certificate ${i} (${quote(infos[i]!.serialHex)}) did not issue certificate ${i - 1}`);
    }
  }
  const issuer = Object.freeze(new PreparedIssuer(certChainDer.map((d) => Buffer.from(d)), ca, keyType));
  issuerKeys.set(issuer, privateKey);
  return issuer;
}

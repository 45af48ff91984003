/**
 * Certificate issuance: self-signed CA, intermediate CA, leaf X509-SVID.
 * Certificates are assembled with der.ts and signed with node:crypto; the leaf path costs one
 * signature plus DER concatenation.
 *
 * Leaf X509-SVID profile:
 * - exactly one URI SAN, the `id` argument (non-root path); DNS SANs only from `dnsNames`.
 *   Nothing is taken from a CSR except its public key.
 * - subject: empty by default, and then the SAN extension is critical (RFC 5280 4.2.1.6);
 *   with a caller-supplied subject the SAN is non-critical.
 * - basicConstraints critical CA=false; keyUsage critical: digitalSignature, plus keyAgreement
 *   for EC keys or keyEncipherment for RSA keys (the usages that key type can actually have;
 *   SPIRE sets all three on every key); extKeyUsage serverAuth + clientAuth.
 * - subjectKeyIdentifier = SHA-1 of the subject key (RFC 5280 method 1, an identifier, not a
 *   signature); authorityKeyIdentifier = the issuer's key identifier.
 * - notBefore = now - 10 s (clock skew); notAfter = min(now + ttl, issuer notAfter).
 * - serial: 16 random bytes, top bit cleared and next bit set: a positive 127-bit number
 *   (>= 64 bits of entropy; 126 random bits), unless the caller injects one.
 * - signature: ecdsa-with-SHA256 (P-256 CA), ecdsa-with-SHA384 (P-384), sha256WithRSAEncryption (RSA).
 *
 * CA certificates: basicConstraints critical CA=true (+ pathLen for intermediates when given or
 * inherited), keyUsage critical digitalSignature+keyCertSign+cRLSign, URI SAN `spiffe://<td>`,
 * SKI, AKI (self-signed: its own SKI). Default subject C=US, O=SPIFFE; a `serialNumber`
 * attribute equal to the certificate serial (decimal) is added unless the caller's subject has
 * one, so successive CAs never share a Name (name-based path building stays unambiguous).
 *
 * Errors: SpiffeError ERR_X509_ISSUE_INVALID with reasons
 *   ttl                    ttlSeconds not a positive finite number
 *   dns_name               a DNS name fails the syntax rules (extensions.ts dnsNameProblem)
 *   key                    public key unsupported or malformed (cause: ERR_KEY_INVALID)
 *   key_mismatch           createSelfSignedCa key pair halves do not match
 *   trust_domain_mismatch  the ID / trust domain is not the issuing CA's trust domain
 *   issuer_expired         the issuer's notAfter is not after `now`
 *   path_len               intermediate would violate the issuer's pathLen
 *   serial                 injected serial empty, zero or longer than 20 octets
 *   subject                subject field invalid
 * SPIFFE ID problems surface as ERR_SPIFFE_ID_INVALID (e.g. reason `root_path` for a leaf ID
 * without a path); CSR problems as ERR_X509_CSR_INVALID.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { ErrorCode, SpiffeError, quote } from '../errors.js';
import { assertLeafId, parseSpiffeId, parseTrustDomain, trustDomainId, trustDomainOf, type SpiffeId, type TrustDomain } from '../id.js';
import { keyTypeOf, type KeyPair } from '../keys.js';
import { bitString, explicit, integer, sequence, smallInt, time } from './der.js';
import {
  CA_KEY_USAGE,
  LEAF_BASIC_CONSTRAINTS,
  LEAF_EXT_KEY_USAGE,
  LEAF_KEY_USAGE_EC,
  LEAF_KEY_USAGE_RSA,
  authorityKeyIdentifierExt,
  basicConstraintsExt,
  dnsNameProblem,
  keyIdentifier,
  subjectAltNameExt,
  subjectKeyIdentifierExt,
} from './extensions.js';
import { verifyCsrForIssuance } from './csr.js';
import { signAsIssuer, signatureAlgorithmFor, signTbs, type Issuer } from './issuer.js';
import { encodeName, type X509Subject } from './name.js';
import { inspectSpki, spkiOf, type SpkiInfo } from './spki.js';

/** Seconds notBefore is backdated by, for clock skew between issuer and relying parties. */
export const BACKDATE_SECONDS = 10;
/** Default CA subject (SPIRE's default `ca_subject`). */
export const DEFAULT_CA_SUBJECT: Readonly<X509Subject> = Object.freeze({ country: 'US', organization: 'SPIFFE' });

export interface IssuedCertificate {
  der: Buffer;
  notAfter: Date;
  /** Serial magnitude as lowercase hex. */
  serialHex: string;
}

export interface IssueX509SvidOptions {
  id: SpiffeId;
  /** The subject's public key: a KeyObject or SubjectPublicKeyInfo DER. */
  publicKey: KeyObject | Buffer;
  dnsNames?: readonly string[];
  ttlSeconds: number;
  issuer: Issuer;
  now?: Date;
  subject?: X509Subject;
  /** Serial magnitude (unsigned big-endian); random when omitted. */
  serial?: Buffer;
}

export interface IssueX509SvidFromCsrOptions {
  csr: Buffer;
  id: SpiffeId;
  dnsNames?: readonly string[];
  ttlSeconds: number;
  issuer: Issuer;
  now?: Date;
  subject?: X509Subject;
  serial?: Buffer;
}

export interface CreateSelfSignedCaOptions {
  trustDomain: TrustDomain;
  keyPair: KeyPair;
  ttlSeconds: number;
  now?: Date;
  subject?: X509Subject;
  serial?: Buffer;
}

export interface IssueIntermediateCaOptions {
  trustDomain: TrustDomain;
  publicKey: KeyObject | Buffer;
  issuer: Issuer;
  ttlSeconds: number;
  now?: Date;
  subject?: X509Subject;
  /** basicConstraints pathLen; inherited as issuer.pathLen - 1 when the issuer has one. */
  pathLen?: number;
  serial?: Buffer;
}

function issueError(reason: string, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.X509_ISSUE_INVALID, reason, message, cause === undefined ? undefined : { cause });
}

const VERSION_V3 = explicit(0, smallInt(2));

const SERIAL_BYTES = 16;
const RANDOM_POOL_BYTES = SERIAL_BYTES * 256;
let randomPool = Buffer.alloc(0);
let randomPoolOffset = 0;

/**
 * 16 CSPRNG bytes, top bit clear (positive), next bit set (always 127 bits long). Drawn from a
 * pool refilled 4 KiB at a time: one randomBytes call per serial cost ~10% of an issuance.
 */
function randomSerial(): Buffer {
  if (randomPoolOffset + SERIAL_BYTES > randomPool.length) {
    randomPool = randomBytes(RANDOM_POOL_BYTES);
    randomPoolOffset = 0;
  }
  const b = Buffer.from(randomPool.subarray(randomPoolOffset, randomPoolOffset + SERIAL_BYTES));
  randomPool.fill(0, randomPoolOffset, randomPoolOffset + SERIAL_BYTES);
  randomPoolOffset += SERIAL_BYTES;
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b;
}

function checkSerial(serial: Buffer | undefined): Buffer {
  if (serial === undefined) return randomSerial();
  let start = 0;
  while (start < serial.length && serial[start] === 0) start++;
  const mag = serial.subarray(start);
  if (mag.length === 0) throw issueError('serial', 'serial must be a positive number');
  if (mag.length > 20 || (mag.length === 20 && (mag[0]! & 0x80) !== 0)) {
    throw issueError('serial', 'serial must fit in 20 octets (RFC 5280 4.1.2.2)');
  }
  return mag;
}

function ttlMs(ttlSeconds: number): number {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw issueError('ttl', `ttlSeconds must be a positive number, got ${String(ttlSeconds)}`);
  }
  return ttlSeconds * 1000;
}

/** Whole seconds (certificate times have no fractions). */
function floorSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

interface Validity {
  notBefore: Date;
  notAfter: Date;
}

function validityUnder(issuer: Issuer | undefined, now: Date, ttlSeconds: number): Validity {
  const ms = ttlMs(ttlSeconds);
  const t = now.getTime();
  if (Number.isNaN(t)) throw issueError('ttl', 'now is not a valid Date');
  const notBefore = floorSeconds(t - BACKDATE_SECONDS * 1000);
  let notAfter = floorSeconds(t + ms);
  if (issuer !== undefined) {
    if (issuer.notAfter.getTime() <= t) {
      throw issueError('issuer_expired', `issuing CA expired at ${issuer.notAfter.toISOString()}`);
    }
    if (notAfter.getTime() > issuer.notAfter.getTime()) notAfter = issuer.notAfter;
  }
  return { notBefore, notAfter };
}

function toSpki(publicKey: KeyObject | Buffer): { spki: Buffer; info: SpkiInfo } {
  try {
    const spki = Buffer.isBuffer(publicKey) ? publicKey : spkiOf(publicKey);
    return { spki, info: inspectSpki(spki) };
  } catch (cause) {
    throw issueError('key', `subject public key not accepted: ${(cause as Error).message}`, cause);
  }
}

function subjectDer(subject: X509Subject | undefined): Buffer {
  try {
    return encodeName(subject);
  } catch (cause) {
    throw issueError('subject', `invalid subject: ${(cause as Error).message}`, cause);
  }
}

function caSubject(subject: X509Subject | undefined, serial: Buffer): Buffer {
  const base = subject ?? DEFAULT_CA_SUBJECT;
  const serialNumber = base.serialNumber ?? BigInt(`0x${serial.toString('hex')}`).toString(10);
  return subjectDer({ ...base, serialNumber });
}

function checkLeafId(id: SpiffeId, issuer: Issuer): SpiffeId {
  const parsed = parseSpiffeId(id);
  assertLeafId(parsed);
  checkTrustDomain(trustDomainOf(parsed), issuer);
  return parsed;
}

function checkTrustDomain(td: TrustDomain, issuer: Issuer): void {
  if (issuer.trustDomain !== undefined && issuer.trustDomain !== td) {
    throw issueError('trust_domain_mismatch', `trust domain ${quote(td)} is not the issuing CA's trust domain ${quote(issuer.trustDomain)}`);
  }
}

function checkDnsNames(dnsNames: readonly string[] | undefined): string[] {
  if (dnsNames === undefined || dnsNames.length === 0) return [];
  const out: string[] = [];
  for (const d of dnsNames) {
    const problem = dnsNameProblem(d);
    if (problem !== undefined) throw issueError('dns_name', `invalid DNS name ${quote(String(d))}: ${problem}`);
    if (!out.includes(d)) out.push(d);
  }
  return out;
}

interface TbsParts {
  serial: Buffer;
  signatureAlgorithmDer: Buffer;
  issuerDer: Buffer;
  validity: Validity;
  subjectDer: Buffer;
  spki: Buffer;
  extensions: Buffer[];
}

function buildTbs(p: TbsParts): Buffer {
  return sequence(
    VERSION_V3,
    integer(p.serial),
    p.signatureAlgorithmDer,
    p.issuerDer,
    sequence(time(p.validity.notBefore), time(p.validity.notAfter)),
    p.subjectDer,
    p.spki,
    explicit(3, sequence(...p.extensions)),
  );
}

function finish(tbs: Buffer, signatureAlgorithmDer: Buffer, signature: Buffer): Buffer {
  return sequence(tbs, signatureAlgorithmDer, bitString(signature));
}

interface LeafInput {
  id: SpiffeId;
  spki: Buffer;
  keyInfo: SpkiInfo;
  dnsNames: readonly string[] | undefined;
  ttlSeconds: number;
  issuer: Issuer;
  now: Date | undefined;
  subject: X509Subject | undefined;
  serial: Buffer | undefined;
}

function issueLeaf(o: LeafInput): IssuedCertificate {
  const id = checkLeafId(o.id, o.issuer);
  const dnsNames = checkDnsNames(o.dnsNames);
  const validity = validityUnder(o.issuer, o.now ?? new Date(), o.ttlSeconds);
  const serial = checkSerial(o.serial);
  const subject = subjectDer(o.subject);
  const emptySubject = subject.length === 2;
  const tbs = buildTbs({
    serial,
    signatureAlgorithmDer: o.issuer.signatureAlgorithmDer,
    issuerDer: o.issuer.subjectDer,
    validity,
    subjectDer: subject,
    spki: o.spki,
    extensions: [
      LEAF_BASIC_CONSTRAINTS,
      o.keyInfo.kind === 'ec' ? LEAF_KEY_USAGE_EC : LEAF_KEY_USAGE_RSA,
      LEAF_EXT_KEY_USAGE,
      subjectKeyIdentifierExt(keyIdentifier(o.keyInfo.keyBits)),
      authorityKeyIdentifierExt(o.issuer.keyId),
      subjectAltNameExt({ uris: [id], dnsNames }, emptySubject),
    ],
  });
  return {
    der: finish(tbs, o.issuer.signatureAlgorithmDer, signAsIssuer(o.issuer, tbs)),
    notAfter: validity.notAfter,
    serialHex: serial.toString('hex'),
  };
}

/** Issues a leaf X509-SVID for `id` over `publicKey`. The hot path: one signature. */
export function issueX509Svid(opts: IssueX509SvidOptions): IssuedCertificate {
  const { spki, info } = toSpki(opts.publicKey);
  return issueLeaf({
    id: opts.id,
    spki,
    keyInfo: info,
    dnsNames: opts.dnsNames,
    ttlSeconds: opts.ttlSeconds,
    issuer: opts.issuer,
    now: opts.now,
    subject: opts.subject,
    serial: opts.serial,
  });
}

/**
 * Verifies `csr` (structure, algorithm and key policy, self-signature) and issues a leaf for
 * `id` over the CSR's public key. Nothing else from the CSR is used.
 */
export function issueX509SvidFromCsr(opts: IssueX509SvidFromCsrOptions): IssuedCertificate {
  // Cheap argument checks first, so a bad entry costs no signature verification.
  checkLeafId(opts.id, opts.issuer);
  ttlMs(opts.ttlSeconds);
  const { spki, keyInfo } = verifyCsrForIssuance(opts.csr);
  return issueLeaf({
    id: opts.id,
    spki,
    keyInfo,
    dnsNames: opts.dnsNames,
    ttlSeconds: opts.ttlSeconds,
    issuer: opts.issuer,
    now: opts.now,
    subject: opts.subject,
    serial: opts.serial,
  });
}

function caExtensions(td: TrustDomain, keyBits: Uint8Array, authorityKeyId: Buffer | undefined, pathLen: number | undefined): Buffer[] {
  const ski = keyIdentifier(keyBits);
  return [
    basicConstraintsExt(true, pathLen),
    CA_KEY_USAGE,
    subjectKeyIdentifierExt(ski),
    authorityKeyIdentifierExt(authorityKeyId ?? ski),
    subjectAltNameExt({ uris: [trustDomainId(td)] }, false),
  ];
}

/** A self-signed root CA for `trustDomain` (DER). */
export function createSelfSignedCa(opts: CreateSelfSignedCaOptions): Buffer {
  const td = parseTrustDomain(opts.trustDomain);
  const { spki, info } = toSpki(opts.keyPair.publicKey);
  let keyType;
  try {
    keyType = keyTypeOf(opts.keyPair.privateKey);
  } catch (cause) {
    throw issueError('key', `CA key not accepted: ${(cause as Error).message}`, cause);
  }
  if (!spkiOf(opts.keyPair.privateKey).equals(spki)) {
    throw issueError('key_mismatch', 'keyPair.publicKey is not the public half of keyPair.privateKey');
  }
  const alg = signatureAlgorithmFor(keyType);
  const serial = checkSerial(opts.serial);
  const name = caSubject(opts.subject, serial);
  const tbs = buildTbs({
    serial,
    signatureAlgorithmDer: alg.der,
    issuerDer: name,
    validity: validityUnder(undefined, opts.now ?? new Date(), opts.ttlSeconds),
    subjectDer: name,
    spki,
    extensions: caExtensions(td, info.keyBits, undefined, undefined),
  });
  return finish(tbs, alg.der, signTbs(alg.hash, tbs, opts.keyPair.privateKey));
}

/** An intermediate (signing) CA for `trustDomain` under `issuer` (DER). */
export function issueIntermediateCa(opts: IssueIntermediateCaOptions): Buffer {
  const td = parseTrustDomain(opts.trustDomain);
  const issuer = opts.issuer;
  checkTrustDomain(td, issuer);
  let pathLen = opts.pathLen;
  if (issuer.pathLen !== undefined) {
    if (issuer.pathLen === 0) throw issueError('path_len', 'the issuing CA has pathLen 0: it cannot issue CA certificates');
    if (pathLen === undefined) pathLen = issuer.pathLen - 1;
    else if (pathLen > issuer.pathLen - 1) {
      throw issueError('path_len', `pathLen ${pathLen} exceeds what the issuing CA allows (${issuer.pathLen - 1})`);
    }
  }
  if (pathLen !== undefined && (!Number.isSafeInteger(pathLen) || pathLen < 0)) throw issueError('path_len', `invalid pathLen ${pathLen}`);
  const { spki, info } = toSpki(opts.publicKey);
  const serial = checkSerial(opts.serial);
  const tbs = buildTbs({
    serial,
    signatureAlgorithmDer: issuer.signatureAlgorithmDer,
    issuerDer: issuer.subjectDer,
    validity: validityUnder(issuer, opts.now ?? new Date(), opts.ttlSeconds),
    subjectDer: caSubject(opts.subject, serial),
    spki,
    extensions: caExtensions(td, info.keyBits, issuer.keyId, pathLen),
  });
  return finish(tbs, issuer.signatureAlgorithmDer, signAsIssuer(issuer, tbs));
}

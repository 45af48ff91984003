/**
 * PKCS#10 certificate signing requests (RFC 2986).
 *
 * The server uses a CSR for exactly one thing: the public key, after checking the CSR's own
 * signature proves possession of the private key. Subject, SANs and requested extensions
 * (CA=true, other SPIFFE IDs, ...) are reported by parseCsr for logging and tests but never
 * reach a certificate: identity comes from the registration entry.
 *
 * Accepted: ecdsa-with-SHA256/SHA384 with P-256/P-384 keys, sha256/384WithRSAEncryption with
 * 2048..8192-bit RSA keys. Parsing is the strict DER reader (this is on the signing hot path).
 *
 * Errors: SpiffeError ERR_X509_CSR_INVALID with reason
 *   der        not exactly one well-formed DER CertificationRequest (incl. trailing bytes,
 *              version other than v1, oversized input)
 *   algorithm  signature algorithm not accepted (SHA-1, PSS, unknown OID, bad parameters, or
 *              not matching the key type)
 *   key        public key not accepted (RSA < 2048 bits, unsupported curve or algorithm,
 *              malformed or not a point on the curve)
 *   signature  the signature does not verify
 */
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { ErrorCode, SpiffeError } from '../errors.js';
import { keyTypeOf } from '../keys.js';
import {
  DerError,
  Tag,
  bitString,
  bitStringBytes,
  contentOf,
  decodeOid,
  expectTag,
  ia5String,
  oid,
  readChildren,
  readRoot,
  sequence,
  set,
  smallInt,
  tlv,
  type DerNode,
} from './der.js';
import { dnsNameProblem, subjectAltNameExt } from './extensions.js';
import { signatureAlgorithmFor, signTbs } from './issuer.js';
import { decodeName, encodeName, subjectFromAttributes, type NameAttribute, type X509Subject } from './name.js';
import { OID } from './oids.js';
import { importSpki, inspectSpki, spkiOf, verificationKey, type SpkiInfo } from './spki.js';

/** Largest CSR accepted (an RSA-8192 CSR is about 2.2 KB). */
export const MAX_CSR_BYTES = 16 * 1024;

export interface ParsedCsr {
  /** The requester's public key (imported; verified by the CSR signature). */
  publicKey: KeyObject;
  /** SubjectPublicKeyInfo DER as found in the CSR. */
  spki: Buffer;
  keyInfo: SpkiInfo;
  /** Requested subject: known fields, and every attribute. Informational only. */
  subject: X509Subject;
  subjectAttributes: NameAttribute[];
  /** SANs requested through the extensionRequest attribute. Informational only. */
  requestedUris: string[];
  requestedDnsNames: string[];
  /** OIDs of every requested extension. Informational only. */
  requestedExtensions: string[];
  signatureAlgorithmOid: string;
}

function csrError(reason: 'der' | 'algorithm' | 'key' | 'signature', message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.X509_CSR_INVALID, reason, message, cause === undefined ? undefined : { cause });
}

const CSR_SIG_ALGS: Record<string, { hash: 'sha256' | 'sha384'; key: 'ec' | 'rsa' }> = {
  [OID.ecdsaWithSha256]: { hash: 'sha256', key: 'ec' },
  [OID.ecdsaWithSha384]: { hash: 'sha384', key: 'ec' },
  [OID.sha256WithRsa]: { hash: 'sha256', key: 'rsa' },
  [OID.sha384WithRsa]: { hash: 'sha384', key: 'rsa' },
};
const SHA1_ALGS = new Set<string>([OID.ecdsaWithSha1, OID.sha1WithRsa]);

interface CsrStructure {
  buf: Buffer;
  cri: Uint8Array;
  subjectNode: DerNode;
  attributesNode: DerNode | undefined;
  spki: Buffer;
  keyInfo: SpkiInfo;
  sigAlgOid: string;
  hash: 'sha256' | 'sha384';
  signature: Uint8Array;
}

/** Structure, algorithm and key policy checks; no signature verification yet. */
function readCsr(der: Uint8Array): CsrStructure {
  if (!(der instanceof Uint8Array)) throw csrError('der', 'CSR must be DER bytes');
  if (der.length > MAX_CSR_BYTES) throw csrError('der', `CSR is ${der.length} bytes, over the ${MAX_CSR_BYTES}-byte limit`);
  const buf = Buffer.isBuffer(der) ? der : Buffer.from(der.buffer, der.byteOffset, der.byteLength);
  let s: Omit<CsrStructure, 'keyInfo' | 'hash'>;
  let sigParams: DerNode | undefined;
  try {
    const root = readRoot(buf, Tag.SEQUENCE);
    const [criNode, algNode, sigNode, extra] = readChildren(buf, root);
    if (extra !== undefined) throw new DerError('extra fields after the signature');
    expectTag(criNode, Tag.SEQUENCE, 'certificationRequestInfo');
    const [version, subjectNode, spkiNode, attributesNode, more] = readChildren(buf, criNode!);
    const v = contentOf(buf, expectTag(version, Tag.INTEGER, 'version'));
    if (v.length !== 1 || v[0] !== 0) throw new DerError('CSR version must be v1 (0)');
    expectTag(subjectNode, Tag.SEQUENCE, 'subject');
    expectTag(spkiNode, Tag.SEQUENCE, 'subjectPKInfo');
    if (attributesNode !== undefined && attributesNode.tag !== 0xa0) throw new DerError('attributes must be [0]');
    if (more !== undefined) throw new DerError('extra fields in certificationRequestInfo');
    const algParts = readChildren(buf, expectTag(algNode, Tag.SEQUENCE, 'signatureAlgorithm'));
    if (algParts.length > 2) throw new DerError('extra AlgorithmIdentifier fields');
    sigParams = algParts[1];
    s = {
      buf,
      cri: buf.subarray(criNode!.start, criNode!.end),
      subjectNode: subjectNode!,
      attributesNode,
      spki: buf.subarray(spkiNode!.start, spkiNode!.end),
      sigAlgOid: decodeOid(contentOf(buf, expectTag(algParts[0], Tag.OID, 'signature algorithm'))),
      signature: bitStringBytes(buf, expectTag(sigNode, Tag.BIT_STRING, 'signature')),
    };
  } catch (cause) {
    throw csrError('der', `CSR is not valid DER: ${(cause as Error).message}`, cause);
  }
  const alg = CSR_SIG_ALGS[s.sigAlgOid];
  if (alg === undefined) {
    const what = SHA1_ALGS.has(s.sigAlgOid) ? 'SHA-1 signatures are not accepted' : 'unsupported signature algorithm';
    throw csrError('algorithm', `${what} (${s.sigAlgOid}): expected ECDSA or RSA PKCS#1 v1.5 with SHA-256 or SHA-384`);
  }
  // ECDSA AlgorithmIdentifiers have no parameters (RFC 5758); RSA ones have NULL (or none).
  if (sigParams !== undefined && (alg.key === 'ec' || sigParams.tag !== Tag.NULL || sigParams.end !== sigParams.contentStart)) {
    throw csrError('algorithm', `unexpected parameters for signature algorithm ${s.sigAlgOid}`);
  }
  let keyInfo: SpkiInfo;
  try {
    keyInfo = inspectSpki(s.spki);
  } catch (cause) {
    throw csrError('key', `CSR public key not accepted: ${(cause as Error).message}`, cause);
  }
  if (keyInfo.kind !== alg.key) {
    throw csrError('algorithm', `signature algorithm ${s.sigAlgOid} does not match the ${keyInfo.kind.toUpperCase()} key`);
  }
  return { ...s, keyInfo, hash: alg.hash };
}

function checkSignature(s: CsrStructure, key?: KeyObject): void {
  let ok: boolean;
  try {
    ok = cryptoVerify(s.hash, s.cri, key ?? verificationKey(s.spki, s.keyInfo), s.signature);
  } catch (cause) {
    // OpenSSL refused the key itself (e.g. a point not on the curve) or the signature encoding.
    throw csrError('key', `CSR public key or signature rejected by the crypto library: ${(cause as Error).message}`, cause);
  }
  if (!ok) throw csrError('signature', 'CSR signature does not verify with the CSR public key');
}

/**
 * Hot-path check used by issuance: structure, policy and signature; returns the SPKI and its
 * classification without keeping a KeyObject (crypto.verify imports the DER key itself).
 */
export function verifyCsrForIssuance(der: Uint8Array): { spki: Buffer; keyInfo: SpkiInfo } {
  const s = readCsr(der);
  checkSignature(s);
  return { spki: s.spki, keyInfo: s.keyInfo };
}

function readRequestedExtensions(s: CsrStructure): { uris: string[]; dns: string[]; oids: string[] } {
  const out = { uris: [] as string[], dns: [] as string[], oids: [] as string[] };
  if (s.attributesNode === undefined) return out;
  const b = s.buf;
  for (const attr of readChildren(b, s.attributesNode)) {
    const [type, values] = readChildren(b, expectTag(attr, Tag.SEQUENCE, 'Attribute'));
    if (decodeOid(contentOf(b, expectTag(type, Tag.OID, 'attribute type'))) !== OID.extensionRequest) continue;
    for (const exts of readChildren(b, expectTag(values, Tag.SET, 'attribute values'))) {
      for (const ext of readChildren(b, expectTag(exts, Tag.SEQUENCE, 'Extensions'))) {
        const parts = readChildren(b, expectTag(ext, Tag.SEQUENCE, 'Extension'));
        const extOid = decodeOid(contentOf(b, expectTag(parts[0], Tag.OID, 'extnID')));
        out.oids.push(extOid);
        if (extOid !== OID.subjectAltName) continue;
        const valueNode = expectTag(parts[parts.length - 1], Tag.OCTET_STRING, 'extnValue');
        const v = contentOf(b, valueNode);
        for (const gn of readChildren(v, readRoot(v, Tag.SEQUENCE))) {
          const text = Buffer.from(contentOf(v, gn)).toString('latin1');
          if (gn.tag === 0x86) out.uris.push(text);
          else if (gn.tag === 0x82) out.dns.push(text);
        }
      }
    }
  }
  return out;
}

/** Parses and verifies a CSR. Throws ERR_X509_CSR_INVALID (reasons in the file comment). */
export function parseCsr(der: Uint8Array): ParsedCsr {
  const s = readCsr(der);
  let publicKey: KeyObject;
  try {
    publicKey = importSpki(s.spki, s.keyInfo);
  } catch (cause) {
    throw csrError('key', `CSR public key rejected by the crypto library: ${(cause as Error).message}`, cause);
  }
  checkSignature(s, publicKey);
  let subjectAttributes: NameAttribute[];
  let requested: { uris: string[]; dns: string[]; oids: string[] };
  try {
    subjectAttributes = decodeName(s.buf, s.subjectNode);
    requested = readRequestedExtensions(s);
  } catch (cause) {
    throw csrError('der', `CSR subject or attributes are malformed: ${(cause as Error).message}`, cause);
  }
  return {
    publicKey,
    spki: Buffer.from(s.spki),
    keyInfo: s.keyInfo,
    subject: subjectFromAttributes(subjectAttributes),
    subjectAttributes,
    requestedUris: requested.uris,
    requestedDnsNames: requested.dns,
    requestedExtensions: requested.oids,
    signatureAlgorithmOid: s.sigAlgOid,
  };
}

export interface CreateCsrOptions {
  subject?: X509Subject;
  dnsNames?: readonly string[];
  uris?: readonly string[];
}

/**
 * A CSR for `privateKey` (agent side). By default it carries only the public key (empty subject,
 * no attributes), as SPIRE's agent sends; the server ignores everything else anyway.
 * Signed with SHA-256 (SHA-384 for P-384 keys).
 */
export function createCsr(privateKey: KeyObject, opts: CreateCsrOptions = {}): Buffer {
  if (privateKey.type !== 'private') throw new SpiffeError(ErrorCode.KEY_INVALID, 'not_private', 'createCsr needs a private key');
  const alg = signatureAlgorithmFor(keyTypeOf(privateKey));
  for (const d of opts.dnsNames ?? []) {
    const problem = dnsNameProblem(d);
    if (problem !== undefined) throw new SpiffeError(ErrorCode.X509_CSR_INVALID, 'dns_name', `cannot request DNS name: ${problem}`);
  }
  for (const u of opts.uris ?? []) ia5String(u); // ASCII check
  const attributes: Buffer[] = [];
  if ((opts.dnsNames?.length ?? 0) > 0 || (opts.uris?.length ?? 0) > 0) {
    const san = subjectAltNameExt({ uris: opts.uris ?? [], dnsNames: opts.dnsNames ?? [] }, false);
    attributes.push(sequence(oid(OID.extensionRequest), set(sequence(san))));
  }
  const cri = sequence(smallInt(0), encodeName(opts.subject), spkiOf(privateKey), tlv(0xa0, Buffer.concat(attributes)));
  const signature = signTbs(alg.hash, cri, privateKey);
  return sequence(cri, alg.der, bitString(signature));
}

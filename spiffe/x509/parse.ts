/**
 * Certificate parsing into the facts Spindle's validators need.
 *
 * Parsed with the strict DER reader in der.ts rather than asn1js: asn1js is a BER parser
 * (indefinite and non-minimal lengths pass), and a validator that reads bytes differently from
 * the TLS stacks it guards is a known source of bypasses. pkijs/asn1js/OpenSSL are used in the
 * tests as independent cross-checks.
 *
 * Rules enforced here (SpiffeError ERR_X509_CERT_INVALID, reasons):
 *   der                    not a single DER Certificate (trailing bytes, bad lengths, wrong
 *                          tags, negative serial, malformed time or extension value, non-ASCII
 *                          IA5String in a general name ...)
 *   signature_algorithm    the TBS signature AlgorithmIdentifier differs from the outer one
 *   duplicate_extension    the same extension twice (RFC 5280 4.2)
 *   critical_extension     a critical extension this module does not process (RFC 5280 4.2:
 *                          must be rejected). Processed: basicConstraints, keyUsage, extKeyUsage,
 *                          subjectAltName, nameConstraints, subject/authority key identifier,
 *                          certificatePolicies (any policy accepted; no explicit policy required).
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { ErrorCode, SpiffeError } from '../errors.js';
import {
  DerError,
  Tag,
  bitStringBytes,
  bytesOf,
  contentOf,
  decodeOid,
  expectTag,
  readChildren,
  readRoot,
  readTlv,
  type DerNode,
} from './der.js';
import { KEY_USAGE_BITS, type KeyUsageName } from './extensions.js';
import { decodeName, type NameAttribute } from './name.js';
import { OID } from './oids.js';
import { importSpki, spkiOf } from './spki.js';

export type KeyUsage = Record<KeyUsageName, boolean>;

/** One subtree base of a nameConstraints extension. IPs and directory names as hex. */
export interface NameSubtree {
  type: 'dns' | 'uri' | 'email' | 'ip' | 'directoryName' | 'other';
  value: string;
}

export interface NameConstraints {
  permitted: NameSubtree[];
  excluded: NameSubtree[];
}

export interface CertificateExtension {
  oid: string;
  critical: boolean;
  value: Buffer;
}

export interface CertificateInfo {
  der: Buffer;
  /** The signed TBSCertificate bytes. */
  tbs: Buffer;
  /** 1, 2 or 3. */
  version: number;
  /** Serial magnitude, lowercase hex without sign padding. */
  serialHex: string;
  subjectDer: Buffer;
  issuerDer: Buffer;
  subject: NameAttribute[];
  issuer: NameAttribute[];
  /** subject and issuer Names are byte-identical (RFC 5280 "self-issued"). */
  selfIssued: boolean;
  notBefore: Date;
  notAfter: Date;
  /** basicConstraints cA. */
  isCa: boolean;
  /** basicConstraints pathLenConstraint, when present on a CA. */
  pathLen?: number;
  /** undefined when the certificate has no keyUsage extension. */
  keyUsage: KeyUsage | undefined;
  keyUsageCritical: boolean;
  /** extKeyUsage OIDs; empty when absent. */
  extKeyUsage: string[];
  uriSans: string[];
  dnsSans: string[];
  emailSans: string[];
  ipSans: string[];
  /** Count of SAN entries of any other type (otherName, directoryName, ...). */
  otherSanCount: number;
  sanCritical: boolean;
  ski?: Buffer;
  /** authorityKeyIdentifier keyIdentifier, when present. */
  aki?: Buffer;
  nameConstraints?: NameConstraints;
  /** SubjectPublicKeyInfo DER. */
  spki: Buffer;
  /** OID of the subjectPublicKeyInfo algorithm (ecPublicKey, rsaEncryption, ...). */
  publicKeyAlgorithmOid: string;
  /** Imported on first access (an OpenSSL import costs about as much as a signature check). */
  readonly publicKey: KeyObject;
  signatureAlgorithmOid: string;
  signature: Buffer;
  extensions: CertificateExtension[];
}

const HANDLED_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.certificatePolicies,
]);

function certError(reason: string, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.X509_CERT_INVALID, reason, message, cause === undefined ? undefined : { cause });
}

const TIME_RE_UTC = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;
const TIME_RE_GEN = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

/** RFC 5280 Time: UTCTime YYMMDDHHMMSSZ (50..99 -> 19xx) or GeneralizedTime YYYYMMDDHHMMSSZ. */
export function decodeTime(buf: Uint8Array, node: DerNode): Date {
  const s = Buffer.from(contentOf(buf, node)).toString('latin1');
  let m: RegExpExecArray | null;
  let year: number;
  if (node.tag === Tag.UTC_TIME && (m = TIME_RE_UTC.exec(s)) !== null) {
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (node.tag === Tag.GENERALIZED_TIME && (m = TIME_RE_GEN.exec(s)) !== null) {
    year = Number(m[1]);
  } else {
    throw new DerError(`malformed time ${JSON.stringify(s)}`);
  }
  const [mo, d, h, mi, se] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  const t = new Date(Date.UTC(year, mo - 1, d, h, mi, se));
  if (year < 100) t.setUTCFullYear(year);
  if (t.getUTCMonth() !== mo - 1 || t.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) {
    throw new DerError(`invalid date ${JSON.stringify(s)}`);
  }
  return t;
}

function ia5(buf: Uint8Array, node: DerNode, what: string): string {
  const c = contentOf(buf, node);
  for (let i = 0; i < c.length; i++) {
    if (c[i]! > 0x7f) throw new DerError(`${what} is not IA5 (ASCII)`);
  }
  return Buffer.from(c).toString('latin1');
}

function ipToString(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    return groups.join(':');
  }
  return Buffer.from(bytes).toString('hex');
}

interface Sans {
  uris: string[];
  dns: string[];
  emails: string[];
  ips: string[];
  other: number;
}

function parseGeneralNames(buf: Uint8Array, node: DerNode): Sans {
  const out: Sans = { uris: [], dns: [], emails: [], ips: [], other: 0 };
  for (const gn of readChildren(buf, expectTag(node, Tag.SEQUENCE, 'GeneralNames'))) {
    switch (gn.tag) {
      case 0x81:
        out.emails.push(ia5(buf, gn, 'rfc822Name'));
        break;
      case 0x82:
        out.dns.push(ia5(buf, gn, 'dNSName'));
        break;
      case 0x86:
        out.uris.push(ia5(buf, gn, 'uniformResourceIdentifier'));
        break;
      case 0x87: {
        const ip = contentOf(buf, gn);
        if (ip.length !== 4 && ip.length !== 16) throw new DerError('iPAddress must be 4 or 16 octets');
        out.ips.push(ipToString(ip));
        break;
      }
      default:
        out.other++;
    }
  }
  return out;
}

function parseSubtree(buf: Uint8Array, node: DerNode): NameSubtree {
  const [base] = readChildren(buf, expectTag(node, Tag.SEQUENCE, 'GeneralSubtree'));
  if (base === undefined) throw new DerError('empty GeneralSubtree');
  switch (base.tag) {
    case 0x82:
      return { type: 'dns', value: ia5(buf, base, 'dNSName constraint') };
    case 0x86:
      return { type: 'uri', value: ia5(buf, base, 'URI constraint') };
    case 0x81:
      return { type: 'email', value: ia5(buf, base, 'rfc822Name constraint') };
    case 0x87:
      return { type: 'ip', value: Buffer.from(contentOf(buf, base)).toString('hex') };
    case 0xa4:
      return { type: 'directoryName', value: Buffer.from(contentOf(buf, base)).toString('hex') };
    default:
      return { type: 'other', value: Buffer.from(bytesOf(buf, base)).toString('hex') };
  }
}

function parseNameConstraints(buf: Uint8Array): NameConstraints {
  const root = readRoot(buf, Tag.SEQUENCE);
  const nc: NameConstraints = { permitted: [], excluded: [] };
  for (const part of readChildren(buf, root)) {
    if (part.tag === 0xa0) nc.permitted.push(...readChildren(buf, part).map((s) => parseSubtree(buf, s)));
    else if (part.tag === 0xa1) nc.excluded.push(...readChildren(buf, part).map((s) => parseSubtree(buf, s)));
    else throw new DerError('unexpected field in NameConstraints');
  }
  return nc;
}

function parseKeyUsage(buf: Uint8Array): KeyUsage {
  const node = readRoot(buf, Tag.BIT_STRING);
  const c = contentOf(buf, node);
  if (c.length < 1 || c[0]! > 7 || (c.length === 1 && c[0] !== 0)) throw new DerError('malformed keyUsage BIT STRING');
  const bits = c.subarray(1);
  const ku = {} as KeyUsage;
  for (const [name, bit] of Object.entries(KEY_USAGE_BITS) as [KeyUsageName, number][]) {
    ku[name] = ((bits[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) !== 0;
  }
  return ku;
}

function smallUnsigned(buf: Uint8Array, node: DerNode): number {
  const c = contentOf(buf, expectTag(node, Tag.INTEGER, 'INTEGER'));
  if (c.length === 0 || (c[0]! & 0x80) !== 0) throw new DerError('negative or empty INTEGER');
  if (c.length > 6) return Number.MAX_SAFE_INTEGER;
  let v = 0;
  for (const b of c) v = v * 256 + b;
  return v;
}

function algorithmOid(buf: Uint8Array, node: DerNode): string {
  const [o] = readChildren(buf, expectTag(node, Tag.SEQUENCE, 'AlgorithmIdentifier'));
  return decodeOid(contentOf(buf, expectTag(o, Tag.OID, 'algorithm')));
}

/** Parses one DER certificate. Throws SpiffeError ERR_X509_CERT_INVALID (reasons in the file comment). */
export function parseCertificate(der: Uint8Array): CertificateInfo {
  const buf = Buffer.isBuffer(der) ? der : Buffer.from(der.buffer, der.byteOffset, der.byteLength);
  try {
    return parseInner(buf);
  } catch (err) {
    if (err instanceof SpiffeError) throw err;
    throw certError('der', `malformed certificate: ${(err as Error).message}`, err);
  }
}

function parseInner(buf: Buffer): CertificateInfo {
  const root = readRoot(buf, Tag.SEQUENCE);
  const [tbsNode, sigAlgNode, sigNode, extra] = readChildren(buf, root);
  if (extra !== undefined) throw new DerError('extra fields after the signature');
  expectTag(tbsNode, Tag.SEQUENCE, 'TBSCertificate');
  expectTag(sigAlgNode, Tag.SEQUENCE, 'signatureAlgorithm');
  const signature = Buffer.from(bitStringBytes(buf, expectTag(sigNode, Tag.BIT_STRING, 'signatureValue')));
  const fields = readChildren(buf, tbsNode!);
  let i = 0;
  let version = 1;
  if (fields[0]?.tag === 0xa0) {
    const [v, more] = readChildren(buf, fields[0]);
    if (v === undefined || more !== undefined) throw new DerError('malformed version');
    const n = smallUnsigned(buf, v);
    if (n > 2) throw new DerError(`unknown certificate version ${n + 1}`);
    version = n + 1;
    i = 1;
  }
  const serialNode = expectTag(fields[i++], Tag.INTEGER, 'serialNumber');
  const serialBytes = contentOf(buf, serialNode);
  if (serialBytes.length === 0 || serialBytes.length > 21) throw new DerError('serial number length out of range');
  if ((serialBytes[0]! & 0x80) !== 0) throw new DerError('negative serial number');
  const tbsSigAlg = expectTag(fields[i++], Tag.SEQUENCE, 'signature');
  const issuerNode = expectTag(fields[i++], Tag.SEQUENCE, 'issuer');
  const validity = readChildren(buf, expectTag(fields[i++], Tag.SEQUENCE, 'validity'));
  if (validity.length !== 2) throw new DerError('validity must hold two times');
  const subjectNode = expectTag(fields[i++], Tag.SEQUENCE, 'subject');
  const spkiNode = expectTag(fields[i++], Tag.SEQUENCE, 'subjectPublicKeyInfo');
  let extsNode: DerNode | undefined;
  for (; i < fields.length; i++) {
    const f = fields[i]!;
    if (f.tag === 0x81 || f.tag === 0x82) {
      if (version < 2) throw new DerError('unique identifiers need version 2 or 3');
    } else if (f.tag === 0xa3 && extsNode === undefined) {
      if (version !== 3) throw new DerError('extensions need version 3');
      extsNode = f;
    } else {
      throw new DerError(`unexpected TBSCertificate field with tag 0x${f.tag.toString(16)}`);
    }
  }
  if (Buffer.compare(bytesOf(buf, tbsSigAlg), bytesOf(buf, sigAlgNode!)) !== 0) {
    throw certError('signature_algorithm', 'the TBSCertificate signature algorithm differs from the outer signatureAlgorithm');
  }

  const spki = Buffer.from(bytesOf(buf, spkiNode));
  const [spkiAlg] = readChildren(buf, spkiNode);
  const publicKeyAlgorithmOid = algorithmOid(buf, expectTag(spkiAlg, Tag.SEQUENCE, 'SPKI algorithm'));

  const info: Omit<CertificateInfo, 'publicKey'> = {
    der: buf,
    tbs: buf.subarray(tbsNode!.start, tbsNode!.end),
    version,
    serialHex: Buffer.from(serialBytes.length > 1 && serialBytes[0] === 0 ? serialBytes.subarray(1) : serialBytes).toString('hex'),
    subjectDer: buf.subarray(subjectNode.start, subjectNode.end),
    issuerDer: buf.subarray(issuerNode.start, issuerNode.end),
    subject: decodeName(buf, subjectNode),
    issuer: decodeName(buf, issuerNode),
    selfIssued: Buffer.compare(bytesOf(buf, subjectNode), bytesOf(buf, issuerNode)) === 0,
    notBefore: decodeTime(buf, validity[0]!),
    notAfter: decodeTime(buf, validity[1]!),
    isCa: false,
    keyUsage: undefined,
    keyUsageCritical: false,
    extKeyUsage: [],
    uriSans: [],
    dnsSans: [],
    emailSans: [],
    ipSans: [],
    otherSanCount: 0,
    sanCritical: false,
    spki,
    publicKeyAlgorithmOid,
    signatureAlgorithmOid: algorithmOid(buf, sigAlgNode!),
    signature,
    extensions: [],
  };

  if (extsNode !== undefined) {
    const [seq, more] = readChildren(buf, extsNode);
    if (more !== undefined) throw new DerError('malformed extensions wrapper');
    const exts = readChildren(buf, expectTag(seq, Tag.SEQUENCE, 'Extensions'));
    if (exts.length === 0) throw new DerError('empty Extensions');
    const seen = new Set<string>();
    for (const e of exts) {
      const parts = readChildren(buf, expectTag(e, Tag.SEQUENCE, 'Extension'));
      const id = decodeOid(contentOf(buf, expectTag(parts[0], Tag.OID, 'extnID')));
      let critical = false;
      let valueNode = parts[1];
      if (valueNode?.tag === Tag.BOOLEAN) {
        const b = contentOf(buf, valueNode);
        if (b.length !== 1) throw new DerError('malformed BOOLEAN');
        critical = b[0] !== 0;
        valueNode = parts[2];
        if (parts.length !== 3) throw new DerError('malformed Extension');
      } else if (parts.length !== 2) {
        throw new DerError('malformed Extension');
      }
      const value = Buffer.from(contentOf(buf, expectTag(valueNode, Tag.OCTET_STRING, 'extnValue')));
      if (seen.has(id)) throw certError('duplicate_extension', `extension ${id} appears more than once`);
      seen.add(id);
      info.extensions.push({ oid: id, critical, value });
      if (critical && !HANDLED_EXTENSIONS.has(id)) {
        throw certError('critical_extension', `unsupported critical extension ${id}`);
      }
      applyExtension(info, id, critical, value);
    }
  }

  let publicKey: KeyObject | undefined;
  return Object.defineProperty(info, 'publicKey', {
    enumerable: false,
    get(): KeyObject {
      publicKey ??= importSpki(spki);
      return publicKey;
    },
  }) as CertificateInfo;
}

function applyExtension(info: Omit<CertificateInfo, 'publicKey'>, id: string, critical: boolean, v: Buffer): void {
  switch (id) {
    case OID.basicConstraints: {
      const parts = readChildren(v, readRoot(v, Tag.SEQUENCE));
      let k = 0;
      if (parts[k]?.tag === Tag.BOOLEAN) {
        const b = contentOf(v, parts[k]!);
        if (b.length !== 1) throw new DerError('malformed BOOLEAN');
        info.isCa = b[0] !== 0;
        k++;
      }
      if (parts[k] !== undefined) {
        const pathLen = smallUnsigned(v, parts[k]!);
        if (info.isCa) info.pathLen = pathLen;
        k++;
      }
      if (k !== parts.length) throw new DerError('malformed basicConstraints');
      break;
    }
    case OID.keyUsage:
      info.keyUsage = parseKeyUsage(v);
      info.keyUsageCritical = critical;
      break;
    case OID.extKeyUsage:
      info.extKeyUsage = readChildren(v, readRoot(v, Tag.SEQUENCE)).map((o) => decodeOid(contentOf(v, expectTag(o, Tag.OID, 'KeyPurposeId'))));
      break;
    case OID.subjectAltName: {
      const sans = parseGeneralNames(v, readRoot(v));
      info.uriSans = sans.uris;
      info.dnsSans = sans.dns;
      info.emailSans = sans.emails;
      info.ipSans = sans.ips;
      info.otherSanCount = sans.other;
      info.sanCritical = critical;
      break;
    }
    case OID.subjectKeyIdentifier:
      info.ski = Buffer.from(contentOf(v, readRoot(v, Tag.OCTET_STRING)));
      break;
    case OID.authorityKeyIdentifier: {
      for (const part of readChildren(v, readRoot(v, Tag.SEQUENCE))) {
        if (part.tag === 0x80) info.aki = Buffer.from(contentOf(v, part));
      }
      break;
    }
    case OID.nameConstraints:
      info.nameConstraints = parseNameConstraints(v);
      break;
    default:
      // Non-critical extensions we do not interpret (and certificatePolicies) are kept in
      // `extensions` only. Check they are at least one DER value.
      readTlv(v, 0);
  }
}

/** True when the certificate's public key is the public half of `privateKey`. */
export function certificateMatchesKey(certDer: Uint8Array | CertificateInfo, privateKey: KeyObject): boolean {
  const info = 'spki' in certDer ? certDer : parseCertificate(certDer);
  let mine: Buffer;
  try {
    mine = spkiOf(privateKey);
  } catch {
    return false;
  }
  if (mine.equals(info.spki)) return true;
  // Same key, different encoding (e.g. a compressed EC point): compare normalised exports.
  try {
    return createPublicKey({ key: info.spki, format: 'der', type: 'spki' }).export({ format: 'der', type: 'spki' }).equals(mine);
  } catch {
    return false;
  }
}

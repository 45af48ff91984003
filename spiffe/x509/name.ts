/**
 * X.501 Names: encoding a small subject model, decoding any Name into attribute pairs.
 * Attribute order when encoding follows Go's pkix.Name (C, O, OU, CN, serialNumber) so
 * certificates look like SPIRE's.
 */
import { DerError, Tag, contentOf, decodeOid, expectTag, readChildren, sequence, set, oid, printableString, utf8String, type DerNode } from './der.js';
import { OID } from './oids.js';

/** The subject fields Spindle can put into a certificate or CSR. All optional; none means an empty Name. */
export interface X509Subject {
  country?: string;
  organization?: string;
  organizationalUnit?: string;
  commonName?: string;
  serialNumber?: string;
}

/** One decoded AttributeTypeAndValue. Values of non-string types are shown as `#<hex DER>`. */
export interface NameAttribute {
  oid: string;
  value: string;
}

const EMPTY_NAME = Buffer.from([Tag.SEQUENCE, 0]);

function checkLength(field: string, value: string, max: number): void {
  if (value.length === 0 || value.length > max) throw new RangeError(`subject ${field} must be 1..${max} characters`);
}

/** DER Name for a subject; `undefined` or `{}` gives the empty Name (`30 00`). */
export function encodeName(subject: X509Subject | undefined): Buffer {
  if (subject === undefined) return EMPTY_NAME;
  const rdns: Buffer[] = [];
  const add = (type: string, value: Buffer): void => {
    rdns.push(set(sequence(oid(type), value)));
  };
  if (subject.country !== undefined) {
    if (!/^[A-Z]{2}$/.test(subject.country)) throw new RangeError('subject country must be two capital letters');
    add(OID.country, printableString(subject.country));
  }
  if (subject.organization !== undefined) {
    checkLength('organization', subject.organization, 64);
    add(OID.organization, utf8String(subject.organization));
  }
  if (subject.organizationalUnit !== undefined) {
    checkLength('organizationalUnit', subject.organizationalUnit, 64);
    add(OID.organizationalUnit, utf8String(subject.organizationalUnit));
  }
  if (subject.commonName !== undefined) {
    checkLength('commonName', subject.commonName, 64);
    add(OID.commonName, utf8String(subject.commonName));
  }
  if (subject.serialNumber !== undefined) {
    checkLength('serialNumber', subject.serialNumber, 64);
    add(OID.serialNumber, printableString(subject.serialNumber));
  }
  return rdns.length === 0 ? EMPTY_NAME : sequence(...rdns);
}

function decodeUcs2(bytes: Uint8Array): string {
  if (bytes.length % 2 !== 0) throw new DerError('odd-length BMPString');
  let s = '';
  for (let i = 0; i < bytes.length; i += 2) s += String.fromCharCode((bytes[i]! << 8) | bytes[i + 1]!);
  return s;
}

/** Decodes a Name node (RDNSequence) into its attributes, in order. */
export function decodeName(buf: Uint8Array, node: DerNode): NameAttribute[] {
  expectTag(node, Tag.SEQUENCE, 'Name');
  const out: NameAttribute[] = [];
  for (const rdn of readChildren(buf, node)) {
    expectTag(rdn, Tag.SET, 'RelativeDistinguishedName');
    const atvs = readChildren(buf, rdn);
    if (atvs.length === 0) throw new DerError('empty RelativeDistinguishedName');
    for (const atv of atvs) {
      const [type, value, extra] = readChildren(buf, expectTag(atv, Tag.SEQUENCE, 'AttributeTypeAndValue'));
      if (value === undefined || extra !== undefined) throw new DerError('malformed AttributeTypeAndValue');
      const oidStr = decodeOid(contentOf(buf, expectTag(type, Tag.OID, 'attribute type')));
      const content = contentOf(buf, value);
      let str: string;
      switch (value.tag) {
        case Tag.UTF8_STRING:
          str = Buffer.from(content).toString('utf8');
          break;
        case Tag.PRINTABLE_STRING:
        case Tag.IA5_STRING:
        case Tag.T61_STRING:
          str = Buffer.from(content).toString('latin1');
          break;
        case Tag.BMP_STRING:
          str = decodeUcs2(content);
          break;
        default:
          str = `#${Buffer.from(buf.subarray(value.start, value.end)).toString('hex')}`;
      }
      out.push({ oid: oidStr, value: str });
    }
  }
  return out;
}

const FIELD_BY_OID: Record<string, keyof X509Subject> = {
  [OID.country]: 'country',
  [OID.organization]: 'organization',
  [OID.organizationalUnit]: 'organizationalUnit',
  [OID.commonName]: 'commonName',
  [OID.serialNumber]: 'serialNumber',
};

/** The known fields of decoded attributes (first occurrence wins); others are dropped. */
export function subjectFromAttributes(attrs: readonly NameAttribute[]): X509Subject {
  const s: X509Subject = {};
  for (const a of attrs) {
    const field = FIELD_BY_OID[a.oid];
    if (field !== undefined && s[field] === undefined) s[field] = a.value;
  }
  return s;
}

/** Human-readable one-line form (`C=US, O=SPIFFE, CN=x`), for messages and tests. */
export function nameToString(attrs: readonly NameAttribute[]): string {
  const short: Record<string, string> = {
    [OID.country]: 'C',
    [OID.organization]: 'O',
    [OID.organizationalUnit]: 'OU',
    [OID.commonName]: 'CN',
    [OID.serialNumber]: 'serialNumber',
  };
  return attrs.map((a) => `${short[a.oid] ?? a.oid}=${a.value}`).join(', ');
}

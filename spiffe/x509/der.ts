/**
 * A small DER (X.690) writer and a strict DER reader, for the X.509 hot paths.
 *
 * Why it exists: pkijs builds certificates at well under 1k/s, and the server signs a leaf
 * X509-SVID for every CSR. Certificates here are assembled from these tag-length-value helpers
 * (a leaf TBS is ~40 calls) and parsed CSRs are walked with `readTlv` instead of asn1js.
 *
 * Writer contract: every function returns the complete DER encoding of one value (or the
 * concatenation for `concat`). Inputs are validated where a wrong input would silently produce
 * a wrong encoding (string alphabets, OID arcs, time ranges). Only low tag numbers (< 31).
 *
 * Reader contract: DER only. Definite, minimal lengths; single-byte tags (no high tag numbers);
 * every value must fit inside its parent. Errors are `DerError` (callers turn them into their own
 * SpiffeError code with reason `der`).
 */

/** Universal tags used by X.509. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

const CONSTRUCTED = 0x20;
const CONTEXT = 0x80;

// ---------------------------------------------------------------------------------------------
// Writer

/** DER length octets: short form below 128, else 0x80|n followed by n big-endian bytes. */
export function encodeLength(len: number): Buffer {
  if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`invalid DER length ${len}`);
  if (len < 0x80) return Buffer.from([len]);
  if (len < 0x100) return Buffer.from([0x81, len]);
  if (len < 0x10000) return Buffer.from([0x82, len >> 8, len & 0xff]);
  const bytes: number[] = [];
  for (let v = len; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV with the given (single-octet) identifier and content. */
export function tlv(tag: number, content: Uint8Array): Buffer {
  const len = content.length;
  if (len < 0x80) {
    const out = Buffer.allocUnsafe(2 + len);
    out[0] = tag;
    out[1] = len;
    out.set(content, 2);
    return out;
  }
  const lenBytes = encodeLength(len);
  const out = Buffer.allocUnsafe(1 + lenBytes.length + len);
  out[0] = tag;
  out.set(lenBytes, 1);
  out.set(content, 1 + lenBytes.length);
  return out;
}

export function concat(...parts: Uint8Array[]): Buffer {
  return Buffer.concat(parts);
}

export function sequence(...parts: Uint8Array[]): Buffer {
  return tlv(Tag.SEQUENCE, parts.length === 1 ? parts[0]! : Buffer.concat(parts));
}

/** DER ordering of SET OF elements: compare encodings, the shorter padded with trailing zeros. */
function compareSetElements(a: Uint8Array, b: Uint8Array): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** SET OF: elements are sorted as DER requires (X.690 11.6). */
export function set(...parts: Uint8Array[]): Buffer {
  const sorted = parts.length > 1 ? [...parts].sort(compareSetElements) : parts;
  return tlv(Tag.SET, Buffer.concat(sorted));
}

/**
 * INTEGER from an unsigned big-endian magnitude: leading zero bytes are dropped and a 0x00 is
 * prepended when the top bit is set, so the value stays positive. Empty input encodes 0.
 */
export function integer(magnitude: Uint8Array): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const body = magnitude.subarray(start);
  if (body.length === 0) return Buffer.from([Tag.INTEGER, 1, 0]);
  if ((body[0]! & 0x80) !== 0) return tlv(Tag.INTEGER, Buffer.concat([Buffer.from([0]), body]));
  return tlv(Tag.INTEGER, body);
}

/** INTEGER from a JS safe integer (two's complement, minimal). */
export function smallInt(n: number): Buffer {
  if (!Number.isSafeInteger(n)) throw new RangeError(`smallInt: ${n} is not a safe integer`);
  const bytes: number[] = [];
  let v = BigInt(n);
  for (;;) {
    const b = Number(v & 0xffn);
    bytes.unshift(b);
    v >>= 8n;
    // Stop once the remaining value is pure sign extension of the byte just written.
    if ((v === 0n && (b & 0x80) === 0) || (v === -1n && (b & 0x80) !== 0)) break;
  }
  return tlv(Tag.INTEGER, Buffer.from(bytes));
}

const oidCache = new Map<string, Buffer>();

function base128(out: number[], value: number): void {
  const groups: number[] = [value & 0x7f];
  for (let v = Math.floor(value / 128); v > 0; v = Math.floor(v / 128)) groups.unshift((v & 0x7f) | 0x80);
  out.push(...groups);
}

/** OBJECT IDENTIFIER from dotted form ("1.2.840.10045.4.3.2"); encodings are cached. */
export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split('.').map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : NaN));
  const [first, second] = arcs;
  if (
    arcs.length < 2 ||
    arcs.some((a) => !Number.isSafeInteger(a)) ||
    first === undefined ||
    second === undefined ||
    first > 2 ||
    (first < 2 && second > 39)
  ) {
    throw new RangeError(`invalid OID ${JSON.stringify(dotted)}`);
  }
  const body: number[] = [];
  base128(body, first * 40 + second);
  for (const arc of arcs.slice(2)) base128(body, arc);
  const enc = tlv(Tag.OID, Buffer.from(body));
  oidCache.set(dotted, enc);
  return enc;
}

export function bitString(bytes: Uint8Array, unusedBits = 0): Buffer {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
    throw new RangeError(`invalid unused bit count ${unusedBits}`);
  }
  const content = Buffer.allocUnsafe(bytes.length + 1);
  content[0] = unusedBits;
  content.set(bytes, 1);
  return tlv(Tag.BIT_STRING, content);
}

/**
 * A NamedBitList BIT STRING (e.g. KeyUsage) with the given bit numbers set (bit 0 = most
 * significant bit of the first byte). DER: trailing zero bits are removed (X.690 11.2.2).
 */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return bitString(new Uint8Array(0));
  const top = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(top / 8) + 1);
  for (const b of bits) {
    if (!Number.isInteger(b) || b < 0) throw new RangeError(`invalid bit number ${b}`);
    bytes[b >> 3]! |= 0x80 >> (b & 7);
  }
  return bitString(bytes, 7 - (top & 7));
}

export function octetString(bytes: Uint8Array): Buffer {
  return tlv(Tag.OCTET_STRING, bytes);
}

const TRUE = Buffer.from([Tag.BOOLEAN, 1, 0xff]);
const FALSE = Buffer.from([Tag.BOOLEAN, 1, 0x00]);
export function boolean(value: boolean): Buffer {
  return value ? TRUE : FALSE;
}

const NULL = Buffer.from([Tag.NULL, 0]);
export function nullValue(): Buffer {
  return NULL;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

function checkDate(d: Date): void {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new RangeError('invalid Date');
}

/** UTCTime YYMMDDHHMMSSZ (seconds precision, UTC); only years 1950..2049 (RFC 5280 4.1.2.5.1). */
export function utcTime(d: Date): Buffer {
  checkDate(d);
  const y = d.getUTCFullYear();
  if (y < 1950 || y > 2049) throw new RangeError(`UTCTime cannot hold year ${y}`);
  const s =
    pad(y % 100, 2) +
    pad(d.getUTCMonth() + 1, 2) +
    pad(d.getUTCDate(), 2) +
    pad(d.getUTCHours(), 2) +
    pad(d.getUTCMinutes(), 2) +
    pad(d.getUTCSeconds(), 2) +
    'Z';
  return tlv(Tag.UTC_TIME, Buffer.from(s, 'latin1'));
}

/** GeneralizedTime YYYYMMDDHHMMSSZ (no fractional seconds, UTC), years 0000..9999. */
export function generalizedTime(d: Date): Buffer {
  checkDate(d);
  const y = d.getUTCFullYear();
  if (y < 0 || y > 9999) throw new RangeError(`GeneralizedTime cannot hold year ${y}`);
  const s =
    pad(y, 4) +
    pad(d.getUTCMonth() + 1, 2) +
    pad(d.getUTCDate(), 2) +
    pad(d.getUTCHours(), 2) +
    pad(d.getUTCMinutes(), 2) +
    pad(d.getUTCSeconds(), 2) +
    'Z';
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(s, 'latin1'));
}

/** X.509 Time: UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5). */
export function time(d: Date): Buffer {
  checkDate(d);
  const y = d.getUTCFullYear();
  return y >= 1950 && y <= 2049 ? utcTime(d) : generalizedTime(d);
}

function checkTagNumber(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new RangeError(`context tag number ${n} out of range 0..30`);
}

/** [n] EXPLICIT: a constructed context-specific wrapper around one encoded element. */
export function explicit(tagNumber: number, element: Uint8Array): Buffer {
  checkTagNumber(tagNumber);
  return tlv(CONTEXT | CONSTRUCTED | tagNumber, element);
}

/** [n] IMPLICIT: the element's own tag replaced by the context tag (constructed bit kept). */
export function implicit(tagNumber: number, element: Uint8Array): Buffer {
  checkTagNumber(tagNumber);
  if (element.length < 2) throw new RangeError('implicit: not an encoded element');
  const out = Buffer.from(element);
  out[0] = CONTEXT | (element[0]! & CONSTRUCTED) | tagNumber;
  return out;
}

/** A primitive [n] IMPLICIT value from raw content octets (e.g. GeneralName dNSName [2]). */
export function contextPrimitive(tagNumber: number, content: Uint8Array): Buffer {
  checkTagNumber(tagNumber);
  return tlv(CONTEXT | tagNumber, content);
}

export function ia5String(s: string): Buffer {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0x7f) throw new RangeError('IA5String must be ASCII');
  }
  return tlv(Tag.IA5_STRING, Buffer.from(s, 'latin1'));
}

const LONE_SURROGATE = /\p{Cs}/u;
export function utf8String(s: string): Buffer {
  if (LONE_SURROGATE.test(s)) throw new RangeError('UTF8String: ill-formed UTF-16 (lone surrogate)');
  return tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));
}

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;
export function printableString(s: string): Buffer {
  if (!PRINTABLE.test(s)) throw new RangeError(`not a PrintableString: ${JSON.stringify(s)}`);
  return tlv(Tag.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
}

// ---------------------------------------------------------------------------------------------
// Reader

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

/** One parsed TLV: the identifier octet and offsets into the buffer it was read from. */
export interface DerNode {
  tag: number;
  /** Offset of the identifier octet. */
  start: number;
  /** Offset of the first content octet. */
  contentStart: number;
  /** Offset just past the last content octet. */
  end: number;
}

/** Reads one TLV at `offset`, which must end at or before `limit`. */
export function readTlv(buf: Uint8Array, offset: number, limit: number = buf.length): DerNode {
  if (offset + 2 > limit) throw new DerError(`truncated DER at offset ${offset}`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high-tag-number form at offset ${offset} is not supported`);
  const first = buf[offset + 1]!;
  let len: number;
  let contentStart: number;
  if (first < 0x80) {
    len = first;
    contentStart = offset + 2;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw new DerError(`indefinite length at offset ${offset} is not DER`);
    if (n > 4) throw new DerError(`length of length ${n} at offset ${offset} is too large`);
    if (offset + 2 + n > limit) throw new DerError(`truncated DER length at offset ${offset}`);
    if (buf[offset + 2] === 0) throw new DerError(`non-minimal DER length at offset ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[offset + 2 + i]!;
    if (len < 0x80) throw new DerError(`non-minimal DER length at offset ${offset}`);
    contentStart = offset + 2 + n;
  }
  const end = contentStart + len;
  if (end > limit) throw new DerError(`DER value at offset ${offset} overruns its container`);
  return { tag, start: offset, contentStart, end };
}

/** The single TLV that makes up the whole buffer (trailing bytes are an error). */
export function readRoot(buf: Uint8Array, expectTag?: number): DerNode {
  const node = readTlv(buf, 0);
  if (node.end !== buf.length) throw new DerError(`${buf.length - node.end} trailing bytes after DER value`);
  if (expectTag !== undefined && node.tag !== expectTag) {
    throw new DerError(`expected tag 0x${expectTag.toString(16)}, found 0x${node.tag.toString(16)}`);
  }
  return node;
}

/** The child TLVs of a constructed node, in order. */
export function readChildren(buf: Uint8Array, node: DerNode): DerNode[] {
  if ((node.tag & CONSTRUCTED) === 0) throw new DerError(`value at offset ${node.start} is not constructed`);
  const out: DerNode[] = [];
  for (let off = node.contentStart; off < node.end; ) {
    const child = readTlv(buf, off, node.end);
    out.push(child);
    off = child.end;
  }
  return out;
}

/** Throws unless `node` has tag `tag`. */
export function expectTag(node: DerNode | undefined, tag: number, what: string): DerNode {
  if (node === undefined) throw new DerError(`missing ${what}`);
  if (node.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${node.tag.toString(16)}`);
  return node;
}

export function contentOf(buf: Uint8Array, node: DerNode): Uint8Array {
  return buf.subarray(node.contentStart, node.end);
}

export function bytesOf(buf: Uint8Array, node: DerNode): Uint8Array {
  return buf.subarray(node.start, node.end);
}

/** Dotted form of an OBJECT IDENTIFIER node's content. */
export function decodeOid(content: Uint8Array): string {
  if (content.length === 0) throw new DerError('empty OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < content.length; i++) {
    const b = content[i]!;
    if (v === 0 && b === 0x80) throw new DerError('non-minimal OBJECT IDENTIFIER arc');
    v = v * 128 + (b & 0x7f);
    if (!Number.isSafeInteger(v)) throw new DerError('OBJECT IDENTIFIER arc too large');
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) {
        if (v < 80) arcs.push(Math.floor(v / 40), v % 40);
        else arcs.push(2, v - 80);
      } else {
        arcs.push(v);
      }
      v = 0;
    } else if (i === content.length - 1) {
      throw new DerError('truncated OBJECT IDENTIFIER');
    }
  }
  return arcs.join('.');
}

/** Content of a BIT STRING with no unused bits (keys, signatures). */
export function bitStringBytes(buf: Uint8Array, node: DerNode): Uint8Array {
  expectTag(node, Tag.BIT_STRING, 'BIT STRING');
  if (node.end - node.contentStart < 1 || buf[node.contentStart] !== 0) {
    throw new DerError('BIT STRING with unused bits where whole octets were expected');
  }
  return buf.subarray(node.contentStart + 1, node.end);
}

/** Magnitude of a non-negative INTEGER (sign padding removed); throws for negative or non-minimal. */
export function unsignedIntegerBytes(buf: Uint8Array, node: DerNode): Uint8Array {
  expectTag(node, Tag.INTEGER, 'INTEGER');
  const c = buf.subarray(node.contentStart, node.end);
  if (c.length === 0) throw new DerError('empty INTEGER');
  if ((c[0]! & 0x80) !== 0) throw new DerError('negative INTEGER');
  if (c.length > 1 && c[0] === 0 && (c[1]! & 0x80) === 0) throw new DerError('non-minimal INTEGER');
  return c.length > 1 && c[0] === 0 ? c.subarray(1) : c;
}

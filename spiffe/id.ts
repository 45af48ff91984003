/**
 * SPIFFE IDs and trust domains, parsed byte by byte as the SPIFFE ID specification defines them.
 *
 * Contract:
 * - `SpiffeId` and `TrustDomain` are branded strings: only this module's parsers and builders
 *   produce them, so holding one means it is valid. A parsed ID is the input string itself,
 *   unchanged: no decoding, no case folding, no dot-segment removal. Compare with `===`.
 * - Parsing scans UTF-16 code units one by one; every accepted character is ASCII, so units are
 *   bytes. The WHATWG `URL` parser is never used (it normalises).
 * - Form: `spiffe://<trust-domain><path>`; trust domain non-empty, only `a-z 0-9 . - _`, at most
 *   255 bytes; path optional, `/`-separated non-empty segments of `a-z A-Z 0-9 . - _`, no `.` or
 *   `..` segment, no trailing `/`. Whole ID at most 2048 bytes (UTF-8).
 *
 * Errors are `SpiffeError` with code `ERR_SPIFFE_ID_INVALID` (IDs) or `ERR_TRUST_DOMAIN_INVALID`
 * (trust domains) and one of these stable `reason`s:
 *   not_string            the value is not a string at all
 *   empty                 empty input
 *   too_long              ID over 2048 bytes (UTF-8 length)
 *   scheme                missing, other or non-lowercase scheme, or no `//` (`spiffe:/x`)
 *   empty_trust_domain    `spiffe://` followed by nothing or by `/`
 *   trust_domain_char     a character outside `a-z 0-9 . - _` in the trust domain: uppercase,
 *                         `:` port, `@` userinfo, `[` IPv6 literal, `%`, `?`, `#`, space,
 *                         control or non-ASCII (the message names which)
 *   trust_domain_too_long trust domain over 255 bytes
 *   path_empty_segment    `//` in the path
 *   path_trailing_slash   path ending with `/` (including a bare `/`)
 *   path_dot_segment      a segment that is exactly `.` or `..`
 *   path_char             a character outside `a-z A-Z 0-9 . - _` in a path segment: `%`
 *                         percent-encoding, `?` query, `#` fragment, space, control, non-ASCII
 *                         (the message names which); also `/` inside a single segment given to
 *                         `idFromSegments`
 *   path_no_leading_slash `idFromPath` given a non-empty path not starting with `/`
 *   has_path              `parseTrustDomain` given a `spiffe://td/...` ID that has a path
 *   root_path             leaf check: the ID has no path (`spiffe://td` names no workload)
 *
 * Checks run in this order, first failure wins: not_string, empty, too_long, scheme,
 * trust domain (empty, characters, length), path (left to right).
 */
import { ErrorCode, SpiffeError, quote } from './errors.js';

export type TrustDomain = string & { __brand: 'TrustDomain' };
export type SpiffeId = string & { __brand: 'SpiffeId' };

export type SpiffeIdReason =
  | 'not_string'
  | 'empty'
  | 'too_long'
  | 'scheme'
  | 'empty_trust_domain'
  | 'trust_domain_char'
  | 'trust_domain_too_long'
  | 'path_empty_segment'
  | 'path_trailing_slash'
  | 'path_dot_segment'
  | 'path_char'
  | 'path_no_leading_slash'
  | 'has_path'
  | 'root_path';

export const MAX_SPIFFE_ID_LENGTH = 2048;
export const MAX_TRUST_DOMAIN_LENGTH = 255;

const SCHEME = 'spiffe://';
const SCHEME_LEN = SCHEME.length;
const SLASH = 0x2f;
const DOT = 0x2e;

/** Character classes for ASCII: bit 1 = allowed in a trust domain, bit 2 = allowed in a path segment. */
const TD_OK = 1;
const PATH_OK = 2;
const CHAR_CLASS = new Uint8Array(128);
for (let c = 0x61; c <= 0x7a; c++) CHAR_CLASS[c] = TD_OK | PATH_OK; // a-z
for (let c = 0x30; c <= 0x39; c++) CHAR_CLASS[c] = TD_OK | PATH_OK; // 0-9
for (const ch of '.-_') CHAR_CLASS[ch.charCodeAt(0)] = TD_OK | PATH_OK;
for (let c = 0x41; c <= 0x5a; c++) CHAR_CLASS[c] = PATH_OK; // A-Z: path only

interface Fail {
  reason: SpiffeIdReason;
  detail: string;
}

function fail(reason: SpiffeIdReason, detail: string): Fail {
  return { reason, detail };
}

function describeChar(s: string, i: number): string {
  const cp = s.codePointAt(i) ?? 0;
  const hex = `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
  return cp > 0x20 && cp < 0x7f ? `${JSON.stringify(String.fromCodePoint(cp))} at index ${i}` : `${hex} at index ${i}`;
}

/** Why a given character is not allowed, in words, for the common mistakes. */
function charHint(c: number): string {
  if (c >= 0x80) return 'non-ASCII character';
  if (c < 0x20 || c === 0x7f) return 'control character';
  switch (c) {
    case 0x20: return 'space';
    case 0x25: return 'percent-encoding is not allowed';
    case 0x3f: return 'query is not allowed';
    case 0x23: return 'fragment is not allowed';
    case 0x3a: return 'port (or any ":") is not allowed';
    case 0x40: return 'userinfo ("@") is not allowed';
    case 0x5b:
    case 0x5d: return 'IP literals in brackets (IPv6) are not allowed';
    default: return 'character not allowed';
  }
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** Validates trust-domain characters in s[start, end). */
function scanTrustDomain(s: string, start: number, end: number): Fail | undefined {
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 128 && (CHAR_CLASS[c]! & TD_OK) !== 0) continue;
    const hint = c >= 0x41 && c <= 0x5a ? 'uppercase letters are not allowed' : charHint(c);
    return fail(
      'trust_domain_char',
      `trust domain may contain only a-z 0-9 . - _ (${hint}: ${describeChar(s, i)})`,
    );
  }
  if (end - start > MAX_TRUST_DOMAIN_LENGTH) {
    return fail(
      'trust_domain_too_long',
      `trust domain is ${end - start} bytes, over the ${MAX_TRUST_DOMAIN_LENGTH}-byte limit`,
    );
  }
  return undefined;
}

function isDotSegment(s: string, start: number, len: number): boolean {
  return (
    (len === 1 && s.charCodeAt(start) === DOT) ||
    (len === 2 && s.charCodeAt(start) === DOT && s.charCodeAt(start + 1) === DOT)
  );
}

/** Validates a path s[start..] where s[start] is `/`. */
function scanPath(s: string, start: number): Fail | undefined {
  const n = s.length;
  let segStart = start + 1;
  for (let i = segStart; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === SLASH) {
      const len = i - segStart;
      if (len === 0) return fail('path_empty_segment', `path must not contain empty segments ("//" at index ${i - 1})`);
      if (isDotSegment(s, segStart, len)) {
        return fail('path_dot_segment', `path must not contain "." or ".." segments (at index ${segStart})`);
      }
      segStart = i + 1;
    } else if (c >= 128 || (CHAR_CLASS[c]! & PATH_OK) === 0) {
      return fail(
        'path_char',
        `path segments may contain only a-z A-Z 0-9 . - _ (${charHint(c)}: ${describeChar(s, i)})`,
      );
    }
  }
  const len = n - segStart;
  if (len === 0) return fail('path_trailing_slash', 'path must not end with "/"');
  if (isDotSegment(s, segStart, len)) {
    return fail('path_dot_segment', `path must not contain "." or ".." segments (at index ${segStart})`);
  }
  return undefined;
}

function schemeFail(s: string): Fail {
  let detail: string;
  if (s.slice(0, SCHEME_LEN).toLowerCase() === SCHEME) detail = 'scheme must be lowercase "spiffe://"';
  else if (s.startsWith('spiffe:')) detail = 'must start with "spiffe://" (the "//" authority is missing)';
  else detail = 'must start with "spiffe://"';
  return fail('scheme', detail);
}

function checkId(s: unknown): Fail | undefined {
  if (typeof s !== 'string') return fail('not_string', `expected a string, got ${typeof s}`);
  const n = s.length;
  if (n === 0) return fail('empty', 'must not be empty');
  // UTF-8 bytes >= UTF-16 units, and <= 3 per unit: only count bytes when it can matter.
  if (n > MAX_SPIFFE_ID_LENGTH || (n * 3 > MAX_SPIFFE_ID_LENGTH && utf8Length(s) > MAX_SPIFFE_ID_LENGTH)) {
    return fail('too_long', `is ${utf8Length(s)} bytes, over the ${MAX_SPIFFE_ID_LENGTH}-byte limit`);
  }
  if (!s.startsWith(SCHEME)) return schemeFail(s);
  const slash = s.indexOf('/', SCHEME_LEN);
  const tdEnd = slash === -1 ? n : slash;
  if (tdEnd === SCHEME_LEN) return fail('empty_trust_domain', 'trust domain must not be empty');
  const tdFail = scanTrustDomain(s, SCHEME_LEN, tdEnd);
  if (tdFail !== undefined) return tdFail;
  return slash === -1 ? undefined : scanPath(s, slash);
}

function idError(input: unknown, f: Fail): SpiffeError {
  const shown = typeof input === 'string' ? quote(input) : `(${typeof input})`;
  return new SpiffeError(ErrorCode.SPIFFE_ID_INVALID, f.reason, `invalid SPIFFE ID ${shown}: ${f.detail}`);
}

function tdError(input: unknown, f: Fail): SpiffeError {
  const shown = typeof input === 'string' ? quote(input) : `(${typeof input})`;
  return new SpiffeError(ErrorCode.TRUST_DOMAIN_INVALID, f.reason, `invalid trust domain ${shown}: ${f.detail}`);
}

/** Parses a SPIFFE ID; returns the same string, branded. Throws SpiffeError ERR_SPIFFE_ID_INVALID. */
export function parseSpiffeId(s: string): SpiffeId {
  const f = checkId(s);
  if (f !== undefined) throw idError(s, f);
  return s as SpiffeId;
}

/** True when `s` is a valid SPIFFE ID (never throws). */
export function isSpiffeId(s: unknown): s is SpiffeId {
  return checkId(s) === undefined;
}

/**
 * Validates a trust domain given bare (`example.org`) or as its trust-domain ID
 * (`spiffe://example.org`, no path); returns the bare name. Like SPIRE/go-spiffe, an input
 * containing `:/` is read as an ID.
 */
function checkTrustDomain(s: unknown): Fail | { td: string } {
  if (typeof s !== 'string') return fail('not_string', `expected a string, got ${typeof s}`);
  const n = s.length;
  if (n === 0) return fail('empty', 'must not be empty');
  if (s.startsWith(SCHEME)) {
    const slash = s.indexOf('/', SCHEME_LEN);
    const tdEnd = slash === -1 ? n : slash;
    if (tdEnd === SCHEME_LEN) return fail('empty_trust_domain', 'trust domain must not be empty');
    const f = scanTrustDomain(s, SCHEME_LEN, tdEnd);
    if (f !== undefined) return f;
    if (slash !== -1) return fail('has_path', 'a trust domain ID must not have a path');
    return { td: s.slice(SCHEME_LEN) };
  }
  if (s.includes(':/')) return schemeFail(s);
  const f = scanTrustDomain(s, 0, n);
  return f ?? { td: s };
}

/** Parses a trust domain (bare or `spiffe://td`); returns the bare name. Throws ERR_TRUST_DOMAIN_INVALID. */
export function parseTrustDomain(s: string): TrustDomain {
  const r = checkTrustDomain(s);
  if ('reason' in r) throw tdError(s, r);
  return r.td as TrustDomain;
}

/** True when `parseTrustDomain(s)` would succeed (never throws). Not a type guard: `spiffe://td` passes too. */
export function isTrustDomain(s: unknown): boolean {
  return !('reason' in checkTrustDomain(s));
}

/** The trust domain of a parsed ID. */
export function trustDomainOf(id: SpiffeId): TrustDomain {
  const slash = id.indexOf('/', SCHEME_LEN);
  return (slash === -1 ? id.slice(SCHEME_LEN) : id.slice(SCHEME_LEN, slash)) as TrustDomain;
}

/** The path of a parsed ID, starting with `/`; `''` for a trust-domain ID. */
export function pathOf(id: SpiffeId): string {
  const slash = id.indexOf('/', SCHEME_LEN);
  return slash === -1 ? '' : id.slice(slash);
}

/** True when `id` belongs to `td` (exact trust-domain match, not a prefix match). */
export function isMemberOf(id: SpiffeId, td: TrustDomain): boolean {
  const end = SCHEME_LEN + td.length;
  return id.startsWith(td, SCHEME_LEN) && (id.length === end || id.charCodeAt(end) === SLASH);
}

/** The trust domain's own ID, `spiffe://<td>` (Workload API map key, CA certificate URI SAN). */
export function trustDomainId(td: TrustDomain): SpiffeId {
  return (SCHEME + td) as SpiffeId;
}

function checkSegment(seg: string): Fail | undefined {
  if (typeof seg !== 'string') return fail('not_string', `expected a string, got ${typeof seg}`);
  if (seg.length === 0) return fail('path_empty_segment', 'segment must not be empty');
  if (isDotSegment(seg, 0, seg.length)) return fail('path_dot_segment', 'segment must not be "." or ".."');
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i);
    if (c < 128 && (CHAR_CLASS[c]! & PATH_OK) !== 0) continue;
    const hint = c === SLASH ? 'a segment must not contain "/"' : charHint(c);
    return fail('path_char', `segments may contain only a-z A-Z 0-9 . - _ (${hint}: ${describeChar(seg, i)})`);
  }
  return undefined;
}

function checkBuiltLength(id: string, what: string): void {
  if (id.length > MAX_SPIFFE_ID_LENGTH) {
    // Only ASCII gets here, so units are bytes.
    throw idError(id, fail('too_long', `${what} is ${id.length} bytes, over the ${MAX_SPIFFE_ID_LENGTH}-byte limit`));
  }
}

/**
 * Builds `spiffe://<td>/<seg1>/<seg2>...`. Each segment is checked by the segment rules and must
 * not contain `/`; errors name the offending segment. No segments gives the trust-domain ID.
 */
export function idFromSegments(td: TrustDomain, ...segments: string[]): SpiffeId {
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    const f = checkSegment(seg);
    if (f !== undefined) {
      const shown = typeof seg === 'string' ? quote(seg) : `(${typeof seg})`;
      throw new SpiffeError(
        ErrorCode.SPIFFE_ID_INVALID,
        f.reason,
        `invalid SPIFFE ID path segment ${shown} (segment ${i + 1}): ${f.detail}`,
      );
    }
  }
  const id = segments.length === 0 ? SCHEME + td : `${SCHEME}${td}/${segments.join('/')}`;
  checkBuiltLength(id, 'built ID');
  return id as SpiffeId;
}

/** Builds `spiffe://<td><path>`; `path` is `''` (trust-domain ID) or starts with `/` and follows the path rules. */
export function idFromPath(td: TrustDomain, path: string): SpiffeId {
  let f: Fail | undefined;
  if (typeof path !== 'string') f = fail('not_string', `expected a string, got ${typeof path}`);
  else if (path.length > 0 && path.charCodeAt(0) !== SLASH) f = fail('path_no_leading_slash', 'path must start with "/"');
  else if (path.length > 0) f = scanPath(path, 0);
  if (f !== undefined) {
    const shown = typeof path === 'string' ? quote(path) : `(${typeof path})`;
    throw new SpiffeError(ErrorCode.SPIFFE_ID_INVALID, f.reason, `invalid SPIFFE ID path ${shown}: ${f.detail}`);
  }
  const id = SCHEME + td + path;
  checkBuiltLength(id, 'built ID');
  return id as SpiffeId;
}

const ROOT_DETAIL = 'a leaf SVID ID needs a non-root path (spiffe://<td> alone names a trust domain, not a workload)';

/** Parses an ID for an X509-SVID leaf: as `parseSpiffeId`, and the path must be non-empty (reason `root_path`). */
export function parseLeafSpiffeId(s: string): SpiffeId {
  const id = parseSpiffeId(s);
  assertLeafId(id);
  return id;
}

/** Throws ERR_SPIFFE_ID_INVALID / `root_path` when a parsed ID has no path. */
export function assertLeafId(id: SpiffeId): void {
  if (id.indexOf('/', SCHEME_LEN) === -1) throw idError(id, fail('root_path', ROOT_DETAIL));
}

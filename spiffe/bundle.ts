/**
 * SPIFFE trust bundles (JWKS documents) and the Workload API bundle encodings.
 *
 * Contract:
 * - A `Bundle` is the trust material of exactly ONE trust domain: X.509 authorities (DER CA
 *   certificates, insertion order kept, no duplicates) and JWT authorities (kid -> public key,
 *   kid unique). A bundle document does not name its trust domain, so the caller always supplies
 *   it; bundles of different trust domains are never merged (`BundleSet` keys by trust domain).
 * - `Bundle` is a plain value: adding or removing authorities does NOT bump `sequence`; the owner
 *   of the bundle (the server CA) does that.
 * - Only public keys are stored (a private KeyObject given to `addJwtAuthority` is reduced to its
 *   public half). Keys are EC P-256/P-384/P-521 or RSA: whatever `keys.ts` can express as a JWK,
 *   so marshalling never fails.
 * - `marshalBundle` output is deterministic: X.509 authorities in insertion order, then JWT
 *   authorities sorted by kid, members in a fixed order; `spiffe_sequence` is written with every
 *   digit of the 64-bit value.
 * - `parseBundle` is strict about structure and tolerant about extensions: keys with an unknown
 *   `use` or `kty` are ignored (spec), keys without `use` are rejected (SPIRE does too).
 *   `spiffe_sequence` is read from the raw text, so values above 2^53 keep every digit.
 *
 * Errors: `SpiffeError` code `ERR_BUNDLE_INVALID`, reasons:
 *   json          not UTF-8 / not JSON / not a JSON object
 *   keys          `keys` missing or not an array, or an entry that is not an object
 *   missing_use   a key without `use`
 *   jwk           a bad `use`/`kty` type, bad or private public-key parameters, unsupported key
 *   x5c           x509-svid key: `x5c` not exactly one standard-base64 string, not a certificate,
 *                 or a certificate whose key differs from the JWK parameters
 *   kid           jwt-svid key: `kid` missing, not a string or empty; also `addJwtAuthority`
 *   duplicate_kid two JWT authorities with one kid
 *   sequence      `spiffe_sequence` not an integer in [0, 2^64-1]
 *   refresh_hint  `spiffe_refresh_hint` not a non-negative integer (seconds)
 *   certificate   an X.509 authority that is not one DER certificate (PEM/DER/`addX509Authority`)
 *   pem           PEM bundle text without CERTIFICATE blocks or with other blocks
 *   der           concatenated DER that does not split into certificates, or is empty
 */
import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { ErrorCode, SpiffeError, quote } from './errors.js';
import { trustDomainId, type SpiffeId, type TrustDomain } from './id.js';
import { exportPublicKeySpki, jwkToPublicKey, publicKeyToJwk, type PublicJwk } from './keys.js';
import { certificatesToPem, pemToCertificates, splitConcatenatedDer } from './pem.js';
import type { JwtBundleSource, X509BundleSource } from './source.js';

export const USE_X509_SVID = 'x509-svid';
export const USE_JWT_SVID = 'jwt-svid';
export const MAX_SEQUENCE = (1n << 64n) - 1n;

export type BundleErrorReason =
  | 'json'
  | 'keys'
  | 'missing_use'
  | 'jwk'
  | 'x5c'
  | 'kid'
  | 'duplicate_kid'
  | 'sequence'
  | 'refresh_hint'
  | 'certificate'
  | 'pem'
  | 'der';

function bundleError(reason: BundleErrorReason, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.BUNDLE_INVALID, reason, message, cause === undefined ? undefined : { cause });
}

interface X509Authority {
  der: Buffer;
  jwk: PublicJwk;
}

interface JwtAuthority {
  key: KeyObject;
  spki: Buffer;
  jwk: PublicJwk;
}

export interface BundleInit {
  x509Authorities?: Iterable<Uint8Array>;
  jwtAuthorities?: Iterable<readonly [string, KeyObject]>;
  sequence?: bigint;
  refreshHintSeconds?: number | undefined;
}

function copyBytes(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes); // own copy: callers may reuse their buffers
}

function checkSequence(value: bigint): bigint {
  if (typeof value !== 'bigint' || value < 0n || value > MAX_SEQUENCE) {
    throw bundleError('sequence', `bundle sequence must be an integer in [0, 2^64-1], got ${String(value)}`);
  }
  return value;
}

function checkRefreshHint(value: number | undefined): number | undefined {
  if (value !== undefined && (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)) {
    throw bundleError('refresh_hint', `refresh hint must be a non-negative integer number of seconds, got ${String(value)}`);
  }
  return value;
}

/** Parse one DER certificate (exactly: no trailing bytes) and return its public JWK. */
function x509Authority(der: Uint8Array, reason: 'certificate' | 'x5c'): X509Authority {
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

function jwtAuthority(key: KeyObject): JwtAuthority {
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

function checkKid(kid: unknown): string {
  if (typeof kid !== 'string' || kid.length === 0) {
    throw bundleError('kid', `JWT authority needs a non-empty string kid, got ${typeof kid === 'string' ? '""' : typeof kid}`);
  }
  return kid;
}

/** Module-private view of a bundle's authorities (JWT ones sorted by kid), set by Bundle's static block. */
let entriesOf: (bundle: Bundle) => { x509: readonly X509Authority[]; jwt: [string, JwtAuthority][] };

export class Bundle implements X509BundleSource, JwtBundleSource {
  readonly trustDomain: TrustDomain;
  #x509: X509Authority[] = [];
  #jwt = new Map<string, JwtAuthority>();
  #sequence = 0n;
  #refreshHint: number | undefined;

  constructor(trustDomain: TrustDomain, init: BundleInit = {}) {
    this.trustDomain = trustDomain;
    for (const der of init.x509Authorities ?? []) this.addX509Authority(der);
    for (const [kid, key] of init.jwtAuthorities ?? []) this.addJwtAuthority(kid, key);
    if (init.sequence !== undefined) this.sequence = init.sequence;
    this.refreshHintSeconds = init.refreshHintSeconds;
  }

  /** `spiffe_sequence`: 64-bit unsigned. Throws ERR_BUNDLE_INVALID `sequence` when out of range. */
  get sequence(): bigint {
    return this.#sequence;
  }
  set sequence(value: bigint) {
    this.#sequence = checkSequence(value);
  }

  /** `spiffe_refresh_hint` in seconds, or undefined (consumers use their default). */
  get refreshHintSeconds(): number | undefined {
    return this.#refreshHint;
  }
  set refreshHintSeconds(value: number | undefined) {
    this.#refreshHint = checkRefreshHint(value);
  }

  // ---- X.509 authorities ----

  /** Copies of the DER CA certificates, in insertion order. */
  x509Authorities(): Buffer[] {
    return this.#x509.map((a) => Buffer.from(a.der));
  }

  /**
   * Adds a DER CA certificate; returns false when it is already present. Throws ERR_BUNDLE_INVALID
   * `certificate` when it is not exactly one certificate with an EC or RSA key.
   */
  addX509Authority(der: Uint8Array): boolean {
    if (this.hasX509Authority(der)) return false;
    this.#x509.push(x509Authority(der, 'certificate'));
    return true;
  }

  removeX509Authority(der: Uint8Array): boolean {
    const i = this.#indexOfX509(der);
    if (i === -1) return false;
    this.#x509.splice(i, 1);
    return true;
  }

  hasX509Authority(der: Uint8Array): boolean {
    return this.#indexOfX509(der) !== -1;
  }

  #indexOfX509(der: Uint8Array): number {
    return this.#x509.findIndex((a) => a.der.equals(der));
  }

  /** Concatenated DER of every X.509 authority (Workload API bundle encoding). */
  x509AuthoritiesDer(): Buffer {
    return Buffer.concat(this.#x509.map((a) => a.der));
  }

  /** PEM CERTIFICATE blocks of every X.509 authority, in order. */
  x509AuthoritiesPem(): string {
    return certificatesToPem(this.#x509.map((a) => a.der));
  }

  // ---- JWT authorities ----

  /** A copy of the kid -> public key map, in insertion order. */
  jwtAuthorities(): Map<string, KeyObject> {
    return new Map([...this.#jwt].map(([kid, a]) => [kid, a.key]));
  }

  jwtAuthority(kid: string): KeyObject | undefined {
    return this.#jwt.get(kid)?.key;
  }

  /**
   * Adds a JWT authority; returns false when the same key is already present under `kid`.
   * Throws ERR_BUNDLE_INVALID `kid` (empty kid), `duplicate_kid` (kid taken by another key) or
   * `jwk` (not an EC/RSA key). A private key is reduced to its public half.
   */
  addJwtAuthority(kid: string, key: KeyObject): boolean {
    checkKid(kid);
    const authority = jwtAuthority(key);
    const existing = this.#jwt.get(kid);
    if (existing !== undefined) {
      if (existing.spki.equals(authority.spki)) return false;
      throw bundleError('duplicate_kid', `JWT authority kid ${quote(kid)} is already used by another key`);
    }
    this.#jwt.set(kid, authority);
    return true;
  }

  removeJwtAuthority(kid: string): boolean {
    return this.#jwt.delete(kid);
  }

  hasJwtAuthority(kid: string): boolean {
    return this.#jwt.has(kid);
  }

  // ---- whole bundle ----

  /** No authority of either kind: the bundle trusts nothing. */
  isEmpty(): boolean {
    return this.#x509.length === 0 && this.#jwt.size === 0;
  }

  /**
   * Same trust domain, sequence, refresh hint, X.509 authorities in the same order, and the same
   * kid -> key pairs (order of JWT authorities does not matter: it is not part of the encoding).
   */
  equals(other: Bundle): boolean {
    if (this === other) return true;
    if (this.trustDomain !== other.trustDomain || this.#sequence !== other.#sequence || this.#refreshHint !== other.#refreshHint) {
      return false;
    }
    if (this.#x509.length !== other.#x509.length || this.#jwt.size !== other.#jwt.size) return false;
    for (let i = 0; i < this.#x509.length; i++) {
      if (!this.#x509[i]!.der.equals(other.#x509[i]!.der)) return false;
    }
    for (const [kid, a] of this.#jwt) {
      const b = other.#jwt.get(kid);
      if (b === undefined || !a.spki.equals(b.spki)) return false;
    }
    return true;
  }

  /** A deep copy (its own buffers and maps; KeyObjects are immutable and shared). */
  clone(): Bundle {
    const copy = new Bundle(this.trustDomain);
    copy.#x509 = this.#x509.map((a) => ({ der: Buffer.from(a.der), jwk: a.jwk }));
    copy.#jwt = new Map(this.#jwt);
    copy.#sequence = this.#sequence;
    copy.#refreshHint = this.#refreshHint;
    return copy;
  }

  /** X509BundleSource: own authorities for own trust domain (possibly []: trust nothing), else undefined. */
  getX509Authorities(td: TrustDomain): readonly Buffer[] | undefined {
    return td === this.trustDomain ? this.x509Authorities() : undefined;
  }

  /** JwtBundleSource: own JWT authorities for own trust domain (possibly empty), else undefined. */
  getJwtAuthorities(td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined {
    return td === this.trustDomain ? this.jwtAuthorities() : undefined;
  }

  static {
    entriesOf = (bundle) => ({
      x509: bundle.#x509,
      jwt: [...bundle.#jwt].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    });
  }
}


// ---------------------------------------------------------------------------------------------
// Marshalling

/** JWK members in a fixed order (go-jose's order: use, kty, kid, crv, n, e, x, y, x5c). */
function jwkJson(use: string, jwk: PublicJwk, extra: { kid?: string; x5c?: Buffer }): Record<string, unknown> {
  const out: Record<string, unknown> = { use, kty: jwk.kty };
  if (extra.kid !== undefined) out['kid'] = extra.kid;
  if (jwk.kty === 'EC') {
    out['crv'] = jwk.crv;
    out['x'] = jwk.x;
    out['y'] = jwk.y;
  } else {
    out['n'] = jwk.n;
    out['e'] = jwk.e;
  }
  if (extra.x5c !== undefined) out['x5c'] = [extra.x5c.toString('base64')];
  return out;
}

function jwtKeysJson(bundle: Bundle): Record<string, unknown>[] {
  return entriesOf(bundle).jwt.map(([kid, a]) => jwkJson(USE_JWT_SVID, a.jwk, { kid }));
}

/**
 * The SPIFFE bundle document (federation endpoint, `spindle bundle show`):
 * `{"keys":[...],"spiffe_sequence":N[,"spiffe_refresh_hint":S]}`. Deterministic; the sequence
 * is spliced in as a JSON number with all its digits (JSON.stringify cannot write a bigint).
 */
export function marshalBundle(bundle: Bundle): string {
  const { x509 } = entriesOf(bundle);
  const keys = [
    ...x509.map((a) => jwkJson(USE_X509_SVID, a.jwk, { x5c: a.der })),
    ...jwtKeysJson(bundle),
  ];
  const hint = bundle.refreshHintSeconds;
  return `{"keys":${JSON.stringify(keys)},"spiffe_sequence":${bundle.sequence.toString(10)}${
    hint === undefined ? '' : `,"spiffe_refresh_hint":${hint}`
  }}`;
}

/** Workload API JWT bundle value: `{"keys":[...]}` with only the JWT authorities (kid, use jwt-svid). */
export function marshalJwtBundle(bundle: Bundle): string {
  return JSON.stringify({ keys: jwtKeysJson(bundle) });
}

// ---------------------------------------------------------------------------------------------
// Parsing

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeText(json: string | Uint8Array): string {
  if (typeof json === 'string') return json;
  try {
    return utf8.decode(json);
  } catch (cause) {
    throw bundleError('json', 'bundle document is not valid UTF-8', cause);
  }
}

function parseObject(text: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    throw bundleError('json', 'bundle document is not valid JSON', cause);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw bundleError('json', 'bundle document must be a JSON object');
  }
  return doc as Record<string, unknown>;
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/** Index just after the string token starting at `i` (a `"`). Input is known-valid JSON. */
function skipString(text: string, i: number): number {
  i++;
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === 0x22) return i + 1;
    else if (Number.isNaN(c)) throw bundleError('json', 'unterminated JSON string');
    else i++;
  }
}

/** Index just after the value starting at `i`. Input is known-valid JSON. */
function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x22) return skipString(text, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    while (i < text.length) {
      const d = text.charCodeAt(i);
      if (d === 0x22) {
        i = skipString(text, i);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    throw bundleError('json', 'unterminated JSON value');
  }
  // number, true, false, null: runs to the next delimiter
  while (i < text.length) {
    const d = text.charCodeAt(i);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break;
    i++;
  }
  return i;
}

/**
 * The raw source text of a top-level member's value (the last one, as JSON.parse keeps the last
 * duplicate), or undefined. Only called on text JSON.parse accepted as an object. Keys are
 * compared after JSON unescaping, so `"spiffe\u005fsequence"` is found too.
 */
export function rawTopLevelMember(text: string, member: string): string | undefined {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && isWs(text.charCodeAt(i))) i++;
  };
  ws();
  if (text.charCodeAt(i) !== 0x7b) return undefined;
  i++;
  let found: string | undefined;
  for (;;) {
    ws();
    const c = text.charCodeAt(i);
    if (c === 0x7d || Number.isNaN(c)) return found;
    if (c === 0x2c) {
      i++;
      continue;
    }
    const keyEnd = skipString(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = keyEnd;
    ws();
    i++; // ':'
    ws();
    const start = i;
    i = skipValue(text, i);
    if (key === member) found = text.slice(start, i);
  }
}

const UINT_RE = /^(?:0|[1-9][0-9]*)$/;

function parseSequence(doc: Record<string, unknown>, text: string): bigint {
  if (!Object.hasOwn(doc, 'spiffe_sequence')) return 0n;
  const value = doc['spiffe_sequence'];
  const raw = rawTopLevelMember(text, 'spiffe_sequence');
  if (typeof value !== 'number' || raw === undefined || !UINT_RE.test(raw)) {
    throw bundleError('sequence', `spiffe_sequence must be a non-negative integer, got ${quote(raw ?? String(value), 40)}`);
  }
  const seq = BigInt(raw);
  if (seq > MAX_SEQUENCE) throw bundleError('sequence', `spiffe_sequence ${quote(raw, 40)} is above 2^64-1`);
  return seq;
}

function parseRefreshHint(doc: Record<string, unknown>): number | undefined {
  if (!Object.hasOwn(doc, 'spiffe_refresh_hint')) return undefined;
  const value = doc['spiffe_refresh_hint'];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw bundleError('refresh_hint', `spiffe_refresh_hint must be a non-negative integer number of seconds, got ${quote(JSON.stringify(value) ?? 'undefined', 40)}`);
  }
  return value;
}

function keysArray(doc: Record<string, unknown>): Record<string, unknown>[] {
  const keys = doc['keys'];
  if (!Array.isArray(keys)) throw bundleError('keys', '"keys" must be an array');
  return keys.map((k, i) => {
    if (typeof k !== 'object' || k === null || Array.isArray(k)) throw bundleError('keys', `keys[${i}] is not a JSON object`);
    return k as Record<string, unknown>;
  });
}

const KNOWN_KTY = new Set(['EC', 'RSA']);
const STD_B64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/** Strict standard base64 (RFC 4648 section 4, padded, canonical). */
function decodeStdBase64(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !STD_B64_RE.test(s)) return undefined;
  const bytes = Buffer.from(s, 'base64');
  return bytes.toString('base64') === s ? bytes : undefined;
}

function ktyOf(key: Record<string, unknown>, i: number): string {
  const kty = key['kty'];
  if (typeof kty !== 'string') throw bundleError('jwk', `keys[${i}] has no string "kty"`);
  return kty;
}

function parseX509Key(key: Record<string, unknown>, kty: string, i: number): X509Authority {
  const x5c = key['x5c'];
  if (!Array.isArray(x5c) || x5c.length !== 1 || typeof x5c[0] !== 'string') {
    throw bundleError('x5c', `keys[${i}] (x509-svid) must have "x5c" with exactly one certificate`);
  }
  const der = decodeStdBase64(x5c[0]);
  if (der === undefined) throw bundleError('x5c', `keys[${i}] x5c[0] is not standard base64`);
  const authority = x509Authority(der, 'x5c');
  const jwk = authority.jwk;
  if (jwk.kty !== kty) throw bundleError('x5c', `keys[${i}] kty ${quote(kty)} does not match the certificate's ${jwk.kty} key`);
  const params = jwk.kty === 'EC' ? (['crv', 'x', 'y'] as const) : (['n', 'e'] as const);
  for (const p of params) {
    const v = key[p];
    if (v !== undefined && v !== (jwk as Record<string, string>)[p]) {
      throw bundleError('x5c', `keys[${i}] JWK parameter "${p}" does not match the certificate's public key`);
    }
  }
  return authority;
}

function parseJwtKey(key: Record<string, unknown>, i: number): { kid: string; key: KeyObject } {
  const kid = key['kid'];
  if (typeof kid !== 'string' || kid.length === 0) throw bundleError('kid', `keys[${i}] (jwt-svid) needs a non-empty string "kid"`);
  try {
    return { kid, key: jwkToPublicKey(key) };
  } catch (cause) {
    throw bundleError('jwk', `keys[${i}] (kid ${quote(kid)}) is not a valid public JWK`, cause);
  }
}

function addParsedJwt(bundle: Bundle, kid: string, key: KeyObject): void {
  if (bundle.hasJwtAuthority(kid)) throw bundleError('duplicate_kid', `kid ${quote(kid)} appears more than once`);
  bundle.addJwtAuthority(kid, key);
}

/**
 * Parses a SPIFFE bundle document for trust domain `td` (the document does not name it).
 * Throws ERR_BUNDLE_INVALID (reasons in the module comment). `{"keys":[]}` is a valid empty
 * bundle that trusts nothing.
 */
export function parseBundle(td: TrustDomain, json: string | Uint8Array): Bundle {
  const text = decodeText(json);
  const doc = parseObject(text);
  const keys = keysArray(doc);
  const bundle = new Bundle(td);
  bundle.sequence = parseSequence(doc, text);
  bundle.refreshHintSeconds = parseRefreshHint(doc);
  keys.forEach((key, i) => {
    const use = key['use'];
    if (use === undefined) throw bundleError('missing_use', `keys[${i}] has no "use" (expected x509-svid or jwt-svid)`);
    if (typeof use !== 'string') throw bundleError('jwk', `keys[${i}] "use" must be a string`);
    if (use !== USE_X509_SVID && use !== USE_JWT_SVID) return; // unknown use: ignored (spec)
    const kty = ktyOf(key, i);
    if (!KNOWN_KTY.has(kty)) return; // unknown kty: ignored (spec)
    if (use === USE_X509_SVID) {
      const authority = parseX509Key(key, kty, i);
      bundle.addX509Authority(authority.der); // duplicates collapse
    } else {
      const { kid, key: pub } = parseJwtKey(key, i);
      addParsedJwt(bundle, kid, pub);
    }
  });
  return bundle;
}

/**
 * Parses a Workload API JWT bundle value (a JWKS, every key with a kid) into a Bundle holding only
 * JWT authorities. Keys with `use` absent, `jwt-svid` or `sig` are JWT authorities; keys with any
 * other `use` (e.g. `x509-svid`) or an unknown `kty` are ignored.
 */
export function parseJwtBundleJwks(td: TrustDomain, json: string | Uint8Array): Bundle {
  const doc = parseObject(decodeText(json));
  const keys = keysArray(doc);
  const bundle = new Bundle(td);
  keys.forEach((key, i) => {
    const use = key['use'];
    if (use !== undefined && typeof use !== 'string') throw bundleError('jwk', `keys[${i}] "use" must be a string`);
    if (use !== undefined && use !== USE_JWT_SVID && use !== 'sig') return;
    if (!KNOWN_KTY.has(ktyOf(key, i))) return;
    const { kid, key: pub } = parseJwtKey(key, i);
    addParsedJwt(bundle, kid, pub);
  });
  return bundle;
}

/** A bundle of X.509 authorities from PEM CERTIFICATE blocks (`-trustBundle bundle.pem`). */
export function parseX509BundlePem(td: TrustDomain, pem: string): Bundle {
  let ders: Buffer[];
  try {
    ders = pemToCertificates(pem);
  } catch (cause) {
    throw bundleError('pem', 'X.509 bundle must be one or more PEM CERTIFICATE blocks', cause);
  }
  // pem.ts skips a block that has no END line (a truncated file); a trust bundle must not
  // silently lose its last CA, so every BEGIN line has to have become a block.
  const begins = pem.match(/-----BEGIN /g)?.length ?? 0;
  if (begins !== ders.length) {
    throw bundleError('pem', `X.509 bundle has ${begins} PEM BEGIN lines but ${ders.length} complete CERTIFICATE blocks (truncated?)`);
  }
  return new Bundle(td, { x509Authorities: ders });
}

/** A bundle of X.509 authorities from concatenated DER certificates (Workload API encoding). */
export function parseX509BundleDer(td: TrustDomain, concatenatedDer: Uint8Array): Bundle {
  let ders: Buffer[];
  try {
    ders = splitConcatenatedDer(concatenatedDer);
  } catch (cause) {
    throw bundleError('der', 'X.509 bundle is not concatenated DER certificates', cause);
  }
  if (ders.length === 0) throw bundleError('der', 'X.509 bundle holds no certificate');
  return new Bundle(td, { x509Authorities: ders });
}

// ---------------------------------------------------------------------------------------------
// Bundle sets

function compareTd(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Bundles keyed by their trust domain (own + federated). Never merges bundles: `set` replaces the
 * bundle of that trust domain. Stores the Bundle objects given (no copy). Iteration is sorted by
 * trust domain, so every encoding derived from a set is deterministic.
 */
export class BundleSet implements X509BundleSource, JwtBundleSource, Iterable<Bundle> {
  #bundles = new Map<TrustDomain, Bundle>();

  constructor(bundles: Iterable<Bundle> = []) {
    for (const b of bundles) this.set(b);
  }

  get size(): number {
    return this.#bundles.size;
  }

  get(td: TrustDomain): Bundle | undefined {
    return this.#bundles.get(td);
  }

  /** Adds or replaces the bundle of `bundle.trustDomain`. */
  set(bundle: Bundle): this {
    this.#bundles.set(bundle.trustDomain, bundle);
    return this;
  }

  delete(td: TrustDomain): boolean {
    return this.#bundles.delete(td);
  }

  has(td: TrustDomain): boolean {
    return this.#bundles.has(td);
  }

  /** Trust domains, sorted. */
  trustDomains(): TrustDomain[] {
    return [...this.#bundles.keys()].sort(compareTd);
  }

  /** Bundles sorted by trust domain. */
  bundles(): Bundle[] {
    return this.trustDomains().map((td) => this.#bundles.get(td)!);
  }

  [Symbol.iterator](): Iterator<Bundle> {
    return this.bundles()[Symbol.iterator]();
  }

  getX509Authorities(td: TrustDomain): readonly Buffer[] | undefined {
    return this.#bundles.get(td)?.getX509Authorities(td);
  }

  getJwtAuthorities(td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined {
    return this.#bundles.get(td)?.getJwtAuthorities(td);
  }

  /** Deep copy (each bundle cloned). */
  clone(): BundleSet {
    return new BundleSet(this.bundles().map((b) => b.clone()));
  }

  equals(other: BundleSet): boolean {
    if (this.size !== other.size) return false;
    for (const [td, b] of this.#bundles) {
      const o = other.get(td);
      if (o === undefined || !b.equals(o)) return false;
    }
    return true;
  }

  /**
   * Workload API X.509 bundle map: `spiffe://<td>` -> concatenated DER CA certificates, sorted by
   * trust domain. Trust domains without X.509 authorities are left out: clients (go-spiffe) reject
   * an empty X.509 bundle value and fail the whole response.
   */
  x509BundlesMap(): Map<SpiffeId, Buffer> {
    const out = new Map<SpiffeId, Buffer>();
    for (const b of this.bundles()) {
      const der = b.x509AuthoritiesDer();
      if (der.length > 0) out.set(trustDomainId(b.trustDomain), der);
    }
    return out;
  }

  /**
   * Workload API JWT bundle map: `spiffe://<td>` -> JWKS JSON bytes (`marshalJwtBundle`), sorted by
   * trust domain. Every trust domain is present (an empty JWKS means: trust no JWT from it).
   */
  jwtBundlesMap(): Map<SpiffeId, Buffer> {
    const out = new Map<SpiffeId, Buffer>();
    for (const b of this.bundles()) out.set(trustDomainId(b.trustDomain), Buffer.from(marshalJwtBundle(b), 'utf8'));
    return out;
  }
}

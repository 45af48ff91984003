/**
 * The SPIFFE bundle document and the Workload API JWKS (JSON): `marshalBundle` /
 * `marshalJwtBundle` write them deterministically, `parseBundle` / `parseJwtBundleJwks` read them
 * strictly (structure, `use`, `kty`, `x5c`, `kid`, `spiffe_sequence`, `spiffe_refresh_hint`).
 */
import type { KeyObject } from 'node:crypto';
import { quote } from '../errors.js';
import type { TrustDomain } from '../id.js';
import { jwkToPublicKey, type PublicJwk } from '../keys.js';
import { x509Authority, type X509Authority } from './authority.js';
import { bundleError } from './errors.js';
import { Bundle, MAX_SEQUENCE, bundleEntries } from './model.js';
import { rawTopLevelMember } from './rawjson.js';

export const USE_X509_SVID = 'x509-svid';
export const USE_JWT_SVID = 'jwt-svid';

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
  return bundleEntries(bundle).jwt.map(([kid, a]) => jwkJson(USE_JWT_SVID, a.jwk, { kid }));
}

/**
 * The SPIFFE bundle document (federation endpoint, `spindle bundle show`):
 * `{"keys":[...],"spiffe_sequence":N[,"spiffe_refresh_hint":S]}`. Deterministic; the sequence
 * is spliced in as a JSON number with all its digits (JSON.stringify cannot write a bigint).
 */
export function marshalBundle(bundle: Bundle): string {
  const { x509 } = bundleEntries(bundle);
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

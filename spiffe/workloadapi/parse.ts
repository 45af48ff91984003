/**
 * Decoding of Workload API responses, strictly:
 * - `x509_svid`: concatenated DER, leaf first; `x509_svid_key`: PKCS#8 DER. Each SVID goes through
 *   parseX509Svid (leaf rules, CA chain, key matches the leaf) and its `spiffe_id` must equal the
 *   leaf's URI SAN.
 * - every X.509 bundle value: concatenated DER CA certificates (at least one);
 *   JWT bundle values: JWKS JSON where every key has a `kid`.
 * - map keys: `spiffe://<td>` (a bare trust domain is accepted too, as go-spiffe does), parsed
 *   with parseTrustDomain.
 * - an X.509 response must hold at least one SVID; the first is the default identity. Of SVIDs
 *   sharing a non-empty hint only the first is kept (go-spiffe's rule).
 * - the X.509 context's bundles: the `bundle` of each SVID for the SVID's trust domain (the first
 *   SVID of a trust domain wins) plus `federated_bundles`; a federated entry for a trust domain
 *   that already has its own bundle is ignored (the own bundle wins).
 * - JWT-SVIDs are read without signature checks (they come from our own agent), but must have a
 *   valid shape, alg and `sub`, `sub` must equal `spiffe_id`, and `aud` must contain every
 *   requested audience.
 * Failures throw a SpiffeError (or Error) saying what was wrong; the client wraps it as a
 * `bad_response` WorkloadApiError.
 */
import { BundleSet, parseJwtBundleJwks, parseX509BundleDer } from '../bundle.js';
import { quote } from '../errors.js';
import { parseSpiffeId, parseTrustDomain, trustDomainOf, type SpiffeId, type TrustDomain } from '../id.js';
import { parseJwtSvidInsecure } from '../jwtsvid.js';
import { splitConcatenatedDer } from '../pem.js';
import { parseX509Svid, type X509Svid } from '../x509/index.js';
import type {
  JWTBundlesResponse,
  JWTSVIDResponse,
  ValidateJWTSVIDResponse,
  X509BundlesResponse,
  X509SVIDResponse,
} from '../../proto/gen/workload/workload.js';

/** An X509-SVID from the Workload API: parsed certificates and key, plus the operator's hint. */
export interface WorkloadX509Svid extends X509Svid {
  /** Operator-specified hint ('' when none). */
  hint: string;
}

export interface X509Context {
  /** Every SVID of the caller; at least one. */
  svids: WorkloadX509Svid[];
  /** The caller's default identity: `svids[0]`. */
  defaultSvid: WorkloadX509Svid;
  /** Own and federated X.509 bundles, one per trust domain. */
  bundles: BundleSet;
}

export interface WorkloadJwtSvid {
  id: SpiffeId;
  /** The compact JWS, to send as a bearer token. */
  token: string;
  hint: string;
  /** Every claim, unverified (as the agent issued them). */
  claims: Record<string, unknown>;
  audience: string[];
  expiresAt: Date;
}

export interface ValidatedWorkloadJwt {
  spiffeId: SpiffeId;
  claims: Record<string, unknown>;
}

class ResponseError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ResponseError';
  }
}

function fail(message: string, cause?: unknown): never {
  throw new ResponseError(cause instanceof Error ? `${message}: ${cause.message}` : message, cause === undefined ? undefined : { cause });
}

/** Map key -> trust domain (`spiffe://td` or bare `td`). */
function mapKeyTrustDomain(key: string, what: string): TrustDomain {
  try {
    return parseTrustDomain(key);
  } catch (cause) {
    return fail(`${what} key ${quote(key, 100)} is not a trust domain ID`, cause);
  }
}

function x509Bundle(td: TrustDomain, der: Uint8Array, what: string) {
  try {
    return parseX509BundleDer(td, der);
  } catch (cause) {
    return fail(`${what} is not concatenated DER CA certificates`, cause);
  }
}

function parseOneX509Svid(svid: X509SVIDResponse['svids'][number], i: number): WorkloadX509Svid {
  let id: SpiffeId;
  try {
    id = parseSpiffeId(svid.spiffeId);
  } catch (cause) {
    return fail(`svids[${i}].spiffe_id ${quote(svid.spiffeId, 100)} is not a SPIFFE ID`, cause);
  }
  let certs: Buffer[];
  try {
    certs = splitConcatenatedDer(svid.x509Svid);
  } catch (cause) {
    return fail(`svids[${i}] (${id}) x509_svid is not concatenated DER certificates`, cause);
  }
  if (certs.length === 0) fail(`svids[${i}] (${id}) has no certificate in x509_svid`);
  if (svid.x509SvidKey.length === 0) fail(`svids[${i}] (${id}) has no x509_svid_key`);
  let parsed: X509Svid;
  try {
    parsed = parseX509Svid(certs, svid.x509SvidKey);
  } catch (cause) {
    return fail(`svids[${i}] (${id}) is not a valid X509-SVID`, cause);
  }
  if (parsed.id !== id) fail(`svids[${i}].spiffe_id ${quote(id)} does not match the certificate's ID ${quote(parsed.id)}`);
  return { ...parsed, hint: svid.hint };
}

/** FetchX509SVID response -> X509Context. */
export function parseX509SvidResponse(resp: X509SVIDResponse): X509Context {
  if (resp.svids.length === 0) fail('the response holds no X509-SVID');
  const svids: WorkloadX509Svid[] = [];
  const hints = new Set<string>();
  const bundles = new BundleSet();
  resp.svids.forEach((raw, i) => {
    const svid = parseOneX509Svid(raw, i);
    if (svid.hint !== '') {
      if (hints.has(svid.hint)) return; // duplicate hint: the first SVID with it wins
      hints.add(svid.hint);
    }
    svids.push(svid);
    const td = trustDomainOf(svid.id);
    if (!bundles.has(td)) bundles.set(x509Bundle(td, raw.bundle, `svids[${i}].bundle (${td})`));
  });
  for (const [key, der] of sortedEntries(resp.federatedBundles)) {
    const td = mapKeyTrustDomain(key, 'federated_bundles');
    if (bundles.has(td)) continue;
    bundles.set(x509Bundle(td, der, `federated_bundles[${quote(key, 100)}]`));
  }
  return { svids, defaultSvid: svids[0]!, bundles };
}

function sortedEntries<V>(map: Map<string, V>): [string, V][] {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** FetchX509Bundles response -> BundleSet. */
export function parseX509BundlesResponse(resp: X509BundlesResponse): BundleSet {
  const set = new BundleSet();
  for (const [key, der] of sortedEntries(resp.bundles)) {
    const td = mapKeyTrustDomain(key, 'bundles');
    if (set.has(td)) fail(`bundles has two entries for trust domain ${quote(td)}`);
    set.set(x509Bundle(td, der, `bundles[${quote(key, 100)}]`));
  }
  return set;
}

/** FetchJWTBundles response -> BundleSet (JWT authorities only). */
export function parseJwtBundlesResponse(resp: JWTBundlesResponse): BundleSet {
  const set = new BundleSet();
  for (const [key, jwks] of sortedEntries(resp.bundles)) {
    const td = mapKeyTrustDomain(key, 'bundles');
    if (set.has(td)) fail(`bundles has two entries for trust domain ${quote(td)}`);
    try {
      set.set(parseJwtBundleJwks(td, jwks));
    } catch (cause) {
      fail(`bundles[${quote(key, 100)}] is not a JWKS`, cause);
    }
  }
  return set;
}

/** FetchJWTSVID response -> parsed tokens, checked against the request. */
export function parseJwtSvidResponse(resp: JWTSVIDResponse, audience: readonly string[], spiffeId?: SpiffeId): WorkloadJwtSvid[] {
  if (resp.svids.length === 0) fail('the response holds no JWT-SVID');
  return resp.svids.map((svid, i) => {
    let parsed;
    try {
      parsed = parseJwtSvidInsecure(svid.svid);
    } catch (cause) {
      return fail(`svids[${i}] (${quote(svid.spiffeId, 100)}) is not a JWT-SVID`, cause);
    }
    if (parsed.id !== svid.spiffeId) {
      fail(`svids[${i}].spiffe_id ${quote(svid.spiffeId, 100)} does not match the token's sub ${quote(parsed.id)}`);
    }
    if (spiffeId !== undefined && parsed.id !== spiffeId) fail(`svids[${i}] is for ${quote(parsed.id)}, not the requested ${quote(spiffeId)}`);
    const aud = audienceOf(parsed.claims);
    for (const a of audience) {
      if (!aud.includes(a)) fail(`svids[${i}] (${parsed.id}) does not carry the requested audience ${quote(a, 100)}`);
    }
    return { id: parsed.id, token: svid.svid, hint: svid.hint, claims: parsed.claims, audience: aud, expiresAt: parsed.expiresAt };
  });
}

function audienceOf(claims: Record<string, unknown>): string[] {
  const aud = claims['aud'];
  if (typeof aud === 'string') return [aud];
  if (Array.isArray(aud) && aud.every((a) => typeof a === 'string')) return aud as string[];
  return fail('JWT-SVID aud claim is missing or not a string array');
}

/** ValidateJWTSVID response -> subject and claims. */
export function parseValidateJwtSvidResponse(resp: ValidateJWTSVIDResponse): ValidatedWorkloadJwt {
  let spiffeId: SpiffeId;
  try {
    spiffeId = parseSpiffeId(resp.spiffeId);
  } catch (cause) {
    return fail(`spiffe_id ${quote(resp.spiffeId, 100)} is not a SPIFFE ID`, cause);
  }
  const claims = resp.claims ?? {};
  if (typeof claims !== 'object' || Array.isArray(claims)) fail('claims is not an object');
  return { spiffeId, claims: claims as Record<string, unknown> };
}

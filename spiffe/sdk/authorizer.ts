/**
 * Authorizers (go-spiffe's `tlsconfig.Authorizer`): decide whether a verified peer may talk to
 * us, by its SPIFFE ID. An Authorizer runs after the peer's X509-SVID chain has been verified
 * against the bundle of its trust domain; it returns normally to accept and throws to refuse.
 *
 * Refusals are SpiffeError `ERR_SPIFFE_UNAUTHORIZED` with a reason: `id_mismatch`
 * (authorizeID), `not_one_of` (authorizeOneOf), `not_member` (authorizeMemberOf),
 * `path_mismatch` (authorizeMatchesPath). Custom authorizers may throw anything; the TLS helpers
 * pass it on unchanged (use `unauthorized(reason, message)` for the same error type).
 */
import { ErrorCode, SpiffeError } from '../errors.js';
import { parseSpiffeId, parseTrustDomain, pathOf, trustDomainOf, type SpiffeId, type TrustDomain } from '../id.js';

/** Accepts (returns) or refuses (throws) a peer whose chain has been verified. */
export type Authorizer = (id: SpiffeId, verifiedChain: Buffer[]) => void;

/** The error every built-in authorizer throws. */
export function unauthorized(reason: string, message: string): SpiffeError {
  return new SpiffeError(ErrorCode.UNAUTHORIZED, reason, message);
}

/** Any peer with a valid SVID of a trusted trust domain. */
export function authorizeAny(): Authorizer {
  return () => {};
}

/** Exactly this SPIFFE ID. */
export function authorizeID(expected: string): Authorizer {
  const want = parseSpiffeId(expected);
  return (id) => {
    if (id !== want) throw unauthorized('id_mismatch', `peer ${id} is not the expected ${want}`);
  };
}

/** One of these SPIFFE IDs. */
export function authorizeOneOf(...ids: string[]): Authorizer {
  const allowed = new Set<string>(ids.map((i) => parseSpiffeId(i)));
  return (id) => {
    if (!allowed.has(id)) throw unauthorized('not_one_of', `peer ${id} is not one of ${[...allowed].join(', ')}`);
  };
}

/** Any SPIFFE ID in this trust domain (`example.org` or `spiffe://example.org`). */
export function authorizeMemberOf(trustDomain: string): Authorizer {
  const td: TrustDomain = parseTrustDomain(trustDomain);
  return (id) => {
    if (trustDomainOf(id) !== td) throw unauthorized('not_member', `peer ${id} is not a member of trust domain ${td}`);
  };
}

/** The ID's path (e.g. `/ns/prod/sa/web`) matches `re` (anchor it yourself) or `fn` returns true. */
export function authorizeMatchesPath(match: RegExp | ((path: string) => boolean)): Authorizer {
  const test = typeof match === 'function' ? match : (p: string) => new RegExp(match.source, match.flags.replace(/[gy]/g, '')).test(p);
  return (id) => {
    const path = pathOf(id);
    if (!test(path)) throw unauthorized('path_mismatch', `peer ${id}: path ${path} does not match ${String(match)}`);
  };
}

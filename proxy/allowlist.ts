/**
 * The one-listener forms' access rule (`spindle-proxy inbound -allow ...`, and a listener's
 * `allow:` list in the config file): a PolicyDecider that lets a caller in when its SPIFFE ID
 * matches one of the patterns, and the same patterns as an Authorizer for outbound `-expect`.
 *
 * A pattern is one of:
 * - an exact SPIFFE ID: `spiffe://example.org/payments`;
 * - a trust domain, `spiffe://example.org` (or `spiffe://example.org/`): any member of it;
 * - a path pattern, with the access policy's rules (proxy/policy/patterns.ts, the one compiler of
 *   ID patterns): `*` is exactly one whole path segment, a trailing `**` zero or more further
 *   segments: `spiffe://example.org/ns/*\/sa/web`, `spiffe://example.org/ns/prod/**`.
 * The trust domain is always literal. Patterns are checked when parsed (`parseIdPattern` throws
 * a SpiffeError naming the pattern), never at match time.
 */
import { ErrorCode, SpiffeError } from '../spiffe/errors.js';
import { parseTrustDomain, trustDomainOf, type SpiffeId } from '../spiffe/id.js';
import { unauthorized, type Authorizer } from '../spiffe/sdk/authorizer.js';
import type { Decision, PolicyDecider, RequestFacts } from './decision.js';
import { compileIdPattern } from './policy/patterns.js';

export interface IdPattern {
  /** The pattern as written. */
  text: string;
  kind: 'exact' | 'member' | 'path';
  matches(id: SpiffeId): boolean;
}

function patternError(text: string, why: string): SpiffeError {
  return new SpiffeError(ErrorCode.SPIFFE_ID_INVALID, 'bad_pattern', `invalid SPIFFE ID pattern ${JSON.stringify(text)}: ${why}`);
}

/** Parses one pattern (see the module comment). */
export function parseIdPattern(text: string): IdPattern {
  const m = /^spiffe:\/\/([^/]*)(\/.*)?$/.exec(text);
  if (m === null) throw patternError(text, 'it must start with spiffe://');
  let td;
  try {
    td = parseTrustDomain(m[1]!);
  } catch (err) {
    throw patternError(text, (err as Error).message);
  }
  const path = m[2] ?? '';
  if (path === '' || path === '/') return { text, kind: 'member', matches: (id) => trustDomainOf(id) === td };
  const compiled = compileIdPattern(text);
  if (typeof compiled === 'string') throw patternError(text, compiled.replace(/^id pattern "[^"]*":? ?/, ''));
  return { text, kind: text.includes('*') ? 'path' : 'exact', matches: (id) => compiled.test(id) };
}

/** The first pattern that matches `id`, if any. */
export function firstMatch(patterns: readonly IdPattern[], id: SpiffeId): IdPattern | undefined {
  return patterns.find((p) => p.matches(id));
}

/** An Authorizer accepting IDs that match one of `patterns` (outbound `-expect`). Reason `not_expected`. */
export function authorizePatterns(patterns: readonly IdPattern[]): Authorizer {
  return (id) => {
    if (firstMatch(patterns, id) === undefined) {
      throw unauthorized('not_expected', `peer ${id} is not the expected ${patterns.map((p) => p.text).join(' or ')}`);
    }
  };
}

/**
 * The `-allow` PolicyDecider: rule `allow <pattern>` when a pattern matches, else
 * `default-deny`. It decides on the caller's ID only (no HTTP facts, no JWTs).
 */
export class AllowlistDecider implements PolicyDecider {
  readonly #patterns: readonly IdPattern[];
  readonly #dryRun: boolean;

  constructor(patterns: readonly (string | IdPattern)[], opts: { dryRun?: boolean } = {}) {
    if (patterns.length === 0) throw patternError('', 'at least one allowed ID is needed');
    this.#patterns = patterns.map((p) => (typeof p === 'string' ? parseIdPattern(p) : p));
    this.#dryRun = opts.dryRun ?? false;
  }

  decide(facts: RequestFacts): Decision {
    const dryRun = this.#dryRun;
    if (facts.sourceId === undefined) {
      return { allow: dryRun, wouldAllow: false, rule: 'default-deny', reason: 'the caller presented no X509-SVID', dryRun };
    }
    const hit = firstMatch(this.#patterns, facts.sourceId as SpiffeId);
    if (hit !== undefined) return { allow: true, wouldAllow: true, rule: `allow ${hit.text}`, reason: `${facts.sourceId} matches ${hit.text}`, dryRun };
    return { allow: dryRun, wouldAllow: false, rule: 'default-deny', reason: `${facts.sourceId} matches no allowed ID`, dryRun };
  }

  needsHttp(): boolean {
    return false;
  }

  jwtAudiences(): readonly string[] {
    return [];
  }

  jwtIssuer(): string | undefined {
    return undefined;
  }
}

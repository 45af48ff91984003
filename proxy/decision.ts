/**
 * The contract between spindle-proxy's data plane (listeners) and its access policy. The
 * listeners describe a connection or an HTTP request as RequestFacts and ask a PolicyDecider;
 * the policy engine (proxy/policy/) and the one-listener `-allow` forms both implement it.
 */

/** What the proxy knows about a connection (TCP listener) or a request (HTTP listener). */
export interface RequestFacts {
  /** The listener's name from the proxy config (one-listener forms: `inbound`). */
  listener: string;
  /** The caller's SPIFFE ID, from its verified X509-SVID; absent when the caller presented none. */
  sourceId?: string;
  /** HTTP listeners only: the request method, upper case. */
  method?: string;
  /** HTTP listeners only: the request path without the query string. */
  path?: string;
  /** A bearer JWT-SVID on the request that validated against the bundles (audience, expiry, signature, issuer). */
  jwt?: { subject: string; audience: readonly string[]; claims: Readonly<Record<string, unknown>> };
  /** A bearer token was present but did not validate: why (e.g. "audience mismatch"). */
  jwtError?: string;
}

export interface Decision {
  /** The effective decision: in dry-run a policy denial still lets the caller through. */
  allow: boolean;
  /** What the policy decided, before dry-run. */
  wouldAllow: boolean;
  /** The name of the rule that decided, or 'default-deny' when none matched. */
  rule: string;
  /** Short human reason, used in logs, metrics labels are NOT built from it, and in 403 bodies. */
  reason: string;
  /** True when the policy (or the listener) is in dry-run mode. */
  dryRun: boolean;
}

export interface PolicyDecider {
  decide(facts: RequestFacts): Decision;
  /** Whether any rule for this listener needs HTTP facts (method, path, JWT). */
  needsHttp(listener: string): boolean;
  /** Audiences a bearer JWT-SVID is validated against on this listener; empty when no rule uses JWTs. */
  jwtAudiences(listener: string): readonly string[];
  /** Required `iss` of bearer JWT-SVIDs on this listener, when configured. */
  jwtIssuer(listener: string): string | undefined;
}

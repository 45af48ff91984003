/**
 * Small trust-material source interfaces. A static bundle, a bundle
 * set and the agent's live cache all implement them, so validators never care where trust
 * material comes from.
 */
import type { KeyObject } from 'node:crypto';
import type { TrustDomain } from './id.js';

/** X.509 authorities (DER CA certificates) trusted for a trust domain, or undefined: untrusted. */
export interface X509BundleSource {
  getX509Authorities(td: TrustDomain): readonly Buffer[] | undefined;
}

/** JWT authorities (key ID -> public key) of a trust domain, or undefined: untrusted. */
export interface JwtBundleSource {
  getJwtAuthorities(td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined;
}

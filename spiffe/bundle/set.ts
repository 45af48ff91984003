/**
 * `BundleSet`: the bundles of several trust domains (own + federated), keyed by trust domain and
 * never merged, and the Workload API's per-trust-domain bundle maps derived from it.
 */
import type { KeyObject } from 'node:crypto';
import { trustDomainId, type SpiffeId, type TrustDomain } from '../id.js';
import type { JwtBundleSource, X509BundleSource } from '../source.js';
import { marshalJwtBundle } from './document.js';
import type { Bundle } from './model.js';

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

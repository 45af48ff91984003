/**
 * Per-connection costs of the TLS helpers (tlsconfig.ts) that do not need to be paid again for
 * material already seen: PEM text of an SVID and of trust authorities, and the verification of a
 * peer's X509-SVID chain.
 *
 * `PeerVerificationCache` remembers a successful `verifyX509Svid` of a presented chain. A later
 * connection presenting exactly the same chain (the same DER bytes, certificate by certificate)
 * reuses it only when, at that moment:
 *   - every certificate of the verified path (leaf, intermediates, the bundle authority) is
 *     within its validity window (so an expired or not-yet-valid path is verified afresh and
 *     fails with the verifier's own typed error), and
 *   - the authority the path ended at is still in the current bundle of the leaf's trust domain
 *     (a bundle that dropped it makes the chain verified afresh against the current bundle);
 * and the authorizer runs on every connection, with the verified path, as without the cache.
 * Failures are never cached. The TLS handshake has already proven that the peer holds the
 * leaf's private key; what is reused is only the pure function "this chain leads to this
 * authority and follows the X509-SVID rules", whose inputs are the chain bytes and that authority.
 */
import { createHash } from 'node:crypto';
import type { SpiffeId, TrustDomain } from '../id.js';
import { trustDomainOf } from '../id.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import type { X509BundleSource } from '../source.js';
import { verifyX509Svid, type X509Svid } from '../x509/verify.js';
import type { Authorizer } from './authorizer.js';

/** Verified chains kept per cache (least recently used dropped first). */
export const PEER_CACHE_MAX = 1024;

interface Verified {
  presented: Buffer[];
  id: SpiffeId;
  td: TrustDomain;
  path: Buffer[];
  anchor: Buffer;
  notBefore: number;
  notAfter: number;
}

function keyOf(chain: readonly Buffer[]): string {
  const h = createHash('sha256');
  for (const c of chain) {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(c.length);
    h.update(len).update(c);
  }
  return h.digest('base64');
}

function sameChain(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((c, i) => c.equals(b[i]!));
}

export class PeerVerificationCache {
  readonly #entries = new Map<string, Verified>();
  readonly #max: number;

  constructor(max = PEER_CACHE_MAX) {
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * verifyX509Svid(chain, bundles) then authorizer(id, path), reusing an earlier verification of
   * the same chain under the conditions in the header. Returns the peer's ID or throws the
   * verifier's / authorizer's error.
   */
  verify(chain: readonly Buffer[], bundles: X509BundleSource, authorizer: Authorizer, now: number = Date.now()): SpiffeId {
    const key = keyOf(chain);
    const hit = this.#entries.get(key);
    if (hit !== undefined && this.#stillValid(hit, chain, bundles, now)) {
      this.#entries.delete(key);
      this.#entries.set(key, hit);
      authorizer(hit.id, hit.path);
      return hit.id;
    }
    if (hit !== undefined) this.#entries.delete(key);
    const v = verifyX509Svid(chain, bundles, { now: new Date(now) });
    this.#entries.set(key, {
      presented: [...chain],
      id: v.id,
      td: trustDomainOf(v.id),
      path: v.chain,
      anchor: v.chain[v.chain.length - 1]!,
      notBefore: Math.max(...v.certificates.map((c) => c.notBefore.getTime())),
      notAfter: Math.min(...v.certificates.map((c) => c.notAfter.getTime())),
    });
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    authorizer(v.id, v.chain);
    return v.id;
  }

  #stillValid(e: Verified, chain: readonly Buffer[], bundles: X509BundleSource, now: number): boolean {
    if (now < e.notBefore || now > e.notAfter) return false;
    if (!sameChain(e.presented, chain)) return false;
    const authorities = bundles.getX509Authorities(e.td);
    return authorities !== undefined && authorities.some((a) => a.equals(e.anchor));
  }
}

const svidPems = new WeakMap<X509Svid, { leaf: Buffer | undefined; privateKey: X509Svid['privateKey']; key: string; cert: string }>();

/** PEM key and certificates of an SVID, made once per SVID object (SVID sources hand out a new object on rotation). */
export function svidPem(svid: X509Svid): { key: string; cert: string } {
  const known = svidPems.get(svid);
  if (known !== undefined && known.leaf === svid.certificates[0] && known.privateKey === svid.privateKey) return known;
  const made = {
    leaf: svid.certificates[0],
    privateKey: svid.privateKey,
    key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey)),
    cert: svid.certificates.map((c) => toPem('CERTIFICATE', c)).join(''),
  };
  svidPems.set(svid, made);
  return made;
}

/**
 * PEM texts of a list of authorities, remade only when the list's content changes (bundle
 * sources hand out fresh copies of their DER on every call).
 */
export function authorityPems(): (ders: readonly Buffer[]) => string[] {
  let last: { ders: Buffer[]; pems: string[] } | undefined;
  return (ders) => {
    if (last === undefined || !sameChain(last.ders, ders)) {
      last = { ders: ders.map((d) => Buffer.from(d)), pems: ders.map((d) => toPem('CERTIFICATE', d)) };
    }
    return [...last.pems];
  };
}

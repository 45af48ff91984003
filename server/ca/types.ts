/**
 * What the server's APIs need from the certificate authority: a narrow interface, so handlers
 * depend only on the calls they make. The CA manager (manager.ts) implements it; tests may build
 * a small one from spiffe/x509 directly.
 */
import type { Bundle } from '../../spiffe/bundle.js';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';

export interface SignedX509Svid {
  /** Leaf first, then intermediates up to but excluding the bundle's root. */
  chain: Buffer[];
  notAfter: Date;
  serialHex: string;
}

export interface SignedJwtSvid {
  token: string;
  expiresAt: Date;
  issuedAt: Date;
}

export interface CaSigner {
  readonly trustDomain: TrustDomain;
  /**
   * Verifies the CSR's own signature and signs its public key for `id` (identity and DNS names
   * from the caller only). TTL 0/undefined: the configured default; always capped at the CA's
   * notAfter.
   */
  signX509Svid(req: { id: SpiffeId; csr: Buffer; dnsNames?: readonly string[]; ttlSeconds?: number }): SignedX509Svid;
  /**
   * signX509Svid for many CSRs at once (the BatchNewX509SVID path), possibly on other threads:
   * one result per request, in order, either the SVID or the Error signX509Svid would have
   * thrown. Every CSR's signature is verified. Optional: callers fall back to signX509Svid.
   */
  signX509SvidBatch?(reqs: ReadonlyArray<{ id: SpiffeId; csr: Buffer; dnsNames?: readonly string[]; ttlSeconds?: number }>): Promise<Array<SignedX509Svid | Error>>;
  mintJwtSvid(req: { id: SpiffeId; audience: readonly string[]; ttlSeconds?: number }): Promise<SignedJwtSvid>;
  /**
   * CA certificates between our SVIDs and the bundle's roots (with an upstream authority: the
   * current and still-valid earlier intermediates), for verifying chains presented without them.
   */
  intermediates?(): readonly Buffer[];
  /** The current bundle of this trust domain (a copy; sequence bumps on every change). */
  bundle(): Bundle;
  /** Called after every bundle change (new authority prepared, pruned, upstream changed). */
  onBundleChange(listener: (bundle: Bundle) => void): () => void;
}

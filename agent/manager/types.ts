/**
 * What the agent's endpoints (Workload API, SDS) need from the agent's identity cache
 * (a narrow interface: the Workload API and SDS are two thin views over one cache), and the
 * errors and logger shared by the manager's parts. The manager (manager.ts, with its parts
 * beside it) implements it from the server's pushed entries; tests implement it with a small
 * in-memory cache over a test CA.
 */
import type { KeyObject } from 'node:crypto';
import type { Bundle, BundleSet } from '../../spiffe/bundle.js';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { Selector } from '../../common/selector.js';

/** One X509-SVID a workload may receive. Keys are made on the agent and never leave it. */
export interface X509Identity {
  entryId: string;
  spiffeId: SpiffeId;
  hint: string;
  /** Leaf first, then intermediates (DER). */
  chain: Buffer[];
  privateKey: KeyObject;
  /** PKCS#8 DER of privateKey (the Workload API encoding). */
  privateKeyPkcs8: Buffer;
  notAfter: Date;
  /** Trust domains the entry federates with: their bundles go to the workload too. */
  federatesWith: TrustDomain[];
}

/**
 * Everything a workload with some selectors is entitled to, at one moment. The cache may hand
 * the same object to every subscriber matching the same entries: read it, never modify it.
 */
export interface WorkloadUpdate {
  /** Sorted deterministically; the first is the workload's default identity. Never contains two equal non-empty hints. */
  identities: X509Identity[];
  /** Our own trust domain's bundle. */
  bundle: Bundle;
  /** Bundles of the trust domains the identities federate with (never our own). */
  federatedBundles: Bundle[];
  /**
   * Set when `identities` is empty although the workload matches entries: none of their SVIDs
   * can be served right now (expired while the server is unreachable, or not signed yet). Says
   * why, for the workload (a transient state: retry), e.g. "X509-SVID for spiffe://... expired
   * at ...; server unreachable since ...; retrying". Unset when the workload matches no entry.
   */
  unavailable?: string;
}

/**
 * The workload matches entries but none of their SVIDs can be served now (see
 * WorkloadUpdate.unavailable): the Workload API answers UNAVAILABLE with this message, never
 * PERMISSION_DENIED (which tells SDKs to give up).
 */
export class IdentityUnavailableError extends Error {
  readonly code = 'ERR_IDENTITY_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityUnavailableError';
  }
}

export interface JwtIdentity {
  spiffeId: SpiffeId;
  token: string;
  hint: string;
  expiresAt: Date;
}

export interface WorkloadSubscription {
  /** Resolves with the first complete update (SVIDs signed), or rejects (e.g. agent not ready). */
  initial: Promise<WorkloadUpdate>;
  /** Stops updates; idempotent. */
  close(): void;
}

export interface IdentityCache {
  readonly trustDomain: TrustDomain;
  /** The current update for these selectors (signing any missing SVIDs first). */
  fetchX509(selectors: readonly Selector[]): Promise<WorkloadUpdate>;
  /**
   * Follows the identities for these selectors: `listener` runs for every change after the
   * initial update (rotation, entry added/removed, bundle change), with the full current state.
   */
  subscribe(selectors: readonly Selector[], listener: (update: WorkloadUpdate) => void): WorkloadSubscription;
  /**
   * JWT-SVIDs for every identity the selectors give (or only `spiffeId`), each carrying all of
   * `audience`. Cached until half their lifetime.
   */
  fetchJwt(selectors: readonly Selector[], audience: readonly string[], spiffeId?: SpiffeId): Promise<JwtIdentity[]>;
  /** Our bundle plus every federated bundle the agent knows. */
  bundles(): BundleSet;
  /** Called with the new set on every bundle change. */
  subscribeBundles(listener: (bundles: BundleSet) => void): () => void;
}

/** The logger the agent manager and its parts write to (pino's shape). */
export interface ManagerLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** The agent manager has not synchronized with the server yet, or has stopped. */
export class NotReadyError extends Error {
  readonly code = 'ERR_AGENT_NOT_READY';
}

/** What the admin API handlers need: narrow interfaces in one config object, so tests can pass small fakes. */
import type { TrustDomain } from '../../../spiffe/id.js';
import type { CaSigner } from '../../ca/types.js';
import type { DataStore, FederationRefreshState, FederationRelationship } from '../../datastore/types.js';
import type { ApiLogger } from '../logger.js';

export type { ApiLogger };

/** What the federation API needs of the bundle refresher (server/federation/refresher.ts BundleRefresher). */
export interface FederationControl {
  isStatic(td: TrustDomain): boolean;
  staticRelationships(): Array<Omit<FederationRelationship, 'createdAt' | 'updatedAt'>>;
  refreshState(td: TrustDomain): FederationRefreshState | undefined;
  reload(): Promise<void>;
  refreshNow(td: TrustDomain): Promise<{ ok: boolean; error?: string; sequence?: bigint }>;
}

export interface AdminDeps {
  datastore: DataStore;
  ca: CaSigner;
  /** This server's trust domain. */
  trustDomain: TrustDomain;
  now: () => Date;
  logger: ApiLogger;
  /** The bundle refresher (federation relationships); absent: the federation API answers UNAVAILABLE. */
  federation?: FederationControl;
  /** TTL of join tokens created with ttl 0 (default 600 s, as SPIRE's CLI). */
  joinTokenDefaultTtlSeconds?: number;
}

export { DEFAULT_JOIN_TOKEN_TTL_SECONDS } from '../../../attestors/node/join_token/token.js';

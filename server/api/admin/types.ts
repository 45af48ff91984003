/** What the admin API handlers need: narrow interfaces in one config object, so tests can pass small fakes. */
import type { TrustDomain } from '../../../spiffe/id.js';
import type { CaSigner } from '../../ca/types.js';
import type { DataStore } from '../../datastore/types.js';
import type { ApiLogger } from '../logger.js';

export type { ApiLogger };

export interface AdminDeps {
  datastore: DataStore;
  ca: CaSigner;
  /** This server's trust domain. */
  trustDomain: TrustDomain;
  now: () => Date;
  logger: ApiLogger;
  /** TTL of join tokens created with ttl 0 (default 600 s, as SPIRE's CLI). */
  joinTokenDefaultTtlSeconds?: number;
}

export { DEFAULT_JOIN_TOKEN_TTL_SECONDS } from '../../../attestors/node/join_token/token.js';

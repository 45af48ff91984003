/** What the admin API handlers need: narrow interfaces in one config object, so tests can pass small fakes. */
import type { TrustDomain } from '../../../spiffe/id.js';
import type { CaSigner } from '../../ca/types.js';
import type { DataStore } from '../../datastore/types.js';

/** The pino methods the admin API uses; a pino Logger satisfies it. */
export interface AdminLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): AdminLogger;
}

export interface AdminDeps {
  datastore: DataStore;
  ca: CaSigner;
  /** This server's trust domain. */
  trustDomain: TrustDomain;
  now: () => Date;
  logger: AdminLogger;
  /** TTL of join tokens created with ttl 0 (default 600 s, as SPIRE's CLI). */
  joinTokenDefaultTtlSeconds?: number;
}

export { DEFAULT_JOIN_TOKEN_TTL_SECONDS } from '../../../attestors/node/join_token/token.js';

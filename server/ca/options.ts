/**
 * What CaManager.start takes: the options, their defaults, and the checks that refuse invalid
 * ones (CaError reason `config`) before anything is loaded or written.
 */
import type { TrustDomain } from '../../spiffe/id.js';
import type { KeyType } from '../../spiffe/keys.js';
import type { X509Subject } from '../../spiffe/x509/index.js';
import type { DataStore } from '../datastore/types.js';
import { CaError } from './errors.js';
import type { KeyManager } from './keymanager.js';
import type { UpstreamDiskOptions } from './upstream.js';

/** The pino methods the CA uses; a pino Logger satisfies it. */
export interface CaLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What the CA needs from the datastore. */
export type CaDataStore = Pick<DataStore, 'getCaJournal' | 'setCaJournal' | 'adoptCaJournal' | 'listCaJournals' | 'getBundle' | 'setBundle' | 'updateBundle'>;

export interface CaManagerOptions {
  trustDomain: TrustDomain;
  datastore: CaDataStore;
  keyManager: KeyManager;
  /**
   * Which CA journal in the datastore is this server's (serverid.ts; several servers of one trust
   * domain share a datastore, each with its own keys and journal). Default '' (DEFAULT_CA_SERVER_ID):
   * the single server. A server with an ID and no journal yet adopts the '' journal if there is one.
   */
  serverId?: string;
  /** The clock (injected in tests). Default: the system clock. */
  now?: () => Date;
  /** Lifetime of each X.509 CA and JWT key (SPIRE ca_ttl). */
  caTtlSeconds: number;
  caKeyType?: KeyType;
  jwtKeyType?: KeyType;
  /** Subject of our CA certificates (a serialNumber attribute is added per CA). Default C=US, O=SPIFFE. */
  caSubject?: X509Subject;
  defaultX509SvidTtlSeconds: number;
  defaultJwtSvidTtlSeconds: number;
  /** The `iss` claim of every JWT-SVID minted (SPIRE jwt_issuer); absent: none. */
  jwtIssuer?: string;
  /** UpstreamAuthority "disk"; absent: self-signed CAs. */
  upstream?: UpstreamDiskOptions;
  logger?: CaLogger;
  /** startTimers() period. Default 10 s. */
  rotateIntervalMs?: number;
  /** How long past its notAfter an old authority stays in the bundle. Default 60 s. */
  pruneGraceSeconds?: number;
  /** spiffe_refresh_hint of the published bundle (seconds); default: none. */
  refreshHintSeconds?: number;
  /** Lifetime of the server's own SVID. Default: defaultX509SvidTtlSeconds. */
  serverSvidTtlSeconds?: number;
  /**
   * Worker threads that verify CSRs and sign for signX509SvidBatch (0: sign inline on the
   * calling thread). Default: DEFAULT_SIGNING_WORKERS (the machine's parallelism, at most 4).
   */
  signingWorkers?: number;
}

export const DEFAULT_ROTATE_INTERVAL_MS = 10_000;
export const DEFAULT_PRUNE_GRACE_SECONDS = 60;

export const NOOP_LOGGER: CaLogger = { debug() {}, info() {}, warn() {}, error() {} };

function positive(name: string, v: number | undefined, integer: boolean): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isSafeInteger(v))) {
    throw new CaError('config', `${name} must be a positive ${integer ? 'whole ' : ''}number, got ${String(v)}`);
  }
}

/**
 * Throws CaError `config` naming the first invalid option (required dependencies missing, a TTL
 * or period that is not positive, a negative grace or worker count). The trust domain is parsed
 * by the caller.
 */
export function checkCaOptions(o: CaManagerOptions): void {
  if (!o.datastore) throw new CaError('config', 'datastore is required');
  if (!o.keyManager) throw new CaError('config', 'keyManager is required');
  if (o.serverId !== undefined && (typeof o.serverId !== 'string' || !/^[A-Za-z0-9._-]{0,128}$/.test(o.serverId))) {
    throw new CaError('config', `serverId must be at most 128 characters of A-Z a-z 0-9 . _ -, got ${JSON.stringify(o.serverId)}`);
  }
  positive('caTtlSeconds', o.caTtlSeconds, true);
  positive('defaultX509SvidTtlSeconds', o.defaultX509SvidTtlSeconds, true);
  positive('defaultJwtSvidTtlSeconds', o.defaultJwtSvidTtlSeconds, true);
  positive('serverSvidTtlSeconds', o.serverSvidTtlSeconds, true);
  positive('rotateIntervalMs', o.rotateIntervalMs, false);
  if (o.pruneGraceSeconds !== undefined && (!Number.isFinite(o.pruneGraceSeconds) || o.pruneGraceSeconds < 0)) {
    throw new CaError('config', `pruneGraceSeconds must be a non-negative number, got ${String(o.pruneGraceSeconds)}`);
  }
  if (o.signingWorkers !== undefined && (!Number.isSafeInteger(o.signingWorkers) || o.signingWorkers < 0)) {
    throw new CaError('config', `signingWorkers must be a non-negative whole number, got ${String(o.signingWorkers)}`);
  }
}

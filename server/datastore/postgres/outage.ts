/**
 * PostgreSQL: telling "the database cannot be reached" apart from every other failure, saying so
 * in one operator message, and noticing when it goes away and comes back.
 *
 * - `connectionFailure(err)`: the short cause ("connection refused", "no answer within 5 s",
 *   "connection lost", "the server is shutting down", ...) when `err` means PostgreSQL could not
 *   be reached or the connection broke (errno codes, SQLSTATE class 08, 57P01-57P03, the
 *   driver's own "Connection terminated" / timeouts), else undefined.
 * - `endpointOf(uri)`: `127.0.0.1:5432`, or the Unix socket directory and port: what the
 *   message names. Never the user or password.
 * - `Availability`: the store's view of the database. The first connection failure logs ONE
 *   warning ("lost the datastore ..."), later ones none; the first success after that logs ONE
 *   info line ("datastore reachable again after N s"). Listeners (the datastore_up gauge) hear
 *   each change.
 *
 * The error a caller gets is DataStoreError reason 'unavailable' with a message meant for
 * operators (the admin API sends it as is):
 *   datastore unavailable: cannot reach PostgreSQL at 127.0.0.1:5432 (connection refused); nothing was written
 * A write that lost its connection while COMMIT was in flight says instead that it may or may
 * not have been applied: the client cannot know.
 */
import { parse as parseUri } from 'pg-connection-string';
import { DataStoreError, type DataStoreLogger } from '../types.js';

/** Where a connection string points, for messages: host:port or the socket directory; never credentials. */
export function endpointOf(uri: string): string {
  let host = 'localhost';
  let port = '5432';
  try {
    const p = parseUri(uri);
    if (typeof p.host === 'string' && p.host !== '') host = p.host;
    if (p.port !== undefined && p.port !== null && String(p.port) !== '') port = String(p.port);
  } catch {
    // Checked when the store opened; a description is still better than none.
  }
  return host.startsWith('/') ? `the Unix socket in ${host} (port ${port})` : `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

const ERRNO: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ECONNABORTED: 'connection aborted',
  EPIPE: 'connection lost',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EHOSTDOWN: 'host down',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
  ENOENT: 'no socket file: is PostgreSQL running?',
};

const SQLSTATE: Readonly<Record<string, string>> = {
  '57P01': 'the server is shutting down',
  '57P02': 'the server is restarting after a crash',
  '57P03': 'the server is starting up or shutting down',
  '53300': 'too many connections',
};

/** The short cause when `err` means PostgreSQL is unreachable or the connection broke; else undefined. */
export function connectionFailure(err: unknown, connectTimeoutMs: number, queryTimeoutMs: number): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (ERRNO[code] !== undefined) return ERRNO[code];
      if (SQLSTATE[code] !== undefined) return SQLSTATE[code];
      if (/^08[0-9A-Z]{3}$/.test(code)) return `connection failure (SQLSTATE ${code})`;
    }
    const m = e.message;
    if (/timeout exceeded when trying to connect|connection timeout/i.test(m)) return `no answer within ${secs(connectTimeoutMs)}`;
    if (/Query read timeout/i.test(m)) return `no answer within ${secs(queryTimeoutMs)}`;
    if (/Connection terminated|connection error and is not queryable|Client was closed and is not queryable|server closed the connection/i.test(m)) return 'connection lost';
  }
  return undefined;
}

function secs(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/** Where the operation stood when the connection failed: decides what the message promises. */
export type Phase = 'read' | 'write' | 'commit';

export function unavailableError(endpoint: string, cause: string, phase: Phase, err: unknown): DataStoreError {
  const tail =
    phase === 'write'
      ? '; nothing was written'
      : phase === 'commit'
        ? '; the connection was lost during COMMIT, so the write may or may not have been applied: check before retrying'
        : '';
  return new DataStoreError('unavailable', `datastore unavailable: cannot reach PostgreSQL at ${endpoint} (${cause})${tail}`, {
    cause: err,
    redacted: `datastore unavailable: the server cannot reach its database${tail}; retry later`,
  });
}

export interface AvailabilityLogger extends DataStoreLogger {
  info?(obj: object, msg: string): void;
}

/** The database's reachability as this store has seen it; logs each change once. */
export class Availability {
  #up = true;
  #downSince = 0;
  readonly #listeners = new Set<(up: boolean) => void>();

  /** `what`: 'the datastore' (the primary) or the read-only replica, as the log lines name it. */
  constructor(
    private readonly endpoint: string,
    private readonly logger: AvailabilityLogger | undefined,
    private readonly now: () => number = Date.now,
    private readonly what = 'the datastore',
  ) {}

  get up(): boolean {
    return this.#up;
  }

  /** A connection failure (`cause` from connectionFailure). Logs only the first of an outage. */
  down(cause: string, err?: unknown): void {
    if (!this.#up) return;
    this.#up = false;
    this.#downSince = this.now();
    this.logger?.warn(
      { endpoint: this.endpoint, cause, ...(err === undefined ? {} : { err }) },
      this.what === 'the datastore'
        ? `lost the datastore: cannot reach PostgreSQL at ${this.endpoint} (${cause}); agents are served from memory, writes fail with UNAVAILABLE until it is back`
        : `lost ${this.what}: cannot reach PostgreSQL at ${this.endpoint} (${cause}); the reads sent there fail with UNAVAILABLE until it is back`,
    );
    this.#emit(false);
  }

  /** A statement succeeded. Logs once when that ends an outage. */
  ok(): void {
    if (this.#up) return;
    this.#up = true;
    const seconds = Math.round((this.now() - this.#downSince) / 100) / 10;
    const msg = `${this.what === 'the datastore' ? 'datastore' : this.what} reachable again after ${seconds} s: PostgreSQL at ${this.endpoint}`;
    if (this.logger?.info) this.logger.info({ endpoint: this.endpoint, outage_seconds: seconds }, msg);
    else this.logger?.warn({ endpoint: this.endpoint, outage_seconds: seconds }, msg);
    this.#emit(true);
  }

  onChange(listener: (up: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  #emit(up: boolean): void {
    for (const l of [...this.#listeners]) {
      try {
        l(up);
      } catch (err) {
        this.logger?.warn({ err }, 'datastore availability listener threw');
      }
    }
  }
}

/**
 * The agent manager's SyncAuthorized stream: opens it on the current connection, hands every
 * message on, reconnects with backoff when it is lost (at once after `reconnect()`), reports a
 * refusal (banned, evicted, expired agent SVID), and tracks since when the server cannot be
 * reached.
 */
import { status as GrpcStatus, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { SyncAuthorizedRequest, SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import type { AgentApiConnection } from '../client/serverclient.js';
import { syncAuthorized } from '../client/serverclient.js';
import { Backoff, RECONNECT_MAX_MS, RECONNECT_MIN_MS } from './backoff.js';
import type { ManagerLogger } from './types.js';

export interface SyncHandlers {
  /** Returns the current connection to the server. */
  connection: () => AgentApiConnection;
  logger: ManagerLogger;
  now: () => Date;
  /** What to ask for when (re)opening the stream: the revision and what is held already. */
  request: () => Partial<SyncAuthorizedRequest>;
  /** Applies one message (an exception is logged, the stream goes on). */
  apply: (msg: SyncAuthorizedResponse) => void;
  /** A message arrived after the stream was lost or the server was unreachable. */
  resumed: () => void;
  /** The server refused the agent (PERMISSION_DENIED or UNAUTHENTICATED). */
  refused: (err: ServiceError) => void;
  /** Turns a failed server call into the operator-facing text its log lines carry (agent/errors.ts); default the gRPC details. */
  describeError?: ((err: ServiceError) => string) | undefined;
}

export class SyncClient {
  readonly #h: SyncHandlers;
  readonly #log: ManagerLogger;
  #stream: ClientReadableStream<SyncAuthorizedResponse> | undefined;
  readonly #backoff = new Backoff(RECONNECT_MIN_MS, RECONNECT_MAX_MS);
  /** When the sync stream was lost (undefined while connected), by the injected clock. */
  #lostAt: number | undefined;
  /** Since when the server cannot be reached (stream lost or a signing call failed in transport), by the injected clock. */
  #unreachableSince: number | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  /** reconnect() cancelled the stream on purpose: reconnect at once rather than backing off. */
  #reconnectNow = false;
  #stopped = false;

  constructor(handlers: SyncHandlers) {
    this.#h = handlers;
    this.#log = handlers.logger;
  }

  /** When the sync stream was lost (undefined while connected). */
  get lostAt(): number | undefined {
    return this.#lostAt;
  }

  /** Since when the server cannot be reached (undefined while it can). */
  get unreachableSince(): number | undefined {
    return this.#unreachableSince;
  }

  /** Re-opens the stream on a new connection (after the agent SVID renewed). */
  reconnect(): void {
    if (this.#stopped) return;
    this.#backoff.reset();
    if (this.#stream) {
      this.#reconnectNow = true;
      this.#stream.cancel();
    } else if (this.#reconnectTimer) {
      // Waiting out a backoff on the old connection: try the new one now.
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
      this.connect();
    }
  }

  stop(): void {
    this.#stopped = true;
    this.#stream?.cancel();
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
  }

  /** A signing call failed in transport at `now`: the server is unreachable since then (if not before). */
  unreachable(now: number): void {
    this.#unreachableSince ??= now;
  }

  /**
   * A signing call was answered: the server is reachable again if the stream is up; if the
   * stream waits out its backoff, it reconnects now.
   */
  answered(): void {
    if (this.#stream !== undefined && this.#lostAt === undefined) this.#unreachableSince = undefined;
    else if (this.#stream === undefined && this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
      this.#backoff.reset();
      this.connect();
    }
  }

  connect(): void {
    if (this.#stopped) return;
    const stream = syncAuthorized(this.#h.connection().client, this.#h.request());
    this.#stream = stream;
    stream.on('data', (msg: SyncAuthorizedResponse) => {
      const wasLost = this.#lostAt !== undefined || this.#unreachableSince !== undefined;
      if (this.#lostAt !== undefined) {
        this.#log.info({ after_ms: this.#h.now().getTime() - this.#lostAt, revision: String(msg.revision) }, 'reconnected to the server');
        this.#lostAt = undefined;
      }
      this.#unreachableSince = undefined;
      this.#backoff.reset();
      try {
        this.#h.apply(msg);
      } catch (err) {
        this.#log.error({ err }, 'could not apply an update from the server');
      }
      if (wasLost) this.#h.resumed();
    });
    stream.on('error', (err: ServiceError) => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      if (this.#stopped) return;
      if (err.code === GrpcStatus.CANCELLED && this.#reconnectNow) {
        this.#reconnectNow = false;
        this.#scheduleReconnect(0);
        return;
      }
      if (err.code === GrpcStatus.PERMISSION_DENIED || err.code === GrpcStatus.UNAUTHENTICATED) {
        this.#log.error({ code: err.code, details: this.#h.describeError?.(err) ?? err.details }, 'the server refused this agent; serving cached identities until they expire');
        this.#h.refused(err);
      } else {
        this.#log.warn({ code: err.code, details: this.#h.describeError?.(err) ?? err.details, retry_ms: this.#backoff.ms }, 'lost the server sync stream; serving cached identities and retrying');
      }
      this.#lostAt ??= this.#h.now().getTime();
      this.#unreachableSince ??= this.#lostAt;
      this.#scheduleReconnect(this.#backoff.ms);
      this.#backoff.grow();
    });
    stream.on('end', () => {
      if (this.#stream === stream && !this.#stopped) {
        this.#log.warn({ retry_ms: this.#backoff.ms }, 'the server closed the sync stream; reconnecting');
        this.#lostAt ??= this.#h.now().getTime();
        this.#unreachableSince ??= this.#lostAt;
        this.#stream = undefined;
        this.#scheduleReconnect(this.#backoff.ms);
      }
    });
  }

  #scheduleReconnect(ms: number): void {
    if (this.#stopped || this.#reconnectTimer) return;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.connect();
    }, ms);
    this.#reconnectTimer.unref();
  }
}

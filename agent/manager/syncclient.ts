/**
 * The agent manager's SyncAuthorized stream: opens it on the current connection, hands every
 * message on, reconnects with backoff when it is lost, reports a refusal (banned, evicted,
 * expired agent SVID), and tracks since when the server cannot be reached.
 *
 * Several servers (agent/client/serveraddress.ts): the connection is one channel over all of
 * them, so a reconnect after a lost stream reaches whichever server answers; the first attempt
 * after losing an established stream comes within RECONNECT_MIN_MS (at a random moment, so the
 * agents of a dead server do not all arrive at once), and the log says which server the stream
 * moved to. `reconnect()` (a new connection: renewed agent SVID, new bundle, maximum connection
 * age) is make-before-break: the stream is opened on the new connection first and the old one
 * is cancelled once the new one has delivered its first message, so updates never pause.
 */
import { randomInt } from 'node:crypto';
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
  /** Whether there are other servers to fail over to (server_address lists several, or a DNS name). */
  alternatives?: boolean | undefined;
}

type Stream = ClientReadableStream<SyncAuthorizedResponse>;

export class SyncClient {
  readonly #h: SyncHandlers;
  readonly #log: ManagerLogger;
  #stream: Stream | undefined;
  /** A stream opened on a new connection by reconnect(), not yet delivering: it replaces #stream on its first message. */
  #successor: Stream | undefined;
  /** Streams that delivered at least one message. */
  readonly #delivered = new WeakSet<Stream>();
  /** The server the last delivering stream was on (`host:port`), and the one a lost stream was on. */
  #peer: string | undefined;
  #failedPeer: string | undefined;
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

  /** The server the stream is on (`host:port`), once it has delivered; undefined before. */
  get server(): string | undefined {
    return this.#peer;
  }

  /**
   * Re-opens the stream on a new connection (renewed agent SVID, new bundle, maximum connection
   * age): while the current stream is up, the new one is opened beside it and takes over on its
   * first message (make-before-break).
   */
  reconnect(): void {
    if (this.#stopped) return;
    this.#backoff.reset();
    if (this.#stream && this.#delivered.has(this.#stream) && this.#lostAt === undefined) {
      this.#openSuccessor();
    } else if (this.#stream) {
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
    this.#successor?.cancel();
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

  /** The stream on the new connection, opened while the current one goes on. */
  #openSuccessor(): void {
    const prev = this.#successor;
    this.#successor = undefined;
    prev?.cancel();
    const conn = this.#h.connection();
    const stream = syncAuthorized(conn.client, this.#h.request());
    this.#successor = stream;
    this.#watch(stream, conn);
  }

  connect(): void {
    if (this.#stopped) return;
    const conn = this.#h.connection();
    const stream = syncAuthorized(conn.client, this.#h.request());
    this.#stream = stream;
    this.#watch(stream, conn);
  }

  /** The successor delivered: it becomes the stream, the old one is cancelled (its events are ignored from now on). */
  #promote(stream: Stream, peer: string | undefined): void {
    const old = this.#stream;
    this.#stream = stream;
    this.#successor = undefined;
    old?.cancel();
    // The old stream may have failed meanwhile: the successor is its reconnection.
    if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
    }
    if (peer !== undefined && this.#peer !== undefined && peer !== this.#peer) {
      this.#log.info({ server: peer, previous: this.#peer }, `moved the sync stream to spindle-server at ${peer} from ${this.#peer} (new connection opened before the old one was closed)`);
    }
  }

  #watch(stream: Stream, conn: ReturnType<SyncHandlers['connection']>): void {
    stream.on('data', (msg: SyncAuthorizedResponse) => {
      const first = !this.#delivered.has(stream);
      let peer: string | undefined;
      if (first) {
        this.#delivered.add(stream);
        const p = stream.getPeer();
        peer = p === 'unknown' ? undefined : p;
        if (peer !== undefined) conn.peer = peer;
      }
      if (stream === this.#successor) this.#promote(stream, peer);
      else if (stream !== this.#stream) return;
      const wasLost = this.#lostAt !== undefined || this.#unreachableSince !== undefined;
      if (this.#lostAt !== undefined) {
        const afterMs = this.#h.now().getTime() - this.#lostAt;
        this.#log.info({ after_ms: afterMs, revision: String(msg.revision), server: peer }, 'reconnected to the server');
        if (peer !== undefined && this.#failedPeer !== undefined && peer !== this.#failedPeer) {
          this.#log.info({ server: peer, failed: this.#failedPeer, after_ms: afterMs }, `switched to spindle-server at ${peer} after ${this.#failedPeer} failed`);
        }
        this.#lostAt = undefined;
        this.#failedPeer = undefined;
      }
      if (first && peer !== undefined) this.#peer = peer;
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
      if (stream === this.#successor) {
        // The current stream goes on; the next reconnect() or its loss tries again.
        this.#successor = undefined;
        if (!this.#stopped) this.#log.warn({ code: err.code, details: this.#h.describeError?.(err) ?? err.details }, 'could not open the sync stream on the new server connection; keeping the current one');
        this.#successorGone();
        return;
      }
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      if (this.#stopped) return;
      const established = this.#delivered.has(stream);
      if (err.code === GrpcStatus.CANCELLED && this.#reconnectNow) {
        this.#reconnectNow = false;
        this.#scheduleReconnect(0);
        return;
      }
      const refused = err.code === GrpcStatus.PERMISSION_DENIED || err.code === GrpcStatus.UNAUTHENTICATED;
      if (refused) {
        this.#log.error({ code: err.code, details: this.#h.describeError?.(err) ?? err.details }, 'the server refused this agent; serving cached identities until they expire');
        this.#h.refused(err);
      }
      // An established stream lost with other servers to go to: try again soon (the channel
      // connects to the next server that answers), at a random moment under RECONNECT_MIN_MS.
      const delay = established && !refused && this.#h.alternatives ? randomInt(50, RECONNECT_MIN_MS) : this.#backoff.ms;
      if (established) this.#failedPeer = this.#peer;
      if (!refused) {
        this.#log.warn(
          { code: err.code, details: this.#h.describeError?.(err) ?? err.details, retry_ms: delay, ...(established ? { server: this.#peer } : {}) },
          'lost the server sync stream; serving cached identities and retrying',
        );
      }
      this.#lostAt ??= this.#h.now().getTime();
      this.#unreachableSince ??= this.#lostAt;
      this.#scheduleReconnect(delay);
      this.#backoff.grow();
    });
    stream.on('end', () => {
      if (stream === this.#successor) {
        this.#successor = undefined;
        this.#successorGone();
        return;
      }
      if (this.#stream === stream && !this.#stopped) {
        const delay = this.#delivered.has(stream) && this.#h.alternatives ? randomInt(50, RECONNECT_MIN_MS) : this.#backoff.ms;
        if (this.#delivered.has(stream)) this.#failedPeer = this.#peer;
        this.#log.warn({ retry_ms: delay, server: this.#peer }, 'the server closed the sync stream; reconnecting');
        this.#lostAt ??= this.#h.now().getTime();
        this.#unreachableSince ??= this.#lostAt;
        this.#stream = undefined;
        this.#scheduleReconnect(delay);
      }
    });
  }

  /** The successor failed: if the current stream was lost meanwhile and nothing is scheduled, reconnect. */
  #successorGone(): void {
    if (this.#stopped || this.#stream !== undefined || this.#reconnectTimer) return;
    this.#scheduleReconnect(this.#backoff.ms);
    this.#backoff.grow();
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

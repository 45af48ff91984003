/**
 * Who is calling, shared by every API on the agent socket (Workload API, SDS): the tracked peer
 * of a call, its selectors from every workload attestor (deduplicated), and the check that the
 * process is still the one that connected once attestation is done.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import type { Selector } from '../../common/selector.js';
import type { WorkloadSubscription } from '../manager/types.js';
import { apiError, toStatus, WorkloadApiError } from './errors.js';
import type { EndpointLogger, PeerContext, PeerOf } from './types.js';

export interface CallerAttestation {
  /** The tracked peer of a call; UNAVAILABLE when its connection is gone. */
  peerOfCall(call: { getPeer(): string }): PeerContext;
  /** The union of every attestor's selectors; UNAVAILABLE when the process changed since it connected. */
  attest(peer: PeerContext, signal: AbortSignal): Promise<Selector[]>;
}

export function callerAttestation(peerOf: PeerOf, attestors: readonly WorkloadAttestor[]): CallerAttestation {
  return {
    peerOfCall(call) {
      const peer = peerOf(call);
      if (peer === undefined) throw apiError(GrpcStatus.UNAVAILABLE, 'caller connection is not tracked (closed?)');
      return peer;
    },
    async attest(peer, signal) {
      const results = await Promise.all(attestors.map((a) => a.attest(peer.peer, signal)));
      signal.throwIfAborted();
      const changed = peer.whyNotSameProcess();
      if (changed !== undefined) {
        throw apiError(GrpcStatus.UNAVAILABLE, `caller process changed since it connected: ${changed}; identities are only served to the process that opened the connection; reconnect from it and retry`);
      }
      const seen = new Set<string>();
      const selectors: Selector[] = [];
      for (const s of results.flat()) {
        const k = `${s.type}:${s.value}`;
        if (!seen.has(k)) {
          seen.add(k);
          selectors.push(s);
        }
      }
      return selectors;
    },
  };
}

/** A cache failure: the caller should retry later; the detail goes to the log. */
export const cacheError = (err: unknown): WorkloadApiError =>
  err instanceof WorkloadApiError ? err : apiError(GrpcStatus.UNAVAILABLE, 'identities are not available right now; retry later', err);

/** Ends a stream with a status; the endpoint keeps one per open stream to end them at shutdown. */
export type StreamEnder = (code: GrpcStatus, details: string) => void;

/**
 * The end of one server stream on the agent socket (Workload API, SDS), reached once: it aborts
 * attestation in progress, closes the cache subscription and returns the stream budget, whether
 * the client went away (`cleanup`) or the agent ends the stream with a status (`endWith`, `fail`).
 * Registers its ender in `open` until then.
 */
export class StreamEnd {
  ended = false;
  readonly abort = new AbortController();
  sub: WorkloadSubscription | undefined;
  release: (() => void) | undefined;
  readonly #call: { emit(event: 'error', status: { code: GrpcStatus; details: string }): boolean };
  readonly #open: Set<StreamEnder>;
  readonly #log: EndpointLogger;
  readonly #context: Record<string, unknown>;

  constructor(
    call: { emit(event: 'error', status: { code: GrpcStatus; details: string }): boolean; once(event: 'cancelled' | 'close', listener: () => void): unknown },
    open: Set<StreamEnder>,
    log: EndpointLogger,
    context: Record<string, unknown>,
  ) {
    this.#call = call;
    this.#open = open;
    this.#log = log;
    this.#context = context;
    call.once('cancelled', this.cleanup);
    call.once('close', this.cleanup);
    open.add(this.endWith);
  }

  /** The stream is over (client gone, or ending): release everything it holds. */
  readonly cleanup = (): void => {
    if (this.ended) return;
    this.ended = true;
    this.#open.delete(this.endWith);
    this.abort.abort();
    this.sub?.close();
    this.release?.();
  };

  /** Ends the stream with this status. */
  readonly endWith: StreamEnder = (code, details) => {
    if (this.ended) return;
    this.cleanup();
    this.#call.emit('error', { code, details });
  };

  /** Ends the stream with the status `err` maps to (logged as toStatus does). */
  readonly fail = (err: unknown): void => {
    if (this.ended) return;
    const st = toStatus(err, this.#log, this.#context);
    this.endWith(st.code, st.details);
  };
}

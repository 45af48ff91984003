/**
 * Admission of a call on the agent socket, one code path for the Workload API and SDS: the
 * caller's tracked peer, one token of its per-process rate bucket (limits.ts), a slot of its
 * stream budget for streams, attestation by every workload attestor, and the check that the
 * caller is still the process that connected (caller.ts). Services add only what is theirs
 * before it (the Workload API's security header) and the request checks `check` runs between
 * the rate token and attestation (cheap field checks go before any kernel or cache work).
 *
 * `openSubscription` then follows the cache subscription of the caller's selectors: the
 * service is handed the initial update (and the newest one that arrived while it was awaited)
 * once, then every later update, in order; the subscription and the stream slot are released
 * by the stream's `StreamEnd`, whichever way the stream ends.
 */
import { status as GrpcStatus, type sendUnaryData } from '@grpc/grpc-js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import type { Selector } from '../../common/selector.js';
import { IdentityUnavailableError, type IdentityCache, type WorkloadSubscription, type WorkloadUpdate } from '../manager/types.js';
import { cacheError, callerAttestation, type CallerAttestation, type StreamEnd } from './caller.js';
import { apiError, toStatus } from './errors.js';
import type { CallerLimits } from './limits.js';
import type { EndpointLogger, PeerContext, PeerOf } from './types.js';

/** Which service a call belongs to (the limits' metrics label). */
export type ApiKind = 'workload' | 'sds';

export interface AdmittedCaller {
  peer: PeerContext;
  selectors: Selector[];
}

/** What a subscription stream does with the cache's updates once its caller is admitted. */
export interface SubscriptionHandlers {
  /** The caller was attested and is still the same process (called before subscribing). */
  admitted(peer: PeerContext): void;
  /** The first state, once: the initial update, and the newest update that arrived while waiting for it. */
  initial(initial: WorkloadUpdate, early: WorkloadUpdate | undefined): void;
  /** Every later update, in order. */
  update(update: WorkloadUpdate): void;
}

export interface SubscriptionOptions {
  /**
   * The initial update failed because the caller is entitled but nothing is servable now:
   * answer UNAVAILABLE with the cache's own explanation instead of the generic retry message.
   */
  explainUnavailable?: boolean;
}

type Call = { getPeer(): string };

export class Admission {
  readonly #attestation: CallerAttestation;
  readonly #limits: CallerLimits;
  readonly #cache: IdentityCache;
  readonly #kind: ApiKind;

  constructor(options: { peerOf: PeerOf; attestors: readonly WorkloadAttestor[]; limits: CallerLimits; cache: IdentityCache; kind: ApiKind }) {
    this.#attestation = callerAttestation(options.peerOf, options.attestors);
    this.#limits = options.limits;
    this.#cache = options.cache;
    this.#kind = options.kind;
  }

  /** Admits a unary call: rate token, `check` (request fields), attestation. */
  async admitCall(call: Call, signal: AbortSignal, check?: () => void): Promise<AdmittedCaller> {
    const peer = this.#attestation.peerOfCall(call);
    this.#limits.admitCall(peer, this.#kind);
    check?.();
    const selectors = await this.#attestation.attest(peer, signal);
    return { peer, selectors };
  }

  /**
   * Admits a stream (rate token, stream slot held by `life` until it ends, attestation) and
   * subscribes it to the cache. Resolves when the initial state has been handed over, or
   * quietly when the stream ended meanwhile; rejects with the status error to end it with.
   */
  async openSubscription(call: Call, life: StreamEnd, handlers: SubscriptionHandlers, options: SubscriptionOptions = {}): Promise<void> {
    const peer = this.#attestation.peerOfCall(call);
    this.#limits.admitCall(peer, this.#kind);
    life.release = this.#limits.openStream(peer, this.#kind);
    const selectors = await this.#attestation.attest(peer, life.abort.signal);
    if (life.ended) return;
    handlers.admitted(peer);
    let initialDone = false;
    let early: WorkloadUpdate | undefined;
    let sub: WorkloadSubscription;
    try {
      sub = life.sub = this.#cache.subscribe(selectors, (update) => {
        if (initialDone) handlers.update(update);
        else early = update; // newer than the initial one, which has not arrived yet
      });
    } catch (err) {
      throw cacheError(err);
    }
    if (life.ended) {
      sub.close();
      return;
    }
    let initial: WorkloadUpdate;
    try {
      initial = await sub.initial;
    } catch (err) {
      throw options.explainUnavailable === true && err instanceof IdentityUnavailableError ? apiError(GrpcStatus.UNAVAILABLE, err.message, err) : cacheError(err);
    }
    // Handed over synchronously with the flag flip: no update can slip between the two.
    initialDone = true;
    const pendingEarly = early;
    early = undefined;
    handlers.initial(initial, pendingEarly);
  }
}

/**
 * Runs a unary handler: aborts its work when the client cancels, answers with the result or
 * the status the error maps to (logged by toStatus), and answers nothing once cancelled.
 */
export function unaryCall<Res>(call: Call & { once(event: 'cancelled', listener: () => void): unknown }, callback: sendUnaryData<Res>, log: EndpointLogger, method: string, body: (signal: AbortSignal) => Promise<Res>): void {
  const abort = new AbortController();
  call.once('cancelled', () => abort.abort());
  const context = { method, peer: call.getPeer() };
  body(abort.signal).then(
    (res) => callback(null, res),
    (err: unknown) => {
      if (!abort.signal.aborted) callback(toStatus(err, log, context));
    },
  );
}

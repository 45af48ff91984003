/**
 * Who is calling, shared by every API on the agent socket (Workload API, SDS): the tracked peer
 * of a call, its selectors from every workload attestor (deduplicated), and the check that the
 * process is still the one that connected once attestation is done.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import type { Selector } from '../../server/datastore/types.js';
import { apiError, WorkloadApiError } from './errors.js';
import type { PeerContext, PeerOf } from './types.js';

export interface CallerAttestation {
  /** The tracked peer of a call; UNAVAILABLE when its connection is gone. */
  peerOfCall(call: { getPeer(): string }): PeerContext;
  /** The union of every attestor's selectors; UNAVAILABLE when the process changed meanwhile. */
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
      if (!peer.stillSameProcess()) {
        throw apiError(GrpcStatus.UNAVAILABLE, 'caller process changed during attestation (it exited or its pid was reused); reconnect and retry');
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

/**
 * Workload attestation: the selectors of the process on the other end of a Workload API
 * connection, derived from what the kernel says about it (never from anything it sends).
 * One folder per built-in attestor; the agent runs every configured attestor and unions their
 * selectors.
 */
import type { Selector } from '../../server/datastore/types.js';

/** The caller as the kernel reported it on accept (SO_PEERCRED), plus a handle to detect reuse. */
export interface PeerInfo {
  pid: number;
  uid: number;
  gid: number;
}

export interface WorkloadAttestor {
  readonly name: string;
  /** Selectors of the caller, each with `type` = the attestor name (e.g. unix:uid:1000). */
  attest(peer: PeerInfo, signal?: AbortSignal): Promise<Selector[]>;
}

/** Attestation failed (process gone, /proc unreadable...): the Workload API answers UNAVAILABLE. */
export class WorkloadAttestationError extends Error {
  readonly code = 'ERR_WORKLOAD_ATTESTATION';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WorkloadAttestationError';
  }
}

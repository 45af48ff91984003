/**
 * Workload attestation: the selectors of the process on the other end of a Workload API
 * connection, derived from what the kernel says about it (never from anything it sends).
 * One folder per built-in attestor; the agent runs every configured attestor and unions their
 * selectors.
 */
import type { Selector } from '../../common/selector.js';

/**
 * The caller as the kernel captured it when it called connect(): SO_PEERCRED (pid, effective uid
 * and gid) and SO_PEERGROUPS (supplementary groups). These credentials stay those of the
 * connecting process whatever it does later (exec a setuid/setgid program, hand the socket to
 * another process); anything an attestor reads from /proc/<pid> describes the process as it is
 * at attestation time, which the agent's same-process check ties back to the connector.
 */
export interface PeerInfo {
  pid: number;
  uid: number;
  gid: number;
  /** Supplementary group ids, in the kernel's order. */
  groups: readonly number[];
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

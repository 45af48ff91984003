/**
 * Workload attestation: the selectors of the process on the other end of a Workload API
 * connection, derived from what the kernel says about it (never from anything it sends).
 * One folder per built-in attestor, each exporting a `WorkloadAttestorPlugin` from its
 * `plugin.ts`; `registry.ts` lists them. The agent runs every configured attestor and unions
 * their selectors.
 */
import type { Logger } from 'pino';
import type { ConfigReader } from '../../common/configfile.js';
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

/**
 * What the attestors take from the agent process: every source of non-determinism (/proc,
 * /etc, environment, clock, waits) is injectable so tests control it.
 */
export interface WorkloadAttestorEnv {
  /** Default /proc (the k8s attestor's `proc_root` key overrides it). */
  procRoot?: string;
  /** Default /etc. */
  etcRoot?: string;
  /** The agent's environment variables (k8s: `node_name_env`). Default none. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Monotonic milliseconds (k8s: pod list cache, credential reload). Default performance.now. */
  now?: () => number;
  /** Waits between kubelet polls (k8s); must reject when the signal aborts. Default a timer. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Parent logger; attestors log through a child. Default none. */
  logger?: Logger;
}

/**
 * One workload attestor as the build knows it. `build` validates the attestor's own
 * plugin_data (a `ConfigError` naming the offending key) and touches nothing outside the
 * process.
 */
export interface WorkloadAttestorPlugin {
  /** The name in configuration (`WorkloadAttestor "<name>"`) and the selector type. */
  readonly name: string;
  build(data: ConfigReader, env: WorkloadAttestorEnv): WorkloadAttestor;
}

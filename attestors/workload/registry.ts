/** Builds the configured workload attestors (agent side). */
import type { Logger } from 'pino';
import type { ConfigReader } from '../../common/configfile.js';
import { K8S, K8sWorkloadAttestor } from './k8s/k8s.js';
import type { WorkloadAttestor } from './types.js';
import { UNIX, UnixWorkloadAttestor } from './unix/unix.js';

export interface WorkloadAttestorConfig {
  name: string;
  data: ConfigReader;
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

const AVAILABLE = [UNIX, K8S].join(', ');

/**
 * One attestor per config, in order. Each validates its own plugin_data (throwing ConfigError
 * naming the key); an unknown name is an error.
 */
export function buildWorkloadAttestors(configs: readonly WorkloadAttestorConfig[], env: WorkloadAttestorEnv = {}): WorkloadAttestor[] {
  const out: WorkloadAttestor[] = [];
  for (const c of configs) {
    switch (c.name) {
      case UNIX:
        out.push(UnixWorkloadAttestor.fromConfig(c.data, { ...(env.procRoot ? { procRoot: env.procRoot } : {}), ...(env.etcRoot ? { etcRoot: env.etcRoot } : {}) }));
        break;
      case K8S:
        out.push(
          K8sWorkloadAttestor.fromConfig(c.data, {
            ...(env.procRoot ? { procRoot: env.procRoot } : {}),
            ...(env.env ? { env: env.env } : {}),
            ...(env.now ? { now: env.now } : {}),
            ...(env.sleep ? { sleep: env.sleep } : {}),
            ...(env.logger ? { logger: env.logger.child({ subsystem: 'workload_attestor', attestor: K8S }) } : {}),
          }),
        );
        break;
      default:
        throw new Error(`workload attestor "${c.name}" is not available in this build (available: ${AVAILABLE})`);
    }
  }
  return out;
}

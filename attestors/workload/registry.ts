/** Builds the configured workload attestors (agent side). */
import type { ConfigReader } from '../../common/configfile.js';
import type { WorkloadAttestor } from './types.js';
import { UNIX, UnixWorkloadAttestor } from './unix/unix.js';

export interface WorkloadAttestorConfig {
  name: string;
  data: ConfigReader;
}

/** Host roots the attestors read; injectable for tests (DESIGN convention 7). */
export interface WorkloadAttestorEnv {
  /** Default /proc. */
  procRoot?: string;
  /** Default /etc. */
  etcRoot?: string;
}

/**
 * One attestor per config, in order. Each validates its own plugin_data (throwing ConfigError
 * naming the key); an unknown name is an error.
 */
export function buildWorkloadAttestors(configs: readonly WorkloadAttestorConfig[], env: WorkloadAttestorEnv = {}): WorkloadAttestor[] {
  const out: WorkloadAttestor[] = [];
  for (const c of configs) {
    switch (c.name) {
      case UNIX:
        out.push(UnixWorkloadAttestor.fromConfig(c.data, env));
        break;
      default:
        throw new Error(`workload attestor "${c.name}" is not available in this build (available: ${UNIX})`);
    }
  }
  return out;
}

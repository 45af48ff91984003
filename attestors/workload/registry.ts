/**
 * The workload attestors of this build, and how they are built from configuration. Adding one
 * is a folder (with a `plugin.ts` exporting a `WorkloadAttestorPlugin`) plus one line in
 * `WORKLOAD_ATTESTOR_PLUGINS`: the agent's config module takes its known names from this list.
 */
import type { ConfigReader } from '../../common/configfile.js';
import { k8sPlugin } from './k8s/plugin.js';
import type { WorkloadAttestor, WorkloadAttestorEnv, WorkloadAttestorPlugin } from './types.js';
import { unixPlugin } from './unix/plugin.js';

export type { WorkloadAttestorEnv, WorkloadAttestorPlugin } from './types.js';

/** Every workload attestor in this build, in the order error messages list them. */
export const WORKLOAD_ATTESTOR_PLUGINS: readonly WorkloadAttestorPlugin[] = [
  unixPlugin,
  k8sPlugin,
];

export interface WorkloadAttestorConfig {
  name: string;
  data: ConfigReader;
}

/**
 * One attestor per config, in order. Each validates its own plugin_data (throwing ConfigError
 * naming the key); an unknown name is an error. `plugins` defaults to this build's list.
 */
export function buildWorkloadAttestors(
  configs: readonly WorkloadAttestorConfig[],
  env: WorkloadAttestorEnv = {},
  plugins: readonly WorkloadAttestorPlugin[] = WORKLOAD_ATTESTOR_PLUGINS,
): WorkloadAttestor[] {
  return configs.map((c) => {
    const plugin = plugins.find((p) => p.name === c.name);
    if (plugin === undefined) throw new Error(`workload attestor "${c.name}" is not available in this build (available: ${plugins.map((p) => p.name).join(', ')})`);
    return plugin.build(c.data, env);
  });
}

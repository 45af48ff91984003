/**
 * Builds the agent's plugins from its validated config: the node attestor's agent half and the
 * workload attestors, each validating its own plugin_data. The attestors come from the lists
 * in attestors/node/registry.ts and attestors/workload/registry.ts. `spindle-agent validate`
 * calls this too, so a bad plugin_data is reported there and not first at `run`. Building
 * touches nothing outside the process (no files written, no network).
 */
import { ConfigError } from '../common/configfile.js';
import { buildAgentNodeAttestor, nodeAttestorPlugin, NODE_ATTESTOR_PLUGINS } from '../attestors/node/registry.js';
import type { AgentNodeAttestor, NodeAttestorPlugin } from '../attestors/node/types.js';
import { buildWorkloadAttestors, WORKLOAD_ATTESTOR_PLUGINS, type WorkloadAttestorEnv } from '../attestors/workload/registry.js';
import type { WorkloadAttestor, WorkloadAttestorPlugin } from '../attestors/workload/types.js';
import type { AgentConfig } from './config/types.js';

export interface AgentPlugins {
  /** Undefined for join_token without a token: the agent must resume from its data dir. */
  nodeAttestor: AgentNodeAttestor | undefined;
  workloadAttestors: WorkloadAttestor[];
}

/** The attestors the agent may build; default this build's lists (tests extend them). */
export interface AgentAttestorPlugins {
  nodeAttestors?: readonly NodeAttestorPlugin[];
  workloadAttestors?: readonly WorkloadAttestorPlugin[];
}

export function buildAgentPlugins(config: AgentConfig, env: WorkloadAttestorEnv = {}, plugins: AgentAttestorPlugins = {}): AgentPlugins {
  return {
    nodeAttestor: buildNodeAttestor(config, plugins.nodeAttestors ?? NODE_ATTESTOR_PLUGINS),
    workloadAttestors: buildWorkloadAttestors(config.plugins.workloadAttestors, env, plugins.workloadAttestors ?? WORKLOAD_ATTESTOR_PLUGINS),
  };
}

function buildNodeAttestor(config: AgentConfig, plugins: readonly NodeAttestorPlugin[]): AgentNodeAttestor | undefined {
  const { name } = config.plugins.nodeAttestor;
  const plugin = nodeAttestorPlugin(name, plugins);
  if (config.joinToken !== undefined && plugin.usesJoinToken !== true) {
    throw new ConfigError([`config: a join token was given but the NodeAttestor is ${name}: remove -joinToken / join_token or use the join_token attestor`]);
  }
  return buildAgentNodeAttestor(config.plugins.nodeAttestor, config.joinToken !== undefined ? { joinToken: config.joinToken } : {}, plugins);
}

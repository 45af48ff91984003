/**
 * Builds the agent's plugins from its validated config: the node attestor (join_token or
 * k8s_psat) and the workload attestors (unix, k8s), each validating its own plugin_data.
 * `spindle-agent validate` calls this too, so a bad plugin_data is reported there and not
 * first at `run`. Building touches nothing outside the process (no files written, no network).
 */
import { ConfigError } from '../common/configfile.js';
import { JoinTokenAgentAttestor } from '../attestors/node/join_token/agent.js';
import { JOIN_TOKEN } from '../attestors/node/join_token/server.js';
import { K8sPsatAgentAttestor } from '../attestors/node/k8s_psat/agent.js';
import type { AgentNodeAttestor } from '../attestors/node/types.js';
import { buildWorkloadAttestors, type WorkloadAttestorEnv } from '../attestors/workload/registry.js';
import type { WorkloadAttestor } from '../attestors/workload/types.js';
import type { AgentConfig } from './config/types.js';

export interface AgentPlugins {
  /** Undefined for join_token without a token: the agent must resume from its data dir. */
  nodeAttestor: AgentNodeAttestor | undefined;
  workloadAttestors: WorkloadAttestor[];
}

export function buildAgentPlugins(config: AgentConfig, env: WorkloadAttestorEnv = {}): AgentPlugins {
  return { nodeAttestor: buildNodeAttestor(config), workloadAttestors: buildWorkloadAttestors(config.plugins.workloadAttestors, env) };
}

function buildNodeAttestor(config: AgentConfig): AgentNodeAttestor | undefined {
  const { name, data } = config.plugins.nodeAttestor;
  if (name === JOIN_TOKEN) {
    data.throwIfInvalid();
    return config.joinToken ? new JoinTokenAgentAttestor(config.joinToken) : undefined;
  }
  if (config.joinToken !== undefined) {
    throw new ConfigError([`config: a join token was given but the NodeAttestor is ${name}: remove -joinToken / join_token or use the join_token attestor`]);
  }
  return K8sPsatAgentAttestor.fromConfig(data);
}

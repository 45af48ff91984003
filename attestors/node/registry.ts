/**
 * The node attestors of this build, and how they are built from configuration. Adding one is a
 * folder (with a `plugin.ts` exporting a `NodeAttestorPlugin`) plus one line in
 * `NODE_ATTESTOR_PLUGINS`: both config modules take their known names from this list, the
 * server builds the server halves from it and the agent the agent half.
 */
import { joinTokenPlugin } from './join_token/plugin.js';
import { k8sPsatPlugin } from './k8s_psat/plugin.js';
import type { ConfigReader } from '../../common/configfile.js';
import type { AgentNodeAttestor, AgentNodeAttestorContext, NodeAttestorEnv, NodeAttestorPlugin, ServerNodeAttestor } from './types.js';

export type { NodeAttestorEnv, NodeAttestorPlugin } from './types.js';

/** Every node attestor in this build, in the order error messages list them. */
export const NODE_ATTESTOR_PLUGINS: readonly NodeAttestorPlugin[] = [
  joinTokenPlugin,
  k8sPsatPlugin,
];

export interface NodeAttestorConfig {
  name: string;
  data: ConfigReader;
}

/** The plugin called `name` in `plugins`, or an error saying it is not in this build. */
export function nodeAttestorPlugin(name: string, plugins: readonly NodeAttestorPlugin[] = NODE_ATTESTOR_PLUGINS): NodeAttestorPlugin {
  const plugin = plugins.find((p) => p.name === name);
  if (plugin === undefined) throw new Error(`node attestor "${name}" is not available in this build (available: ${plugins.map((p) => p.name).join(', ')})`);
  return plugin;
}

/**
 * Builds (and so validates: ConfigError naming the key) each configured attestor's server
 * half. Does not contact anything outside the process; k8s_psat may read its kubeconfig file.
 * `plugins` defaults to this build's list (tests extend it).
 */
export function buildServerNodeAttestors(
  configs: readonly NodeAttestorConfig[],
  env: NodeAttestorEnv = {},
  plugins: readonly NodeAttestorPlugin[] = NODE_ATTESTOR_PLUGINS,
): Map<string, ServerNodeAttestor> {
  const out = new Map<string, ServerNodeAttestor>();
  for (const c of configs) {
    const plugin = nodeAttestorPlugin(c.name, plugins);
    out.set(plugin.name, plugin.server(c.data, env));
  }
  return out;
}

/** Builds the configured attestor's agent half (validating its plugin_data). */
export function buildAgentNodeAttestor(
  config: NodeAttestorConfig,
  ctx: AgentNodeAttestorContext,
  plugins: readonly NodeAttestorPlugin[] = NODE_ATTESTOR_PLUGINS,
): AgentNodeAttestor | undefined {
  return nodeAttestorPlugin(config.name, plugins).agent(config.data, ctx);
}

/** k8s_psat as a node attestor plugin: each half reads and validates its own plugin_data. */
import type { NodeAttestorPlugin } from '../types.js';
import { K8sPsatAgentAttestor } from './agent.js';
import { K8S_PSAT } from './payload.js';
import { K8sPsatServerAttestor } from './server.js';

export const k8sPsatPlugin: NodeAttestorPlugin = {
  name: K8S_PSAT,
  server: (data, env) => K8sPsatServerAttestor.fromConfig(data, env),
  agent: (data) => K8sPsatAgentAttestor.fromConfig(data),
};

/** join_token as a node attestor plugin: no plugin_data; the agent half presents the agent's join token. */
import type { NodeAttestorPlugin } from '../types.js';
import { JoinTokenAgentAttestor } from './agent.js';
import { JOIN_TOKEN, JoinTokenServerAttestor } from './server.js';

export const joinTokenPlugin: NodeAttestorPlugin = {
  name: JOIN_TOKEN,
  noPluginData: true,
  usesJoinToken: true,
  server(data) {
    data.throwIfInvalid();
    return new JoinTokenServerAttestor();
  },
  agent(data, ctx) {
    data.throwIfInvalid();
    // Without a token the agent resumes from its data dir (or says it cannot).
    return ctx.joinToken ? new JoinTokenAgentAttestor(ctx.joinToken) : undefined;
  },
};

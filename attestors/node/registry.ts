/** Builds the configured node attestors (server side). */
import type { ConfigReader } from '../../common/configfile.js';
import { JOIN_TOKEN, JoinTokenServerAttestor } from './join_token/server.js';
import type { ServerNodeAttestor } from './types.js';

export interface NodeAttestorConfig {
  name: string;
  data: ConfigReader;
}

export function buildServerNodeAttestors(configs: readonly NodeAttestorConfig[]): Map<string, ServerNodeAttestor> {
  const out = new Map<string, ServerNodeAttestor>();
  for (const c of configs) {
    switch (c.name) {
      case JOIN_TOKEN:
        c.data.throwIfInvalid();
        out.set(JOIN_TOKEN, new JoinTokenServerAttestor());
        break;
      default:
        throw new Error(`node attestor "${c.name}" is not available in this build`);
    }
  }
  return out;
}

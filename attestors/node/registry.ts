/** Builds the configured node attestors (server side). */
import type { ConfigReader } from '../../common/configfile.js';
import { JOIN_TOKEN, JoinTokenServerAttestor } from './join_token/server.js';
import { K8S_PSAT, K8sPsatServerAttestor } from './k8s_psat/server.js';
import type { ServerNodeAttestor } from './types.js';

export interface NodeAttestorConfig {
  name: string;
  data: ConfigReader;
}

/** What attestors may read from outside their config (injected: nothing below main reads process.env). */
export interface NodeAttestorEnv {
  /** The process environment (k8s_psat in-cluster credentials: KUBERNETES_SERVICE_HOST/PORT). */
  env?: Readonly<Record<string, string | undefined>>;
  /** k8s_psat in-cluster service-account mount; default /var/run/secrets/kubernetes.io/serviceaccount. */
  serviceAccountDir?: string;
}

/**
 * Builds (and so validates: ConfigError naming the key) each configured attestor. Does not
 * contact anything outside the process; k8s_psat may read its kubeconfig file.
 */
export function buildServerNodeAttestors(configs: readonly NodeAttestorConfig[], env: NodeAttestorEnv = {}): Map<string, ServerNodeAttestor> {
  const out = new Map<string, ServerNodeAttestor>();
  for (const c of configs) {
    switch (c.name) {
      case JOIN_TOKEN:
        c.data.throwIfInvalid();
        out.set(JOIN_TOKEN, new JoinTokenServerAttestor());
        break;
      case K8S_PSAT:
        out.set(K8S_PSAT, K8sPsatServerAttestor.fromConfig(c.data, env));
        break;
      default:
        throw new Error(`node attestor "${c.name}" is not available in this build`);
    }
  }
  return out;
}

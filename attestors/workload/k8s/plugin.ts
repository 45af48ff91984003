/** k8s as a workload attestor plugin. */
import type { WorkloadAttestorPlugin } from '../types.js';
import { K8S, K8sWorkloadAttestor } from './k8s.js';

export const k8sPlugin: WorkloadAttestorPlugin = {
  name: K8S,
  build: (data, env) =>
    K8sWorkloadAttestor.fromConfig(data, {
      ...(env.procRoot ? { procRoot: env.procRoot } : {}),
      ...(env.env ? { env: env.env } : {}),
      ...(env.now ? { now: env.now } : {}),
      ...(env.sleep ? { sleep: env.sleep } : {}),
      ...(env.logger ? { logger: env.logger.child({ subsystem: 'workload_attestor', attestor: K8S }) } : {}),
    }),
};

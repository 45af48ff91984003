/** unix as a workload attestor plugin. */
import type { WorkloadAttestorPlugin } from '../types.js';
import { UNIX, UnixWorkloadAttestor } from './unix.js';

export const unixPlugin: WorkloadAttestorPlugin = {
  name: UNIX,
  build: (data, env) => UnixWorkloadAttestor.fromConfig(data, { ...(env.procRoot ? { procRoot: env.procRoot } : {}), ...(env.etcRoot ? { etcRoot: env.etcRoot } : {}) }),
};

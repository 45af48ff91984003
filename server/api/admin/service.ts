/** The admin API's service implementations, built from one deps object. */
import type {
  AgentServiceServer,
  BundleServiceServer,
  EntryServiceServer,
  SVIDServiceServer,
  TrustDomainServiceServer,
} from '../../../proto/gen/spindle/admin/v1/admin.js';
import { createAgentService } from './agent.js';
import { createBundleService } from './bundle.js';
import { createEntryService } from './entry.js';
import { createSvidService } from './svid.js';
import { createTrustDomainService } from './trustdomain.js';
import type { AdminDeps } from './types.js';

export interface AdminServices {
  entry: EntryServiceServer;
  agent: AgentServiceServer;
  bundle: BundleServiceServer;
  svid: SVIDServiceServer;
  trustDomain: TrustDomainServiceServer;
}

export function createAdminServices(deps: AdminDeps): AdminServices {
  if (deps.ca.trustDomain !== deps.trustDomain) {
    throw new Error(`admin API: the CA's trust domain "${deps.ca.trustDomain}" differs from the server's "${deps.trustDomain}"`);
  }
  const log = deps.logger.child({ component: 'admin_api' });
  return {
    entry: createEntryService(deps, log),
    agent: createAgentService(deps, log),
    bundle: createBundleService(deps, log),
    svid: createSvidService(deps, log),
    trustDomain: createTrustDomainService(deps, log),
  };
}

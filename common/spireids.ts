/**
 * SPIRE's reserved SPIFFE ID paths, shared by the server (its own SVID, node aliases, the
 * `entry create -node` flag) and the agent (which checks that the server it talks to presents
 * exactly this ID). Kept outside spiffe/ because these are SPIRE conventions, not SPIFFE rules.
 */
import { idFromPath, type SpiffeId, type TrustDomain } from '../spiffe/id.js';

/** The path of the server's own ID; registration entries parented by it are node aliases. */
export const SERVER_ID_PATH = '/spire/server';

/** `spiffe://<td>/spire/server`: the ID in the server's X509-SVID and the parent of node aliases. */
export function serverIdOf(td: TrustDomain): SpiffeId {
  return idFromPath(td, SERVER_ID_PATH);
}

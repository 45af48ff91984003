/**
 * Spindle's Node SDK for SPIFFE workloads (go-spiffe v2's names): `X509Source` (SVIDs and
 * bundles from the Workload API, kept current), authorizers, and TLS options / servers that
 * verify peers the SPIFFE way. Importable as `spindle/spiffe`. See docs/sdk.md.
 */
export { X509Source, type SvidSource, type X509SourceOptions } from './x509source.js';
export {
  authorizeAny,
  authorizeID,
  authorizeMatchesPath,
  authorizeMemberOf,
  authorizeOneOf,
  unauthorized,
  type Authorizer,
} from './authorizer.js';
export * as tlsconfig from './tlsconfig.js';
export {
  createMtlsHttpsServer,
  createMtlsServer,
  createTlsServer,
  mtlsClientOptions,
  mtlsServerOptions,
  peerIdOf,
  tlsClientOptions,
  tlsServerOptions,
} from './tlsconfig.js';
export { ErrorCode, SpiffeError, isSpiffeError } from '../errors.js';
export { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../id.js';
export { createWorkloadApiClient, type WorkloadApiClient } from '../workloadapi/client.js';
export type { WorkloadX509Svid, X509Context } from '../workloadapi/parse.js';

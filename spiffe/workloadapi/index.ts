/**
 * Spindle's Node SDK for the SPIFFE Workload API (go-spiffe's `workloadapi`, in TypeScript).
 * See client.ts for the contract, parse.ts for how responses are decoded, errors.ts for errors.
 */
export {
  DEFAULT_BACKOFF,
  DEFAULT_FATAL_CODES,
  DEFAULT_TIMEOUT_MS,
  ENDPOINT_SOCKET_ENV,
  SECURITY_HEADER,
  WorkloadApiClient,
  createWorkloadApiClient,
  resolveEndpointAddress,
  type CallOptions,
  type JwtSvidParams,
  type Watch,
  type WatchErrorHandler,
  type WatchErrorInfo,
  type WatchOptions,
  type WorkloadApiClientOptions,
} from './client.js';
export { WorkloadApiError, isWorkloadApiError, statusName, type WorkloadApiErrorReason } from './errors.js';
export {
  parseJwtBundlesResponse,
  parseJwtSvidResponse,
  parseValidateJwtSvidResponse,
  parseX509BundlesResponse,
  parseX509SvidResponse,
  type ValidatedWorkloadJwt,
  type WorkloadJwtSvid,
  type WorkloadX509Svid,
  type X509Context,
} from './parse.js';

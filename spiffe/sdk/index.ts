/**
 * Spindle's Node SDK for SPIFFE workloads (go-spiffe v2's names): `X509Source` (SVIDs and
 * bundles from the Workload API, kept current), `JwtSource` (JWT-SVIDs, JWT bundles),
 * `BundleSource` (X.509 and JWT bundles), authorizers, TLS options / servers that verify peers
 * the SPIFFE way (node:tls, https, http2, and gRPC credentials for @grpc/grpc-js), and JWT-SVIDs
 * over HTTP (Bearer headers, request validation, middleware).
 * Importable as `spindle/spiffe`. See docs/sdk.md.
 */
export { X509Source, type SvidSource, type X509SourceOptions } from './x509source.js';
export { DEFAULT_JWT_CACHE_SIZE, JwtSource, type JwtSourceOptions, type JwtSvid, type JwtSvidParams } from './jwtsource.js';
export { BundleSource, type BundleSourceOptions, type BundleUpdate } from './bundlesource.js';
export type { SourceEndpointOptions } from './workload.js';
export {
  bearerTokenOf,
  fastifyJwtSvid,
  isJwtAuthError,
  jwtAuthFailure,
  jwtAuthHeaders,
  jwtSvidMiddleware,
  koaJwtSvid,
  validateJwtFromRequest,
  withJwtSvid,
  type FastifyLikeReply,
  type FastifyLikeRequest,
  type JwtAuthFailure,
  type JwtAuthOptions,
  type JwtMiddlewareOptions,
  type JwtSvidFetcher,
  type KoaLikeContext,
  type RequestWithHeaders,
  type SpiffeJwtAuth,
} from './jwthttp.js';
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
export { connectMtlsHttp2, createMtlsHttp2Server, http2PeerId, type ConnectMtlsHttp2Options } from './http2.js';
export * as grpccredentials from './grpc.js';
export {
  grpcPeerId,
  mtlsClientCredentials,
  mtlsServerCredentials,
  tlsClientCredentials,
  tlsServerCredentials,
  type ClientCredentialsOptions,
  type ServerCredentialsOptions,
} from './grpc.js';
export { ErrorCode, SpiffeError, isSpiffeError } from '../errors.js';
export { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../id.js';
export { MAX_JWT_SVID_LENGTH, validateJwtSvid, type ValidateJwtSvidOptions, type ValidatedJwtSvid } from '../jwtsvid.js';
export type { Bundle, BundleSet } from '../bundle.js';
export type { JwtBundleSource, X509BundleSource } from '../source.js';
export { createWorkloadApiClient, type WorkloadApiClient } from '../workloadapi/client.js';
export type { WorkloadX509Svid, X509Context } from '../workloadapi/parse.js';

/**
 * What the parts of the agent API share (service.ts, auth.ts, attest.ts, sync.ts): the
 * dependencies it is built with, the metrics it reports, the gRPC errors it refuses with, and
 * the server's own bundle as served and as verified against.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { SpiffeId, TrustDomain } from '../../../spiffe/id.js';
import { marshalBundle, type Bundle } from '../../../spiffe/bundle.js';
import type { Bundle as ProtoBundle, X509SVID } from '../../../proto/gen/spindle/types/v1/types.js';
import type { DataStore } from '../../datastore/types.js';
import type { CaSigner, SignedX509Svid } from '../../ca/types.js';
import type { AuthorizationCache } from '../../entries/authcache.js';
import type { ChangeFeed } from '../../entries/feed.js';
import type { ServerNodeAttestor } from '../../../attestors/node/types.js';
import { ApiError } from '../errors.js';
import type { ApiLogger } from '../logger.js';

/** What the agent API counts (implemented by server/metrics.ts); labels are bounded values only. */
export interface AgentApiMetrics {
  x509SvidSigned(kind: 'workload' | 'agent', count?: number): void;
  jwtSvidMinted(): void;
  /** `attestor`: the requested attestor type, or undefined before it is known. */
  nodeAttestation(attestor: string | undefined, result: 'ok' | 'denied' | 'error'): void;
  /** An AttestAgent stream refused with RESOURCE_EXHAUSTED by one of the attestation limits. */
  attestationRefused?(limit: AttestationLimit): void;
}

/** Which limit refused an attestation stream (a metric label). */
export type AttestationLimit = 'in_progress_total' | 'in_progress_per_address';
export const ATTESTATION_LIMITS: readonly AttestationLimit[] = ['in_progress_total', 'in_progress_per_address'];

export const NO_METRICS: AgentApiMetrics = { x509SvidSigned: () => undefined, jwtSvidMinted: () => undefined, nodeAttestation: () => undefined };

export interface AgentApiDeps {
  trustDomain: TrustDomain;
  datastore: DataStore;
  ca: CaSigner;
  attestors: ReadonlyMap<string, ServerNodeAttestor>;
  cache: AuthorizationCache;
  feed: ChangeFeed;
  now: () => Date;
  /** Lifetime of agent SVIDs (config agent_ttl). */
  agentTtlSeconds: number;
  logger: ApiLogger;
  metrics?: AgentApiMetrics;
}

export const denied = (message: string): ApiError => new ApiError(GrpcStatus.PERMISSION_DENIED, message);
export const unauthenticated = (message: string): ApiError => new ApiError(GrpcStatus.UNAUTHENTICATED, message);
export const invalid = (message: string): ApiError => new ApiError(GrpcStatus.INVALID_ARGUMENT, message);

export function svidToProto(id: SpiffeId, s: SignedX509Svid): X509SVID {
  return { spiffeId: id, certChain: s.chain, expiresAt: BigInt(Math.floor(s.notAfter.getTime() / 1000)), serial: s.serialHex };
}

/** Unix seconds of the injected clock. */
export function nowSeconds(now: () => Date): number {
  return Math.floor(now().getTime() / 1000);
}

/**
 * The CA's current bundle and its protobuf form, copied and marshalled once per bundle change:
 * the owner calls `drop()` whenever the CA's bundle changes.
 */
export class OwnBundle {
  readonly #ca: CaSigner;
  #cached: { bundle: Bundle; proto: ProtoBundle } | undefined;

  constructor(ca: CaSigner) {
    this.#ca = ca;
  }

  now(): { bundle: Bundle; proto: ProtoBundle } {
    if (this.#cached === undefined) {
      const b = this.#ca.bundle();
      this.#cached = { bundle: b, proto: { trustDomain: b.trustDomain, document: Buffer.from(marshalBundle(b)), sequence: b.sequence } };
    }
    return this.#cached;
  }

  proto(): ProtoBundle {
    return this.now().proto;
  }

  drop(): void {
    this.#cached = undefined;
  }
}

/**
 * Federation relationship rows, as both backends store them: the column list and the row ->
 * record conversion (last_sequence is a uint64 as decimal text).
 */
import type { TrustDomain } from '../../spiffe/id.js';
import type { BundleEndpointProfile, StoredFederationRelationship } from './types.js';

export const FEDERATION_COLUMNS =
  'trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id, created_at, updated_at, ' +
  'last_attempt_at, last_success_at, last_error, last_sequence';

export type FederationRow = [
  trustDomain: string,
  url: string,
  profile: string,
  endpointSpiffeId: string,
  createdAt: number,
  updatedAt: number,
  lastAttemptAt: number,
  lastSuccessAt: number,
  lastError: string,
  lastSequence: string,
];

export function relationshipFromRow(r: FederationRow): StoredFederationRelationship {
  return {
    trustDomain: r[0] as TrustDomain,
    bundleEndpointUrl: r[1],
    bundleEndpointProfile: r[2] as BundleEndpointProfile,
    endpointSpiffeId: r[3],
    createdAt: Number(r[4]),
    updatedAt: Number(r[5]),
    refresh: { lastAttemptAt: Number(r[6]), lastSuccessAt: Number(r[7]), lastError: r[8], lastSequence: BigInt(r[9]) },
  };
}

/** The values of a full row in FEDERATION_COLUMNS order (for inserts and imports). */
export function relationshipRow(r: StoredFederationRelationship): unknown[] {
  return [
    r.trustDomain,
    r.bundleEndpointUrl,
    r.bundleEndpointProfile,
    r.endpointSpiffeId,
    r.createdAt,
    r.updatedAt,
    r.refresh.lastAttemptAt,
    r.refresh.lastSuccessAt,
    r.refresh.lastError,
    r.refresh.lastSequence.toString(10),
  ];
}

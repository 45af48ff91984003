/**
 * PostgreSQL: federation relationships (one row per foreign trust domain, with the refresher's
 * last result). No change-feed events: agents are served the foreign bundle (bundles), not this.
 * Several servers may record refresh results for one relationship; the last write wins (it is
 * what the last refresh did, whichever server ran it).
 */
import { checkFederationRelationship, checkInt, checkRefreshState, checkString } from '../checks.js';
import { FEDERATION_COLUMNS, relationshipFromRow, relationshipRow, type FederationRow } from '../federationrows.js';
import type { TrustDomain } from '../../../spiffe/id.js';
import { DataStoreError, NO_REFRESH, type FederationRefreshState, type FederationRelationship, type StoredFederationRelationship } from '../types.js';
import type { PostgresConnection } from './connection.js';

type NewRelationship = Omit<FederationRelationship, 'createdAt' | 'updatedAt'>;

export class PostgresFederation {
  constructor(private readonly c: PostgresConnection) {}

  async createFederationRelationship(rel: NewRelationship, now: number): Promise<StoredFederationRelationship> {
    const r = checkFederationRelationship(rel);
    checkInt(now, 'now');
    const stored: StoredFederationRelationship = { ...r, createdAt: now, updatedAt: now, refresh: { ...NO_REFRESH } };
    return this.c.write('create federation relationship', async (q) => {
      const n = await q.exec(
        `INSERT INTO federation_relationships (${FEDERATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (trust_domain) DO NOTHING`,
        relationshipRow(stored),
      );
      if (n === 0) throw new DataStoreError('already_exists', `a federation relationship with trust domain "${r.trustDomain}" already exists`);
      return stored;
    });
  }

  async getFederationRelationship(td: TrustDomain): Promise<StoredFederationRelationship | undefined> {
    checkString(td, 'trust domain');
    return this.c.read('get federation relationship', async (q) => {
      const [row] = await q.rows<FederationRow>(`SELECT ${FEDERATION_COLUMNS} FROM federation_relationships WHERE trust_domain = $1`, [td]);
      return row === undefined ? undefined : relationshipFromRow(row);
    });
  }

  async listFederationRelationships(): Promise<StoredFederationRelationship[]> {
    return this.c.read('list federation relationships', async (q) =>
      (await q.rows<FederationRow>(`SELECT ${FEDERATION_COLUMNS} FROM federation_relationships ORDER BY trust_domain`)).map(relationshipFromRow),
    );
  }

  async updateFederationRelationship(rel: NewRelationship, now: number): Promise<StoredFederationRelationship> {
    const r = checkFederationRelationship(rel);
    checkInt(now, 'now');
    return this.c.write('update federation relationship', async (q) => {
      const [row] = await q.rows<FederationRow>(
        'UPDATE federation_relationships SET bundle_endpoint_url = $1, bundle_endpoint_profile = $2, endpoint_spiffe_id = $3, updated_at = $4 ' +
          `WHERE trust_domain = $5 RETURNING ${FEDERATION_COLUMNS}`,
        [r.bundleEndpointUrl, r.bundleEndpointProfile, r.endpointSpiffeId, now, r.trustDomain],
      );
      if (row === undefined) throw new DataStoreError('not_found', `no federation relationship with trust domain "${r.trustDomain}"`);
      return relationshipFromRow(row);
    });
  }

  async deleteFederationRelationship(td: TrustDomain): Promise<boolean> {
    checkString(td, 'trust domain');
    return this.c.write('delete federation relationship', async (q) => (await q.exec('DELETE FROM federation_relationships WHERE trust_domain = $1', [td])) > 0);
  }

  async setFederationRefreshState(td: TrustDomain, state: FederationRefreshState): Promise<boolean> {
    checkString(td, 'trust domain');
    const s = checkRefreshState(state);
    return this.c.write(
      'set federation refresh state',
      async (q) =>
        (await q.exec('UPDATE federation_relationships SET last_attempt_at = $1, last_success_at = $2, last_error = $3, last_sequence = $4 WHERE trust_domain = $5', [
          s.lastAttemptAt,
          s.lastSuccessAt,
          s.lastError,
          s.lastSequence.toString(10),
          td,
        ])) > 0,
    );
  }
}

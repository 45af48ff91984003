/**
 * SQLite: federation relationships (one row per foreign trust domain, with the refresher's last
 * result). No change-feed events: agents are served the foreign bundle (bundles), not this.
 */
import { checkFederationRelationship, checkInt, checkRefreshState, checkString } from '../checks.js';
import { FEDERATION_COLUMNS, relationshipFromRow, relationshipRow, type FederationRow } from '../federationrows.js';
import type { TrustDomain } from '../../../spiffe/id.js';
import { DataStoreError, NO_REFRESH, type FederationRefreshState, type FederationRelationship, type StoredFederationRelationship } from '../types.js';
import type { SqliteConnection } from './connection.js';

function prepare(c: SqliteConnection) {
  return {
    byTd: c.raw<FederationRow>(`SELECT ${FEDERATION_COLUMNS} FROM federation_relationships WHERE trust_domain = ?`),
    all: c.raw<FederationRow>(`SELECT ${FEDERATION_COLUMNS} FROM federation_relationships ORDER BY trust_domain`),
    insert: c.run(`INSERT INTO federation_relationships (${FEDERATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trust_domain) DO NOTHING`),
    update: c.run(
      'UPDATE federation_relationships SET bundle_endpoint_url = ?, bundle_endpoint_profile = ?, endpoint_spiffe_id = ?, updated_at = ? WHERE trust_domain = ?',
    ),
    remove: c.run('DELETE FROM federation_relationships WHERE trust_domain = ?'),
    setRefresh: c.run(
      'UPDATE federation_relationships SET last_attempt_at = ?, last_success_at = ?, last_error = ?, last_sequence = ? WHERE trust_domain = ?',
    ),
  };
}

export type NewRelationship = Omit<FederationRelationship, 'createdAt' | 'updatedAt'>;

export class SqliteFederation {
  private readonly s;

  constructor(private readonly c: SqliteConnection) {
    this.s = prepare(c);
  }

  async createFederationRelationship(rel: NewRelationship, now: number): Promise<StoredFederationRelationship> {
    const r = checkFederationRelationship(rel);
    checkInt(now, 'now');
    const stored: StoredFederationRelationship = { ...r, createdAt: now, updatedAt: now, refresh: { ...NO_REFRESH } };
    return this.c.write('create federation relationship', () => {
      if (this.s.insert.run(...relationshipRow(stored)).changes === 0) {
        throw new DataStoreError('already_exists', `a federation relationship with trust domain "${r.trustDomain}" already exists`);
      }
      return stored;
    });
  }

  async getFederationRelationship(td: TrustDomain): Promise<StoredFederationRelationship | undefined> {
    checkString(td, 'trust domain');
    return this.c.read('get federation relationship', () => {
      const row = this.s.byTd.get(td);
      return row === undefined ? undefined : relationshipFromRow(row);
    });
  }

  async listFederationRelationships(): Promise<StoredFederationRelationship[]> {
    return this.c.read('list federation relationships', () => this.s.all.all().map(relationshipFromRow));
  }

  async updateFederationRelationship(rel: NewRelationship, now: number): Promise<StoredFederationRelationship> {
    const r = checkFederationRelationship(rel);
    checkInt(now, 'now');
    return this.c.write('update federation relationship', () => {
      if (this.s.update.run(r.bundleEndpointUrl, r.bundleEndpointProfile, r.endpointSpiffeId, now, r.trustDomain).changes === 0) {
        throw new DataStoreError('not_found', `no federation relationship with trust domain "${r.trustDomain}"`);
      }
      return relationshipFromRow(this.s.byTd.get(r.trustDomain)!);
    });
  }

  async deleteFederationRelationship(td: TrustDomain): Promise<boolean> {
    checkString(td, 'trust domain');
    return this.c.write('delete federation relationship', () => this.s.remove.run(td).changes > 0);
  }

  async setFederationRefreshState(td: TrustDomain, state: FederationRefreshState): Promise<boolean> {
    checkString(td, 'trust domain');
    const s = checkRefreshState(state);
    return this.c.write(
      'set federation refresh state',
      () => this.s.setRefresh.run(s.lastAttemptAt, s.lastSuccessAt, s.lastError, s.lastSequence.toString(10), td).changes > 0,
    );
  }

  /** Every relationship (for an export; call inside the export's read transaction). */
  loadAll(): StoredFederationRelationship[] {
    return this.s.all.all().map(relationshipFromRow);
  }
}

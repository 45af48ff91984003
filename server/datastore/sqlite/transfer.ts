/**
 * SQLite: exporting every record for a move to another backend (types.ts RecordExporter; the
 * source side of `spindle-server datastore migrate`, usually on a read-only connection). One read
 * transaction, so entries, nodes, join tokens (by hash), bundles (with their update times),
 * the CA journal and the federation relationships are one consistent snapshot. The change feed is not exported.
 */
import type { TrustDomain } from '../../../spiffe/id.js';
import type { DataStoreRecords, ExportedBundle, JoinToken, RecordCounts } from '../types.js';
import type { SqliteConnection } from './connection.js';
import type { SqliteEntries } from './entries.js';
import type { SqliteFederation } from './federation.js';
import type { SqliteNodes } from './nodes.js';

function prepare(c: SqliteConnection) {
  return {
    allJoinTokens: c.raw<[hash: string, expiresAt: number]>('SELECT hash, expires_at FROM join_tokens ORDER BY hash'),
    allBundles: c.raw<[trustDomain: string, document: string, sequence: string, updatedAt: number]>(
      'SELECT trust_domain, document, sequence, updated_at FROM bundles ORDER BY trust_domain',
    ),
    caJournals: c.raw<[serverId: string, document: string]>('SELECT server_id, document FROM ca_journal ORDER BY server_id'),
    counts: c.raw<[entries: number, nodes: number, joinTokens: number, bundles: number, caJournal: number, federationRelationships: number]>(
      'SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM attested_nodes), (SELECT count(*) FROM join_tokens), ' +
        '(SELECT count(*) FROM bundles), (SELECT count(*) FROM ca_journal), (SELECT count(*) FROM federation_relationships)',
    ),
  };
}

export class SqliteTransfer {
  private readonly s;

  constructor(
    private readonly c: SqliteConnection,
    private readonly entries: SqliteEntries,
    private readonly nodes: SqliteNodes,
    private readonly federation: SqliteFederation,
  ) {
    this.s = prepare(c);
  }

  async exportRecords(): Promise<DataStoreRecords> {
    return this.c.read(
      'export records',
      () => ({
        entries: this.entries.loadAll(),
        nodes: this.nodes.loadAll(),
        joinTokens: this.s.allJoinTokens.all().map(([hash, expiresAt]): JoinToken => ({ hash, expiresAt })),
        bundles: this.s.allBundles.all().map(
          ([trustDomain, document, sequence, updatedAt]): ExportedBundle => ({ trustDomain: trustDomain as TrustDomain, document, sequence: BigInt(sequence), updatedAt }),
        ),
        caJournals: this.s.caJournals.all().map(([serverId, document]) => ({ serverId, document })),
        federationRelationships: this.federation.loadAll(),
      }),
      true,
    );
  }

  async countRecords(): Promise<RecordCounts> {
    return this.c.read('count records', () => {
      const [entries, nodes, joinTokens, bundles, caJournals, federationRelationships] = this.s.counts.get()!;
      return { entries, nodes, joinTokens, bundles, caJournals, federationRelationships };
    });
  }
}

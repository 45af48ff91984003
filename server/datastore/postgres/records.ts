/**
 * PostgreSQL: the small record kinds. Join tokens (by hash only; consuming one is a single
 * `DELETE ... RETURNING`, which PostgreSQL makes atomic on its own: of N concurrent consumers on
 * any number of servers exactly one gets the row, the others wait for its lock and find it
 * gone), trust bundles (every change a change-feed event; sequence a uint64 as decimal text),
 * the CA journals (one opaque JSON document per server), reading and pruning the change feed, and
 * checkIntegrity.
 */
import type { TrustDomain } from '../../../spiffe/id.js';
import { checkBundle, checkBundleUpdate, checkCaJournal, checkCaServerId, checkInt, checkJoinToken, checkNonNegativeInt, checkString, invalid } from '../checks.js';
import { DataStoreError, type BundleUpdate, type ChangeEvent, type ChangeKind, type ExportedCaJournal, type JoinToken, type StoredBundle } from '../types.js';
import type { PostgresConnection, Queryable } from './connection.js';

type BundleRow = [trustDomain: string, document: string, sequence: string];

function bundleFromRow(r: BundleRow): StoredBundle {
  return { trustDomain: r[0] as TrustDomain, document: r[1], sequence: BigInt(r[2]) };
}

export class PostgresRecords {
  constructor(private readonly c: PostgresConnection) {}

  async createJoinToken(token: JoinToken): Promise<void> {
    const { hash, expiresAt } = checkJoinToken(token);
    await this.c.write('create join token', async (q) => {
      const inserted = await q.exec('INSERT INTO join_tokens (hash, expires_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING', [hash, expiresAt]);
      if (inserted === 0) throw new DataStoreError('already_exists', 'a join token with this hash already exists');
    });
  }

  async consumeJoinToken(hash: string): Promise<JoinToken | undefined> {
    checkString(hash, 'join token hash');
    return this.c.write('consume join token', async (q) => {
      const [row] = await q.rows<[string, number]>('DELETE FROM join_tokens WHERE hash = $1 RETURNING hash, expires_at', [hash]);
      return row === undefined ? undefined : { hash: row[0], expiresAt: row[1] };
    });
  }

  async pruneJoinTokens(expiredBefore: number): Promise<number> {
    checkInt(expiredBefore, 'expiredBefore');
    return this.c.write('prune join tokens', (q) => q.exec('DELETE FROM join_tokens WHERE expires_at < $1', [expiredBefore]));
  }

  async getBundle(td: TrustDomain): Promise<StoredBundle | undefined> {
    checkString(td, 'trust domain');
    return this.c.read('get bundle', async (q) => {
      const [row] = await q.rows<BundleRow>('SELECT trust_domain, document, sequence FROM bundles WHERE trust_domain = $1', [td]);
      return row === undefined ? undefined : bundleFromRow(row);
    });
  }

  async listBundles(): Promise<StoredBundle[]> {
    return this.c.read('list bundles', async (q) => (await q.rows<BundleRow>('SELECT trust_domain, document, sequence FROM bundles ORDER BY trust_domain')).map(bundleFromRow));
  }

  async setBundle(bundle: StoredBundle, now: number): Promise<void> {
    const { trustDomain, document, sequence } = checkBundle(bundle);
    checkInt(now, 'now');
    await this.c.write('set bundle', async (q, emit) => {
      await q.exec(
        'INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES ($1, $2, $3, $4) ' +
          'ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence, updated_at = excluded.updated_at',
        [trustDomain, document, sequence.toString(10), now],
      );
      await emit('bundle_updated', trustDomain, now);
    });
  }

  /** Under the write lock (connection.ts), so the read below cannot be raced by another server's write. */
  async updateBundle(td: TrustDomain, update: (current: StoredBundle | undefined) => BundleUpdate, now: number): Promise<StoredBundle | undefined> {
    checkString(td, 'trust domain');
    checkInt(now, 'now');
    if (typeof update !== 'function') throw invalid('bundle update must be a function');
    return this.c.write('update bundle', async (q, emit) => {
      const [row] = await q.rows<BundleRow>('SELECT trust_domain, document, sequence FROM bundles WHERE trust_domain = $1', [td]);
      const current = row === undefined ? undefined : bundleFromRow(row);
      const u = checkBundleUpdate(td, update(current), current);
      if (u.caJournal !== undefined) await this.upsertCaJournal(q, u.caJournal.serverId, u.caJournal.document);
      if (u.bundle === undefined) return current;
      await q.exec(
        'INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES ($1, $2, $3, $4) ' +
          'ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence, updated_at = excluded.updated_at',
        [td, u.bundle.document, u.bundle.sequence.toString(10), now],
      );
      await emit('bundle_updated', td, now);
      return u.bundle;
    });
  }

  async deleteBundle(td: TrustDomain, now: number): Promise<boolean> {
    checkString(td, 'trust domain');
    checkInt(now, 'now');
    return this.c.write('delete bundle', async (q, emit) => {
      if ((await q.exec('DELETE FROM bundles WHERE trust_domain = $1', [td])) === 0) return false;
      await emit('bundle_deleted', td, now);
      return true;
    });
  }

  async getCaJournal(serverId?: string): Promise<string | undefined> {
    const id = checkCaServerId(serverId);
    return this.c.read('get CA journal', async (q) => (await q.rows<[string]>('SELECT document FROM ca_journal WHERE server_id = $1', [id]))[0]?.[0]);
  }

  async setCaJournal(json: string, serverId?: string): Promise<void> {
    checkCaJournal(json);
    const id = checkCaServerId(serverId);
    await this.c.write('set CA journal', (q) => this.upsertCaJournal(q, id, json));
  }

  async adoptCaJournal(from: string, to: string): Promise<boolean> {
    const f = checkCaServerId(from);
    const t = checkCaServerId(to);
    if (f === t) return false;
    return this.c.write('adopt CA journal', async (q) =>
      (await q.exec('UPDATE ca_journal SET server_id = $1 WHERE server_id = $2 AND NOT EXISTS (SELECT 1 FROM ca_journal WHERE server_id = $1)', [t, f])) > 0,
    );
  }

  async listCaJournals(): Promise<ExportedCaJournal[]> {
    return this.c.read('list CA journals', async (q) =>
      (await q.rows<[string, string]>('SELECT server_id, document FROM ca_journal ORDER BY server_id')).map(([serverId, document]) => ({ serverId, document })),
    );
  }

  private async upsertCaJournal(q: Queryable, serverId: string, json: string): Promise<void> {
    await q.exec('INSERT INTO ca_journal (server_id, document) VALUES ($1, $2) ON CONFLICT (server_id) DO UPDATE SET document = excluded.document', [serverId, json]);
  }

  async listEventsSince(after: number, limit: number): Promise<ChangeEvent[]> {
    checkInt(after, 'after');
    checkNonNegativeInt(limit, 'limit');
    if (limit === 0) return [];
    return this.c.read('list events', async (q) =>
      (await q.rows<[number, ChangeKind, string, number]>('SELECT id, kind, key, at FROM events WHERE id > $1 ORDER BY id LIMIT $2', [after, limit])).map(
        ([id, kind, key, at]) => ({ id, kind, key, at }),
      ),
    );
  }

  async latestEventId(): Promise<number> {
    return this.c.read('latest event id', async (q) => (await q.rows<[number]>('SELECT coalesce(max(id), 0) FROM events'))[0]?.[0] ?? 0);
  }

  async pruneEvents(before: number): Promise<number> {
    checkInt(before, 'before');
    return this.c.write('prune events', (q) => q.exec('DELETE FROM events WHERE at < $1 AND id < (SELECT coalesce(max(id), 0) FROM events)', [before]));
  }

  /** The cached child counts compared with the child rows, in one snapshot (PostgreSQL checks its own structures itself). */
  async checkIntegrity(): Promise<string> {
    return this.c.read(
      'check integrity',
      async (q) => {
        const rows = await q.rows<[string, string, string, number, number]>(
          'SELECT * FROM (' +
            "SELECT 'entry' AS kind, e.id AS key, 'selectors' AS what, e.selector_count AS recorded, " +
            '(SELECT count(*) FROM entry_selectors s WHERE s.entry_pk = e.pk)::integer AS actual FROM entries e ' +
            "UNION ALL SELECT 'entry', e.id, 'federatesWith', e.federates_count, " +
            '(SELECT count(*) FROM entry_federates_with f WHERE f.entry_pk = e.pk)::integer FROM entries e ' +
            "UNION ALL SELECT 'node', n.spiffe_id, 'selectors', n.selector_count, " +
            '(SELECT count(*) FROM node_selectors s WHERE s.spiffe_id = n.spiffe_id)::integer FROM attested_nodes n' +
            ') c WHERE recorded <> actual LIMIT 100',
        );
        return rows.map(([kind, key, what, recorded, actual]) => `${kind} ${JSON.stringify(key)}: ${recorded} ${what} recorded but ${actual} rows`).join('\n');
      },
      true,
    );
  }
}

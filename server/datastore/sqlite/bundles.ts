/**
 * SQLite: trust bundles (our own and federated ones, keyed by trust domain; every change is a
 * change-feed event) and the CA journals (one opaque JSON document per server). bundles.sequence is a uint64
 * held as a decimal string: SQLite's INTEGER is signed 64-bit.
 */
import { checkBundle, checkBundleUpdate, checkCaJournal, checkCaServerId, checkInt, checkString, invalid } from '../checks.js';
import type { TrustDomain } from '../../../spiffe/id.js';
import type { BundleUpdate, ExportedCaJournal, StoredBundle } from '../types.js';
import type { SqliteConnection } from './connection.js';

type BundleRow = [trustDomain: string, document: string, sequence: string];

function prepare(c: SqliteConnection) {
  return {
    bundleByTd: c.raw<BundleRow>('SELECT trust_domain, document, sequence FROM bundles WHERE trust_domain = ?'),
    allBundles: c.raw<BundleRow>('SELECT trust_domain, document, sequence FROM bundles ORDER BY trust_domain'),
    upsertBundle: c.run(
      'INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES (?, ?, ?, ?) ' +
        'ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence, ' +
        'updated_at = excluded.updated_at',
    ),
    deleteBundle: c.run('DELETE FROM bundles WHERE trust_domain = ?'),
    getCaJournal: c.pluck<string>('SELECT document FROM ca_journal WHERE server_id = ?'),
    setCaJournal: c.run(
      'INSERT INTO ca_journal (server_id, document) VALUES (?, ?) ON CONFLICT (server_id) DO UPDATE SET document = excluded.document',
    ),
    allCaJournals: c.raw<[serverId: string, document: string]>('SELECT server_id, document FROM ca_journal ORDER BY server_id'),
    adoptCaJournal: c.run(
      'UPDATE ca_journal SET server_id = ? WHERE server_id = ? AND NOT EXISTS (SELECT 1 FROM ca_journal WHERE server_id = ?)',
    ),
  };
}

function bundleFromRow(r: BundleRow): StoredBundle {
  return { trustDomain: r[0] as TrustDomain, document: r[1], sequence: BigInt(r[2]) };
}

export class SqliteBundles {
  private readonly s;

  constructor(private readonly c: SqliteConnection) {
    this.s = prepare(c);
  }

  async getBundle(td: TrustDomain): Promise<StoredBundle | undefined> {
    checkString(td, 'trust domain');
    return this.c.read('get bundle', () => {
      const row = this.s.bundleByTd.get(td);
      return row === undefined ? undefined : bundleFromRow(row);
    });
  }

  async listBundles(): Promise<StoredBundle[]> {
    return this.c.read('list bundles', () => this.s.allBundles.all().map(bundleFromRow));
  }

  async setBundle(bundle: StoredBundle, now: number): Promise<void> {
    const { trustDomain, document, sequence } = checkBundle(bundle);
    checkInt(now, 'now');
    this.c.write('set bundle', (emit) => {
      this.s.upsertBundle.run(trustDomain, document, sequence.toString(10), now);
      emit('bundle_updated', trustDomain, now);
    });
  }

  async updateBundle(td: TrustDomain, update: (current: StoredBundle | undefined) => BundleUpdate, now: number): Promise<StoredBundle | undefined> {
    checkString(td, 'trust domain');
    checkInt(now, 'now');
    if (typeof update !== 'function') throw invalid('bundle update must be a function');
    return this.c.write('update bundle', (emit) => {
      const row = this.s.bundleByTd.get(td);
      const current = row === undefined ? undefined : bundleFromRow(row);
      const u = checkBundleUpdate(td, update(current), current);
      if (u.caJournal !== undefined) this.s.setCaJournal.run(u.caJournal.serverId, u.caJournal.document);
      if (u.bundle === undefined) return current;
      this.s.upsertBundle.run(td, u.bundle.document, u.bundle.sequence.toString(10), now);
      emit('bundle_updated', td, now);
      return u.bundle;
    });
  }

  async deleteBundle(td: TrustDomain, now: number): Promise<boolean> {
    checkString(td, 'trust domain');
    checkInt(now, 'now');
    return this.c.write('delete bundle', (emit) => {
      if (this.s.deleteBundle.run(td).changes === 0) return false;
      emit('bundle_deleted', td, now);
      return true;
    });
  }

  async getCaJournal(serverId?: string): Promise<string | undefined> {
    const id = checkCaServerId(serverId);
    return this.c.read('get CA journal', () => this.s.getCaJournal.get(id));
  }

  async setCaJournal(json: string, serverId?: string): Promise<void> {
    checkCaJournal(json);
    const id = checkCaServerId(serverId);
    this.c.write('set CA journal', () => {
      this.s.setCaJournal.run(id, json);
    });
  }

  async adoptCaJournal(from: string, to: string): Promise<boolean> {
    const f = checkCaServerId(from);
    const t = checkCaServerId(to);
    if (f === t) return false;
    return this.c.write('adopt CA journal', () => this.s.adoptCaJournal.run(t, f, t).changes > 0);
  }

  async listCaJournals(): Promise<ExportedCaJournal[]> {
    return this.c.read('list CA journals', () => this.s.allCaJournals.all().map(([serverId, document]) => ({ serverId, document })));
  }
}

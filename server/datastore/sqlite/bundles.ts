/**
 * SQLite: trust bundles (our own and federated ones, keyed by trust domain; every change is a
 * change-feed event) and the CA journal (one opaque JSON document). bundles.sequence is a uint64
 * held as a decimal string: SQLite's INTEGER is signed 64-bit.
 */
import { checkBundle, checkCaJournal, checkInt, checkString } from '../checks.js';
import type { TrustDomain } from '../../../spiffe/id.js';
import type { StoredBundle } from '../types.js';
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
    getCaJournal: c.pluck<string>('SELECT document FROM ca_journal WHERE id = 1'),
    setCaJournal: c.run(
      'INSERT INTO ca_journal (id, document) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET document = excluded.document',
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

  async deleteBundle(td: TrustDomain, now: number): Promise<boolean> {
    checkString(td, 'trust domain');
    checkInt(now, 'now');
    return this.c.write('delete bundle', (emit) => {
      if (this.s.deleteBundle.run(td).changes === 0) return false;
      emit('bundle_deleted', td, now);
      return true;
    });
  }

  async getCaJournal(): Promise<string | undefined> {
    return this.c.read('get CA journal', () => this.s.getCaJournal.get());
  }

  async setCaJournal(json: string): Promise<void> {
    checkCaJournal(json);
    this.c.write('set CA journal', () => {
      this.s.setCaJournal.run(json);
    });
  }
}

/**
 * Seeds a server's datastore directly through our datastore module (the server must not be
 * running): the same rows, events and invariants the admin API would produce, written in
 * large batches so 100k entries take seconds, not minutes. SQLite: the server's file;
 * PostgreSQL: the database its connection string names (each batch is one set-wise insert).
 */
import type { DataStore, NewEntry } from '../../server/datastore/types.js';
import { parseSpiffeId } from '../../spiffe/id.js';
import { openTestDataStore, openTestPostgresDataStore } from '../../test/support/datastore.js';
import { entryWithDefaults } from '../../test/support/entries.js';

const SEED_BATCH = 5000;

/**
 * Creates `total` entries spread round-robin over `parentIds` (each entry: its own SPIFFE ID,
 * selector unix:uid:<n % 1000>) in the SQLite file at `dbPath`. Returns the number created.
 */
export async function seedEntries(dbPath: string, trustDomain: string, parentIds: readonly string[], total: number): Promise<number> {
  return seedInto(await openTestDataStore(dbPath), trustDomain, parentIds, total);
}

/** The same entries in the PostgreSQL database at `connectionString`. */
export async function seedEntriesPostgres(connectionString: string, trustDomain: string, parentIds: readonly string[], total: number): Promise<number> {
  return seedInto(await openTestPostgresDataStore(connectionString), trustDomain, parentIds, total);
}

/** Creates the entries in `ds` and closes it. */
async function seedInto(ds: DataStore, trustDomain: string, parentIds: readonly string[], total: number): Promise<number> {
  const parents = parentIds.map((p) => parseSpiffeId(p));
  const now = Math.floor(Date.now() / 1000);
  let created = 0;
  try {
    for (let start = 0; start < total; start += SEED_BATCH) {
      const batch: NewEntry[] = [];
      for (let i = start; i < Math.min(total, start + SEED_BATCH); i++) {
        batch.push(
          entryWithDefaults({
            spiffeId: parseSpiffeId(`spiffe://${trustDomain}/seed/w${i}`),
            parentId: parents[i % parents.length]!,
            selectors: [{ type: 'unix', value: `uid:${i % 1000}` }],
          }),
        );
      }
      const results = await ds.createEntries(batch, now);
      for (const r of results) {
        if ('error' in r) throw r.error;
        created++;
      }
    }
  } finally {
    await ds.close();
  }
  return created;
}

// The datastore contract (contract.ts) run against the PostgreSQL backend, opened through the
// server's factory, one fresh database per store on the test process's private cluster
// (test/support/postgres.ts).
import type { DataStore } from '../../server/datastore/types.js';
import { openTestPostgresDataStore } from '../support/datastore.js';
import { postgresCluster } from '../support/postgres.js';
import { datastoreContract } from './contract.js';

const uris = new WeakMap<DataStore, string>();

async function openAt(uri: string): Promise<DataStore> {
  const store = await openTestPostgresDataStore(uri);
  uris.set(store, uri);
  return store;
}

datastoreContract(
  'postgres',
  async () => {
    const cluster = await postgresCluster();
    return openAt(cluster.uri(await cluster.createDatabase()));
  },
  (store) => {
    const uri = uris.get(store);
    if (uri === undefined) throw new Error('reopen: the store was not opened by this runner');
    return openAt(uri);
  },
);

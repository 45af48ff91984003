/**
 * Datastores for tests, opened through the server's factory (server/datastore/factory.ts) like
 * the server opens its own: the SQLite backend on a file at `path`.
 */
import type { DataStoreConfig } from '../../server/config/config.js';
import { openDataStore, type OpenDataStoreOptions } from '../../server/datastore/factory.js';
import type { DataStore } from '../../server/datastore/types.js';

/** The server config's DataStore section for a SQLite file at `path`. */
export function sqliteDataStoreConfig(path: string): DataStoreConfig {
  return { name: 'sql', databaseType: 'sqlite3', connectionString: path };
}

/** Opens (creating and migrating if needed) a SQLite datastore at `path`, through the factory. */
export function openTestDataStore(path: string, options?: OpenDataStoreOptions): Promise<DataStore> {
  return openDataStore(sqliteDataStoreConfig(path), options);
}

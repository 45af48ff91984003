/**
 * Datastores for tests, opened through the server's factory (server/datastore/factory.ts) like
 * the server opens its own: the SQLite backend on a file at `path`, or PostgreSQL (a database
 * of test/support/postgres.ts's cluster).
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

/** The server config's DataStore section for PostgreSQL at `connectionString` (idle connections closed at once: many stores share one test cluster). */
export function postgresDataStoreConfig(connectionString: string, extra: Partial<DataStoreConfig> = {}): DataStoreConfig {
  return { name: 'sql', databaseType: 'postgres', connectionString, maxIdleConns: 0, ...extra };
}

/** Opens (creating the schema if needed) a PostgreSQL datastore, through the factory. */
export function openTestPostgresDataStore(connectionString: string, options?: OpenDataStoreOptions, extra?: Partial<DataStoreConfig>): Promise<DataStore> {
  return openDataStore(postgresDataStoreConfig(connectionString, extra), options);
}

/**
 * The one place a datastore backend is chosen and opened: from the server config's DataStore
 * plugin (SPIRE's `DataStore "sql" { plugin_data { database_type = "sqlite3" ... } }`). The rest
 * of the server holds a `DataStore` (types.ts) and never names a backend. Backends: sqlite3
 * (sqlite/, the default) and postgres (postgres/: several servers on one database).
 *
 * Adding a backend: implement DataStore in a folder beside sqlite/ (reusing checks.ts, filters.ts,
 * paging.ts and ids.ts), add its opener to BACKENDS under its database_type, accept that type in
 * server/config/config.ts, and run the contract tests (test/datastore/contract.ts) against it.
 */
import type { DataStoreConfig } from '../config/config.js';
import { openSqliteDataStore } from './sqlite/store.js';
import { DataStoreError, type DataStore, type DataStoreLogger } from './types.js';

export interface OpenDataStoreOptions {
  logger?: DataStoreLogger;
}

type Opener = (config: DataStoreConfig, options: OpenDataStoreOptions) => Promise<DataStore>;

/** Backends of the "sql" plugin, by database_type. */
const BACKENDS: Readonly<Record<string, Opener>> = {
  // connection_string is the database file's path (config.ts resolved it).
  sqlite3: async (config, { logger }) => openSqliteDataStore(logger === undefined ? { path: config.connectionString } : { path: config.connectionString, logger }),
  // Several servers may share one PostgreSQL database (postgres/store.ts). Loaded on use, so a
  // server on SQLite never loads the PostgreSQL driver.
  postgres: async (config, { logger }) =>
    (await import('./postgres/store.js')).openPostgresDataStore({
      connectionString: config.connectionString,
      ...(config.roConnectionString === undefined ? {} : { roConnectionString: config.roConnectionString }),
      ...(config.maxOpenConns === undefined ? {} : { maxOpenConns: config.maxOpenConns }),
      ...(config.maxIdleConns === undefined ? {} : { maxIdleConns: config.maxIdleConns }),
      ...(config.connMaxLifetime === undefined ? {} : { connMaxLifetime: config.connMaxLifetime }),
      ...(config.disableMigration === undefined ? {} : { disableMigration: config.disableMigration }),
      ...(logger === undefined ? {} : { logger }),
    }),
};

/** Opens (creating and migrating if needed) the datastore the config names. */
export async function openDataStore(config: DataStoreConfig, options: OpenDataStoreOptions = {}): Promise<DataStore> {
  const open = config.name === 'sql' && Object.hasOwn(BACKENDS, config.databaseType) ? BACKENDS[config.databaseType] : undefined;
  if (open === undefined) {
    throw new DataStoreError(
      'invalid',
      `no datastore backend for DataStore ${JSON.stringify(config.name)} with database_type ${JSON.stringify(config.databaseType)}; ` +
        `the "sql" plugin supports database_type ${Object.keys(BACKENDS).join(', ')}`,
    );
  }
  return open(config, options);
}

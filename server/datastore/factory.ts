/**
 * The one place a datastore backend is chosen and opened: from the server config's DataStore
 * plugin (SPIRE's `DataStore "sql" { plugin_data { database_type = "sqlite3" ... } }`). The rest
 * of the server holds a `DataStore` (types.ts) and never names a backend. Backends: sqlite3
 * (sqlite/, the default) and postgres (postgres/: several servers on one database).
 *
 * Adding a backend: implement DataStore in a folder beside sqlite/ (reusing checks.ts, filters.ts,
 * paging.ts and ids.ts), add its opener to BACKENDS under its database_type, accept that type in
 * server/config/config.ts, and run the contract tests (test/datastore/contract.ts) against it.
 *
 * Moving a deployment between backends (`spindle-server datastore migrate`) opens a source with
 * openRecordSource (read-only where the backend can: SQLite) and a target with openRecordTarget;
 * the record export / import they add to DataStore is described in types.ts (RecordExporter,
 * RecordImporter).
 */
import type { DataStoreConfig } from '../config/config.js';
import { openSqliteDataStore } from './sqlite/store.js';
import { DataStoreError, type DataStore, type DataStoreLogger, type RecordExporter, type RecordImporter } from './types.js';

export interface OpenDataStoreOptions {
  logger?: DataStoreLogger;
}

type Opener = (config: DataStoreConfig, options: OpenDataStoreOptions) => Promise<DataStore & RecordExporter>;

/** Backends of the "sql" plugin, by database_type. */
const BACKENDS: Readonly<Record<string, Opener>> = {
  // connection_string is the database file's path (config.ts resolved it).
  sqlite3: async (config, { logger }) => openSqliteDataStore(logger === undefined ? { path: config.connectionString } : { path: config.connectionString, logger }),
  // Several servers may share one PostgreSQL database (postgres/store.ts). Loaded on use, so a
  // server on SQLite never loads the PostgreSQL driver.
  postgres: (config, options) => openPostgres(config, options),
};

async function openPostgres(config: DataStoreConfig, { logger }: OpenDataStoreOptions, queryTimeoutMs?: number): Promise<DataStore & RecordExporter & RecordImporter> {
  return (await import('./postgres/store.js')).openPostgresDataStore({
    ...(queryTimeoutMs === undefined ? {} : { queryTimeoutMs }),
    connectionString: config.connectionString,
    ...(config.roConnectionString === undefined ? {} : { roConnectionString: config.roConnectionString }),
    ...(config.maxOpenConns === undefined ? {} : { maxOpenConns: config.maxOpenConns }),
    ...(config.maxIdleConns === undefined ? {} : { maxIdleConns: config.maxIdleConns }),
    ...(config.connMaxLifetime === undefined ? {} : { connMaxLifetime: config.connMaxLifetime }),
    ...(config.disableMigration === undefined ? {} : { disableMigration: config.disableMigration }),
    ...(logger === undefined ? {} : { logger }),
  });
}

/** Opens (creating and migrating if needed) the datastore the config names. */
export async function openDataStore(config: DataStoreConfig, options: OpenDataStoreOptions = {}): Promise<DataStore & RecordExporter> {
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

/**
 * Opens the datastore the config names to export its records: a SQLite file read-only (it must
 * exist and be a Spindle datastore of this version; nothing in it is created, migrated or
 * written, sqlite/connection.ts), PostgreSQL as usual.
 */
export async function openRecordSource(config: DataStoreConfig, options: OpenDataStoreOptions = {}): Promise<DataStore & RecordExporter> {
  if (config.name === 'sql' && config.databaseType === 'sqlite3') {
    return openSqliteDataStore({ path: config.connectionString, readOnly: true, ...(options.logger === undefined ? {} : { logger: options.logger }) });
  }
  return openDataStore(config, options);
}

/**
 * Opens (creating the schema if needed) the datastore the config names to import records into:
 * PostgreSQL only, without the running server's statement timeout (a large import's statements
 * may take longer than a server's ever do).
 */
export async function openRecordTarget(config: DataStoreConfig, options: OpenDataStoreOptions = {}): Promise<DataStore & RecordExporter & RecordImporter> {
  if (config.name !== 'sql' || config.databaseType !== 'postgres') {
    throw new DataStoreError('invalid', `records can be imported into a DataStore "sql" with database_type "postgres" only, not ${JSON.stringify(config.databaseType)}`);
  }
  return openPostgres(config, options, 0);
}

/**
 * The datastore the config names, in words for messages (a SQLite file's path; PostgreSQL's
 * host, port, database and user, never its password), and the secrets of its connection string
 * (to scrub from any text shown). Throws DataStoreError('invalid') for a malformed connection string.
 */
export async function describeDataStore(config: DataStoreConfig): Promise<{ description: string; secrets: string[] }> {
  if (config.databaseType === 'postgres') {
    const { description, secrets } = (await import('./postgres/connstring.js')).describeConnectionString(config.connectionString);
    return { description: `PostgreSQL (${description})`, secrets };
  }
  return { description: config.connectionString, secrets: [] };
}


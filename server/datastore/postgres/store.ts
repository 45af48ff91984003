/**
 * The PostgreSQL DataStore (../types.ts is the contract), over node-postgres (pg): several
 * Spindle servers may share one database. Opens the pool (connection.ts), migrates the schema
 * under an advisory lock (migrations.ts) and builds the store from one part per record kind
 * (../facade.ts forwards each method to its part):
 *
 *   connstring.ts   connection_string / ro_connection_string (URI or libpq keyword/value)
 *   connection.ts   the pool, write/read transactions, the write lock, onChange + LISTEN/NOTIFY
 *   migrations.ts   the schema, as append-only migrations, and the runner
 *   encoding.ts     the persisted text forms (selector sets) and the entry identity hash
 *   filters.ts      checked filters -> SQL
 *   entries.ts, nodes.ts, records.ts (join tokens, bundles, CA journal, events, integrity), federation.ts
 *   transfer.ts     every record exported in one snapshot / imported in one transaction
 *
 * What is not PostgreSQL's (argument checks, filter semantics, page tokens, entry IDs) lives one
 * folder up, shared with the SQLite backend; test/datastore/contract.ts runs on both.
 */
import { describe, invalid } from '../checks.js';
import { PartsDataStore } from '../facade.js';
import type { DataStore, DataStoreLogger, DataStoreRecords, RecordCounts, RecordExporter, RecordImporter } from '../types.js';
import { PostgresConnection } from './connection.js';
import { normalizeConnectionString } from './connstring.js';
import { PostgresEntries } from './entries.js';
import { PostgresFederation } from './federation.js';
import { migrate } from './migrations.js';
import { PostgresNodes } from './nodes.js';
import { PostgresRecords } from './records.js';
import { PostgresTransfer } from './transfer.js';

export interface PostgresDataStoreOptions {
  /** libpq URI or keyword/value string (connstring.ts). */
  connectionString: string;
  /**
   * A read-only replica for reads that may lag: only those a caller marks `mayLag` (admin list
   * and count pages, gauges) go there, over a second pool with the same settings. Writes, reads
   * inside writes, the change feed and everything authorization depends on use connection_string.
   */
  roConnectionString?: string;
  /** Most connections open at once (0: the driver's default, 10). */
  maxOpenConns?: number;
  /** 0: idle connections close at once; otherwise after 30 s idle. */
  maxIdleConns?: number;
  /** Seconds a connection is used before it is replaced (0: no limit). */
  connMaxLifetime?: number;
  /** Do not migrate; refuse a schema that is not exactly this code's version. */
  disableMigration?: boolean;
  logger?: DataStoreLogger;
  /** Catch-up poll of the change feed in milliseconds (default 5000). */
  pollMs?: number;
  /** Client-side statement timeout in ms (default QUERY_TIMEOUT_MS, 15 s; 0: none, for `datastore migrate`). */
  queryTimeoutMs?: number;
}

function nonNegative(v: unknown, key: string): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid(`DataStore "sql" ${key} must be a non-negative integer, got ${describe(v)}`);
  return v;
}

export type PostgresDataStore = DataStore & RecordExporter & RecordImporter;

/** Opens (migrating unless disabled) the PostgreSQL datastore the connection string names. */
export async function openPostgresDataStore(options: PostgresDataStoreOptions): Promise<PostgresDataStore> {
  if (typeof options !== 'object' || options === null) throw invalid('postgres datastore options must be an object');
  const uri = normalizeConnectionString(options.connectionString, 'connection_string');
  const roUri =
    options.roConnectionString !== undefined && options.roConnectionString !== '' ? normalizeConnectionString(options.roConnectionString, 'ro_connection_string') : undefined;
  const settings = {
    uri,
    roUri,
    ...(options.queryTimeoutMs === undefined ? {} : { queryTimeoutMs: nonNegative(options.queryTimeoutMs, 'query timeout') }),
    maxOpenConns: nonNegative(options.maxOpenConns, 'max_open_conns'),
    maxIdleConns: options.maxIdleConns === undefined ? undefined : nonNegative(options.maxIdleConns, 'max_idle_conns'),
    connMaxLifetime: nonNegative(options.connMaxLifetime, 'conn_max_lifetime'),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.pollMs === undefined ? {} : { pollMs: options.pollMs }),
  };
  const conn = await PostgresConnection.open(settings, async (pool) => {
    await migrate(pool, options.disableMigration === true);
  });
  return new PostgresStore(conn);
}

class PostgresStore extends PartsDataStore implements PostgresDataStore {
  private readonly transfer: PostgresTransfer;

  constructor(private readonly conn: PostgresConnection) {
    const records = new PostgresRecords(conn);
    const transfer = new PostgresTransfer(conn);
    super({
      entries: new PostgresEntries(conn),
      nodes: new PostgresNodes(conn),
      tokens: records,
      bundles: records,
      events: records,
      federation: new PostgresFederation(conn),
      integrity: records,
      transfer,
      connection: conn,
    });
    this.transfer = transfer;
  }

  importRecords(records: DataStoreRecords, options: { replace: boolean }): Promise<RecordCounts> {
    return this.transfer.importRecords(records, options);
  }

  available(): boolean {
    return this.conn.availability.up;
  }

  onAvailabilityChange(listener: (up: boolean) => void): () => void {
    return this.conn.availability.onChange(listener);
  }
}

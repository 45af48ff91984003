/**
 * The SQLite DataStore (../types.ts is the contract), over better-sqlite3: opens the connection
 * and builds the store from one part per record kind (../facade.ts forwards each method to its
 * part). The files of this folder, one job each:
 *
 *   connection.ts   the open connection: pragmas, write/read transactions, onChange, close
 *   files.ts        the database file and directory modes
 *   migrations.ts   the schema, as append-only migrations; migrate.ts applies them
 *   encoding.ts     the persisted text forms (selector sets)
 *   filters.ts      checked filters -> SQL
 *   groupcommit.ts  createEntries calls of one event-loop turn in one transaction
 *   entries.ts, nodes.ts, jointokens.ts, bundles.ts (and the CA journal), federation.ts, events.ts, integrity.ts
 *   transfer.ts     every record in one snapshot, for a move to another backend
 *
 * What is not SQLite's (argument checks, filter semantics, page tokens, entry IDs) lives one
 * folder up, shared with any other backend.
 *
 * Selector order is (type, value) by Unicode code point, which is SQLite's BINARY order on
 * UTF-8, so what we sort in JS and what the indexes return agree.
 */
import { PartsDataStore } from '../facade.js';
import type { DataStore, RecordExporter } from '../types.js';
import { SqliteBundles } from './bundles.js';
import { SqliteConnection, toDataStoreError, type SqliteConnectionOptions } from './connection.js';
import { SqliteEntries } from './entries.js';
import { SqliteEvents } from './events.js';
import { SqliteFederation } from './federation.js';
import { SqliteIntegrity } from './integrity.js';
import { SqliteJoinTokens } from './jointokens.js';
import { SqliteNodes } from './nodes.js';
import { SqliteTransfer } from './transfer.js';

export type SqliteDataStoreOptions = SqliteConnectionOptions;

export interface SqliteDataStore extends DataStore, RecordExporter {
  /** The resolved database file path (':memory:' for an in-memory store). */
  readonly path: string;
}

/** Opens (creating and migrating if needed) the SQLite datastore at `path`. */
export function openSqliteDataStore(options: SqliteDataStoreOptions): SqliteDataStore {
  const conn = SqliteConnection.open(options);
  try {
    return new SqliteStore(conn);
  } catch (err) {
    conn.db.close();
    throw toDataStoreError(`open ${conn.path}`, err);
  }
}

class SqliteStore extends PartsDataStore implements SqliteDataStore {
  readonly path: string;

  constructor(conn: SqliteConnection) {
    const entries = new SqliteEntries(conn);
    const nodes = new SqliteNodes(conn);
    const bundles = new SqliteBundles(conn);
    const federation = new SqliteFederation(conn);
    super({
      entries,
      nodes,
      tokens: new SqliteJoinTokens(conn),
      bundles,
      events: new SqliteEvents(conn),
      integrity: new SqliteIntegrity(conn),
      federation,
      transfer: new SqliteTransfer(conn, entries, nodes, federation),
      connection: conn,
    });
    this.path = conn.path;
    conn.beforeOperation = () => entries.flushCreates();
  }
}

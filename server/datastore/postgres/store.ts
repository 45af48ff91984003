/**
 * The PostgreSQL DataStore (../types.ts is the contract), over node-postgres (pg): several
 * Spindle servers may share one database. Opens the pool (connection.ts), migrates the schema
 * under an advisory lock (migrations.ts) and hands each method to the file of its record kind:
 *
 *   connstring.ts   connection_string / ro_connection_string (URI or libpq keyword/value)
 *   connection.ts   the pool, write/read transactions, the write lock, onChange + LISTEN/NOTIFY
 *   migrations.ts   the schema, as append-only migrations, and the runner
 *   encoding.ts     the persisted text forms (selector sets) and the entry identity hash
 *   filters.ts      checked filters -> SQL
 *   entries.ts, nodes.ts, records.ts (join tokens, bundles, CA journal, events, integrity)
 *   transfer.ts     every record exported in one snapshot / imported in one transaction
 *
 * What is not PostgreSQL's (argument checks, filter semantics, page tokens, entry IDs) lives one
 * folder up, shared with the SQLite backend; test/datastore/contract.ts runs on both.
 */
import type { SpiffeId, TrustDomain } from '../../../spiffe/id.js';
import { describe, invalid } from '../checks.js';
import type {
  AttestedNode,
  ChangeEvent,
  DataStore,
  DataStoreError,
  DataStoreLogger,
  EntryFilter,
  JoinToken,
  NewEntry,
  NodeFilter,
  Page,
  Paged,
  DataStoreRecords,
  RecordCounts,
  RecordExporter,
  RecordImporter,
  RegistrationEntry,
  StoredBundle,
  BundleUpdate,
} from '../types.js';
import { PostgresConnection } from './connection.js';
import { normalizeConnectionString } from './connstring.js';
import { PostgresEntries } from './entries.js';
import { migrate } from './migrations.js';
import { PostgresNodes } from './nodes.js';
import { PostgresRecords } from './records.js';
import { PostgresTransfer } from './transfer.js';

export interface PostgresDataStoreOptions {
  /** libpq URI or keyword/value string (connstring.ts). */
  connectionString: string;
  /**
   * A read-only replica for reads that may lag. Accepted and checked; no DataStore read may lag
   * today (the change feed and the checks inside writes must see the primary), so it is not used yet.
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
  if (options.roConnectionString !== undefined && options.roConnectionString !== '') normalizeConnectionString(options.roConnectionString, 'ro_connection_string');
  const settings = {
    uri,
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

class PostgresStore implements PostgresDataStore {
  private readonly entries: PostgresEntries;
  private readonly nodes: PostgresNodes;
  private readonly records: PostgresRecords;
  private readonly transfer: PostgresTransfer;

  constructor(private readonly conn: PostgresConnection) {
    this.entries = new PostgresEntries(conn);
    this.nodes = new PostgresNodes(conn);
    this.records = new PostgresRecords(conn);
    this.transfer = new PostgresTransfer(conn);
  }

  createEntries(entries: NewEntry[], now: number): Promise<Array<{ entry: RegistrationEntry } | { error: DataStoreError }>> {
    return this.entries.createEntries(entries, now);
  }
  getEntry(id: string): Promise<RegistrationEntry | undefined> {
    return this.entries.getEntry(id);
  }
  getEntries(ids: readonly string[]): Promise<Map<string, RegistrationEntry>> {
    return this.entries.getEntries(ids);
  }
  listAllEntries(): Promise<RegistrationEntry[]> {
    return this.entries.listAllEntries();
  }
  listEntries(filter?: EntryFilter, page?: Page): Promise<Paged<RegistrationEntry>> {
    return this.entries.listEntries(filter, page);
  }
  countEntries(filter?: EntryFilter): Promise<number> {
    return this.entries.countEntries(filter);
  }
  updateEntry(entry: RegistrationEntry, now: number): Promise<RegistrationEntry> {
    return this.entries.updateEntry(entry, now);
  }
  deleteEntries(ids: string[], now: number): Promise<Array<{ entry: RegistrationEntry } | { error: DataStoreError }>> {
    return this.entries.deleteEntries(ids, now);
  }
  pruneExpiredEntries(now: number): Promise<number> {
    return this.entries.pruneExpiredEntries(now);
  }

  createAttestedNode(node: Omit<AttestedNode, 'createdAt' | 'updatedAt'>, now: number): Promise<AttestedNode> {
    return this.nodes.createAttestedNode(node, now);
  }
  getAttestedNode(id: SpiffeId): Promise<AttestedNode | undefined> {
    return this.nodes.getAttestedNode(id);
  }
  listAttestedNodes(filter?: NodeFilter, page?: Page): Promise<Paged<AttestedNode>> {
    return this.nodes.listAttestedNodes(filter, page);
  }
  countAttestedNodes(filter?: NodeFilter): Promise<number> {
    return this.nodes.countAttestedNodes(filter);
  }
  updateAttestedNode(node: AttestedNode, now: number): Promise<AttestedNode> {
    return this.nodes.updateAttestedNode(node, now);
  }
  deleteAttestedNode(id: SpiffeId, now: number): Promise<AttestedNode | undefined> {
    return this.nodes.deleteAttestedNode(id, now);
  }

  createJoinToken(token: JoinToken): Promise<void> {
    return this.records.createJoinToken(token);
  }
  consumeJoinToken(hash: string): Promise<JoinToken | undefined> {
    return this.records.consumeJoinToken(hash);
  }
  pruneJoinTokens(expiredBefore: number): Promise<number> {
    return this.records.pruneJoinTokens(expiredBefore);
  }

  getBundle(td: TrustDomain): Promise<StoredBundle | undefined> {
    return this.records.getBundle(td);
  }
  listBundles(): Promise<StoredBundle[]> {
    return this.records.listBundles();
  }
  setBundle(bundle: StoredBundle, now: number): Promise<void> {
    return this.records.setBundle(bundle, now);
  }
  deleteBundle(td: TrustDomain, now: number): Promise<boolean> {
    return this.records.deleteBundle(td, now);
  }
  updateBundle(td: TrustDomain, update: (current: StoredBundle | undefined) => BundleUpdate, now: number): Promise<StoredBundle | undefined> {
    return this.records.updateBundle(td, update, now);
  }
  getCaJournal(serverId?: string): Promise<string | undefined> {
    return this.records.getCaJournal(serverId);
  }
  setCaJournal(json: string, serverId?: string): Promise<void> {
    return this.records.setCaJournal(json, serverId);
  }
  adoptCaJournal(from: string, to: string): Promise<boolean> {
    return this.records.adoptCaJournal(from, to);
  }

  listEventsSince(after: number, limit: number): Promise<ChangeEvent[]> {
    return this.records.listEventsSince(after, limit);
  }
  latestEventId(): Promise<number> {
    return this.records.latestEventId();
  }
  pruneEvents(before: number): Promise<number> {
    return this.records.pruneEvents(before);
  }
  onChange(listener: (latestEventId: number) => void): () => void {
    return this.conn.onChange(listener);
  }

  checkIntegrity(): Promise<string> {
    return this.records.checkIntegrity();
  }

  exportRecords(): Promise<DataStoreRecords> {
    return this.transfer.exportRecords();
  }
  countRecords(): Promise<RecordCounts> {
    return this.transfer.countRecords();
  }
  importRecords(records: DataStoreRecords, options: { replace: boolean }): Promise<RecordCounts> {
    return this.transfer.importRecords(records, options);
  }
  close(): Promise<void> {
    return this.conn.close();
  }
}

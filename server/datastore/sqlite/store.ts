/**
 * The SQLite DataStore (../types.ts is the contract), over better-sqlite3: opens the connection
 * and hands each method to the file of its record kind. The files of this folder, one job each:
 *
 *   connection.ts   the open connection: pragmas, write/read transactions, onChange, close
 *   files.ts        the database file and directory modes
 *   migrations.ts   the schema, as append-only migrations; migrate.ts applies them
 *   encoding.ts     the persisted text forms (selector sets)
 *   filters.ts      checked filters -> SQL
 *   groupcommit.ts  createEntries calls of one event-loop turn in one transaction
 *   entries.ts, nodes.ts, jointokens.ts, bundles.ts (and the CA journal), events.ts, integrity.ts
 *   transfer.ts     every record in one snapshot, for a move to another backend
 *
 * What is not SQLite's (argument checks, filter semantics, page tokens, entry IDs) lives one
 * folder up, shared with any other backend.
 *
 * Selector order is (type, value) by Unicode code point, which is SQLite's BINARY order on
 * UTF-8, so what we sort in JS and what the indexes return agree.
 */
import type { SpiffeId, TrustDomain } from '../../../spiffe/id.js';
import type {
  AttestedNode,
  ChangeEvent,
  DataStore,
  DataStoreError,
  EntryFilter,
  JoinToken,
  NewEntry,
  NodeFilter,
  Page,
  Paged,
  DataStoreRecords,
  RecordCounts,
  RecordExporter,
  RegistrationEntry,
  StoredBundle,
  BundleUpdate,
} from '../types.js';
import { SqliteBundles } from './bundles.js';
import { SqliteConnection, toDataStoreError, type SqliteConnectionOptions } from './connection.js';
import { SqliteEntries } from './entries.js';
import { SqliteEvents } from './events.js';
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

class SqliteStore implements SqliteDataStore {
  readonly path: string;
  private readonly entries: SqliteEntries;
  private readonly nodes: SqliteNodes;
  private readonly tokens: SqliteJoinTokens;
  private readonly bundles: SqliteBundles;
  private readonly events: SqliteEvents;
  private readonly integrity: SqliteIntegrity;
  private readonly transfer: SqliteTransfer;

  constructor(private readonly conn: SqliteConnection) {
    this.path = conn.path;
    this.entries = new SqliteEntries(conn);
    this.nodes = new SqliteNodes(conn);
    this.tokens = new SqliteJoinTokens(conn);
    this.bundles = new SqliteBundles(conn);
    this.events = new SqliteEvents(conn);
    this.integrity = new SqliteIntegrity(conn);
    this.transfer = new SqliteTransfer(conn, this.entries, this.nodes);
    conn.beforeOperation = () => this.entries.flushCreates();
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
    return this.tokens.createJoinToken(token);
  }
  consumeJoinToken(hash: string): Promise<JoinToken | undefined> {
    return this.tokens.consumeJoinToken(hash);
  }
  pruneJoinTokens(expiredBefore: number): Promise<number> {
    return this.tokens.pruneJoinTokens(expiredBefore);
  }

  getBundle(td: TrustDomain): Promise<StoredBundle | undefined> {
    return this.bundles.getBundle(td);
  }
  listBundles(): Promise<StoredBundle[]> {
    return this.bundles.listBundles();
  }
  setBundle(bundle: StoredBundle, now: number): Promise<void> {
    return this.bundles.setBundle(bundle, now);
  }
  deleteBundle(td: TrustDomain, now: number): Promise<boolean> {
    return this.bundles.deleteBundle(td, now);
  }
  updateBundle(td: TrustDomain, update: (current: StoredBundle | undefined) => BundleUpdate, now: number): Promise<StoredBundle | undefined> {
    return this.bundles.updateBundle(td, update, now);
  }
  getCaJournal(serverId?: string): Promise<string | undefined> {
    return this.bundles.getCaJournal(serverId);
  }
  setCaJournal(json: string, serverId?: string): Promise<void> {
    return this.bundles.setCaJournal(json, serverId);
  }
  adoptCaJournal(from: string, to: string): Promise<boolean> {
    return this.bundles.adoptCaJournal(from, to);
  }

  listEventsSince(after: number, limit: number): Promise<ChangeEvent[]> {
    return this.events.listEventsSince(after, limit);
  }
  latestEventId(): Promise<number> {
    return this.events.latestEventId();
  }
  pruneEvents(before: number): Promise<number> {
    return this.events.pruneEvents(before);
  }
  onChange(listener: (latestEventId: number) => void): () => void {
    return this.conn.onChange(listener);
  }

  checkIntegrity(): Promise<string> {
    return this.integrity.checkIntegrity();
  }

  exportRecords(): Promise<DataStoreRecords> {
    return this.transfer.exportRecords();
  }
  countRecords(): Promise<RecordCounts> {
    return this.transfer.countRecords();
  }
  close(): Promise<void> {
    return this.conn.close();
  }
}

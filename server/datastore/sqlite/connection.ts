/**
 * SQLite: one open database connection and the transactions every record kind runs in.
 *
 * Contract and caveats:
 * - Durability: WAL journal, `synchronous = FULL` (a write is on disk when the method
 *   resolves), `foreign_keys = ON`, busy timeout 5 s so several processes may share the file.
 * - write(): ONE `BEGIN IMMEDIATE` transaction: validation reads, writes and the change-feed
 *   events it appends commit or roll back together. IMMEDIATE takes the write lock up front, so
 *   checks made inside the transaction (duplicates, "exists", token consumption) cannot be raced
 *   by another connection or process. onChange listeners run synchronously after the commit,
 *   never for a rolled-back write.
 * - read(): each statement reads one snapshot; `snapshot: true` shares one over several.
 * - beforeOperation runs first in every read, write and close: the group commit (groupcommit.ts)
 *   commits queued creates there, so operations take effect in the order they were called.
 * - Errors are DataStoreError; SQLite/IO failures become reason 'io' naming the operation, with
 *   the SQLite error as `cause`.
 * - readOnly (the source of `datastore migrate`): an existing file only, opened with SQLite's
 *   read-only flag; nothing is created, migrated or written (no WAL switch, no mode change, no
 *   `PRAGMA optimize` at close), every write fails. A file that is not a Spindle datastore of
 *   exactly this schema version is refused. To read a database in WAL mode SQLite creates its
 *   -wal and -shm files when they are missing; those the connection created (and left empty of
 *   data: a read-only connection writes no WAL frames) are removed at close.
 */
import Database from 'better-sqlite3';
import { existsSync, statSync, unlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, invalid } from '../checks.js';
import { DataStoreError, type ChangeKind, type DataStoreLogger } from '../types.js';
import { prepareFiles, tightenModes } from './files.js';
import { migrate, newerSchemaError, readUserVersion } from './migrate.js';
import { SCHEMA_VERSION } from './migrations.js';

const BUSY_TIMEOUT_MS = 5000;
const WAL_AUTOCHECKPOINT_PAGES = 10_000;
const CACHE_KIB = 16 * 1024;
const STATEMENT_CACHE_LIMIT = 256;

/** Appends a change-feed event inside the current write transaction. */
export type Emit = (kind: ChangeKind, key: string, at: number) => void;
export type Stmt<R = unknown> = Database.Statement<unknown[], R>;

function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}

/** Any failure below the store as DataStoreError; DataStoreErrors pass through unchanged. */
export function toDataStoreError(op: string, err: unknown): DataStoreError {
  if (err instanceof DataStoreError) return err;
  const code = sqliteCode(err);
  const message = err instanceof Error ? err.message : String(err);
  let what = '';
  if (code === undefined) what = '';
  else if (code.startsWith('SQLITE_FULL')) what = 'disk full: ';
  else if (code.startsWith('SQLITE_READONLY')) what = 'database is read-only: ';
  else if (code.startsWith('SQLITE_IOERR')) what = 'I/O error: ';
  else if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) what = 'database is locked by another connection: ';
  else if (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB')) what = 'database file is damaged: ';
  else if (code.startsWith('SQLITE_CANTOPEN') || code.startsWith('SQLITE_PERM')) what = 'cannot open database file: ';
  return new DataStoreError('io', `sqlite datastore: ${op} failed: ${what}${message}${code ? ` (${code})` : ''}`, { cause: err });
}

export interface SqliteConnectionOptions {
  /** Database file path, or ':memory:' (tests; nothing survives close). */
  path: string;
  logger?: DataStoreLogger;
  /** Open an existing file read-only (see the header). */
  readOnly?: boolean;
}

/** The tables every Spindle SQLite datastore holds (a read-only open checks they are there). */
const TABLES = ['entries', 'entry_selectors', 'entry_dns_names', 'entry_federates_with', 'attested_nodes', 'node_selectors', 'join_tokens', 'bundles', 'ca_journal', 'events'];

function notSpindle(file: string, why: string): DataStoreError {
  return new DataStoreError('invalid', `${file} is not a Spindle SQLite datastore (${why}); give the path of a spindle-server datastore file (data_dir/datastore.sqlite3 by default)`);
}

interface Listener {
  fn: (latestEventId: number) => void;
}

/**
 * Removes the -wal / -shm files a read-only open created (`created`), after its connection closed:
 * a -wal only when empty (a writer that filled it meanwhile owns it), the -shm only with no
 * non-empty -wal beside it.
 */
function removeCreated(file: string, created: readonly string[], logger: DataStoreLogger | undefined): void {
  const walHoldsData = (): boolean => existsSync(`${file}-wal`) && statSync(`${file}-wal`).size > 0;
  for (const f of created) {
    try {
      if (f.endsWith('-wal') ? statSync(f).size === 0 : !walHoldsData()) unlinkSync(f);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger?.warn({ err, path: f }, 'sqlite datastore: could not remove a file the read-only open created');
    }
  }
}

export class SqliteConnection {
  /** The resolved database file path (':memory:' for an in-memory store). */
  readonly path: string;
  readonly db: Database.Database;
  private readonly logger: DataStoreLogger | undefined;
  private closed = false;
  private readonly listeners = new Set<Listener>();
  private readonly cache = new Map<string, Stmt>();
  private readonly tx: Database.Transaction<(fn: () => unknown) => unknown>;
  private readonly insertEvent: Stmt;
  /** Runs first in every read, write and close (see the header). */
  beforeOperation: () => void = () => undefined;

  /** Opens the file (creating it with safe modes), sets the pragmas and migrates the schema. */
  static open(options: SqliteConnectionOptions): SqliteConnection {
    if (typeof options !== 'object' || options === null) throw invalid('sqlite datastore options must be an object');
    const { path, logger } = options;
    if (typeof path !== 'string' || path === '') throw invalid(`sqlite datastore path must be a non-empty string, got ${describe(path)}`);
    if (options.readOnly === true) return SqliteConnection.openReadOnly(resolve(path), logger);
    const memory = path === ':memory:';
    const file = memory ? path : resolve(path);
    let db: Database.Database;
    try {
      if (!memory) prepareFiles(file, logger);
      db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
    } catch (err) {
      throw toDataStoreError(`open ${file}`, err);
    }
    try {
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.pragma('foreign_keys = ON');
      db.pragma('trusted_schema = OFF');
      // Refuse a newer schema before changing anything in the file.
      const version = readUserVersion(db);
      if (version > SCHEMA_VERSION) throw newerSchemaError(file, version);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (!memory && mode !== 'wal') {
        logger?.warn({ path: file, journalMode: mode }, 'sqlite datastore could not switch to WAL journal mode');
      }
      db.pragma('synchronous = FULL');
      // Sorts of large listings stay in memory rather than in temporary files.
      db.pragma('temp_store = MEMORY');
      // Write throughput (durability unchanged: every commit still fsyncs the WAL): checkpoint
      // every ~40 MB of WAL instead of ~4 MB, so a stream of large batches is not stalled by
      // frequent checkpoints, and a 16 MB page cache (default 2 MB) keeps the hot index pages.
      db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
      db.pragma(`cache_size = -${CACHE_KIB}`);
      if (db.pragma('foreign_keys', { simple: true }) !== 1) throw new Error('could not enable foreign keys');
      migrate(db, file);
      if (!memory) tightenModes(file);
      return new SqliteConnection(file, db, logger);
    } catch (err) {
      db.close();
      throw toDataStoreError(`open ${file}`, err);
    }
  }

  /** readOnly: the existing file at `file`, read-only; refused unless it is a Spindle datastore of SCHEMA_VERSION. */
  private static openReadOnly(file: string, logger: DataStoreLogger | undefined): SqliteConnection {
    const created = ['-wal', '-shm'].filter((suffix) => !existsSync(file + suffix)).map((suffix) => file + suffix);
    let db: Database.Database;
    try {
      db = new Database(file, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    } catch (err) {
      throw toDataStoreError(`open ${file} read-only`, err);
    }
    try {
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.pragma('trusted_schema = OFF');
      let version: number;
      let tables: Set<string>;
      try {
        version = readUserVersion(db);
        tables = new Set(db.prepare<unknown[], string>("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all());
      } catch (err) {
        const code = sqliteCode(err);
        if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') throw notSpindle(file, code === 'SQLITE_NOTADB' ? 'it is not a SQLite database file' : 'it is damaged');
        throw err;
      }
      if (version > SCHEMA_VERSION) throw newerSchemaError(file, version);
      const missing = TABLES.filter((t) => !tables.has(t));
      if (version === 0 || missing.length > 0) {
        throw notSpindle(file, version === 0 && tables.size === 0 ? 'it holds no tables' : `it lacks the tables ${missing.join(', ')}`);
      }
      if (version < SCHEMA_VERSION) {
        throw new DataStoreError(
          'invalid',
          `sqlite datastore ${file} has schema version ${version}, older than version ${SCHEMA_VERSION} of this Spindle, and is opened ` +
            'read-only: start this version of spindle-server on it once (it migrates the file), stop it, then try again',
        );
      }
      return new SqliteConnection(file, db, logger, created);
    } catch (err) {
      db.close();
      removeCreated(file, created, logger);
      throw toDataStoreError(`open ${file} read-only`, err);
    }
  }

  private constructor(
    path: string,
    db: Database.Database,
    logger: DataStoreLogger | undefined,
    /** readOnly: the -wal / -shm files that did not exist before the open (removed at close); undefined when read-write. */
    private readonly createdByReadOnly?: string[],
  ) {
    this.path = path;
    this.db = db;
    this.logger = logger;
    this.tx = db.transaction((fn: () => unknown) => fn());
    this.insertEvent = db.prepare<unknown[]>('INSERT INTO events (kind, key, at) VALUES (?, ?, ?)');
  }

  /** A prepared statement returning rows as arrays (SELECT column order). */
  raw<R>(sql: string): Stmt<R> {
    return this.db.prepare<unknown[], R>(sql).raw();
  }

  /** A prepared statement returning the first column of each row. */
  pluck<R>(sql: string): Stmt<R> {
    return this.db.prepare<unknown[], R>(sql).pluck();
  }

  /** A prepared statement (writes; reads as objects). */
  run<R = unknown>(sql: string): Stmt<R> {
    return this.db.prepare<unknown[], R>(sql);
  }

  assertOpen(op: string): void {
    if (this.closed) throw new DataStoreError('io', `sqlite datastore: ${op} failed: the datastore is closed`);
  }

  /** Runs `fn` in one IMMEDIATE transaction; events it emits are announced after the commit. */
  write<T>(op: string, fn: (emit: Emit) => T): T {
    this.assertOpen(op);
    this.beforeOperation();
    let latest = 0;
    const emit: Emit = (kind, key, at) => {
      latest = Number(this.insertEvent.run(kind, key, at).lastInsertRowid);
    };
    let result: T;
    try {
      result = this.tx.immediate(() => fn(emit)) as T;
    } catch (err) {
      throw toDataStoreError(op, err);
    }
    if (latest > 0) this.notify(latest);
    return result;
  }

  /**
   * Runs a read. Each statement reads one consistent snapshot; `snapshot: true` makes several
   * statements share one (a read transaction).
   */
  read<T>(op: string, fn: () => T, snapshot = false): T {
    this.assertOpen(op);
    this.beforeOperation();
    try {
      return snapshot ? (this.tx.deferred(fn) as T) : fn();
    } catch (err) {
      throw toDataStoreError(op, err);
    }
  }

  private notify(latest: number): void {
    for (const l of [...this.listeners]) {
      try {
        l.fn(latest);
      } catch (err) {
        this.logger?.warn({ err, latestEventId: latest }, 'datastore change listener threw');
      }
    }
  }

  /** Statement for dynamic (filtered) SQL, prepared once per distinct text, raw mode. */
  cached<R>(sql: string): Stmt<R> {
    let st = this.cache.get(sql);
    if (st === undefined) {
      if (this.cache.size >= STATEMENT_CACHE_LIMIT) this.cache.clear();
      st = this.db.prepare<unknown[]>(sql);
      if (st.reader) st.raw();
      this.cache.set(sql, st);
    }
    return st as Stmt<R>;
  }

  onChange(listener: (latestEventId: number) => void): () => void {
    if (typeof listener !== 'function') throw invalid('onChange listener must be a function');
    const l: Listener = { fn: listener };
    this.listeners.add(l);
    return () => {
      this.listeners.delete(l);
    };
  }

  /** True for a read-only connection (SqliteConnectionOptions.readOnly). */
  get readOnly(): boolean {
    return this.createdByReadOnly !== undefined;
  }

  /** Closes a read-only connection and removes the -wal / -shm files it created, if they hold nothing. */
  private closeReadOnly(): void {
    this.db.close();
    removeCreated(this.path, this.createdByReadOnly ?? [], this.logger);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.beforeOperation();
    this.closed = true;
    this.listeners.clear();
    this.cache.clear();
    if (this.readOnly) {
      try {
        this.closeReadOnly();
      } catch (err) {
        throw toDataStoreError('close', err);
      }
      return;
    }
    try {
      this.db.pragma('optimize');
    } catch {
      // Best effort: statistics only.
    }
    try {
      this.db.close();
    } catch (err) {
      throw toDataStoreError('close', err);
    }
  }
}

/**
 * PostgreSQL: the connection pool, the transactions every record kind runs in, and onChange.
 *
 * Contract and caveats:
 * - write(): ONE transaction that first takes a transaction-level advisory lock (WRITE_LOCK)
 *   shared by every Spindle server on the database. Writes are therefore serialized across
 *   servers like SQLite's BEGIN IMMEDIATE: checks made inside the transaction (duplicates,
 *   "exists") cannot be raced, and change-feed events commit in id order, so a reader that has
 *   seen event N never later finds a committed event below N (with concurrent writers a
 *   sequence value can be taken before a lower one commits; the lock rules that out). Under
 *   READ COMMITTED every statement after the lock sees everything committed before it.
 * - A write that appended events sends `NOTIFY spindle_events, '<latest id>'` in its
 *   transaction (delivered only on commit). Each store LISTENs on a connection of its own, so a
 *   write by another server wakes this store's onChange listeners; a catch-up poll of the latest
 *   event id (POLL_MS) covers a lost listening connection. Listeners of this process are called
 *   right after the commit; each id is announced once, in increasing order.
 * - Calls take effect in call order within a process: a read waits for the writes called before
 *   it, a write for every call before it (the pool would otherwise run them in any order).
 * - read(): one statement reads one snapshot; `snapshot: true` runs several in one
 *   REPEATABLE READ transaction.
 * - Errors are DataStoreError; PostgreSQL and connection failures become reason 'io' naming
 *   the operation and the SQLSTATE, with the driver's error as `cause`.
 */
import pg from 'pg';
import { invalid } from '../checks.js';
import { DataStoreError, type ChangeKind, type DataStoreLogger } from '../types.js';

/** Lock keys (pg_advisory_xact_lock): per database, shared by every server on it. */
export const WRITE_LOCK = '7294012460010002';
export const CHANNEL = 'spindle_events';
const DEFAULT_POLL_MS = 5000;
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Appends a change-feed event inside the current write transaction; `many` appends one event
 * per key, in key order, in one statement.
 */
export type Emit = ((kind: ChangeKind, key: string, at: number) => Promise<void>) & {
  many(kind: ChangeKind, keys: readonly string[], at: number): Promise<void>;
};

/** A query runner returning rows as arrays in SELECT order. */
export interface Queryable {
  rows<R extends unknown[]>(sql: string, params?: unknown[]): Promise<R[]>;
  /** Rows changed by an INSERT / UPDATE / DELETE. */
  exec(sql: string, params?: unknown[]): Promise<number>;
}

/** int8 (bigint, count(*)) as a JS number: every integer the store keeps fits in 2^53. */
const TYPES = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20 && format !== 'binary') return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  },
};

function describeError(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown } | null;
  const message = typeof e?.message === 'string' && e.message !== '' ? e.message : String(err);
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code === undefined) return message;
  return /^[0-9A-Z]{5}$/.test(code) ? `${message} (SQLSTATE ${code})` : `${message} (${code})`;
}

/** Any failure below the store as DataStoreError; DataStoreErrors pass through unchanged. */
export function toDataStoreError(op: string, err: unknown): DataStoreError {
  if (err instanceof DataStoreError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  // Text PostgreSQL cannot store (a NUL character) is the caller's input, not an outage.
  if (code === '22021' || code === '22P05') {
    return new DataStoreError('invalid', `postgres datastore: ${op} failed: a value cannot be stored: ${describeError(err)}`, { cause: err });
  }
  return new DataStoreError('io', `postgres datastore: ${op} failed: ${describeError(err)}`, { cause: err });
}

export interface PoolSettings {
  /** The connection string as a URI (connstring.ts). */
  uri: string;
  /** max_open_conns: 0 = the driver's default (10). */
  maxOpenConns: number;
  /**
   * max_idle_conns: 0 closes idle connections at once; unset or above 0, they close after 30 s
   * idle (node-postgres cannot keep a number of idle connections open).
   */
  maxIdleConns?: number | undefined;
  /** conn_max_lifetime in seconds: 0 = unlimited. */
  connMaxLifetime: number;
}

export function newPool(s: PoolSettings): pg.Pool {
  return new pg.Pool({
    connectionString: s.uri,
    max: s.maxOpenConns > 0 ? s.maxOpenConns : 10,
    idleTimeoutMillis: s.maxIdleConns === 0 ? 1 : 30_000,
    maxLifetimeSeconds: s.connMaxLifetime,
    // A call fails (reason 'io') rather than waiting forever for a connection to an unreachable server.
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    types: TYPES,
  });
}

function queryable(client: pg.PoolClient | pg.Pool): Queryable {
  return {
    async rows<R extends unknown[]>(sql: string, params: unknown[] = []): Promise<R[]> {
      const r = await client.query<R>({ text: sql, values: params, rowMode: 'array' });
      return r.rows;
    },
    async exec(sql: string, params: unknown[] = []): Promise<number> {
      const r = await client.query({ text: sql, values: params });
      return r.rowCount ?? 0;
    },
  };
}

export interface PostgresConnectionOptions extends PoolSettings {
  logger?: DataStoreLogger;
  /** Catch-up poll of the latest event id, milliseconds (tests raise it to prove NOTIFY works). */
  pollMs?: number;
}

export class PostgresConnection {
  private closed = false;
  private readonly listeners = new Set<{ fn: (latestEventId: number) => void }>();
  /** The highest event id announced to listeners. */
  private announced = 0;
  private lastWrite: Promise<void> = Promise.resolve();
  /** read() and write() calls so far: lets a caller tell whether anything was called since. */
  operations = 0;
  /** Reads called since the last write, until they settle (a write waits for them). */
  private readonly readsSinceWrite = new Set<Promise<unknown>>();
  private listenClient: pg.Client | undefined;
  private readonly poll: NodeJS.Timeout;
  private polling = false;

  private constructor(
    readonly pool: pg.Pool,
    private readonly settings: PostgresConnectionOptions,
    private readonly logger: DataStoreLogger | undefined,
  ) {
    pool.on('error', (err) => logger?.warn({ err }, 'postgres datastore: an idle connection failed'));
    this.poll = setInterval(() => void this.catchUp(), settings.pollMs ?? DEFAULT_POLL_MS);
    this.poll.unref();
  }

  /** Opens the pool and the listening connection; `prepare` (the migration) runs first. */
  static async open(options: PostgresConnectionOptions, prepare: (pool: pg.Pool) => Promise<void>): Promise<PostgresConnection> {
    const pool = newPool(options);
    let conn: PostgresConnection | undefined;
    try {
      await prepare(pool);
      conn = new PostgresConnection(pool, options, options.logger);
      const [row] = await queryable(pool).rows<[number]>('SELECT coalesce(max(id), 0) FROM events');
      conn.announced = row?.[0] ?? 0;
      await conn.listen();
      return conn;
    } catch (err) {
      if (conn !== undefined) await conn.close().catch(() => undefined);
      else await pool.end().catch(() => undefined);
      throw toDataStoreError('open', err);
    }
  }

  /** A LISTEN connection of its own; on loss it is reopened by the next catch-up poll. */
  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.settings.uri, types: TYPES, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    client.on('error', (err) => {
      this.logger?.warn({ err }, 'postgres datastore: the change notification connection failed; polling until it is back');
      if (this.listenClient === client) this.listenClient = undefined;
      client.end().catch(() => undefined);
    });
    client.on('notification', (msg) => {
      if (msg.channel !== CHANNEL) return;
      const id = Number(msg.payload);
      if (Number.isSafeInteger(id) && id > 0) this.announce(id);
    });
    await client.connect();
    try {
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.listenClient = client;
  }

  private async catchUp(): Promise<void> {
    if (this.closed || this.polling) return;
    this.polling = true;
    try {
      if (this.listenClient === undefined) await this.listen();
      if (this.listeners.size > 0) {
        const [row] = await queryable(this.pool).rows<[number]>('SELECT coalesce(max(id), 0) FROM events');
        if (row !== undefined) this.announce(row[0]);
      }
    } catch (err) {
      if (!this.closed) this.logger?.warn({ err }, 'postgres datastore: change feed catch-up poll failed');
    } finally {
      this.polling = false;
    }
  }

  assertOpen(op: string): void {
    if (this.closed) throw new DataStoreError('io', `postgres datastore: ${op} failed: the datastore is closed`);
  }

  /** Runs `fn` in one transaction under WRITE_LOCK; events it emits are announced after the commit. */
  write<T>(op: string, fn: (q: Queryable, emit: Emit) => Promise<T>): Promise<T> {
    this.assertOpen(op);
    this.operations++;
    const before = Promise.all([this.lastWrite, ...this.readsSinceWrite]);
    this.readsSinceWrite.clear();
    const run = before.then(() => this.runWrite(op, fn));
    this.lastWrite = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async runWrite<T>(op: string, fn: (q: Queryable, emit: Emit) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw toDataStoreError(op, err);
    }
    const q = queryable(client);
    let latest = 0;
    const emit: Emit = Object.assign(
      async (kind: ChangeKind, key: string, at: number): Promise<void> => {
        const [row] = await q.rows<[number]>('INSERT INTO events (kind, key, at) VALUES ($1, $2, $3) RETURNING id', [kind, key, at]);
        latest = row![0];
      },
      {
        async many(kind: ChangeKind, keys: readonly string[], at: number): Promise<void> {
          if (keys.length === 0) return;
          // Identity values are drawn in the SELECT's order, so the ids follow the keys' order.
          const [row] = await q.rows<[number]>(
            'WITH ins AS (INSERT INTO events (kind, key, at) SELECT $1, k, $3 FROM unnest($2::text[]) WITH ORDINALITY AS x(k, o) ORDER BY o RETURNING id) ' +
              'SELECT max(id) FROM ins',
            [kind, keys, at],
          );
          latest = row![0];
        },
      },
    );
    let result: T;
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [WRITE_LOCK]);
      result = await fn(q, emit);
      if (latest > 0) await client.query('SELECT pg_notify($1, $2)', [CHANNEL, String(latest)]);
      await client.query('COMMIT');
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackErr) {
        broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
      }
      client.release(broken);
      throw toDataStoreError(op, err);
    }
    client.release();
    if (latest > 0) this.announce(latest);
    return result;
  }

  /** Runs a read after the writes called before it; `snapshot: true` shares one snapshot. */
  read<T>(op: string, fn: (q: Queryable) => Promise<T>, snapshot = false): Promise<T> {
    this.assertOpen(op);
    this.operations++;
    const run = this.lastWrite.then(() => this.runRead(op, fn, snapshot));
    const settled: Promise<unknown> = run.then(
      () => this.readsSinceWrite.delete(settled),
      () => this.readsSinceWrite.delete(settled),
    );
    this.readsSinceWrite.add(settled);
    return run;
  }

  private async runRead<T>(op: string, fn: (q: Queryable) => Promise<T>, snapshot: boolean): Promise<T> {
    try {
      if (!snapshot) return await fn(queryable(this.pool));
    } catch (err) {
      throw toDataStoreError(op, err);
    }
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw toDataStoreError(op, err);
    }
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const result = await fn(queryable(client));
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release(true);
      throw toDataStoreError(op, err);
    }
  }

  private announce(latest: number): void {
    if (latest <= this.announced) return;
    this.announced = latest;
    for (const l of [...this.listeners]) {
      try {
        l.fn(latest);
      } catch (err) {
        this.logger?.warn({ err, latestEventId: latest }, 'datastore change listener threw');
      }
    }
  }

  onChange(listener: (latestEventId: number) => void): () => void {
    if (typeof listener !== 'function') throw invalid('onChange listener must be a function');
    const l = { fn: listener };
    this.listeners.add(l);
    return () => {
      this.listeners.delete(l);
    };
  }

  /** Waits for the calls made before it, then closes every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    const pending = Promise.all([this.lastWrite, ...this.readsSinceWrite]);
    this.closed = true;
    clearInterval(this.poll);
    await pending;
    this.listeners.clear();
    const client = this.listenClient;
    this.listenClient = undefined;
    try {
      await client?.end();
      await this.pool.end();
    } catch (err) {
      throw toDataStoreError('close', err);
    }
  }
}

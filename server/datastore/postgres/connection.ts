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
 * - Errors are DataStoreError. A database that cannot be reached (refused, not answering within
 *   the connect or query timeout, the connection lost) is reason 'unavailable' with an operator
 *   message naming host and port and whether anything was written (outage.ts); the outage is
 *   logged once when it starts and once when it ends, not per failed call. Other PostgreSQL
 *   failures become reason 'io' naming the operation and the SQLSTATE, with the driver's error
 *   as `cause`.
 * - Bounded waits: a new connection fails after CONNECT_TIMEOUT_MS, a statement after
 *   QUERY_TIMEOUT_MS without an answer (the write lock's wait after LOCK_TIMEOUT_MS), so a call
 *   during an outage fails within seconds instead of hanging; TCP keepalive finds dead idle
 *   connections. The pool reconnects by itself: a broken connection is discarded, the next call
 *   opens a new one.
 * - Outage and return: the LISTEN connection is reopened by the catch-up poll (every POLL_MS),
 *   which then announces the latest event id, so the change feed reads what other servers
 *   committed during the gap (from its own position: nothing lost, nothing read twice).
 * - ro_connection_string: a second pool with the same settings serves only reads the caller
 *   marked `replica` (may lag); never a read inside a write, the feed's reads or a snapshot.
 */
import pg from 'pg';
import { invalid } from '../checks.js';
import { DataStoreError, type ChangeKind } from '../types.js';
import { Availability, connectionFailure, endpointOf, unavailableError, type AvailabilityLogger, type Phase } from './outage.js';

/** Lock keys (pg_advisory_xact_lock): per database, shared by every server on it. */
export const WRITE_LOCK = '7294012460010002';
export const CHANNEL = 'spindle_events';
const DEFAULT_POLL_MS = 5000;
/** A new connection that has not completed its startup by then fails (reason 'unavailable'). */
export const CONNECT_TIMEOUT_MS = 5_000;
/**
 * A statement without an answer by then fails and its connection is discarded. Well above what
 * any statement of a running server takes; `datastore migrate` opens its stores without it.
 */
export const QUERY_TIMEOUT_MS = 15_000;
/** Waiting for the shared write lock (another server's write in progress) may take longer. */
export const LOCK_TIMEOUT_MS = 60_000;
/** TCP keepalive on every connection: an idle connection to a vanished host is found and dropped. */
const KEEPALIVE_DELAY_MS = 10_000;

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
  /** Statement timeout on the client side, ms (default QUERY_TIMEOUT_MS; 0: none). */
  queryTimeoutMs?: number;
}

export function newPool(s: PoolSettings, uri = s.uri): pg.Pool {
  const queryTimeout = s.queryTimeoutMs ?? QUERY_TIMEOUT_MS;
  return new pg.Pool({
    connectionString: uri,
    max: s.maxOpenConns > 0 ? s.maxOpenConns : 10,
    idleTimeoutMillis: s.maxIdleConns === 0 ? 1 : 30_000,
    maxLifetimeSeconds: s.connMaxLifetime,
    // A call fails (reason 'unavailable') rather than waiting long for an unreachable server.
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    ...(queryTimeout > 0 ? { query_timeout: queryTimeout } : {}),
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    types: TYPES,
  });
}

/**
 * A checked-out client whose connection breaks between two statements emits 'error' with no
 * listener (the pool listens only while the client is idle), which would end the process: the
 * error is taken here instead, and the next statement on the client fails and is handled.
 */
function watchCheckedOut(client: pg.PoolClient): () => void {
  const ignore = (): void => undefined;
  client.on('error', ignore);
  return () => client.off('error', ignore);
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
  /** ro_connection_string as a URI: a second pool for reads marked `replica`. */
  roUri?: string | undefined;
  logger?: AvailabilityLogger;
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
  /** The primary's reachability (logged once per outage; the datastore_up gauge). */
  readonly availability: Availability;
  private readonly replica: { pool: pg.Pool; endpoint: string; availability: Availability } | undefined;
  private readonly endpoint: string;
  private readonly queryTimeoutMs: number;

  private constructor(
    readonly pool: pg.Pool,
    private readonly settings: PostgresConnectionOptions,
    private readonly logger: AvailabilityLogger | undefined,
  ) {
    this.endpoint = endpointOf(settings.uri);
    this.queryTimeoutMs = settings.queryTimeoutMs ?? QUERY_TIMEOUT_MS;
    this.availability = new Availability(this.endpoint, logger);
    pool.on('error', (err) => this.idleFailed(err, this.availability, 'an idle connection failed'));
    if (settings.roUri !== undefined) {
      const roPool = newPool(settings, settings.roUri);
      const endpoint = endpointOf(settings.roUri);
      const availability = new Availability(endpoint, logger, Date.now, 'the read-only replica (ro_connection_string)');
      roPool.on('error', (err) => this.idleFailed(err, availability, 'an idle read-only replica connection failed'));
      this.replica = { pool: roPool, endpoint, availability };
    }
    this.poll = setInterval(() => void this.catchUp(), settings.pollMs ?? DEFAULT_POLL_MS);
    this.poll.unref();
  }

  /** A pooled connection broke while idle: an outage (logged once) or a warning. */
  private idleFailed(err: Error, availability: Availability, what: string): void {
    const cause = this.failureOf(err);
    if (cause !== undefined) availability.down(cause, err);
    else this.logger?.warn({ err }, `postgres datastore: ${what}`);
  }

  private failureOf(err: unknown): string | undefined {
    return connectionFailure(err, CONNECT_TIMEOUT_MS, this.queryTimeoutMs);
  }

  /**
   * `err` as a DataStoreError: 'unavailable' (and the outage noted) when the database could not
   * be reached, else toDataStoreError.
   */
  private fail(op: string, err: unknown, phase: Phase, replica = false): DataStoreError {
    if (err instanceof DataStoreError) return err;
    const cause = this.failureOf(err);
    if (cause === undefined) return toDataStoreError(op, err);
    const target = replica && this.replica !== undefined ? this.replica : { endpoint: this.endpoint, availability: this.availability };
    target.availability.down(cause, err);
    return unavailableError(target.endpoint, cause, phase, err);
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
    const client = new pg.Client({
      connectionString: this.settings.uri,
      types: TYPES,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    });
    client.on('error', (err) => {
      const cause = this.failureOf(err);
      // An outage is logged once (availability); anything else says what broke.
      if (cause !== undefined) this.availability.down(cause, err);
      else if (!this.closed) this.logger?.warn({ err }, 'postgres datastore: the change notification connection failed; polling until it is back');
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
      if (this.listeners.size > 0 || !this.availability.up) {
        const [row] = await queryable(this.pool).rows<[number]>('SELECT coalesce(max(id), 0) FROM events');
        this.availability.ok();
        // After an outage this is what other servers committed meanwhile: the feed reads it from its own position.
        if (row !== undefined) this.announce(row[0]);
      }
    } catch (err) {
      if (!this.closed) {
        const cause = this.failureOf(err);
        if (cause !== undefined) this.availability.down(cause, err);
        else this.logger?.warn({ err }, 'postgres datastore: change feed catch-up poll failed');
      }
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
      throw this.fail(op, err, 'write');
    }
    const unwatch = watchCheckedOut(client);
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
    let phase: Phase = 'write';
    try {
      await client.query('BEGIN');
      await client.query({ text: 'SELECT pg_advisory_xact_lock($1)', values: [WRITE_LOCK], query_timeout: LOCK_TIMEOUT_MS } as pg.QueryConfig);
      result = await fn(q, emit);
      if (latest > 0) await client.query('SELECT pg_notify($1, $2)', [CHANNEL, String(latest)]);
      // The caller hears OK only after COMMIT returned: an acknowledged write is durable.
      phase = 'commit';
      await client.query('COMMIT');
    } catch (err) {
      if (this.failureOf(err) !== undefined) {
        // The connection is gone (or hung): no ROLLBACK to wait for; the server rolls back an
        // uncommitted transaction of a lost connection itself. The client is discarded.
        broken = err instanceof Error ? err : new Error(String(err));
      } else {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackErr) {
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
        }
      }
      unwatch();
      client.release(broken);
      throw this.fail(op, err, phase);
    }
    unwatch();
    client.release();
    this.availability.ok();
    if (latest > 0) this.announce(latest);
    return result;
  }

  /**
   * Runs a read after the writes called before it; `snapshot: true` shares one snapshot;
   * `replica: true` (a read that may lag, ReadOptions.mayLag) goes to ro_connection_string when set.
   */
  read<T>(op: string, fn: (q: Queryable) => Promise<T>, opts: boolean | { snapshot?: boolean; replica?: boolean } = false): Promise<T> {
    this.assertOpen(op);
    this.operations++;
    const snapshot = typeof opts === 'boolean' ? opts : opts.snapshot === true;
    const replica = typeof opts === 'object' && opts.replica === true && !snapshot && this.replica !== undefined;
    const run = this.lastWrite.then(() => (replica ? this.runReplicaRead(op, fn) : this.runRead(op, fn, snapshot)));
    const settled: Promise<unknown> = run.then(
      () => this.readsSinceWrite.delete(settled),
      () => this.readsSinceWrite.delete(settled),
    );
    this.readsSinceWrite.add(settled);
    return run;
  }

  private async runReplicaRead<T>(op: string, fn: (q: Queryable) => Promise<T>): Promise<T> {
    const replica = this.replica!;
    try {
      const result = await fn(queryable(replica.pool));
      replica.availability.ok();
      return result;
    } catch (err) {
      throw this.fail(op, err, 'read', true);
    }
  }

  private async runRead<T>(op: string, fn: (q: Queryable) => Promise<T>, snapshot: boolean): Promise<T> {
    if (!snapshot) {
      try {
        const result = await fn(queryable(this.pool));
        this.availability.ok();
        return result;
      } catch (err) {
        throw this.fail(op, err, 'read');
      }
    }
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.fail(op, err, 'read');
    }
    const unwatch = watchCheckedOut(client);
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const result = await fn(queryable(client));
      await client.query('COMMIT');
      unwatch();
      client.release();
      this.availability.ok();
      return result;
    } catch (err) {
      if (this.failureOf(err) === undefined) await client.query('ROLLBACK').catch(() => undefined);
      unwatch();
      client.release(true);
      throw this.fail(op, err, 'read');
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
      await this.replica?.pool.end();
    } catch (err) {
      throw toDataStoreError('close', err);
    }
  }
}

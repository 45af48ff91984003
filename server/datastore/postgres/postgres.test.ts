/**
 * The PostgreSQL backend's own tests: what only shows with several stores (servers) on one
 * database or below the DataStore interface: migrations racing at startup, a join token claimed
 * from many connections at once, NOTIFY waking another store's onChange, the schema version
 * guard, connection string errors. Everything a backend must do is in the contract
 * (test/datastore/contract.ts), which test/datastore/postgres.test.ts runs against PostgreSQL.
 * The cluster is test/support/postgres.ts's (one per test process, as uid 65534).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { parse as parseConnectionString } from 'pg-connection-string';
import { parseSpiffeId } from '../../../spiffe/id.js';
import { entryWithDefaults } from '../../../test/support/entries.js';
import { postgresBinDir, postgresCluster } from '../../../test/support/postgres.js';
import { DataStoreError, type DataStore } from '../types.js';
import { WRITE_LOCK } from './connection.js';
import { normalizeConnectionString } from './connstring.js';
import { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';
import { openPostgresDataStore, type PostgresDataStoreOptions } from './store.js';

const opened: DataStore[] = [];
after(async () => {
  for (const s of opened) await s.close().catch(() => undefined);
});

/** A fresh database's URI. */
async function freshDb(): Promise<string> {
  const cluster = await postgresCluster();
  return cluster.uri(await cluster.createDatabase());
}

async function open(uri: string, extra: Partial<PostgresDataStoreOptions> = {}): Promise<DataStore> {
  const s = await openPostgresDataStore({ connectionString: uri, maxIdleConns: 0, ...extra });
  opened.push(s);
  return s;
}

async function sql<R extends unknown[]>(uri: string, text: string, params: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: uri });
  await c.connect();
  try {
    return (await c.query<R>({ text, values: params, rowMode: 'array' })).rows;
  } finally {
    await c.end();
  }
}

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const entry = (n: number) =>
  entryWithDefaults({
    spiffeId: parseSpiffeId(`spiffe://example.org/w${n}`),
    parentId: parseSpiffeId('spiffe://example.org/spire/agent/join_token/x'),
    selectors: [{ type: 'unix', value: `uid:${n}` }],
  });

function rejectsWith(reason: string, pattern: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof DataStoreError, String(e));
    assert.equal(e.reason, reason, e.message);
    assert.match(e.message, pattern);
    return true;
  };
}

describe('postgres datastore', () => {
  it('the test cluster fails (never skips) without the server binaries, saying what to install', () => {
    const empty = mkdtempSync(join(tmpdir(), 'spindle-nopg-'));
    try {
      assert.throws(() => postgresBinDir(empty), /not found under .*spindle-nopg-.*<version>\/bin.*apt-get install postgresql/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
    assert.match(postgresBinDir(), /^\/usr\/lib\/postgresql\/\d+\/bin$/);
  });

  describe('schema migrations', () => {
    it('several stores opening an empty database at once migrate it once and all work', async () => {
      const uri = await freshDb();
      const stores = await Promise.all(Array.from({ length: 6 }, () => open(uri)));
      const history = await sql<[number]>(uri, 'SELECT version FROM spindle_schema_migrations ORDER BY version');
      assert.deepEqual(history.map((r) => r[0]), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1), 'each version applied exactly once');
      // Every store sees the others' writes.
      await stores[0]!.createEntries([entry(1)], 10);
      await stores[5]!.createEntries([entry(2)], 10);
      for (const s of stores) assert.equal(await s.countEntries(), 2);
    });

    it('migration 2 keeps the single CA journal of a version-1 database as the journal without a server ID', async () => {
      const uri = await freshDb();
      await sql(uri, MIGRATIONS[0]!);
      await sql(uri, 'CREATE TABLE spindle_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
      await sql(uri, 'INSERT INTO spindle_schema_migrations (version) VALUES (1)');
      await sql(uri, 'INSERT INTO ca_journal (id, document) VALUES (1, $1)', ['{"version":1,"old":true}']);
      const s = await open(uri);
      assert.equal(await s.getCaJournal(), '{"version":1,"old":true}');
      assert.equal(await s.getCaJournal('server-a'), undefined);
      await s.setCaJournal('{"a":1}', 'server-a');
      assert.equal(await s.getCaJournal(), '{"version":1,"old":true}');
      const history = await sql<[number]>(uri, 'SELECT version FROM spindle_schema_migrations ORDER BY version');
      assert.deepEqual(history.map((r) => r[0]), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
    });

    it('refuses a schema newer than this code knows, and an outdated one when migration is disabled', async () => {
      const uri = await freshDb();
      await assert.rejects(open(uri, { disableMigration: true }), rejectsWith('invalid', new RegExp(`schema version 0 .*needs version ${SCHEMA_VERSION}.*disable_migration`)));
      const s = await open(uri);
      await s.close();
      await open(uri, { disableMigration: true }); // exactly this version: fine
      await sql(uri, 'INSERT INTO spindle_schema_migrations (version) VALUES ($1)', [SCHEMA_VERSION + 1]);
      await assert.rejects(open(uri), rejectsWith('invalid', new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than version ${SCHEMA_VERSION}`)));
      await assert.rejects(open(uri, { disableMigration: true }), rejectsWith('invalid', /newer/));
    });
  });

  describe('several servers on one database', () => {
    it('a join token consumed by 8 stores at once goes to exactly one, round after round', async () => {
      const uri = await freshDb();
      const stores = await Promise.all(Array.from({ length: 8 }, () => open(uri)));
      for (let round = 0; round < 5; round++) {
        const hash = sha(`token-${round}`);
        await stores[round]!.createJoinToken({ hash, expiresAt: 100 + round });
        const got = await Promise.all(stores.map((s) => s.consumeJoinToken(hash)));
        const winners = got.filter((t) => t !== undefined);
        assert.equal(winners.length, 1, `round ${round}: ${winners.length} stores got the token`);
        assert.deepEqual(winners[0], { hash, expiresAt: 100 + round });
      }
    });

    it("a write through store A wakes store B's onChange through NOTIFY (no polling)", async () => {
      const uri = await freshDb();
      // An hour between catch-up polls: only the notification can wake B within the test.
      const a = await open(uri, { pollMs: 3_600_000 });
      const b = await open(uri, { pollMs: 3_600_000 });
      const seen: number[] = [];
      let wake: (id: number) => void = () => undefined;
      b.onChange((latest) => {
        seen.push(latest);
        wake(latest);
      });
      for (let i = 1; i <= 3; i++) {
        const woken = new Promise<number>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`store B was not woken for write ${i}`)), 15_000);
          wake = (id) => {
            clearTimeout(t);
            resolve(id);
          };
        });
        const [r] = await a.createEntries([entry(i)], 10 + i);
        assert.ok(r && 'entry' in r);
        const latest = await a.latestEventId();
        assert.equal(await woken, latest);
        assert.deepEqual((await b.listEventsSince(latest - 1, 10)).map((e) => e.key), [r.entry.id]);
      }
      assert.deepEqual(seen, [1, 2, 3], 'each event id announced once, in order');
    });

    it('concurrent writes from several stores commit their events in id order, none lost', async () => {
      const uri = await freshDb();
      const stores = await Promise.all(Array.from({ length: 4 }, () => open(uri)));
      const reader = stores[0]!;
      let after = 0;
      const read: number[] = [];
      const writes = Promise.all(stores.flatMap((s, k) => Array.from({ length: 10 }, (_, i) => s.createEntries([entry(k * 100 + i)], 5))));
      let done = false;
      void writes.then(() => (done = true));
      // A reader resuming from the last id it saw must never skip an event committed later.
      for (let polls = 0; polls < 10_000; polls++) {
        // Whether every write had committed BEFORE this read started: only then does an empty
        // page mean the reader has seen everything (a write may complete while the read runs).
        const allCommitted = done;
        const page = await reader.listEventsSince(after, 100);
        for (const ev of page) read.push(ev.id);
        if (page.length > 0) after = page[page.length - 1]!.id;
        if (allCommitted && page.length === 0) break;
      }
      await writes;
      const all = (await reader.listEventsSince(0, 1000)).map((e) => e.id);
      assert.equal(all.length, 40);
      assert.deepEqual(read, all, 'the resuming reader saw every event');
    });
  });

  describe('the write lock', () => {
    it('a write waits while another server holds the write lock mid-transaction, so event ids commit in order', async () => {
      const uri = await freshDb();
      const store = await open(uri);
      // "Another server" mid-write: holds the lock and has taken an event id, not yet committed.
      const other = new pg.Client({ connectionString: uri });
      await other.connect();
      try {
        await other.query('BEGIN');
        await other.query('SELECT pg_advisory_xact_lock($1)', [WRITE_LOCK]);
        const otherId = Number((await other.query<{ id: string }>("INSERT INTO events (kind, key, at) VALUES ('bundle_updated', 'other.org', 1) RETURNING id")).rows[0]!.id);
        let settled = false;
        const write = store.createEntries([entry(1)], 2).finally(() => (settled = true));
        // Give the write every chance to slip past (it must not: it waits for the lock).
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal(settled, false, 'the write committed while another server held the write lock');
        // (A read through the same store would wait for the write: calls take effect in call order.)
        assert.deepEqual(await sql(uri, 'SELECT count(*)::int FROM entries'), [[0]], 'nothing committed yet');
        await other.query('COMMIT');
        const [r] = await write;
        assert.ok(r && 'entry' in r);
        const events = await store.listEventsSince(0, 10);
        assert.deepEqual(events.map((e) => e.key), ['other.org', r.entry.id]);
        assert.equal(events[0]!.id, otherId);
      } finally {
        await other.end();
      }
    });
  });

  describe('connection strings', () => {
    it('accepts libpq keyword/value strings and connects with them', async () => {
      const cluster = await postgresCluster();
      const db = await cluster.createDatabase();
      const s = await open(`host=127.0.0.1 port=${cluster.port} dbname='${db}' user=postgres sslmode=disable application_name='spindle test'`);
      await s.createEntries([entry(1)], 1);
      assert.equal(await s.countEntries(), 1);
      assert.equal(
        normalizeConnectionString("host=/run/postgresql dbname=spire user=spire password='a b\\'c'"),
        'postgresql://spire:a%20b\'c@/spire?host=%2Frun%2Fpostgresql',
      );
      // A password without a user is kept (libpq uses the default user name with it).
      const noUser = normalizeConnectionString('host=db.internal dbname=spire password=s3cret');
      assert.equal(noUser, 'postgresql://:s3cret@/spire?host=db.internal');
      const parsed = parseConnectionString(noUser);
      assert.equal(parsed.password, 's3cret');
      assert.ok(!parsed.user, `no user named: ${String(parsed.user)}`);
    });

    it('names what is wrong with a bad connection string, without echoing the password', async () => {
      const cases: Array<[string, RegExp]> = [
        ['', /connection_string: is empty/],
        ['host=db dbname', /missing "=" after "dbname" at offset 8/],
        ['hostname=db', /unknown keyword "hostname"; supported: host, port, dbname/],
        ["host=db password='s3cret", /unterminated quoted value for "password"/],
        ['host=db host=db2', /keyword "host" is given twice/],
        ['host=db sslmode=maybe password=s3cret', /sslmode "maybe" is not one of disable, prefer, require, verify-ca, verify-full/],
        ['mysql://u@h/db', /URI scheme "mysql" is not postgresql:\/\/ or postgres:\/\//],
        ['postgresql://u@h:notaport/db', /not a valid PostgreSQL URI|port/],
        ['host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem password=s3cret', /cannot read the file "\/nonexistent\/ca.pem" it names \(sslrootcert, sslcert or sslkey\): ENOENT/],
      ];
      for (const [text, pattern] of cases) {
        await assert.rejects(openPostgresDataStore({ connectionString: text }), (e: unknown) => {
          assert.ok(e instanceof DataStoreError, String(e));
          assert.equal(e.reason, 'invalid', e.message);
          assert.match(e.message, /^DataStore "sql" connection_string: /);
          assert.match(e.message, pattern);
          assert.ok(!e.message.includes('s3cret'), `the password leaked: ${e.message}`);
          return true;
        });
      }
      await assert.rejects(
        openPostgresDataStore({ connectionString: 'dbname=x', roConnectionString: 'dbname' }),
        rejectsWith('invalid', /^DataStore "sql" ro_connection_string: missing "="/),
      );
    });

    it('reports a server that cannot be reached as an io error naming the operation', async () => {
      const cluster = await postgresCluster();
      // A port nothing listens on: the cluster's port + 1 is not ours; find one refused for sure.
      const { createServer } = await import('node:net');
      const port = await new Promise<number>((resolve) => {
        const srv = createServer().listen(0, '127.0.0.1', () => {
          const p = (srv.address() as { port: number }).port;
          srv.close(() => resolve(p));
        });
      });
      assert.notEqual(port, cluster.port);
      await assert.rejects(
        openPostgresDataStore({ connectionString: `postgresql://postgres@127.0.0.1:${port}/x?sslmode=disable&connect_timeout=5` }),
        rejectsWith('io', /^postgres datastore: open failed: .*ECONNREFUSED/),
      );
    });
  });
});

describe('group commit of concurrent createEntries calls (PostgreSQL)', () => {
  const web = (n: number) =>
    entryWithDefaults({
      spiffeId: parseSpiffeId(`spiffe://example.org/web${n}`),
      parentId: parseSpiffeId('spiffe://example.org/spire/agent/join_token/x'),
      selectors: [{ type: 'unix', value: 'uid:1' }],
      dnsNames: [`web${n}.example.org`, `alt${n}.example.org`],
      federatesWith: n % 2 === 0 ? ['b.test' as never, 'a.test' as never] : [],
    });

  it('calls made while no other call intervenes share one transaction, each caller getting its own results', async () => {
    const uri = await freshDb();
    const store = await open(uri);
    const commits: number[] = [];
    store.onChange((latest) => commits.push(latest));
    const p1 = store.createEntries([web(1), web(2)], 1000);
    // A duplicate inside the second call fails only that item of that call.
    const p2 = store.createEntries([web(3), web(3), web(4)], 1001);
    const p3 = store.createEntries([web(5), web(1)], 1002);
    const [r1, r2, r3] = await Promise.all([p1, p2, p3]);
    const shape = (rs: typeof r1): string[] => rs.map((r) => ('entry' in r ? r.entry.spiffeId : r.error.reason));
    assert.deepEqual(shape(r1), ['spiffe://example.org/web1', 'spiffe://example.org/web2']);
    assert.deepEqual(shape(r2), ['spiffe://example.org/web3', 'duplicate_entry', 'spiffe://example.org/web4']);
    assert.ok('error' in r2[1]! && /created earlier in this batch/.test(r2[1].error.message), 'the duplicate names its own batch');
    // web1 came from an earlier call: refused, naming that entry, but not as "this batch".
    const dup1 = r3[1]!;
    assert.ok('error' in dup1 && dup1.error.reason === 'duplicate_entry' && !/this batch/.test(dup1.error.message) && 'entry' in r1[0]! && dup1.error.message.includes(r1[0].entry.id));
    assert.deepEqual(r3.map((r) => ('entry' in r ? r.entry.createdAt : -1)), [1002, -1]);
    // Every stored entry reads back exactly as returned (children and all).
    for (const r of [...r1, ...r2, ...r3]) if ('entry' in r) assert.deepEqual(await store.getEntry(r.entry.id), r.entry);
    // One transaction: one announcement for the five events, which are in call order.
    assert.deepEqual(commits, [5]);
    const events = await store.listEventsSince(0, 10);
    const created = [...r1, ...r2, ...r3].flatMap((r) => ('entry' in r ? [[r.entry.id, r.entry.createdAt]] : []));
    assert.deepEqual(events.map((e) => [e.key, e.at]), created);
    const counted = await sql<[string]>(uri, 'SELECT count(*) FROM entry_dns_names');
    assert.equal(Number(counted[0]?.[0]), 10);
  });

  it('a failing transaction rejects every call of its group and commits none of them', async () => {
    const uri = await freshDb();
    const store = await open(uri);
    await store.createEntries([entry(0)], 999); // migrated and warm
    await sql(
      uri,
      "CREATE FUNCTION fail_web2() RETURNS trigger AS $$ BEGIN IF NEW.spiffe_id = 'spiffe://example.org/web2' THEN RAISE EXCEPTION 'disk on fire'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
    );
    await sql(uri, 'CREATE TRIGGER fail_web2 BEFORE INSERT ON entries FOR EACH ROW EXECUTE FUNCTION fail_web2()');
    const results = await Promise.allSettled([store.createEntries([web(1)], 1000), store.createEntries([web(2)], 1000), store.createEntries([web(3)], 1000)]);
    for (const r of results) {
      assert.ok(r.status === 'rejected' && r.reason instanceof DataStoreError && r.reason.reason === 'io' && /disk on fire/.test(r.reason.message), String(r.status === 'rejected' ? r.reason : r.status));
    }
    assert.equal(await store.countEntries(), 1, 'nothing of the failed group was committed');
    assert.equal((await store.listEventsSince(0, 10)).length, 1);
    const [ok] = await store.createEntries([web(1)], 1001);
    assert.ok(ok && 'entry' in ok, 'the store still works afterwards');
  });
});

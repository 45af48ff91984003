/**
 * The SQLite backend's own tests: what only shows below the DataStore interface (files and their
 * modes, pragmas, schema migrations, the rows a write leaves, group commit, locking between
 * processes, faults injected into the database). Everything a backend must do is in the
 * contract (test/datastore/contract.ts), which test/datastore/sqlite.test.ts runs against SQLite.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../../spiffe/id.js';
import { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';
import { openSqliteDataStore, type SqliteDataStore } from './store.js';
import {
  DataStoreError,
  type DataStoreErrorReason,
  type DataStoreLogger,
  type EntryFilter,
  type NewEntry,
  type RegistrationEntry,
  type Selector,
} from '../types.js';
import { METACHARACTER_FILTERS, NASTY } from '../../../test/datastore/contract.js';
import { entryWithDefaults } from '../../../test/support/entries.js';

// ---------------------------------------------------------------------------------------------
// Helpers.

const root = mkdtempSync(join(tmpdir(), 'spindle-datastore-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;

/** A fresh directory (not yet created) for one test's database. */
function freshDir(): string {
  return join(root, `t${++dirCounter}`);
}

const open: SqliteDataStore[] = [];
after(async () => {
  for (const s of open) await s.close();
});

function openStore(path: string, logger?: DataStoreLogger): SqliteDataStore {
  const s = openSqliteDataStore(logger === undefined ? { path } : { path, logger });
  open.push(s);
  return s;
}

function freshStore(): { store: SqliteDataStore; path: string } {
  const path = join(freshDir(), 'datastore.sqlite3');
  return { store: openStore(path), path };
}

const id = (s: string): SpiffeId => parseSpiffeId(s);
const td = (s: string): TrustDomain => parseTrustDomain(s);
const sel = (type: string, value: string): Selector => ({ type, value });
const AGENT = id('spiffe://example.org/spire/agent/join_token/abc');

function newEntry(over: Partial<NewEntry> = {}): NewEntry {
  return entryWithDefaults({ spiffeId: id('spiffe://example.org/workload'), parentId: AGENT, selectors: [sel('unix', 'uid:1000')], ...over });
}

async function createOne(store: SqliteDataStore, e: NewEntry, now = 1000): Promise<RegistrationEntry> {
  const [r] = await store.createEntries([e], now);
  assert.ok(r !== undefined && 'entry' in r, `create failed: ${r && 'error' in r ? r.error.message : '?'}`);
  return r.entry;
}

async function assertRejects(p: Promise<unknown>, reason: DataStoreErrorReason, mention?: string): Promise<DataStoreError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof DataStoreError, `expected a DataStoreError(${reason}), got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.equal(caught.code, 'ERR_DATASTORE');
  if (mention !== undefined) assert.ok(caught.message.includes(mention), `message should mention ${mention}: ${caught.message}`);
  return caught;
}

function rawCount(path: string, sql: string, ...params: unknown[]): number {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare(sql).pluck().get(...params) as number;
  } finally {
    db.close();
  }
}

async function ids(store: SqliteDataStore, filter?: EntryFilter): Promise<string[]> {
  const { items, nextToken } = await store.listEntries(filter);
  assert.equal(nextToken, '');
  assert.equal(await store.countEntries(filter), items.length, 'countEntries agrees with listEntries');
  return items.map((e) => e.hint).sort();
}

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

// ---------------------------------------------------------------------------------------------

describe('opening, migrations and files', () => {
  it('migrates a new file, uses WAL, and keeps data across close and reopen', async () => {
    const { store, path } = freshStore();
    const created = await createOne(store, newEntry({ hint: 'persist' }));
    await store.close();
    await store.close(); // idempotent

    const db = new Database(path, { readonly: true });
    assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").pluck().all();
    db.close();
    for (const t of ['entries', 'entry_selectors', 'entry_dns_names', 'entry_federates_with', 'attested_nodes',
      'node_selectors', 'join_tokens', 'bundles', 'ca_journal', 'events']) {
      assert.ok(tables.includes(t), `table ${t} exists`);
    }

    const again = openStore(path);
    assert.deepEqual(await again.getEntry(created.id), created);
    assert.equal(await again.latestEventId(), 1);
    assert.equal(await again.checkIntegrity(), '');
  });

  it('runs only the pending migrations of an older database', async () => {
    const path = join(freshDir(), 'old.sqlite3');
    mkdirSync(join(path, '..'), { recursive: true });
    const db = new Database(path);
    db.exec(MIGRATIONS[0]!);
    db.pragma('user_version = 1');
    db.prepare("INSERT INTO join_tokens (hash, expires_at) VALUES (?, 5)").run(sha('old'));
    db.close();
    const store = openStore(path);
    assert.deepEqual(await store.consumeJoinToken(sha('old')), { hash: sha('old'), expiresAt: 5 });
    assert.equal(rawCount(path, 'PRAGMA user_version'), SCHEMA_VERSION);
  });

  it('migration 2 keeps the single CA journal of a version-1 database as the journal without a server ID', async () => {
    const path = join(freshDir(), 'v1.sqlite3');
    mkdirSync(join(path, '..'), { recursive: true });
    const db = new Database(path);
    db.exec(MIGRATIONS[0]!);
    db.pragma('user_version = 1');
    db.prepare('INSERT INTO ca_journal (id, document) VALUES (1, ?)').run('{"version":1,"old":true}');
    db.close();
    const store = openStore(path);
    assert.equal(await store.getCaJournal(), '{"version":1,"old":true}');
    assert.equal(await store.getCaJournal('server-a'), undefined);
    assert.equal(await store.adoptCaJournal('', 'server-a'), true);
    assert.equal(await store.getCaJournal('server-a'), '{"version":1,"old":true}');
    assert.equal(await store.getCaJournal(), undefined);
    assert.equal(await store.checkIntegrity(), '');
  });

  it('refuses a database whose schema version is newer than the code knows, without touching it', async () => {
    const { store, path } = freshStore();
    await store.close();
    const db = new Database(path);
    db.pragma('journal_mode = DELETE');
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    const err = await assertRejects(
      (async () => openSqliteDataStore({ path }))(),
      'invalid',
      `schema version ${SCHEMA_VERSION + 1}`,
    );
    assert.match(err.message, /newer/);
    const check = new Database(path, { readonly: true });
    assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION + 1);
    assert.equal(check.pragma('journal_mode', { simple: true }), 'delete', 'journal mode left alone');
    check.close();
  });

  for (const umask of [0o022, 0o000]) {
    it(`creates the directory 0700 and the files 0600 with umask ${umask.toString(8).padStart(3, '0')}`, async () => {
      const previous = process.umask(umask);
      try {
        const parent = freshDir();
        const dir = join(parent, 'nested', 'data');
        const path = join(dir, 'datastore.sqlite3');
        const store = openStore(path);
        await createOne(store, newEntry()); // makes sure -wal and -shm exist
        assert.equal(statSync(dir).mode & 0o777, 0o700, 'data dir');
        assert.equal(statSync(join(parent, 'nested')).mode & 0o777, 0o700, 'intermediate dir we created');
        for (const f of [path, `${path}-wal`, `${path}-shm`]) {
          assert.ok(existsSync(f), `${f} exists`);
          assert.equal(statSync(f).mode & 0o777, 0o600, f);
        }
        await store.close();
      } finally {
        process.umask(previous);
      }
    });
  }

  it('tightens an existing database file to 0600 and warns about an open directory', async () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755);
    const path = join(dir, 'datastore.sqlite3');
    writeFileSync(path, '');
    chmodSync(path, 0o644);
    const warnings: Array<{ obj: object; msg: string }> = [];
    const store = openStore(path, { warn: (obj, msg) => warnings.push({ obj, msg }) });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.msg, /group or others/);
    assert.deepEqual(warnings[0]!.obj, { dir, mode: '0755' });
    await store.close();
  });

  it('reports a file that is not a database as an io error naming the operation', async () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'garbage.sqlite3');
    writeFileSync(path, 'this is not a database, just some text that is long enough to have a header '.repeat(20));
    const err = await assertRejects((async () => openSqliteDataStore({ path }))(), 'io', `open ${path} failed`);
    assert.match(err.message, /SQLITE_NOTADB/);
  });

  it('works in memory', async () => {
    const store = openStore(':memory:');
    const e = await createOne(store, newEntry());
    assert.deepEqual(await store.getEntry(e.id), e);
  });
});

describe('rows and text a write leaves', () => {
  it('treats SQL metacharacters in values as plain data: the schema is untouched', async () => {
    const { store, path } = freshStore();
    await createOne(store, newEntry({ hint: 'abc', selectors: [sel('unix', 'uid:100%'), sel('q', NASTY)] }));
    for (const filter of METACHARACTER_FILTERS) {
      assert.deepEqual((await store.listEntries(filter)).items, [], JSON.stringify(filter));
      assert.equal(await store.countEntries(filter), 0);
    }
    assert.equal(rawCount(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'entries'"), 1);
  });

  it('deleteEntries cascades to the child rows', async () => {
    const { store, path } = freshStore();
    const a = await createOne(store, newEntry({ selectors: [sel('a', '1'), sel('a', '2')], dnsNames: ['x'], federatesWith: [td('f.org')] }));
    await createOne(store, newEntry({ selectors: [sel('b', '1')] }));
    const aPk = rawCount(path, 'SELECT pk FROM entries WHERE id = ?', a.id);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors WHERE entry_pk = ?', aPk), 2);
    await store.deleteEntries([a.id], 50);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors WHERE entry_pk = ?', aPk), 0);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_dns_names WHERE entry_pk = ?', aPk), 0);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_federates_with WHERE entry_pk = ?', aPk), 0);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors'), 1);
    assert.equal(await store.checkIntegrity(), '');
  });

  it('deleting an attested node removes its selector rows', async () => {
    const { store, path } = freshStore();
    const n1 = await store.createAttestedNode(
      {
        spiffeId: id('spiffe://example.org/spire/agent/k8s_psat/c1/n1'),
        attestationType: 'k8s_psat',
        certSerial: 'aa01',
        certNotAfter: 1000,
        newCertSerial: '',
        newCertNotAfter: 0,
        selectors: [sel('z', '1'), sel('a', '1')],
        banned: false,
        canReattest: true,
      },
      10,
    );
    assert.equal(rawCount(path, 'SELECT count(*) FROM node_selectors WHERE spiffe_id = ?', n1.spiffeId), 2);
    await store.deleteAttestedNode(n1.spiffeId, 30);
    assert.equal(rawCount(path, 'SELECT count(*) FROM node_selectors WHERE spiffe_id = ?', n1.spiffeId), 0);
  });

  it('stores a bundle sequence as its decimal text, lossless up to 2^64-1', async () => {
    const { store, path } = freshStore();
    await store.setBundle({ trustDomain: td('example.org'), document: '{"keys":[]}', sequence: 18446744073709551615n }, 10);
    await store.close();
    assert.equal(rawCount(path, "SELECT count(*) FROM bundles WHERE sequence = '18446744073709551615'"), 1);
  });

  it('rolls back a batch that fails in SQLite: nothing written, no events, no onChange', async () => {
    const { store, path } = freshStore();
    await createOne(store, newEntry({ hint: 'before' }));
    const raw = new Database(path);
    raw.exec("CREATE TRIGGER fail_on_boom BEFORE INSERT ON entries WHEN NEW.hint = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    raw.close();
    const calls: number[] = [];
    store.onChange((n) => calls.push(n));
    const err = await assertRejects(
      store.createEntries(
        [
          newEntry({ hint: 'ok1', selectors: [sel('r', '1')] }),
          newEntry({ hint: 'ok2', selectors: [sel('r', '2')] }),
          newEntry({ hint: 'boom', selectors: [sel('r', '3')] }),
        ],
        10,
      ),
      'io',
      'create entries failed',
    );
    assert.match(err.message, /injected failure/);
    assert.ok(err.cause instanceof Error);
    assert.deepEqual(await ids(store), ['before']);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors'), 1);
    assert.equal(await store.latestEventId(), 1);
    assert.deepEqual(calls, []);
    // The store keeps working after the failure.
    await createOne(store, newEntry({ hint: 'after', selectors: [sel('r', '4')] }));
    assert.deepEqual(calls, [2]);
  });
});

describe('group commit of concurrent createEntries calls', () => {
  const web = (n: number): NewEntry => newEntry({ spiffeId: id(`spiffe://example.org/web${n}`) });

  it('commits calls made in one turn together, each caller getting its own results', async () => {
    const { store } = freshStore();
    const commits: number[] = [];
    store.onChange((latest) => commits.push(latest));
    const p1 = store.createEntries([web(1), web(2)], 1000);
    // A duplicate inside the second call fails only that item of that call.
    const p2 = store.createEntries([web(3), web(3), web(4)], 1001);
    const p3 = store.createEntries([web(5)], 1002);
    const [r1, r2, r3] = await Promise.all([p1, p2, p3]);
    assert.deepEqual(r1.map((r) => ('entry' in r ? r.entry.spiffeId : r.error.reason)), ['spiffe://example.org/web1', 'spiffe://example.org/web2']);
    assert.deepEqual(r2.map((r) => ('entry' in r ? r.entry.spiffeId : r.error.reason)), ['spiffe://example.org/web3', 'duplicate_entry', 'spiffe://example.org/web4']);
    const dup = r2[1]!;
    assert.ok('error' in dup && /created earlier in this batch/.test(dup.error.message), 'the duplicate names its own batch');
    assert.deepEqual(r3.map((r) => ('entry' in r ? r.entry.createdAt : -1)), [1002]);
    assert.equal(r1[0] && 'entry' in r1[0] ? r1[0].entry.createdAt : -1, 1000);
    // One transaction: one change notification for the five events.
    assert.deepEqual(commits, [5]);
    assert.equal(await store.countEntries(), 5);
  });

  it('a failing transaction rejects every queued call and commits none of them', async () => {
    const path = join(freshDir(), 'datastore.sqlite3');
    const store = openStore(path);
    // Another connection holds the write lock past the busy timeout would be slow; instead make
    // the commit itself fail: a trigger that aborts on the second call's entry.
    const other = new Database(path);
    other.exec(
      "CREATE TRIGGER fail_web2 BEFORE INSERT ON entries WHEN NEW.spiffe_id = 'spiffe://example.org/web2' " +
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    );
    other.close();
    const results = await Promise.allSettled([store.createEntries([web(1)], 1000), store.createEntries([web(2)], 1000), store.createEntries([web(3)], 1000)]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.status === 'rejected' && r.reason instanceof DataStoreError && r.reason.reason === 'io', String(r.status === 'rejected' ? r.reason : ''));
    }
    assert.equal(await store.countEntries(), 0, 'nothing of the failed group was committed');
    assert.deepEqual(await store.listEventsSince(0, 10), []);
    // The store still works afterwards.
    const [ok] = await store.createEntries([web(1)], 1001);
    assert.ok(ok && 'entry' in ok);
  });
});

describe('join tokens', () => {
  it('of 8 processes racing for one token exactly one gets it (20 rounds)', async () => {
    const { store, path } = freshStore();
    const moduleUrl = new URL('./store.js', import.meta.url).href;
    const childCode = `
      import { openSqliteDataStore } from ${JSON.stringify(moduleUrl)};
      import { createInterface } from 'node:readline';
      const store = openSqliteDataStore({ path: process.argv[1] });
      const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
      out({ ready: true });
      for await (const line of createInterface({ input: process.stdin })) {
        if (line === 'quit') break;
        try {
          const got = await store.consumeJoinToken(line);
          out({ got: got === undefined ? null : got });
        } catch (err) {
          out({ error: String(err) });
        }
      }
      await store.close();
    `;
    const children: ChildProcessWithoutNullStreams[] = [];
    const queues: Array<Array<(v: Record<string, unknown>) => void>> = [];
    const next = (i: number): Promise<Record<string, unknown>> => new Promise((res) => queues[i]!.push(res));
    for (let i = 0; i < 8; i++) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', childCode, path], { stdio: 'pipe' });
      children.push(child);
      queues.push([]);
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => {
        if (code !== 0) for (const r of queues[i]!.splice(0)) r({ error: `child exited ${code}: ${stderr}` });
      });
      createInterface({ input: child.stdout }).on('line', (line) => queues[i]!.shift()?.(JSON.parse(line) as Record<string, unknown>));
    }
    try {
      const ready = await Promise.all(children.map((_, i) => next(i)));
      assert.ok(ready.every((r) => r.ready === true), JSON.stringify(ready));
      for (let round = 0; round < 20; round++) {
        const h = sha(`race-${round}`);
        await store.createJoinToken({ hash: h, expiresAt: round });
        const answers = children.map((_, i) => next(i));
        for (const c of children) c.stdin.write(`${h}\n`);
        const results = await Promise.all(answers);
        assert.ok(results.every((r) => !('error' in r)), JSON.stringify(results));
        const winners = results.filter((r) => r.got !== null);
        assert.equal(winners.length, 1, `round ${round}: ${JSON.stringify(results)}`);
        assert.deepEqual(winners[0]!.got, { hash: h, expiresAt: round });
        assert.equal(await store.consumeJoinToken(h), undefined, 'gone for good');
      }
    } finally {
      for (const c of children) c.stdin.end('quit\n');
      await Promise.all(children.map((c) => new Promise((res) => (c.exitCode !== null ? res(null) : c.on('exit', res)))));
    }
  });
});

describe('change feed', () => {
  it('calls onChange after the commit, guards listener exceptions, and unsubscribes', async () => {
    const { store, path } = freshStore();
    const warnings: string[] = [];
    const logged = openStore(path, { warn: (_o, msg) => warnings.push(msg) });
    await store.close();
    const seen: Array<[number, number]> = [];
    logged.onChange(() => {
      throw new Error('listener bug');
    });
    const unsubscribe = logged.onChange((latest) => {
      // Another connection already sees the write: the listener runs after the commit.
      seen.push([latest, rawCount(path, 'SELECT count(*) FROM entries')]);
    });
    await createOne(logged, newEntry({ selectors: [sel('c', '1')] }));
    await logged.createEntries([newEntry({ selectors: [sel('c', '2')] }), newEntry({ selectors: [sel('c', '3')] })], 5);
    assert.deepEqual(seen, [
      [1, 1],
      [3, 3],
    ]);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0]!, /listener threw/);
    // Nothing appended: no call.
    await logged.createEntries([newEntry({ selectors: [sel('c', '1')] })], 6);
    await logged.deleteEntries(['missing'], 6);
    await logged.createJoinToken({ hash: sha('x'), expiresAt: 1 });
    assert.equal(seen.length, 2);
    unsubscribe();
    await createOne(logged, newEntry({ selectors: [sel('c', '4')] }));
    assert.equal(seen.length, 2);
  });
});

describe('integrity', () => {
  it('reports nothing on a healthy database and a foreign key violation on a damaged one', async () => {
    const { store, path } = freshStore();
    await createOne(store, newEntry());
    assert.equal(await store.checkIntegrity(), '');
    const raw = new Database(path);
    raw.pragma('foreign_keys = OFF');
    raw.prepare('INSERT INTO entry_selectors (entry_pk, type, value) VALUES (?, ?, ?)').run(999_999, 't', 'v');
    raw.close();
    assert.match(await store.checkIntegrity(), /foreign key violation: a row of entry_selectors references a missing entries row/);
  });

  it('reports child rows that disagree with the entry', async () => {
    const { store, path } = freshStore();
    const e = await createOne(store, newEntry({ selectors: [sel('a', '1'), sel('b', '2')] }));
    const raw = new Database(path);
    raw.prepare("DELETE FROM entry_selectors WHERE type = 'a'").run();
    raw.close();
    assert.equal(await store.checkIntegrity(), `entry ${JSON.stringify(e.id)}: 2 selectors recorded but 1 rows`);
  });
});

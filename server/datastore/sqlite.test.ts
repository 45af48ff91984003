import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';
import { newEntryId, openSqliteDataStore, type DataStoreLogger, type SqliteDataStore } from './sqlite.js';
import {
  DataStoreError,
  type AttestedNode,
  type DataStoreErrorReason,
  type EntryFilter,
  type NewEntry,
  type RegistrationEntry,
  type Selector,
  type SelectorMatch,
} from './types.js';
import { entryWithDefaults } from '../../test/support/entries.js';

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
const AGENT2 = id('spiffe://example.org/spire/agent/join_token/def');

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

  it('fails every operation after close with an io error', async () => {
    const { store } = freshStore();
    await store.close();
    await assertRejects(store.listEntries(), 'io', 'closed');
    await assertRejects(store.createEntries([newEntry()], 1), 'io', 'create entries');
  });
});

describe('registration entries', () => {
  it('round-trips every field, normalising selectors, DNS names and federatesWith', async () => {
    const { store, path } = freshStore();
    const input = newEntry({
      spiffeId: id('spiffe://example.org/ns/prod/sa/api'),
      parentId: AGENT,
      selectors: [sel('unix', 'uid:1000'), sel('k8s', 'ns:prod'), sel('unix', 'gid:0'), sel('k8s', 'ns:prod')],
      x509SvidTtl: 3600,
      jwtSvidTtl: 300,
      dnsNames: ['b.example.org', 'a.example.org', 'b.example.org'],
      federatesWith: [td('zeta.org'), td('alpha.org'), td('zeta.org')],
      admin: true,
      downstream: true,
      hint: 'api',
      entryExpiry: 99999,
    });
    const e = await createOne(store, input, 1234);
    assert.match(e.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(e, {
      id: e.id,
      spiffeId: 'spiffe://example.org/ns/prod/sa/api',
      parentId: AGENT,
      selectors: [sel('k8s', 'ns:prod'), sel('unix', 'gid:0'), sel('unix', 'uid:1000')],
      x509SvidTtl: 3600,
      jwtSvidTtl: 300,
      dnsNames: ['b.example.org', 'a.example.org'],
      federatesWith: ['alpha.org', 'zeta.org'],
      admin: true,
      downstream: true,
      hint: 'api',
      entryExpiry: 99999,
      revisionNumber: 0,
      createdAt: 1234,
      updatedAt: 1234,
    });
    assert.deepEqual(await store.getEntry(e.id), e);
    assert.deepEqual((await store.listEntries()).items, [e]);
    assert.equal(await store.getEntry('nope'), undefined);
    await store.close();
    assert.deepEqual(await openStore(path).getEntry(e.id), e, 'same after reopen');
  });

  it('detects duplicates (same spiffeId, parentId and selector set in any order), in the batch and in the DB', async () => {
    const { store } = freshStore();
    const first = await createOne(store, newEntry({ selectors: [sel('a', '1'), sel('b', '2')] }));
    const results = await store.createEntries(
      [
        newEntry({ selectors: [sel('b', '2'), sel('a', '1')], hint: 'same set, other order' }),
        newEntry({ selectors: [sel('b', '2'), sel('a', '1')], parentId: AGENT2, hint: 'other parent' }),
        newEntry({ selectors: [sel('a', '1')], hint: 'subset is different' }),
        newEntry({ selectors: [sel('a', '1'), sel('a', '1'), sel('b', '2')], hint: 'dup selector, same set' }),
        newEntry({ selectors: [sel('a', '1'), sel('b', '2')], parentId: AGENT2, hint: 'dup within batch' }),
        newEntry({ spiffeId: id('spiffe://example.org/other'), selectors: [sel('a', '1'), sel('b', '2')] }),
      ],
      2000,
    );
    const reasons = results.map((r) => ('error' in r ? r.error.reason : 'ok'));
    assert.deepEqual(reasons, ['duplicate_entry', 'ok', 'ok', 'duplicate_entry', 'duplicate_entry', 'ok']);
    const r0 = results[0]!;
    assert.ok('error' in r0 && r0.error.message.includes(first.id), 'names the existing entry');
    const r1 = results[1]!;
    const r4 = results[4]!;
    assert.ok('entry' in r1 && 'error' in r4);
    assert.ok(r4.error.message.includes(r1.entry.id) && r4.error.message.includes('earlier in this batch'));
    assert.equal(await store.countEntries(), 4);
    assert.equal(await store.latestEventId(), 4, 'one event per created entry only');
  });

  it('uses a given id, and reports a given id that exists (in the DB or earlier in the batch)', async () => {
    const { store } = freshStore();
    const e = await createOne(store, newEntry({ id: 'my-entry' }));
    assert.equal(e.id, 'my-entry');
    const results = await store.createEntries(
      [
        newEntry({ id: 'my-entry', hint: 'x', selectors: [sel('x', '1')] }),
        newEntry({ id: 'second', selectors: [sel('y', '1')] }),
        newEntry({ id: 'second', selectors: [sel('z', '1')] }),
        newEntry({ selectors: [sel('w', '1')], x509SvidTtl: -1 }),
        newEntry({ selectors: [sel('', '1')] }),
        newEntry({ spiffeId: 'not an id' as SpiffeId }),
        newEntry({ selectors: [sel('v', '1')] }),
      ],
      5,
    );
    assert.deepEqual(
      results.map((r) => ('error' in r ? r.error.reason : r.entry.id === 'second' ? 'second' : 'generated')),
      ['already_exists', 'second', 'already_exists', 'invalid', 'invalid', 'invalid', 'generated'],
    );
    const r2 = results[2]!;
    assert.ok('error' in r2 && r2.error.message.includes('earlier in this batch'));
    const r3 = results[3]!;
    assert.ok('error' in r3 && r3.error.message.includes('x509SvidTtl'));
    assert.equal(await store.countEntries(), 3);
  });

  describe('selector matching', () => {
    const { store } = freshStore();
    // hint names the entry. a1, b2, c3 are selectors.
    const a1 = sel('t', 'a1');
    const b2 = sel('t', 'b2');
    const c3 = sel('u', 'c3');
    const fixture: Array<[string, Selector[], SpiffeId]> = [
      ['A', [a1], AGENT],
      ['AB', [a1, b2], AGENT],
      ['BC', [b2, c3], AGENT],
      ['C', [c3], AGENT],
      ['none', [], AGENT],
      ['AB@2', [a1, b2], AGENT2],
    ];
    const ready = (async () => {
      for (const [hint, selectors, parentId] of fixture) await createOne(store, newEntry({ hint, selectors, parentId }));
    })();

    const cases: Array<[string, Selector[], SelectorMatch, string[]]> = [
      ['{a1,b2}', [b2, a1], 'exact', ['AB', 'AB@2']],
      ['{a1,b2}', [b2, a1], 'subset', ['A', 'AB', 'AB@2']],
      ['{a1,b2}', [b2, a1], 'superset', ['AB', 'AB@2']],
      ['{a1,b2}', [b2, a1], 'any', ['A', 'AB', 'AB@2', 'BC']],
      ['{a1}', [a1], 'exact', ['A']],
      ['{a1}', [a1], 'subset', ['A']],
      ['{a1}', [a1], 'superset', ['A', 'AB', 'AB@2']],
      ['{a1}', [a1], 'any', ['A', 'AB', 'AB@2']],
      ['{a1,b2,c3}', [a1, b2, c3, a1], 'subset', ['A', 'AB', 'AB@2', 'BC', 'C']],
      ['{a1,b2,c3}', [a1, b2, c3], 'superset', []],
      ['{b2,c3}', [c3, b2], 'exact', ['BC']],
      ['{}', [], 'exact', ['none']],
      ['{}', [], 'subset', []],
      ['{}', [], 'superset', ['A', 'AB', 'AB@2', 'BC', 'C', 'none']],
      ['{}', [], 'any', []],
      ['{t:c3} (type matters)', [sel('t', 'c3')], 'any', []],
    ];
    for (const [name, selectors, match, want] of cases) {
      it(`${match} ${name}`, async () => {
        await ready;
        assert.deepEqual(await ids(store, { bySelectors: { selectors, match } }), want);
      });
    }

    it('combines with byParentId and the other filters (AND)', async () => {
      await ready;
      assert.deepEqual(await ids(store, { bySelectors: { selectors: [a1, b2], match: 'subset' }, byParentId: AGENT }), ['A', 'AB']);
      assert.deepEqual(await ids(store, { byParentId: AGENT2 }), ['AB@2']);
      assert.deepEqual(await ids(store, { byHint: 'C', bySelectors: { selectors: [a1], match: 'any' } }), []);
      assert.deepEqual(await ids(store, { bySpiffeId: id('spiffe://example.org/workload'), byHint: 'BC' }), ['BC']);
    });

    it('rejects an unknown match mode', async () => {
      await ready;
      await assertRejects(store.listEntries({ bySelectors: { selectors: [a1], match: 'some' as SelectorMatch } }), 'invalid', 'match');
    });
  });

  it('filters by federatesWith in every mode, by downstream and by hint', async () => {
    const { store } = freshStore();
    const [x, y, z] = [td('x.org'), td('y.org'), td('z.org')];
    const fixture: Array<[string, TrustDomain[], boolean]> = [
      ['X', [x], false],
      ['XY', [y, x], true],
      ['YZ', [y, z], false],
      ['none', [], true],
    ];
    for (const [hint, federatesWith, downstream] of fixture) {
      await createOne(store, newEntry({ hint, federatesWith, downstream, selectors: [sel('h', hint)] }));
    }
    const fw = (trustDomains: TrustDomain[], match: SelectorMatch): EntryFilter => ({ byFederatesWith: { trustDomains, match } });
    assert.deepEqual(await ids(store, fw([y, x], 'exact')), ['XY']);
    assert.deepEqual(await ids(store, fw([x], 'exact')), ['X']);
    assert.deepEqual(await ids(store, fw([], 'exact')), ['none']);
    assert.deepEqual(await ids(store, fw([x, y], 'subset')), ['X', 'XY']);
    assert.deepEqual(await ids(store, fw([x, y], 'superset')), ['XY']);
    assert.deepEqual(await ids(store, fw([y], 'superset')), ['XY', 'YZ']);
    assert.deepEqual(await ids(store, fw([x, z], 'any')), ['X', 'XY', 'YZ']);
    assert.deepEqual(await ids(store, fw([td('w.org')], 'any')), []);
    assert.deepEqual(await ids(store, { byDownstream: true }), ['XY', 'none']);
    assert.deepEqual(await ids(store, { byDownstream: false }), ['X', 'YZ']);
    assert.deepEqual(await ids(store, { byHint: 'YZ' }), ['YZ']);
    assert.deepEqual(await ids(store, { ...fw([y], 'any'), byDownstream: true }), ['XY']);
  });

  it('pages through 250 entries 100 at a time, each exactly once, in id order', async () => {
    const { store } = freshStore();
    const batch = Array.from({ length: 250 }, (_, i) => newEntry({ selectors: [sel('n', String(i))], hint: i % 2 ? 'odd' : 'even' }));
    const created = await store.createEntries(batch, 1);
    assert.ok(created.every((r) => 'entry' in r));
    const seen: string[] = [];
    const sizes: number[] = [];
    let token = '';
    do {
      const page = await store.listEntries(undefined, { token, size: 100 });
      sizes.push(page.items.length);
      seen.push(...page.items.map((e) => e.id));
      for (const e of page.items) assert.equal(e.selectors.length, 1, 'children loaded for every entry of the page');
      token = page.nextToken;
    } while (token !== '');
    assert.deepEqual(sizes, [100, 100, 50]);
    assert.equal(new Set(seen).size, 250);
    assert.deepEqual(seen, [...seen].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));

    // With a filter, and a page size that divides the count exactly: no empty trailing page.
    const odd: string[] = [];
    let pages = 0;
    token = '';
    do {
      const page = await store.listEntries({ byHint: 'odd' }, { token, size: 25 });
      pages++;
      odd.push(...page.items.map((e) => e.hint));
      for (const e of page.items) assert.equal(e.selectors.length, 1);
      token = page.nextToken;
    } while (token !== '');
    assert.equal(pages, 5);
    assert.equal(odd.length, 125);
    assert.ok(odd.every((h) => h === 'odd'));

    await assertRejects(store.listEntries(undefined, { token: 'garbage!', size: 10 }), 'invalid', 'page token');
    const nodeToken = Buffer.from('n:x').toString('base64url');
    await assertRejects(store.listEntries(undefined, { token: nodeToken }), 'invalid', 'page token');
    await assertRejects(store.listEntries(undefined, { size: -1 }), 'invalid', 'page size');
  });

  it('orders ids by code point in full listings and in pages alike', async () => {
    const { store } = freshStore();
    // UTF-16 order would put the surrogate pair (U+1F600) before U+FFFD; code point order (SQLite) after.
    const given = ['b', 'a\u{1F600}', 'a\uFFFD', 'a~', 'A'];
    for (const [i, gid] of given.entries()) await createOne(store, newEntry({ id: gid, selectors: [sel('o', String(i))] }));
    const want = ['A', 'a~', 'a\uFFFD', 'a\u{1F600}', 'b'];
    assert.deepEqual((await store.listEntries()).items.map((e) => e.id), want);
    const paged: string[] = [];
    let token = '';
    do {
      const page = await store.listEntries(undefined, { token, size: 2 });
      paged.push(...page.items.map((e) => e.id));
      token = page.nextToken;
    } while (token !== '');
    assert.deepEqual(paged, want);
    await assertRejects(store.createEntries([newEntry({ hint: 'x\ud800y' })], 1).then((r) => {
      const first = r[0]!;
      if ('error' in first) throw first.error;
    }), 'invalid', 'lone surrogate');
  });

  it('treats SQL metacharacters in values as plain data', async () => {
    const { store, path } = freshStore();
    const nasty = "'; DROP TABLE entries; --";
    const stored = await createOne(store, newEntry({ hint: 'abc', selectors: [sel('unix', 'uid:100%'), sel('q', nasty)] }));
    await createOne(store, newEntry({ hint: 'plain', selectors: [sel('unix', 'uid:1000')] }));
    const probes: EntryFilter[] = [
      { byHint: nasty },
      { byHint: '%' },
      { byHint: 'a_c' },
      { byHint: "abc' OR '1'='1" },
      { bySpiffeId: nasty as SpiffeId },
      { byParentId: '%' as SpiffeId },
      { bySelectors: { selectors: [sel('unix', '%')], match: 'any' } },
      { bySelectors: { selectors: [sel('unix', 'uid:100_')], match: 'any' } },
      { bySelectors: { selectors: [sel('%', '%')], match: 'superset' } },
      { bySelectors: { selectors: [sel(nasty, nasty)], match: 'subset' } },
      { bySelectors: { selectors: [sel('"]', '\\"')], match: 'exact' } },
      { byFederatesWith: { trustDomains: [nasty as TrustDomain], match: 'any' } },
    ];
    for (const filter of probes) {
      assert.deepEqual((await store.listEntries(filter)).items, [], JSON.stringify(filter));
      assert.equal(await store.countEntries(filter), 0);
    }
    // The values themselves match exactly.
    assert.deepEqual(await ids(store, { bySelectors: { selectors: [sel('q', nasty)], match: 'any' } }), ['abc']);
    assert.deepEqual(await ids(store, { bySelectors: { selectors: [sel('unix', 'uid:100%')], match: 'any' } }), ['abc']);
    assert.deepEqual(await store.getEntry(stored.id), stored);
    assert.equal(await store.countEntries(), 2, 'nothing dropped');
    assert.equal(await store.checkIntegrity(), '');
    assert.equal(rawCount(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'entries'"), 1);
  });

  it('updateEntry replaces the mutable fields, bumps the revision and emits entry_updated', async () => {
    const { store } = freshStore();
    const e = await createOne(store, newEntry({ dnsNames: ['a.example'], federatesWith: [td('x.org')] }), 100);
    const other = await createOne(store, newEntry({ selectors: [sel('other', '1')] }), 100);
    const events: number[] = [];
    store.onChange((latest) => events.push(latest));
    const u1 = await store.updateEntry(
      {
        ...e,
        spiffeId: id('spiffe://example.org/renamed'),
        parentId: AGENT2,
        selectors: [sel('z', '9'), sel('a', '1')],
        x509SvidTtl: 60,
        jwtSvidTtl: 30,
        dnsNames: ['c.example', 'b.example'],
        federatesWith: [],
        admin: true,
        downstream: true,
        hint: 'new',
        entryExpiry: 5000,
        revisionNumber: 77, // ignored: the store owns the revision
        createdAt: 1, // ignored
      },
      200,
    );
    assert.deepEqual(u1, {
      id: e.id,
      spiffeId: 'spiffe://example.org/renamed',
      parentId: AGENT2,
      selectors: [sel('a', '1'), sel('z', '9')],
      x509SvidTtl: 60,
      jwtSvidTtl: 30,
      dnsNames: ['c.example', 'b.example'],
      federatesWith: [],
      admin: true,
      downstream: true,
      hint: 'new',
      entryExpiry: 5000,
      revisionNumber: 1,
      createdAt: 100,
      updatedAt: 200,
    });
    assert.deepEqual(await store.getEntry(e.id), u1);
    const u2 = await store.updateEntry(u1, 300);
    assert.equal(u2.revisionNumber, 2);
    assert.equal(u2.updatedAt, 300);
    const feed = await store.listEventsSince(2, 10);
    assert.deepEqual(
      feed.map((ev) => [ev.kind, ev.key, ev.at]),
      [
        ['entry_updated', e.id, 200],
        ['entry_updated', e.id, 300],
      ],
    );
    assert.deepEqual(events, [3, 4]);

    // Becoming a duplicate of another entry is refused and changes nothing.
    await assertRejects(store.updateEntry({ ...u2, spiffeId: other.spiffeId, parentId: other.parentId, selectors: other.selectors }, 400), 'duplicate_entry', other.id);
    assert.deepEqual(await store.getEntry(e.id), u2);
    await assertRejects(store.updateEntry({ ...u2, id: 'missing' }, 400), 'not_found', 'missing');
    await assertRejects(store.updateEntry({ ...u2, x509SvidTtl: 1.5 }, 400), 'invalid', 'x509SvidTtl');
    assert.equal(await store.latestEventId(), 4, 'failed updates emit nothing');
    assert.deepEqual(events, [3, 4]);
  });

  it('deleteEntries returns the deleted entries, reports unknown ids, and cascades to child rows', async () => {
    const { store, path } = freshStore();
    const a = await createOne(store, newEntry({ selectors: [sel('a', '1'), sel('a', '2')], dnsNames: ['x'], federatesWith: [td('f.org')] }));
    const b = await createOne(store, newEntry({ selectors: [sel('b', '1')] }));
    const aPk = rawCount(path, 'SELECT pk FROM entries WHERE id = ?', a.id);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors WHERE entry_pk = ?', aPk), 2);
    const results = await store.deleteEntries([a.id, 'unknown', a.id], 50);
    assert.equal(results.length, 3);
    assert.deepEqual(results[0], { entry: a });
    const r1 = results[1]!;
    const r2 = results[2]!;
    assert.ok('error' in r1 && r1.error.reason === 'not_found' && r1.error.message.includes('unknown'));
    assert.ok('error' in r2 && r2.error.reason === 'not_found', 'deleted earlier in the same call');
    assert.equal(await store.getEntry(a.id), undefined);
    assert.deepEqual(await store.getEntry(b.id), b);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors WHERE entry_pk = ?', aPk), 0);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_dns_names WHERE entry_pk = ?', aPk), 0);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_federates_with WHERE entry_pk = ?', aPk), 0);
    assert.equal(rawCount(path, 'SELECT count(*) FROM entry_selectors'), 1);
    const last = await store.listEventsSince(2, 10);
    assert.deepEqual(last.map((ev) => [ev.kind, ev.key, ev.at]), [['entry_deleted', a.id, 50]]);
    assert.equal(await store.checkIntegrity(), '');
  });

  it('pruneExpiredEntries deletes only entries whose expiry is set and past', async () => {
    const { store } = freshStore();
    const never = await createOne(store, newEntry({ hint: 'never', selectors: [sel('p', '0')], entryExpiry: 0 }));
    const past = await createOne(store, newEntry({ hint: 'past', selectors: [sel('p', '1')], entryExpiry: 100 }));
    await createOne(store, newEntry({ hint: 'at', selectors: [sel('p', '2')], entryExpiry: 150 }));
    await createOne(store, newEntry({ hint: 'future', selectors: [sel('p', '3')], entryExpiry: 200 }));
    assert.equal(await store.pruneExpiredEntries(150), 1);
    assert.deepEqual(await ids(store), ['at', 'future', 'never']);
    assert.equal(await store.getEntry(past.id), undefined);
    assert.deepEqual((await store.listEventsSince(4, 10)).map((ev) => [ev.kind, ev.key]), [['entry_deleted', past.id]]);
    assert.equal(await store.pruneExpiredEntries(150), 0);
    assert.equal(await store.pruneExpiredEntries(10_000), 2);
    assert.deepEqual(await ids(store), ['never']);
    assert.ok(await store.getEntry(never.id));
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

describe('entry IDs', () => {
  it('are UUID v7: the millisecond time first (so IDs sort by creation time), random below it', () => {
    const a = newEntryId(Date.UTC(2026, 0, 1));
    const b = newEntryId(Date.UTC(2026, 0, 1) + 1);
    for (const x of [a, b]) assert.match(x, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(a.slice(0, 13).replace('-', ''), Date.UTC(2026, 0, 1).toString(16).padStart(12, '0'));
    assert.ok(a < b, `${a} sorts before ${b}`);
    const same = new Set(Array.from({ length: 1000 }, () => newEntryId(5)));
    assert.equal(same.size, 1000, 'IDs of the same millisecond differ');
  });
});

describe('bulk entry reads', () => {
  it('getEntries returns the named entries keyed by ID, skipping unknown ones', async () => {
    const { store } = freshStore();
    const a = await createOne(store, newEntry({ spiffeId: id('spiffe://example.org/a'), dnsNames: ['a.example.org'] }));
    const b = await createOne(store, newEntry({ spiffeId: id('spiffe://example.org/b'), federatesWith: [td('partner.org')] }));
    await createOne(store, newEntry({ spiffeId: id('spiffe://example.org/c') }));
    const got = await store.getEntries([b.id, 'no-such-entry', a.id, a.id]);
    assert.deepEqual([...got.keys()].sort(), [a.id, b.id].sort());
    assert.deepEqual(got.get(a.id), await store.getEntry(a.id));
    assert.deepEqual(got.get(b.id), await store.getEntry(b.id));
    assert.equal((await store.getEntries([])).size, 0);
    await assert.rejects(store.getEntries([a.id, 7 as unknown as string]), (e: unknown) => e instanceof DataStoreError && e.reason === 'invalid' && /entry ids\[1\]/.test(e.message));
  });

  it('listAllEntries returns every entry exactly as getEntry does, children included', async () => {
    const { store } = freshStore();
    const created: RegistrationEntry[] = [];
    for (let i = 0; i < 40; i++) {
      created.push(
        await createOne(
          store,
          newEntry({
            spiffeId: id(`spiffe://example.org/w${i}`),
            selectors: i % 3 === 0 ? [] : [sel('unix', `uid:${i}`), sel('k8s', `ns:"quoted" \\ ${i}`)],
            dnsNames: i % 4 === 0 ? [`z${i}.example.org`, `a${i}.example.org`] : [],
            federatesWith: i % 5 === 0 ? [td('zeta.org'), td('alpha.org')] : [],
            hint: i % 2 === 0 ? '' : `hint \u00e9 ${i}`,
            admin: i % 7 === 0,
            downstream: i % 6 === 0,
            entryExpiry: i % 8 === 0 ? 5000 + i : 0,
            x509SvidTtl: i,
          }),
        ),
      );
    }
    // A deleted one is gone; an updated one comes back in its current version.
    await store.deleteEntries([created[1]!.id], 2000);
    const updated = await store.updateEntry({ ...created[2]!, hint: 'updated' }, 2001);
    const all = await store.listAllEntries();
    assert.equal(all.length, 39);
    const byId = new Map(all.map((e) => [e.id, e]));
    assert.equal(byId.has(created[1]!.id), false);
    assert.deepEqual(byId.get(updated.id), updated);
    for (const e of created.slice(3)) assert.deepEqual(byId.get(e.id), await store.getEntry(e.id));
    const empty = freshStore().store;
    assert.deepEqual(await empty.listAllEntries(), []);
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

  it('a duplicate across two calls of one turn is refused in the later call only', async () => {
    const { store } = freshStore();
    const [a, b] = await Promise.all([store.createEntries([web(1)], 1000), store.createEntries([web(1), web(2)], 1000)]);
    assert.ok(a[0] && 'entry' in a[0]);
    assert.ok(b[0] && 'error' in b[0] && b[0].error.reason === 'duplicate_entry');
    assert.ok(b[1] && 'entry' in b[1]);
    assert.equal(await store.countEntries(), 2);
  });

  it('a read or write issued right after queued creates sees them (calls take effect in call order)', async () => {
    const { store } = freshStore();
    const created = store.createEntries([web(1), web(2)], 1000);
    // Not awaited: these run before the group commit's setImmediate would.
    const count = store.countEntries();
    const listed = store.listAllEntries();
    const events = store.listEventsSince(0, 10);
    const [r] = await created;
    assert.ok(r && 'entry' in r);
    assert.equal(await count, 2);
    assert.equal((await listed).length, 2);
    assert.deepEqual((await events).map((e) => e.kind), ['entry_created', 'entry_created']);
    // A write right after: deleting the entry just queued finds it.
    const again = store.createEntries([web(3)], 1001);
    const del = store.deleteEntries([r.entry.id], 1001);
    const [d] = await del;
    assert.ok(d && 'entry' in d, 'the delete saw the queued create');
    const [r3] = await again;
    assert.ok(r3 && 'entry' in r3);
    assert.deepEqual((await store.listEventsSince(2, 10)).map((e) => [e.kind, e.key]), [
      ['entry_created', r3.entry.id],
      ['entry_deleted', r.entry.id],
    ]);
  });

  it('close commits queued creates first; after close, creates are refused', async () => {
    const path = join(freshDir(), 'datastore.sqlite3');
    const store = openSqliteDataStore({ path });
    const pending = store.createEntries([web(1)], 1000);
    await store.close();
    const [r] = await pending;
    assert.ok(r && 'entry' in r, 'queued before close: committed');
    await assert.rejects(store.createEntries([web(2)], 1000), (e: unknown) => e instanceof DataStoreError && e.reason === 'io' && /closed/.test(e.message));
    const reopened = openStore(path);
    assert.equal(await reopened.countEntries(), 1);
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

describe('attested nodes', () => {
  const node = (name: string, over: Partial<AttestedNode> = {}): Omit<AttestedNode, 'createdAt' | 'updatedAt'> => ({
    spiffeId: id(`spiffe://example.org/spire/agent/k8s_psat/c1/${name}`),
    attestationType: 'k8s_psat',
    certSerial: 'aa01',
    certNotAfter: 1000,
    newCertSerial: '',
    newCertNotAfter: 0,
    selectors: [sel('k8s_psat', 'cluster:c1')],
    banned: false,
    canReattest: true,
    ...over,
  });

  it('creates, reads, updates (incl. banned and selectors), lists with filters and deletes', async () => {
    const { store, path } = freshStore();
    const n1 = await store.createAttestedNode(node('n1', { selectors: [sel('z', '1'), sel('a', '1'), sel('z', '1')] }), 10);
    assert.deepEqual(n1.selectors, [sel('a', '1'), sel('z', '1')]);
    assert.equal(n1.createdAt, 10);
    assert.deepEqual(await store.getAttestedNode(n1.spiffeId), n1);
    await assertRejects(store.createAttestedNode(node('n1'), 11), 'already_exists', 'n1');
    const n2 = await store.createAttestedNode(
      node('n2', { attestationType: 'join_token', canReattest: false, certNotAfter: 500, spiffeId: id('spiffe://example.org/spire/agent/join_token/n2') }),
      12,
    );
    const n3 = await store.createAttestedNode(node('n3', { certNotAfter: 2000, selectors: [sel('a', '1')] }), 13);

    const updated = await store.updateAttestedNode(
      { ...n1, certSerial: 'bb02', certNotAfter: 3000, newCertSerial: 'cc03', newCertNotAfter: 4000, banned: true, selectors: [sel('q', '1')] },
      20,
    );
    assert.deepEqual(updated, {
      ...n1,
      certSerial: 'bb02',
      certNotAfter: 3000,
      newCertSerial: 'cc03',
      newCertNotAfter: 4000,
      banned: true,
      selectors: [sel('q', '1')],
      updatedAt: 20,
    });
    assert.deepEqual(await store.getAttestedNode(n1.spiffeId), updated);
    await assertRejects(store.updateAttestedNode({ ...n1, spiffeId: id('spiffe://example.org/nope') }, 21), 'not_found');
    await assertRejects(store.updateAttestedNode({ ...n1, certSerial: 'AB:CD' }, 21), 'invalid', 'certSerial');

    const names = async (f: Parameters<SqliteDataStore['listAttestedNodes']>[0]): Promise<string[]> => {
      const { items } = await store.listAttestedNodes(f);
      assert.equal(await store.countAttestedNodes(f), items.length);
      return items.map((n) => n.spiffeId.slice(n.spiffeId.lastIndexOf('/') + 1));
    };
    assert.deepEqual(await names(undefined), ['n2', 'n1', 'n3']); // ordered by SPIFFE ID
    assert.deepEqual(await names({ byBanned: true }), ['n1']);
    assert.deepEqual(await names({ byBanned: false }), ['n2', 'n3']);
    assert.deepEqual(await names({ byAttestationType: 'join_token' }), ['n2']);
    assert.deepEqual(await names({ byExpiresBefore: 2000 }), ['n2']);
    assert.deepEqual(await names({ byExpiresBefore: 2001 }), ['n2', 'n3']);
    assert.deepEqual(await names({ byCanReattest: false }), ['n2']);
    assert.deepEqual(await names({ bySelectors: { selectors: [sel('k8s_psat', 'cluster:c1')], match: 'exact' } }), ['n2']);
    assert.deepEqual(await names({ bySelectors: { selectors: [sel('a', '1'), sel('q', '1')], match: 'any' } }), ['n1', 'n3']);
    assert.deepEqual(await names({ bySelectors: { selectors: [sel('a', '1'), sel('q', '1')], match: 'subset' } }), ['n1', 'n3']);
    assert.deepEqual(await names({ bySelectors: { selectors: [sel('a', '1'), sel('q', '1')], match: 'superset' } }), []);
    assert.deepEqual(await names({ byBanned: false, bySelectors: { selectors: [sel('a', '1')], match: 'superset' } }), ['n3']);

    const p1 = await store.listAttestedNodes(undefined, { size: 2 });
    assert.equal(p1.items.length, 2);
    const p2 = await store.listAttestedNodes(undefined, { size: 2, token: p1.nextToken });
    assert.deepEqual(p2.items.map((n) => n.spiffeId), [n3.spiffeId]);
    assert.equal(p2.nextToken, '');
    assert.deepEqual(p2.items[0], n3);

    const removed = await store.deleteAttestedNode(n1.spiffeId, 30);
    assert.deepEqual(removed, updated);
    assert.equal(await store.getAttestedNode(n1.spiffeId), undefined);
    assert.equal(await store.deleteAttestedNode(n1.spiffeId, 31), undefined);
    assert.equal(rawCount(path, 'SELECT count(*) FROM node_selectors WHERE spiffe_id = ?', n1.spiffeId), 0);
    assert.deepEqual(
      (await store.listEventsSince(0, 100)).map((ev) => [ev.kind, ev.key.slice(ev.key.lastIndexOf('/') + 1), ev.at]),
      [
        ['node_created', 'n1', 10],
        ['node_created', 'n2', 12],
        ['node_created', 'n3', 13],
        ['node_updated', 'n1', 20],
        ['node_deleted', 'n1', 30],
      ],
    );
    assert.equal(n2.canReattest, false);
  });
});

describe('join tokens', () => {
  it('are single use, stored by hash only, and pruned by expiry', async () => {
    const { store } = freshStore();
    const h = sha('token-1');
    await store.createJoinToken({ hash: h, expiresAt: 100 });
    await assertRejects(store.createJoinToken({ hash: h, expiresAt: 100 }), 'already_exists');
    await assertRejects(store.createJoinToken({ hash: 'raw-token-value', expiresAt: 100 }), 'invalid', 'SHA-256');
    assert.deepEqual(await store.consumeJoinToken(h), { hash: h, expiresAt: 100 });
    assert.equal(await store.consumeJoinToken(h), undefined);
    assert.equal(await store.consumeJoinToken(sha('never created')), undefined);

    await store.createJoinToken({ hash: sha('a'), expiresAt: 10 });
    await store.createJoinToken({ hash: sha('b'), expiresAt: 20 });
    await store.createJoinToken({ hash: sha('c'), expiresAt: 30 });
    assert.equal(await store.pruneJoinTokens(20), 1);
    assert.equal(await store.consumeJoinToken(sha('a')), undefined);
    assert.deepEqual(await store.consumeJoinToken(sha('b')), { hash: sha('b'), expiresAt: 20 }, 'expired tokens are still returned');
    assert.equal(await store.latestEventId(), 0, 'join tokens are not in the change feed');
  });

  it('of 8 processes racing for one token exactly one gets it (20 rounds)', async () => {
    const { store, path } = freshStore();
    const moduleUrl = new URL('./sqlite.js', import.meta.url).href;
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

describe('bundles and CA journal', () => {
  it('stores bundles with a lossless uint64 sequence and emits bundle events', async () => {
    const { store, path } = freshStore();
    const max = 18446744073709551615n;
    await store.setBundle({ trustDomain: td('example.org'), document: '{"keys":[]}', sequence: max }, 10);
    await store.setBundle({ trustDomain: td('b.org'), document: '{"keys":[1]}', sequence: 1n }, 11);
    assert.deepEqual(await store.getBundle(td('example.org')), { trustDomain: 'example.org', document: '{"keys":[]}', sequence: max });
    await store.setBundle({ trustDomain: td('b.org'), document: '{"keys":[2]}', sequence: 2n }, 12);
    assert.deepEqual(await store.listBundles(), [
      { trustDomain: 'b.org', document: '{"keys":[2]}', sequence: 2n },
      { trustDomain: 'example.org', document: '{"keys":[]}', sequence: max },
    ]);
    await assertRejects(store.setBundle({ trustDomain: td('c.org'), document: '{}', sequence: max + 1n }, 13), 'invalid', 'sequence');
    await assertRejects(store.setBundle({ trustDomain: td('c.org'), document: '{}', sequence: -1n }, 13), 'invalid', 'sequence');
    await assertRejects(store.setBundle({ trustDomain: td('c.org'), document: '{}', sequence: 1 as unknown as bigint }, 13), 'invalid');
    assert.equal(await store.deleteBundle(td('b.org'), 14), true);
    assert.equal(await store.deleteBundle(td('b.org'), 15), false);
    assert.equal(await store.getBundle(td('b.org')), undefined);
    assert.deepEqual(
      (await store.listEventsSince(0, 10)).map((ev) => [ev.kind, ev.key, ev.at]),
      [
        ['bundle_updated', 'example.org', 10],
        ['bundle_updated', 'b.org', 11],
        ['bundle_updated', 'b.org', 12],
        ['bundle_deleted', 'b.org', 14],
      ],
    );
    await store.close();
    const again = openStore(path);
    assert.equal((await again.getBundle(td('example.org')))?.sequence, max);
    assert.equal(rawCount(path, "SELECT count(*) FROM bundles WHERE sequence = '18446744073709551615'"), 1);
  });

  it('keeps one CA journal document', async () => {
    const { store } = freshStore();
    assert.equal(await store.getCaJournal(), undefined);
    await store.setCaJournal('{"slots":[]}');
    await store.setCaJournal('{"slots":[{"id":"a"}]}');
    assert.equal(await store.getCaJournal(), '{"slots":[{"id":"a"}]}');
    await assertRejects(store.setCaJournal('{not json'), 'invalid', 'JSON');
    assert.equal(await store.getCaJournal(), '{"slots":[{"id":"a"}]}');
  });
});

describe('change feed', () => {
  it('has strictly increasing ids, pages with listEventsSince, and prunes keeping the newest', async () => {
    const { store } = freshStore();
    assert.equal(await store.latestEventId(), 0);
    assert.deepEqual(await store.listEventsSince(0, 10), []);
    const made = await store.createEntries(
      Array.from({ length: 7 }, (_, i) => newEntry({ selectors: [sel('e', String(i))] })),
      100,
    );
    await store.setBundle({ trustDomain: td('example.org'), document: '{}', sequence: 1n }, 200);
    const all = await store.listEventsSince(0, 100);
    assert.equal(all.length, 8);
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.id > all[i - 1]!.id);
    assert.deepEqual(all.slice(0, 7).map((ev) => ev.key), made.map((r) => ('entry' in r ? r.entry.id : '')));
    assert.equal(await store.latestEventId(), all[7]!.id);

    const paged: number[] = [];
    let afterId = 0;
    for (;;) {
      const page = await store.listEventsSince(afterId, 3);
      if (page.length === 0) break;
      assert.ok(page.length <= 3);
      paged.push(...page.map((ev) => ev.id));
      afterId = page[page.length - 1]!.id;
    }
    assert.deepEqual(paged, all.map((ev) => ev.id));
    assert.deepEqual(await store.listEventsSince(all[5]!.id, 100), all.slice(6));
    assert.deepEqual(await store.listEventsSince(0, 0), []);

    assert.equal(await store.pruneEvents(150), 7, 'events before 150 go');
    assert.deepEqual(await store.listEventsSince(0, 100), [all[7]]);
    assert.equal(await store.pruneEvents(10_000), 0, 'the newest event is always kept');
    assert.equal(await store.latestEventId(), all[7]!.id);
    await store.setBundle({ trustDomain: td('example.org'), document: '{}', sequence: 2n }, 300);
    assert.equal(await store.latestEventId(), all[7]!.id + 1, 'ids continue after pruning');
    assert.equal(await store.pruneEvents(10_000), 1);
  });

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

/**
 * The datastore contract as tests: what every DataStore backend must do, through the interface
 * only (server/datastore/types.ts), so a second backend runs the same assertions. A backend's
 * runner calls datastoreContract with a factory of fresh, empty stores and a way to reopen one
 * (test/datastore/sqlite.test.ts for SQLite). What can only be checked below the interface
 * (files, pragmas, schema migrations, child rows, fault injection into the database) stays in
 * the backend's own tests (server/datastore/sqlite/sqlite.test.ts).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import {
  DataStoreError,
  type AttestedNode,
  type DataStore,
  type DataStoreErrorReason,
  type EntryFilter,
  type NewEntry,
  type RecordExporter,
  type RegistrationEntry,
  type Selector,
  type SelectorMatch,
  type StoredBundle,
} from '../../server/datastore/types.js';
import { entryWithDefaults } from '../support/entries.js';

const id = (s: string): SpiffeId => parseSpiffeId(s);
const td = (s: string): TrustDomain => parseTrustDomain(s);
const sel = (type: string, value: string): Selector => ({ type, value });
const AGENT = id('spiffe://example.org/spire/agent/join_token/abc');
const AGENT2 = id('spiffe://example.org/spire/agent/join_token/def');
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

export function newEntry(over: Partial<NewEntry> = {}): NewEntry {
  return entryWithDefaults({ spiffeId: id('spiffe://example.org/workload'), parentId: AGENT, selectors: [sel('unix', 'uid:1000')], ...over });
}

export async function createOne(store: DataStore, e: NewEntry, now = 1000): Promise<RegistrationEntry> {
  const [r] = await store.createEntries([e], now);
  assert.ok(r !== undefined && 'entry' in r, `create failed: ${r && 'error' in r ? r.error.message : '?'}`);
  return r.entry;
}

export async function assertRejects(p: Promise<unknown>, reason: DataStoreErrorReason, mention?: string): Promise<DataStoreError> {
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

/** The hints of the entries a filter lists, sorted; checks countEntries agrees. */
export async function hints(store: DataStore, filter?: EntryFilter): Promise<string[]> {
  const { items, nextToken } = await store.listEntries(filter);
  assert.equal(nextToken, '');
  assert.equal(await store.countEntries(filter), items.length, 'countEntries agrees with listEntries');
  return items.map((e) => e.hint).sort();
}

/** Filters whose values are SQL (or other query language) metacharacters: they must match nothing. */
export const NASTY = "'; DROP TABLE entries; --";
export const METACHARACTER_FILTERS: EntryFilter[] = [
  { byHint: NASTY },
  { byHint: '%' },
  { byHint: 'a_c' },
  { byHint: "abc' OR '1'='1" },
  { bySpiffeId: NASTY as SpiffeId },
  { byParentId: '%' as SpiffeId },
  { bySelectors: { selectors: [sel('unix', '%')], match: 'any' } },
  { bySelectors: { selectors: [sel('unix', 'uid:100_')], match: 'any' } },
  { bySelectors: { selectors: [sel('%', '%')], match: 'superset' } },
  { bySelectors: { selectors: [sel(NASTY, NASTY)], match: 'subset' } },
  { bySelectors: { selectors: [sel('"]', '\\"')], match: 'exact' } },
  { byFederatesWith: { trustDomains: [NASTY as TrustDomain], match: 'any' } },
];

/**
 * Registers the contract tests for one backend. `open` returns a fresh, empty store; `reopen`
 * another handle on the data of `store` (which may be closed), as a restarted server would
 * open it. Every store opened here is closed after the tests.
 */
export function datastoreContract(name: string, open: () => Promise<DataStore>, reopen: (store: DataStore) => Promise<DataStore>): void {
  const opened: DataStore[] = [];
  after(async () => {
    for (const s of opened) await s.close();
  });
  const fresh = async (): Promise<DataStore> => {
    const s = await open();
    opened.push(s);
    return s;
  };
  const again = async (store: DataStore): Promise<DataStore> => {
    const s = await reopen(store);
    opened.push(s);
    return s;
  };
  const ids = hints;

  describe(`datastore contract: ${name}`, () => {
    describe('closing', () => {
      it('fails every operation after close with an io error', async () => {
        const store = await fresh();
        await store.close();
        await assertRejects(store.listEntries(), 'io', 'closed');
        await assertRejects(store.createEntries([newEntry()], 1), 'io', 'create entries');
      });
    });

    describe('registration entries', () => {
      it('round-trips every field, normalising selectors, DNS names and federatesWith', async () => {
        const store = await fresh();
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
        assert.deepEqual(await (await again(store)).getEntry(e.id), e, 'same after reopen');
      });

      it('detects duplicates (same spiffeId, parentId and selector set in any order), in the batch and in the DB', async () => {
        const store = await fresh();
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
        const store = await fresh();
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
        let store: DataStore;
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
          store = await fresh();
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
        const store = await fresh();
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
        const store = await fresh();
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
        const store = await fresh();
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
        const store = await fresh();
        const nasty = NASTY;
        const stored = await createOne(store, newEntry({ hint: 'abc', selectors: [sel('unix', 'uid:100%'), sel('q', nasty)] }));
        await createOne(store, newEntry({ hint: 'plain', selectors: [sel('unix', 'uid:1000')] }));
        const probes = METACHARACTER_FILTERS;
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
      });

      it('updateEntry replaces the mutable fields, bumps the revision and emits entry_updated', async () => {
        const store = await fresh();
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

      it('deleteEntries returns the deleted entries and reports unknown ids', async () => {
        const store = await fresh();
        const a = await createOne(store, newEntry({ selectors: [sel('a', '1'), sel('a', '2')], dnsNames: ['x'], federatesWith: [td('f.org')] }));
        const b = await createOne(store, newEntry({ selectors: [sel('b', '1')] }));
        const results = await store.deleteEntries([a.id, 'unknown', a.id], 50);
        assert.equal(results.length, 3);
        assert.deepEqual(results[0], { entry: a });
        const r1 = results[1]!;
        const r2 = results[2]!;
        assert.ok('error' in r1 && r1.error.reason === 'not_found' && r1.error.message.includes('unknown'));
        assert.ok('error' in r2 && r2.error.reason === 'not_found', 'deleted earlier in the same call');
        assert.equal(await store.getEntry(a.id), undefined);
        assert.deepEqual(await store.getEntry(b.id), b);
        const last = await store.listEventsSince(2, 10);
        assert.deepEqual(last.map((ev) => [ev.kind, ev.key, ev.at]), [['entry_deleted', a.id, 50]]);
        assert.equal(await store.checkIntegrity(), '');
      });

      it('pruneExpiredEntries deletes only entries whose expiry is set and past', async () => {
        const store = await fresh();
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
    });

    describe('bulk entry reads', () => {
      it('getEntries returns the named entries keyed by ID, skipping unknown ones', async () => {
        const store = await fresh();
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
        const store = await fresh();
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
        const empty = await fresh();
        assert.deepEqual(await empty.listAllEntries(), []);
      });
    });

    describe('calls take effect in call order', () => {
      const web = (n: number): NewEntry => newEntry({ spiffeId: id(`spiffe://example.org/web${n}`) });

      it('a duplicate across two calls of one turn is refused in the later call only', async () => {
        const store = await fresh();
        const [a, b] = await Promise.all([store.createEntries([web(1)], 1000), store.createEntries([web(1), web(2)], 1000)]);
        assert.ok(a[0] && 'entry' in a[0]);
        assert.ok(b[0] && 'error' in b[0] && b[0].error.reason === 'duplicate_entry');
        assert.ok(b[1] && 'entry' in b[1]);
        assert.equal(await store.countEntries(), 2);
      });

      it('a read or write issued right after queued creates sees them (calls take effect in call order)', async () => {
        const store = await fresh();
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
        const store = await fresh();
        const pending = store.createEntries([web(1)], 1000);
        await store.close();
        const [r] = await pending;
        assert.ok(r && 'entry' in r, 'queued before close: committed');
        await assert.rejects(store.createEntries([web(2)], 1000), (e: unknown) => e instanceof DataStoreError && e.reason === 'io' && /closed/.test(e.message));
        const reopened = await again(store);
        assert.equal(await reopened.countEntries(), 1);
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
        const store = await fresh();
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

        const names = async (f: Parameters<DataStore['listAttestedNodes']>[0]): Promise<string[]> => {
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
        const store = await fresh();
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
    });

    describe('bundles and CA journal', () => {
      it('stores bundles with a lossless uint64 sequence and emits bundle events', async () => {
        const store = await fresh();
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
        const reopened = await again(store);
        assert.equal((await reopened.getBundle(td('example.org')))?.sequence, max);
      });

      it('keeps one CA journal document', async () => {
        const store = await fresh();
        assert.equal(await store.getCaJournal(), undefined);
        await store.setCaJournal('{"slots":[]}');
        await store.setCaJournal('{"slots":[{"id":"a"}]}');
        assert.equal(await store.getCaJournal(), '{"slots":[{"id":"a"}]}');
        await assertRejects(store.setCaJournal('{not json'), 'invalid', 'JSON');
        assert.equal(await store.getCaJournal(), '{"slots":[{"id":"a"}]}');
      });

      it('keeps one CA journal per server; a server adopts the journal without an ID once, never over its own', async () => {
        const store = await fresh();
        await store.setCaJournal('{"who":"legacy"}');
        await store.setCaJournal('{"who":"b"}', 'server-b');
        assert.equal(await store.getCaJournal('server-a'), undefined);
        assert.equal(await store.getCaJournal('server-b'), '{"who":"b"}');
        assert.equal(await store.getCaJournal(''), '{"who":"legacy"}');
        assert.equal(await store.adoptCaJournal('', 'server-b'), false, 'server-b has its own journal: nothing moves');
        assert.equal(await store.getCaJournal(), '{"who":"legacy"}');
        const [a, c] = await Promise.all([store.adoptCaJournal('', 'server-a'), store.adoptCaJournal('', 'server-c')]);
        assert.equal(Number(a) + Number(c), 1, 'exactly one server adopts it');
        assert.equal(await store.getCaJournal(a ? 'server-a' : 'server-c'), '{"who":"legacy"}');
        assert.equal(await store.getCaJournal(), undefined);
        assert.equal(await store.getCaJournal('server-b'), '{"who":"b"}');
        await assertRejects(store.getCaJournal('bad id'), 'invalid', 'server ID');
        await assertRejects(store.setCaJournal('{}', 'x'.repeat(129)), 'invalid', 'server ID');
        await store.close();
        const reopened = await again(store);
        assert.equal(await reopened.getCaJournal('server-b'), '{"who":"b"}');
      });

      it('lists every server\'s CA journal (the one without an ID too), sorted by server ID, as last written', async () => {
        const store = await fresh();
        assert.deepEqual(await store.listCaJournals(), []);
        await store.setCaJournal('{"who":"b"}', 'server-b');
        await store.setCaJournal('{"who":"legacy"}');
        await store.updateBundle(td('example.org'), () => ({ caJournal: { serverId: 'server-a', document: '{"who":"a"}' } }), 1);
        await store.setCaJournal('{"who":"b","n":2}', 'server-b');
        const all = [
          { serverId: '', document: '{"who":"legacy"}' },
          { serverId: 'server-a', document: '{"who":"a"}' },
          { serverId: 'server-b', document: '{"who":"b","n":2}' },
        ];
        assert.deepEqual(await store.listCaJournals(), all);
        assert.equal(await store.adoptCaJournal('', 'server-c'), true);
        assert.deepEqual(await store.listCaJournals(), [all[1], all[2], { serverId: 'server-c', document: '{"who":"legacy"}' }]);
        await store.close();
        const reopened = await again(store);
        assert.deepEqual((await reopened.listCaJournals()).map((j) => j.serverId), ['server-a', 'server-b', 'server-c']);
      });

      it('updateBundle: read-modify-write with the journal in one transaction; the sequence must grow; nothing written on refusal', async () => {
        const store = await fresh();
        const T = td('example.org');
        const seen: Array<bigint | undefined> = [];
        const first = await store.updateBundle(T, (cur) => {
          seen.push(cur?.sequence);
          return { bundle: { trustDomain: T, document: '{"keys":[1]}', sequence: 1n }, caJournal: { serverId: 's1', document: '{"n":1}' } };
        }, 20);
        assert.deepEqual(first, { trustDomain: T, document: '{"keys":[1]}', sequence: 1n });
        assert.deepEqual(seen, [undefined]);
        assert.equal(await store.getCaJournal('s1'), '{"n":1}');

        // A journal alone: the bundle stays, no bundle event.
        const latest = await store.latestEventId();
        assert.equal((await store.updateBundle(T, () => ({ caJournal: { serverId: 's1', document: '{"n":2}' } }), 21))?.sequence, 1n);
        assert.equal(await store.latestEventId(), latest);
        assert.equal(await store.getCaJournal('s1'), '{"n":2}');

        // A sequence that does not grow is refused; the journal of the same update is not written.
        await assertRejects(
          store.updateBundle(T, () => ({ bundle: { trustDomain: T, document: '{"keys":[2]}', sequence: 1n }, caJournal: { serverId: 's1', document: '{"n":3}' } }), 22),
          'invalid',
          'not above the stored sequence',
        );
        await assertRejects(store.updateBundle(T, () => ({ bundle: { trustDomain: td('other.org'), document: '{}', sequence: 5n } }), 22), 'invalid', 'other.org');
        await assert.rejects(store.updateBundle(T, () => {
          throw new Error('callback failed');
        }, 22), /callback failed/);
        assert.deepEqual(await store.getBundle(T), { trustDomain: T, document: '{"keys":[1]}', sequence: 1n });
        assert.equal(await store.getCaJournal('s1'), '{"n":2}');
        assert.equal(await store.latestEventId(), latest);

        await store.updateBundle(T, (cur) => ({ bundle: { trustDomain: T, document: '{"keys":[1,2]}', sequence: cur!.sequence + 1n } }), 23);
        const events = await store.listEventsSince(latest, 10);
        assert.deepEqual(events.map((e) => [e.kind, e.key, e.at]), [['bundle_updated', 'example.org', 23]]);
      });

      it('updateBundle from two handles at once loses no update (writes are serialized across connections)', async () => {
        const a = await fresh();
        const b = await again(a);
        const T = td('example.org');
        const add = (store: DataStore, item: string): Promise<StoredBundle | undefined> =>
          store.updateBundle(T, (cur) => {
            const items = cur === undefined ? [] : (JSON.parse(cur.document) as string[]);
            return { bundle: { trustDomain: T, document: JSON.stringify([...items, item]), sequence: (cur?.sequence ?? 0n) + 1n } };
          }, 30);
        const N = 12;
        await Promise.all(Array.from({ length: N }, (_, i) => [add(a, `a${i}`), add(b, `b${i}`)]).flat());
        const final = (await a.getBundle(T))!;
        assert.equal(final.sequence, BigInt(2 * N));
        assert.deepEqual((JSON.parse(final.document) as string[]).sort(), Array.from({ length: N }, (_, i) => [`a${i}`, `b${i}`]).flat().sort());
      });
    });

    describe('record export', () => {
      it('exports every record as stored, in one snapshot, and counts them', async () => {
        const store = (await fresh()) as DataStore & RecordExporter;
        assert.equal(typeof store.exportRecords, 'function', 'the factory opens stores that export their records');
        assert.deepEqual(await store.countRecords(), { entries: 0, nodes: 0, joinTokens: 0, bundles: 0, caJournals: 0, federationRelationships: 0 });
        assert.deepEqual(await store.exportRecords(), { entries: [], nodes: [], joinTokens: [], bundles: [], caJournals: [], federationRelationships: [] });
        const first = await createOne(store, newEntry({ hint: 'first', dnsNames: ['b.example', 'a.example'], federatesWith: [td('z.org'), td('a.org')] }), 100);
        const second = await createOne(store, newEntry({ hint: 'second', spiffeId: id('spiffe://example.org/other') }), 101);
        const updated = await store.updateEntry({ ...first, entryExpiry: 5000 }, 150);
        const node = await store.createAttestedNode(
          { spiffeId: AGENT, attestationType: 'join_token', certSerial: '0a', certNotAfter: 900, newCertSerial: '', newCertNotAfter: 0, selectors: [sel('b', '2'), sel('a', '1')], banned: true, canReattest: false },
          200,
        );
        await store.createJoinToken({ hash: sha('t2'), expiresAt: 20 });
        await store.createJoinToken({ hash: sha('t1'), expiresAt: 10 });
        await store.setBundle({ trustDomain: td('example.org'), document: '{"keys":[]}', sequence: 3n }, 300);
        await store.setCaJournal('{"version":1}');
        await store.setCaJournal('{"version":2}', 'b-server');
        await store.setCaJournal('{"version":3}', 'a-server');
        await store.createFederationRelationship({ trustDomain: td('z.org'), bundleEndpointUrl: 'https://z.org:8443', bundleEndpointProfile: 'https_web', endpointSpiffeId: '' }, 310);
        await store.createFederationRelationship(
          { trustDomain: td('a.org'), bundleEndpointUrl: 'https://a.org', bundleEndpointProfile: 'https_spiffe', endpointSpiffeId: 'spiffe://a.org/spire/server' },
          311,
        );
        await store.setFederationRefreshState(td('a.org'), { lastAttemptAt: 320, lastSuccessAt: 320, lastError: '', lastSequence: (1n << 64n) - 1n });
        const records = await store.exportRecords();
        assert.deepEqual(records.entries, [updated, second], 'entries complete (revision, times, DNS order, sorted federatesWith), in creation order');
        assert.equal(records.entries[0]!.revisionNumber, 1);
        assert.deepEqual(records.nodes, [node]);
        assert.deepEqual(records.joinTokens, [{ hash: sha('t1'), expiresAt: 10 }, { hash: sha('t2'), expiresAt: 20 }].sort((a, b) => (a.hash < b.hash ? -1 : 1)), 'token hashes, sorted');
        assert.deepEqual(records.bundles, [{ trustDomain: 'example.org', document: '{"keys":[]}', sequence: 3n, updatedAt: 300 }], 'bundles with their update time');
        assert.deepEqual(
          records.caJournals,
          [
            { serverId: '', document: '{"version":1}' },
            { serverId: 'a-server', document: '{"version":3}' },
            { serverId: 'b-server', document: '{"version":2}' },
          ],
          'every server\'s CA journal, by server ID',
        );
        assert.deepEqual(
          records.federationRelationships.map((r) => [r.trustDomain, r.createdAt, r.refresh.lastSequence]),
          [
            ['a.org', 311, (1n << 64n) - 1n],
            ['z.org', 310, 0n],
          ],
          'federation relationships with their refresh state, by trust domain',
        );
        assert.deepEqual(await store.countRecords(), { entries: 2, nodes: 1, joinTokens: 2, bundles: 1, caJournals: 3, federationRelationships: 2 });
      });
    });

    describe('federation relationships', () => {
      const web = { trustDomain: td('web.org'), bundleEndpointUrl: 'https://bundle.web.org/', bundleEndpointProfile: 'https_web' as const, endpointSpiffeId: '' };
      const spf = {
        trustDomain: td('spf.org'),
        bundleEndpointUrl: 'https://127.0.0.1:8443',
        bundleEndpointProfile: 'https_spiffe' as const,
        endpointSpiffeId: 'spiffe://spf.org/spire/server',
      };

      it('create, get, list (by trust domain), update keeps the refresh state, delete', async () => {
        const store = await fresh();
        const created = await store.createFederationRelationship(web, 100);
        assert.deepEqual(created, { ...web, createdAt: 100, updatedAt: 100, refresh: { lastAttemptAt: 0, lastSuccessAt: 0, lastError: '', lastSequence: 0n } });
        await store.createFederationRelationship(spf, 101);
        assert.deepEqual(await store.getFederationRelationship(td('web.org')), created);
        assert.equal(await store.getFederationRelationship(td('none.org')), undefined);
        assert.deepEqual((await store.listFederationRelationships()).map((r) => r.trustDomain), ['spf.org', 'web.org']);
        await assertRejects(store.createFederationRelationship({ ...web, bundleEndpointUrl: 'https://other/' }, 102), 'already_exists', 'web.org');

        assert.equal(await store.setFederationRefreshState(td('spf.org'), { lastAttemptAt: 110, lastSuccessAt: 105, lastError: 'connect ECONNREFUSED', lastSequence: 7n }), true);
        assert.equal(await store.setFederationRefreshState(td('none.org'), { lastAttemptAt: 1, lastSuccessAt: 0, lastError: '', lastSequence: 0n }), false);
        const moved = await store.updateFederationRelationship({ ...spf, bundleEndpointUrl: 'https://127.0.0.2:8443', endpointSpiffeId: 'spiffe://spf.org/other' }, 120);
        assert.deepEqual(moved, {
          ...spf,
          bundleEndpointUrl: 'https://127.0.0.2:8443',
          endpointSpiffeId: 'spiffe://spf.org/other',
          createdAt: 101,
          updatedAt: 120,
          refresh: { lastAttemptAt: 110, lastSuccessAt: 105, lastError: 'connect ECONNREFUSED', lastSequence: 7n },
        });
        await assertRejects(store.updateFederationRelationship({ ...web, trustDomain: td('none.org') }, 121), 'not_found', 'none.org');

        const reopened = await again(store);
        assert.deepEqual(await reopened.getFederationRelationship(td('spf.org')), moved, 'persisted');
        assert.equal(await reopened.deleteFederationRelationship(td('spf.org')), true);
        assert.equal(await reopened.deleteFederationRelationship(td('spf.org')), false);
        assert.deepEqual((await reopened.listFederationRelationships()).map((r) => r.trustDomain), ['web.org']);
      });

      it('refuses what a store cannot hold: a bad trust domain, a URL that is not https, an unknown profile, a bad endpoint SPIFFE ID', async () => {
        const store = await fresh();
        await assertRejects(store.createFederationRelationship({ ...web, trustDomain: 'Bad Domain' as TrustDomain }, 1), 'invalid', 'trust domain');
        await assertRejects(store.createFederationRelationship({ ...web, bundleEndpointUrl: 'http://web.org/' }, 1), 'invalid', 'https');
        await assertRejects(store.createFederationRelationship({ ...web, bundleEndpointProfile: 'http' as 'https_web' }, 1), 'invalid', 'profile');
        await assertRejects(store.createFederationRelationship({ ...spf, endpointSpiffeId: 'not-an-id' }, 1), 'invalid', 'endpoint SPIFFE ID');
        await assertRejects(store.createFederationRelationship({ ...web, endpointSpiffeId: 'spiffe://web.org/x' }, 1), 'invalid', 'https_spiffe');
        await store.createFederationRelationship(web, 1);
        await assertRejects(store.setFederationRefreshState(td('web.org'), { lastAttemptAt: 1, lastSuccessAt: 0, lastError: '', lastSequence: -1n }), 'invalid', 'lastSequence');
        assert.deepEqual((await store.listFederationRelationships()).map((r) => r.trustDomain), ['web.org'], 'nothing else written');
      });
    });

    describe('change feed', () => {
      it('has strictly increasing ids, pages with listEventsSince, and prunes keeping the newest', async () => {
        const store = await fresh();
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

      it('calls onChange after each commit that appended events, guards listener exceptions, and unsubscribes', async () => {
        const store = await fresh();
        const seen: number[] = [];
        store.onChange(() => {
          throw new Error('listener bug');
        });
        const unsubscribe = store.onChange((latest) => seen.push(latest));
        await createOne(store, newEntry({ selectors: [sel('c', '1')] }));
        await store.createEntries([newEntry({ selectors: [sel('c', '2')] }), newEntry({ selectors: [sel('c', '3')] })], 5);
        assert.deepEqual(seen, [1, 3]);
        // Nothing appended: no call.
        await store.createEntries([newEntry({ selectors: [sel('c', '1')] })], 6);
        await store.deleteEntries(['missing'], 6);
        await store.createJoinToken({ hash: sha('x'), expiresAt: 1 });
        assert.equal(seen.length, 2);
        unsubscribe();
        await createOne(store, newEntry({ selectors: [sel('c', '4')] }));
        assert.equal(seen.length, 2);
        assert.throws(() => store.onChange('nope' as unknown as () => void), (e: unknown) => e instanceof DataStoreError && e.reason === 'invalid');
      });
    });
  });
}

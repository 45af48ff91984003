import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../../spiffe/id.js';
import type { RegistrationEntry } from '../datastore/types.js';
import { EntryIndex, serverIdOf } from './entryindex.js';
import { ClosureStore, type Closure, type Delta } from './closures.js';
import { entryWithDefaults } from '../../test/support/entries.js';

const td = parseTrustDomain('example.org');
const SERVER = serverIdOf(td);
const T0 = 1_700_000_000;

function id(path: string): SpiffeId {
  return parseSpiffeId(`spiffe://example.org${path}`);
}
const A = id('/spire/agent/join_token/a');
const B = id('/spire/agent/join_token/b');
const C = id('/spire/agent/join_token/c');

function entry(eid: string, spiffeId: SpiffeId, parentId: SpiffeId, extra: Partial<RegistrationEntry> = {}): RegistrationEntry {
  return {
    id: eid,
    ...entryWithDefaults({ spiffeId, parentId, selectors: [{ type: 'unix', value: 'uid:1000' }] }),
    revisionNumber: 0,
    createdAt: T0,
    updatedAt: T0,
    ...extra,
  };
}

/** An EntryIndex that counts full closure walks (ClosureStore computes a closure with forEachChild only). */
class CountingIndex extends EntryIndex {
  walks = 0;
  override forEachChild(parentId: string, now: number, fn: (entry: RegistrationEntry) => void): void {
    this.walks++;
    super.forEachChild(parentId, now, fn);
  }
}

function setup(entries: RegistrationEntry[]): { index: CountingIndex; store: ClosureStore<string> } {
  const index = new CountingIndex({ trustDomain: td, now: () => T0 });
  index.load(entries);
  return { index, store: new ClosureStore<string>(index) };
}

const sorted = (xs: Iterable<string>): string[] => [...xs].sort();
const roots = (cs: Iterable<Closure<string>>): string[] => sorted(Array.from(cs, (c) => c.root));
const delta = (d: Delta): { added: string[]; removed: string[] } => ({ added: sorted(d.added), removed: sorted(d.removed) });

/** Applies a change to the index, then to closure `c`, as AuthorizationCache does. */
function change(index: EntryIndex, store: ClosureStore<string>, c: Closure<string>, before: RegistrationEntry | undefined, after: RegistrationEntry | undefined): Delta {
  const eid = (after ?? before)!.id;
  if (after !== undefined) index.upsert(after);
  else index.remove(eid);
  return store.update(c, { id: eid, before, after }, T0);
}

describe('ClosureStore', () => {
  it('a closure holds what its root reaches, counts each reached ID per holder, and maps every reached ID back to it', () => {
    const { store } = setup([
      entry('w1', id('/w'), A),
      entry('w2', id('/w'), A),
      entry('w-child', id('/w/c'), id('/w')),
      entry('other', id('/o'), B),
    ]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    assert.equal(c.root, A);
    assert.deepEqual(sorted(c.entries.keys()), ['w-child', 'w1', 'w2']);
    assert.deepEqual(
      Object.fromEntries([...c.reached].sort(([p], [q]) => p.localeCompare(q))),
      { [A]: 1, [id('/w')]: 2, [id('/w/c')]: 1 },
      'the root once, /w by both entries that have it',
    );
    for (const r of [A, id('/w'), id('/w/c')]) assert.deepEqual(roots(store.reachedBy(r)), [A], r);
    assert.deepEqual(roots(store.reachedBy(id('/o'))), [], 'what B reaches is no closure of A');
    assert.deepEqual(roots(store.reachedBy(B)), []);
    assert.deepEqual([...c.agents], ['x']);
  });

  it('acquire shares one closure per root between agents, computed once', () => {
    const { index, store } = setup([entry('w', id('/w'), A)]);
    store.acquire(A, 'x', T0);
    const c = store.get(A);
    const walks = index.walks;
    store.acquire(A, 'y', T0);
    assert.equal(store.get(A), c);
    assert.equal(index.walks, walks, 'a held closure is not computed again');
    assert.deepEqual(sorted(c!.agents), ['x', 'y']);
  });

  it('closures reaching one ID are all found from it; releasing them one by one leaves exactly the others', () => {
    const { store } = setup([entry('a', id('/shared'), A), entry('b', id('/shared'), B), entry('c', id('/shared'), C)]);
    for (const r of [A, B, C]) store.acquire(r, `agent-of-${r}`, T0);
    assert.deepEqual(roots(store.reachedBy(id('/shared'))), [A, B, C].sort());
    for (const [gone, left] of [
      [A, [B, C]],
      [B, [C]],
      [C, []],
    ] as const) {
      const c = store.get(gone)!;
      c.agents.clear();
      store.releaseUnused([c]);
      assert.equal(store.get(gone), undefined, `${gone} released`);
      assert.deepEqual(roots(store.reachedBy(gone)), [], `${gone} no longer reached`);
      assert.deepEqual(roots(store.reachedBy(id('/shared'))), [...left].sort(), `after releasing ${gone}`);
    }
  });

  it('releaseUnused keeps a closure an agent still holds, and never drops the newer closure of a root', () => {
    const { store } = setup([entry('w', id('/w'), A)]);
    store.acquire(A, 'x', T0);
    const first = store.get(A)!;
    store.releaseUnused([first]);
    assert.equal(store.get(A), first, 'held by x');
    assert.deepEqual(roots(store.reachedBy(id('/w'))), [A]);
    first.agents.delete('x');
    store.releaseUnused([first]);
    assert.equal(store.get(A), undefined);
    store.acquire(A, 'y', T0);
    const second = store.get(A)!;
    assert.notEqual(second, first);
    store.releaseUnused([first]);
    assert.equal(store.get(A), second, 'the stale closure of the root is not the live one');
    assert.deepEqual(Array.from(store.reachedBy(id('/w'))), [second]);
  });

  it('clear forgets every closure and every reached ID', () => {
    const { store } = setup([entry('w', id('/w'), A), entry('v', id('/v'), B)]);
    store.acquire(A, 'x', T0);
    store.acquire(B, 'y', T0);
    store.clear();
    assert.equal(store.get(A), undefined);
    assert.equal(store.get(B), undefined);
    for (const r of [A, B, id('/w'), id('/v')]) assert.deepEqual(roots(store.reachedBy(r)), [], r);
  });
});

describe('ClosureStore.update', () => {
  it('a leaf is added, updated and removed in place, without walking the index again', () => {
    const { index, store } = setup([entry('w', id('/w'), A)]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    const walks = index.walks;
    const leaf = entry('leaf', id('/leaf'), A);
    assert.deepEqual(delta(change(index, store, c, undefined, leaf)), { added: ['leaf'], removed: [] });
    assert.equal(c.reached.get(id('/leaf')), 1);
    assert.deepEqual(roots(store.reachedBy(id('/leaf'))), [A]);
    const leaf2 = { ...leaf, hint: 'h', revisionNumber: 1 };
    assert.deepEqual(delta(change(index, store, c, leaf, leaf2)), { added: [], removed: [] }, 'an update in place neither enters nor leaves');
    assert.equal(c.entries.get('leaf'), leaf2, 'the closure holds the current version');
    assert.equal(c.reached.get(id('/leaf')), 1);
    assert.deepEqual(delta(change(index, store, c, leaf2, undefined)), { added: [], removed: ['leaf'] });
    assert.equal(c.reached.has(id('/leaf')), false, 'the last holder of /leaf is gone');
    assert.deepEqual(roots(store.reachedBy(id('/leaf'))), []);
    assert.equal(index.walks, walks, 'no recomputation for leaves (only the new entry children lookup)');
    assert.deepEqual(sorted(c.entries.keys()), ['w']);
  });

  it('removing one of two entries with one SPIFFE ID keeps the ID reached', () => {
    const { index, store } = setup([entry('w1', id('/w'), A), entry('w2', id('/w'), A), entry('child', id('/w/c'), id('/w'))]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    assert.deepEqual(delta(change(index, store, c, index.get('w1'), undefined)), { added: [], removed: ['w1'] });
    assert.equal(c.reached.get(id('/w')), 1);
    assert.deepEqual(roots(store.reachedBy(id('/w'))), [A]);
    assert.deepEqual(sorted(c.entries.keys()), ['child', 'w2']);
  });

  it('removing or moving a link something hangs from recomputes the closure and reports its descendants', () => {
    const { index, store } = setup([entry('link', id('/l'), A), entry('mid', id('/l/m'), id('/l')), entry('leaf', id('/l/m/x'), id('/l/m'))]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    const walks = index.walks;
    const link = index.get('link')!;
    assert.deepEqual(delta(change(index, store, c, link, undefined)), { added: [], removed: ['leaf', 'link', 'mid'] });
    assert.ok(index.walks > walks, 'recomputed');
    assert.deepEqual(sorted(c.entries.keys()), []);
    assert.deepEqual(sorted(c.reached.keys()), [A]);
    for (const r of [id('/l'), id('/l/m'), id('/l/m/x')]) assert.deepEqual(roots(store.reachedBy(r)), [], r);
    assert.deepEqual(roots(store.reachedBy(A)), [A], 'the root stays reached');
    // Back again: the link brings everything that hangs from it, breadth first, once.
    assert.deepEqual(delta(change(index, store, c, undefined, link)), { added: ['leaf', 'link', 'mid'], removed: [] });
    for (const r of [id('/l'), id('/l/m'), id('/l/m/x')]) assert.deepEqual(roots(store.reachedBy(r)), [A], r);
    // Moved under B: the closure of A loses it and its descendants.
    assert.deepEqual(delta(change(index, store, c, link, { ...link, parentId: B })), { added: [], removed: ['leaf', 'link', 'mid'] });
  });

  it('a link re-delivered unchanged leaves the closure as it was', () => {
    const { index, store } = setup([entry('link', id('/l'), A), entry('leaf', id('/l/x'), id('/l'))]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    const link = index.get('link')!;
    assert.deepEqual(delta(change(index, store, c, link, { ...link })), { added: [], removed: [] });
    assert.deepEqual(sorted(c.entries.keys()), ['leaf', 'link']);
    assert.deepEqual(roots(store.reachedBy(id('/l/x'))), [A]);
  });

  it('an entry the closure does not reach, a node alias, or an expired entry does not join', () => {
    const { index, store } = setup([]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    assert.deepEqual(delta(change(index, store, c, undefined, entry('elsewhere', id('/e'), B))), { added: [], removed: [] });
    assert.deepEqual(delta(change(index, store, c, undefined, entry('alias', A, SERVER))), { added: [], removed: [] });
    assert.deepEqual(delta(change(index, store, c, undefined, entry('old', id('/old'), A, { entryExpiry: T0 - 1 }))), { added: [], removed: [] });
    assert.deepEqual(sorted(c.entries.keys()), []);
    assert.deepEqual(sorted(c.reached.keys()), [A]);
  });

  it('a new link whose SPIFFE ID is already reached adds only itself', () => {
    const { index, store } = setup([entry('w1', id('/w'), A), entry('child', id('/w/c'), id('/w'))]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    assert.deepEqual(delta(change(index, store, c, undefined, entry('w2', id('/w'), A))), { added: ['w2'], removed: [] });
    assert.equal(c.reached.get(id('/w')), 2);
  });

  it('a cycle reached through a new link terminates, each entry once', () => {
    const { index, store } = setup([entry('p', id('/p'), id('/q')), entry('q', id('/q'), id('/p'))]);
    store.acquire(A, 'x', T0);
    const c = store.get(A)!;
    assert.deepEqual(delta(change(index, store, c, undefined, entry('in', id('/p'), A))), { added: ['in', 'p', 'q'], removed: [] });
    assert.deepEqual(sorted(c.entries.keys()), ['in', 'p', 'q']);
  });
});

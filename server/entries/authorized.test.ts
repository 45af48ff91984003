import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../../spiffe/id.js';
import type { RegistrationEntry } from '../datastore/types.js';
import type { Selector } from '../../common/selector.js';
import { EntryIndex, isExpired, serverIdOf } from './entryindex.js';
import { AuthorizationCache, type AgentChange } from './authcache.js';
import { ClosureStore } from './closures.js';
import { sameEntry } from './sameentry.js';
import { entryWithDefaults } from '../../test/support/entries.js';

const td = parseTrustDomain('example.org');
const SERVER = serverIdOf(td);
const T0 = 1_700_000_000;

function id(path: string): SpiffeId {
  return parseSpiffeId(`spiffe://example.org${path}`);
}
function agent(name: string): SpiffeId {
  return id(`/spire/agent/join_token/${name}`);
}
function sel(s: string): Selector {
  const i = s.indexOf(':');
  return { type: s.slice(0, i), value: s.slice(i + 1) };
}

function entry(
  eid: string,
  spiffeId: SpiffeId,
  parentId: SpiffeId,
  selectors: string[] = ['unix:uid:1000'],
  extra: Partial<RegistrationEntry> = {},
): RegistrationEntry {
  return {
    id: eid,
    ...entryWithDefaults({ spiffeId, parentId, selectors: selectors.map(sel) }),
    revisionNumber: 0,
    createdAt: T0,
    updatedAt: T0,
    ...extra,
  };
}

function alias(eid: string, spiffeId: SpiffeId, selectors: string[], extra: Partial<RegistrationEntry> = {}): RegistrationEntry {
  return entry(eid, spiffeId, SERVER, selectors, extra);
}

function newIndex(entries: RegistrationEntry[] = [], clock: { now: number } = { now: T0 }): EntryIndex {
  const index = new EntryIndex({ trustDomain: td, now: () => clock.now });
  index.load(entries);
  return index;
}

function ids(entries: readonly RegistrationEntry[]): string[] {
  return entries.map((e) => e.id).sort();
}

/** Changes as plain sorted id lists per agent, for exact comparisons. */
function summary(changes: AgentChange[]): Record<string, { added: string[]; updated: string[]; removed: string[] }> {
  const out: Record<string, { added: string[]; updated: string[]; removed: string[] }> = {};
  for (const c of changes) {
    assert.equal(out[c.agentId], undefined, `agent ${c.agentId} reported twice`);
    out[c.agentId] = { added: ids(c.added), updated: ids(c.updated), removed: ids(c.removed) };
  }
  return out;
}

const A = agent('a');
const B = agent('b');
const C = agent('c');

describe('EntryIndex.authorizedEntries', () => {
  it('serves entries parented directly by the agent', () => {
    const index = newIndex([entry('w1', id('/w1'), A), entry('w2', id('/w2'), A), entry('x', id('/x'), B)]);
    assert.deepEqual(ids(index.authorizedEntries(A, [])), ['w1', 'w2']);
    assert.deepEqual(ids(index.authorizedEntries(B, [])), ['x']);
    assert.deepEqual(ids(index.authorizedEntries(C, [])), []);
  });

  it('keeps two agents isolated, whatever their node selectors', () => {
    const index = newIndex([entry('a1', id('/a1'), A), entry('b1', id('/b1'), B)]);
    const same = [sel('k8s_psat:cluster:prod')];
    assert.deepEqual(ids(index.authorizedEntries(A, same)), ['a1']);
    assert.deepEqual(ids(index.authorizedEntries(B, same)), ['b1']);
  });

  it('serves node alias descendants by subset match of the alias selectors, never the alias itself', () => {
    const index = newIndex([
      alias('al', id('/cluster/prod'), ['k8s_psat:cluster:prod', 'k8s_psat:ns:spire']),
      entry('w', id('/prod/web'), id('/cluster/prod')),
    ]);
    const abc = [sel('k8s_psat:cluster:prod'), sel('k8s_psat:ns:spire'), sel('k8s_psat:node:n1')];
    assert.deepEqual(ids(index.authorizedEntries(A, abc)), ['w']);
    assert.deepEqual(ids(index.authorizedEntries(A, abc.slice(0, 2))), ['w']);
    assert.deepEqual(ids(index.authorizedEntries(A, abc.slice(0, 1))), []);
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('k8s_psat:ns:spire')])), []);
    assert.deepEqual(ids(index.authorizedEntries(A, [])), []);
    // Type and value both matter.
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('k8s_psat:cluster:prod'), sel('k8s:ns:spire')])), []);
    assert.deepEqual(index.matchingAliases(abc).map((e) => e.id), ['al']);
  });

  it('never matches an alias without selectors, and never serves what hangs from the server ID', () => {
    const index = newIndex([
      alias('empty', id('/everyone'), []),
      entry('w', id('/w'), id('/everyone')),
    ]);
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('a:b')])), []);
    assert.deepEqual(index.childrenOf(SERVER), []);
  });

  it('treats only THIS trust domain server ID as the alias parent', () => {
    const index = newIndex([
      entry('foreign', id('/x'), parseSpiffeId('spiffe://other.org/spire/server'), ['k8s_psat:cluster:prod']),
      entry('w', id('/w'), id('/x')),
    ]);
    assert.equal(index.isNodeAlias(index.get('foreign')!), false);
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('k8s_psat:cluster:prod')])), []);
  });

  it('an entry named like the server ID never opens the aliases to the agent holding it (validation refuses such IDs; the index does not rely on it)', () => {
    const entries = [entry('srv', SERVER, A), alias('al', id('/c'), ['n:1']), entry('w', id('/c/w'), id('/c'))];
    assert.deepEqual(ids(newIndex(entries).authorizedEntries(A, [])), ['srv']);
    const cache = new AuthorizationCache(newIndex(entries));
    assert.deepEqual(ids(cache.setAgent(A, [])!.added), ['srv']);
  });

  it('follows chains three deep (and deeper)', () => {
    const index = newIndex([
      entry('l1', id('/l1'), A),
      entry('l2', id('/l2'), id('/l1')),
      entry('l3', id('/l3'), id('/l2')),
      entry('l4', id('/l4'), id('/l3')),
      entry('other', id('/o'), id('/unrelated')),
    ]);
    assert.deepEqual(ids(index.authorizedEntries(A, [])), ['l1', 'l2', 'l3', 'l4']);
    assert.deepEqual(ids(index.authorizedEntries(B, [])), []);
  });

  it('follows chains through aliases', () => {
    const index = newIndex([
      alias('al', id('/cluster'), ['k8s_psat:cluster:c1']),
      entry('ds', id('/downstream'), id('/cluster'), ['k8s:sa:spire'], { downstream: true }),
      entry('nested', id('/nested/w'), id('/downstream')),
    ]);
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('k8s_psat:cluster:c1')])), ['ds', 'nested']);
  });

  it('supports the join token "-spiffeID" pattern: entry parented by the agent ID, workloads under it', () => {
    const index = newIndex([
      entry('host', id('/host/h1'), agent('tok123'), ['spiffe_id:spiffe://example.org/spire/agent/join_token/tok123']),
      entry('wl', id('/host/h1/web'), id('/host/h1')),
    ]);
    assert.deepEqual(ids(index.authorizedEntries(agent('tok123'), [])), ['host', 'wl']);
  });

  it('terminates on cycles and serves each entry once', () => {
    const index = newIndex([
      entry('x', id('/x'), A),
      entry('y', id('/y'), id('/x')),
      entry('x2', id('/x'), id('/y')), // cycle back to /x
      entry('self', id('/s'), id('/s')), // self parent, unreachable
      entry('s2', id('/s2'), id('/y')),
      entry('loop', id('/y'), id('/y')), // self loop on a reached ID
    ]);
    const got = index.authorizedEntries(A, []);
    assert.deepEqual(ids(got), ['loop', 's2', 'x', 'x2', 'y']);
    assert.equal(new Set(got.map((e) => e.id)).size, got.length);
  });

  it('deduplicates when an agent reaches the same parent directly and through an alias', () => {
    const index = newIndex([
      alias('al', id('/shared'), ['n:1']),
      entry('link', id('/shared'), A),
      entry('w', id('/w'), id('/shared')),
    ]);
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('n:1')])), ['link', 'w']);
  });

  it('excludes expired entries, expired links and expired aliases (expiry == now still valid)', () => {
    const clock = { now: T0 };
    const index = newIndex(
      [
        entry('ok', id('/ok'), A, undefined, { entryExpiry: T0 }),
        entry('gone', id('/gone'), A, undefined, { entryExpiry: T0 - 1 }),
        entry('under-gone', id('/ug'), id('/gone')),
        alias('old-alias', id('/c'), ['n:1'], { entryExpiry: T0 - 10 }),
        entry('under-alias', id('/c/w'), id('/c')),
        entry('later', id('/later'), A, undefined, { entryExpiry: T0 + 100 }),
      ],
      clock,
    );
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('n:1')])), ['later', 'ok']);
    assert.deepEqual(ids(index.expiredEntries()), ['gone', 'old-alias']);
    clock.now = T0 + 101;
    assert.deepEqual(ids(index.authorizedEntries(A, [sel('n:1')])), []);
    assert.ok(isExpired(index.get('later')!, clock.now));
  });
});

describe('EntryIndex bookkeeping', () => {
  it('upsert replaces an entry and moves it between parent and selector indexes', () => {
    const index = newIndex([entry('e', id('/e'), A, ['unix:uid:1'])]);
    assert.equal(index.size, 1);
    const prev = index.upsert(entry('e', id('/e'), B, ['unix:uid:2']));
    assert.equal(prev?.parentId, A);
    assert.equal(index.size, 1);
    assert.deepEqual(index.byParentId(A), []);
    assert.deepEqual(ids(index.byParentId(B)), ['e']);
    assert.deepEqual(index.bySelectorOf(sel('unix:uid:1')), []);
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:2'))), ['e']);
    assert.equal(index.remove('e')?.id, 'e');
    assert.equal(index.remove('e'), undefined);
    assert.equal(index.size, 0);
    assert.deepEqual(index.byParentId(B), []);
  });

  it('upsert turns an entry into an alias and back', () => {
    const index = newIndex([entry('e', id('/c'), A, ['n:1']), entry('w', id('/c/w'), id('/c'))]);
    assert.deepEqual(ids(index.authorizedEntries(B, [sel('n:1')])), []);
    index.upsert(alias('e', id('/c'), ['n:1']));
    assert.deepEqual(ids(index.authorizedEntries(B, [sel('n:1')])), ['w']);
    assert.deepEqual(ids(index.authorizedEntries(A, [])), []);
    index.upsert(entry('e', id('/c'), A, ['n:1']));
    assert.deepEqual(ids(index.matchingAliases([sel('n:1')])), []);
  });

  it('the selector index stays exact through upserts, removals and loads once it has been used', () => {
    const index = newIndex([entry('e', id('/e'), A, ['unix:uid:1']), alias('al', id('/c'), ['n:1'])]);
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:1'))), ['e'], 'built on first use');
    index.upsert(entry('f', id('/f'), A, ['unix:uid:1', 'unix:uid:2']));
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:1'))), ['e', 'f'], 'an entry added after the first use');
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:2'))), ['f']);
    index.upsert(entry('e', id('/e'), A, ['unix:uid:2']));
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:1'))), ['f'], 'a replaced version leaves its old selectors');
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:2'))), ['e', 'f']);
    index.remove('f');
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:1'))), [], 'a removed entry leaves the index');
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:2'))), ['e']);
    assert.deepEqual(ids(index.bySelectorOf(sel('n:1'))), ['al'], 'aliases are in it too');
    index.load([entry('g', id('/g'), B, ['unix:uid:2'])]);
    assert.deepEqual(ids(index.bySelectorOf(sel('unix:uid:2'))), ['g'], 'load forgets what was there before');
    assert.deepEqual(ids(index.bySelectorOf(sel('n:1'))), []);
  });

  it('expiredEntries lists only entries still held: not removed, replaced or dropped by a load', () => {
    const clock = { now: T0 };
    const index = newIndex(
      [
        entry('gone', id('/gone'), A, undefined, { entryExpiry: T0 + 1 }),
        entry('renewed', id('/renewed'), A, undefined, { entryExpiry: T0 + 1 }),
        entry('expiring', id('/expiring'), A, undefined, { entryExpiry: T0 + 1 }),
      ],
      clock,
    );
    assert.deepEqual(index.expiredEntries(), [], 'not yet');
    index.remove('gone');
    index.upsert(entry('renewed', id('/renewed'), A));
    clock.now = T0 + 2;
    assert.deepEqual(ids(index.expiredEntries()), ['expiring']);
    index.load([entry('later', id('/later'), A, undefined, { entryExpiry: T0 + 10 })]);
    assert.deepEqual(ids(index.expiredEntries()), [], 'the loaded content only');
    assert.deepEqual(ids(index.expiredEntries(T0 + 11)), ['later']);
  });

  it('load replaces everything', () => {
    const index = newIndex([entry('a', id('/a'), A)]);
    index.load([entry('b', id('/b'), A)]);
    assert.deepEqual(ids([...index.values()]), ['b']);
    assert.equal(index.get('a'), undefined);
  });
});

describe('sameEntry', () => {
  it('compares every field', () => {
    const e = entry('e', id('/e'), A, ['a:1'], { dnsNames: ['x.org'] });
    assert.ok(sameEntry(e, { ...e, selectors: [sel('a:1')], dnsNames: ['x.org'] }));
    assert.ok(!sameEntry(e, { ...e, hint: 'h' }));
    assert.ok(!sameEntry(e, { ...e, selectors: [sel('a:2')] }));
    assert.ok(!sameEntry(e, { ...e, dnsNames: ['y.org'] }));
    assert.ok(!sameEntry(e, { ...e, revisionNumber: 1 }));
  });

  it('any single differing field, selector or list element makes two versions differ', () => {
    const e = entry('e', id('/e'), A, ['a:1', 'b:2'], { dnsNames: ['x.org', 'y.org'], federatesWith: [parseTrustDomain('one.org'), parseTrustDomain('two.org')] });
    assert.ok(sameEntry(e, e));
    assert.ok(sameEntry(e, { ...e, selectors: e.selectors.map((x) => ({ ...x })), dnsNames: [...e.dnsNames], federatesWith: [...e.federatesWith] }));
    const variants: Array<[string, Partial<RegistrationEntry>]> = [
      ['id', { id: 'other' }],
      ['spiffeId', { spiffeId: id('/other') }],
      ['parentId', { parentId: B }],
      ['x509SvidTtl', { x509SvidTtl: 60 }],
      ['jwtSvidTtl', { jwtSvidTtl: 60 }],
      ['admin', { admin: true }],
      ['downstream', { downstream: true }],
      ['hint', { hint: 'h' }],
      ['entryExpiry', { entryExpiry: T0 + 1 }],
      ['revisionNumber', { revisionNumber: 7 }],
      ['createdAt', { createdAt: T0 + 1 }],
      ['updatedAt', { updatedAt: T0 + 1 }],
      ['a selector type', { selectors: [sel('a:1'), sel('c:2')] }],
      ['a selector value', { selectors: [sel('a:1'), sel('b:3')] }],
      ['one selector fewer', { selectors: [sel('a:1')] }],
      ['the second DNS name', { dnsNames: ['x.org', 'z.org'] }],
      ['one DNS name fewer', { dnsNames: ['x.org'] }],
      ['the second federated trust domain', { federatesWith: [parseTrustDomain('one.org'), parseTrustDomain('three.org')] }],
      ['one federated trust domain fewer', { federatesWith: [parseTrustDomain('one.org')] }],
    ];
    for (const [what, change] of variants) {
      assert.equal(sameEntry(e, { ...e, ...change }), false, what);
      assert.equal(sameEntry({ ...e, ...change }, e), false, `${what} (reversed)`);
    }
  });
});

describe('EntryIndex defaults', () => {
  it('the alias parent is this trust domain\'s /spire/server; without a clock, expiry is judged by the system clock', () => {
    assert.equal(serverIdOf(td), 'spiffe://example.org/spire/server');
    const nowSeconds = Math.floor(Date.now() / 1000);
    const index = new EntryIndex({ trustDomain: td });
    assert.equal(index.serverId, SERVER);
    index.load([
      entry('past', id('/past'), A, undefined, { entryExpiry: nowSeconds - 3600 }),
      entry('future', id('/future'), A, undefined, { entryExpiry: nowSeconds + 3600 }),
    ]);
    assert.deepEqual(ids(index.authorizedEntries(A, [])), ['future']);
  });
});

describe('AuthorizationCache', () => {
  function setup(entries: RegistrationEntry[], agents: Array<[SpiffeId, string[]]>, clock = { now: T0 }) {
    const index = newIndex(entries, clock);
    const cache = new AuthorizationCache(index);
    for (const [a, s] of agents) cache.setAgent(a, s.map(sel));
    return { index, cache, clock };
  }

  it('setAgent returns the full snapshot for a new agent and tracks it', () => {
    const { cache } = setup([entry('w', id('/w'), A), alias('al', id('/c'), ['n:1']), entry('cw', id('/c/w'), id('/c'))], []);
    const snap = cache.setAgent(A, [sel('n:1')]);
    assert.deepEqual(summary([snap!]), { [A]: { added: ['cw', 'w'], updated: [], removed: [] } });
    assert.deepEqual(ids(cache.entriesFor(A)!), ['cw', 'w']);
    assert.ok(cache.hasAgent(A));
    assert.equal(cache.entriesFor(B), undefined);
  });

  it('new entry under an agent: only that agent, added', () => {
    const { cache } = setup([entry('a1', id('/a1'), A)], [[A, []], [B, []]]);
    const ch = cache.applyChange(undefined, entry('a2', id('/a2'), A));
    assert.deepEqual(summary(ch), { [A]: { added: ['a2'], updated: [], removed: [] } });
    assert.deepEqual(ids(cache.entriesFor(A)!), ['a1', 'a2']);
    assert.deepEqual(ids(cache.entriesFor(B)!), []);
  });

  it('new entry for an agent that is not connected: nobody', () => {
    const { cache, index } = setup([], [[A, []]]);
    assert.deepEqual(cache.applyChange(undefined, entry('c1', id('/c1'), C)), []);
    assert.ok(index.has('c1'));
  });

  it('entry moved from agent A to agent B (with its descendants)', () => {
    const moving = entry('m', id('/m'), A);
    const { cache } = setup([moving, entry('child', id('/m/child'), id('/m')), entry('stay', id('/stay'), A)], [[A, []], [B, []], [C, []]]);
    const ch = cache.applyChange(moving, { ...moving, parentId: B, revisionNumber: 1 });
    assert.deepEqual(summary(ch), {
      [A]: { added: [], updated: [], removed: ['child', 'm'] },
      [B]: { added: ['child', 'm'], updated: [], removed: [] },
    });
    assert.equal(ch.find((c) => c.agentId === A)!.removed.find((e) => e.id === 'm')!.parentId, A, 'removed reports the old version');
    assert.equal(ch.find((c) => c.agentId === B)!.added.find((e) => e.id === 'm')!.parentId, B);
    assert.deepEqual(ids(cache.entriesFor(A)!), ['stay']);
    assert.deepEqual(ids(cache.entriesFor(B)!), ['child', 'm']);
  });

  it('in-place update is "updated" for every agent holding the entry; an identical re-delivery is nothing', () => {
    const w = entry('w', id('/c/w'), id('/c'));
    const { cache } = setup([alias('al', id('/c'), ['n:1']), w], [[A, ['n:1']], [B, ['n:1']], [C, ['n:2']]]);
    const w2 = { ...w, hint: 'new', revisionNumber: 1 };
    assert.deepEqual(summary(cache.applyChange(w, w2)), {
      [A]: { added: [], updated: ['w'], removed: [] },
      [B]: { added: [], updated: ['w'], removed: [] },
    });
    assert.equal(cache.entriesFor(A)!.find((e) => e.id === 'w')!.hint, 'new');
    assert.deepEqual(cache.applyChange(w2, { ...w2 }), []);
  });

  it('alias selector change adds and removes agents', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const { cache } = setup(
      [al, entry('w1', id('/c/w1'), id('/c')), entry('w2', id('/c/w2'), id('/c')), entry('own', id('/own'), B)],
      [[A, ['n:1', 'x:a']], [B, ['n:2', 'x:b']], [C, ['n:1', 'n:2']]],
    );
    // n:1 -> n:2: A leaves, B joins, C stays.
    const al2 = { ...al, selectors: [sel('n:2')], revisionNumber: 1 };
    assert.deepEqual(summary(cache.applyChange(al, al2)), {
      [A]: { added: [], updated: [], removed: ['w1', 'w2'] },
      [B]: { added: ['w1', 'w2'], updated: [], removed: [] },
    });
    // Require both n:1 and n:2: only C.
    const al3 = { ...al2, selectors: [sel('n:1'), sel('n:2')], revisionNumber: 2 };
    assert.deepEqual(summary(cache.applyChange(al2, al3)), { [B]: { added: [], updated: [], removed: ['w1', 'w2'] } });
    assert.deepEqual(ids(cache.entriesFor(B)!), ['own']);
    assert.deepEqual(ids(cache.entriesFor(C)!), ['w1', 'w2']);
    // Alias deleted: C loses everything under it.
    assert.deepEqual(summary(cache.removeEntry('al')), { [C]: { added: [], updated: [], removed: ['w1', 'w2'] } });
    // Alias created: matching agents gain.
    assert.deepEqual(summary(cache.upsertEntry(alias('al-x', id('/c'), ['x:a']))), {
      [A]: { added: ['w1', 'w2'], updated: [], removed: [] },
    });
  });

  it('alias spiffeId change swaps the subtree', () => {
    const al = alias('al', id('/c1'), ['n:1']);
    const { cache } = setup([al, entry('w1', id('/c1/w'), id('/c1')), entry('w2', id('/c2/w'), id('/c2'))], [[A, ['n:1']]]);
    assert.deepEqual(summary(cache.applyChange(al, { ...al, spiffeId: id('/c2') })), {
      [A]: { added: ['w2'], updated: [], removed: ['w1'] },
    });
  });

  it('alias edits that change no membership report nothing', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const { cache } = setup([al, entry('w', id('/c/w'), id('/c'))], [[A, ['n:1']]]);
    assert.deepEqual(cache.applyChange(al, { ...al, hint: 'cluster', revisionNumber: 1 }), []);
  });

  it('entry under an alias reaches every agent in the alias', () => {
    const { cache } = setup([alias('al', id('/c'), ['n:1'])], [[A, ['n:1']], [B, ['n:1', 'z:z']], [C, []]]);
    assert.deepEqual(summary(cache.upsertEntry(entry('w', id('/c/w'), id('/c')))), {
      [A]: { added: ['w'], updated: [], removed: [] },
      [B]: { added: ['w'], updated: [], removed: [] },
    });
  });

  it('deleting a middle chain link removes its descendants; restoring it brings them back', () => {
    const mid = entry('l2', id('/l2'), id('/l1'));
    const { cache } = setup(
      [entry('l1', id('/l1'), A), mid, entry('l3', id('/l3'), id('/l2')), entry('l4', id('/l4'), id('/l3')), entry('side', id('/side'), id('/l1'))],
      [[A, []], [B, []]],
    );
    assert.deepEqual(summary(cache.removeEntry('l2')), { [A]: { added: [], updated: [], removed: ['l2', 'l3', 'l4'] } });
    assert.deepEqual(ids(cache.entriesFor(A)!), ['l1', 'side']);
    assert.deepEqual(summary(cache.upsertEntry(mid)), { [A]: { added: ['l2', 'l3', 'l4'], updated: [], removed: [] } });
  });

  it('deleting a link keeps descendants still reachable another way', () => {
    const { cache } = setup(
      [entry('p1', id('/p'), A), entry('p2', id('/p'), A, ['unix:uid:2']), entry('c', id('/p/c'), id('/p'))],
      [[A, []]],
    );
    assert.deepEqual(summary(cache.removeEntry('p1')), { [A]: { added: [], updated: [], removed: ['p1'] } });
    assert.deepEqual(summary(cache.removeEntry('p2')), { [A]: { added: [], updated: [], removed: ['c', 'p2'] } });
  });

  it('a cycle detached from the root is removed entirely', () => {
    // A -> x(/s1); y(/s2) under /s1; z(/s1) under /s2: removing x leaves y and z unreachable
    // although /s1 is still "held" by z.
    const { cache } = setup(
      [entry('x', id('/s1'), A), entry('y', id('/s2'), id('/s1')), entry('z', id('/s1'), id('/s2'), ['unix:uid:9'])],
      [[A, []]],
    );
    assert.deepEqual(ids(cache.entriesFor(A)!), ['x', 'y', 'z']);
    assert.deepEqual(summary(cache.removeEntry('x')), { [A]: { added: [], updated: [], removed: ['x', 'y', 'z'] } });
  });

  it('node selector changes move an agent between aliases', () => {
    const { cache } = setup(
      [alias('a1', id('/c1'), ['n:1']), alias('a2', id('/c2'), ['n:2']), entry('w1', id('/c1/w'), id('/c1')), entry('w2', id('/c2/w'), id('/c2'))],
      [[A, ['n:1']]],
    );
    assert.deepEqual(summary([cache.setAgent(A, [sel('n:2')])!]), { [A]: { added: ['w2'], updated: [], removed: ['w1'] } });
    assert.equal(cache.setAgent(A, [sel('n:2'), sel('other:x')]), undefined);
  });

  it('removeAgent stops reporting for that agent', () => {
    const { cache } = setup([alias('al', id('/c'), ['n:1'])], [[A, ['n:1']], [B, ['n:1']]]);
    assert.ok(cache.removeAgent(A));
    assert.ok(!cache.removeAgent(A));
    assert.deepEqual(Object.keys(summary(cache.upsertEntry(entry('w', id('/c/w'), id('/c'))))), [B]);
    assert.deepEqual(cache.agentIds(), [B]);
  });

  it('pruneExpired removes expired entries from agents and the index', () => {
    const clock = { now: T0 };
    const { cache, index } = setup(
      [
        entry('t', id('/t'), A, undefined, { entryExpiry: T0 + 10 }),
        entry('t-child', id('/t/c'), id('/t')),
        alias('al', id('/c'), ['n:1'], { entryExpiry: T0 + 20 }),
        entry('cw', id('/c/w'), id('/c')),
        entry('keep', id('/keep'), A),
      ],
      [[A, ['n:1']], [B, ['n:1']]],
      clock,
    );
    assert.deepEqual(cache.pruneExpired(), []);
    clock.now = T0 + 15;
    assert.deepEqual(summary(cache.pruneExpired()), { [A]: { added: [], updated: [], removed: ['t', 't-child'] } });
    assert.equal(index.has('t'), false);
    clock.now = T0 + 25;
    assert.deepEqual(summary(cache.pruneExpired()), {
      [A]: { added: [], updated: [], removed: ['cw'] },
      [B]: { added: [], updated: [], removed: ['cw'] },
    });
    assert.deepEqual(ids(cache.entriesFor(A)!), ['keep']);
  });

  it('an entry arriving already expired is indexed but served to nobody', () => {
    const { cache } = setup([], [[A, []]]);
    assert.deepEqual(cache.applyChange(undefined, entry('old', id('/old'), A, undefined, { entryExpiry: T0 - 1 })), []);
  });

  it('an entry can switch between alias and ordinary entry', () => {
    const e = entry('e', id('/c'), A, ['n:1']);
    const { cache } = setup([e, entry('w', id('/c/w'), id('/c'))], [[A, []], [B, ['n:1']]]);
    assert.deepEqual(summary(cache.applyChange(e, { ...e, parentId: SERVER })), {
      [A]: { added: [], updated: [], removed: ['e', 'w'] },
      [B]: { added: ['w'], updated: [], removed: [] },
    });
  });

  it('reload reports the difference for every agent', () => {
    const { cache } = setup([entry('a1', id('/a1'), A), entry('b1', id('/b1'), B)], [[A, []], [B, []]]);
    const ch = cache.reload([entry('a1', id('/a1'), A, undefined, { hint: 'x', revisionNumber: 1 }), entry('a2', id('/a2'), A)]);
    assert.deepEqual(summary(ch), {
      [A]: { added: ['a2'], updated: ['a1'], removed: [] },
      [B]: { added: [], updated: [], removed: ['b1'] },
    });
  });

  it('rejects a before/after pair with different IDs', () => {
    const { cache } = setup([], []);
    assert.throws(() => cache.applyChange(entry('x', id('/x'), A), entry('y', id('/y'), A)), (e: unknown) => e instanceof TypeError && /different entries \("x" vs "y"\)/.test(e.message));
  });

  it('changes that touch nothing report nothing: removing an unknown ID, an empty change, an identical reload', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const entries = [al, entry('w', id('/c/w'), id('/c')), entry('a1', id('/a1'), A)];
    const { cache } = setup(entries, [[A, ['n:1']], [B, []]]);
    assert.deepEqual(cache.removeEntry('nope'), []);
    assert.deepEqual(cache.applyChange(undefined, undefined), []);
    assert.deepEqual(cache.reload(entries.map((e) => ({ ...e }))), []);
    assert.deepEqual(ids(cache.entriesFor(A)!), ['a1', 'w']);
  });

  it('reload keeps alias membership: an agent in an alias gets what is added under it', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const { cache } = setup([al], [[A, ['n:1']], [B, ['n:2']]]);
    const ch = cache.reload([al, entry('w', id('/c/w'), id('/c'))]);
    assert.deepEqual(summary(ch), { [A]: { added: ['w'], updated: [], removed: [] } });
    assert.deepEqual(summary(cache.upsertEntry(entry('w2', id('/c/w2'), id('/c')))), { [A]: { added: ['w2'], updated: [], removed: [] } });
  });

  it('an alias without selectors gives tracked agents nothing, whatever their node selectors', () => {
    const bare = alias('bare', id('/bare'), []);
    const { cache } = setup([bare, entry('w', id('/bare/w'), id('/bare'))], [[A, ['n:1']], [B, []]]);
    assert.deepEqual(cache.entriesFor(A), []);
    assert.deepEqual(cache.entriesFor(B), []);
    assert.deepEqual(cache.upsertEntry(entry('w2', id('/bare/w2'), id('/bare'))), []);
    assert.deepEqual(cache.setAgent(C, ['n:1', 'n:2'].map(sel))!.added, []);
  });

  it('setAgent keeps its own copy of the node selectors (a reload matches aliases against the attested ones)', () => {
    const on2 = [alias('al2', id('/c2'), ['n:2']), entry('w2', id('/c2/w'), id('/c2'))];
    const on3 = [alias('al3', id('/c3'), ['n:3']), entry('w3', id('/c3/w'), id('/c3'))];
    const { cache } = setup([], []);
    const first = [sel('n:1')];
    cache.setAgent(A, first);
    first[0] = sel('n:2');
    assert.deepEqual(cache.reload(on2), []);
    const second = [sel('n:2')];
    cache.setAgent(A, second);
    second[0] = sel('n:3');
    assert.deepEqual(summary(cache.reload([...on2, ...on3])), {});
    assert.deepEqual(ids(cache.entriesFor(A)!), ['w2']);
  });

  it('affectedAgents is a superset of the agents applyChange reports', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const { cache } = setup([al, entry('a1', id('/a1'), A)], [[A, ['n:1']], [B, []], [C, ['n:1']]]);
    assert.deepEqual(cache.affectedAgents(undefined, entry('x', id('/x'), B)), [B]);
    assert.deepEqual(cache.affectedAgents(undefined, entry('x', id('/x'), id('/nowhere'))), []);
    assert.deepEqual(cache.affectedAgents(al, { ...al, selectors: [sel('n:2')] }).sort(), [A, C].sort());
  });
});

describe('AuthorizationCache: exact reports at the edges', () => {
  function setup(entries: RegistrationEntry[], agents: Array<[SpiffeId, string[]]>) {
    const index = newIndex(entries);
    const cache = new AuthorizationCache(index);
    for (const [a, s] of agents) cache.setAgent(a, s.map(sel));
    return { index, cache };
  }

  it('deleting an entry the index does not hold reports nothing and changes nothing', () => {
    const { cache, index } = setup([entry('a1', id('/a1'), A)], [[A, []]]);
    assert.deepEqual(cache.applyChange(entry('ghost', id('/ghost'), A), undefined), []);
    assert.equal(index.has('ghost'), false);
    assert.deepEqual(ids(cache.entriesFor(A)!), ['a1']);
  });

  it('an alias whose selectors are all removed drops every agent from it; an alias created without selectors admits nobody', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const { cache } = setup(
      [al, entry('w', id('/c/w'), id('/c')), entry('dw', id('/d/w'), id('/d')), entry('a1', id('/a1'), A)],
      [[A, ['n:1']], [B, ['n:1', 'n:2']], [C, ['n:2']]],
    );
    const bare = { ...al, selectors: [], revisionNumber: 1 };
    assert.deepEqual(summary(cache.applyChange(al, bare)), {
      [A]: { added: [], updated: [], removed: ['w'] },
      [B]: { added: [], updated: [], removed: ['w'] },
    });
    assert.deepEqual(ids(cache.entriesFor(A)!), ['a1']);
    assert.deepEqual(cache.entriesFor(B), []);
    // Giving the selector back re-admits exactly the agents that have it.
    assert.deepEqual(summary(cache.applyChange(bare, { ...al, revisionNumber: 2 })), {
      [A]: { added: ['w'], updated: [], removed: [] },
      [B]: { added: ['w'], updated: [], removed: [] },
    });
    // A new alias without selectors over /d: nobody, and nobody is even a candidate.
    const bareD = alias('bare-d', id('/d'), []);
    assert.deepEqual(cache.affectedAgents(undefined, bareD), []);
    assert.deepEqual(cache.upsertEntry(bareD), []);
    assert.deepEqual(cache.affectedAgents(bareD, undefined), []);
    assert.deepEqual(cache.removeEntry('bare-d'), []);
    assert.deepEqual(ids(cache.entriesFor(C)!), []);
  });

  it('an alias with two selectors reaches and names only the agents that have both', () => {
    // n:1 is the rarer selector (A, B); n:2 is held by B, C and D. A has n:1 only.
    const D = agent('d');
    const { cache } = setup([entry('w', id('/c/w'), id('/c'))], [[A, ['n:1']], [B, ['n:1', 'n:2']], [C, ['n:2']], [D, ['n:2', 'n:3']]]);
    for (const order of [['n:1', 'n:2'], ['n:2', 'n:1']]) {
      const al = alias(`al-${order[0]}`, id('/c'), order);
      assert.deepEqual(cache.affectedAgents(undefined, al), [B], `alias selectors ${order.join(', ')}`);
      assert.deepEqual(cache.affectedAgents(al, undefined), [B]);
    }
    const al = alias('al', id('/c'), ['n:1', 'n:2']);
    assert.deepEqual(summary(cache.upsertEntry(al)), { [B]: { added: ['w'], updated: [], removed: [] } });
    assert.deepEqual(summary(cache.applyChange(al, { ...al, selectors: [sel('n:2')], revisionNumber: 1 })), {
      [C]: { added: ['w'], updated: [], removed: [] },
      [D]: { added: ['w'], updated: [], removed: [] },
    });
  });
});

/**
 * Counts the ClosureStore calls AuthorizationCache makes while `fn` runs: `get` (every look-up of
 * an agent's closure while diffing its set) and `acquire` (an agent taking a root). Restored after.
 */
function countStoreCalls<T>(fn: () => T): { result: T; get: number; acquire: number } {
  const proto = ClosureStore.prototype as unknown as Record<'get' | 'acquire', (...args: unknown[]) => unknown>;
  const orig = { get: proto.get, acquire: proto.acquire };
  const n = { get: 0, acquire: 0 };
  proto.get = function (this: unknown, ...args: unknown[]) {
    n.get++;
    return orig.get.apply(this, args);
  };
  proto.acquire = function (this: unknown, ...args: unknown[]) {
    n.acquire++;
    return orig.acquire.apply(this, args);
  };
  try {
    const result = fn();
    return { result, ...n };
  } finally {
    proto.get = orig.get;
    proto.acquire = orig.acquire;
  }
}

describe('AuthorizationCache cost: agents a change leaves alone are not diffed', () => {
  const many = Array.from({ length: 100 }, (_, i) => agent(`m${i}`));

  it('an alias edit that changes no agent\'s roots looks at no agent\'s closures', () => {
    const al = alias('al', id('/c'), ['n:1']);
    const index = newIndex([al, entry('w', id('/c/w'), id('/c'))]);
    const cache = new AuthorizationCache(index);
    for (const a of many) cache.setAgent(a, [sel('n:1')]);
    const { result, get, acquire } = countStoreCalls(() => cache.applyChange(al, { ...al, hint: 'renamed', revisionNumber: 1 }));
    assert.deepEqual(result, []);
    // 100 agents matched the alias; none changed roots, so none is diffed (about 4 look-ups each).
    assert.ok(get <= 10, `closure look-ups: ${get}`);
    assert.equal(acquire, 0);
  });

  it('an entry that joins no closure (already expired) diffs none of the agents whose closures reach its parent', () => {
    const index = newIndex([alias('al', id('/c'), ['n:1'])]);
    const cache = new AuthorizationCache(index);
    for (const a of many) cache.setAgent(a, [sel('n:1')]);
    const { result, get } = countStoreCalls(() => cache.upsertEntry(entry('old', id('/c/old'), id('/c'), undefined, { entryExpiry: T0 - 1 })));
    assert.deepEqual(result, []);
    assert.ok(get <= 10, `closure look-ups: ${get}`);
    // The same entry unexpired reaches all 100.
    assert.equal(cache.upsertEntry(entry('old', id('/c/old'), id('/c'))).length, 100);
  });

  it('reporting a change costs the changed entries, not the size of the agent\'s set', () => {
    const entries = [alias('al', id('/c'), ['n:1'])];
    for (let i = 0; i < 200; i++) entries.push(entry(`a${i}`, id(`/a/${i}`), A), entry(`c${i}`, id(`/c/${i}`), id('/c')));
    const index = newIndex(entries);
    const cache = new AuthorizationCache(index);
    cache.setAgent(A, [sel('n:1')]);
    const add = countStoreCalls(() => cache.upsertEntry(entry('new', id('/a/new'), A)));
    assert.deepEqual(summary(add.result), { [A]: { added: ['new'], updated: [], removed: [] } });
    // A holds 400 entries through two roots; one new entry is a handful of look-ups, not 400s.
    assert.ok(add.get <= 20, `closure look-ups: ${add.get}`);
    const del = countStoreCalls(() => cache.removeEntry('c7'));
    assert.deepEqual(summary(del.result), { [A]: { added: [], updated: [], removed: ['c7'] } });
    assert.ok(del.get <= 20, `closure look-ups: ${del.get}`);
  });

  it('an alias naming a rare and a common node selector examines only the agents holding the rare one', () => {
    const index = newIndex([entry('w', id('/c/w'), id('/c'))]);
    const cache = new AuthorizationCache(index);
    for (const a of many) cache.setAgent(a, [sel('cluster:prod')]);
    const R = agent('rare-only');
    cache.setAgent(B, [sel('cluster:prod'), sel('node:n7')]);
    cache.setAgent(R, [sel('node:n7')]);
    // aliasMatches is the per-agent check of an alias's selectors (private; counted here).
    const proto = AuthorizationCache.prototype as unknown as { aliasMatches: (...args: unknown[]) => boolean };
    const orig = proto.aliasMatches;
    let checks = 0;
    proto.aliasMatches = function (this: unknown, ...args: unknown[]) {
      checks++;
      return orig.apply(this, args);
    };
    try {
      for (const order of [['node:n7', 'cluster:prod'], ['cluster:prod', 'node:n7']]) {
        checks = 0;
        const al = alias(`al-${order[0]}`, id('/c'), order);
        assert.deepEqual(cache.affectedAgents(undefined, al), [B], `alias selectors ${order.join(', ')}`);
        // Two agents hold node:n7, 101 hold cluster:prod.
        assert.ok(checks <= 2, `alias selectors ${order.join(', ')}: ${checks} agents checked`);
      }
    } finally {
      proto.aliasMatches = orig;
    }
  });

  it('re-attestation that keeps the agent\'s aliases does no closure work; gaining one alias acquires only that root', () => {
    const entries: RegistrationEntry[] = [];
    for (let i = 0; i < 20; i++) entries.push(alias(`al${i}`, id(`/c${i}`), [`n:${i}`]), entry(`w${i}`, id(`/c${i}/w`), id(`/c${i}`)));
    entries.push(alias('extra', id('/x'), ['x:1']), entry('xw', id('/x/w'), id('/x')));
    const index = newIndex(entries);
    const cache = new AuthorizationCache(index);
    const nodeSels = Array.from({ length: 20 }, (_, i) => sel(`n:${i}`));
    assert.equal(cache.setAgent(A, nodeSels)!.added.length, 20);
    const same = countStoreCalls(() => cache.setAgent(A, [...nodeSels, sel('other:1')]));
    assert.equal(same.result, undefined);
    assert.ok(same.get <= 5, `closure look-ups: ${same.get}`);
    assert.equal(same.acquire, 0);
    const gain = countStoreCalls(() => cache.setAgent(A, [...nodeSels, sel('x:1')]));
    assert.deepEqual(summary([gain.result!]), { [A]: { added: ['xw'], updated: [], removed: [] } });
    assert.equal(gain.acquire, 1, 'only the new root is acquired');
  });
});

// ---------------------------------------------------------------------------------------------
// Model check: random graphs and random changes, compared with the stateless oracle.

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('AuthorizationCache model check', () => {
  it('after every random change, each agent set equals the oracle and the reported diffs are exact', () => {
    for (let seed = 1; seed <= 25; seed++) {
      const rand = rng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
      const clock = { now: T0 };
      const agents = [agent('a0'), agent('a1'), agent('a2'), agent('a3')];
      const names = Array.from({ length: 8 }, (_, i) => id(`/n${i}`));
      const nodeSels = ['n:1', 'n:2', 'n:3'];
      const parents = (): SpiffeId => {
        const r = rand();
        if (r < 0.3) return pick(agents);
        if (r < 0.45) return SERVER;
        if (r < 0.5) return id('/nowhere');
        return pick(names);
      };
      let counter = 0;
      const randomEntry = (eid?: string): RegistrationEntry => {
        const parentId = parents();
        const selCount = parentId === SERVER ? 1 + Math.floor(rand() * 2) : 1;
        const selectors = [...new Set(Array.from({ length: selCount }, () => pick(nodeSels)))];
        const r = rand();
        const entryExpiry = r < 0.1 ? clock.now - 1 : r < 0.2 ? clock.now + Math.floor(rand() * 5) : 0;
        return entry(eid ?? `e${counter++}`, pick(names), parentId, selectors, { entryExpiry, revisionNumber: counter++ });
      };
      const initial = Array.from({ length: 12 }, () => randomEntry());
      const index = newIndex(initial, clock);
      const cache = new AuthorizationCache(index);
      const agentSels = new Map<SpiffeId, Selector[]>();
      const mirror = new Map<SpiffeId, Map<string, RegistrationEntry>>();
      const applyReported = (changes: AgentChange[]) => {
        const reported = new Set<string>();
        for (const ch of changes) {
          assert.ok(!reported.has(ch.agentId), 'agent reported twice');
          reported.add(ch.agentId);
          assert.ok(ch.added.length + ch.updated.length + ch.removed.length > 0, 'empty change reported');
          const m = mirror.get(ch.agentId)!;
          for (const e of ch.removed) assert.ok(m.delete(e.id), `removed ${e.id} that the agent did not hold`);
          for (const e of ch.updated) {
            assert.ok(m.has(e.id), `updated ${e.id} that the agent did not hold`);
            m.set(e.id, e);
          }
          for (const e of ch.added) {
            assert.ok(!m.has(e.id), `added ${e.id} that the agent already held`);
            m.set(e.id, e);
          }
        }
      };
      const check = (step: string) => {
        for (const a of cache.agentIds()) {
          const expected = index.authorizedEntries(a, agentSels.get(a)!);
          const m = mirror.get(a)!;
          assert.deepEqual([...m.keys()].sort(), ids(expected), `seed ${seed} ${step}: mirror of ${a}`);
          for (const e of expected) assert.equal(m.get(e.id), e, `seed ${seed} ${step}: stale version of ${e.id}`);
          assert.deepEqual(ids(cache.entriesFor(a)!), ids(expected), `seed ${seed} ${step}: cache of ${a}`);
          // entryFor agrees with the set for every entry of the index, in it or not.
          const inSet = new Set(expected.map((e) => e.id));
          for (const e of index.values()) {
            const got = cache.entryFor(a, e.id);
            if (inSet.has(e.id)) assert.equal(got, e, `seed ${seed} ${step}: entryFor(${a}, ${e.id})`);
            else assert.equal(got, undefined, `seed ${seed} ${step}: entryFor(${a}, ${e.id}) of an entry outside the set`);
          }
        }
        assert.equal(cache.entryFor('spiffe://example.org/spire/agent/untracked' as SpiffeId, 'x'), null);
      };
      for (const a of agents.slice(0, 3)) {
        const s = [...new Set([pick(nodeSels), pick(nodeSels)])].map(sel);
        agentSels.set(a, s);
        mirror.set(a, new Map());
        const snap = cache.setAgent(a, s)!;
        applyReported(snap.added.length === 0 ? [] : [snap]);
      }
      check('initial');
      for (let step = 0; step < 150; step++) {
        const r = rand();
        const existing = [...index.values()];
        let label: string;
        if (r < 0.3 || existing.length === 0) {
          const e = randomEntry();
          label = `create ${e.id}`;
          const affected = new Set(cache.affectedAgents(undefined, e));
          const ch = cache.applyChange(undefined, e);
          for (const c of ch) assert.ok(affected.has(c.agentId), `affectedAgents missed ${c.agentId}`);
          applyReported(ch);
        } else if (r < 0.6) {
          const old = pick(existing);
          const r2 = rand();
          const next: RegistrationEntry =
            r2 < 0.4
              ? randomEntry(old.id)
              : r2 < 0.6
                ? { ...old, parentId: parents(), revisionNumber: counter++ }
                : r2 < 0.8
                  ? { ...old, spiffeId: pick(names), revisionNumber: counter++ }
                  : { ...old, hint: `h${counter++}`, revisionNumber: counter++ };
          label = `update ${old.id}`;
          const affected = new Set(cache.affectedAgents(old, next));
          const ch = cache.applyChange(old, next);
          for (const c of ch) assert.ok(affected.has(c.agentId), `affectedAgents missed ${c.agentId}`);
          applyReported(ch);
        } else if (r < 0.8) {
          const old = pick(existing);
          label = `delete ${old.id}`;
          const affected = new Set(cache.affectedAgents(old, undefined));
          const ch = cache.applyChange(old, undefined);
          for (const c of ch) assert.ok(affected.has(c.agentId), `affectedAgents missed ${c.agentId}`);
          applyReported(ch);
        } else if (r < 0.88) {
          const a = pick(agents);
          const s = [...new Set([pick(nodeSels), pick(nodeSels)])].map(sel);
          label = `setAgent ${a}`;
          const isNew = !mirror.has(a);
          if (isNew) mirror.set(a, new Map());
          agentSels.set(a, s);
          const ch = cache.setAgent(a, s);
          if (isNew) assert.ok(ch !== undefined, 'a new agent always gets its snapshot');
          // A new agent's snapshot may be empty; anything else reported must not be.
          applyReported(ch === undefined || (isNew && ch.added.length === 0) ? [] : [ch]);
        } else if (r < 0.92) {
          const a = pick(agents);
          label = `removeAgent ${a}`;
          cache.removeAgent(a);
          mirror.delete(a);
          agentSels.delete(a);
        } else {
          clock.now += 2;
          label = 'tick + pruneExpired';
          applyReported(cache.pruneExpired());
        }
        // Time moves only right before pruneExpired, so the cache never holds an entry that
        // expired after it was admitted, and the oracle must agree at every step.
        check(`step ${step} (${label})`);
      }
    }
  });
});

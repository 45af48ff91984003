// The change feed over the real SQLite datastore: startup load, batches of events read back in
// one bulk read, merged per agent, and ordering against node events.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../../spiffe/id.js';
import { openTestDataStore } from '../../test/support/datastore.js';
import type { DataStore, NewEntry, RegistrationEntry } from '../datastore/types.js';
import { EntryIndex } from './entryindex.js';
import { AuthorizationCache, type AgentChange } from './authcache.js';
import { ChangeFeed } from './feed.js';
import { entryWithDefaults } from '../../test/support/entries.js';

const td = parseTrustDomain('example.org');
const NOW = 1_700_000_000;
const agentA = parseSpiffeId('spiffe://example.org/spire/agent/join_token/a');
const agentB = parseSpiffeId('spiffe://example.org/spire/agent/join_token/b');

const root = mkdtempSync(join(tmpdir(), 'spindle-feed-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

function entry(path: string, parentId: SpiffeId, over: Partial<NewEntry> = {}): NewEntry {
  return entryWithDefaults({ spiffeId: parseSpiffeId(`spiffe://example.org/${path}`), parentId, selectors: [{ type: 'unix', value: 'uid:1000' }], ...over });
}

async function create(ds: DataStore, e: NewEntry): Promise<RegistrationEntry> {
  const [r] = await ds.createEntries([e], NOW);
  assert.ok(r && 'entry' in r);
  return r.entry;
}

/** The datastore with its entry reads counted. */
function counting(ds: DataStore): { ds: DataStore; reads: { getEntry: number; getEntries: number } } {
  const reads = { getEntry: 0, getEntries: 0 };
  const wrapped = new Proxy(ds, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      if (prop === 'getEntry' || prop === 'getEntries') reads[prop]++;
      return (v as (...a: unknown[]) => unknown).bind(target);
    },
  });
  return { ds: wrapped, reads };
}

async function setup(): Promise<{ raw: DataStore; ds: DataStore; reads: { getEntry: number; getEntries: number }; cache: AuthorizationCache; feed: ChangeFeed; seen: Array<{ kind: string; what: unknown; revision: number }> }> {
  const raw = await openTestDataStore(join(root, `t${++n}`, 'ds.sqlite3'));
  after(() => raw.close());
  const { ds, reads } = counting(raw);
  const cache = new AuthorizationCache(new EntryIndex({ trustDomain: td, now: () => NOW }));
  const feed = new ChangeFeed({ datastore: ds, cache, logger: { error: (o, m) => assert.fail(`${m}: ${String((o as { err?: unknown }).err)}`), debug: () => {} } });
  const seen: Array<{ kind: string; what: unknown; revision: number }> = [];
  feed.subscribe({
    entries: (changes: AgentChange[], revision) => seen.push({ kind: 'entries', what: summary(changes), revision }),
    node: (agentId, revision) => seen.push({ kind: 'node', what: agentId, revision }),
  });
  return { raw, ds, reads, cache, feed, seen };
}

function summary(changes: AgentChange[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const c of changes) {
    out[c.agentId] = [...c.added.map((e) => `+${e.spiffeId}`), ...c.updated.map((e) => `~${e.spiffeId}@${e.hint}`), ...c.removed.map((e) => `-${e.spiffeId}`)].sort();
  }
  return out;
}

describe('ChangeFeed', () => {
  it('start loads every entry (listAllEntries) and serves them', async () => {
    const { raw, feed, cache } = await setup();
    for (let i = 0; i < 25; i++) await create(raw, entry(`w${i}`, i % 2 === 0 ? agentA : agentB));
    const { entries } = await feed.start({ pollIntervalMs: 0 });
    feed.stop();
    assert.equal(entries, 25);
    assert.equal(cache.index.size, 25);
    assert.equal(cache.setAgent(agentA, [])?.added.length, 13);
    assert.equal(feed.revision, await raw.latestEventId());
  });

  it('applies a batch of events with one bulk read, ending at the current state', async () => {
    const { raw, reads, cache, feed } = await setup();
    const keep = await create(raw, entry('keep', agentA));
    await feed.start({ pollIntervalMs: 0 });
    feed.stop(); // no automatic pokes: the events below pile up into one batch
    const before = { ...reads };
    const gone = await create(raw, entry('gone', agentA)); // created then deleted within the batch
    const moved = await create(raw, entry('moved', agentA)); // created under A, then moved to B
    await raw.updateEntry({ ...moved, parentId: agentB }, NOW + 1);
    await raw.updateEntry({ ...keep, hint: 'v2' }, NOW + 1);
    await raw.deleteEntries([gone.id], NOW + 2);
    const latest = await raw.latestEventId();
    await feed.poke();
    assert.equal(reads.getEntries - before.getEntries, 1, 'one bulk read for the batch');
    assert.equal(reads.getEntry - before.getEntry, 0, 'no per-event reads');
    assert.equal(feed.revision, latest);
    const fresh = new AuthorizationCache(new EntryIndex({ trustDomain: td, now: () => NOW }));
    fresh.reload(await raw.listAllEntries());
    const state = (c: AuthorizationCache): RegistrationEntry[] => [...c.index.values()].sort((x, y) => (x.id < y.id ? -1 : 1));
    assert.deepEqual(state(cache), state(fresh), 'the cache equals a reload of the datastore');
    assert.equal(cache.index.has(gone.id), false);
  });

  it('pushes one merged change per agent per batch and flushes before node events', async () => {
    const { raw, cache, feed, seen } = await setup();
    const keep = await create(raw, entry('keep', agentA));
    await feed.start({ pollIntervalMs: 0 });
    feed.stop();
    cache.setAgent(agentA, []);
    cache.setAgent(agentB, []);
    seen.length = 0;
    const gone = await create(raw, entry('gone', agentA));
    const moved = await create(raw, entry('moved', agentA));
    await raw.updateEntry({ ...moved, parentId: agentB }, NOW + 1);
    await raw.updateEntry({ ...keep, hint: 'v2' }, NOW + 1);
    await raw.deleteEntries([gone.id], NOW + 2);
    const beforeNode = await raw.latestEventId();
    await raw.createAttestedNode(
      { spiffeId: agentA, attestationType: 'join_token', certSerial: '01', certNotAfter: NOW + 3600, newCertSerial: '', newCertNotAfter: 0, selectors: [], banned: false, canReattest: false },
      NOW + 3,
    );
    await raw.createEntries([entry('late', agentB)], NOW + 4);
    const latest = await raw.latestEventId();
    await feed.poke();
    assert.deepEqual(seen, [
      {
        kind: 'entries',
        // "gone" was created and deleted within the batch: A never hears of it. "moved" ends at B
        // (its current version), "keep" is an update with its current content.
        what: { [agentA]: ['~spiffe://example.org/keep@v2'], [agentB]: ['+spiffe://example.org/moved'] },
        revision: beforeNode,
      },
      { kind: 'node', what: agentA, revision: beforeNode + 1 },
      { kind: 'entries', what: { [agentB]: ['+spiffe://example.org/late'] }, revision: latest },
    ]);
    assert.deepEqual(
      cache.entriesFor(agentA)?.map((e) => e.spiffeId).sort(),
      ['spiffe://example.org/keep'],
    );
    assert.deepEqual(cache.entriesFor(agentB)?.map((e) => e.spiffeId).sort(), ['spiffe://example.org/late', 'spiffe://example.org/moved']);
  });
});

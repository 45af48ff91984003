// The authorization cache fed from the real SQLite datastore: entries validated as the admin
// API will, stored, loaded, then kept current from the change feed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSpiffeId, parseTrustDomain } from '../../spiffe/id.js';
import type { DataStore, RegistrationEntry } from '../datastore/types.js';
import { openTestDataStore } from '../../test/support/datastore.js';
import { EntryIndex } from './entryindex.js';
import { AuthorizationCache, type AgentChange } from './authcache.js';
import { parseSelector, validateNewEntry, type EntryInput } from './validate.js';

const td = parseTrustDomain('example.org');
const NOW = 1_700_000_000;
const agentA = parseSpiffeId('spiffe://example.org/spire/agent/k8s_psat/prod/node-a');
const agentB = parseSpiffeId('spiffe://example.org/spire/agent/k8s_psat/prod/node-b');
const agentC = parseSpiffeId('spiffe://example.org/spire/agent/k8s_psat/staging/node-c');
const prodSelectors = (node: string) => [parseSelector('k8s_psat:cluster:prod'), parseSelector(`k8s_psat:agent_node_name:${node}`)];

function summary(changes: AgentChange[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const c of changes) {
    out[c.agentId] = [
      ...c.added.map((e) => `+${e.spiffeId}`),
      ...c.updated.map((e) => `~${e.spiffeId}`),
      ...c.removed.map((e) => `-${e.spiffeId}`),
    ].sort();
  }
  return out;
}

describe('AuthorizationCache over the SQLite datastore', () => {
  let dir: string;
  let ds: DataStore;
  let cache: AuthorizationCache;
  let seen = 0;

  async function create(input: EntryInput): Promise<RegistrationEntry> {
    const [res] = await ds.createEntries([validateNewEntry(input, { trustDomain: td })], NOW);
    assert.ok(res !== undefined && 'entry' in res, JSON.stringify(res));
    return res.entry;
  }

  /** Reads the change feed since the last call and applies entry events to the cache. */
  async function sync(): Promise<AgentChange[]> {
    const out: AgentChange[] = [];
    for (const ev of await ds.listEventsSince(seen, 1000)) {
      seen = ev.id;
      if (!ev.kind.startsWith('entry_')) continue;
      const current = await ds.getEntry(ev.key);
      out.push(...cache.applyChange(cache.index.get(ev.key), current));
    }
    return out;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-entries-'));
    ds = await openTestDataStore(join(dir, 'datastore.sqlite3'));
    await create({ spiffeId: 'spiffe://example.org/cluster/prod', parentId: 'spiffe://example.org/spire/server', selectors: ['k8s_psat:cluster:prod'] });
    await create({ spiffeId: 'spiffe://example.org/ns/prod/sa/web', parentId: 'spiffe://example.org/cluster/prod', selectors: ['k8s:ns:prod', 'k8s:sa:web'] });
    await create({ spiffeId: 'spiffe://example.org/host/a/sshd', parentId: agentA, selectors: ['unix:uid:0'] });
    seen = await ds.latestEventId();
    const index = new EntryIndex({ trustDomain: td, now: () => NOW });
    index.load((await ds.listEntries()).items);
    cache = new AuthorizationCache(index);
    cache.setAgent(agentA, prodSelectors('node-a'));
    cache.setAgent(agentB, prodSelectors('node-b'));
    cache.setAgent(agentC, [parseSelector('k8s_psat:cluster:staging')]);
  });

  after(async () => {
    await ds.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves direct and alias entries from the stored data', () => {
    assert.deepEqual(cache.entriesFor(agentA)!.map((e) => e.spiffeId).sort(), [
      'spiffe://example.org/host/a/sshd',
      'spiffe://example.org/ns/prod/sa/web',
    ]);
    assert.deepEqual(cache.entriesFor(agentB)!.map((e) => e.spiffeId), ['spiffe://example.org/ns/prod/sa/web']);
    assert.deepEqual(cache.entriesFor(agentC), []);
    // The stateless query over the same index agrees.
    assert.deepEqual(
      cache.index.authorizedEntries(agentA, prodSelectors('node-a')).map((e) => e.id).sort(),
      cache.entriesFor(agentA)!.map((e) => e.id).sort(),
    );
  });

  it('pushes creates, updates and deletes from the change feed to exactly the affected agents', async () => {
    const api = await create({ spiffeId: 'spiffe://example.org/ns/prod/sa/api', parentId: 'spiffe://example.org/cluster/prod', selectors: ['k8s:sa:api'] });
    assert.deepEqual(summary(await sync()), {
      [agentA]: ['+spiffe://example.org/ns/prod/sa/api'],
      [agentB]: ['+spiffe://example.org/ns/prod/sa/api'],
    });

    const moved = await ds.updateEntry({ ...api, parentId: agentC }, NOW + 1);
    assert.equal(moved.revisionNumber, 1);
    assert.deepEqual(summary(await sync()), {
      [agentA]: ['-spiffe://example.org/ns/prod/sa/api'],
      [agentB]: ['-spiffe://example.org/ns/prod/sa/api'],
      [agentC]: ['+spiffe://example.org/ns/prod/sa/api'],
    });

    await ds.updateEntry({ ...moved, dnsNames: ['api.prod.svc'] }, NOW + 2);
    assert.deepEqual(summary(await sync()), { [agentC]: ['~spiffe://example.org/ns/prod/sa/api'] });

    await ds.deleteEntries([api.id], NOW + 3);
    assert.deepEqual(summary(await sync()), { [agentC]: ['-spiffe://example.org/ns/prod/sa/api'] });
  });
});

/**
 * Cross-server push on PostgreSQL: the server's change feed (server/entries/feed.ts) following
 * store B is woken by a write made through store A (another server on the same database) by
 * NOTIFY alone: the feed's own poll is off and B's catch-up poll is an hour away.
 */
import { after, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseSpiffeId, parseTrustDomain } from '../../../spiffe/id.js';
import { entryWithDefaults } from '../../../test/support/entries.js';
import { postgresCluster } from '../../../test/support/postgres.js';
import { AuthorizationCache, type AgentChange } from '../../entries/authcache.js';
import { EntryIndex } from '../../entries/entryindex.js';
import { ChangeFeed } from '../../entries/feed.js';
import type { DataStore } from '../types.js';
import { openPostgresDataStore } from './store.js';

const opened: DataStore[] = [];
after(async () => {
  for (const s of opened) await s.close();
});

it("an entry written through server A reaches server B's change feed listeners by NOTIFY", async () => {
  const cluster = await postgresCluster();
  const uri = cluster.uri(await cluster.createDatabase());
  const open = async (): Promise<DataStore> => {
    const s = await openPostgresDataStore({ connectionString: uri, maxIdleConns: 0, pollMs: 3_600_000 });
    opened.push(s);
    return s;
  };
  const [a, b] = [await open(), await open()];
  const agent = parseSpiffeId('spiffe://example.org/spire/agent/join_token/n1');
  const cache = new AuthorizationCache(new EntryIndex({ trustDomain: parseTrustDomain('example.org'), now: () => 1000 }));
  const feed = new ChangeFeed({ datastore: b, cache, logger: { error: (o, m) => assert.fail(`${m}: ${String((o as { err?: unknown }).err)}`), debug: () => {} } });
  await feed.start({ pollIntervalMs: 0 });
  after(() => feed.stop());
  cache.setAgent(agent, []);
  const pushed = new Promise<{ changes: AgentChange[]; revision: number }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("server B's feed was not woken")), 15_000);
    feed.subscribe({
      entries: (changes, revision) => {
        clearTimeout(t);
        resolve({ changes, revision });
      },
    });
  });
  const [r] = await a.createEntries(
    [entryWithDefaults({ spiffeId: parseSpiffeId('spiffe://example.org/web'), parentId: agent, selectors: [{ type: 'unix', value: 'uid:1000' }] })],
    1000,
  );
  assert.ok(r && 'entry' in r);
  const { changes, revision } = await pushed;
  assert.equal(revision, await a.latestEventId());
  assert.deepEqual(
    changes.map((c) => [c.agentId, c.added.map((e) => e.id)]),
    [[agent, [r.entry.id]]],
  );
});

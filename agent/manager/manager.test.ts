// AgentManager against a real spindle-server process (real TLS, real signing): the sync stream,
// lazy batched signing, subscriptions, JWT-SVIDs, server restarts and eviction.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { AgentManager, NotReadyError, type ManagerLogger, type ManagerOptions } from './manager.js';
import { JWT_CACHE_ENTRIES_METRIC, JWT_CACHE_EVICTIONS_METRIC, registerJwtCacheMetrics } from '../telemetry.js';
import type { WorkloadUpdate } from './types.js';
import { attestAgent, connectAgentApi, syncAuthorized, type AgentApiConnection } from '../client/serverclient.js';
import type { AgentAPIClient, BatchNewX509SVIDResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import type { Selector } from '../../common/selector.js';
import { parseSpiffeId, parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { pemToCertificates, privateKeyToPem } from '../../spiffe/pem.js';
import { createCsr, createIssuer, issueX509Svid, parseCertificate, parseX509Svid, verifyX509Svid } from '../../spiffe/x509/index.js';
import { validateJwtSvid, parseJwtSvidInsecure } from '../../spiffe/jwtsvid.js';
import { serverBin, startServerProcess, type ServerProcess } from '../../test/support/serverproc.js';
import { AgentIdentity } from '../attest/identity.js';
import { JoinTokenAgentAttestor } from '../../attestors/node/join_token/agent.js';

const td: TrustDomain = parseTrustDomain('example.org');
let server: ServerProcess;
let bundle: Buffer[];

// ---- helpers

function ok(r: { status: number | null; stdout: string; stderr: string }): string {
  assert.equal(r.status, 0, `CLI failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Runs a CLI command without blocking this process's event loop (so pushes are seen as they come). */
function cliAsync(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(serverBin, [...args, '-socketPath', server.socketPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`CLI ${args.join(' ')} failed (${code}): ${err}${out}`))));
    p.stdin.end(input ?? '');
  });
}

const sel = (s: string): Selector => ({ type: s.slice(0, s.indexOf(':')), value: s.slice(s.indexOf(':') + 1) });
const sels = (...s: string[]): Selector[] => s.map(sel);
const uniq = (): string => randomUUID().slice(0, 8);

interface EntrySpec {
  spiffeId: string;
  selectors: string[];
  hint?: string;
  id?: string;
  x509SvidTtl?: number;
}

/** Creates entries parented by `agentId` in one CLI call; returns their IDs in order. */
function createEntries(agentId: string, specs: EntrySpec[]): string[] {
  const doc = {
    entries: specs.map((s) => ({
      ...(s.id ? { entry_id: s.id } : {}),
      parent_id: agentId,
      spiffe_id: s.spiffeId,
      selectors: s.selectors,
      ...(s.hint ? { hint: s.hint } : {}),
      ...(s.x509SvidTtl ? { x509_svid_ttl: s.x509SvidTtl } : {}),
    })),
  };
  const out = JSON.parse(ok(server.cli(['entry', 'create', '-data', '-', '-output', 'json'], { input: JSON.stringify(doc) }))) as {
    results: Array<{ status?: { code?: number; message?: string }; entry: { id: string; createdAt: string } }>;
  };
  for (const r of out.results) {
    assert.ok(!r.status?.code, `entry create: ${r.status?.message}`);
    createdAt.set(r.entry.id, Number(r.entry.createdAt));
  }
  return out.results.map((r) => r.entry.id);
}
const createdAt = new Map<string, number>();

interface TestAgent {
  id: string;
  conn: AgentApiConnection;
  /** The agent SVID chain from the attestation. */
  chain: Buffer[];
  /** Number of CSRs in each BatchNewX509SVID call made through `connection()`. */
  batches: number[];
  /** While set, BatchNewX509SVID answers are held back until it resolves. */
  hold: Promise<void> | undefined;
  /** Entry IDs whose signing results are replaced by a refusal (as if the server refused). */
  refuse: Set<string>;
  /** performance.now() of each sync message received. */
  syncTimes: number[];
  manager(opts?: Partial<ManagerOptions>): AgentManager;
  logs: string[];
}

const open: Array<{ stop(): void } | { close(): void }> = [];

/** A fresh agent (new join token) with a connection whose BatchNewX509SVID calls are counted. */
async function newAgent(): Promise<TestAgent> {
  const token = /^Token: (\S+)$/m.exec(ok(server.cli(['token', 'generate'])))![1]!;
  const keys = await generateKeyPair();
  const boot = connectAgentApi({ address: { host: '127.0.0.1', port: server.port }, trustDomain: td, bundle });
  let res;
  try {
    res = await attestAgent(boot.client, { type: 'join_token', payload: Buffer.from(token), csr: createCsr(keys.privateKey) });
  } finally {
    boot.close();
  }
  const conn = connectAgentApi({
    address: { host: '127.0.0.1', port: server.port },
    trustDomain: td,
    bundle,
    svid: { chain: res.svid.certChain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) },
  });
  open.push(conn);
  const agent: TestAgent = {
    id: res.svid.spiffeId,
    conn,
    chain: res.svid.certChain.map((c) => Buffer.from(c)),
    batches: [],
    hold: undefined,
    refuse: new Set(),
    syncTimes: [],
    logs: [],
    manager: (opts = {}) => {
      const m = new AgentManager({ trustDomain: td, connection: () => spy, logger: loggerFor(agent.logs), ...opts });
      open.push(m);
      return m;
    },
  };
  const client = new Proxy(conn.client, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (prop === 'batchNewX509Svid') {
        return (req: { params: Array<{ entryId: string }> }, md: unknown, o: unknown, cb: (e: ServiceError | null, r?: BatchNewX509SVIDResponse) => void) => {
          agent.batches.push(req.params.length);
          const hold = agent.hold;
          return (v as (...a: unknown[]) => unknown).call(target, req, md, o, (e: ServiceError | null, r?: BatchNewX509SVIDResponse) => {
            if (r) {
              r.results = r.results.map((x, i) =>
                agent.refuse.has(req.params[i]!.entryId) ? { status: { code: status.PERMISSION_DENIED, message: 'refused by the test' }, svid: undefined } : x,
              );
            }
            if (hold) void hold.then(() => cb(e, r));
            else cb(e, r);
          });
        };
      }
      if (prop === 'syncAuthorized') {
        return (...a: unknown[]) => {
          const stream = (v as (...x: unknown[]) => NodeJS.EventEmitter).apply(target, a);
          stream.on('data', () => agent.syncTimes.push(performance.now()));
          return stream;
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as AgentAPIClient;
  const spy: AgentApiConnection = { client, close: () => conn.close() };
  return agent;
}

function loggerFor(logs: string[]): ManagerLogger {
  const rec = (level: string) => (o: object, m: string) => void logs.push(`${level} ${m} ${JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
  return { debug: rec('DEBUG'), info: rec('INFO'), warn: rec('WARN'), error: rec('ERROR') };
}

/** Queue of updates a subscriber receives; `next()` waits for the next one. */
function collector() {
  const queue: WorkloadUpdate[] = [];
  const waiters: Array<(u: WorkloadUpdate) => void> = [];
  let count = 0;
  return {
    listener: (u: WorkloadUpdate) => {
      count++;
      const w = waiters.shift();
      if (w) w(u);
      else queue.push(u);
    },
    get count() {
      return count;
    },
    pending: () => queue.length,
    next(timeoutMs = 10_000): Promise<WorkloadUpdate> {
      const u = queue.shift();
      if (u) return Promise.resolve(u);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no update within the timeout')), timeoutMs);
        waiters.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      });
    },
  };
}

/** Polls a condition (for state with no event to wait on). */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const ids = (u: WorkloadUpdate): string[] => u.identities.map((i) => i.spiffeId);
/** Entries created within the same second are ordered by ID: compare as sets where age is not the point. */
const idSet = (u: WorkloadUpdate): string[] => ids(u).sort();
const serialOf = (u: WorkloadUpdate, spiffeId: string): string => parseCertificate(u.identities.find((i) => i.spiffeId === spiffeId)!.chain[0]!).serialHex;

before(async () => {
  server = await startServerProcess({ trustDomain: td });
  bundle = pemToCertificates(ok(server.cli(['bundle', 'show'])));
});

after(async () => {
  for (const o of open) ('stop' in o ? o.stop() : o.close());
  await server?.stop();
});

// ---- tests

describe('AgentManager', () => {
  test('start() resolves after the first sync', async () => {
    const agent = await newAgent();
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/start/${uniq()}`, selectors: ['unix:uid:100'] }]);
    const m = agent.manager();
    assert.equal(m.entryCount, 0);
    await m.start();
    assert.equal(m.entryCount, 1, 'the snapshot is applied when start() resolves');
    assert.ok(m.bundles().get(td), 'and the bundle is known');
    assert.deepEqual(agent.batches, [], 'nothing signed before a workload asks');
    m.stop();
  });

  test('stop() before the first sync rejects start()', async () => {
    const agent = await newAgent();
    const m = agent.manager();
    const started = m.start();
    m.stop();
    await assert.rejects(started, (e: Error) => e instanceof NotReadyError && /stopped/.test(e.message));
  });

  test('fetchX509 for 0, 1 and 2 matching entries: verified SVIDs, matching keys, oldest first, duplicate hints dropped', async () => {
    const agent = await newAgent();
    const u = uniq();
    // The first entry gets an ID that sorts last: the default must come from age, not ID order.
    const [first] = createEntries(agent.id, [{ id: `zzzz-${u}`, spiffeId: `spiffe://example.org/x/first-${u}`, selectors: ['unix:uid:1001'], hint: 'h' }]);
    const createdFirst = createdAt.get(first!)!;
    // createdAt has second resolution: let the clock move past it (at most 1 s).
    while (Math.floor(Date.now() / 1000) <= createdFirst) await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
    createEntries(agent.id, [
      { id: `0000-${u}`, spiffeId: `spiffe://example.org/x/second-${u}`, selectors: ['unix:uid:1001', 'unix:gid:50'] },
      { spiffeId: `spiffe://example.org/x/duphint-${u}`, selectors: ['unix:uid:1001', 'unix:gid:50'], hint: 'h' },
      { spiffeId: `spiffe://example.org/x/other-${u}`, selectors: ['unix:uid:2000'] },
    ]);
    const m = agent.manager();
    await m.start();

    const none = await m.fetchX509(sels('unix:uid:9999'));
    assert.deepEqual(none.identities, []);
    assert.deepEqual(agent.batches, []);

    const one = await m.fetchX509(sels('unix:uid:1001', 'unix:pid:77'));
    assert.deepEqual(ids(one), [`spiffe://example.org/x/first-${u}`]);

    const two = await m.fetchX509(sels('unix:uid:1001', 'unix:gid:50', 'unix:gid:51'));
    // first (oldest, hint h), second (no hint); duphint (hint h again, newer) is dropped.
    assert.deepEqual(ids(two), [`spiffe://example.org/x/first-${u}`, `spiffe://example.org/x/second-${u}`]);
    assert.equal(two.identities[0]!.hint, 'h');
    const hints = two.identities.map((i) => i.hint).filter((h) => h !== '');
    assert.equal(new Set(hints).size, hints.length, 'non-empty hints are unique');

    for (const update of [one, two]) {
      assert.equal(update.bundle.trustDomain, td);
      assert.deepEqual(update.federatedBundles, []);
      for (const i of update.identities) {
        assert.equal(verifyX509Svid(i.chain, update.bundle).id, i.spiffeId);
        const parsed = parseX509Svid(i.chain, i.privateKeyPkcs8); // checks that the key matches the leaf
        assert.equal(parsed.id, i.spiffeId);
        assert.ok(i.privateKeyPkcs8.equals(exportPrivateKeyPkcs8(i.privateKey)));
        assert.equal(i.notAfter.getTime(), parseCertificate(i.chain[0]!).notAfter.getTime());
        assert.deepEqual(i.federatesWith, []);
      }
    }
    // The first fetch's SVID is reused, not signed again.
    assert.equal(serialOf(one, `spiffe://example.org/x/first-${u}`), serialOf(two, `spiffe://example.org/x/first-${u}`));
    assert.equal(agent.batches.reduce((a, b) => a + b, 0), 3, 'first, second and duphint signed once each; other never');
    m.stop();
  });

  test('lazy signing: unused entries are never signed; a burst of 50 is one batch; concurrent requests share it', async () => {
    const agent = await newAgent();
    const u = uniq();
    const specs: EntrySpec[] = [];
    for (let i = 0; i < 50; i++) specs.push({ spiffeId: `spiffe://example.org/burst/${u}/${i}`, selectors: [`unix:uid:${5000 + i}`] });
    for (let i = 0; i < 20; i++) specs.push({ spiffeId: `spiffe://example.org/unused/${u}/${i}`, selectors: [`unix:uid:${6000 + i}`] });
    createEntries(agent.id, specs);
    const m = agent.manager();
    await m.start();
    assert.equal(m.entryCount, 70);
    assert.deepEqual(agent.batches, []);

    const updates = await Promise.all(Array.from({ length: 50 }, (_, i) => m.fetchX509(sels(`unix:uid:${5000 + i}`))));
    assert.deepEqual(agent.batches, [50], 'one BatchNewX509SVID call with 50 CSRs');
    updates.forEach((up, i) => assert.deepEqual(ids(up), [`spiffe://example.org/burst/${u}/${i}`]));

    // Served from the cache afterwards.
    await m.fetchX509(sels('unix:uid:5000'));
    assert.deepEqual(agent.batches, [50]);

    // A request that arrives while the batch for the same entry is in flight waits for it.
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/late/${u}`, selectors: ['unix:uid:5999'] }]);
    await waitFor(() => m.entryCount === 71, 'the new entry to arrive');
    let release!: () => void;
    agent.hold = new Promise((r) => (release = r));
    const a = m.fetchX509(sels('unix:uid:5999'));
    await waitFor(() => agent.batches.length === 2, 'the batch call');
    const b = m.fetchX509(sels('unix:uid:5999'));
    const sub = m.subscribe(sels('unix:uid:5999'), () => undefined);
    await new Promise((r) => setImmediate(r));
    release();
    agent.hold = undefined;
    const [ua, ub, us] = await Promise.all([a, b, sub.initial]);
    sub.close();
    assert.deepEqual(agent.batches, [50, 1], 'no second signing of the same entry');
    assert.equal(serialOf(ua, `spiffe://example.org/late/${u}`), serialOf(ub, `spiffe://example.org/late/${u}`));
    assert.equal(serialOf(ua, `spiffe://example.org/late/${u}`), serialOf(us, `spiffe://example.org/late/${u}`));
    // Nothing for the 20 unused entries.
    assert.equal(m.svidCount, 51);
    m.stop();
  });

  test('an entry that changes or disappears while its SVID is being signed is not served stale', async () => {
    const agent = await newAgent();
    const u = uniq();
    const [changing, going] = createEntries(agent.id, [
      { spiffeId: `spiffe://example.org/race/old-${u}`, selectors: ['unix:uid:4100'] },
      { spiffeId: `spiffe://example.org/race/gone-${u}`, selectors: ['unix:uid:4200'] },
    ]);
    const m = agent.manager();
    await m.start();

    let release!: () => void;
    agent.hold = new Promise((r) => (release = r));
    const pending = m.fetchX509(sels('unix:uid:4100', 'unix:uid:4200'));
    await waitFor(() => agent.batches.length === 1, 'the batch call');
    const rev = m.revision;
    await cliAsync(['entry', 'update', '-entryID', changing!, '-parentID', agent.id, '-spiffeID', `spiffe://example.org/race/new-${u}`, '-selector', 'unix:uid:4100']);
    await cliAsync(['entry', 'delete', '-entryID', going!]);
    await waitFor(() => m.revision > rev && m.entryCount === 1, 'the update and the delete to arrive');
    agent.hold = undefined;
    release();
    const up = await pending;
    assert.deepEqual(ids(up), [`spiffe://example.org/race/new-${u}`], 'the SVID has the entry\'s current SPIFFE ID');
    assert.equal(verifyX509Svid(up.identities[0]!.chain, up.bundle).id, `spiffe://example.org/race/new-${u}`);
    assert.equal(m.svidCount, 1, 'no SVID kept for the deleted entry');
    m.stop();
  });

  test('subscribe: pushes on entry create and delete and on rotation, not on unrelated changes', async () => {
    const agent = await newAgent();
    const u = uniq();
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/sub/a-${u}`, selectors: ['unix:uid:3000'], x509SvidTtl: 600 }]);
    let offsetMs = 0;
    const m = agent.manager({ now: () => new Date(Date.now() + offsetMs) });
    await m.start();
    const c1 = collector();
    const s1 = m.subscribe(sels('unix:uid:3000', 'unix:gid:3000'), c1.listener);
    const initial = await s1.initial;
    assert.deepEqual(ids(initial), [`spiffe://example.org/sub/a-${u}`]);
    assert.equal(c1.count, 0, 'the initial update is not pushed to the listener');

    // Entry created for the subscriber's selectors: pushed, with the new SVID signed.
    const t0 = performance.now();
    const created = JSON.parse(
      await cliAsync(['entry', 'create', '-parentID', agent.id, '-spiffeID', `spiffe://example.org/sub/b-${u}`, '-selector', 'unix:gid:3000', '-x509SVIDTTL', '600', '-output', 'json']),
    ) as { results: Array<{ entry: { id: string } }> };
    const tCli = performance.now();
    const added = await c1.next();
    const tPush = performance.now();
    const tSync = agent.syncTimes.at(-1)!;
    assert.ok(tSync > t0);
    console.log(
      `entry create via CLI -> subscriber push: ${(tPush - t0).toFixed(0)} ms (CLI process ${(tCli - t0).toFixed(0)} ms; ` +
        `sync message at ${(tSync - t0).toFixed(0)} ms; sync message -> listener, SVID signing included: ${(tPush - tSync).toFixed(1)} ms)`,
    );
    assert.deepEqual(idSet(added), [`spiffe://example.org/sub/a-${u}`, `spiffe://example.org/sub/b-${u}`]);
    for (const i of added.identities) assert.equal(verifyX509Svid(i.chain, added.bundle).id, i.spiffeId);
    const b = created.results[0]!.entry.id;

    // An unrelated entry: another subscriber sees it, the first one does not.
    const c2 = collector();
    const s2 = m.subscribe(sels('unix:uid:3999'), c2.listener);
    assert.deepEqual(ids(await s2.initial), []);
    const other = JSON.parse(
      await cliAsync(['entry', 'create', '-parentID', agent.id, '-spiffeID', `spiffe://example.org/sub/other-${u}`, '-selector', 'unix:uid:3999', '-output', 'json']),
    ) as { results: Array<{ entry: { id: string } }> };
    assert.deepEqual(ids(await c2.next()), [`spiffe://example.org/sub/other-${u}`]);
    await cliAsync(['entry', 'delete', '-entryID', other.results[0]!.entry.id]);
    assert.deepEqual(ids(await c2.next()), []);
    assert.equal(c1.count, 1, 'no push for changes to entries the subscriber does not match');

    // Deleted: the identities shrink.
    await cliAsync(['entry', 'delete', '-entryID', b]);
    const shrunk = await c1.next();
    assert.deepEqual(ids(shrunk), [`spiffe://example.org/sub/a-${u}`]);
    assert.equal(serialOf(shrunk, `spiffe://example.org/sub/a-${u}`), serialOf(initial, `spiffe://example.org/sub/a-${u}`), 'the remaining SVID is unchanged');

    // Rotation: nothing is due yet; past half-life (jitter included) it is renewed and pushed.
    m.renewDue();
    await new Promise((r) => setImmediate(r));
    const batchesBefore = agent.batches.length;
    offsetMs = 301_000; // TTL 600 s: due at most at 300 s
    m.renewDue();
    const rotated = await c1.next();
    assert.deepEqual(ids(rotated), [`spiffe://example.org/sub/a-${u}`]);
    assert.notEqual(serialOf(rotated, `spiffe://example.org/sub/a-${u}`), serialOf(initial, `spiffe://example.org/sub/a-${u}`), 'a new serial');
    assert.equal(verifyX509Svid(rotated.identities[0]!.chain, rotated.bundle).id, `spiffe://example.org/sub/a-${u}`);
    assert.equal(agent.batches.length - batchesBefore, 1, 'renewals go in one batch');
    // The renewed SVID is not due again right away.
    m.renewDue();
    await new Promise((r) => setImmediate(r));
    assert.equal(agent.batches.length - batchesBefore, 1);
    assert.equal(c2.count, 2, 'the other subscriber got nothing from the rotation');
    assert.equal(c1.count, 3);
    s1.close();
    s2.close();
    m.stop();
  });

  test('subscribers matching the same entries share one update; others get their own; changes reach all', async () => {
    const agent = await newAgent();
    const u = uniq();
    const [, bId] = createEntries(agent.id, [
      { spiffeId: `spiffe://example.org/share/a-${u}`, selectors: ['unix:uid:3300'], x509SvidTtl: 600 },
      { spiffeId: `spiffe://example.org/share/b-${u}`, selectors: ['unix:uid:3300', 'unix:gid:3301'], x509SvidTtl: 600 },
    ]);
    let offsetMs = 0;
    const m = agent.manager({ now: () => new Date(Date.now() + offsetMs) });
    await m.start();
    const [c1, c2, c3] = [collector(), collector(), collector()];
    const s1 = m.subscribe(sels('unix:uid:3300'), c1.listener);
    const s2 = m.subscribe(sels('unix:uid:3300', 'unix:gid:3302'), c2.listener); // same entries as s1
    const s3 = m.subscribe(sels('unix:uid:3300', 'unix:gid:3301'), c3.listener); // one more
    const [i1, i2, i3] = await Promise.all([s1.initial, s2.initial, s3.initial]);
    assert.deepEqual(ids(i1), [`spiffe://example.org/share/a-${u}`]);
    assert.equal(i1, i2, 'the same entries: the same update object');
    assert.deepEqual(idSet(i3), [`spiffe://example.org/share/a-${u}`, `spiffe://example.org/share/b-${u}`]);
    assert.notEqual(i3, i1);

    // Rotation: every subscriber gets the new SVIDs; s1 and s2 share the new update, which is not the old one.
    offsetMs = 301_000;
    m.renewDue();
    const [r1, r2, r3] = await Promise.all([c1.next(), c2.next(), c3.next()]);
    assert.equal(r1, r2);
    assert.notEqual(r1, i1, 'a change makes a new update');
    assert.notEqual(serialOf(r1, `spiffe://example.org/share/a-${u}`), serialOf(i1, `spiffe://example.org/share/a-${u}`));
    assert.equal(serialOf(r3, `spiffe://example.org/share/a-${u}`), serialOf(r1, `spiffe://example.org/share/a-${u}`));
    assert.deepEqual(idSet(r3), [`spiffe://example.org/share/a-${u}`, `spiffe://example.org/share/b-${u}`]);

    // B deleted: only s3 is pushed, and now matches what s1 matches (same object again).
    await cliAsync(['entry', 'delete', '-entryID', bId!]);
    const d3 = await c3.next();
    assert.deepEqual(ids(d3), [`spiffe://example.org/share/a-${u}`]);
    assert.equal(d3, await m.fetchX509(sels('unix:uid:3300')));
    assert.equal(c1.count, 1);
    assert.equal(c2.count, 1);
    s1.close();
    s2.close();
    s3.close();
    m.stop();
  });

  test('an entry that cannot be signed does not block the others (fetch, pushes, rotation)', async () => {
    const agent = await newAgent();
    const u = uniq();
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/partial/a-${u}`, selectors: ['unix:uid:3100'], x509SvidTtl: 600 }]);
    let offsetMs = 0;
    const m = agent.manager({ now: () => new Date(Date.now() + offsetMs), retryMs: 200 });
    await m.start();
    const c = collector();
    const s = m.subscribe(sels('unix:uid:3100'), c.listener);
    const initial = await s.initial;
    assert.equal(initial.identities.length, 1);
    const badId = `bad-${u}`;
    agent.refuse.add(badId);
    const n = agent.batches.length;
    createEntries(agent.id, [{ id: badId, spiffeId: `spiffe://example.org/partial/bad-${u}`, selectors: ['unix:uid:3100'] }]);
    await waitFor(() => agent.batches.length > n, 'the attempt to sign the new entry');
    // A workload still gets the identity that could be signed.
    assert.deepEqual(ids(await m.fetchX509(sels('unix:uid:3100'))), [`spiffe://example.org/partial/a-${u}`]);
    // Rotation of the good SVID still reaches the subscriber.
    offsetMs = 301_000;
    m.renewDue();
    const rotated = await c.next();
    assert.deepEqual(ids(rotated), [`spiffe://example.org/partial/a-${u}`]);
    assert.notEqual(serialOf(rotated, `spiffe://example.org/partial/a-${u}`), serialOf(initial, `spiffe://example.org/partial/a-${u}`));
    // Retried by itself (with backoff): once the server signs it, the subscriber gets it.
    const attempts = agent.batches.length;
    await waitFor(() => agent.batches.length > attempts, 'a retry');
    agent.refuse.clear();
    const healed = await c.next();
    assert.deepEqual(idSet(healed), [`spiffe://example.org/partial/a-${u}`, `spiffe://example.org/partial/bad-${u}`]);
    s.close();
    m.stop();
  });

  test('an SVID past its serving time is signed again at once; when it cannot be, UNAVAILABLE with a reason, a WARN, and a push', async () => {
    const agent = await newAgent();
    const u = uniq();
    const [id] = createEntries(agent.id, [{ spiffeId: `spiffe://example.org/exp/a-${u}`, selectors: ['unix:uid:7100'], x509SvidTtl: 600 }]);
    let offsetMs = 0;
    const m = agent.manager({ now: () => new Date(Date.now() + offsetMs) });
    await m.start();
    const first = await m.fetchX509(sels('unix:uid:7100'));
    const notAfter = first.identities[0]!.notAfter.getTime();
    // Within the expiry margin (0.5 s before notAfter): not served, and signed again right away
    // (not left for the renewal retry).
    offsetMs = notAfter - Date.now() - 500;
    const again = await m.fetchX509(sels('unix:uid:7100'));
    assert.equal(again.identities.length, 1, 'a fresh SVID, not "no identity"');
    assert.notEqual(serialOf(again, `spiffe://example.org/exp/a-${u}`), serialOf(first, `spiffe://example.org/exp/a-${u}`));

    // The server now refuses it: past its notAfter the caller is told why (transient), the
    // subscriber is pushed an update saying so, and one WARN names the SVID.
    const c = collector();
    const s = m.subscribe(sels('unix:uid:7100'), c.listener);
    await s.initial;
    agent.refuse.add(id!);
    offsetMs = again.identities[0]!.notAfter.getTime() - Date.now() + 10;
    m.renewDue();
    const pushed = await c.next();
    assert.equal(pushed.identities.length, 0);
    assert.match(pushed.unavailable ?? '', new RegExp(`X509-SVID for spiffe://example.org/exp/a-${u} expired at .*retrying`));
    await assert.rejects(m.fetchX509(sels('unix:uid:7100')), (e: Error) => e.name === 'IdentityUnavailableError' && /expired at/.test(e.message));
    assert.equal(agent.logs.filter((l) => l.startsWith('WARN X509-SVID expired without being renewed')).length, 1);
    // A caller matching nothing is still "no identity" (an empty update, no reason).
    const none = await m.fetchX509(sels('unix:uid:7199'));
    assert.equal(none.identities.length, 0);
    assert.equal(none.unavailable, undefined);
    s.close();
    m.stop();
  });

  test('fetchJwt: every audience, cached until half-life, fresh for another audience, spiffeId filter', async () => {
    const agent = await newAgent();
    const u = uniq();
    createEntries(agent.id, [
      { spiffeId: `spiffe://example.org/jwt/one-${u}`, selectors: ['unix:uid:4000'] },
      { spiffeId: `spiffe://example.org/jwt/two-${u}`, selectors: ['unix:uid:4000', 'unix:gid:4000'] },
    ]);
    let offsetMs = 0;
    const m = agent.manager({ now: () => new Date(Date.now() + offsetMs) });
    await m.start();
    const S = sels('unix:uid:4000', 'unix:gid:4000');
    const jwts = await m.fetchJwt(S, ['aud-1', 'aud-2']);
    assert.deepEqual(jwts.map((j) => j.spiffeId).sort(), [`spiffe://example.org/jwt/one-${u}`, `spiffe://example.org/jwt/two-${u}`]);
    for (const j of jwts) {
      for (const aud of ['aud-1', 'aud-2']) {
        const v = await validateJwtSvid(j.token, { audience: aud, bundles: m.bundles() });
        assert.equal(v.id, j.spiffeId);
        assert.deepEqual([...v.audience].sort(), ['aud-1', 'aud-2']);
      }
      assert.equal(parseJwtSvidInsecure(j.token).expiresAt.getTime(), j.expiresAt.getTime());
    }
    assert.deepEqual(agent.batches, [], 'JWT-SVIDs need no X509-SVIDs');

    // Cached: same tokens (audience order and duplicates do not matter).
    const again = await m.fetchJwt(S, ['aud-2', 'aud-1', 'aud-2']);
    assert.deepEqual(again.map((j) => j.token), jwts.map((j) => j.token));
    // Another audience: fresh tokens.
    const other = await m.fetchJwt(S, ['aud-3']);
    assert.equal(other.length, 2);
    for (const j of other) {
      assert.ok(!jwts.some((x) => x.token === j.token));
      await validateJwtSvid(j.token, { audience: 'aud-3', bundles: m.bundles() });
      await assert.rejects(validateJwtSvid(j.token, { audience: 'aud-1', bundles: m.bundles() }));
    }
    // spiffeId filter.
    const only = await m.fetchJwt(S, ['aud-1', 'aud-2'], parseSpiffeId(`spiffe://example.org/jwt/two-${u}`));
    assert.deepEqual(only.map((j) => j.token), [jwts.find((j) => j.spiffeId.endsWith(`two-${u}`))!.token]);
    assert.deepEqual(await m.fetchJwt(S, ['aud-1'], parseSpiffeId(`spiffe://example.org/jwt/nope-${u}`)), []);
    // Past half of the lifetime: fresh tokens.
    const life = jwts[0]!.expiresAt.getTime() - Date.now();
    offsetMs = life / 2 + 5_000;
    const later = await m.fetchJwt(S, ['aud-1', 'aud-2']);
    for (const j of later) assert.ok(!jwts.some((x) => x.token === j.token), 'renewed after half-life');
    m.stop();
  });

  test('fetchJwt: one identity per hint, the oldest entry\'s, whatever order the selectors find them in; entries without a hint are all served', async () => {
    const agent = await newAgent();
    const u = uniq();
    // The older entry is found through the caller's second selector, the newer ones through its
    // first. Created together they may share a createdAt second: the entry ID breaks the tie.
    createEntries(agent.id, [
      { id: `a-${u}`, spiffeId: `spiffe://example.org/hint/older-${u}`, selectors: ['unix:uid:4100'], hint: 'shared' },
      { id: `b-${u}`, spiffeId: `spiffe://example.org/hint/newer-${u}`, selectors: ['unix:gid:4100'], hint: 'shared' },
      { id: `c-${u}`, spiffeId: `spiffe://example.org/hint/none-${u}`, selectors: ['unix:gid:4100'] },
    ]);
    const m = agent.manager();
    await m.start();
    const jwts = await m.fetchJwt(sels('unix:gid:4100', 'unix:uid:4100'), ['aud']);
    assert.deepEqual(jwts.map((j) => [j.spiffeId, j.hint]), [
      [`spiffe://example.org/hint/older-${u}`, 'shared'],
      [`spiffe://example.org/hint/none-${u}`, ''],
    ]);
    m.stop();
  });

  test('fetchX509 and fetchJwt: identities ordered by age across creation seconds, ties by entry ID, whatever order the selectors find them in; fetchJwt by SPIFFE ID gets that entry even when an older one shares its hint, and never an entry of another caller', async () => {
    const agent = await newAgent();
    const u = uniq();
    const id = (n: string): string => `spiffe://example.org/order/${n}-${u}`;
    /** Waits until the wall clock is past the second `created` (createdAt has second resolution). */
    const nextSecond = async (created: number): Promise<void> => {
      while (Math.floor(Date.now() / 1000) <= created) await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
    };
    // Entry IDs sort against their age: m (oldest), then z, then 0 and a created in one second.
    const [m1, p1] = createEntries(agent.id, [
      { id: `m-${u}`, spiffeId: id('m'), selectors: ['unix:uid:6300'] },
      { id: `p-old-${u}`, spiffeId: id('pair-old'), selectors: ['unix:uid:6310'], hint: 'pair' },
    ]);
    await nextSecond(createdAt.get(m1!)!);
    const [z1] = createEntries(agent.id, [{ id: `z-${u}`, spiffeId: id('z'), selectors: ['unix:gid:6301'] }]);
    await nextSecond(createdAt.get(z1!)!);
    const last = createEntries(agent.id, [
      { id: `a-${u}`, spiffeId: id('a'), selectors: ['unix:gid:6303'] },
      { id: `0-${u}`, spiffeId: id('0'), selectors: ['unix:gid:6302'] },
      { id: `0-p-new-${u}`, spiffeId: id('pair-new'), selectors: ['unix:gid:6311'], hint: 'pair' },
    ]);
    assert.ok(createdAt.get(m1!)! < createdAt.get(z1!)! && createdAt.get(z1!)! < createdAt.get(last[0]!)!, 'three creation seconds');
    assert.equal(createdAt.get(last[0]!), createdAt.get(last[1]!));
    assert.ok(createdAt.get(p1!)! < createdAt.get(last[2]!)!);
    const m = agent.manager();
    await m.start();

    const expected = [id('m'), id('z'), id('0'), id('a')];
    for (const order of [
      ['unix:gid:6303', 'unix:gid:6302', 'unix:gid:6301', 'unix:uid:6300'],
      ['unix:gid:6301', 'unix:gid:6303', 'unix:uid:6300', 'unix:gid:6302'],
      ['unix:uid:6300', 'unix:gid:6302', 'unix:gid:6303', 'unix:gid:6301'],
      ['unix:gid:6302', 'unix:uid:6300', 'unix:gid:6301', 'unix:gid:6303'],
    ]) {
      assert.deepEqual(ids(await m.fetchX509(sels(...order))), expected, `X.509, selectors ${order.join(' ')}`);
      assert.deepEqual((await m.fetchJwt(sels(...order), ['order'])).map((j) => j.spiffeId), expected, `JWT, selectors ${order.join(' ')}`);
    }

    // Two entries with one hint: the older one by default, the newer one when asked for by ID.
    const both = sels('unix:gid:6311', 'unix:uid:6310');
    assert.deepEqual((await m.fetchJwt(both, ['order'])).map((j) => [j.spiffeId, j.hint]), [[id('pair-old'), 'pair']]);
    assert.deepEqual((await m.fetchJwt(both, ['order'], parseSpiffeId(id('pair-new')))).map((j) => [j.spiffeId, j.hint]), [[id('pair-new'), 'pair']]);
    assert.deepEqual(ids(await m.fetchX509(both)), [id('pair-old')]);
    // A caller with only the older entry's selector asks for the newer one by ID: not its own, nothing.
    assert.deepEqual(await m.fetchJwt(sels('unix:uid:6310'), ['order'], parseSpiffeId(id('pair-new'))), []);
    assert.deepEqual((await m.fetchJwt(sels('unix:uid:6310'), ['order'], parseSpiffeId(id('pair-old')))).map((j) => j.spiffeId), [id('pair-old')]);
    // Nor by another entry's ID sharing nothing with it.
    assert.deepEqual(await m.fetchJwt(sels('unix:uid:6310'), ['order'], parseSpiffeId(id('m'))), []);
    m.stop();
  });

  test('fetchX509 with an entry the server will not sign: the others are served with one WARN saying how many failed; with nothing servable, IdentityUnavailableError naming the entry, caused by the refusal', async () => {
    const agent = await newAgent();
    const u = uniq();
    const good = `spiffe://example.org/refused/good-${u}`;
    const bad = `spiffe://example.org/refused/bad-${u}`;
    const alone = `spiffe://example.org/refused/alone-${u}`;
    createEntries(agent.id, [
      { spiffeId: good, selectors: ['unix:uid:6400'] },
      { id: `bad-${u}`, spiffeId: bad, selectors: ['unix:uid:6400', 'unix:gid:6400'] },
      { id: `alone-${u}`, spiffeId: alone, selectors: ['unix:gid:6401'] },
    ]);
    agent.refuse.add(`bad-${u}`);
    agent.refuse.add(`alone-${u}`);
    const m = agent.manager();
    await m.start();
    const partialWarn = (): string[] => agent.logs.filter((l) => l.startsWith('WARN some SVIDs could not be signed; serving the others'));

    assert.deepEqual(ids(await m.fetchX509(sels('unix:uid:6400', 'unix:gid:6400'))), [good]);
    assert.equal(partialWarn().length, 1);
    const fields = JSON.parse(partialWarn()[0]!.slice('WARN some SVIDs could not be signed; serving the others '.length)) as { err: string; failed: number };
    assert.deepEqual(fields, { err: `server refused to sign ${bad}: refused by the test`, failed: 1 });

    // Everything signed: no WARN.
    assert.deepEqual(ids(await m.fetchX509(sels('unix:uid:6400'))), [good]);
    assert.equal(partialWarn().length, 1);

    // Entitled only to the refused entry: a transient error that says which and why.
    await assert.rejects(m.fetchX509(sels('unix:gid:6401')), (e: Error) => {
      assert.equal(e.name, 'IdentityUnavailableError');
      assert.equal(e.message, `no X509-SVID for ${alone} yet; signing it failed; retrying`);
      assert.equal((e.cause as Error | undefined)?.message, `server refused to sign ${alone}: refused by the test`);
      return true;
    });
    assert.equal(partialWarn().length, 1);
    m.stop();
  });

  test('an SVID past its serving time, to the millisecond: the same SVID until 1 s before its notAfter, a fresh one from then on', async () => {
    const agent = await newAgent();
    const u = uniq();
    const sid = `spiffe://example.org/edge/a-${u}`;
    createEntries(agent.id, [{ spiffeId: sid, selectors: ['unix:uid:6500'], x509SvidTtl: 600 }]);
    let clock: number | undefined;
    const m = agent.manager({ now: () => new Date(clock ?? Date.now()) });
    await m.start();
    const first = await m.fetchX509(sels('unix:uid:6500'));
    const notAfter = first.identities[0]!.notAfter.getTime();
    clock = notAfter - 1001;
    const before = await m.fetchX509(sels('unix:uid:6500'));
    assert.equal(serialOf(before, sid), serialOf(first, sid), 'served up to the last millisecond of its serving time');
    const signed = agent.batches.length;
    clock = notAfter - 1000;
    const at = await m.fetchX509(sels('unix:uid:6500'));
    assert.notEqual(serialOf(at, sid), serialOf(first, sid), 'not served at notAfter - 1 s');
    assert.ok(at.identities[0]!.notAfter.getTime() > notAfter - 1000);
    assert.equal(agent.batches.length, signed + 1);
    m.stop();
  });

  test('JWT-SVID cache: at most jwtCacheMaxPerEntry audience sets per entry and jwtCacheMaxTotal in all, least recently used evicted, renew-due tokens swept; the metric reports its size', async () => {
    const agent = await newAgent();
    const u = uniq();
    const [one, two, three] = ['one', 'two', 'three'].map((n) => `spiffe://example.org/jwtcap/${n}-${u}`) as [string, string, string];
    createEntries(agent.id, [one, two, three].map((spiffeId) => ({ spiffeId, selectors: ['unix:uid:4100'] })));
    let offsetMs = 0;
    const m = agent.manager({ now: () => new Date(Date.now() + offsetMs), jwtCacheMaxPerEntry: 100, jwtCacheMaxTotal: 150 });
    await m.start();
    const registry = new Registry();
    registerJwtCacheMetrics(registry, () => ({ entries: m.jwtCacheSize, evictions: m.jwtCacheEvictions }));
    const metric = async (name: string): Promise<number> => {
      const line = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
      assert.ok(line, `${name} is exported`);
      return Number(line.split(' ')[1]);
    };
    const S = sels('unix:uid:4100');
    const fetchOne = async (aud: string, id = one): Promise<string> => {
      const r = await m.fetchJwt(S, [aud], parseSpiffeId(id));
      assert.equal(r.length, 1);
      return r[0]!.token;
    };

    // One entry, 130 distinct audiences: capped at 100 for that entry, the oldest evicted.
    const first = new Map<string, string>();
    for (let i = 0; i < 130; i++) {
      first.set(`a${i}`, await fetchOne(`a${i}`));
      // a30 is used again just before a130 would evict it: it becomes the most recently used.
      if (i === 129) assert.equal(await fetchOne('a30'), first.get('a30'), 'a30 is still cached');
    }
    assert.equal(m.jwtCacheSize, 100, 'per-entry cap');
    assert.equal(await metric(JWT_CACHE_ENTRIES_METRIC), 100);
    assert.equal(await metric(JWT_CACHE_EVICTIONS_METRIC), 30);
    assert.equal(await fetchOne('a129'), first.get('a129'), 'the newest is served from the cache');
    assert.notEqual(await fetchOne('a0'), first.get('a0'), 'the oldest was evicted (a fresh token)');
    // a0 came back and evicted the least recently used one, a31 (a30 was touched).
    assert.equal(await fetchOne('a30'), first.get('a30'), 'the touched one survived');
    assert.notEqual(await fetchOne('a31'), first.get('a31'), 'the least recently used one went');
    assert.equal(m.jwtCacheSize, 100);

    // Another entry, 80 audiences: the total cap (150) holds; the oldest overall go first.
    for (let i = 0; i < 80; i++) await fetchOne(`b${i}`, two);
    assert.equal(m.jwtCacheSize, 150, 'total cap');
    assert.equal(await metric(JWT_CACHE_ENTRIES_METRIC), 150);
    assert.equal(await fetchOne('b79', two), await fetchOne('b79', two), 'the newest of the other entry is cached');

    // Past the tokens' renewal time: an insertion drops its entry's renew-due tokens, and one at
    // the total cap sweeps every entry's before evicting anything live.
    const life = (await m.fetchJwt(S, ['x'], parseSpiffeId(one)))[0]!.expiresAt.getTime() - Date.now();
    offsetMs = life / 2 + 5_000;
    const evicted = m.jwtCacheEvictions;
    await fetchOne('fresh');
    assert.equal(m.jwtCacheSize, 80 + 1, 'the entry\'s renew-due tokens are dropped, not kept until evicted');
    await fetchOne('fresh', two);
    assert.equal(m.jwtCacheSize, 2);
    assert.equal(await metric(JWT_CACHE_ENTRIES_METRIC), 2);
    assert.equal(m.jwtCacheEvictions, evicted, 'dropping renew-due tokens is no eviction');
    offsetMs = 0;
    for (let i = 0; i < 148; i++) await fetchOne(`c${i}`, i % 2 === 0 ? one : two);
    assert.equal(m.jwtCacheSize, 150);
    offsetMs = life / 2 + 5_000;
    await fetchOne('y', three);
    assert.equal(m.jwtCacheSize, 1, 'at the cap, every renew-due token is swept first');
    assert.equal(m.jwtCacheEvictions, evicted);
    m.stop();
  });

  test('authorization: an identity whose selectors the caller lacks is never served, even asked for by SPIFFE ID or sharing a hint', async () => {
    const agent = await newAgent();
    const u = uniq();
    const mineId = `spiffe://example.org/authz/mine-${u}`;
    const theirsId = `spiffe://example.org/authz/theirs-${u}`;
    const subsetId = `spiffe://example.org/authz/needs-more-${u}`;
    createEntries(agent.id, [
      { spiffeId: mineId, selectors: ['unix:uid:4100'], hint: 'web' },
      // Same agent, same hint, another caller's selector.
      { spiffeId: theirsId, selectors: ['unix:uid:4101'], hint: 'web' },
      // Needs a selector the caller has AND one it lacks.
      { spiffeId: subsetId, selectors: ['unix:uid:4100', 'unix:gid:4101'] },
    ]);
    const m = agent.manager();
    await m.start();
    const caller = sels('unix:uid:4100', 'unix:gid:4100');

    // JWT: asked for the other identities by ID, nothing; asked for nothing in particular, only its own.
    assert.deepEqual(await m.fetchJwt(caller, ['authz'], parseSpiffeId(theirsId)), []);
    assert.deepEqual(await m.fetchJwt(caller, ['authz'], parseSpiffeId(subsetId)), []);
    const all = await m.fetchJwt(caller, ['authz']);
    assert.deepEqual(all.map((j) => j.spiffeId), [mineId]);
    assert.equal((await m.fetchJwt(caller, ['authz'], parseSpiffeId(mineId)))[0]!.spiffeId, mineId);

    // X.509 (fetch and subscribe): only its own; the hint it shares with another entry changes nothing.
    const x = await m.fetchX509(caller);
    assert.deepEqual(x.identities.map((i) => i.spiffeId), [mineId]);
    const pushed = await new Promise<WorkloadUpdate>((resolve, reject) => {
      const sub = m.subscribe(caller, () => {});
      sub.initial.then((v) => (sub.close(), resolve(v)), reject);
    });
    assert.deepEqual(pushed.identities.map((i) => i.spiffeId), [mineId]);

    // The other caller gets its own, the control that the entries are servable at all.
    const theirs = await m.fetchJwt(sels('unix:uid:4101'), ['authz'], parseSpiffeId(theirsId));
    assert.deepEqual(theirs.map((j) => j.spiffeId), [theirsId]);
    assert.deepEqual((await m.fetchX509(sels('unix:uid:4101'))).identities.map((i) => i.spiffeId), [theirsId]);
    // No selectors at all: nothing.
    assert.deepEqual(await m.fetchJwt([], ['authz'], parseSpiffeId(mineId)), []);
    m.stop();
  });

  test('after the agent SVID renews, the sync stream moves to the new connection', async () => {
    const token = /^Token: (\S+)$/m.exec(ok(server.cli(['token', 'generate'])))![1]!;
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
    const identity = await AgentIdentity.start({
      dataDir: join(mkdtempSync(join(tmpdir(), 'spindle-mgr-')), 'data'),
      trustDomain: td,
      address: { host: '127.0.0.1', port: server.port },
      attestor: new JoinTokenAgentAttestor(token),
      trustBundlePem: ok(server.cli(['bundle', 'show'])),
      logger: quiet,
    });
    open.push(identity);
    const logs: string[] = [];
    const m = new AgentManager({ trustDomain: td, connection: () => identity.connection(), logger: loggerFor(logs) });
    open.push(m);
    identity.onConnectionChange(() => m.reconnect());
    const u = uniq();
    createEntries(identity.agentId, [{ spiffeId: `spiffe://example.org/renew/a-${u}`, selectors: ['unix:uid:6600'] }]);
    await m.start();
    const c = collector();
    const s = m.subscribe(sels('unix:uid:6600'), c.listener);
    await s.initial;
    const oldConn = identity.connection();
    await identity.renew();
    assert.notEqual(identity.connection(), oldConn);
    await cliAsync(['entry', 'create', '-parentID', identity.agentId, '-spiffeID', `spiffe://example.org/renew/b-${u}`, '-selector', 'unix:uid:6600']);
    assert.equal((await c.next()).identities.length, 2);
    // The manager authenticated with the renewed SVID, which retired the old one.
    await assert.rejects(
      new Promise((resolve, reject) => {
        const st = syncAuthorized(oldConn.client);
        st.on('data', resolve);
        st.on('error', reject);
      }),
      (e: ServiceError) => e.code === status.PERMISSION_DENIED && /superseded/.test(e.details),
    );
    assert.ok(!logs.some((l) => l.startsWith('WARN lost the server sync stream')), 'a planned reconnect is not a lost stream');
    s.close();
    m.stop();
    identity.stop();
  });

  test('the manager reconnects by itself after the server restarts', async () => {
    const agent = await newAgent();
    const u = uniq();
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/restart/a-${u}`, selectors: ['unix:uid:6500'] }]);
    const m = agent.manager();
    await m.start();
    const c = collector();
    const s = m.subscribe(sels('unix:uid:6500'), c.listener);
    const initial = await s.initial;
    assert.equal(server.proc.exitCode, null);
    assert.equal(await server.stop(), 0);
    const tDown = performance.now();
    // Cached identities are served while the server is away.
    assert.deepEqual(ids(await m.fetchX509(sels('unix:uid:6500'))), ids(initial));
    server = await startServerProcess({ dir: server.dir, trustDomain: td, port: server.port });
    const tUp = performance.now();
    await cliAsync(['entry', 'create', '-parentID', agent.id, '-spiffeID', `spiffe://example.org/restart/b-${u}`, '-selector', 'unix:uid:6500']);
    const up = await c.next(20_000);
    console.log(`server restart: down for ${(tUp - tDown).toFixed(0)} ms; new entry pushed ${(performance.now() - tUp).toFixed(0)} ms after it was back`);
    assert.deepEqual(idSet(up), [`spiffe://example.org/restart/a-${u}`, `spiffe://example.org/restart/b-${u}`]);
    assert.equal(serialOf(up, `spiffe://example.org/restart/a-${u}`), serialOf(initial, `spiffe://example.org/restart/a-${u}`));
    s.close();
    m.stop();
  });

  test('an evicted agent: the stream fails with PERMISSION_DENIED, onRefused is called, cached SVIDs are still served', async () => {
    const agent = await newAgent();
    const u = uniq();
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/evict/a-${u}`, selectors: ['unix:uid:7000'] }]);
    let refused!: (e: ServiceError) => void;
    const refusal = new Promise<ServiceError>((r) => (refused = r));
    const m = agent.manager({ onRefused: (e) => refused(e) });
    await m.start();
    const before = await m.fetchX509(sels('unix:uid:7000'));
    assert.equal(before.identities.length, 1);
    ok(server.cli(['agent', 'evict', '-spiffeID', agent.id]));
    const err = await refusal;
    assert.equal(err.code, status.PERMISSION_DENIED);
    assert.match(err.details, /evicted/);
    const batches = agent.batches.length;
    const after = await m.fetchX509(sels('unix:uid:7000'));
    assert.equal(serialOf(after, `spiffe://example.org/evict/a-${u}`), serialOf(before, `spiffe://example.org/evict/a-${u}`));
    assert.equal(agent.batches.length, batches, 'answered from the cache');
    assert.ok(agent.logs.some((l) => l.startsWith('ERROR the server refused this agent')));
    m.stop();
  });

  test('a sync stream ended at the agent SVID expiry (UNAUTHENTICATED): onRefused is called; reconnect() on a valid SVID resumes pushes', async () => {
    const agent = await newAgent();
    const u = uniq();
    createEntries(agent.id, [{ spiffeId: `spiffe://example.org/expiry/a-${u}`, selectors: ['unix:uid:7100'] }]);
    // The same agent ID and serial, signed with the server's CA key, valid for 4 s.
    const issuer = createIssuer([bundle[0]!], createPrivateKey(readFileSync(join(server.dataDir, 'keys', 'x509-CA-A.key'), 'utf8')));
    const keys = await generateKeyPair();
    const serial = parseCertificate(agent.chain[0]!).serialHex;
    const cert = issueX509Svid({ id: parseSpiffeId(agent.id), publicKey: keys.publicKey, ttlSeconds: 4, issuer, now: new Date(), serial: Buffer.from(serial, 'hex') });
    const shortLived = connectAgentApi({
      address: { host: '127.0.0.1', port: server.port },
      trustDomain: td,
      bundle,
      svid: { chain: [cert.der], privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) },
    });
    open.push(shortLived);
    let current: AgentApiConnection = shortLived;
    let refused!: (e: ServiceError) => void;
    const refusal = new Promise<ServiceError>((r) => (refused = r));
    const m = new AgentManager({ trustDomain: td, connection: () => current, logger: loggerFor(agent.logs), onRefused: (e) => refused(e) });
    open.push(m);
    await m.start();
    assert.equal(m.entryCount, 1);
    const err = await refusal;
    assert.equal(err.code, status.UNAUTHENTICATED);
    assert.match(err.details, /agent SVID expired at/);
    assert.ok(Date.now() >= cert.notAfter.getTime(), 'not ended before the notAfter');
    // As after a renewal: the connection is replaced and the manager told to reconnect.
    current = agent.conn;
    m.reconnect();
    await cliAsync(['entry', 'create', '-parentID', agent.id, '-spiffeID', `spiffe://example.org/expiry/b-${u}`, '-selector', 'unix:uid:7100']);
    await waitFor(() => m.entryCount === 2, 'the entry created after the reconnect to reach the manager', 15_000);
    m.stop();
  });
});

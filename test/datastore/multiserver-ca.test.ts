// Several CA managers (one per server: own data dir, own keys, own server ID) of one trust
// domain on ONE datastore, run against SQLite and against PostgreSQL (a throwaway cluster,
// test/support/postgres.ts). What must hold: every server's authorities end up in the shared
// bundle, a server prunes its own as they expire and another server's (a retired one's) only once
// they expired plus the prune grace, concurrent publishes lose nothing, a server signs only
// with a published authority, and a server hears of the others' bundle changes.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bundle, marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { parseSpiffeId } from '../../spiffe/id.js';
import { parseCertificate, verifyX509Svid } from '../../spiffe/x509/index.js';
import { validateJwtSvid } from '../../spiffe/jwtsvid.js';
import { DiskKeyManager } from '../../server/ca/keymanager.js';
import type { CaManager, CaManagerOptions } from '../../server/ca/manager.js';
import { emptyJournal, parseJournal, serializeJournal } from '../../server/ca/journal.js';
import { ACTIVATE_AT, DEFAULT_PRUNE_GRACE_SECONDS } from '../../server/ca/manager.js';
import { Clock, TD, captureLogger, freshCsr, isCaError, startCa } from '../../server/ca/testkit.js';
import type { DataStore } from '../../server/datastore/types.js';
import { AuthorizationCache } from '../../server/entries/authcache.js';
import { EntryIndex } from '../../server/entries/entryindex.js';
import { ChangeFeed } from '../../server/entries/feed.js';
import { openTestDataStore, openTestPostgresDataStore } from '../support/datastore.js';
import { postgresCluster } from '../support/postgres.js';

const WORKLOAD = parseSpiffeId('spiffe://example.org/workload');
const CA_TTL = 3600;

interface Backend {
  name: string;
  /** A new, empty shared datastore; returns a function opening another handle on it (another server's connection). */
  fresh(): Promise<{ first: DataStore; another(): Promise<DataStore> }>;
  /**
   * Whether a write through one handle wakes onChange listeners of another handle (PostgreSQL:
   * NOTIFY). SQLite announces only the writes of its own handle, so servers sharing one file in
   * one process share the handle.
   */
  crossHandleNotify: boolean;
}

const root = mkdtempSync(join(tmpdir(), 'spindle-multica-'));
const opened: DataStore[] = [];
const managers: CaManager[] = [];
after(async () => {
  for (const m of managers) await m.stop().catch(() => undefined);
  for (const s of opened) await s.close().catch(() => undefined);
  rmSync(root, { recursive: true, force: true });
});
let n = 0;

const track = (s: DataStore): DataStore => {
  opened.push(s);
  return s;
};

const BACKENDS: Backend[] = [
  {
    name: 'sqlite',
    crossHandleNotify: false,
    async fresh() {
      const path = join(root, `db${++n}`, 'datastore.sqlite3');
      return { first: track(await openTestDataStore(path)), another: async () => track(await openTestDataStore(path)) };
    },
  },
  {
    name: 'postgres',
    crossHandleNotify: true,
    async fresh() {
      const cluster = await postgresCluster();
      const uri = cluster.uri(await cluster.createDatabase());
      return { first: track(await openTestPostgresDataStore(uri)), another: async () => track(await openTestPostgresDataStore(uri)) };
    },
  },
];

/** A server's CA: its own data dir (keys) and server ID, on `ds`. */
async function server(ds: DataStore, id: string, clock: Clock, over: Partial<CaManagerOptions> = {}): Promise<CaManager> {
  const dataDir = join(root, `server-${++n}-${id}`);
  const ca = await startCa({ datastore: ds, keyManager: new DiskKeyManager(join(dataDir, 'keys')), now: clock.now, serverId: id, caTtlSeconds: CA_TTL, ...over });
  managers.push(ca);
  return ca;
}

const serial = (der: Buffer): string => parseCertificate(der).serialHex;
const activeId = (ca: CaManager, kind: 'x509' | 'jwt'): string => ca.status()[kind].find((r) => r.status === 'active')!.id;
const x509Ids = (b: Bundle): string[] => b.x509Authorities().map(serial).sort();
const ownX509 = (ca: CaManager): string[] => ca.status().x509.map((r) => r.id).sort();
const ownJwt = (ca: CaManager): string[] => ca.status().jwt.map((r) => r.id).sort();

async function stored(ds: DataStore): Promise<Bundle> {
  const s = (await ds.getBundle(TD))!;
  const b = parseBundle(TD, s.document);
  b.sequence = s.sequence;
  return b;
}

function holdsAll(b: Bundle, ca: CaManager): boolean {
  return ownX509(ca).every((id) => x509Ids(b).includes(id)) && ownJwt(ca).every((kid) => b.hasJwtAuthority(kid));
}

for (const backend of BACKENDS) {
  describe(`several CA servers on one datastore: ${backend.name}`, () => {
    it('both servers\' authorities end up in the shared bundle; each keeps its own journal; SVIDs of one verify with the other\'s bundle', async () => {
      const { first, another } = await backend.fresh();
      const clock = new Clock();
      const a = await server(first, 'server-a', clock);
      const b = await server(await another(), 'server-b', clock);
      const shared = await stored(first);
      assert.deepEqual(x509Ids(shared), [activeId(a, 'x509'), activeId(b, 'x509')].sort());
      assert.ok(shared.hasJwtAuthority(activeId(a, 'jwt')) && shared.hasJwtAuthority(activeId(b, 'jwt')));

      // B started after A: it serves both already; A learns of B's authorities from the datastore.
      assert.ok(holdsAll(b.bundle(), a) && holdsAll(b.bundle(), b));
      assert.equal(await a.refreshBundle(), true);
      assert.ok(holdsAll(a.bundle(), b), 'A serves B\'s authorities after refreshing');
      assert.equal(a.bundle().sequence, shared.sequence);

      const svidB = b.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
      verifyX509Svid(svidB.chain, a.bundle(), { now: clock.now() });
      const jwtB = await b.mintJwtSvid({ id: WORKLOAD, audience: ['x'] });
      await validateJwtSvid(jwtB.token, { audience: 'x', bundles: a.bundle(), now: clock.now() });

      const ja = parseJournal((await first.getCaJournal('server-a'))!);
      const jb = parseJournal((await first.getCaJournal('server-b'))!);
      assert.deepEqual(ja.x509.map((r) => r.id), [activeId(a, 'x509')]);
      assert.deepEqual(jb.x509.map((r) => r.id), [activeId(b, 'x509')]);
      assert.equal(await first.getCaJournal(), undefined, 'no journal without a server ID');
    });

    it('a retired server\'s X.509 CA and JWT key stay in the shared bundle until they expire plus the grace, then another server\'s step prunes them, once', async () => {
      const { first, another } = await backend.fresh();
      const clockA = new Clock();
      const clockB = new Clock();
      const logA = captureLogger();
      const a = await server(first, 'server-a', clockA, { logger: logA });
      clockB.advance(600);
      const b = await server(await another(), 'server-b', clockB);
      const caB = activeId(b, 'x509');
      const kidB = activeId(b, 'jwt');
      const notAfterB = b.status().x509[0]!.notAfter;
      assert.equal(b.status().jwt[0]!.notAfter.getTime(), notAfterB.getTime(), 'B\'s CA and JWT key expire together');
      // B is retired now: it never steps again (its journal stays, as a stopped server leaves it).
      const at = (t: number): Date => {
        clockA.set(new Date(t));
        return clockA.now();
      };

      // A runs through a rotation of its own meanwhile: prepare, activate, prune its first CA.
      at(clockA.now().getTime() + 0.55 * CA_TTL * 1000);
      await a.rotate();
      at(clockA.now().getTime() + (ACTIVATE_AT - 0.55) * CA_TTL * 1000 + 1000);
      await a.rotate();
      at(notAfterB.getTime() - 1000);
      await a.rotate();
      assert.ok(holdsAll(await stored(first), b), 'before B\'s expiry: kept');

      // Up to notAfter + grace: kept.
      const edge = notAfterB.getTime() + DEFAULT_PRUNE_GRACE_SECONDS * 1000;
      at(edge);
      const atEdge = await a.rotate();
      assert.deepEqual(atEdge.foreignPruned, []);
      let shared = await stored(first);
      assert.ok(x509Ids(shared).includes(caB) && shared.hasJwtAuthority(kidB), 'at notAfter + grace: kept');
      const seq = shared.sequence;

      // One second later: A's step (nothing of its own to do) prunes both, and bumps the sequence.
      at(edge + 1000);
      const r = await a.rotate();
      assert.deepEqual(r.events, [], 'nothing of A\'s own changed');
      assert.deepEqual(
        r.foreignPruned.map((p) => [p.kind, p.id, p.notAfter.getTime()]).sort(),
        [['jwt', kidB, notAfterB.getTime()], ['x509', caB, notAfterB.getTime()]].sort(),
      );
      assert.equal(r.bundleChanged, true);
      shared = await stored(first);
      assert.ok(!x509Ids(shared).includes(caB), 'B\'s CA is gone');
      assert.ok(!shared.hasJwtAuthority(kidB), 'B\'s JWT key is gone');
      assert.ok(holdsAll(shared, a), 'A\'s own authorities are all there');
      assert.equal(shared.sequence, seq + 1n);
      assert.ok(a.bundle().equals(shared), 'A serves the pruned bundle');
      const logged = logA.lines.filter((l) => l.msg === 'pruned an expired authority of another server from the shared bundle');
      assert.deepEqual(
        logged.map((l) => l.obj).sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))),
        [
          { kind: 'jwt', kid: kidB, not_after: notAfterB.toISOString() },
          { kind: 'x509', id: caB, not_after: notAfterB.toISOString() },
        ],
      );

      // Logged once: later steps find nothing to prune and write nothing.
      at(edge + 11_000);
      const later = await a.rotate();
      assert.deepEqual(later.foreignPruned, []);
      assert.equal(later.bundleChanged, false);
      assert.equal((await stored(first)).sequence, seq + 1n);
      assert.equal(logA.lines.filter((l) => l.msg === logged[0]!.msg).length, 2);

      // B, were it started again at that time, would not publish its expired authorities again
      // (they would only be pruned again): it adopts the bundle as it is.
      clockB.set(clockA.now());
      await b.refreshBundle();
      shared = await stored(first);
      assert.ok(!x509Ids(shared).includes(caB) && !shared.hasJwtAuthority(kidB));
      assert.equal(shared.sequence, seq + 1n);
    });

    it('a server does not prune another\'s JWT key that no journal records (no evidence that it expired)', async () => {
      const { first, another } = await backend.fresh();
      const clock = new Clock();
      const a = await server(first, 'server-a', clock);
      const b = await server(await another(), 'server-b', clock);
      const caB = activeId(b, 'x509');
      const kidB = activeId(b, 'jwt');
      const notAfterB = b.status().x509[0]!.notAfter;
      await a.refreshBundle();
      assert.ok(a.bundle().hasJwtAuthority(kidB), 'A serves B\'s JWT key');
      // B's journal emptied (as if its row had been deleted with SQL): nothing records B's JWT
      // key any more; its X.509 CA still carries its own expiry.
      await first.setCaJournal(serializeJournal({ ...emptyJournal(TD), sequence: '1' }), 'server-b');
      clock.set(new Date(notAfterB.getTime() + (DEFAULT_PRUNE_GRACE_SECONDS + 1) * 1000));
      const r = await a.rotate();
      assert.deepEqual(r.foreignPruned.map((p) => [p.kind, p.id]), [['x509', caB]]);
      const shared = await stored(first);
      assert.ok(!x509Ids(shared).includes(caB));
      assert.ok(shared.hasJwtAuthority(kidB), 'the JWT key no journal records stays');
    });

    it('concurrent publishes from both servers keep both (starts on an empty datastore, then a rotation each)', async () => {
      const { first, another } = await backend.fresh();
      const dsB = await another();
      const clock = new Clock();
      for (let round = 0; round < 3; round++) {
        // Fresh server IDs each round: each start publishes a new CA and JWT key at the same time.
        const [a, b] = await Promise.all([server(first, `a${round}`, clock), server(dsB, `b${round}`, clock)]);
        const shared = await stored(first);
        assert.ok(holdsAll(shared, a) && holdsAll(shared, b), `round ${round}: both starts published`);
      }
      const [a, b] = await Promise.all([server(first, 'rot-a', clock), server(dsB, 'rot-b', clock)]);
      clock.advance(0.55 * CA_TTL);
      const [ra, rb] = await Promise.all([a.rotate(), b.rotate()]);
      assert.ok(ra.events.some((e) => e.action === 'prepared') && rb.events.some((e) => e.action === 'prepared'));
      const shared = await stored(first);
      assert.ok(holdsAll(shared, a) && holdsAll(shared, b), 'both prepared authorities are published');
      assert.equal(x509Ids(shared).length, 2 * 3 + 4, 'every server\'s CAs, none lost');
    });

    it('a server never signs with an authority that is not in the stored bundle', async () => {
      const { first } = await backend.fresh();
      const clock = new Clock();
      let down = false;
      // The datastore as the CA sees it; its bundle update fails while `down`.
      const flaky = new Proxy(first, {
        get(target, prop) {
          if (prop === 'updateBundle' && down) return () => Promise.reject(new Error('datastore is down'));
          const v: unknown = Reflect.get(target, prop, target);
          return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v;
        },
      });
      down = true;
      await assert.rejects(server(flaky, 'server-a', clock), /datastore is down/, 'a CA that cannot publish does not start');
      assert.equal(await first.getBundle(TD), undefined);
      assert.equal(await first.getCaJournal('server-a'), undefined);

      down = false;
      const a = await server(flaky, 'server-a', clock);
      verifyX509Svid(a.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, await stored(first), { now: clock.now() });

      // The next CA is due but cannot be published: nothing changes, A signs with its published CA.
      clock.advance(0.55 * CA_TTL);
      const before = a.status();
      down = true;
      await assert.rejects(a.rotate(), /datastore is down/);
      assert.deepEqual(a.status().x509, before.x509);
      // Activation time comes while the datastore is still down: still the old, published CA.
      clock.advance((ACTIVATE_AT - 0.55) * CA_TTL + 1);
      await assert.rejects(a.rotate(), /datastore is down/);
      assert.deepEqual(a.status().x509, before.x509);
      verifyX509Svid(a.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, await stored(first), { now: clock.now() });

      // Back up: the next CA is published first, activated on a later step, and then signs.
      down = false;
      const published = await a.rotate();
      assert.deepEqual(published.events.filter((e) => e.kind === 'x509').map((e) => e.action), ['prepared']);
      assert.ok(holdsAll(await stored(first), a));
      await a.rotate();
      assert.notEqual(activeId(a, 'x509'), before.x509[0]!.id);
      verifyX509Svid(a.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, await stored(first), { now: clock.now() });
    });

    it('a server hears of another server\'s bundle change through the change feed and passes it to its listeners', async () => {
      const { first, another } = await backend.fresh();
      const clock = new Clock();
      const a = await server(first, 'server-a', clock);
      // As the server wires it: bundle events of A's change feed (server/run.ts), on A's own handle.
      const quiet = { debug() {}, info() {}, warn() {}, error() {} };
      const feed = new ChangeFeed({ datastore: first, cache: new AuthorizationCache(new EntryIndex({ trustDomain: TD, now: () => 0 })), logger: quiet });
      await feed.start();
      feed.subscribe({
        bundle: (trustDomain) => {
          if (trustDomain === TD) a.bundleEvent();
        },
      });
      const heard = new Promise<Bundle>((resolve) => {
        const off = a.onBundleChange((bundle) => {
          if (bundle.x509Authorities().length === 2) {
            off();
            resolve(bundle);
          }
        });
      });
      const b = await server(backend.crossHandleNotify ? await another() : first, 'server-b', clock);
      const got = await heard;
      assert.ok(holdsAll(got, b) && holdsAll(got, a));
      assert.equal(got.sequence, (await first.getBundle(TD))!.sequence);
      assert.ok(a.bundle().equals(got));
      feed.stop();
      await a.stop();
    });

    it('a server publishes its authorities again when a bundle write without them replaced the shared bundle', async () => {
      const { first } = await backend.fresh();
      const clock = new Clock();
      const a = await server(first, 'server-a', clock);
      const b = await server(first, 'server-b', clock);
      await a.refreshBundle();
      // A writer that knows only B's authorities (a plain setBundle, as a server without the merge would do).
      const onlyB = new Bundle(TD, { x509Authorities: b.bundle().x509Authorities().filter((d) => serial(d) === activeId(b, 'x509')) });
      const seq = (await first.getBundle(TD))!.sequence + 1n;
      await first.setBundle({ trustDomain: TD, document: marshalBundle(onlyB), sequence: seq }, 1);
      assert.equal(await a.refreshBundle(), true);
      const shared = await stored(first);
      assert.ok(holdsAll(shared, a), 'A\'s authorities are back');
      assert.ok(shared.sequence > seq);
      assert.ok(a.bundle().equals(shared));
    });

    it('an upgraded single server (journal without an ID) adopts its journal under its new ID and keeps its CA; a second server does not take it', async () => {
      const { first, another } = await backend.fresh();
      const clock = new Clock();
      const keys = join(root, `upgrade-${++n}`, 'keys');
      const legacy = await startCa({ datastore: first, keyManager: new DiskKeyManager(keys), now: clock.now, caTtlSeconds: CA_TTL });
      const ca = activeId(legacy, 'x509');
      const seq = legacy.bundle().sequence;
      await legacy.stop();
      assert.ok(await first.getCaJournal());

      const upgraded = await startCa({ datastore: first, keyManager: new DiskKeyManager(keys), now: clock.now, caTtlSeconds: CA_TTL, serverId: 'server-a' });
      managers.push(upgraded);
      assert.equal(activeId(upgraded, 'x509'), ca, 'same CA: the journal and its keys were adopted');
      assert.equal(upgraded.bundle().sequence, seq, 'nothing to publish');
      assert.equal(await first.getCaJournal(), undefined);
      const b = await server(await another(), 'server-b', clock);
      assert.notEqual(activeId(b, 'x509'), ca);
      assert.deepEqual(parseJournal((await first.getCaJournal('server-a'))!).x509.map((r) => r.id), [ca]);
      assert.ok(holdsAll(await stored(first), upgraded) && holdsAll(await stored(first), b));
    });

    it('refuses an invalid server ID before touching the datastore', async () => {
      const { first } = await backend.fresh();
      await assert.rejects(server(first, 'bad id', new Clock()), (e: Error) => isCaError(e, 'config') && /serverId/.test(e.message));
    });
  });
}

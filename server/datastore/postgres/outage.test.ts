// The PostgreSQL store while its database goes away and comes back (its own test process, so its
// own cluster: killing it disturbs no other test), the error messages of outage.ts, and
// ro_connection_string.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { parseSpiffeId } from '../../../spiffe/id.js';
import { entryWithDefaults } from '../../../test/support/entries.js';
import { postgresCluster } from '../../../test/support/postgres.js';
import { DataStoreError, isDataStoreUnavailable, type DataStore, type NewEntry } from '../types.js';
import { Availability, connectionFailure, endpointOf, unavailableError } from './outage.js';
import { CONNECT_TIMEOUT_MS, QUERY_TIMEOUT_MS } from './connection.js';
import { openPostgresDataStore } from './store.js';

const opened: DataStore[] = [];
after(async () => {
  for (const s of opened) await s.close().catch(() => undefined);
});

const entry = (n: number | string): NewEntry =>
  entryWithDefaults({
    spiffeId: parseSpiffeId(`spiffe://example.org/outage/${n}`),
    parentId: parseSpiffeId('spiffe://example.org/spire/agent/join_token/x'),
    selectors: [{ type: 'unix', value: `uid:${n}` }],
  });

interface Line {
  level: string;
  msg: string;
}
const captured = (lines: Line[]) => ({
  warn: (_o: object, msg: string) => lines.push({ level: 'warn', msg }),
  info: (_o: object, msg: string) => lines.push({ level: 'info', msg }),
});

describe('outage messages', () => {
  it('names host and port, never the user or password; says what happened to the write', () => {
    assert.equal(endpointOf('postgresql://spire:s3cret@db.internal:6432/spire?sslmode=require'), 'db.internal:6432');
    assert.equal(endpointOf('postgresql://spire@127.0.0.1/spire'), '127.0.0.1:5432');
    assert.equal(endpointOf('postgresql://spire@/spire?host=/run/postgresql'), 'the Unix socket in /run/postgresql (port 5432)');
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const cause = connectionFailure(refused, CONNECT_TIMEOUT_MS, QUERY_TIMEOUT_MS);
    assert.equal(cause, 'connection refused');
    const w = unavailableError('127.0.0.1:5432', cause!, 'write', refused);
    assert.equal(w.reason, 'unavailable');
    assert.equal(w.message, 'datastore unavailable: cannot reach PostgreSQL at 127.0.0.1:5432 (connection refused); nothing was written');
    assert.match(unavailableError('h:1', 'connection lost', 'commit', refused).message, /may or may not have been applied/);
    assert.equal(unavailableError('h:1', 'connection lost', 'read', refused).message, 'datastore unavailable: cannot reach PostgreSQL at h:1 (connection lost)');
    // Each kind of failure that means "unreachable", and some that do not.
    const kinds: Array<[unknown, string | undefined]> = [
      [Object.assign(new Error('x'), { code: '57P01' }), 'the server is shutting down'],
      [Object.assign(new Error('x'), { code: '57P03' }), 'the server is starting up or shutting down'],
      [Object.assign(new Error('x'), { code: '08006' }), 'connection failure (SQLSTATE 08006)'],
      [new Error('Connection terminated unexpectedly'), 'connection lost'],
      [new Error('timeout exceeded when trying to connect'), `no answer within ${CONNECT_TIMEOUT_MS / 1000} s`],
      [new Error('Query read timeout'), `no answer within ${QUERY_TIMEOUT_MS / 1000} s`],
      [Object.assign(new Error('duplicate key'), { code: '23505' }), undefined],
      [Object.assign(new Error('syntax'), { code: '42601' }), undefined],
    ];
    for (const [err, want] of kinds) assert.equal(connectionFailure(err, CONNECT_TIMEOUT_MS, QUERY_TIMEOUT_MS), want, String(err));
  });

  it('Availability logs the start and the end of an outage once each', () => {
    const lines: Line[] = [];
    let t = 0;
    const a = new Availability('h:1', captured(lines), () => t);
    const seen: boolean[] = [];
    a.onChange((up) => seen.push(up));
    a.ok();
    a.down('connection refused');
    t = 2500;
    a.down('connection refused');
    a.down('connection lost');
    a.ok();
    a.ok();
    assert.deepEqual(seen, [false, true]);
    assert.deepEqual(
      lines.map((l) => `${l.level} ${l.msg.split(':')[0]}`),
      ['warn lost the datastore', 'info datastore reachable again after 2.5 s'],
    );
  });
});

describe('PostgreSQL store: the database killed and restarted', () => {
  it('calls fail fast with "unavailable" (none hangs, the process survives), the outage is logged once, and everything works again after the restart', { timeout: 120_000 }, async () => {
    const cluster = await postgresCluster();
    const uri = cluster.uri(await cluster.createDatabase());
    const lines: Line[] = [];
    const ds = await openPostgresDataStore({ connectionString: uri, maxOpenConns: 4, pollMs: 200, logger: captured(lines) });
    opened.push(ds);
    const changes: number[] = [];
    ds.onChange((id) => changes.push(id));
    const ups: boolean[] = [];
    ds.onAvailabilityChange!((up) => ups.push(up));
    assert.equal(ds.available!(), true);

    // A burst of group-committed creates (8 callers) with PostgreSQL killed after 20 acknowledgements.
    const acked: string[] = [];
    const nothingWritten: string[] = [];
    const unknown: string[] = [];
    let next = 0;
    let killed = false;
    const worker = async (): Promise<void> => {
      while (next < 120) {
        const i = next++;
        try {
          const [r] = await ds.createEntries([entry(i)], 1);
          if (r && 'entry' in r) acked.push(r.entry.spiffeId);
          if (acked.length === 20 && !killed) {
            killed = true;
            cluster.kill();
          }
        } catch (err) {
          assert.ok(isDataStoreUnavailable(err), `an outage is reason 'unavailable': ${String(err)}`);
          const msg = (err as Error).message;
          assert.match(msg, new RegExp(`^datastore unavailable: cannot reach PostgreSQL at 127\\.0\\.0\\.1:${cluster.port} \\(`));
          (/nothing was written$/.test(msg) ? nothingWritten : unknown).push(`spiffe://example.org/outage/${i}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    assert.ok(killed);
    assert.equal(acked.length + nothingWritten.length + unknown.length, 120, 'every call settled');
    assert.equal(ds.available!(), false);
    // Reads fail the same way; none is logged again.
    await assert.rejects(ds.listEntries(), (e: unknown) => isDataStoreUnavailable(e) && !/nothing was written/.test((e as Error).message));
    await assert.rejects(ds.getAttestedNode(parseSpiffeId('spiffe://example.org/spire/agent/x/y')), (e: unknown) => isDataStoreUnavailable(e));
    await new Promise((r) => setTimeout(r, 600)); // a few catch-up polls fail too
    assert.deepEqual(lines.map((l) => l.msg.split(':')[0]), ['lost the datastore']);

    // Back. Another writer commits first (as another server would, before this store's LISTEN is back).
    cluster.start();
    const other = new pg.Client({ connectionString: uri });
    await other.connect();
    const { rows } = await other.query<{ id: string }>("INSERT INTO events (kind, key, at) VALUES ('bundle_updated', 'other.test', 1) RETURNING id");
    const otherEvent = Number(rows[0]!.id);
    const stored = new Set((await other.query<{ spiffe_id: string }>('SELECT spiffe_id FROM entries')).rows.map((r) => r.spiffe_id));
    await other.end();
    assert.deepEqual(acked.filter((id) => !stored.has(id)), [], 'every acknowledged create is in the database');
    assert.deepEqual(nothingWritten.filter((id) => stored.has(id)), [], 'no create that said "nothing was written" is');

    let created: Awaited<ReturnType<DataStore['createEntries']>> | undefined;
    for (let i = 0; i < 10 && created === undefined; i++) {
      created = await ds.createEntries([entry('after')], 2).catch(async () => {
        await new Promise((r) => setTimeout(r, 300));
        return undefined;
      });
    }
    assert.ok(created && 'entry' in created[0]!, 'writes work again without reopening the store');
    // The change feed hears of the other writer's event (catch-up poll or the LISTEN connection, reopened).
    for (let i = 0; i < 50 && !changes.some((id) => id >= otherEvent); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(changes.some((id) => id >= otherEvent), `the other writer's event ${otherEvent} is announced: ${changes.join(',')}`);
    const ids = (await ds.listEventsSince(0, 10_000)).map((e) => e.id);
    assert.deepEqual(ids, [...new Set(ids)].sort((x, y) => x - y), 'no event twice, in order');
    assert.equal(ds.available!(), true);
    assert.deepEqual(ups, [false, true]);
    assert.deepEqual(
      lines.map((l) => `${l.level} ${l.msg.split(' after ')[0]}`).map((l) => l.split(':')[0]),
      ['warn lost the datastore', 'info datastore reachable again'],
    );
    console.log(`# ${acked.length} acknowledged, ${nothingWritten.length} "nothing was written", ${unknown.length} in doubt (lost during COMMIT)`);
  });

  it('a server that accepts connections but never answers: a call fails after the connect timeout', { timeout: 60_000 }, async () => {
    const cluster = await postgresCluster();
    cluster.start();
    const uri = cluster.uri(await cluster.createDatabase());
    const ds = await openPostgresDataStore({ connectionString: uri, maxOpenConns: 2, maxIdleConns: 0 });
    opened.push(ds);
    // A black hole on another port: TCP accepted, nothing ever said (a hung or partitioned host).
    const sockets: Socket[] = [];
    const hole: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    const port = (hole.address() as { port: number }).port;
    try {
      const silent = await openPostgresDataStore({ connectionString: uri, roConnectionString: `postgresql://postgres@127.0.0.1:${port}/x?sslmode=disable`, maxOpenConns: 2 });
      opened.push(silent);
      const t0 = Date.now();
      await assert.rejects(silent.listEntries(undefined, undefined, { mayLag: true }), (e: unknown) => {
        assert.ok(isDataStoreUnavailable(e), String(e));
        assert.match((e as Error).message, new RegExp(`cannot reach PostgreSQL at 127\\.0\\.0\\.1:${port} \\(no answer within 5 s\\)`));
        return true;
      });
      console.log(`# a silent replica failed the read after ${Date.now() - t0} ms`);
      // The primary is untouched by the replica's outage.
      assert.equal((await silent.createEntries([entry('primary')], 1)).length, 1);
      assert.equal(silent.available!(), true);
    } finally {
      for (const s of sockets) s.destroy();
      hole.close();
    }
  });
});

describe('ro_connection_string', () => {
  it('serves only reads marked mayLag; writes, other reads and the change feed use connection_string', { timeout: 60_000 }, async () => {
    const cluster = await postgresCluster();
    cluster.start();
    const db = await cluster.createDatabase();
    const primaryUri = `${cluster.uri(db)}&application_name=spindle-primary`;
    // A role that may only SELECT: anything but a read sent there fails.
    const admin = new pg.Client({ connectionString: cluster.uri(db) });
    await admin.connect();
    const ds = await openPostgresDataStore({ connectionString: primaryUri, maxOpenConns: 2 });
    await ds.close(); // migrated; now the reader role gets SELECT on the tables
    await admin.query('CREATE ROLE spindle_reader LOGIN');
    await admin.query('GRANT SELECT ON ALL TABLES IN SCHEMA public TO spindle_reader');
    const roUri = `postgresql://spindle_reader@127.0.0.1:${cluster.port}/${db}?sslmode=disable&application_name=spindle-replica`;
    const store = await openPostgresDataStore({ connectionString: primaryUri, roConnectionString: roUri, maxOpenConns: 2 });
    opened.push(store);
    const created = await store.createEntries([entry(1), entry(2)], 1);
    assert.ok(created.every((r) => 'entry' in r), 'writes go to the primary (the reader role could not write)');
    const statements = async (): Promise<Map<string, number>> => {
      const r = await admin.query<{ application_name: string; n: string }>(
        "SELECT application_name, count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'spindle-%' GROUP BY 1",
        [db],
      );
      return new Map(r.rows.map((x) => [x.application_name, Number(x.n)]));
    };
    assert.equal((await statements()).get('spindle-replica') ?? 0, 0, 'nothing has used the replica yet');
    assert.equal((await store.listEntries(undefined, undefined, { mayLag: true })).items.length, 2);
    assert.equal(await store.countEntries(undefined, { mayLag: true }), 2);
    assert.equal((await store.listAttestedNodes(undefined, undefined, { mayLag: true })).items.length, 0);
    assert.ok(((await statements()).get('spindle-replica') ?? 0) >= 1, 'list and count reads marked mayLag used the replica');
    // Proof the other way: the replica role cannot see a table it was not granted, so a write or
    // a feed read sent there would fail. Revoke everything and check the rest still works.
    await admin.query('REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM spindle_reader');
    await assert.rejects(store.countEntries(undefined, { mayLag: true }), /permission denied/);
    assert.equal(await store.countEntries(), 2, 'reads not marked mayLag use the primary');
    assert.equal((await store.listEntries()).items.length, 2);
    assert.ok((await store.listEventsSince(0, 100)).length >= 2, 'the change feed reads the primary');
    assert.ok(created[0] && 'entry' in created[0]);
    const upd = await store.updateEntry({ ...created[0].entry, hint: 'h' }, 2);
    assert.equal(upd.hint, 'h');
    await admin.end();
  });

  it('is checked like connection_string, naming the key and never the password', async () => {
    await assert.rejects(
      openPostgresDataStore({ connectionString: 'postgresql://u@127.0.0.1:1/x', roConnectionString: 'host=x sslmode=bogus password=hunter2' }),
      (e: unknown) => e instanceof DataStoreError && e.reason === 'invalid' && /ro_connection_string/.test(e.message) && !/hunter2/.test(e.message),
    );
  });
});

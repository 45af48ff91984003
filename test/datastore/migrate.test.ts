// `spindle-server datastore migrate`, end to end: a real SQLite datastore seeded through the
// factory (entries with DNS names, federatesWith, hints and expiry, updated so revision numbers
// and times differ; agents, one banned; our own and a federated bundle; unused join tokens; a CA
// journal) copied by the real bin/spindle-server process into a database of the test's
// PostgreSQL cluster, then read back through the factory and compared record for record. Also:
// the source file is byte-identical afterwards, a non-empty target is refused (and unchanged)
// without -force, bad sources and connection strings are named (never echoing a password), a
// server running on the source blocks the migration, and a server started on the migrated
// database serves the migrated entries, bundle and join token.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { DataStore, DataStoreRecords, NewEntry } from '../../server/datastore/types.js';
import { openRecordSource, openRecordTarget } from '../../server/datastore/factory.js';
import { openTestDataStore, openTestPostgresDataStore, postgresDataStoreConfig, sqliteDataStoreConfig } from '../support/datastore.js';
import { postgresCluster, type PostgresCluster } from '../support/postgres.js';
import { entryWithDefaults } from '../support/entries.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { serverBin, startServerProcess, tempDir, type ServerProcess } from '../support/serverproc.js';

const PASSWORD = 'Sup3r-S3cret-pw';
const ENTRY_COUNT = 1234;
const T0 = 1_760_000_000;

function migrate(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(serverBin, ['datastore', 'migrate', ...args], { encoding: 'utf8', timeout: 180_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** Exported records as comparable JSON (bundle sequences are bigints). */
function plain(r: DataStoreRecords): unknown {
  return JSON.parse(JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)));
}

interface Seeded {
  path: string;
  dir: string;
  clearTokens: string[];
  entryIds: { web: string; admin: string };
}

/** A SQLite datastore in `<dir>/data/datastore.sqlite3` holding one of every kind of record. */
async function seedSqlite(): Promise<Seeded> {
  const dir = tempDir('spindle-migrate-');
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  const path = join(dataDir, 'datastore.sqlite3');
  const ds = await openTestDataStore(path);
  try {
    const base = (i: number): NewEntry =>
      entryWithDefaults({
        spiffeId: `spiffe://example.org/workload/${i}` as SpiffeId,
        parentId: `spiffe://example.org/spire/agent/join_token/${i % 7}` as SpiffeId,
        selectors: [{ type: 'unix', value: `uid:${1000 + i}` }],
      });
    const special: NewEntry[] = [
      {
        ...base(-1),
        spiffeId: 'spiffe://example.org/web' as SpiffeId,
        selectors: [
          { type: 'unix', value: 'uid:1000' },
          { type: 'k8s', value: 'ns:prod' },
        ],
        dnsNames: ['web.example.org', 'a.example.org'],
        federatesWith: ['partner.org' as TrustDomain, 'another.org' as TrustDomain],
        hint: 'frontend',
        entryExpiry: T0 + 86_400 * 365 * 20,
        x509SvidTtl: 600,
        jwtSvidTtl: 300,
      },
      { ...base(-2), id: 'admin-entry-fixed-id', spiffeId: 'spiffe://example.org/admin' as SpiffeId, admin: true, downstream: true, hint: 'ops' },
    ];
    const rest = Array.from({ length: ENTRY_COUNT - special.length }, (_, i) => base(i));
    const created = await ds.createEntries([...special, ...rest], T0);
    const ids = created.map((r) => {
      assert.ok('entry' in r, JSON.stringify(r));
      return r.entry.id;
    });
    // Revision numbers and updated times that differ from a fresh create.
    let web = (await ds.getEntry(ids[0]!))!;
    web = await ds.updateEntry({ ...web, hint: 'frontend-v2' }, T0 + 10);
    web = await ds.updateEntry({ ...web, dnsNames: ['web.example.org', 'a.example.org', 'z.example.org'] }, T0 + 20);
    assert.equal(web.revisionNumber, 2);

    const node = (name: string, extra: Partial<{ banned: boolean; canReattest: boolean; attestationType: string }> = {}) => ({
      spiffeId: `spiffe://example.org/spire/agent/${name}` as SpiffeId,
      attestationType: extra.attestationType ?? 'join_token',
      certSerial: sha256(name).slice(0, 32),
      certNotAfter: T0 + 3600,
      newCertSerial: '',
      newCertNotAfter: 0,
      selectors: [{ type: 'join_token', value: name }],
      banned: extra.banned ?? false,
      canReattest: extra.canReattest ?? false,
    });
    await ds.createAttestedNode(node('alpha'), T0 + 1);
    await ds.createAttestedNode(node('banned', { banned: true }), T0 + 2);
    const k8s = await ds.createAttestedNode(
      { ...node('k8s', { attestationType: 'k8s_psat', canReattest: true }), selectors: [{ type: 'k8s_psat', value: 'cluster:demo' }, { type: 'k8s_psat', value: 'agent_ns:spire' }] },
      T0 + 3,
    );
    await ds.updateAttestedNode({ ...k8s, newCertSerial: 'abcdef01', newCertNotAfter: T0 + 7200 }, T0 + 30);

    await ds.setBundle({ trustDomain: 'example.org' as TrustDomain, document: '{"keys":[],"spiffe_sequence":7}', sequence: 7n }, T0 + 4);
    // A sequence above 2^63: bundles keep a uint64.
    await ds.setBundle({ trustDomain: 'partner.org' as TrustDomain, document: '{"keys":[{"kty":"EC"}]}', sequence: (1n << 63n) + 5n }, T0 + 5);

    const clearTokens = [0, 1, 2].map(() => randomBytes(16).toString('hex'));
    for (const [i, t] of clearTokens.entries()) await ds.createJoinToken({ hash: sha256(t), expiresAt: T0 + 86_400 * 365 * 20 + i });

    await ds.setCaJournal(JSON.stringify({ version: 1, trustDomain: 'example.org', sequence: '7', x509: [], jwt: [], upstreamRoots: [] }));
    await ds.createFederationRelationship(
      { trustDomain: 'partner.org' as TrustDomain, bundleEndpointUrl: 'https://partner.example:8443', bundleEndpointProfile: 'https_spiffe', endpointSpiffeId: 'spiffe://partner.org/spire/server' },
      T0 + 6,
    );
    await ds.setFederationRefreshState('partner.org' as TrustDomain, { lastAttemptAt: T0 + 7, lastSuccessAt: T0 + 7, lastError: '', lastSequence: (1n << 63n) + 5n });
    return { path, dir, clearTokens, entryIds: { web: ids[0]!, admin: 'admin-entry-fixed-id' } };
  } finally {
    await ds.close();
  }
}

async function exportOf(open: () => Promise<DataStore>): Promise<DataStoreRecords> {
  const ds = (await open()) as DataStore & { exportRecords(): Promise<DataStoreRecords> };
  try {
    return await ds.exportRecords();
  } finally {
    await ds.close();
  }
}

/** The source's files and their hashes (the datastore and anything SQLite or a lock left beside it). */
function snapshotDir(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).map((f) => [f, sha256(readFileSync(join(dir, f)))]));
}

const SUMMARY = (path: string): RegExp =>
  new RegExp(
    `^migrated 1,234 entries, 3 agents, 2 bundles, 3 join tokens, 1 federation relationship and the CA journal from ${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} ` +
      'to PostgreSQL \\(host=127\\.0\\.0\\.1 port=\\d+ dbname=\\S+ user=postgres\\)$',
    'm',
  );

describe('spindle-server datastore migrate', { timeout: 600_000 }, () => {
  let cluster: PostgresCluster;
  let seeded: Seeded;

  before(async () => {
    cluster = await postgresCluster();
    seeded = await seedSqlite();
  });

  test('copies every record into an empty PostgreSQL database, leaves the source byte-identical, and the join tokens work once', async () => {
    const uri = cluster.uri(await cluster.createDatabase());
    const dataDir = join(seeded.dir, 'data');
    const before = snapshotDir(dataDir);
    const src = await openTestDataStore(seeded.path);
    const expectEntries = (await src.listEntries()).items;
    const expectNodes = (await src.listAttestedNodes()).items;
    const expectBundles = await src.listBundles();
    const expectJournal = await src.getCaJournal();
    await src.close();
    assert.deepEqual(snapshotDir(dataDir), before, 'reading the source through the factory changed nothing (the baseline is stable)');
    const expected = await exportOf(() => openTestDataStore(seeded.path));

    const r = migrate(['-from', seeded.path, '-to', uri]);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, SUMMARY(seeded.path));
    assert.match(r.stdout, /change feed was not copied/);
    assert.deepEqual(snapshotDir(dataDir), before, 'the source file is byte-identical and nothing was left beside it (no -wal, -shm or lock)');

    const pg = await openTestPostgresDataStore(uri);
    try {
      assert.equal(await pg.countEntries(), ENTRY_COUNT);
      assert.deepEqual((await pg.listEntries()).items, expectEntries, 'entries (ids, revisions, times, DNS names, federatesWith, hints, expiry) are equal');
      assert.deepEqual((await pg.listAttestedNodes()).items, expectNodes, 'agents (selectors, serials, banned, can-reattest, times) are equal');
      assert.deepEqual(await pg.listBundles(), expectBundles, 'bundles (own and federated, with sequence numbers) are equal');
      assert.equal(await pg.getCaJournal(), expectJournal);
      const web = await pg.getEntry(seeded.entryIds.web);
      assert.equal(web?.revisionNumber, 2);
      assert.deepEqual(web?.dnsNames, ['web.example.org', 'a.example.org', 'z.example.org']);
      assert.equal((await pg.listAttestedNodes({ byBanned: true })).items.length, 1);
      assert.equal(await pg.latestEventId(), 0, 'the change feed starts afresh');
      assert.deepEqual(plain(await (pg as DataStore & { exportRecords(): Promise<DataStoreRecords> }).exportRecords()), plain(expected), 'every record, bundle update times and token hashes included');
      for (const t of seeded.clearTokens) {
        const got = await pg.consumeJoinToken(sha256(t));
        assert.equal(got?.hash, sha256(t), 'a migrated join token is consumed with the clear token');
        assert.equal(await pg.consumeJoinToken(sha256(t)), undefined, 'exactly once');
      }
    } finally {
      await pg.close();
    }
  });

  test('a non-empty target is refused and left unchanged without -force; -force replaces it', async () => {
    const uri = cluster.uri(await cluster.createDatabase());
    const pg = await openTestPostgresDataStore(uri);
    await pg.createEntries(
      [{ spiffeId: 'spiffe://other.org/x' as SpiffeId, parentId: 'spiffe://other.org/agent' as SpiffeId, selectors: [{ type: 'unix', value: 'uid:1' }], x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: [], federatesWith: [], admin: false, downstream: false, hint: '', entryExpiry: 0 }],
      T0,
    );
    await pg.createJoinToken({ hash: sha256('target-token'), expiresAt: T0 });
    await pg.close();
    const beforeTarget = plain(await exportOf(() => openTestPostgresDataStore(uri)));

    const refused = migrate(['-from', seeded.path, '-to', uri]);
    assert.equal(refused.status, 1, refused.stdout);
    assert.match(refused.stderr, /^Error: the target PostgreSQL \(host=127\.0\.0\.1 port=\d+ dbname=\S+ user=postgres\) is not empty: it holds 1 entry, 0 agents, 0 bundles, 1 join token and no CA journal\./);
    assert.match(refused.stderr, /pass -force/);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(plain(await exportOf(() => openTestPostgresDataStore(uri))), beforeTarget, 'the target is unchanged');

    const forced = migrate(['-from', seeded.path, '-to', uri, '-force']);
    assert.equal(forced.status, 0, forced.stderr);
    assert.match(forced.stdout, SUMMARY(seeded.path));
    assert.match(forced.stderr, /Replaced what the target held before \(-force\): 1 entry, 0 agents, 0 bundles, 1 join token and no CA journal/);
    assert.deepEqual(plain(await exportOf(() => openTestPostgresDataStore(uri))), plain(await exportOf(() => openTestDataStore(seeded.path))), 'the target now holds exactly the source');
  });

  test('a missing source, a file that is not a Spindle datastore and bad connection strings are named; the password never shows', async () => {
    const uri = cluster.uri(await cluster.createDatabase());
    const dir = tempDir('spindle-migrate-bad-');
    const noFile = join(dir, 'nope', 'datastore.sqlite3');
    const missing = migrate(['-from', noFile, '-to', uri]);
    assert.equal(missing.status, 1);
    assert.equal(missing.stderr, `Error: the source datastore ${noFile} (-from) does not exist; give the path of the SQLite datastore file (data_dir/datastore.sqlite3 by default)\n`);

    const junk = join(dir, 'junk.sqlite3');
    writeFileSync(junk, 'not a database '.repeat(100), { mode: 0o600 });
    const notDb = migrate(['-from', junk, '-to', uri]);
    assert.equal(notDb.status, 1);
    assert.match(notDb.stderr, new RegExp(`^Error: .*${junk.replace(/[.]/g, '\\.')} is not a Spindle SQLite datastore \\(it is not a SQLite database file\\)`));
    const other = join(dir, 'other.sqlite3');
    const db = new Database(other);
    db.exec('CREATE TABLE t (a)');
    db.close();
    const otherHash = sha256(readFileSync(other));
    const notSpindle = migrate(['-from', other, '-to', uri]);
    assert.equal(notSpindle.status, 1);
    assert.match(notSpindle.stderr, /is not a Spindle SQLite datastore/);
    assert.equal(sha256(readFileSync(other)), otherHash, 'a foreign SQLite file is not modified either');

    const port = new URL(uri).port;
    const cases: Array<[string, RegExp]> = [
      // Nothing listens on port 1.
      [`postgresql://spindle:${PASSWORD}@127.0.0.1:1/spindle`, /^Error: cannot open the target PostgreSQL \(host=127\.0\.0\.1 port=1 dbname=spindle user=spindle\) \(-to\): .*ECONNREFUSED/],
      [`postgresql://postgres:${PASSWORD}@127.0.0.1:${port}/no_such_db`, /^Error: cannot open the target PostgreSQL \(host=127\.0\.0\.1 port=\d+ dbname=no_such_db user=postgres\) \(-to\): .*database "no_such_db" does not exist/],
      [`host=127.0.0.1 password=${PASSWORD} sslmode=sometimes`, /^Error: -to is not a valid PostgreSQL connection string: sslmode "sometimes" is not one of/],
      [`postgresql://u:${PASSWORD}@127.0.0.1:99999999/db`, /^Error: -to is not a valid PostgreSQL connection string/],
      // A password reused as another value the parser quotes back is scrubbed from the message.
      [`host=127.0.0.1 user=spindle password=${PASSWORD} sslmode=${PASSWORD}`, /^Error: -to is not a valid PostgreSQL connection string: sslmode "\*\*\*" is not one of/],
    ];
    for (const [to, expected] of cases) {
      const r = migrate(['-from', seeded.path, '-to', to]);
      assert.equal(r.status, 1, `${to}: ${r.stdout}`);
      assert.match(r.stderr, expected);
      assert.ok(!r.stderr.includes(PASSWORD) && !r.stdout.includes(PASSWORD), `the password is not printed: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });

  test('the source is opened read-only: writes through it fail, and a newer schema, a file without the Spindle tables or one failing its integrity check is refused without touching it', async () => {
    const dataDir = join(seeded.dir, 'data');
    const before = snapshotDir(dataDir);
    const ro = await openRecordSource(sqliteDataStoreConfig(seeded.path));
    try {
      await assert.rejects(ro.createJoinToken({ hash: sha256('x'), expiresAt: T0 }), /database is read-only/);
      await assert.rejects(ro.setCaJournal('{}'), /database is read-only/);
      assert.equal((await ro.countRecords()).entries, ENTRY_COUNT);
    } finally {
      await ro.close();
    }
    assert.deepEqual(snapshotDir(dataDir), before, 'nothing written, nothing left beside the file');

    const uri = cluster.uri(await cluster.createDatabase());
    const dir = tempDir('spindle-migrate-schema-');
    for (const [kind, expected] of [
      ['newer', /has schema version 99, newer than version \d+ that this Spindle knows/],
      ['not-spindle', /is not a Spindle SQLite datastore \(it lacks the tables/],
      ['damaged', /fails its integrity check; repair it or restore a backup before migrating:\nentry "[^"]+": 5 selectors recorded but 1 rows/],
    ] as const) {
      const copy = join(dir, `${kind}.sqlite3`);
      writeFileSync(copy, readFileSync(seeded.path), { mode: 0o600 });
      const db = new Database(copy);
      if (kind === 'newer') db.pragma('user_version = 99');
      if (kind === 'not-spindle') {
        db.pragma('user_version = 0');
        db.exec('DROP TABLE events');
      }
      if (kind === 'damaged') db.exec("UPDATE entries SET selector_count = 5 WHERE id = 'admin-entry-fixed-id'");
      db.pragma('journal_mode = DELETE');
      db.close();
      const hash = sha256(readFileSync(copy));
      const r = migrate(['-from', copy, '-to', uri]);
      assert.equal(r.status, 1, r.stdout);
      assert.match(r.stderr, expected);
      assert.equal(sha256(readFileSync(copy)), hash, 'the refused file is unchanged');
    }
  });

  test('an import is one transaction: a failure midway leaves the target as it was, and a non-empty target is refused inside it', async () => {
    const records = await exportOf(() => openTestDataStore(seeded.path));
    const uri = cluster.uri(await cluster.createDatabase());
    const target = await openRecordTarget(postgresDataStoreConfig(uri));
    try {
      await target.setCaJournal('{"before":true}');
      const last = records.entries[records.entries.length - 1]!;
      // A second entry with the last one's identity fails on the unique index after every other row was written.
      const bad = { ...records, entries: [...records.entries, { ...last, id: 'duplicate-identity' }] };
      await assert.rejects(target.importRecords(bad, { replace: true }), /duplicate key value violates unique constraint/);
      assert.equal(await target.countEntries(), 0, 'no entry of the failed import was committed');
      assert.equal(await target.getCaJournal(), '{"before":true}', 'what the target held is still there (the replace was rolled back too)');
      await assert.rejects(target.importRecords(records, { replace: false }), /postgres datastore is not empty: it holds 0 entries, 0 agents, 0 bundles, 0 join tokens and the CA journal/);
      assert.equal(await target.countEntries(), 0);
      const counts = await target.importRecords(records, { replace: true });
      assert.deepEqual(counts, { entries: ENTRY_COUNT, nodes: 3, joinTokens: 3, bundles: 2, caJournals: 1, federationRelationships: 1 });
      assert.deepEqual(plain(await target.exportRecords()), plain(records));
    } finally {
      await target.close();
    }
  });

  test('a lock left by a process that is gone is taken over with a warning and removed afterwards', async () => {
    const dir = tempDir('spindle-migrate-stale-');
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const copy = join(dataDir, 'datastore.sqlite3');
    writeFileSync(copy, readFileSync(seeded.path), { mode: 0o600 });
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    writeFileSync(join(dataDir, 'spindle.lock'), `${dead}\n`, { mode: 0o600 });
    const uri = cluster.uri(await cluster.createDatabase());
    const r = migrate(['-from', copy, '-to', uri]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^Warning: took over a stale lock ${join(dataDir, 'spindle.lock').replace(/[.]/g, '\\.')} \\(its process ${dead} is gone\\)$`, 'm'));
    assert.match(r.stdout, SUMMARY(copy));
    assert.deepEqual(readdirSync(dataDir), ['datastore.sqlite3'], 'the lock is released');
  });

  test('writes still in the -wal of a server killed before a checkpoint are copied; the file and its -wal are left as they were', async () => {
    const dir = tempDir('spindle-migrate-wal-');
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const path = join(dataDir, 'datastore.sqlite3');
    // A process that writes through the factory and dies without closing (no checkpoint).
    const writer = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { openTestDataStore } = await import(${JSON.stringify(new URL('../support/datastore.js', import.meta.url).href)});
         const ds = await openTestDataStore(${JSON.stringify(path)});
         const e = (i) => ({ spiffeId: 'spiffe://example.org/w/' + i, parentId: 'spiffe://example.org/agent', selectors: [{ type: 'unix', value: 'uid:' + i }], x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: [], federatesWith: [], admin: false, downstream: false, hint: '', entryExpiry: 0 });
         await ds.createEntries(Array.from({ length: 50 }, (_, i) => e(i)), 1);
         await ds.createJoinToken({ hash: ${JSON.stringify(sha256('wal-token'))}, expiresAt: 99 });
         process.kill(process.pid, 'SIGKILL');`,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(writer.signal, 'SIGKILL', writer.stderr);
    const wal = `${path}-wal`;
    assert.ok(readFileSync(wal).length > 0, 'the writes are in the -wal, not yet in the file');
    const fileHash = sha256(readFileSync(path));
    const walHash = sha256(readFileSync(wal));
    const uri = cluster.uri(await cluster.createDatabase());
    const r = migrate(['-from', path, '-to', uri]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^migrated 50 entries, 0 agents, 0 bundles, 1 join token and no CA journal from /m);
    assert.equal(sha256(readFileSync(path)), fileHash, 'the database file is unchanged (no checkpoint into it)');
    assert.equal(sha256(readFileSync(wal)), walHash, 'the -wal is unchanged');
    const pg = await openTestPostgresDataStore(uri);
    try {
      assert.equal(await pg.countEntries(), 50);
      assert.deepEqual(await pg.consumeJoinToken(sha256('wal-token')), { hash: sha256('wal-token'), expiresAt: 99 });
    } finally {
      await pg.close();
    }
  });

  describe('with real servers', () => {
    const servers: ServerProcess[] = [];
    let agent: AgentProcess | undefined;
    after(async () => {
      await agent?.stop('SIGKILL');
      for (const s of servers) await s.stop('SIGKILL');
    });

    test('refused while a server runs on the source; a server started on the migrated database serves its entries, bundle and join token', async () => {
      const sqlite = await startServerProcess();
      servers.push(sqlite);
      const ok = (r: { status: number | null; stdout: string; stderr: string }, what: string): string => {
        assert.equal(r.status, 0, `${what}: ${r.stderr}${r.stdout}`);
        return r.stdout;
      };
      const created = ok(
        sqlite.cli(['entry', 'create', '-parentID', 'spiffe://example.org/agent', '-spiffeID', 'spiffe://example.org/db', '-selector', 'unix:uid:1001', '-dns', 'db.internal', '-hint', 'database']),
        'entry create',
      );
      const id = /Entry ID\s*:\s*(\S+)/.exec(created)?.[1];
      assert.ok(id, created);
      const shownBefore = ok(sqlite.cli(['entry', 'show', '-entryID', id]), 'entry show');
      const bundleBefore = ok(sqlite.cli(['bundle', 'show']), 'bundle show');
      const token = generateJoinToken(sqlite);
      const source = join(sqlite.dataDir, 'datastore.sqlite3');
      const uri = cluster.uri(await cluster.createDatabase());

      const busy = migrate(['-from', source, '-to', uri]);
      assert.equal(busy.status, 1, busy.stdout);
      assert.equal(
        busy.stderr,
        `Error: the source datastore's directory ${sqlite.dataDir} is in use by process ${sqlite.proc.pid} (a spindle-server running on it?): ` +
          `stop it before migrating. If no such process runs, delete ${join(sqlite.dataDir, 'spindle.lock')}\n`,
      );
      const empty = await openTestPostgresDataStore(uri);
      assert.equal(await empty.countEntries(), 0, 'nothing was copied');
      await empty.close();

      assert.equal(await sqlite.stop(), 0);
      const r = migrate(['-from', source, '-to', uri]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^migrated 1 entry, 0 agents, 1 bundle, 1 join token and the CA journal from /m);

      // The same data directory (the CA's keys) with the migrated PostgreSQL database.
      const config = join(sqlite.dir, 'server-pg.yaml');
      writeFileSync(config, `plugins:\n  DataStore:\n    sql:\n      plugin_data:\n        database_type: postgres\n        connection_string: ${JSON.stringify(uri)}\n        max_open_conns: 4\n`);
      const onPg = await startServerProcess({ dir: sqlite.dir, extraArgs: ['-config', config] });
      servers.push(onPg);
      assert.equal(ok(onPg.cli(['entry', 'show', '-entryID', id]), 'entry show on PostgreSQL'), shownBefore, 'the migrated entry is served as before');
      assert.equal(ok(onPg.cli(['bundle', 'show']), 'bundle show on PostgreSQL'), bundleBefore, 'the same CA, the same bundle');
      agent = await startAgentProcess({ server: onPg, joinToken: token });
      const agents = ok(onPg.cli(['agent', 'list']), 'agent list');
      assert.match(agents, /spiffe:\/\/example\.org\/spire\/agent\/join_token\//, 'an agent attested with the join token generated before the migration');
    });
  });
});

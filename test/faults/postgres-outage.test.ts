// Fault: the PostgreSQL datastore goes away under running servers (kill -9 of the postmaster and
// every backend, as a crash would), then returns on the same port and data directory.
//
// Two spindle-server processes (A and B) share one database; an agent is attested to A and this
// process watches its X509 context. While PostgreSQL is down:
//   - the workload keeps its SVID and gets a new one when it is due (signing needs only memory
//     and the CA key), and a JWT-SVID for a new audience is minted;
//   - the agent's own SVID renewal (a write) fails and the agent keeps its SVID and retries;
//   - `entry create` fails with UNAVAILABLE naming the database's host and port, saying nothing
//     was written, without a stack trace, and without waiting out the CLI's deadline;
//   - server A logs the outage once, not once per failed call.
// When it returns, without restarting anything: `entry create` works again on A, an entry created
// through B reaches A's agent (A's change feed catches up), A logs once that it is back.
//
// A second test: 200 admin writes (8 concurrent callers) with PostgreSQL killed in the middle, then a server
// killed (SIGKILL) in the middle of another burst. Every write acknowledged OK is in the database
// afterwards, and no write that said "nothing was written" is. The throwaway cluster runs with
// fsync=on and synchronous_commit=on (test/support/postgres.ts); a kill -9 of PostgreSQL
// processes without an OS crash would keep committed WAL in the page cache even with fsync=off,
// so this checks that acknowledgements follow COMMIT, not the disk's flush.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { status } from '@grpc/grpc-js';
import pg from 'pg';
import { createWorkloadApiClient, type WorkloadApiClient } from '../../spiffe/workloadapi/index.js';
import { generateJoinToken, serverCliAsync, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { postgresCluster, type PostgresCluster } from '../support/postgres.js';
import { freePort, startServerProcess, tempDir, type ServerProcess } from '../support/serverproc.js';
import { adminClient, entryIdOf, keepOrClean, recordWatch, serialOf, sleep, workloadEntry } from './support/common.js';

const TD = 'example.org';
const ALIAS = `spiffe://${TD}/pgoutage/node`;
const UID = process.getuid!();
const FIRST_ID = `spiffe://${TD}/pgoutage/first`;
const LATER_ID = `spiffe://${TD}/pgoutage/later`;
/** Workload SVID TTL: renewed at half-life, so once during the outage. */
const SVID_TTL = 16;
/** The outage lasts past one workload renewal and the agent's own renewal attempt. */
const OUTAGE_MS = 14_000;

let cluster: PostgresCluster;
let uri = '';
const servers: ServerProcess[] = [];
let agent: AgentProcess | undefined;
const clients: WorkloadApiClient[] = [];

async function startServer(metricsPort?: number): Promise<ServerProcess> {
  const dir = tempDir('spindle-pgoutage-');
  const config = join(dir, 'server.yaml');
  // agent_ttl 40 s: the agent renews its own SVID at half-life (20 s), during the outage.
  const telemetry = metricsPort === undefined ? '' : `telemetry:\n  Prometheus:\n    host: 127.0.0.1\n    port: ${metricsPort}\n`;
  writeFileSync(
    config,
    `server:\n  agent_ttl: 40s\n${telemetry}plugins:\n  DataStore:\n    sql:\n      plugin_data:\n        database_type: postgres\n        connection_string: ${JSON.stringify(uri)}\n        max_open_conns: 4\n`,
  );
  const s = await startServerProcess({ dir, trustDomain: TD, extraArgs: ['-config', config] });
  servers.push(s);
  return s;
}

before(async () => {
  cluster = await postgresCluster();
  uri = cluster.uri(await cluster.createDatabase());
});

after(async () => {
  for (const c of clients) c.close();
  await agent?.stop();
  for (const s of servers) await s.stop();
  keepOrClean(!!process.env['SPINDLE_E2E_KEEP'], [...servers, agent]);
});

/** No stack trace or internals in what the CLI printed. */
function assertNoInternals(msg: string, what: string): void {
  assert.doesNotMatch(msg, /\n\s+at |node:internal|\.js:\d+|DatabaseError|password/i, `${what}: no stack trace or internals:\n${msg}`);
}

const count = (log: string, re: RegExp): number => log.split('\n').filter((l) => re.test(l)).length;

test('PostgreSQL killed under two servers: agents keep being served, admin writes fail fast and clearly, everything resumes by itself', { timeout: 150_000 }, async () => {
  const metricsPort = await freePort();
  const a = await startServer(metricsPort);
  const b = await startServer();
  /** spindle_server_datastore_up and spindle_server_entries from A's /metrics (the scrape must succeed). */
  const scrape = async (): Promise<{ up: number; entries: number }> => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(res.status, 200, 'the metrics scrape succeeds');
    const text = await res.text();
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    return { up: value('spindle_server_datastore_up'), entries: value('spindle_server_entries') };
  };
  const token = generateJoinToken(a, ALIAS);
  entryIdOf((await serverCliAsync(a, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', FIRST_ID, '-selector', `unix:uid:${UID}`, '-x509SVIDTTL', String(SVID_TTL)])).stdout);
  agent = await startAgentProcess({ server: a, joinToken: token });
  const agentStarted = performance.now();
  const c = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
  clients.push(c);
  const watch = recordWatch(c, 'workload watch');
  await watch.waitFor((ctx) => ctx.svids.some((s) => s.id.toString() === FIRST_ID), 20_000, 0, 'the first SVID');
  // The outage starts 10 s after the agent attested, so its own renewal (at 20 s) falls inside it.
  await sleep(Math.max(0, 10_000 - (performance.now() - agentStarted)));
  const first = { ...watch.updates[watch.updates.length - 1]!, index: watch.updates.length - 1 };
  const firstSerial = serialOf(first.ctx, FIRST_ID);
  const agentLogBefore = agent.log().length;
  const before = await scrape();
  assert.equal(before.up, 1);
  assert.ok(before.entries >= 1);

  // --- PostgreSQL crashes.
  cluster.kill();
  const downAt = performance.now();
  const t0 = performance.now();
  const refused = await serverCliAsync(a, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', `spiffe://${TD}/pgoutage/during`, '-selector', 'unix:uid:1'], 40_000);
  const refusedMs = performance.now() - t0;
  const msg = `${refused.stderr}${refused.stdout}`.trim();
  assert.notEqual(refused.status, 0, `entry create must fail while PostgreSQL is down: ${msg}`);
  assert.match(
    msg,
    new RegExp(`code = Unavailable desc = datastore unavailable: cannot reach PostgreSQL at 127\\.0\\.0\\.1:${cluster.port} \\([a-z ]+\\); nothing was written`),
    'UNAVAILABLE naming the database, and that nothing was written',
  );
  assertNoInternals(msg, 'entry create during the outage');
  assert.deepEqual(await scrape(), { up: 0, entries: before.entries }, 'datastore_up is 0 during the outage; the entry gauge keeps its last value');
  // Also a token (another write).
  const tok = await serverCliAsync(a, ['token', 'generate'], 40_000);
  assert.match(`${tok.stderr}${tok.stdout}`, /datastore unavailable: cannot reach PostgreSQL at 127\.0\.0\.1:\d+/);

  // Agents keep being served: a JWT-SVID for a new audience (a server call), and the next X509-SVID.
  const jwt = await c.fetchJwtSvid({ audience: [`pgoutage-${Date.now()}`] }, { timeoutMs: 10_000 });
  assert.equal(jwt[0]?.id.toString(), FIRST_ID, 'a JWT-SVID is minted while PostgreSQL is down');
  const rotated = await watch.waitFor(
    (ctx) => ctx.svids.some((s) => s.id.toString() === FIRST_ID) && serialOf(ctx, FIRST_ID) !== firstSerial,
    SVID_TTL * 1000,
    first.index + 1,
    'a renewed X509-SVID while PostgreSQL is down',
  );
  assert.ok(rotated.at < downAt + OUTAGE_MS, 'renewed while PostgreSQL was still down');
  assert.deepEqual(watch.expiredServed, []);
  const remaining = OUTAGE_MS - (performance.now() - downAt);
  if (remaining > 0) await sleep(remaining);
  const agentDuring = agent.log().slice(agentLogBefore);
  assert.equal(agent.proc.exitCode, null, 'the agent is still running');
  assert.match(agentDuring, /agent SVID renewal failed; retrying.*datastore unavailable/, 'the agent\'s own renewal (a write) failed with the datastore named, and is retried');
  assert.doesNotMatch(agentDuring, /127\.0\.0\.1:\d+ \(connection/, 'agents are not told the database address');
  const logA = a.log();
  assert.equal(count(logA, /lost the datastore/), 1, `server A logs the outage once:\n${logA.split('\n').filter((l) => /datastore|ERROR/.test(l)).slice(-20).join('\n')}`);
  assert.equal(count(logA, /"level":50|ERROR/), 0, `no error lines for an outage:\n${logA.split('\n').filter((l) => /ERROR|"level":50/.test(l)).slice(0, 10).join('\n')}`);

  // --- PostgreSQL returns on the same port.
  cluster.start();
  const upAt = performance.now();
  let created = await serverCliAsync(a, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', `spiffe://${TD}/pgoutage/after`, '-selector', 'unix:uid:2']);
  // The pool may hand out one connection that died with the old server: at most a few retries.
  for (let i = 0; i < 5 && created.status !== 0; i++) {
    await sleep(1000);
    created = await serverCliAsync(a, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', `spiffe://${TD}/pgoutage/after`, '-selector', 'unix:uid:2']);
  }
  assert.equal(created.status, 0, `entry create works again without a server restart: ${created.stderr}${created.stdout}`);
  // Written through B: reaches A's agent through the database (A's feed catches up).
  const viaB = await serverCliAsync(b, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', LATER_ID, '-selector', `unix:uid:${UID}`]);
  assert.equal(viaB.status, 0, `entry create on B: ${viaB.stderr}${viaB.stdout}`);
  const reached = await watch.waitFor((ctx) => ctx.svids.some((s) => s.id.toString() === LATER_ID), 20_000, 0, 'the entry created through B');
  let back = count(a.log(), /datastore reachable again after/);
  for (let i = 0; i < 20 && back === 0; i++) {
    await sleep(500);
    back = count(a.log(), /datastore reachable again after/);
  }
  assert.equal(back, 1, 'server A logs once that the datastore is back');
  assert.equal((await scrape()).up, 1);
  assert.equal(count(a.log(), /lost the datastore/), 1);
  // The agent's own SVID renewal, retried, succeeds once PostgreSQL is back (before its SVID expires).
  const renewedAfter = (): boolean => /agent SVID renewed/.test(agent!.log().slice(agentLogBefore));
  for (let i = 0; i < 60 && !renewedAfter(); i++) await sleep(500);
  assert.ok(renewedAfter(), `the agent renewed its SVID after the outage:\n${agent.log().slice(agentLogBefore).split('\n').slice(-10).join('\n')}`);
  console.log(
    `# entry create failed after ${refusedMs.toFixed(0)} ms: ${msg}\n` +
      `# workload SVID renewed ${((rotated.at - downAt) / 1000).toFixed(1)} s into the outage; entry via B reached A's agent ${((reached.at - upAt) / 1000).toFixed(1)} s after PostgreSQL was back\n` +
      `# agent during the outage: ${agentDuring.split('\n').filter((l) => /renew|unavailable/i.test(l)).slice(0, 3).join(' | ')}`,
  );
  assert.equal(agent.proc.exitCode, null, 'the agent is still running');
});

test('acknowledged admin writes survive a PostgreSQL crash and a server crash mid-burst', { timeout: 150_000 }, async () => {
  cluster.start(); // running already unless the test before failed while it was down
  const s = servers[0] ?? (await startServer());
  const N = 200;
  const burst = async (server: ServerProcess, tag: string, crash: () => Promise<void> | void, crashAfterAcks: number) => {
    const admin = adminClient(server, 30_000);
    const acked: string[] = [];
    const refusedNothingWritten: string[] = [];
    const other: string[] = [];
    let crashed: Promise<void> | undefined;
    const one = async (i: number): Promise<void> => {
      const id = `spiffe://${TD}/burst/${tag}/${i}`;
      try {
        const res = await admin.call(admin.entry.batchCreateEntry, { entries: [workloadEntry({ spiffeId: id, parentId: ALIAS, selectors: [`unix:uid:${1000 + i}`] })] });
        const r = res.results[0]!;
        if (r.status?.code === status.OK) {
          acked.push(id);
          if (acked.length === crashAfterAcks) crashed = Promise.resolve(crash());
        } else if (r.status?.code === status.UNAVAILABLE && /nothing was written/.test(r.status.message)) refusedNothingWritten.push(id);
        else other.push(`${id}: ${r.status?.code} ${r.status?.message}`);
      } catch (err) {
        const message = (err as Error).message;
        if (/code = Unavailable desc = datastore unavailable: .*nothing was written/.test(message)) refusedNothingWritten.push(id);
        else other.push(`${id}: ${message}`);
      }
    };
    // 8 callers at a time, so the crash lands between group commits rather than after one big one.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < N) await one(next++);
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    await crashed;
    admin.close();
    return { acked, refusedNothingWritten, other };
  };
  const stored = async (tag: string): Promise<Set<string>> => {
    const client = new pg.Client({ connectionString: uri });
    await client.connect();
    try {
      const r = await client.query<{ spiffe_id: string }>('SELECT spiffe_id FROM entries WHERE spiffe_id LIKE $1', [`spiffe://${TD}/burst/${tag}/%`]);
      return new Set(r.rows.map((x) => x.spiffe_id));
    } finally {
      await client.end();
    }
  };

  // 1. PostgreSQL killed after 40 acknowledgements.
  const pgBurst = await burst(s, 'pg', () => cluster.kill(), 40);
  cluster.start();
  const afterPg = await stored('pg');
  assert.ok(pgBurst.acked.length >= 40, `some writes were acknowledged before the crash: ${pgBurst.acked.length}`);
  assert.deepEqual(pgBurst.acked.filter((id) => !afterPg.has(id)), [], 'every acknowledged write is in the database after PostgreSQL restarts');
  assert.deepEqual(pgBurst.refusedNothingWritten.filter((id) => afterPg.has(id)), [], 'no write that said "nothing was written" is in the database');

  // 2. The server killed (SIGKILL) after 40 acknowledgements.
  const victim = await startServer();
  const serverBurst = await burst(victim, 'srv', () => victim.stop('SIGKILL').then(() => undefined), 40);
  const afterSrv = await stored('srv');
  assert.ok(serverBurst.acked.length >= 40);
  assert.deepEqual(serverBurst.acked.filter((id) => !afterSrv.has(id)), [], 'every write acknowledged before the server was killed is in the database');
  console.log(
    `# PostgreSQL killed mid-burst: ${pgBurst.acked.length} acknowledged (all stored), ${pgBurst.refusedNothingWritten.length} refused "nothing was written" (none stored), ${pgBurst.other.length} other (${afterPg.size} stored in all): ${pgBurst.other.slice(0, 3).join(' | ')}\n` +
      `# server killed mid-burst: ${serverBurst.acked.length} acknowledged (all stored), ${afterSrv.size} stored in all; other outcomes: ${serverBurst.other.slice(0, 2).join(' | ')}`,
  );
  for (const o of pgBurst.other) assert.match(o, /datastore unavailable|may or may not/, `a write refused while PostgreSQL was down says why: ${o}`);
});

// Fault: one of two spindle-server processes sharing one PostgreSQL database is killed with
// SIGKILL while agents configured with both (`-serverAddress 127.0.0.1,127.0.0.2 -serverPort P`)
// serve workloads. Every one of 100 Workload API streams must keep a valid SVID (unexpired,
// verifying against the bundle) and see no error; the agent must move its sync stream to the
// surviving server (its log says so), and an entry created after the kill through the surviving
// server's admin CLI must reach the streams by push. A second agent on the same servers is
// served throughout. The second test: with a short `server_max_connection_age`, an agent moves
// between the two servers, its sync stream never lost (make-before-break), its workload stream
// without an error.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorkloadApiClient, type WorkloadApiClient, type X509Context } from '../../spiffe/workloadapi/index.js';
import { verifyX509Svid } from '../../spiffe/x509/index.js';
import { pemToCertificates } from '../../spiffe/pem.js';
import { generateJoinToken, serverCliAsync, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { postgresCluster } from '../support/postgres.js';
import { startServerProcess, tempDir, type ServerProcess } from '../support/serverproc.js';
import { entryIdOf, keepOrClean, ok, recordWatch, serialOf, sleep } from './support/common.js';

const TD = 'example.org';
const UID = process.getuid!();
const STREAMS = 100;
/** Short enough that SVIDs are renewed (signed again) while one server is dead. */
const TTL = 20;

const servers: ServerProcess[] = [];
const agents: AgentProcess[] = [];
const clients: WorkloadApiClient[] = [];
after(async () => {
  for (const c of clients) c.close();
  for (const a of agents) await a.stop();
  for (const s of servers) await s.stop('SIGKILL');
  keepOrClean(!!process.env['SPINDLE_E2E_KEEP'], [...servers, ...agents]);
});

/** Two servers of one trust domain on one fresh PostgreSQL database: 127.0.0.1:P and 127.0.0.2:P. */
async function twoServers(): Promise<[ServerProcess, ServerProcess]> {
  const cluster = await postgresCluster();
  const uri = cluster.uri(await cluster.createDatabase());
  const start = async (bindAddress: string, port?: number): Promise<ServerProcess> => {
    const dir = tempDir('spindle-failover-');
    const config = join(dir, 'server.yaml');
    writeFileSync(config, `plugins:\n  DataStore:\n    sql:\n      plugin_data:\n        database_type: postgres\n        connection_string: ${JSON.stringify(uri)}\n        max_open_conns: 4\n`);
    const s = await startServerProcess({ dir, trustDomain: TD, bindAddress, ...(port !== undefined ? { port } : {}), extraArgs: ['-config', config] });
    servers.push(s);
    return s;
  };
  const a = await start('127.0.0.1');
  const b = await start('127.0.0.2', a.port);
  // Each server's bundle holds both authorities before agents are given it.
  for (let i = 0; i < 60; i++) {
    if (pemToCertificates(ok(a.cli(['bundle', 'show']))).length >= 2 && pemToCertificates(ok(b.cli(['bundle', 'show']))).length >= 2) break;
    await sleep(250);
  }
  return [a, b];
}

/**
 * An agent for both servers, attested with a join token made on `via`, and its agent ID.
 * `serverAddress`: how the agent is told about them (default the two addresses).
 */
async function agentForBoth(via: ServerProcess, both: [ServerProcess, ServerProcess], agentYaml = '', serverAddress = `${both[0].host},${both[1].host}`): Promise<{ agent: AgentProcess; agentId: string }> {
  const token = generateJoinToken(via);
  const dir = tempDir('spindle-failover-agent-');
  const config = join(dir, 'agent.yaml');
  writeFileSync(config, `agent:\n  workload_api_max_streams_per_pid: 400\n${agentYaml}`);
  const agent = await startAgentProcess({
    server: via,
    dir,
    joinToken: token,
    serverAddress,
    extraArgs: ['-config', config],
  });
  agents.push(agent);
  return { agent, agentId: `spiffe://${TD}/spire/agent/join_token/${token}` };
}

/** The server an agent's sync stream is on now: the last `server=` its log gave for a sync (first sync, reconnect, switch or move). */
function serverOf(agent: AgentProcess): string | undefined {
  const lines = agent.log().split('\n').filter((l) => /synchronized with the server|reconnected to the server|moved the sync stream/.test(l));
  for (const l of lines.reverse()) {
    const m = /\bserver=(\S+)/.exec(l);
    if (m) return m[1]!;
  }
  return undefined;
}

async function eventually<T>(probe: () => T | undefined, ms: number, what: string): Promise<T> {
  for (let waited = 0; waited <= ms; waited += 100) {
    const v = probe();
    if (v !== undefined) return v;
    await sleep(100);
  }
  throw new Error(`${what} did not happen within ${ms} ms`);
}

/** The problems of one context: every SVID must verify (chain, validity now) against `bundles`. */
function invalidSvids(ctx: X509Context, bundlePem: string): string[] {
  const problems: string[] = [];
  const fromServer = { getX509Authorities: () => pemToCertificates(bundlePem) };
  for (const s of ctx.svids) {
    for (const [what, source] of [['the served bundle', ctx.bundles], ['the surviving server\'s bundle', fromServer]] as const) {
      try {
        verifyX509Svid(s.certificates, source);
      } catch (err) {
        problems.push(`${s.id.toString()} against ${what}: ${(err as Error).message}`);
      }
    }
  }
  return problems;
}

test('kill -9 of one of two servers sharing PostgreSQL: a watching workload keeps a valid SVID and receives an entry created afterwards through the surviving server', { timeout: 180_000 }, async (t) => {
  const both = await twoServers();
  const [a] = both;
  const { agent, agentId } = await agentForBoth(a, both);
  const on = await eventually(() => serverOf(agent), 10_000, 'the agent naming its server');
  // A second agent on the other server: agents pick a server at random, so restart it (it
  // resumes from its data dir) until it lands there, a few times at most.
  let second = await agentForBoth(both[1], both);
  for (let i = 0; i < 6 && (await eventually(() => serverOf(second.agent), 10_000, 'the second agent naming its server')) === on; i++) {
    await second.agent.stop();
    const again = await startAgentProcess({ server: both[1], dir: second.agent.dir, serverAddress: `${both[0].host},${both[1].host}`, extraArgs: ['-config', join(second.agent.dir, 'agent.yaml')] });
    agents.push(again);
    second = { agent: again, agentId: second.agentId };
  }
  const workloadId = `spiffe://${TD}/failover/workload`;
  ok(a.cli(['entry', 'create', '-parentID', agentId, '-spiffeID', workloadId, '-selector', `unix:uid:${UID}`, '-x509SVIDTTL', String(TTL)]));
  ok(a.cli(['entry', 'create', '-parentID', second.agentId, '-spiffeID', `${workloadId}-2`, '-selector', `unix:uid:${UID}`, '-x509SVIDTTL', String(TTL)]));

  // The entries have reached both agents (one was written through the other server) before streams open.
  for (const [ag, id] of [[agent, workloadId], [second.agent, `${workloadId}-2`]] as const) {
    const probe = createWorkloadApiClient({ address: ag.address });
    try {
      for (let i = 0; ; i++) {
        const ctx = await probe.fetchX509Context().catch(() => undefined);
        if (ctx?.svids.some((s) => s.id.toString() === id)) break;
        assert.ok(i < 100, `${id} reaches its agent`);
        await sleep(100);
      }
    } finally {
      probe.close();
    }
  }
  // 100 streams on the agent (10 connections of 10 streams), one on the second agent.
  const watches = [];
  for (let c = 0; c < 10; c++) {
    const client = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
    clients.push(client);
    for (let i = 0; i < STREAMS / 10; i++) watches.push(recordWatch(client, `stream ${c * 10 + i}`));
  }
  const secondClient = createWorkloadApiClient({ address: second.agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
  clients.push(secondClient);
  const secondWatch = recordWatch(secondClient, 'second agent stream');
  const has = (id: string) => (ctx: X509Context): boolean => ctx.svids.some((s) => s.id.toString() === id);
  await Promise.all(watches.map((w) => w.waitFor(has(workloadId), 30_000, 0, 'first SVID')));
  await secondWatch.waitFor(has(`${workloadId}-2`), 30_000, 0, 'first SVID');

  const victim = both.find((s) => on === `${s.host}:${s.port}`);
  assert.ok(victim, `the agent is on one of the two servers (log says ${on})`);
  const survivor = both.find((s) => s !== victim)!;
  const survivorAddr = `${survivor.host}:${survivor.port}`;
  const secondWasOn = serverOf(second.agent);
  const before = watches.map((w) => w.updates.length);

  await victim.stop('SIGKILL');
  const killedAt = Date.now();
  // A JWT-SVID asked for at once (a new audience: not cached): the signing call reaches the survivor.
  const [jwt] = await clients[0]!.fetchJwtSvid({ audience: ['asked-right-after-the-kill'] });
  assert.equal(jwt?.id.toString(), workloadId, 'a JWT-SVID is signed during the failover');

  // The agent's log names the move: "switched to spindle-server at <survivor> after <victim> failed".
  await eventually(
    () => (agent.log().includes(`switched to spindle-server at ${survivorAddr} after ${on} failed`) ? true : undefined),
    15_000,
    `the agent switching to ${survivorAddr}:\n${agent.log().slice(-3000)}`,
  );

  // An entry created after the kill, through the surviving server's admin CLI, reaches every
  // stream by push (the agent syncs through the survivor).
  const afterId = `spiffe://${TD}/failover/created-after-kill`;
  const created = await serverCliAsync(survivor, ['entry', 'create', '-parentID', agentId, '-spiffeID', afterId, '-selector', `unix:uid:${UID}`, '-x509SVIDTTL', String(TTL)]);
  assert.equal(created.status, 0, created.stderr);
  entryIdOf(created.stdout);
  await Promise.all(watches.map((w, i) => w.waitFor(has(afterId), 20_000, before[i], 'the entry created after the kill')));

  // Keep going past the SVIDs' half-life (TTL/2 = 10 s after they were signed): renewals are
  // signed by the survivor while the other server stays dead.
  while (Date.now() - killedAt < (TTL / 2 + 4) * 1000) await sleep(500);
  const bundlePem = ok(survivor.cli(['bundle', 'show']));
  for (const w of [...watches, secondWatch]) {
    assert.deepEqual(w.errors.map((e) => e.err.message), [], 'no stream got an error');
    assert.deepEqual(w.expiredServed, [], 'no SVID was served expired');
    const last = w.updates.at(-1)!.ctx;
    assert.deepEqual(invalidSvids(last, bundlePem), [], 'the latest SVIDs verify against the bundle now');
    // Every update received (before and after the kill) was valid when it arrived.
    for (const u of w.updates) for (const s of u.ctx.svids) assert.ok(Date.parse(new X509Certificate(s.certificates[0]!).validTo) > u.wall);
  }
  // Renewed while the other server was dead: the SVID each stream holds now is not the one it held at the kill.
  watches.forEach((w, i) => {
    assert.notEqual(serialOf(w.updates.at(-1)!.ctx, workloadId), serialOf(w.updates[before[i]! - 1]!.ctx, workloadId), `${i}: the SVID was renewed after the kill`);
  });
  assert.equal(serverOf(agent), survivorAddr, 'the agent syncs through the surviving server');
  assert.doesNotMatch(agent.log(), /the server refused this agent/);
  assert.doesNotMatch(second.agent.log(), /the server refused this agent/);
  const switchedLine = agent.log().split('\n').find((l) => l.includes('switched to spindle-server at'))!;
  t.diagnostic(`agent on ${on}, second agent on ${secondWasOn}; ${victim.host} killed; the agent synced through ${survivorAddr} ${Date.parse(switchedLine.slice(0, 24)) - killedAt} ms after the kill`);
  // The second agent: on the survivor all along, or moved there as the first did.
  if (secondWasOn === on) assert.match(second.agent.log(), new RegExp(`switched to spindle-server at ${survivorAddr.replace(/\./g, '\\.')}`));
  else assert.doesNotMatch(second.agent.log(), /lost the server sync stream/);
});

test('server_max_connection_age moves an agent between servers without losing its sync stream or a workload stream', { timeout: 120_000 }, async () => {
  const both = await twoServers();
  // The first server by name (localhost: the agent resolves it, and uses its IPv4 address 127.0.0.1).
  assert.equal(both[0].host, '127.0.0.1');
  const { agent, agentId } = await agentForBoth(both[0], both, '  server_max_connection_age: 2s\n', `localhost,${both[1].host}`);
  const workloadId = `spiffe://${TD}/respread/workload`;
  ok(both[0].cli(['entry', 'create', '-parentID', agentId, '-spiffeID', workloadId, '-selector', `unix:uid:${UID}`]));
  const client = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
  clients.push(client);
  const w = recordWatch(client, 're-spread stream');
  await w.waitFor((ctx) => ctx.svids.some((s) => s.id.toString() === workloadId), 30_000, 0, 'first SVID');
  // At most every 2 s (1.5-2 s) the connection is replaced, to the other server: two moves, one each way.
  const moves = (): string[] => agent.log().split('\n').filter((l) => l.includes('moved the sync stream to spindle-server at'));
  await eventually(() => (moves().length >= 2 ? true : undefined), 20_000, `two moves between the servers:\n${agent.log().slice(-3000)}`);
  const targets = new Set(moves().map((l) => /moved the sync stream to spindle-server at (\S+)/.exec(l)![1]));
  assert.deepEqual([...targets].sort(), both.map((s) => `${s.host}:${s.port}`).sort(), 'the agent moved to each server');
  // Make-before-break: the sync stream was never lost, and updates still arrive by push.
  assert.doesNotMatch(agent.log(), /lost the server sync stream|the server closed the sync stream|could not open the sync stream/);
  const n = w.updates.length;
  const laterId = `spiffe://${TD}/respread/later`;
  const created = await serverCliAsync(both[1], ['entry', 'create', '-parentID', agentId, '-spiffeID', laterId, '-selector', `unix:uid:${UID}`]);
  assert.equal(created.status, 0, created.stderr);
  await w.waitFor((ctx) => ctx.svids.some((s) => s.id.toString() === laterId), 15_000, n, 'the entry created during the moves');
  assert.deepEqual(w.errors.map((e) => e.err.message), [], 'the workload stream got no error');
  assert.deepEqual(w.expiredServed, []);
});

// End to end: a real spindle-server process, its admin CLI, and agent API clients over real TLS.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { attestAgent, connectAgentApi, syncAuthorized, type AgentApiConnection } from '../agent/client/serverclient.js';
import type { SyncAuthorizedResponse } from '../proto/gen/spindle/agent/v1/agent.js';
import { parseSpiffeId, parseTrustDomain, type TrustDomain } from '../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair, type KeyPair } from '../spiffe/keys.js';
import { pemToCertificates, privateKeyToPem } from '../spiffe/pem.js';
import { BundleSet, parseBundle } from '../spiffe/bundle.js';
import { createCsr, parseCertificate, verifyX509Svid } from '../spiffe/x509/index.js';
import { validateJwtSvid } from '../spiffe/jwtsvid.js';
import { startServerProcess, type ServerProcess } from './support/serverproc.js';

const td: TrustDomain = parseTrustDomain('example.org');
let server: ServerProcess;

function ok(r: { status: number | null; stdout: string; stderr: string }): string {
  assert.equal(r.status, 0, `CLI failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function bundleCerts(): Buffer[] {
  return pemToCertificates(ok(server.cli(['bundle', 'show'])));
}

function newToken(extra: string[] = []): string {
  const m = /^Token: (\S+)$/m.exec(ok(server.cli(['token', 'generate', ...extra])));
  assert.ok(m, 'token generate prints "Token: <value>"');
  return m[1]!;
}

interface Agent {
  id: string;
  keys: KeyPair;
  chain: Buffer[];
  conn: AgentApiConnection;
}

async function attest(token: string): Promise<Agent> {
  const keys = await generateKeyPair();
  const boot = connectAgentApi({ address: { host: '127.0.0.1', port: server.port }, trustDomain: td, bundle: bundleCerts() });
  try {
    const res = await attestAgent(boot.client, { type: 'join_token', payload: Buffer.from(token), csr: createCsr(keys.privateKey) });
    const chain = res.svid.certChain;
    const conn = connectAgentApi({
      address: { host: '127.0.0.1', port: server.port },
      trustDomain: td,
      bundle: bundleCerts(),
      svid: { chain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) },
    });
    return { id: res.svid.spiffeId, keys, chain, conn };
  } finally {
    boot.close();
  }
}

function grpcCode(err: unknown): number | undefined {
  return (err as ServiceError).code;
}

/** Collects sync messages; `next()` resolves with the next one (or rejects on stream error). */
function follow(agent: Agent, req: Parameters<typeof syncAuthorized>[1] = {}) {
  const stream = syncAuthorized(agent.conn.client, req);
  const queue: SyncAuthorizedResponse[] = [];
  const waiters: Array<{ resolve: (m: SyncAuthorizedResponse) => void; reject: (e: unknown) => void }> = [];
  let error: unknown;
  stream.on('data', (m: SyncAuthorizedResponse) => {
    const w = waiters.shift();
    if (w) w.resolve(m);
    else queue.push(m);
  });
  stream.on('error', (e) => {
    error = e;
    for (const w of waiters.splice(0)) w.reject(e);
  });
  return {
    stream,
    next(timeoutMs = 5000): Promise<SyncAuthorizedResponse> {
      const m = queue.shift();
      if (m) return Promise.resolve(m);
      if (error) return Promise.reject(error);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no sync message within timeout')), timeoutMs);
        waiters.push({
          resolve: (v) => (clearTimeout(t), resolve(v)),
          reject: (e) => (clearTimeout(t), reject(e)),
        });
      });
    },
    close: () => stream.cancel(),
  };
}

before(async () => {
  server = await startServerProcess({ trustDomain: td });
});

after(async () => {
  await server?.stop();
});

describe('join token attestation', () => {
  test('an agent attests with a join token and gets an agent SVID that verifies against the bundle', async () => {
    const token = newToken();
    const agent = await attest(token);
    assert.equal(agent.id, `spiffe://example.org/spire/agent/join_token/${token}`);
    const bundles = new BundleSet([parseBundle(td, ok(server.cli(['bundle', 'show', '-format', 'spiffe'])))]);
    assert.equal(verifyX509Svid(agent.chain, bundles).id, agent.id);
    const list = ok(server.cli(['agent', 'list']));
    assert.match(list, new RegExp(`SPIFFE ID\\s+: ${agent.id.replace(/[/.]/g, '\\$&')}`));
    assert.match(list, /Attestation type\s+: join_token/);
    agent.conn.close();
  });

  test('a join token is single use: a second attestation is refused', async () => {
    const token = newToken();
    (await attest(token)).conn.close();
    await assert.rejects(attest(token), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED && /already been used|does not exist/.test((e as Error).message));
  });

  test('eight concurrent attestations with one token: exactly one agent', async () => {
    const token = newToken();
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => attest(token)));
    const won = results.filter((r) => r.status === 'fulfilled');
    assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
    for (const r of results) if (r.status === 'rejected') assert.equal(grpcCode(r.reason), status.PERMISSION_DENIED);
    for (const r of won) (r as PromiseFulfilledResult<Agent>).value.conn.close();
    const count = ok(server.cli(['agent', 'list', '-output', 'json']));
    assert.equal((JSON.parse(count) as { agents: Array<{ spiffeId: string }> }).agents.filter((a) => a.spiffeId.endsWith(token)).length, 1);
  });

  test('token variants (case, spaces, NUL) are refused and do not consume the real token', async () => {
    const token = newToken();
    for (const variant of [token.replace(/[a-f]/, (ch) => ch.toUpperCase()), ` ${token}`, `${token} `, `${token}\0`, token.slice(0, -1)]) {
      await assert.rejects(attest(variant), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED, JSON.stringify(variant));
    }
    (await attest(token)).conn.close();
  });

  test('an expired token is refused', async () => {
    const token = newToken(['-ttl', '1']);
    await new Promise((r) => setTimeout(r, 1100));
    await assert.rejects(attest(token), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED && /expired/.test((e as Error).message));
  });

  test('unauthenticated callers cannot sync or sign', async () => {
    const conn = connectAgentApi({ address: { host: '127.0.0.1', port: server.port }, trustDomain: td, bundle: bundleCerts() });
    await assert.rejects(
      new Promise((resolve, reject) => conn.client.batchNewX509Svid({ params: [] }, (err, res) => (err ? reject(err) : resolve(res)))),
      (e: unknown) => grpcCode(e) === status.UNAUTHENTICATED,
    );
    conn.close();
  });
});

describe('authorized entries, push and signing', () => {
  test('entries reach the agent: snapshot, then pushes on create and delete', async () => {
    const token = newToken(['-spiffeID', 'spiffe://example.org/node/a']);
    const agent = await attest(token);
    ok(server.cli(['entry', 'create', '-parentID', 'spiffe://example.org/node/a', '-spiffeID', 'spiffe://example.org/web', '-selector', 'unix:uid:1000']));
    const sync = follow(agent);
    const first = await sync.next();
    assert.equal(first.snapshot, true);
    // The alias entry that `token generate -spiffeID` made is parented by the agent ID, so the
    // agent holds it too (as in SPIRE); the workload entry comes through the alias.
    assert.deepEqual(first.entries.map((e) => e.spiffeId).sort(), ['spiffe://example.org/node/a', 'spiffe://example.org/web']);
    assert.equal(first.bundlesIncluded, true);
    assert.equal(first.bundles[0]!.trustDomain, 'example.org');

    const t0 = performance.now();
    const out = ok(server.cli(['entry', 'create', '-parentID', agent.id, '-spiffeID', 'spiffe://example.org/db', '-selector', 'unix:uid:1001', '-dns', 'db.local']));
    const pushed = await sync.next();
    const delay = performance.now() - t0;
    assert.equal(pushed.snapshot, false);
    assert.deepEqual(pushed.entries.map((e) => e.spiffeId), ['spiffe://example.org/db']);
    console.log(`# entry create -> push on the agent's sync stream (including CLI process start): ${delay.toFixed(0)} ms`);
    const id = /Entry ID\s+: (\S+)/.exec(out)![1]!;
    ok(server.cli(['entry', 'delete', '-entryID', id]));
    const removed = await sync.next();
    assert.deepEqual(removed.removedEntryIds, [id]);
    sync.close();
    agent.conn.close();
  });

  test('a reconnecting agent that lists what it holds gets only the difference', async () => {
    const agent = await attest(newToken());
    const a = JSON.parse(ok(server.cli(['entry', 'create', '-parentID', agent.id, '-spiffeID', 'spiffe://example.org/r/a', '-selector', 'unix:uid:1', '-output', 'json']))) as { results: Array<{ entry: { id: string } }> };
    const b = JSON.parse(ok(server.cli(['entry', 'create', '-parentID', agent.id, '-spiffeID', 'spiffe://example.org/r/b', '-selector', 'unix:uid:2', '-output', 'json']))) as { results: Array<{ entry: { id: string } }> };
    const s1 = follow(agent);
    const snap = await s1.next();
    assert.equal(snap.entries.length, 2);
    s1.close();
    ok(server.cli(['entry', 'delete', '-entryID', a.results[0]!.entry.id]));
    ok(server.cli(['entry', 'create', '-parentID', agent.id, '-spiffeID', 'spiffe://example.org/r/c', '-selector', 'unix:uid:3']));
    const s2 = follow(agent, {
      knownEntries: snap.entries.map((e) => ({ id: e.id, revisionNumber: e.revisionNumber })),
      knownBundleSequences: new Map(snap.bundles.map((bb) => [bb.trustDomain, bb.sequence])),
    });
    const diff = await s2.next();
    assert.equal(diff.snapshot, false);
    assert.deepEqual(diff.entries.map((e) => e.spiffeId), ['spiffe://example.org/r/c']);
    assert.deepEqual(diff.removedEntryIds, [a.results[0]!.entry.id]);
    assert.equal(diff.bundlesIncluded, false, 'an unchanged bundle is not resent');
    assert.ok(!diff.entries.some((e) => e.id === b.results[0]!.entry.id));
    s2.close();
    agent.conn.close();
  });

  test('CSRs asking for another identity, extra SANs or a CA still yield only the entry identity', async () => {
    const agent = await attest(newToken());
    const out = JSON.parse(ok(server.cli(['entry', 'create', '-parentID', agent.id, '-spiffeID', 'spiffe://example.org/payments', '-selector', 'unix:uid:7', '-dns', 'payments.local', '-output', 'json']))) as { results: Array<{ entry: { id: string } }> };
    const entryId = out.results[0]!.entry.id;
    const key = join(server.dir, 'evil.key');
    const keys = await generateKeyPair();
    writeFileSync(key, privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)), { mode: 0o600 });
    const evilCsr = execFileSync('openssl', [
      'req', '-new', '-key', key, '-subj', '/CN=admin', '-outform', 'DER',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'subjectAltName=URI:spiffe://example.org/admin,URI:spiffe://other.org/x,DNS:evil.example.com',
    ]);
    const res = await new Promise<import('../proto/gen/spindle/agent/v1/agent.js').BatchNewX509SVIDResponse>((resolve, reject) =>
      agent.conn.client.batchNewX509Svid(
        { params: [{ entryId, csr: evilCsr }, { entryId: 'not-mine', csr: createCsr(keys.privateKey) }] },
        (err, r) => (err ? reject(err) : resolve(r!)),
      ),
    );
    assert.equal(res.results[0]!.status!.code, 0);
    const leaf = parseCertificate(res.results[0]!.svid!.certChain[0]!);
    assert.deepEqual(leaf.uriSans, ['spiffe://example.org/payments']);
    assert.deepEqual(leaf.dnsSans, ['payments.local']);
    assert.equal(leaf.isCa, false);
    assert.equal(res.results[1]!.status!.code, status.PERMISSION_DENIED);
    assert.equal(res.results[1]!.svid, undefined);
    // And a JWT-SVID for the same entry.
    const jwt = await new Promise<import('../proto/gen/spindle/agent/v1/agent.js').NewJWTSVIDResponse>((resolve, reject) =>
      agent.conn.client.newJwtsvid({ entryId, audience: ['a1', 'a2'] }, (err, r) => (err ? reject(err) : resolve(r!))),
    );
    const bundles = new BundleSet([parseBundle(td, ok(server.cli(['bundle', 'show', '-format', 'spiffe'])))]);
    const v = await validateJwtSvid(jwt.svid!.token, { audience: 'a2', bundles });
    assert.equal(v.id, parseSpiffeId('spiffe://example.org/payments'));
    agent.conn.close();
  });
});

describe('authorization: an agent is signed only its own entries', () => {
  type Batch = import('../proto/gen/spindle/agent/v1/agent.js').BatchNewX509SVIDResponse;
  type Jwt = import('../proto/gen/spindle/agent/v1/agent.js').NewJWTSVIDResponse;
  const batch = (agent: Agent, entryId: string, csr: Buffer): Promise<Batch> =>
    new Promise((resolve, reject) => agent.conn.client.batchNewX509Svid({ params: [{ entryId, csr }] }, (err, r) => (err ? reject(err) : resolve(r!))));
  const jwt = (agent: Agent, entryId: string): Promise<Jwt> =>
    new Promise((resolve, reject) => agent.conn.client.newJwtsvid({ entryId, audience: ['authz'] }, (err, r) => (err ? reject(err) : resolve(r!))));
  const entryFor = (parentId: string, spiffeId: string): string => {
    const out = JSON.parse(ok(server.cli(['entry', 'create', '-parentID', parentId, '-spiffeID', spiffeId, '-selector', 'unix:uid:7', '-output', 'json']))) as { results: Array<{ entry: { id: string } }> };
    return out.results[0]!.entry.id;
  };

  /**
   * Two agents, each with an existing entry of its own. Asked for the other agent's entry, each
   * gets PERMISSION_DENIED and no SVID, with and without its sync stream open (the server
   * answers from the tracked authorization set when a stream is open, from the index when not);
   * the owner of each entry is signed it (the control).
   */
  for (const streamOpen of [false, true]) {
    test(`BatchNewX509SVID and NewJWTSVID for another agent's entry: PERMISSION_DENIED, no SVID (sync stream ${streamOpen ? 'open' : 'closed'})`, async () => {
      const a = await attest(newToken());
      const b = await attest(newToken());
      const mine = entryFor(a.id, `spiffe://example.org/authz/a-${streamOpen}`);
      const theirs = entryFor(b.id, `spiffe://example.org/authz/b-${streamOpen}`);
      const streams = streamOpen ? [follow(a), follow(b)] : [];
      for (const s of streams) await s.next();
      const keys = await generateKeyPair();
      const csr = createCsr(keys.privateKey);

      const refused = await batch(a, theirs, csr);
      assert.equal(refused.results.length, 1);
      assert.equal(refused.results[0]!.status!.code, status.PERMISSION_DENIED, refused.results[0]!.status!.message);
      assert.equal(refused.results[0]!.svid, undefined, 'no SVID for an entry of another agent');
      await assert.rejects(jwt(a, theirs), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED && /not authorized/.test((e as Error).message));
      // The other way round too.
      assert.equal((await batch(b, mine, csr)).results[0]!.status!.code, status.PERMISSION_DENIED);
      await assert.rejects(jwt(b, mine), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED);

      // Control: each agent is signed its own entry.
      const own = await batch(a, mine, csr);
      assert.equal(own.results[0]!.status!.code, 0);
      assert.deepEqual(parseCertificate(own.results[0]!.svid!.certChain[0]!).uriSans, [`spiffe://example.org/authz/a-${streamOpen}`]);
      assert.equal((await jwt(b, theirs)).svid!.spiffeId, `spiffe://example.org/authz/b-${streamOpen}`);
      for (const s of streams) s.close();
      a.conn.close();
      b.conn.close();
    });
  }

  test('a sync snapshot holds only the agent\'s own entries', async () => {
    const a = await attest(newToken());
    const b = await attest(newToken());
    entryFor(a.id, 'spiffe://example.org/authz/sync-a');
    entryFor(b.id, 'spiffe://example.org/authz/sync-b');
    const s = follow(a);
    const snap = await s.next();
    assert.deepEqual(snap.entries.map((e) => e.spiffeId), ['spiffe://example.org/authz/sync-a']);
    s.close();
    a.conn.close();
    b.conn.close();
  });
});

describe('agent lifecycle', () => {
  test('after renewal the superseded agent SVID is refused', async () => {
    const agent = await attest(newToken());
    const keys = await generateKeyPair();
    const renewed = await new Promise<import('../proto/gen/spindle/agent/v1/agent.js').RenewAgentResponse>((resolve, reject) =>
      agent.conn.client.renewAgent({ csr: createCsr(keys.privateKey) }, (err, r) => (err ? reject(err) : resolve(r!))),
    );
    assert.equal(renewed.svid!.spiffeId, agent.id);
    const fresh = connectAgentApi({
      address: { host: '127.0.0.1', port: server.port },
      trustDomain: td,
      bundle: bundleCerts(),
      svid: { chain: renewed.svid!.certChain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) },
    });
    const first = follow({ ...agent, conn: fresh });
    await first.next();
    first.close();
    const old = follow(agent);
    await assert.rejects(old.next(), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED && /superseded/.test((e as Error).message));
    fresh.close();
    agent.conn.close();
  });

  test('banning an agent ends its stream and refuses it; evicting refuses it too', async () => {
    const banned = await attest(newToken());
    const sync = follow(banned);
    await sync.next();
    ok(server.cli(['agent', 'ban', '-spiffeID', banned.id]));
    await assert.rejects(sync.next(), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED && /banned/.test((e as Error).message));
    await assert.rejects(follow(banned).next(), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED);

    const evicted = await attest(newToken());
    ok(server.cli(['agent', 'evict', '-spiffeID', evicted.id]));
    await assert.rejects(follow(evicted).next(), (e: unknown) => grpcCode(e) === status.PERMISSION_DENIED && /evicted|not attested/.test((e as Error).message));
    banned.conn.close();
    evicted.conn.close();
  });
});

describe('files and restart', () => {
  test('key files are 0600, the data dir is private, the admin socket refuses other users', () => {
    for (const f of ['keys/x509-CA-A.key', 'keys/JWT-Signer-A.key', 'datastore.sqlite3']) {
      assert.equal(statSync(join(server.dataDir, f)).mode & 0o777, 0o600, f);
    }
    assert.equal(statSync(join(server.dataDir, 'keys')).mode & 0o077, 0);
    assert.equal(statSync(server.socketPath).mode & 0o007, 0, 'no access for others on the socket');
    const other = server.cli(['entry', 'count'], { uid: 65534, gid: 65534 });
    assert.notEqual(other.status, 0);
    assert.match(other.stderr, /permission|EACCES/i);
  });

  test('a restart keeps entries, agents and CA keys', async () => {
    const agent = await attest(newToken());
    ok(server.cli(['entry', 'create', '-parentID', agent.id, '-spiffeID', 'spiffe://example.org/persist', '-selector', 'unix:uid:9']));
    const bundleBefore = ok(server.cli(['bundle', 'show']));
    const entriesBefore = ok(server.cli(['entry', 'count']));
    const caKeyBefore = readFileSync(join(server.dataDir, 'keys', 'x509-CA-A.key'));
    assert.equal(await server.stop(), 0, 'clean exit on SIGTERM');
    server = await startServerProcess({ dir: server.dir, trustDomain: td, port: server.port });
    assert.equal(ok(server.cli(['bundle', 'show'])), bundleBefore);
    assert.equal(ok(server.cli(['entry', 'count'])), entriesBefore);
    assert.deepEqual(readFileSync(join(server.dataDir, 'keys', 'x509-CA-A.key')), caKeyBefore);
    // The agent's SVID from before the restart is still accepted.
    const reconnect = connectAgentApi({
      address: { host: '127.0.0.1', port: server.port },
      trustDomain: td,
      bundle: bundleCerts(),
      svid: { chain: agent.chain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(agent.keys.privateKey)) },
    });
    const s = follow({ ...agent, conn: reconnect });
    const snap = await s.next();
    assert.deepEqual(snap.entries.map((e) => e.spiffeId), ['spiffe://example.org/persist']);
    s.close();
    reconnect.close();
    agent.conn.close();
  });
});

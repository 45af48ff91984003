// End to end: real spindle-server and spindle-agent processes, workloads of different uids
// (spawned as other users: the tests run as root in CI) talking to the agent's Workload API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Metadata, credentials, status, type ClientReadableStream, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { SpiffeWorkloadAPIClient, type X509SVIDResponse } from '../proto/gen/workload/workload.js';
import { SecretDiscoveryServiceClient } from '../proto/gen/envoy/service/secret/v3/sds.js';
import { DiscoveryRequest, type DiscoveryResponse } from '../proto/gen/envoy/service/discovery/v3/discovery.js';
import { Secret } from '../proto/gen/envoy/extensions/transport_sockets/tls/v3/secret.js';
import { createWorkloadApiClient, type WorkloadApiClient, type WorkloadApiError } from '../spiffe/workloadapi/index.js';
import { generateJoinToken, serverCliAsync, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { repoRoot, startServerProcess, type ServerProcess } from './support/serverproc.js';
import { forOtherUid, needsRoot } from './support/otheruid.js';
import { recordWatch, serialOf } from './support/watch.js';

const TD = 'example.org';
const ALIAS = `spiffe://${TD}/e2e/node`;
const MY_UID = process.getuid!();
const OTHER_UID = 65534; // nobody
const UNREGISTERED_UID = 65533; // no passwd entry, no registration entry
const MY_ID = `spiffe://${TD}/e2e/uid-${MY_UID}`;
const OTHER_ID = `spiffe://${TD}/e2e/nobody`;
const MY_TTL = 10; // seconds: rotation every ~5 s on every stream of this uid
const isRoot = MY_UID === 0;
const SERVER_DOWN_MS = 2000;

let server: ServerProcess;
let agent: AgentProcess;
let workloadScript: string;
let myEntryId: string;
const clients: WorkloadApiClient[] = [];

function ok(r: { status: number | null; stdout: string; stderr: string }, what = 'CLI'): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function entryIdOf(out: string): string {
  const m = /^Entry ID\s+:\s+(\S+)$/m.exec(out);
  assert.ok(m, `entry create prints "Entry ID : <id>":\n${out}`);
  return m[1]!;
}

function client(): WorkloadApiClient {
  const c = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
  clients.push(c);
  return c;
}

/**
 * Runs node as `uid` (a separate process: the agent attests it from the kernel) with `args`
 * (a script file, or `-e <code>`) and the agent address, and resolves with the JSON object it
 * prints last.
 */
function runNodeAs<T>(uid: number, args: string[], what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args, agent.address], { uid, gid: uid, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' } });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as T);
      } catch {
        reject(new Error(`${what} as uid ${uid} exited ${code} without a result:\nstdout: ${out}\nstderr: ${err}`));
      }
    });
  });
}

/** The workload script as `uid`: its X.509 identity, or the error it got. */
function runWorkloadAs(uid: number): Promise<{ id?: string; uid?: number; code?: number; codeName?: string; message?: string }> {
  return runNodeAs(uid, [workloadScript], 'workload');
}

before(async () => {
  server = await startServerProcess({ trustDomain: TD });
  const token = generateJoinToken(server, ALIAS);
  myEntryId = entryIdOf(ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', MY_ID, '-selector', `unix:uid:${MY_UID}`, '-x509SVIDTTL', String(MY_TTL)]), 'entry create (own uid)'));
  ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', OTHER_ID, '-selector', `unix:uid:${OTHER_UID}`]), 'entry create (nobody)');
  agent = await startAgentProcess({ server, joinToken: token });

  // The workload run as other uids: a file they can read that imports the SDK from dist (from
  // a readable copy when other users cannot enter this checkout).
  const sdkPath = join(repoRoot, 'dist', 'spiffe', 'workloadapi', 'index.js');
  const sdk = pathToFileURL(isRoot ? forOtherUid(sdkPath) : sdkPath).href;
  workloadScript = join(agent.dir, 'workload.mjs');
  writeFileSync(
    workloadScript,
    `import { createWorkloadApiClient, statusName } from ${JSON.stringify(sdk)};
const c = createWorkloadApiClient({ address: process.argv[2] });
try {
  const ctx = await c.fetchX509Context({ timeoutMs: 10000 });
  console.log(JSON.stringify({ id: ctx.defaultSvid.id.toString(), uid: process.getuid() }));
} catch (err) {
  console.log(JSON.stringify({ code: err.code, codeName: statusName(err.code), message: err.message }));
} finally {
  c.close();
}
`,
  );
  chmodSync(workloadScript, 0o644);
});

after(async () => {
  for (const c of clients) c.close();
  await agent?.stop();
  await server?.stop();
  if (process.env['SPINDLE_E2E_KEEP']) {
    if (agent) writeFileSync(join(agent.dir, 'agent.log'), agent.log());
    if (server) writeFileSync(join(server.dir, 'server.log'), server.log());
    console.log(`# kept ${agent?.dir} and ${server?.dir}`);
  } else {
    for (const d of [agent?.dir, server?.dir]) if (d) rmSync(d, { recursive: true, force: true });
  }
});

describe('workload identities by uid', () => {
  test(`a workload of uid ${MY_UID} and one of uid ${OTHER_UID} each get their own identity`, async () => {
    needsRoot('spawning a workload as another uid');
    const [mine, theirs] = await Promise.all([client().fetchX509Context(), runWorkloadAs(OTHER_UID)]);
    assert.equal(mine.defaultSvid.id.toString(), MY_ID);
    assert.deepEqual(mine.svids.map((s) => s.id.toString()), [MY_ID]);
    assert.equal(theirs.uid, OTHER_UID);
    assert.equal(theirs.id, OTHER_ID, `uid ${OTHER_UID} workload: ${JSON.stringify(theirs)}`);
  });

  test(`a uid with no entry (${UNREGISTERED_UID}) gets PERMISSION_DENIED`, async () => {
    needsRoot('spawning a workload as another uid');
    const r = await runWorkloadAs(UNREGISTERED_UID);
    assert.equal(r.codeName, 'PERMISSION_DENIED', JSON.stringify(r));
    assert.equal(r.code, status.PERMISSION_DENIED);
  });
});

describe('authorization: a workload gets only its own identities', () => {
  /** As `uid`: FetchJWTSVID for `spiffeId` through the SDK; prints the IDs it got or the error. */
  function fetchJwtAs(uid: number, spiffeId: string): Promise<{ ids?: string[]; code?: number; message?: string }> {
    const sdk = pathToFileURL(forOtherUid(join(repoRoot, 'dist', 'spiffe', 'workloadapi', 'index.js'))).href;
    const script = `import { createWorkloadApiClient } from ${JSON.stringify(sdk)};
const c = createWorkloadApiClient({ address: process.argv.at(-1) });
try {
  const svids = await c.fetchJwtSvid({ audience: ['authz-e2e'], spiffeId: process.argv.at(-2) }, { timeoutMs: 10000 });
  console.log(JSON.stringify({ ids: svids.map((s) => s.id.toString()) }));
} catch (err) {
  console.log(JSON.stringify({ code: err.code, message: err.message }));
} finally {
  c.close();
}
`;
    return runNodeAs(uid, ['--input-type=module', '-e', script, spiffeId], 'JWT workload');
  }

  test(`FetchJWTSVID for the other uid's SPIFFE ID: PERMISSION_DENIED both ways; each uid gets its own by ID`, async () => {
    needsRoot('running a workload as uid 65534');
    // Root asks for nobody's identity, and nobody for root's.
    await assert.rejects(client().fetchJwtSvid({ audience: ['authz-e2e'], spiffeId: OTHER_ID }), (err: WorkloadApiError) => err.code === status.PERMISSION_DENIED);
    const theirs = await fetchJwtAs(OTHER_UID, MY_ID);
    assert.equal(theirs.code, status.PERMISSION_DENIED, JSON.stringify(theirs));
    assert.equal(theirs.ids, undefined);
    // Controls: each gets its own identity when asking for it by ID.
    assert.deepEqual((await client().fetchJwtSvid({ audience: ['authz-e2e'], spiffeId: MY_ID })).map((s) => s.id.toString()), [MY_ID]);
    assert.deepEqual((await fetchJwtAs(OTHER_UID, OTHER_ID)).ids, [OTHER_ID]);
  });

  test('SDS: a secret named after another workload\'s SPIFFE ID is refused; the caller\'s own is served', async () => {
    const sds = new SecretDiscoveryServiceClient(`unix:${agent.socketPath}`, credentials.createInsecure());
    try {
      const fetch = (names: string[]): Promise<DiscoveryResponse> =>
        new Promise((resolve, reject) => sds.fetchSecrets(DiscoveryRequest.fromPartial({ resourceNames: names }), (err, r) => (err ? reject(err) : resolve(r!))));
      for (const names of [[OTHER_ID], [MY_ID, OTHER_ID]]) {
        await assert.rejects(fetch(names), (err: ServiceError) => err.code === status.INVALID_ARGUMENT && err.details.includes(OTHER_ID), JSON.stringify(names));
      }
      const own = await fetch([MY_ID]);
      assert.equal(own.resources.length, 1);
      const secret = Secret.decode(own.resources[0]!.value);
      assert.equal(secret.name, MY_ID);
      assert.equal(secret.type?.$case, 'tlsCertificate');
      assert.ok(secret.type?.$case === 'tlsCertificate' && secret.type.value.privateKey, 'the caller\'s own SVID comes with its key');
    } finally {
      sds.close();
    }
  });
});

describe('security header', () => {
  test('calls without the workload.spiffe.io header get INVALID_ARGUMENT (raw grpc-js client)', async () => {
    const raw = new SpiffeWorkloadAPIClient(`unix:${agent.socketPath}`, credentials.createInsecure());
    try {
      const streamStatus = await new Promise<StatusObject>((resolve) => {
        const call = raw.fetchX509Svid({}, new Metadata(), { deadline: Date.now() + 10_000 });
        call.on('data', () => assert.fail('no SVID may be sent without the security header'));
        call.on('error', () => {});
        call.on('status', resolve);
      });
      assert.equal(streamStatus.code, status.INVALID_ARGUMENT, streamStatus.details);
      const unaryErr = await new Promise<ServiceError | null>((resolve) => {
        raw.fetchJwtsvid({ audience: ['x'], spiffeId: '' }, new Metadata(), { deadline: Date.now() + 10_000 }, (err) => resolve(err));
      });
      assert.equal(unaryErr?.code, status.INVALID_ARGUMENT, unaryErr?.details);
      // A wrong value is as bad as none.
      const md = new Metadata();
      md.set('workload.spiffe.io', 'yes');
      const wrongErr = await new Promise<ServiceError | null>((resolve) => {
        raw.fetchJwtsvid({ audience: ['x'], spiffeId: '' }, md, { deadline: Date.now() + 10_000 }, (err) => resolve(err));
      });
      assert.equal(wrongErr?.code, status.INVALID_ARGUMENT, wrongErr?.details);
    } finally {
      raw.close();
    }
  });
});

describe('JWT-SVIDs', () => {
  test('a JWT-SVID with two audiences validates through the agent', async () => {
    const c = client();
    const [jwt, ...rest] = await c.fetchJwtSvid({ audience: ['e2e-one', 'e2e-two'] });
    assert.equal(rest.length, 0);
    assert.ok(jwt);
    assert.equal(jwt.id.toString(), MY_ID);
    assert.deepEqual([...jwt.audience].sort(), ['e2e-one', 'e2e-two']);
    for (const aud of ['e2e-one', 'e2e-two']) {
      const v = await c.validateJwtSvid(jwt.token, aud);
      assert.equal(v.spiffeId.toString(), MY_ID);
      assert.equal(v.claims['sub'], MY_ID);
    }
    await assert.rejects(c.validateJwtSvid(jwt.token, 'someone-else'), (err: WorkloadApiError) => err.code === status.INVALID_ARGUMENT);
  });

  test('more than 32 audiences is INVALID_ARGUMENT naming the limit (not UNAVAILABLE, which clients retry forever)', async () => {
    const c = client();
    const audience = Array.from({ length: 33 }, (_, i) => `e2e-aud-${i}`);
    await assert.rejects(c.fetchJwtSvid({ audience }), (err: WorkloadApiError) => {
      assert.equal(err.code, status.INVALID_ARGUMENT, err.message);
      assert.match(err.message, /too many audiences: 33 distinct values, at most 32 per JWT-SVID request/);
      return true;
    });
    // At the limit the server signs it.
    const [jwt] = await c.fetchJwtSvid({ audience: audience.slice(0, 32) });
    assert.equal(jwt?.audience.length, 32);
  });
});

describe('streams', () => {
  test(`rotation shows on an open stream (X509-SVID TTL ${MY_TTL} s)`, async () => {
    const w = recordWatch(client());
    try {
      const first = await w.waitFor(() => true, 10_000, 0, 'first message');
      // Two rotations on the same stream: the second one's timing is a full renewal period.
      const seen = [first];
      for (let i = 0; i < 2; i++) {
        const prev = seen.at(-1)!;
        const prevSerial = serialOf(prev.ctx);
        seen.push(await w.waitFor((ctx) => serialOf(ctx) !== prevSerial, 12_000, prev.index + 1, `rotation ${i + 1}`));
      }
      const certs = seen.map((u) => new X509Certificate(u.ctx.defaultSvid.certificates[0]!));
      const wall = (at: number): number => Date.now() - (performance.now() - at);
      const notes: string[] = [];
      for (let i = 1; i < seen.length; i++) {
        const old = certs[i - 1]!;
        const fresh = certs[i]!;
        assert.equal(seen[i]!.ctx.defaultSvid.id.toString(), MY_ID);
        assert.ok(wall(seen[i]!.at) < Date.parse(old.validTo), `rotation ${i}: renewed before the old SVID expired`);
        assert.ok(Date.parse(fresh.validTo) > Date.parse(old.validTo), `rotation ${i}: the new SVID outlives the old one`);
        // notBefore is backdated 10 s: issued at validFrom + 10 s, valid for the TTL from then.
        const issued = Date.parse(old.validFrom) + 10_000;
        notes.push(`${fresh.serialNumber.slice(0, 8)}… at ${((wall(seen[i]!.at) - issued) / 1000).toFixed(1)} s of the old SVID's ${((Date.parse(old.validTo) - issued) / 1000).toFixed(0)} s`);
      }
      console.log(`# rotation on one open stream: ${notes.join('; ')}; interval between the two rotations ${((seen[2]!.at - seen[1]!.at) / 1000).toFixed(1)} s`);
      assert.equal(w.errors.length, 0, w.errors.map((e) => e.err.message).join('; '));
    } finally {
      w.close();
    }
  });

  test('entry create and delete reach an open stream by push, not by the feed\'s 5 s fallback poll', async () => {
    const w = recordWatch(client());
    const secondId = `spiffe://${TD}/e2e/uid-${MY_UID}-second`;
    // Measured from the moment the CLI's write was acknowledged. The server also re-reads its
    // change feed every 5 s as a fallback: a change that only arrived that way would take 0-5 s,
    // so six changes all within 1.5 s of their acknowledgement happen by chance once in ~1,400
    // runs; a push takes tens of milliseconds.
    const PUSH_BOUND_MS = 1500;
    const delays: string[] = [];
    try {
      let last = await w.waitFor(() => true, 10_000, 0, 'first message');
      assert.equal(last.ctx.svids.length, 1);
      for (let round = 0; round < 3; round++) {
        const created = await serverCliAsync(server, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', secondId, '-selector', `unix:uid:${MY_UID}`]);
        const ackCreate = performance.now();
        const entryId = entryIdOf(ok(created, 'entry create'));
        const withTwo = await w.waitFor((ctx) => ctx.svids.length === 2, 10_000, last.index + 1, 'update with 2 SVIDs');
        assert.deepEqual(withTwo.ctx.svids.map((s) => s.id.toString()), [MY_ID, secondId], 'the default identity stays first');

        ok(await serverCliAsync(server, ['entry', 'delete', '-entryID', entryId]), 'entry delete');
        const ackDelete = performance.now();
        last = await w.waitFor((ctx) => ctx.svids.length === 1, 10_000, withTwo.index + 1, 'update with 1 SVID');
        assert.equal(last.ctx.defaultSvid.id.toString(), MY_ID);

        // The update may beat the CLI's own exit (then the delay is negative: pushed before the CLI returned).
        const createDelay = withTwo.at - ackCreate;
        const deleteDelay = last.at - ackDelete;
        delays.push(`${createDelay.toFixed(0)}/${deleteDelay.toFixed(0)}`);
        assert.ok(createDelay < PUSH_BOUND_MS, `create reached the stream ${createDelay.toFixed(0)} ms after the CLI returned`);
        assert.ok(deleteDelay < PUSH_BOUND_MS, `delete reached the stream ${deleteDelay.toFixed(0)} ms after the CLI returned`);
      }
      console.log(`# entry create/delete -> open stream, ms after the CLI returned: ${delays.join(', ')}`);
      assert.equal(w.errors.length, 0, w.errors.map((e) => e.err.message).join('; '));
    } finally {
      w.close();
    }
  });
});

describe('restarts', () => {
  test('the agent resumes after a restart without a new join token', async () => {
    const idOf = (log: string): string | undefined => /agent_id=("?)(spiffe:\/\/[^\s"]+)\1/.exec(log.split('\n').find((l) => l.includes('spindle-agent is ready')) ?? '')?.[2];
    const before = idOf(agent.log());
    assert.ok(before?.startsWith(`spiffe://${TD}/spire/agent/join_token/`), `agent ID in the ready line:\n${agent.log().slice(-1500)}`);
    assert.equal(statSync(join(agent.dataDir, 'agent_svid.key')).mode & 0o777, 0o600, 'the agent key is 0600');
    assert.equal(await agent.stop('SIGTERM'), 0, `agent exit status after SIGTERM:\n${agent.log().slice(-2000)}`);
    agent = await startAgentProcess({ server, dir: agent.dir });
    assert.equal(idOf(agent.log()), before, 'same agent identity after the restart');
    const ctx = await client().fetchX509Context();
    assert.equal(ctx.defaultSvid.id.toString(), MY_ID);
  });

  test('an open Workload API stream survives a server restart and still receives entry changes', async () => {
    // A raw stream: a reconnecting SDK watch would hide a stream the agent ended.
    const raw = new SpiffeWorkloadAPIClient(`unix:${agent.socketPath}`, credentials.createInsecure());
    const md = new Metadata();
    md.set('workload.spiffe.io', 'true');
    const call: ClientReadableStream<X509SVIDResponse> = raw.fetchX509Svid({}, md);
    const messages: Array<{ at: number; ids: string[] }> = [];
    let ended: StatusObject | undefined;
    const waiters: Array<() => void> = [];
    call.on('data', (m: X509SVIDResponse) => {
      messages.push({ at: performance.now(), ids: m.svids.map((s) => s.spiffeId) });
      for (const f of waiters.splice(0)) f();
    });
    call.on('error', () => {});
    call.on('status', (s: StatusObject) => {
      ended = s;
      for (const f of waiters.splice(0)) f();
    });
    const waitFor = (pred: (ids: string[]) => boolean, timeoutMs: number, what: string): Promise<{ at: number; ids: string[] }> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms (${messages.length} messages)`)), timeoutMs);
        const check = (): void => {
          const m = messages.find((x) => pred(x.ids));
          if (m) {
            clearTimeout(timer);
            return resolve(m);
          }
          if (ended) {
            clearTimeout(timer);
            return reject(new Error(`the stream ended: ${status[ended.code]} ${ended.details}`));
          }
          waiters.push(check);
        };
        check();
      });
    const thirdId = `spiffe://${TD}/e2e/after-server-restart`;
    try {
      await waitFor((ids) => ids.length === 1, 10_000, 'first message');
      const tStop = performance.now();
      await server.stop('SIGTERM');
      // Down long enough for the agent to fail a reconnect or two (and back off).
      await new Promise((r) => setTimeout(r, SERVER_DOWN_MS));
      server = await startServerProcess({ dir: server.dir, port: server.port, trustDomain: TD });
      const restartMs = performance.now() - tStop;
      const t0 = performance.now();
      ok(await serverCliAsync(server, ['entry', 'create', '-parentID', ALIAS, '-spiffeID', thirdId, '-selector', `unix:uid:${MY_UID}`]), 'entry create after restart');
      const got = await waitFor((ids) => ids.includes(thirdId), 30_000, 'the new entry on the same stream');
      console.log(`# server down and restarted in ${restartMs.toFixed(0)} ms; the entry created afterwards reached the same open stream ${(got.at - t0).toFixed(0)} ms after the CLI call`);
      assert.equal(ended, undefined, 'the stream stayed open');
      assert.match(agent.log(), /lost the server sync stream/, 'the agent says it lost the server');
      assert.deepEqual(got.ids, [MY_ID, thirdId], 'the default identity stays first');
    } finally {
      call.cancel();
      raw.close();
    }
  });
});

describe('identity loss (last: it removes this uid\'s entries)', () => {
  test('a caller that loses every identity has its open stream ended with PERMISSION_DENIED', async () => {
    const c = client();
    const w = recordWatch(c);
    try {
      const first = await w.waitFor(() => true, 10_000, 0, 'first message');
      ok(await serverCliAsync(server, ['entry', 'delete', '-entryID', myEntryId]), 'entry delete');
      const left = ok(await serverCliAsync(server, ['entry', 'show', '-selector', `unix:uid:${MY_UID}`]), 'entry show');
      for (const id of [...left.matchAll(/^Entry ID\s+:\s+(\S+)$/gm)].map((m) => m[1]!)) ok(await serverCliAsync(server, ['entry', 'delete', '-entryID', id]), 'entry delete');
      const err = await Promise.race([w.done, new Promise<'open'>((r) => setTimeout(() => r('open'), 10_000))]);
      assert.notEqual(err, 'open', 'the stream ended');
      assert.equal((err as WorkloadApiError | undefined)?.code, status.PERMISSION_DENIED, (err as Error | undefined)?.message);
      assert.ok(w.updates.slice(first.index).every((u) => u.ctx.svids.length > 0), 'never an empty svids list');
      await assert.rejects(c.fetchX509Context(), (e: WorkloadApiError) => e.code === status.PERMISSION_DENIED);
      await assert.rejects(c.fetchJwtSvid({ audience: ['x'] }), (e: WorkloadApiError) => e.code === status.PERMISSION_DENIED);
    } finally {
      w.close();
    }
  });
});

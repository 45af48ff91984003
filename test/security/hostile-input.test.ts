// Hostile input against real processes: malformed protobuf, truncated frames, oversized
// messages, stream floods, slow clients and a fuzz run, on the Workload API + SDS (agent Unix
// socket), the agent API (TCP, TLS) and the admin API (Unix socket). Each test asserts that the
// processes stay up, that the offending call gets a clear status, and that a well-behaved client
// running at the same time (cluster.canary(), another connection) keeps getting answers in time.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { JWTSVIDRequest, X509SVIDRequest } from '../../proto/gen/workload/workload.js';
import { DiscoveryRequest } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { GetBundleRequest, SyncAuthorizedRequest } from '../../proto/gen/spindle/agent/v1/agent.js';
import { CountEntriesRequest, ListEntriesRequest } from '../../proto/gen/spindle/admin/v1/admin.js';
import { startSecurityCluster, SECRET_TYPE_URL, type Canary, type SecurityCluster } from './fuzz/cluster.js';
import { serverCliAsync } from '../support/agentproc.js';
import { FLOOD_SCRIPT, type FloodResult, type FloodSpec } from './fuzz/flood.js';
import { describeFailures, runFuzz } from './fuzz/index.js';
import { codeName, connectRaw, frame, rawCall, type RawTarget } from './fuzz/wire.js';

/**
 * The slowest answer the well-behaved client may see while an attack runs (2 cores; measured
 * worst 1.3 s, usually under 0.1 s).
 */
const CANARY_BOUND_MS = 5000;
const HEADER = { 'workload.spiffe.io': 'true' };
const OK = 0;
const INTERNAL = 13;
const RESOURCE_EXHAUSTED = 8;

let c: SecurityCluster;

before(async () => {
  c = await startSecurityCluster();
});
after(async () => {
  await c?.stop();
});

async function withCanary<T>(what: string, attack: () => Promise<T>): Promise<T> {
  const canary: Canary = c.canary();
  let result: T;
  try {
    result = await attack();
  } finally {
    const stats = await canary.stop();
    console.log(`# ${what}: well-behaved client made ${stats.calls} calls, slowest per API (ms): ${JSON.stringify(Object.fromEntries(Object.entries(stats.maxMs).map(([k, v]) => [k, Math.round(v)])))}`);
    assert.deepEqual(stats.errors, [], `the well-behaved client saw errors during ${what}`);
    assert.ok(stats.calls >= 4, `the well-behaved client made only ${stats.calls} calls during ${what}`);
    for (const [api, ms] of Object.entries(stats.maxMs)) assert.ok(ms < CANARY_BOUND_MS, `${api} answered the well-behaved client in ${ms.toFixed(0)} ms during ${what}`);
  }
  await c.probe();
  return result;
}

function runFlood(spec: FloodSpec): Promise<FloodResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FLOOD_SCRIPT, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('close', (code) => {
      if (code !== 0) return reject(new Error(`flooder exited ${code}: ${err}`));
      resolve(JSON.parse(out) as FloodResult);
    });
  });
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

interface Api {
  name: string;
  target: () => RawTarget;
  path: string;
  headers: Record<string, string>;
  /** A valid request and the code it gets. */
  valid: Uint8Array;
  validCode: number | 'message';
  maxReceive: number;
  bidi?: boolean;
}

const apis = (): Api[] => [
  { name: 'Workload API', target: () => c.raw.workload, path: '/SpiffeWorkloadAPI/FetchJWTSVID', headers: HEADER, valid: JWTSVIDRequest.encode({ audience: ['a'], spiffeId: '' }).finish(), validCode: OK, maxReceive: 64 * 1024 },
  {
    name: 'SDS',
    target: () => c.raw.workload,
    path: '/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets',
    headers: {},
    valid: DiscoveryRequest.encode({ versionInfo: '', node: undefined, resourceNames: ['ROOTCA'], typeUrl: SECRET_TYPE_URL, responseNonce: '', errorDetail: undefined }).finish(),
    validCode: OK,
    maxReceive: 64 * 1024,
  },
  { name: 'agent API', target: () => c.raw.agent, path: '/spindle.agent.v1.AgentAPI/GetBundle', headers: {}, valid: GetBundleRequest.encode({}).finish(), validCode: OK, maxReceive: 8 * 1024 * 1024 },
  { name: 'admin API', target: () => c.raw.admin, path: '/spindle.admin.v1.EntryService/CountEntries', headers: {}, valid: CountEntriesRequest.encode({ filter: undefined }).finish(), validCode: OK, maxReceive: 4 * 1024 * 1024 },
];

describe('malformed, truncated and oversized messages', () => {
  test('every API answers each with a clear status, keeps the connection usable, and other clients are unaffected', async () => {
    await withCanary('malformed/truncated/oversized messages', async () => {
      for (const api of apis()) {
        const s = connectRaw(api.target());
        try {
          const call = (body: Buffer[]) => rawCall(s, { path: api.path, headers: api.headers, body, timeoutMs: 10_000 });
          const show = (what: string, r: { code: number | undefined; details: string; failure?: string }) => `${api.name} ${what}: ${codeName(r.code)} ${JSON.stringify(r.details)} ${r.failure ?? ''}`;

          // Not protobuf at all: a field tag with wire type 7, a length running past the end.
          for (const junk of [Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]), Buffer.from([0x0f])]) {
            const r = await call([frame(junk)]);
            assert.equal(r.code, INTERNAL, show(`malformed ${junk.toString('hex')}`, r));
            assert.match(r.details, /Error deserializing request/, show('malformed', r));
          }
          // Truncated frame: the prefix announces 100 bytes, 2 arrive, then the request ends.
          const truncated = await call([frame(Buffer.from([0x0a, 0x00]), { declaredLength: 100 })]);
          assert.notEqual(truncated.code, undefined, show('truncated', truncated));
          assert.notEqual(truncated.code, OK, show('truncated', truncated));
          assert.match(truncated.details, /no request message/, show('truncated', truncated));
          // Oversized: one byte over the server's receive limit, and a prefix claiming 4 GiB
          // (refused from the prefix alone: the server must not wait for or buffer 4 GiB).
          const over = await call([frame(Buffer.alloc(api.maxReceive + 1, 0))]);
          assert.equal(over.code, RESOURCE_EXHAUSTED, show('oversized', over));
          assert.match(over.details, new RegExp(`larger than max \\(\\d+ vs ${api.maxReceive}\\)`), show('oversized', over));
          const huge = await call([frame(Buffer.alloc(16), { declaredLength: 0xffffffff })]);
          assert.equal(huge.code, RESOURCE_EXHAUSTED, show('4 GiB prefix', huge));
          assert.ok(huge.ms < 2000, `${api.name}: the 4 GiB prefix was refused after ${huge.ms.toFixed(0)} ms`);
          // The same connection still serves a valid call.
          const good = await call([frame(api.valid)]);
          assert.equal(good.code, api.validCode, show('valid call after the bad ones', good));
          assert.equal(s.destroyed, false, `${api.name}: the session was torn down`);
        } finally {
          s.destroy();
        }
      }
    });
  });

  test('a message split into 1-byte DATA frames is reassembled; a compressed flag without grpc-encoding is not a crash', async () => {
    await withCanary('split frames', async () => {
      for (const api of apis()) {
        const s = connectRaw(api.target());
        try {
          const f = frame(api.valid);
          const split = await rawCall(s, { path: api.path, headers: api.headers, body: [...f].map((b) => Buffer.from([b])) });
          assert.equal(split.code, api.validCode, `${api.name} split: ${codeName(split.code)} ${split.details}`);
          const comp = await rawCall(s, { path: api.path, headers: api.headers, body: [frame(Buffer.from([0x0a, 0x05, 0x01]), { compressed: true })] });
          assert.notEqual(comp.code, undefined, `${api.name} compressed flag: ${comp.failure}`);
          assert.notEqual(comp.code, 2, `${api.name} compressed flag: UNKNOWN ${comp.details}`);
        } finally {
          s.destroy();
        }
      }
    });
  });
});

describe('floods', () => {
  test('Workload API: 2000 concurrent FetchX509SVID streams from one process are capped per process (RESOURCE_EXHAUSTED); others keep being served', async () => {
    const res = await withCanary('Workload API stream flood', () =>
      runFlood({ mode: 'streams', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: HEADER, bodyHex: Buffer.from(X509SVIDRequest.encode({}).finish()).toString('hex'), connections: 20, streams: 2000, holdMs: 3000 }),
    );
    console.log(`# Workload API flood outcomes: ${JSON.stringify(res)}`);
    assert.ok((res.outcomes.STREAMING ?? 0) <= 100, `at most the per-process budget (100) of streams is served: ${JSON.stringify(res.outcomes)}`);
    assert.ok((res.outcomes.STREAMING ?? 0) >= 1, `the flooder's first streams are served: ${JSON.stringify(res.outcomes)}`);
    assert.ok((res.outcomes.RESOURCE_EXHAUSTED ?? 0) >= 1000, `the rest get RESOURCE_EXHAUSTED: ${JSON.stringify(res.outcomes)}`);
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, `no stream ends without a status: ${JSON.stringify(res.outcomes)}`);
  });

  test('SDS: 2000 concurrent StreamSecrets streams from one process are capped per process; others keep being served', async () => {
    const req = DiscoveryRequest.encode({ versionInfo: '', node: undefined, resourceNames: ['ROOTCA'], typeUrl: SECRET_TYPE_URL, responseNonce: '', errorDetail: undefined }).finish();
    const res = await withCanary('SDS stream flood', () =>
      runFlood({ mode: 'streams', target: c.raw.workload, path: '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets', bodyHex: Buffer.from(req).toString('hex'), endRequest: false, connections: 20, streams: 2000, holdMs: 3000 }),
    );
    console.log(`# SDS flood outcomes: ${JSON.stringify(res)}`);
    assert.ok((res.outcomes.STREAMING ?? 0) <= 100, JSON.stringify(res.outcomes));
    assert.ok((res.outcomes.RESOURCE_EXHAUSTED ?? 0) >= 1000, JSON.stringify(res.outcomes));
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, JSON.stringify(res.outcomes));
  });

  test('agent API: 2000 concurrent SyncAuthorized streams from one agent; the server stays up and serves others', async () => {
    const req = SyncAuthorizedRequest.encode({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map() }).finish();
    const rss0 = rssKb(c.server.proc.pid!);
    const res = await withCanary('agent API stream flood', () =>
      runFlood({ mode: 'streams', target: c.raw.agent, path: '/spindle.agent.v1.AgentAPI/SyncAuthorized', bodyHex: Buffer.from(req).toString('hex'), connections: 10, streams: 2000, holdMs: 4000 }),
    );
    console.log(`# agent API flood outcomes: ${JSON.stringify(res)}; server RSS ${rss0} -> ${rssKb(c.server.proc.pid!)} kB`);
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, JSON.stringify(res.outcomes));
    assert.equal((res.outcomes.UNKNOWN ?? 0) + (res.outcomes.INTERNAL ?? 0), 0, JSON.stringify(res.outcomes));
  });

  test('admin API: 2000 concurrent ListEntries calls; the server stays up and serves others', async () => {
    const req = ListEntriesRequest.encode({ filter: undefined, pageSize: 0, pageToken: '' }).finish();
    const res = await withCanary('admin API call flood', () =>
      runFlood({ mode: 'streams', target: c.raw.admin, path: '/spindle.admin.v1.EntryService/ListEntries', bodyHex: Buffer.from(req).toString('hex'), connections: 10, streams: 2000, holdMs: 4000 }),
    );
    console.log(`# admin API flood outcomes: ${JSON.stringify(res)}`);
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, JSON.stringify(res.outcomes));
    assert.equal((res.outcomes.UNKNOWN ?? 0) + (res.outcomes.INTERNAL ?? 0), 0, JSON.stringify(res.outcomes));
  });

  test('slowloris: 300 connections each holding a message that never completes, on the agent socket and the admin socket', async () => {
    await withCanary('slowloris', async () => {
      const [wl, admin] = await Promise.all([
        runFlood({ mode: 'slowloris', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchJWTSVID', headers: HEADER, connections: 300, holdMs: 3000 }),
        runFlood({ mode: 'slowloris', target: c.raw.admin, path: '/spindle.admin.v1.EntryService/CountEntries', connections: 300, holdMs: 3000 }),
      ]);
      console.log(`# slowloris outcomes: workload ${JSON.stringify(wl)}, admin ${JSON.stringify(admin)}`);
    });
  });
});

describe('slow clients', () => {
  test('streams that are never read while updates are pushed: the agent and server do not buffer without bound; others are unaffected', async () => {
    const uid = process.getuid?.() ?? 0;
    const rssAgent0 = rssKb(c.agent.proc.pid!);
    const rssServer0 = rssKb(c.server.proc.pid!);
    const x509 = Buffer.from(X509SVIDRequest.encode({}).finish()).toString('hex');
    const sync = Buffer.from(SyncAuthorizedRequest.encode({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map() }).finish()).toString('hex');
    const res = await withCanary('slow clients under churn', async () => {
      const floods = Promise.all([
        runFlood({ mode: 'streams', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: HEADER, bodyHex: x509, connections: 5, streams: 90, noRead: true, holdMs: 8000 }),
        runFlood({ mode: 'streams', target: c.raw.agent, path: '/spindle.agent.v1.AgentAPI/SyncAuthorized', bodyHex: sync, connections: 5, streams: 200, noRead: true, holdMs: 8000 }),
      ]);
      // Churn: batches of entries for this uid (each changes every unread stream's next message).
      await new Promise((r) => setTimeout(r, 1000));
      for (let round = 0; round < 4; round++) {
        const entries = Array.from({ length: 25 }, (_, i) => ({
          spiffe_id: `spiffe://example.org/security/slow/${round}/${i}`,
          parent_id: c.agentId,
          selectors: [{ type: 'unix', value: `uid:${uid}` }],
          dns_names: Array.from({ length: 20 }, (_, d) => `name-${d}-${'x'.repeat(40)}.example.org`),
        }));
        // Not spawnSync: that would stall this process's event loop, canary included.
        const r = await serverCliAsync(c.server, ['entry', 'create', '-data', '-'], 20_000, JSON.stringify({ entries }));
        assert.equal(r.status, 0, r.stderr);
      }
      return floods;
    });
    const [wl, agentApi] = res;
    console.log(`# slow clients: workload ${JSON.stringify(wl)}, agent API ${JSON.stringify(agentApi)}`);
    const rssAgent1 = rssKb(c.agent.proc.pid!);
    const rssServer1 = rssKb(c.server.proc.pid!);
    console.log(`# RSS agent ${rssAgent0} -> ${rssAgent1} kB, server ${rssServer0} -> ${rssServer1} kB`);
    assert.ok((wl.outcomes.STREAMING ?? 0) + (wl.outcomes.BUFFERED_UNREAD ?? 0) + (wl.outcomes.OPEN ?? 0) >= 1, JSON.stringify(wl));
    assert.ok(rssAgent1 - rssAgent0 < 200 * 1024, `agent RSS grew by ${rssAgent1 - rssAgent0} kB with unread streams`);
    assert.ok(rssServer1 - rssServer0 < 300 * 1024, `server RSS grew by ${rssServer1 - rssServer0} kB with unread streams`);
  });
});

describe('fuzz', () => {
  const fixedSeed = 20261123;
  const randomSeed = (Math.random() * 2 ** 32) >>> 0;
  for (const [name, seed, cases] of [['fixed', fixedSeed, 400], ['random', randomSeed, 200]] as const) {
    test(`${cases} generated requests over every method of every API (${name} seed ${seed})`, async () => {
      const report = await runFuzz({ cases, seed, targets: c.targets, probe: () => c.probe(), probeEvery: 100 });
      console.log(`# fuzz seed ${seed}: ${report.cases} cases in ${report.ms.toFixed(0)} ms, ${report.probes} probes, outcomes ${JSON.stringify(report.outcomes)}`);
      assert.equal(report.failures.length, 0, `fuzz seed ${seed} (replay: runFuzz({ seed: ${seed}, only: [case] })):\n${describeFailures(report)}`);
      assert.equal(report.cases, cases);
    });
  }
});

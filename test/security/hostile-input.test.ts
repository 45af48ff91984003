// Hostile input against real processes: malformed protobuf, truncated frames, oversized
// messages, stream floods, slow clients and a fuzz run, on the Workload API + SDS (agent Unix
// socket), the agent API (TCP, TLS) and the admin API (Unix socket). Each test asserts that the
// processes stay up, that the offending call gets a clear status, and that a well-behaved client
// running at the same time (cluster.canary(), another connection) keeps getting answers in time.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { JWTSVIDRequest, X509SVIDRequest } from '../../proto/gen/workload/workload.js';
import { DiscoveryRequest } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { GetBundleRequest, SyncAuthorizedRequest } from '../../proto/gen/spindle/agent/v1/agent.js';
import { CountEntriesRequest, ListEntriesRequest } from '../../proto/gen/spindle/admin/v1/admin.js';
import { rssKb, startSecurityCluster, SECRET_TYPE_URL, withCanary, type SecurityCluster } from './fuzz/cluster.js';
import { adminClient, workloadEntry } from '../faults/support/common.js';
import type { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import { runFloodProcess, type FloodResult } from './fuzz/flood.js';
import { describeFailures, runFuzz } from './fuzz/index.js';
import { codeName, connectRaw, frame, rawCall, type RawTarget } from './fuzz/wire.js';

/**
 * The slowest answer the well-behaved client may see while an attack runs (2 cores; measured
 * worst 1.3 s, usually under 0.1 s).
 */
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
    await withCanary(c, 'malformed/truncated/oversized messages', async () => {
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
    await withCanary(c, 'split frames', async () => {
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
    const res = await withCanary(c, 'Workload API stream flood', () =>
      runFloodProcess({ mode: 'streams', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: HEADER, bodyHex: Buffer.from(X509SVIDRequest.encode({}).finish()).toString('hex'), connections: 20, streams: 2000, holdMs: 3000 }),
    );
    console.log(`# Workload API flood outcomes: ${JSON.stringify(res)}`);
    assert.ok((res.outcomes.STREAMING ?? 0) <= 100, `at most the per-process budget (100) of streams is served: ${JSON.stringify(res.outcomes)}`);
    assert.ok((res.outcomes.STREAMING ?? 0) >= 1, `the flooder's first streams are served: ${JSON.stringify(res.outcomes)}`);
    assert.ok((res.outcomes.RESOURCE_EXHAUSTED ?? 0) >= 1000, `the rest get RESOURCE_EXHAUSTED: ${JSON.stringify(res.outcomes)}`);
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, `no stream ends without a status: ${JSON.stringify(res.outcomes)}`);
  });

  test('SDS: 2000 concurrent StreamSecrets streams from one process are capped per process; others keep being served', async () => {
    const req = DiscoveryRequest.encode({ versionInfo: '', node: undefined, resourceNames: ['ROOTCA'], typeUrl: SECRET_TYPE_URL, responseNonce: '', errorDetail: undefined }).finish();
    const res = await withCanary(c, 'SDS stream flood', () =>
      runFloodProcess({ mode: 'streams', target: c.raw.workload, path: '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets', bodyHex: Buffer.from(req).toString('hex'), endRequest: false, connections: 20, streams: 2000, holdMs: 3000 }),
    );
    console.log(`# SDS flood outcomes: ${JSON.stringify(res)}`);
    assert.ok((res.outcomes.STREAMING ?? 0) <= 100, JSON.stringify(res.outcomes));
    assert.ok((res.outcomes.RESOURCE_EXHAUSTED ?? 0) >= 1000, JSON.stringify(res.outcomes));
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, JSON.stringify(res.outcomes));
  });

  test('agent API: 2000 concurrent SyncAuthorized streams from one agent; the server stays up and serves others', async () => {
    const req = SyncAuthorizedRequest.encode({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map() }).finish();
    const rss0 = rssKb(c.server.proc.pid!);
    const res = await withCanary(c, 'agent API stream flood', () =>
      runFloodProcess({ mode: 'streams', target: c.raw.agent, path: '/spindle.agent.v1.AgentAPI/SyncAuthorized', bodyHex: Buffer.from(req).toString('hex'), connections: 10, streams: 2000, holdMs: 4000 }),
    );
    console.log(`# agent API flood outcomes: ${JSON.stringify(res)}; server RSS ${rss0} -> ${rssKb(c.server.proc.pid!)} kB`);
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, JSON.stringify(res.outcomes));
    assert.equal((res.outcomes.UNKNOWN ?? 0) + (res.outcomes.INTERNAL ?? 0), 0, JSON.stringify(res.outcomes));
  });

  test('admin API: 2000 concurrent ListEntries calls; the server stays up and serves others', async () => {
    const req = ListEntriesRequest.encode({ filter: undefined, pageSize: 0, pageToken: '' }).finish();
    const res = await withCanary(c, 'admin API call flood', () =>
      runFloodProcess({ mode: 'streams', target: c.raw.admin, path: '/spindle.admin.v1.EntryService/ListEntries', bodyHex: Buffer.from(req).toString('hex'), connections: 10, streams: 2000, holdMs: 4000 }),
    );
    console.log(`# admin API flood outcomes: ${JSON.stringify(res)}`);
    assert.equal(res.outcomes.NO_STATUS ?? 0, 0, JSON.stringify(res.outcomes));
    assert.equal((res.outcomes.UNKNOWN ?? 0) + (res.outcomes.INTERNAL ?? 0), 0, JSON.stringify(res.outcomes));
  });

  test('slowloris: 300 connections each holding a message that never completes, on the agent socket and the admin socket', async () => {
    await withCanary(c, 'slowloris', async () => {
      const [wl, admin] = await Promise.all([
        runFloodProcess({ mode: 'slowloris', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchJWTSVID', headers: HEADER, connections: 300, holdMs: 3000 }),
        runFloodProcess({ mode: 'slowloris', target: c.raw.admin, path: '/spindle.admin.v1.EntryService/CountEntries', connections: 300, holdMs: 3000 }),
      ]);
      console.log(`# slowloris outcomes: workload ${JSON.stringify(wl)}, admin ${JSON.stringify(admin)}`);
      // The attack happened: the connections were held open the whole time (the canary above
      // was served meanwhile), none ended in a server error. The agent admits one process's
      // first 256 connections (workload_api_max_conns_per_pid) and closes the rest at accept,
      // before any byte (their call ends with no status; the client sees a reset or a plain
      // close, so their session errors vary); the admin socket has no such limit.
      const brief = (r: FloodResult): string => JSON.stringify(r.outcomes);
      assert.deepEqual(wl.outcomes, { OPEN: 256, NO_STATUS: 44 }, `workload: ${brief(wl)}`);
      assert.deepEqual(admin.outcomes, { OPEN: 300 }, `admin: ${brief(admin)}`);
      assert.equal(admin.sessionErrors, 0, `admin: ${brief(admin)}`);
    });
  });
});

describe('slow clients', () => {
  test('streams that are never read while updates are pushed: the agent and server do not buffer without bound; others are unaffected', async () => {
    const uid = process.getuid?.() ?? 0;
    const x509 = Buffer.from(X509SVIDRequest.encode({}).finish()).toString('hex');
    const sync = Buffer.from(SyncAuthorizedRequest.encode({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map() }).finish()).toString('hex');
    const HOLD_MS = 16_000;
    const res = await withCanary(c, 'slow clients under churn', async () => {
      // One stream of each kind that reads everything: what an unread stream would hold if every
      // message were buffered for it. Opened first (the agent API caps streams per agent).
      const readers = Promise.all([
        runFloodProcess({ mode: 'streams', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: HEADER, bodyHex: x509, connections: 1, streams: 1, holdMs: HOLD_MS + 4000 }),
        runFloodProcess({ mode: 'streams', target: c.raw.agent, path: '/spindle.agent.v1.AgentAPI/SyncAuthorized', bodyHex: sync, connections: 1, streams: 1, holdMs: HOLD_MS + 4000 }),
      ]);
      await new Promise((r) => setTimeout(r, 1000));
      const unread = Promise.all([
        runFloodProcess({ mode: 'streams', target: c.raw.workload, path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: HEADER, bodyHex: x509, connections: 5, streams: 90, noRead: true, holdMs: HOLD_MS, drainMs: 3000 }),
        runFloodProcess({ mode: 'streams', target: c.raw.agent, path: '/spindle.agent.v1.AgentAPI/SyncAuthorized', bodyHex: sync, connections: 5, streams: 40, noRead: true, holdMs: HOLD_MS, drainMs: 3000 }),
      ]);
      await new Promise((r) => setTimeout(r, 1000));
      // Churn, 40 rounds 200 ms apart through the admin API: each round replaces this uid's 8
      // entries of the previous round by 8 new ones (a new X509-SVID message of about the same
      // size on every Workload API stream) and adds 75 for a uid nobody here has (a large delta on
      // every sync stream).
      const admin = adminClient(c.server);
      const dns = Array.from({ length: 20 }, (_, d) => `name-${d}-${'x'.repeat(40)}.example.org`);
      const entry = (spiffeId: string, selector: string): Entry => ({ ...workloadEntry({ spiffeId, parentId: c.agentId, selectors: [selector] }), dnsNames: dns });
      try {
        let previous: string[] = [];
        for (let round = 0; round < 40; round++) {
          const entries = [
            ...Array.from({ length: 8 }, (_, i) => entry(`spiffe://example.org/security/slow/${round}/${i}`, `unix:uid:${uid}`)),
            ...Array.from({ length: 75 }, (_, i) => entry(`spiffe://example.org/security/bulk/${round}/${i}`, 'unix:uid:4242')),
          ];
          const created = await admin.call(admin.entry.batchCreateEntry, { entries });
          assert.ok(created.results.every((r) => r.status?.code === 0), JSON.stringify(created.results.find((r) => r.status?.code !== 0)?.status));
          if (previous.length > 0) await admin.call(admin.entry.batchDeleteEntry, { ids: previous });
          previous = created.results.slice(0, 8).map((r) => r.entry!.id);
          await new Promise((r) => setTimeout(r, 200));
        }
        if (previous.length > 0) await admin.call(admin.entry.batchDeleteEntry, { ids: previous });
      } finally {
        admin.close();
      }
      return Promise.all([unread, readers]);
    });
    const [[wl, agentApi], [wlReader, agentReader]] = res;
    const brief = (r: typeof wl) => JSON.stringify({ ...r, messageSizes: r.messageSizes.length });
    console.log(`# slow clients: workload ${brief(wl)}, agent API ${brief(agentApi)}; readers got ${wlReader.bytesRead} B in ${wlReader.messageSizes.length} messages (workload), ${agentReader.bytesRead} B in ${agentReader.messageSizes.length} (agent API)`);
    const WINDOWS = 2 * 65_535; // the client's stream and connection flow-control windows

    // Workload API: the agent keeps one message in flight and the newest next one for a stream
    // that is not drained, so a resumed stream gets what the windows and the transport held plus
    // a few messages, however many updates there were (a reader got them all).
    const largest = Math.max(...wlReader.messageSizes);
    const wlBound = WINDOWS + 4 * (largest + 5);
    assert.ok(wlReader.bytesRead > 2 * wlBound, `the churn must push well over the bound to test it: ${wlReader.bytesRead} B vs bound ${wlBound} B`);
    assert.ok(wl.maxResumedBytes > 0, `the unread Workload API streams were served: ${brief(wl)}`);
    assert.ok(wl.maxResumedBytes <= wlBound, `an unread Workload API stream delivered ${wl.maxResumedBytes} B once resumed (bound ${wlBound} B; a reader got ${wlReader.bytesRead} B)`);

    // Agent API: deltas cannot be dropped; a stream that does not read is ended once its backlog
    // passes 1 MiB without progress (16 MiB at most), and each agent holds at most 8 streams.
    assert.ok(agentReader.bytesRead > 2 * 1024 * 1024, `the churn must push well over 1 MiB per sync stream: ${agentReader.bytesRead} B`);
    assert.equal(agentApi.outcomes.RESOURCE_EXHAUSTED, 40, `every unread sync stream was refused (per-agent cap) or ended (backlog): ${brief(agentApi)}`);
    assert.ok(agentApi.details.some((d) => /sync stream ended: \d+ bytes queued .* not read for \d+ s; reconnect to resume/.test(d)), brief(agentApi));
    assert.ok(agentApi.details.some((d) => /already has 8 open sync streams/.test(d)), brief(agentApi));
    assert.ok(agentApi.maxResumedBytes <= 16 * 1024 * 1024 + WINDOWS, `a resumed sync stream delivered ${agentApi.maxResumedBytes} B`);
    assert.ok(agentApi.maxResumedBytes < agentReader.bytesRead, `a resumed sync stream delivered ${agentApi.maxResumedBytes} B, as much as a reader (${agentReader.bytesRead} B): nothing was bounded`);
    // The reader, and the real agent, kept their streams.
    assert.equal(agentReader.outcomes.STREAMING, 1, brief(agentReader));
    assert.equal(wlReader.outcomes.STREAMING, 1, brief(wlReader));
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

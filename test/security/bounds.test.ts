// Bounds on what one client can make the agent or server hold, against real processes: the
// agent's JWT-SVID cache under a flood of distinct audiences, unauthenticated AttestAgent
// streams held open against the server's agent API port, a SyncAuthorized stream outliving the
// agent certificate that opened it, and a join token burnt by an attestation whose CSR is bad.
// Each attack runs while a well-behaved client (cluster.canary()) keeps being served.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { join } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { JWTSVIDRequest } from '../../proto/gen/workload/workload.js';
import { AttestAgentRequest, SyncAuthorizedRequest, SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { attestAgent, connectAgentApi } from '../../agent/client/serverclient.js';
import { parseSpiffeId, parseTrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { certificatesToPem, pemToCertificates, privateKeyToPem } from '../../spiffe/pem.js';
import { createCsr, createIssuer, issueX509Svid, parseCertificate, type Issuer } from '../../spiffe/x509/index.js';
import { generateJoinToken, serverCliAsync } from '../support/agentproc.js';
import { freePort, tempDir } from '../support/serverproc.js';
import { rssKb, startSecurityCluster, withCanary, type SecurityCluster } from './fuzz/cluster.js';
import { runFloodProcess } from './fuzz/flood.js';
import { codeName, connectRaw, frame, rawCall, rawUnary } from './fuzz/wire.js';
import { ATTESTATION_TIMEOUT_MS, MAX_ATTESTATIONS_IN_PROGRESS, MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS } from '../../server/api/agent/attest.js';
import { MAX_CONCURRENT_STREAMS_PER_CONNECTION } from '../../server/api/agent/server.js';
import { JWT_CACHE_MAX_PER_ENTRY } from '../../agent/manager/manager.js';

/** The slowest answer the well-behaved client may see while an attack runs (2 cores, noisy). */
const HEADER = { 'workload.spiffe.io': 'true' };
const RESOURCE_EXHAUSTED = 8;
const INVALID_ARGUMENT = 3;
const UNAUTHENTICATED = 16;
const ATTEST_PATH = '/spindle.agent.v1.AgentAPI/AttestAgent';

let c: SecurityCluster;
let serverMetricsPort: number;
let agentMetricsPort: number;

before(async () => {
  const dir = tempDir('spindle-bounds-');
  serverMetricsPort = await freePort();
  agentMetricsPort = await freePort();
  const serverConf = join(dir, 'server.json');
  writeFileSync(serverConf, JSON.stringify({ telemetry: { Prometheus: { host: '127.0.0.1', port: serverMetricsPort } } }));
  // No per-process rate limit on the Workload API: the JWT flood below is one process.
  const agentConf = join(dir, 'agent.json');
  writeFileSync(agentConf, JSON.stringify({ agent: { workload_api_rate_limit_per_pid: 0 }, telemetry: { Prometheus: { host: '127.0.0.1', port: agentMetricsPort } } }));
  c = await startSecurityCluster({ serverArgs: ['-config', serverConf], agentArgs: ['-config', agentConf] });
});
after(async () => {
  await c?.stop();
});

async function metric(port: number, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  assert.ok(line, `${name}${labels} is exported:\n${text.split('\n').filter((l) => l.startsWith(name)).join('\n')}`);
  return Number(line.split(' ')[1]);
}



/** Attests a fresh agent with a new join token over grpc-js, from 127.0.0.1 (the default source). */
async function legitAttest(csr?: Buffer, token = generateJoinToken(c.server)): Promise<string> {
  const conn = connectAgentApi({ address: { host: '127.0.0.1', port: c.server.port }, trustDomain: parseTrustDomain(c.server.trustDomain), bundle: pemToCertificates(c.caPem) });
  try {
    const keys = await generateKeyPair();
    const res = await attestAgent(conn.client, { type: 'join_token', payload: Buffer.from(token), csr: csr ?? createCsr(keys.privateKey), deadlineMs: 20_000 });
    return res.svid.spiffeId;
  } finally {
    conn.close();
  }
}

describe('agent JWT-SVID cache', () => {
  test(`a workload asking for 5,000 distinct audiences: the cache stays at ${JWT_CACHE_MAX_PER_ENTRY} tokens for its entry, agent memory is bounded, others are served`, async () => {
    const REQUESTS = 5_000;
    const CONCURRENCY = 32;
    const rss0 = rssKb(c.agent.proc.pid!);
    let maxSeen = 0;
    const failures: string[] = [];
    const t0 = performance.now();
    await withCanary(c, 'JWT-SVID audience flood', async () => {
      const sessions = Array.from({ length: 4 }, () => connectRaw(c.raw.workload));
      try {
        let next = 0;
        let done = 0;
        await Promise.all(
          Array.from({ length: CONCURRENCY }, async (_, w) => {
            while (next < REQUESTS) {
              const i = next++;
              const r = await rawUnary(sessions[w % sessions.length]!, '/SpiffeWorkloadAPI/FetchJWTSVID', JWTSVIDRequest.encode({ audience: [`flood-${i}`], spiffeId: '' }).finish(), HEADER, 20_000);
              if (r.code !== 0 && failures.length < 5) failures.push(`${i}: ${codeName(r.code)} ${r.details} ${r.failure ?? ''}`);
              if (++done % 500 === 0) maxSeen = Math.max(maxSeen, await metric(agentMetricsPort, 'spindle_agent_jwt_svid_cache_entries'));
            }
          }),
        );
      } finally {
        for (const s of sessions) s.destroy();
      }
    });
    const entries = await metric(agentMetricsPort, 'spindle_agent_jwt_svid_cache_entries');
    const evictions = await metric(agentMetricsPort, 'spindle_agent_jwt_svid_cache_evictions_total');
    const rss1 = rssKb(c.agent.proc.pid!);
    console.log(`# ${REQUESTS} audiences in ${((performance.now() - t0) / 1000).toFixed(1)} s: cache entries ${entries} (max sampled ${maxSeen}), evictions ${evictions}, agent RSS ${rss0} -> ${rss1} kB`);
    assert.deepEqual(failures, [], 'every flood request was answered (the cache bounds memory, not service)');
    assert.ok(maxSeen <= JWT_CACHE_MAX_PER_ENTRY, `the cache held ${maxSeen} tokens during the flood`);
    // The flood's entry is capped; the canary's token is in the same entry's cache.
    assert.equal(entries, JWT_CACHE_MAX_PER_ENTRY, 'the cache size stays at the per-entry cap');
    assert.ok(evictions >= REQUESTS - JWT_CACHE_MAX_PER_ENTRY, `evictions ${evictions}`);
    assert.ok(rss1 - rss0 < 100 * 1024, `agent RSS grew by ${rss1 - rss0} kB`);
  });
});

describe('agent API: unauthenticated AttestAgent streams', () => {
  test(`HTTP/2 connections are limited to ${MAX_CONCURRENT_STREAMS_PER_CONNECTION} concurrent streams`, async () => {
    const s = connectRaw(c.raw.agentAnonymous);
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('remoteSettings', () => resolve());
        s.once('error', reject);
      });
      assert.equal(s.remoteSettings.maxConcurrentStreams, MAX_CONCURRENT_STREAMS_PER_CONNECTION);
    } finally {
      s.destroy();
    }
  });

  test(`3000 held streams from 127.0.0.2: ${MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS} admitted and ended at the deadline, the rest refused (RESOURCE_EXHAUSTED); an agent from 127.0.0.1 attests meanwhile`, async () => {
    const refused0 = await metric(serverMetricsPort, 'spindle_server_attestations_refused_total', '{limit="in_progress_per_address"}');
    const rss0 = rssKb(c.server.proc.pid!);
    let rssPeak = rss0;
    const res = await withCanary(c, 'AttestAgent flood from one address', async () => {
      const flood = runFloodProcess({
        mode: 'slowloris',
        target: { kind: 'tls', host: '127.0.0.1', port: c.server.port, caPem: c.caPem, localAddress: '127.0.0.2' },
        path: ATTEST_PATH,
        connections: 30,
        streams: 3000,
        // Past the attestation deadline: the admitted streams are ended by the server.
        holdMs: ATTESTATION_TIMEOUT_MS + 3000,
      });
      // Once the flood holds its address's share, one more stream from there is refused, naming the limit.
      const end = Date.now() + 15_000;
      while ((await metric(serverMetricsPort, 'spindle_server_attestations_in_progress')) < MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS) {
        assert.ok(Date.now() < end, 'the flood never held the per-address share');
        await new Promise((r) => setTimeout(r, 50));
      }
      const probe = connectRaw({ kind: 'tls', host: '127.0.0.1', port: c.server.port, caPem: c.caPem, localAddress: '127.0.0.2' });
      try {
        const r = await rawCall(probe, { path: ATTEST_PATH, body: [], end: false, timeoutMs: 5000 });
        assert.equal(r.code, RESOURCE_EXHAUSTED, `${codeName(r.code)} ${r.details} ${r.failure ?? ''}`);
        assert.match(r.details, new RegExp(`from 127\\.0\\.0\\.2 \\(at most ${MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS} at once per remote address\\)`));
      } finally {
        probe.destroy();
      }
      rssPeak = Math.max(rssPeak, rssKb(c.server.proc.pid!));
      // A legitimate agent from another address is not affected by that address's flood.
      const id = await legitAttest();
      assert.match(id, /\/spire\/agent\/join_token\//);
      rssPeak = Math.max(rssPeak, rssKb(c.server.proc.pid!));
      return flood;
    });
    const refused = (await metric(serverMetricsPort, 'spindle_server_attestations_refused_total', '{limit="in_progress_per_address"}')) - refused0;
    console.log(`# AttestAgent flood from 127.0.0.2: ${JSON.stringify(res)}; refused (metric) ${refused}; server RSS ${rss0} -> peak ${rssPeak} kB`);
    const o = res.outcomes;
    assert.ok((o.RESOURCE_EXHAUSTED ?? 0) >= 3000 - MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS, `streams beyond the cap are refused: ${JSON.stringify(o)}`);
    assert.ok((o.PERMISSION_DENIED ?? 0) <= MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS, `at most the cap is admitted: ${JSON.stringify(o)}`);
    assert.equal((o.OPEN ?? 0) + (o.NO_STATUS ?? 0), 0, `every stream got a status, the admitted ones at the ${ATTESTATION_TIMEOUT_MS} ms deadline: ${JSON.stringify(o)}`);
    assert.ok(refused >= 3000 - MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS, `refusals are counted: ${refused}`);
    assert.ok(rssPeak - rss0 < 128 * 1024, `server RSS grew by ${rssPeak - rss0} kB`);
    assert.equal(await metric(serverMetricsPort, 'spindle_server_attestations_in_progress'), 0, 'no attestation slot is leaked');
  });

  test(`streams from 20 addresses beyond ${MAX_ATTESTATIONS_IN_PROGRESS} in all: refused by the total limit; attestation works again once they end`, async () => {
    const refused0 = await metric(serverMetricsPort, 'spindle_server_attestations_refused_total', '{limit="in_progress_total"}');
    const addresses = Array.from({ length: 20 }, (_, i) => `127.0.0.${10 + i}`);
    const res = await withCanary(c, 'AttestAgent flood from 20 addresses', () =>
      runFloodProcess({ mode: 'slowloris', target: c.raw.agentAnonymous, localAddresses: addresses, path: ATTEST_PATH, connections: 40, streams: 2000, holdMs: 4000 }),
    );
    const refused = (await metric(serverMetricsPort, 'spindle_server_attestations_refused_total', '{limit="in_progress_total"}')) - refused0;
    console.log(`# AttestAgent flood from 20 addresses: ${JSON.stringify(res)}; refused by the total limit (metric) ${refused}`);
    assert.ok((res.outcomes.OPEN ?? 0) <= MAX_ATTESTATIONS_IN_PROGRESS, `at most the total cap is held: ${JSON.stringify(res.outcomes)}`);
    assert.ok(refused >= 1, `the total limit refused streams: ${refused}`);
    // The flooder is gone: its streams are released and attestation works again.
    const end = Date.now() + 10_000;
    while ((await metric(serverMetricsPort, 'spindle_server_attestations_in_progress')) > 0) {
      assert.ok(Date.now() < end, 'attestation slots released after the flood');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(await legitAttest(), /\/spire\/agent\/join_token\//);
  });
});

describe('agent API: SyncAuthorized and the agent certificate expiry', () => {
  let caIssuer: Issuer;
  before(() => {
    const caKey: KeyObject = createPrivateKey(readFileSync(join(c.server.dataDir, 'keys', 'x509-CA-A.key'), 'utf8'));
    caIssuer = createIssuer([pemToCertificates(c.caPem)[0]!], caKey);
  });

  test('a stream opened with an agent SVID that then expires ends at its notAfter with UNAUTHENTICATED; an entry created after expiry is not pushed', async () => {
    // Made with the server's CA key, for the agent's ID and current serial: valid for a few seconds.
    const keys = await generateKeyPair();
    const serial = parseCertificate(pemToCertificates(c.agentCertPem)[0]!).serialHex;
    const cert = issueX509Svid({ id: parseSpiffeId(c.agentId), publicKey: keys.publicKey, ttlSeconds: 5, issuer: caIssuer, now: new Date(), serial: Buffer.from(serial, 'hex') });
    const notAfter = cert.notAfter.getTime();
    const s = connectRaw({ kind: 'tls', host: '127.0.0.1', port: c.server.port, caPem: c.caPem, certPem: certificatesToPem([cert.der]), keyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) });
    const messages: Array<{ at: number; msg: SyncAuthorizedResponse }> = [];
    type Status = { at: number; code: number; details: string };
    let status: Status | undefined;
    try {
      const stream = s.request({ ':method': 'POST', ':path': '/spindle.agent.v1.AgentAPI/SyncAuthorized', 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      stream.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
          const len = buf.readUInt32BE(1);
          messages.push({ at: Date.now(), msg: SyncAuthorizedResponse.decode(buf.subarray(5, 5 + len)) });
          buf = buf.subarray(5 + len);
        }
      });
      const onStatus = (h: http2.IncomingHttpHeaders): void => {
        if (h['grpc-status'] !== undefined) status ??= { at: Date.now(), code: Number(h['grpc-status']), details: decodeURIComponent(String(h['grpc-message'] ?? '')) };
      };
      stream.on('response', onStatus);
      stream.on('trailers', onStatus);
      stream.end(frame(SyncAuthorizedRequest.encode({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map() }).finish()));

      const wait = async (cond: () => boolean, ms: number): Promise<void> => {
        const end = Date.now() + ms;
        while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      };
      await wait(() => messages.length > 0 || status !== undefined, 5000);
      assert.equal(status, undefined, `the stream was refused while the SVID was valid: ${JSON.stringify(status)}`);
      assert.ok(messages.length >= 1, 'the snapshot arrived while the SVID was valid');
      // After the expiry: an entry for this agent is created; it must not reach the stream.
      await wait(() => Date.now() > notAfter + 300, notAfter + 1000 - Date.now());
      const spiffeId = `spiffe://${c.server.trustDomain}/security/after-expiry`;
      const created = await serverCliAsync(c.server, ['entry', 'create', '-parentID', c.agentId, '-spiffeID', spiffeId, '-selector', 'unix:uid:4242']);
      assert.equal(created.status, 0, created.stderr);
      await wait(() => status !== undefined, 3000);
      const pushedAfter = messages.filter((m) => m.msg.entries.some((e) => e.spiffeId === spiffeId));
      assert.deepEqual(pushedAfter.map((m) => new Date(m.at).toISOString()), [], 'an entry created after the SVID expired was pushed to the stream');
      const final = status as Status | undefined;
      assert.ok(final, 'the stream is still open after the agent SVID expired');
      assert.equal(final.code, UNAUTHENTICATED, `${codeName(final.code)} ${final.details}`);
      assert.match(final.details, /agent SVID expired at/);
      assert.ok(final.at >= notAfter, `ended at ${new Date(final.at).toISOString()}, before notAfter ${new Date(notAfter).toISOString()}`);
      console.log(`# sync stream ended ${final.at - notAfter} ms after notAfter: ${final.details}`);
    } finally {
      s.destroy();
    }
  });
});

describe('AttestAgent: the CSR is checked before the join token is consumed', () => {
  test('a valid token with a malformed CSR: INVALID_ARGUMENT, and the same token still attests with a good CSR', async () => {
    const token = generateJoinToken(c.server);
    const keys = await generateKeyPair();
    const good = createCsr(keys.privateKey);
    const broken = Buffer.from(good);
    broken[broken.length - 3]! ^= 0xff; // the signature no longer verifies
    for (const bad of [Buffer.from('not a CSR'), broken]) {
      await assert.rejects(legitAttest(bad, token), (err: ServiceError) => {
        assert.equal(err.code, INVALID_ARGUMENT, `${codeName(err.code)} ${err.details}`);
        assert.match(err.details, /CSR/);
        return true;
      });
    }
    assert.equal(await legitAttest(good, token), `spiffe://${c.server.trustDomain}/spire/agent/join_token/${token}`);
  });

  test('a raw AttestAgent with a malformed CSR gets INVALID_ARGUMENT naming the CSR', async () => {
    const s = connectRaw(c.raw.agentAnonymous);
    try {
      const req = AttestAgentRequest.encode({ step: { $case: 'params', value: { data: { type: 'join_token', payload: Buffer.from(generateJoinToken(c.server)) }, csr: Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]) } } }).finish();
      const r = await rawCall(s, { path: ATTEST_PATH, body: [frame(req)] });
      assert.equal(r.code, INVALID_ARGUMENT, `${codeName(r.code)} ${r.details}`);
    } finally {
      s.destroy();
    }
  });
});

// `spindle-server run` and `validate` end to end: config files and flags, health checks,
// Prometheus metrics, signals, log format and what the log must never contain. Real processes
// (test/support/serverproc.ts) plus two in-process servers for per-instance metrics.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import pino from 'pino';
import type { BatchNewX509SVIDResponse } from '../proto/gen/spindle/agent/v1/agent.js';
import { attestAgent, connectAgentApi, syncAuthorized, type AgentApiConnection } from '../agent/client/serverclient.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../spiffe/keys.js';
import { pemToCertificates, privateKeyToPem } from '../spiffe/pem.js';
import { createCsr } from '../spiffe/x509/index.js';
import { parseServerConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/run.js';
import { freePort, serverBin, startServerProcess, type ServerProcess } from './support/serverproc.js';

const TD = 'example.org';
const td = parseTrustDomain(TD);

const METRIC_NAMES = [
  'spindle_server_rpc_requests_total',
  'spindle_server_rpc_duration_seconds',
  'spindle_server_x509_svids_signed_total',
  'spindle_server_jwt_svids_minted_total',
  'spindle_server_node_attestations_total',
  'spindle_server_entries',
  'spindle_server_agents',
  'spindle_server_agent_sync_streams',
  'spindle_server_ca_expiry_seconds',
  'spindle_server_bundle_sequence',
];

function ok(r: { status: number | null; stdout: string; stderr: string }): string {
  assert.equal(r.status, 0, `command failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The value of the sample `name{labels...}` (labels must match exactly the ones given, others ignored). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

async function get(port: number, path: string): Promise<{ status: number; type: string; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}

async function eventually<T>(fn: () => Promise<T | undefined>, what: string, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

function configYaml(o: { trustDomain: string; bindPort: number; healthPort: number; metricsPort: number; extra?: string }): string {
  return `server:
  trust_domain: ${o.trustDomain}
  bind_address: 127.0.0.1
  bind_port: ${o.bindPort}
  log_level: ERROR
  log_format: text
  ca_ttl: 24h
  default_x509_svid_ttl: 1h
${o.extra ?? ''}
plugins:
  NodeAttestor:
    join_token:
      plugin_data: {}
  KeyManager:
    memory:
      plugin_data: {}

health_checks:
  listener_enabled: true
  bind_address: 127.0.0.1
  bind_port: ${o.healthPort}

telemetry:
  Prometheus:
    host: 127.0.0.1
    port: ${o.metricsPort}
`;
}

describe('spindle-server validate', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-validate-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('accepts a good file', () => {
    const file = join(dir, 'good.yaml');
    writeFileSync(file, configYaml({ trustDomain: TD, bindPort: 8081, healthPort: 8080, metricsPort: 9988 }));
    const r = spawnSync(serverBin, ['validate', '-config', file], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(ok(r).trim(), 'Configuration is valid.');
  });

  test('rejects a bad file naming every problem, exit 1; run refuses it too', () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      configYaml({ trustDomain: TD, bindPort: 8081, healthPort: 8080, metricsPort: 9988, extra: '  bind_prot: 8082\n  default_jwt_svid_ttl: 5 minutes\n' }),
    );
    const r = spawnSync(serverBin, ['validate', '-config', file], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.doesNotMatch(r.stdout, /valid/);
    assert.match(r.stderr, /server\.bind_prot: unknown key \(did you mean "bind_port"\?\)/);
    assert.match(r.stderr, /server\.default_jwt_svid_ttl: expected a duration/);
    assert.match(r.stderr, /"5 minutes"/);

    const run = spawnSync(serverBin, ['run', '-config', file, '-dataDir', join(dir, 'data'), '-socketPath', join(dir, 'api.sock')], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /server\.bind_prot: unknown key/);
    assert.ok(!existsSync(join(dir, 'api.sock')), 'nothing was started');
  });
});

describe('spindle-server run with a config file, flags overriding it', () => {
  let server: ServerProcess;
  let healthPort: number;
  let metricsPort: number;
  let filePort: number;
  const conns: AgentApiConnection[] = [];

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spindle-run-'));
    [healthPort, metricsPort, filePort] = [await freePort(), await freePort(), await freePort()];
    const file = join(dir, 'server.yaml');
    // The file says trust domain file.example, port filePort, ERROR, text; the flags (added by
    // serverproc and here) say example.org, another port, DEBUG, json.
    writeFileSync(file, configYaml({ trustDomain: 'file.example', bindPort: filePort, healthPort, metricsPort }));
    server = await startServerProcess({ dir, trustDomain: TD, extraArgs: ['-config', file, '-logFormat', 'json'] });
  });
  after(async () => {
    for (const c of conns) c.close();
    if (server.proc.exitCode === null) await server.stop('SIGKILL');
    rmSync(server.dir, { recursive: true, force: true });
  });

  const metrics = async (): Promise<string> => {
    const r = await get(metricsPort, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.type, /^text\/plain/);
    return r.text;
  };
  const bundle = (): Buffer[] => pemToCertificates(ok(server.cli(['bundle', 'show'])));
  const token = (): string => {
    const m = /^Token: (\S+)$/m.exec(ok(server.cli(['token', 'generate'])));
    assert.ok(m);
    return m[1]!;
  };
  let agentToken = '';
  let agentConn: AgentApiConnection | undefined;

  test('flags override the file', async () => {
    assert.ok(await portAnswers(server.port), 'agent API on the -serverPort port');
    assert.equal(await portAnswers(filePort), false, 'not on the file bind_port');
    assert.match(ok(server.cli(['bundle', 'show', '-format', 'spiffe'])), /"keys"/);
    const lines = server.log().split('\n').filter((l) => l.startsWith('{'));
    assert.ok(lines.some((l) => (JSON.parse(l) as { level: number }).level === 30), '-logLevel (DEBUG) beats log_level ERROR');
  });

  test('/live and /ready answer 200 with JSON', async () => {
    const live = await get(healthPort, '/live');
    assert.equal(live.status, 200);
    assert.match(live.type, /application\/json/);
    assert.deepEqual(JSON.parse(live.text), { live: true });

    const ready = await get(healthPort, '/ready');
    assert.equal(ready.status, 200, ready.text);
    assert.match(ready.type, /application\/json/);
    const body = JSON.parse(ready.text) as Record<string, unknown>;
    assert.equal(body['ready'], true);
    assert.equal(body['datastore'], 'ok');
    assert.ok(Date.parse(String(body['ca_active_not_after'])) > Date.now());
    assert.ok(Date.parse(String(body['server_svid_not_after'])) > Date.now());
    assert.equal((await get(healthPort, '/nope')).status, 404);
  });

  test('/metrics names every metric', async () => {
    const text = await metrics();
    for (const name of METRIC_NAMES) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    assert.equal(sample(text, 'spindle_server_x509_svids_signed_total', { kind: 'agent' }), 0);
    assert.equal(sample(text, 'spindle_server_node_attestations_total', { attestor: 'join_token', result: 'ok' }), 0);
    assert.ok((sample(text, 'spindle_server_ca_expiry_seconds', { kind: 'x509', status: 'active' }) ?? 0) > Date.now() / 1000);
    assert.ok((sample(text, 'spindle_server_ca_expiry_seconds', { kind: 'jwt', status: 'active' }) ?? 0) > Date.now() / 1000);
    assert.ok((sample(text, 'spindle_server_bundle_sequence') ?? 0) >= 1);
    assert.doesNotMatch(text, /spiffe:\/\//, 'no SPIFFE IDs in labels');
  });

  test('counters move: admin RPCs, attestations ok and denied, agent SVIDs', async () => {
    assert.match(ok(server.cli(['entry', 'count'])), /0 registration entries/);
    agentToken = token();
    const keys = await generateKeyPair();
    const boot = connectAgentApi({ address: { host: '127.0.0.1', port: server.port }, trustDomain: td, bundle: bundle() });
    conns.push(boot);
    const res = await attestAgent(boot.client, { type: 'join_token', payload: Buffer.from(agentToken), csr: createCsr(keys.privateKey) });
    assert.equal(res.svid.spiffeId, `spiffe://${TD}/spire/agent/join_token/${agentToken}`, 'trust domain from -trustDomain');
    // Used token, then a malformed one: both refused.
    for (const payload of [agentToken, 'not-a-token-S3CR3T']) {
      await assert.rejects(
        attestAgent(boot.client, { type: 'join_token', payload: Buffer.from(payload), csr: createCsr(keys.privateKey) }),
        (err: ServiceError) => err.code === status.PERMISSION_DENIED,
      );
    }
    agentConn = connectAgentApi({
      address: { host: '127.0.0.1', port: server.port },
      trustDomain: td,
      bundle: bundle(),
      svid: { chain: res.svid.certChain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) },
    });
    conns.push(agentConn);

    const text = await metrics();
    const entrySvc = { service: 'spindle.admin.v1.EntryService', method: 'CountEntries' };
    assert.equal(sample(text, 'spindle_server_rpc_requests_total', { ...entrySvc, code: 'OK' }), 1);
    assert.equal(sample(text, 'spindle_server_rpc_duration_seconds_count', entrySvc), 1);
    assert.equal(sample(text, 'spindle_server_rpc_requests_total', { service: 'spindle.admin.v1.AgentService', method: 'CreateJoinToken', code: 'OK' }), 1);
    const attest = { service: 'spindle.agent.v1.AgentAPI', method: 'AttestAgent' };
    assert.equal(sample(text, 'spindle_server_rpc_requests_total', { ...attest, code: 'OK' }), 1);
    assert.equal(sample(text, 'spindle_server_rpc_requests_total', { ...attest, code: 'PERMISSION_DENIED' }), 2);
    assert.equal(sample(text, 'spindle_server_node_attestations_total', { attestor: 'join_token', result: 'ok' }), 1);
    assert.equal(sample(text, 'spindle_server_node_attestations_total', { attestor: 'join_token', result: 'denied' }), 2);
    assert.equal(sample(text, 'spindle_server_x509_svids_signed_total', { kind: 'agent' }), 1);
    assert.equal(sample(text, 'spindle_server_x509_svids_signed_total', { kind: 'workload' }), 0);
    assert.equal(sample(text, 'spindle_server_agents'), 1);
    assert.doesNotMatch(text, new RegExp(agentToken), 'no token in metrics');
  });

  test('workload X509-SVIDs and JWT-SVIDs signed through the agent API are counted', async () => {
    assert.ok(agentConn);
    const agentId = `spiffe://${TD}/spire/agent/join_token/${agentToken}`;
    const out = JSON.parse(
      ok(server.cli(['entry', 'create', '-parentID', agentId, '-spiffeID', `spiffe://${TD}/web`, '-selector', 'unix:uid:1000', '-output', 'json'])),
    ) as { results: Array<{ entry: { id: string } }> };
    const entryId = out.results[0]!.entry.id;
    const keys = await generateKeyPair();
    const client = agentConn.client;
    const res = await new Promise<BatchNewX509SVIDResponse>((resolve, reject) =>
      client.batchNewX509Svid(
        { params: [{ entryId, csr: createCsr(keys.privateKey) }, { entryId: 'not-mine', csr: createCsr(keys.privateKey) }] },
        (err, r) => (err ? reject(err) : resolve(r!)),
      ),
    );
    assert.equal(res.results[0]!.status!.code, status.OK);
    await new Promise((resolve, reject) => client.newJwtsvid({ entryId, audience: ['db'] }, (err, r) => (err ? reject(err) : resolve(r))));
    const text = await metrics();
    assert.equal(sample(text, 'spindle_server_x509_svids_signed_total', { kind: 'workload' }), 1, 'the refused CSR is not counted');
    assert.equal(sample(text, 'spindle_server_x509_svids_signed_total', { kind: 'agent' }), 1);
    assert.equal(sample(text, 'spindle_server_jwt_svids_minted_total'), 1);
    assert.equal(sample(text, 'spindle_server_entries'), 1);
    assert.equal(sample(text, 'spindle_server_rpc_requests_total', { method: 'BatchNewX509SVID', code: 'OK' }), 1);
    assert.equal(sample(text, 'spindle_server_rpc_requests_total', { method: 'NewJWTSVID', code: 'OK' }), 1);
    assert.doesNotMatch(text, new RegExp(entryId), 'no entry IDs in labels');
  });

  test('a streaming RPC is counted when it ends, with its final code; the stream gauge follows', async () => {
    assert.ok(agentConn);
    const stream = syncAuthorized(agentConn.client);
    stream.on('error', () => undefined);
    await new Promise((resolve) => stream.once('data', resolve));
    const open = await metrics();
    assert.equal(sample(open, 'spindle_server_agent_sync_streams'), 1);
    assert.equal(sample(open, 'spindle_server_rpc_requests_total', { method: 'SyncAuthorized' }), undefined, 'not counted while open');
    stream.cancel();
    const text = await eventually(async () => {
      const t = await metrics();
      return sample(t, 'spindle_server_rpc_requests_total', { method: 'SyncAuthorized', code: 'CANCELLED' }) === 1 ? t : undefined;
    }, 'SyncAuthorized counted as CANCELLED');
    assert.equal(sample(text, 'spindle_server_agent_sync_streams'), 0);
  });

  test('-logFormat json: every line is JSON with msg; the join token only ever appears inside the agent ID', () => {
    const log = server.log();
    const lines = log.split('\n').filter((l) => l.trim() !== '');
    assert.ok(lines.length > 5);
    for (const line of lines) {
      const rec = JSON.parse(line) as Record<string, unknown>;
      assert.equal(typeof rec['msg'], 'string', line);
    }
    assert.ok(lines.some((l) => l.includes('"msg":"join token created"')));
    for (const line of lines.filter((l) => l.includes('join token created'))) assert.ok(!line.includes(agentToken), line);
    const agentId = `spiffe://${TD}/spire/agent/join_token/${agentToken}`;
    const withToken = lines.filter((l) => l.includes(agentToken));
    assert.ok(withToken.length > 0, 'the agent ID is logged on attestation');
    for (const line of withToken) assert.ok(!line.split(agentId).join('').includes(agentToken), `token outside the agent ID: ${line}`);
    assert.ok(!log.includes('S3CR3T'), 'a refused token value is never logged');
    assert.ok(lines.some((l) => l.includes('"msg":"agent sync stream opened"') && l.includes('"level":20')), 'DEBUG lines from -logLevel DEBUG');
  });

  test('SIGTERM: open streams are ended, exit 0 within seconds, admin socket removed', async () => {
    assert.ok(agentConn);
    const stream = syncAuthorized(agentConn.client);
    const ended = new Promise<string>((resolve) => {
      stream.on('error', (e: ServiceError) => resolve(`error ${e.code}`));
      stream.on('end', () => resolve('end'));
    });
    stream.on('data', () => undefined);
    await eventually(async () => (sample(await metrics(), 'spindle_server_agent_sync_streams') === 1 ? true : undefined), 'stream open');
    const t0 = Date.now();
    assert.equal(await server.stop('SIGTERM'), 0);
    assert.ok(Date.now() - t0 < 5_000, `took ${Date.now() - t0} ms`);
    assert.equal(await ended, 'end', 'the server ended the stream cleanly');
    assert.ok(!existsSync(server.socketPath), 'admin socket removed');
    assert.match(server.log(), /"msg":"shutting down"/);
  });
});

describe('spindle-server run with flags only', () => {
  test('SIGINT: exit 0 within seconds, admin socket removed', async () => {
    const server = await startServerProcess();
    try {
      assert.ok(existsSync(server.socketPath));
      assert.match(ok(server.cli(['entry', 'count'])), /0 registration entries/);
      const t0 = Date.now();
      assert.equal(await server.stop('SIGINT'), 0);
      assert.ok(Date.now() - t0 < 5_000, `took ${Date.now() - t0} ms`);
      assert.ok(!existsSync(server.socketPath), 'admin socket removed');
      assert.match(server.log(), /shutting down.*signal=SIGINT/);
    } finally {
      if (server.proc.exitCode === null) await server.stop('SIGKILL');
      rmSync(server.dir, { recursive: true, force: true });
    }
  });
});

describe('two servers in one process', () => {
  const servers: RunningServer[] = [];
  const ports: Array<{ health: number; metrics: number }> = [];
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-inproc-'));
    for (const name of ['a', 'b']) {
      const p = { health: await freePort(), metrics: await freePort() };
      const raw = {
        health_checks: { listener_enabled: true, bind_address: '127.0.0.1', bind_port: p.health },
        telemetry: { Prometheus: { host: '127.0.0.1', port: p.metrics } },
        plugins: { KeyManager: { memory: { plugin_data: {} } } },
      };
      const config = parseServerConfig(
        raw,
        { trustDomain: `${name}.example`, dataDir: join(dir, name), socketPath: join(dir, `${name}.sock`), bindAddress: '127.0.0.1', serverPort: await freePort() },
        { cwd: dir },
      );
      servers.push(await startServer(config, { logger: pino({ level: 'silent' }) }));
      ports.push(p);
    }
  });
  after(async () => {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('each has its own registry', async () => {
    const [a, b] = servers as [RunningServer, RunningServer];
    assert.notEqual(a.metrics.registry, b.metrics.registry);
    a.metrics.x509SvidSigned('workload', 3);
    const ta = (await get(ports[0]!.metrics, '/metrics')).text;
    const tb = (await get(ports[1]!.metrics, '/metrics')).text;
    assert.equal(sample(ta, 'spindle_server_x509_svids_signed_total', { kind: 'workload' }), 3);
    assert.equal(sample(tb, 'spindle_server_x509_svids_signed_total', { kind: 'workload' }), 0);
  });

  test('/ready is 503 while the datastore does not answer; /live stays 200', async () => {
    const b = servers[1]!;
    assert.equal((await get(ports[1]!.health, '/ready')).status, 200);
    await b.datastore.close();
    const ready = await get(ports[1]!.health, '/ready');
    assert.equal(ready.status, 503);
    const body = JSON.parse(ready.text) as Record<string, unknown>;
    assert.equal(body['ready'], false);
    assert.equal(body['datastore'], 'unavailable');
    assert.deepEqual(body['reasons'], ['datastore unavailable']);
    assert.equal((await get(ports[1]!.health, '/live')).status, 200);
  });
});

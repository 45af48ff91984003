// The OIDC Discovery Provider end to end: a real spindle-server with jwt_issuer, bin/spindle-oidc
// started against it (the server's admin socket over HTTPS with serving certificate files; an
// agent's Workload API over plain HTTP behind allow_insecure_scheme; a Unix socket listener), and
// OIDC/JWT clients we did not write verifying real JWT-SVIDs through discovery: jose
// (createRemoteJWKSet + jwtVerify) and Python's PyJWT (PyJWKClient, Debian python3-jwt; missing
// is a failure, not a skip). Key rotation reaches /keys and a token signed with the new key
// verifies: on the server_api path by restarting the server with a memory KeyManager (new keys at
// once), on the workload_api path by a real scheduled rotation (ca_ttl 2m: the next JWT key is
// published after about a minute, pushed to the agent, and signs from about 100 s). Hostile
// requests: a Host not in domains, POST, unknown paths, a request body, oversized headers, an
// admin socket in an unsafe directory; /keys never holds private key members.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify, type FetchImplementation } from 'jose';
import { createWorkloadApiClient } from '../spiffe/workloadapi/index.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { freePort, repoRoot, startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';
import { openssl } from './support/testca.js';

const oidcBin = join(repoRoot, 'bin', 'spindle-oidc');
const TD = 'example.org';
const WORKLOAD_ID = `spiffe://${TD}/oidc-e2e/workload`;
const PYTHON = '/usr/bin/python3';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

interface Target {
  /** TCP port on 127.0.0.1, or a Unix socket path. */
  port?: number;
  socketPath?: string;
  tls?: { ca: Buffer; servername: string };
}

/** One HTTP(S) request to the provider; the Host header is whatever the test says. */
function call(t: Target, path: string, o: { method?: string; host?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (o.host !== undefined) headers['host'] = o.host;
    const opts = {
      method: o.method ?? 'GET',
      path,
      headers,
      timeout: 10_000,
      ...(t.socketPath !== undefined ? { socketPath: t.socketPath } : { host: '127.0.0.1', port: t.port }),
      ...(t.tls !== undefined ? { ca: t.tls.ca, servername: t.tls.servername } : {}),
    };
    const req = (t.tls !== undefined ? httpsRequest : httpRequest)(opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer in 10 s`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** jose's fetch for an https URL served with our test certificate (connects to 127.0.0.1). */
function fetchWithCa(ca: Buffer): FetchImplementation {
  return async (url) => {
    const u = new URL(url);
    const r = await call({ port: Number(u.port), tls: { ca, servername: u.hostname } }, u.pathname, { host: u.host });
    return new Response(r.body, { status: r.status, headers: { 'content-type': String(r.headers['content-type'] ?? '') } });
  };
}

interface OidcProc {
  proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

async function startOidc(dir: string, config: string): Promise<OidcProc> {
  const configPath = join(dir, `oidc-${Date.now()}.conf`);
  writeFileSync(configPath, config);
  const proc = spawn(oidcBin, ['-config', configPath], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`spindle-oidc did not become ready in 20 s:\n${log}`)), 20_000);
    const onData = (): void => {
      if (log.includes('spindle-oidc is ready')) {
        clearTimeout(timer);
        proc.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`spindle-oidc exited with ${code} before it was ready:\n${log}`));
    };
    proc.stderr!.on('data', onData);
    proc.stdout!.on('data', onData);
    proc.once('exit', onExit);
  });
  return {
    proc,
    log: () => log,
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

/** Waits (bounded: `polls` polls of 500 ms) until `pred` holds for /keys; returns the kids. */
async function waitForKids(t: Target, host: string, pred: (kids: string[]) => boolean, polls = 40): Promise<string[]> {
  let kids: string[] = [];
  for (let i = 0; i < polls; i++) {
    const r = await call(t, '/keys', { host });
    if (r.status === 200) {
      kids = (JSON.parse(r.body) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
      if (pred(kids)) return kids;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
  throw new Error(`/keys never held the expected kids; last: ${JSON.stringify(kids)}`);
}

function mint(server: ServerProcess, audience: string): string {
  const r = server.cli(['jwt', 'mint', '-spiffeID', WORKLOAD_ID, '-audience', audience]);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

const PY_VERIFY = `
import json, sys, urllib.request
import jwt
from jwt import PyJWKClient
issuer, audience, token = sys.argv[1:4]
conf = json.load(urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=10))
assert conf["issuer"] == issuer, conf
client = PyJWKClient(conf["jwks_uri"])
key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=conf["id_token_signing_alg_values_supported"], audience=audience, issuer=conf["issuer"])
print(json.dumps({"sub": claims["sub"], "kid": key.key_id, "iss": claims["iss"]}))
`;

/** PyJWT verifies `token` by discovery from `issuer`; returns what it printed, or throws with its stderr. */
function pyVerify(dir: string, issuer: string, audience: string, token: string, caFile?: string): { sub: string; kid: string; iss: string } {
  const script = join(dir, 'verify.py');
  writeFileSync(script, PY_VERIFY);
  const env: Record<string, string> = { PATH: '/usr/bin:/bin', NO_PROXY: '*', no_proxy: '*' };
  if (caFile !== undefined) env['SSL_CERT_FILE'] = caFile;
  const r = spawnSync(PYTHON, [script, issuer, audience, token], { encoding: 'utf8', env, timeout: 30_000 });
  if (r.error) throw new Error(`${PYTHON} could not run (apt-get install python3-jwt python3-cryptography): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`PyJWT verification failed (exit ${r.status}):\n${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { sub: string; kid: string; iss: string };
}

function pyVerifyFails(dir: string, issuer: string, audience: string, token: string, caFile?: string): string {
  try {
    pyVerify(dir, issuer, audience, token, caFile);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('PyJWT accepted a token it should have refused');
}

describe('spindle-oidc from the server admin socket, HTTPS with serving certificate files', () => {
  let dir: string;
  let server: ServerProcess;
  let oidc: OidcProc;
  let serverPort: number;
  let port: number;
  let issuer: string;
  let ca: Buffer;
  let caFile: string;
  let target: Target;
  const host = (): string => `localhost:${port}`;

  const serverArgs = (): string[] => ['-config', join(dir, 'server.yaml')];

  before(async () => {
    dir = tempDir('spindle-oidc-e2e-');
    port = await freePort();
    serverPort = await freePort();
    issuer = `https://localhost:${port}`;
    writeFileSync(
      join(dir, 'server.yaml'),
      `server:\n  jwt_issuer: ${issuer}\nplugins:\n  KeyManager:\n    memory:\n      plugin_data: {}\n`,
    );
    server = await startServerProcess({ dir, trustDomain: TD, port: serverPort, extraArgs: serverArgs() });
    openssl([
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-keyout', join(dir, 'serving.key'), '-out', join(dir, 'serving.pem'),
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    caFile = join(dir, 'serving.pem');
    ca = readFileSync(caFile);
    target = { port, tls: { ca, servername: 'localhost' } };
    oidc = await startOidc(
      dir,
      `domains = ["localhost"]
log_level = "debug"
serving_cert_file {
  cert_file_path = "${join(dir, 'serving.pem')}"
  key_file_path = "${join(dir, 'serving.key')}"
  addr = "127.0.0.1:${port}"
}
server_api {
  address = "unix://${server.socketPath}"
  poll_interval = "1s"
}
`,
    );
  });

  after(async () => {
    await oidc?.stop();
    await server?.stop();
  });

  test('discovery document: issuer is jwt_issuer, jwks_uri on the request host, SPIRE fixed members', async () => {
    const r = await call(target, '/.well-known/openid-configuration', { host: host() });
    assert.equal(r.status, 200, r.body);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.deepEqual(JSON.parse(r.body), {
      issuer,
      jwks_uri: `https://localhost:${port}/keys`,
      authorization_endpoint: '',
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256', 'ES256', 'ES384'],
    });
    const head = await call(target, '/.well-known/openid-configuration', { host: host(), method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  test('/keys: public JWT keys only, each with kid, alg and use sig; the bundle\'s X.509 authorities are not served', async () => {
    const r = await call(target, '/keys', { host: host() });
    assert.equal(r.status, 200);
    assert.match(String(r.headers['cache-control']), /no-store/);
    const jwks = JSON.parse(r.body) as { keys: Array<Record<string, unknown>> };
    assert.equal(Object.keys(jwks).join(), 'keys');
    assert.ok(jwks.keys.length >= 1);
    const bundle = JSON.parse(server.cli(['bundle', 'show', '-format', 'spiffe']).stdout) as { keys: Array<Record<string, unknown>> };
    const bundleKids = bundle.keys.filter((k) => k['use'] === 'jwt-svid').map((k) => k['kid']).sort();
    assert.deepEqual(jwks.keys.map((k) => k['kid']), bundleKids);
    for (const k of jwks.keys) {
      assert.equal(k['use'], 'sig');
      assert.equal(k['kty'], 'EC');
      assert.equal(k['alg'], 'ES256');
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'x5c']) assert.equal(k[secret], undefined, `member ${secret} must never be served`);
    }
    assert.doesNotMatch(r.body, /"d"\s*:/);
  });

  test('jose verifies a `jwt mint` JWT-SVID through discovery (issuer, audience, expiry)', async () => {
    const token = mint(server, 'oidc-e2e-aud');
    const doc = JSON.parse((await call(target, '/.well-known/openid-configuration', { host: host() })).body) as { issuer: string; jwks_uri: string };
    const jwks = createRemoteJWKSet(new URL(doc.jwks_uri), { [customFetch]: fetchWithCa(ca) });
    const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: doc.issuer, audience: 'oidc-e2e-aud', algorithms: ['ES256'] });
    assert.equal(payload.sub, WORKLOAD_ID);
    assert.equal(payload.iss, issuer);
    assert.ok(typeof protectedHeader.kid === 'string');
    await assert.rejects(jwtVerify(token, jwks, { issuer: doc.issuer, audience: 'someone-else' }), /aud/);
    await assert.rejects(jwtVerify(token, jwks, { issuer: 'https://other.example', audience: 'oidc-e2e-aud' }), /iss/);
    // Expiry: the same token a little after its exp is refused.
    await assert.rejects(jwtVerify(token, jwks, { issuer: doc.issuer, audience: 'oidc-e2e-aud', currentDate: new Date((payload.exp! + 60) * 1000) }), /exp/);
  });

  test('PyJWT (PyJWKClient) verifies the same kind of token through discovery over HTTPS', () => {
    const token = mint(server, 'oidc-e2e-py');
    const got = pyVerify(dir, issuer, 'oidc-e2e-py', token, caFile);
    assert.equal(got.sub, WORKLOAD_ID);
    assert.equal(got.iss, issuer);
    assert.equal(got.kid, decodeProtectedHeader(token).kid);
    assert.match(pyVerifyFails(dir, issuer, 'not-the-audience', token, caFile), /InvalidAudience/);
  });

  test('hostile requests: Host not in domains 400, POST 405, unknown path 404, a body 400', async () => {
    for (const path of ['/keys', '/.well-known/openid-configuration']) {
      assert.equal((await call(target, path, { host: `evil.example:${port}` })).status, 400);
      assert.equal((await call(target, path, { host: host(), headers: { 'x-forwarded-host': 'evil.example' } })).status, 400);
      const post = await call(target, path, { host: host(), method: 'POST', body: 'x' });
      assert.equal(post.status, 405);
      assert.equal(post.headers['allow'], 'GET, HEAD');
      assert.equal((await call(target, path, { host: host(), method: 'PUT' })).status, 405);
      assert.equal((await call(target, path, { host: host(), headers: { 'content-length': '4' }, body: 'abcd' })).status, 400);
    }
    for (const path of ['/', '/keys/', '/.well-known/', '/../keys', '/KEYS', '/metrics']) {
      assert.equal((await call(target, path, { host: host() })).status, 404, path);
    }
    // Headers over the 8 KiB limit are refused before any handler runs.
    assert.equal((await call(target, '/keys', { host: host(), headers: { 'x-filler': 'a'.repeat(16 * 1024) } })).status, 431);
    // Still serving.
    assert.equal((await call(target, '/keys', { host: host() })).status, 200);
  });

  test('an admin socket in a directory another user could write into is refused at startup', async () => {
    const unsafe = join(dir, 'unsafe');
    mkdirSync(unsafe, { mode: 0o777 });
    chmodSync(unsafe, 0o777);
    const configPath = join(dir, 'unsafe.conf');
    writeFileSync(configPath, `domains = ["localhost"]\ninsecure_addr = "127.0.0.1:${await freePort()}"\nserver_api {\n  address = "unix://${join(unsafe, 'api.sock')}"\n}\n`);
    const r = spawnSync(oidcBin, ['-config', configPath], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^Error: refusing to read JWT keys from .*api\.sock: /m);
  });

  test('key rotation: new JWT keys reach /keys, and a token signed with the new key verifies (jose and PyJWT)', async () => {
    const before = await waitForKids(target, host(), (k) => k.length >= 1);
    // The memory KeyManager loses its keys on restart: the server makes and publishes new ones,
    // keeping the old (still valid) keys in the bundle until they expire.
    await server.stop();
    server = await startServerProcess({ dir, trustDomain: TD, port: serverPort, extraArgs: serverArgs() });
    const after = await waitForKids(target, host(), (k) => k.some((kid) => !before.includes(kid)));
    const fresh = after.filter((kid) => !before.includes(kid));
    assert.equal(fresh.length, 1);
    for (const kid of before) assert.ok(after.includes(kid), 'old keys stay served while tokens signed with them may be valid');
    const token = mint(server, 'oidc-e2e-rotated');
    assert.equal(decodeProtectedHeader(token).kid, fresh[0]);
    const jwks = createRemoteJWKSet(new URL(`https://localhost:${port}/keys`), { [customFetch]: fetchWithCa(ca) });
    const { payload } = await jwtVerify(token, jwks, { issuer, audience: 'oidc-e2e-rotated' });
    assert.equal(payload.sub, WORKLOAD_ID);
    assert.equal(pyVerify(dir, issuer, 'oidc-e2e-rotated', token, caFile).kid, fresh[0]);
    assert.match(oidc.log(), /JWT keys changed/);
  });
});

describe('spindle-oidc from an agent\'s Workload API, plain HTTP behind allow_insecure_scheme, and a Unix socket listener', () => {
  let dir: string;
  let server: ServerProcess;
  let agent: AgentProcess;
  let oidc: OidcProc;
  let port: number;
  let issuer: string;

  before(async () => {
    dir = tempDir('spindle-oidc-wl-e2e-');
    port = await freePort();
    issuer = `http://localhost:${port}`;
    // A short ca_ttl, so the JWT key rotates during the test (see the rotation test).
    writeFileSync(join(dir, 'server.yaml'), `server:\n  jwt_issuer: ${issuer}\n  ca_ttl: 2m\n  default_x509_svid_ttl: 1m\n  default_jwt_svid_ttl: 1m\n`);
    server = await startServerProcess({ dir, trustDomain: TD, extraArgs: ['-config', join(dir, 'server.yaml')] });
    const alias = `spiffe://${TD}/oidc-e2e/node`;
    const token = generateJoinToken(server, alias);
    // The provider and the workload are this test's uid: one entry serves both.
    const r = server.cli(['entry', 'create', '-parentID', alias, '-spiffeID', WORKLOAD_ID, '-selector', `unix:uid:${process.getuid!()}`]);
    assert.equal(r.status, 0, r.stderr);
    agent = await startAgentProcess({ server, joinToken: token });
    oidc = await startOidc(
      dir,
      `domains = ["localhost"]
insecure_addr = "127.0.0.1:${port}"
allow_insecure_scheme = true
workload_api {
  socket_path = "${agent.socketPath}"
  trust_domain = "${TD}"
}
`,
    );
  });

  after(async () => {
    await oidc?.stop();
    await agent?.stop();
    await server?.stop();
  });

  test('a JWT-SVID from the agent\'s Workload API verifies through discovery (jose and PyJWT)', async () => {
    const target = { port };
    await waitForKids(target, `localhost:${port}`, (k) => k.length >= 1);
    const doc = JSON.parse((await call(target, '/.well-known/openid-configuration', { host: `localhost:${port}` })).body) as { issuer: string; jwks_uri: string };
    assert.equal(doc.issuer, issuer);
    assert.equal(doc.jwks_uri, `http://localhost:${port}/keys`);
    // Behind a TLS proxy: X-Forwarded-Proto https makes the URLs https again.
    const proxied = JSON.parse((await call(target, '/.well-known/openid-configuration', { host: 'localhost', headers: { 'x-forwarded-proto': 'https' } })).body) as { jwks_uri: string };
    assert.equal(proxied.jwks_uri, 'https://localhost/keys');

    const client = createWorkloadApiClient({ address: agent.address });
    try {
      const [svid] = await client.fetchJwtSvid({ audience: ['oidc-wl'] }, { timeoutMs: 10_000 });
      assert.ok(svid);
      const jwks = createRemoteJWKSet(new URL(doc.jwks_uri));
      const { payload } = await jwtVerify(svid.token, jwks, { issuer, audience: 'oidc-wl' });
      assert.equal(payload.sub, WORKLOAD_ID);
      assert.equal(pyVerify(dir, issuer, 'oidc-wl', svid.token).sub, WORKLOAD_ID);
    } finally {
      client.close();
    }
  });

  test('key rotation through the agent: the next JWT key, pushed to the agent, reaches /keys; a JWT-SVID signed with it verifies', async () => {
    const target = { port };
    const hostHeader = `localhost:${port}`;
    const before = await waitForKids(target, hostHeader, (k) => k.length >= 1);
    // ca_ttl is 2m here: the server prepares (publishes) the next JWT key at half the active key's
    // life and signs with it from 5/6. Bounded waits: 150 polls of 500 ms for each step.
    const after = await waitForKids(target, hostHeader, (k) => k.some((kid) => !before.includes(kid)), 150);
    const fresh = after.filter((kid) => !before.includes(kid));
    assert.equal(fresh.length, 1);
    assert.match(oidc.log(), /JWT keys changed/);
    const client = createWorkloadApiClient({ address: agent.address });
    try {
      let token = '';
      for (let i = 0; i < 150 && decodeProtectedHeader(token || 'e30.e30.').kid !== fresh[0]; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 500));
        // A new audience each time: the agent caches tokens per audience.
        const [svid] = await client.fetchJwtSvid({ audience: [`oidc-wl-rotated-${i}`] }, { timeoutMs: 10_000 });
        token = svid!.token;
      }
      assert.equal(decodeProtectedHeader(token).kid, fresh[0], 'the server never signed with the new key');
      const audience = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { aud: string[] }).aud[0]!;
      const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`http://localhost:${port}/keys`)), { issuer, audience });
      assert.equal(payload.sub, WORKLOAD_ID);
      assert.equal(pyVerify(dir, issuer, audience, token).kid, fresh[0]);
    } finally {
      client.close();
    }
  });

  test('listen_socket_path: the same documents on a Unix socket (for a reverse proxy)', async () => {
    const socketPath = join(dir, 'oidc', 'server.sock');
    const healthPort = await freePort();
    const viaSocket = await startOidc(
      dir,
      `domains = ["oidc.example.org"]
listen_socket_path = "${socketPath}"
jwks_uri = "https://oidc.example.org/jwks.json"
health_checks {
  bind_port = ${healthPort}
}
workload_api {
  socket_path = "${agent.socketPath}"
  trust_domain = "${TD}"
}
`,
    );
    try {
      const t = { socketPath };
      await waitForKids(t, 'oidc.example.org', (k) => k.length >= 1);
      const doc = JSON.parse((await call(t, '/.well-known/openid-configuration', { host: 'oidc.example.org' })).body) as { issuer: string; jwks_uri: string };
      // No jwt_issuer in the provider's config and no allow_insecure_scheme: https on the request host.
      assert.equal(doc.issuer, 'https://oidc.example.org');
      assert.equal(doc.jwks_uri, 'https://oidc.example.org/jwks.json');
      assert.equal((await call(t, '/keys', { host: 'localhost' })).status, 400);
      // health_checks: on localhost, ready once keys are held.
      const health = async (path: string): Promise<number> =>
        new Promise((resolve, reject) => httpRequest(`http://localhost:${healthPort}${path}`, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject).end());
      assert.equal(await health('/ready'), 200);
      assert.equal(await health('/live'), 200);
    } finally {
      await viaSocket.stop();
    }
  });
});

// The agent's client commands as real processes (bin/spindle-agent) against a real grpc-js fake
// agent on temp Unix sockets (spiffe/workloadapi/testkit.ts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { goTimeString } from '../../common/output.js';
import { validateJwtSvid } from '../../spiffe/jwtsvid.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { parseCertificate } from '../../spiffe/x509/index.js';
import { HealthCheckResponse_ServingStatus } from '../../proto/gen/grpc/health/v1/health.js';
import { createTestTrust, FakeAgent, type TestTrust } from '../../spiffe/workloadapi/testkit.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'spindle-agent');

let trust: TestTrust;
let agent: FakeAgent;
let denied: FakeAgent;
let work: string;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment without any SPIFFE_ENDPOINT_SOCKET of the test runner's own. */
function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  if (!('SPIFFE_ENDPOINT_SOCKET' in extra)) delete env['SPIFFE_ENDPOINT_SOCKET'];
  return env;
}

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; result: Promise<Run>; out: () => string } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: work, env: baseEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const result = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, result, out: () => stdout };
}

const run = (args: string[], env: Record<string, string> = {}): Promise<Run> => start(args, env).result;

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function fails(r: Run, stderr: RegExp): Run {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, stderr);
  return r;
}

async function until(what: string, cond: () => boolean, timeoutMs = 8000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function validity(label: string, der: Buffer): string {
  const c = parseCertificate(der);
  const s = (d: Date): number => Math.floor(d.getTime() / 1000);
  return `${label} Valid After:\t${goTimeString(s(c.notBefore))}\n${label} Valid Until:\t${goTimeString(s(c.notAfter))}\n`;
}

/** The SVID block SPIRE prints for one SVID of example.org with partner.org federated. */
function svidBlock(id: string, leaf: Buffer, partnerLabel: string): string {
  return (
    `\nSPIFFE ID:\t\t${id}\n` +
    validity('SVID', leaf) +
    validity('CA #1', trust.ca.rootDer) +
    validity(`[${partnerLabel}] CA #1`, trust.partner.rootDer)
  );
}

const RECEIVED = /^Received (\d+) svids? after \d+(\.\d+)?(ns|µs|ms|s)\n/;

before(async () => {
  trust = await createTestTrust();
  [agent, denied] = await Promise.all([
    FakeAgent.start({ identities: [trust.web, trust.db], ...trust.material }),
    FakeAgent.start({ identities: [], ...trust.material }),
  ]);
  work = mkdtempSync(join(tmpdir(), 'spindle-agent-cli-'));
});

after(async () => {
  await Promise.all([agent.close(), denied.close()]);
  rmSync(work, { recursive: true, force: true });
});

describe('api fetch x509', () => {
  test('-write creates a missing directory (and its parents) 0700, as SPIRE creates it', async () => {
    const dir = join(work, 'new', 'svids');
    const r = ok(await run(['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', dir]));
    assert.match(r.stdout, new RegExp(`Writing key #0 to file ${dir}/svid\\.0\\.key\\.`));
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(work, 'new')).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'svid.0.key')).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(dir, 'bundle.0.pem'), 'utf8'), certificatesToPem([trust.ca.rootDer]));
  });

  test('prints what SPIRE prints and -write writes svid/key/bundle/federated files that openssl accepts', async () => {
    const dir = join(work, 'out');
    spawnSync('mkdir', [dir]);
    const r = ok(await run(['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', dir]));
    const m = RECEIVED.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.equal(m[1], '2');
    const db = agent.state.identities[1]!;
    const expected =
      svidBlock('spiffe://example.org/web', trust.web.chain[0]!, 'spiffe://partner.org') +
      svidBlock('spiffe://example.org/db', db.chain[0]!, 'spiffe://partner.org') +
      '\n' +
      [0, 1]
        .map(
          (i) =>
            `Writing SVID #${i} to file ${dir}/svid.${i}.pem.\n` +
            `Writing key #${i} to file ${dir}/svid.${i}.key.\n` +
            `Writing bundle #${i} to file ${dir}/bundle.${i}.pem.\n` +
            `Writing federated bundle #0 for trust domain spiffe://partner.org to file ${dir}/federated_bundle.${i}.0.pem.\n`,
        )
        .join('');
    assert.equal(r.stdout.slice(m[0].length), expected);

    assert.deepEqual(readdirSync(dir).sort(), [
      'bundle.0.pem', 'bundle.1.pem', 'federated_bundle.0.0.pem', 'federated_bundle.1.0.pem',
      'svid.0.key', 'svid.0.pem', 'svid.1.key', 'svid.1.pem',
    ]);
    const mode = (f: string): number => statSync(join(dir, f)).mode & 0o777;
    assert.equal(mode('svid.0.key'), 0o600);
    assert.equal(mode('svid.1.key'), 0o600);
    assert.equal(mode('svid.0.pem'), 0o644);
    assert.equal(mode('bundle.0.pem'), 0o644);
    assert.equal(readFileSync(join(dir, 'svid.0.pem'), 'utf8'), certificatesToPem(trust.web.chain));
    assert.equal(readFileSync(join(dir, 'bundle.0.pem'), 'utf8'), certificatesToPem([trust.ca.rootDer]));
    assert.equal(readFileSync(join(dir, 'federated_bundle.0.0.pem'), 'utf8'), certificatesToPem([trust.partner.rootDer]));
    const key = createPrivateKey(readFileSync(join(dir, 'svid.0.key'), 'utf8'));
    assert.ok(createPublicKey(key).equals(parseCertificate(trust.web.chain[0]!).publicKey));

    // Independent checks with openssl: the chain verifies, the key belongs to the certificate.
    const verify = spawnSync('openssl', ['verify', '-CAfile', join(dir, 'bundle.0.pem'), join(dir, 'svid.0.pem')], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /svid\.0\.pem: OK/);
    const certPub = spawnSync('openssl', ['x509', '-noout', '-pubkey', '-in', join(dir, 'svid.1.pem')], { encoding: 'utf8' }).stdout;
    const keyPub = spawnSync('openssl', ['pkey', '-pubout', '-in', join(dir, 'svid.1.key')], { encoding: 'utf8' }).stdout;
    assert.ok(certPub.includes('BEGIN PUBLIC KEY'));
    assert.equal(certPub, keyPub);
  });

  test('`api fetch` alone is fetch x509; SPIFFE_ENDPOINT_SOCKET=unix:///path is honoured; -silent prints nothing', async () => {
    const calls = agent.calls.length;
    const r = ok(await run(['api', 'fetch', '-silent'], { SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}` }));
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, '');
    assert.deepEqual(agent.calls.slice(calls).map((c) => [c.rpc, c.header]), [['FetchX509SVID', ['true']]]);
    // -socketPath (any spelling) wins over the environment.
    const r2 = ok(await run(['api', 'fetch', '--socket-path', agent.socketPath], { SPIFFE_ENDPOINT_SOCKET: 'unix:///nonexistent/agent.sock' }));
    assert.match(r2.stdout, RECEIVED);
  });

  test('-output json: the X509SVIDResponse as SPIRE prints it (proto names, base64 bytes, sorted keys)', async () => {
    const r = ok(await run(['api', 'fetch', 'x509', '-output', 'json', `-socketPath=${agent.socketPath}`]));
    assert.equal(r.stdout.split('\n').length, 2, 'one line');
    assert.ok(r.stdout.startsWith('{"crl":[],"federated_bundles":{"spiffe://partner.org":'));
    const doc = JSON.parse(r.stdout) as { svids: Record<string, string>[]; federated_bundles: Record<string, string> };
    assert.deepEqual(Object.keys(doc.svids[0]!), ['bundle', 'hint', 'spiffe_id', 'x509_svid', 'x509_svid_key']);
    assert.equal(doc.svids[0]!['spiffe_id'], 'spiffe://example.org/web');
    assert.equal(doc.svids[0]!['hint'], 'web');
    assert.equal(doc.svids[0]!['x509_svid'], Buffer.concat(trust.web.chain).toString('base64'));
    assert.equal(doc.svids[0]!['x509_svid_key'], trust.web.keyPkcs8.toString('base64'));
    assert.equal(doc.svids[0]!['bundle'], trust.ca.rootDer.toString('base64'));
    assert.deepEqual(doc.federated_bundles, { 'spiffe://partner.org': trust.partner.rootDer.toString('base64') });
  });

  test('errors: Error: <what happened> on stderr, exit 1', async () => {
    const aFile = join(work, 'a-file');
    writeFileSync(aFile, '');
    const [noId, missing, badEnv, badTimeout, notDir] = await Promise.all([
      run(['api', 'fetch', 'x509', '-socketPath', denied.socketPath]),
      run(['api', 'fetch', 'x509', '-socketPath', join(work, 'nope.sock')]),
      run(['api', 'fetch'], { SPIFFE_ENDPOINT_SOCKET: 'tcp://localhost:8081' }),
      run(['api', 'fetch', '-socketPath', agent.socketPath, '-timeout', 'soon']),
      run(['api', 'fetch', '-socketPath', agent.socketPath, '-write', aFile]),
    ]);
    fails(noId, /^Error: FetchX509SVID failed: PERMISSION_DENIED: no identity issued\n$/);
    assert.equal(noId.stdout, '');
    fails(missing, /^Error: FetchX509SVID: cannot reach the Workload API at unix:\/\/.*nope\.sock \(no such socket\): is the agent running/);
    fails(badEnv, /^Error: invalid Workload API endpoint address "tcp:\/\/localhost:8081": host "localhost" must be an IP address/);
    fails(badTimeout, /^Error: invalid value "soon" for -timeout/);
    fails(notDir, /^Error: cannot use .*a-file for -write: -write directory .*a-file exists and is not a directory\n$/);
  });

  test('-timeout bounds the wait for an agent that does not answer', async () => {
    const slow = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    slow.hang = true;
    try {
      const t0 = Date.now();
      fails(await run(['api', 'fetch', '-socketPath', slow.socketPath, '-timeout', '300ms']), /^Error: FetchX509SVID: timed out after 300ms waiting for the Workload API/);
      assert.ok(Date.now() - t0 < 5000);
    } finally {
      await slow.close();
    }
  });
});

describe('api fetch jwt / validate jwt', () => {
  test('fetch jwt prints token(id) and bundle(td) blocks; tokens carry every audience', async () => {
    const r = ok(await run(['api', 'fetch', 'jwt', '-audience', 'a,b', '-audience', 'c', '-socketPath', agent.socketPath]));
    const tokens = [...r.stdout.matchAll(/^token\((spiffe:\/\/[^)]+)\):\n\t(\S+)\n/gm)].map((m) => [m[1]!, m[2]!] as const);
    assert.deepEqual(tokens.map(([id]) => id), ['spiffe://example.org/web', 'spiffe://example.org/db']);
    for (const [id, token] of tokens) {
      const v = await validateJwtSvid(token, { audience: 'c', bundles: trust.material.jwtBundles });
      assert.equal(v.id, id);
      assert.deepEqual(v.audience, ['a', 'b', 'c']);
    }
    assert.match(r.stdout, /^hint\(spiffe:\/\/example\.org\/web\):\n\tweb\n/m);
    const bundles = [...r.stdout.matchAll(/^bundle\((spiffe:\/\/[^)]+)\):\n\t(.+)\n/gm)].map((m) => [m[1], JSON.parse(m[2]!) as { keys: { kid: string; use: string }[] }] as const);
    assert.deepEqual(bundles.map(([td, doc]) => [td, doc.keys.map((k) => `${k.kid}/${k.use}`)]), [
      ['spiffe://example.org', ['kid-example/jwt-svid']],
      ['spiffe://partner.org', ['kid-partner/jwt-svid']],
    ]);
  });

  test('fetch jwt -spiffeID -output json: [JWTSVIDResponse, JWTBundlesResponse]', async () => {
    const r = ok(await run(['api', 'fetch', 'jwt', '-audience', 'x', '-spiffeID', 'spiffe://example.org/db', '-output', 'json'], { SPIFFE_ENDPOINT_SOCKET: agent.address }));
    const [svids, bundles] = JSON.parse(r.stdout) as [{ svids: { spiffe_id: string; svid: string; hint: string }[] }, { bundles: Record<string, string> }];
    assert.deepEqual(svids.svids.map((s) => [s.spiffe_id, s.hint]), [['spiffe://example.org/db', 'db']]);
    assert.deepEqual(Object.keys(bundles.bundles), ['spiffe://example.org', 'spiffe://partner.org']);
    const doc = JSON.parse(Buffer.from(bundles.bundles['spiffe://example.org']!, 'base64').toString('utf8')) as { keys: { kid: string }[] };
    assert.equal(doc.keys[0]!.kid, 'kid-example');
  });

  test('validate jwt: SPIRE output for a good token; the agent\'s reason for a bad one', async () => {
    const fetched = ok(await run(['api', 'fetch', 'jwt', '-audience', 'svc', '-spiffeID', 'spiffe://example.org/web', '-socketPath', agent.socketPath]));
    const token = /^token\(spiffe:\/\/example\.org\/web\):\n\t(\S+)$/m.exec(fetched.stdout)![1]!;
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    const [good, wrongAud, noSvid, noAud] = await Promise.all([
      run(['api', 'validate', 'jwt', '-audience', 'svc', '-svid', token, '-socketPath', agent.socketPath]),
      run(['api', 'validate', 'jwt', '-audience', 'other', '-svid', token, '-socketPath', agent.socketPath]),
      run(['api', 'validate', 'jwt', '-audience', 'svc', '-socketPath', agent.socketPath]),
      run(['api', 'fetch', 'jwt', '-socketPath', agent.socketPath]),
    ]);
    const sorted = `{"aud":["svc"],"exp":${String(claims['exp'])},"iat":${String(claims['iat'])},"sub":"spiffe://example.org/web"}`;
    assert.equal(ok(good).stdout, `SVID is valid.\nSPIFFE ID : spiffe://example.org/web\nClaims    : ${sorted}\n`);
    fails(wrongAud, /^Error: SVID is not valid: JWT-SVID audience does not include "other"\n$/);
    fails(noSvid, /^Error: svid must be specified\n$/);
    fails(noAud, /^Error: audience must be specified\n$/);
  });
});

describe('api watch', () => {
  test('prints each update as it arrives and ends cleanly on SIGINT', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const p = start(['api', 'watch', '-socketPath', live.socketPath]);
      await until('the first update', () => /Received 1 svid after/.test(p.out()));
      live.update({ identities: [trust.web, trust.db] });
      await until('the second update', () => /Received 2 svids after/.test(p.out()));
      p.child.kill('SIGINT');
      const r = ok(await p.result);
      const blocks = r.stdout.split(/(?=^Received )/m);
      assert.equal(blocks.length, 2);
      assert.match(blocks[0]!, RECEIVED);
      assert.equal(blocks[0]!.replace(RECEIVED, ''), `${svidBlock('spiffe://example.org/web', trust.web.chain[0]!, 'partner.org')}\n`);
      assert.match(blocks[1]!, /^Received 2 svids after /);
      assert.equal(r.stderr, '');
    } finally {
      await live.close();
    }
  });

  test('reconnects after the agent restarts; PERMISSION_DENIED ends it with exit 1', async () => {
    const live = await FakeAgent.start({ identities: [trust.web], ...trust.material });
    try {
      const p = start(['api', 'watch', '-socketPath', live.socketPath]);
      await until('the first update', () => /Received 1 svid after/.test(p.out()));
      await live.stop();
      live.update({ identities: [trust.db] });
      await live.listen();
      await until('the update after the restart', () => /SPIFFE ID:\t\tspiffe:\/\/example\.org\/db/.test(p.out()), 10_000);
      live.update({ identities: [] });
      const r = fails(await p.result, /Error: FetchX509SVID failed: PERMISSION_DENIED: no identity issued\n$/);
      assert.match(r.stderr, /FetchX509SVID.*\(retrying in 1s\)\n/);
    } finally {
      await live.close();
    }
  });
});

describe('healthcheck', () => {
  test('healthy agent (also for a caller without identity); NOT_SERVING and a missing socket are unhealthy', async () => {
    const [healthy, verbose, noIdentity, missing] = await Promise.all([
      run(['healthcheck', '-socketPath', agent.socketPath]),
      run(['healthcheck', '-verbose'], { SPIFFE_ENDPOINT_SOCKET: agent.address }),
      run(['healthcheck', '-socketPath', denied.socketPath]),
      run(['healthcheck', '-socketPath', join(work, 'gone.sock')]),
    ]);
    assert.equal(ok(healthy).stdout, 'Agent is healthy.\n');
    assert.equal(ok(verbose).stdout, 'Checking agent health...\nFetching X.509 bundles via the Workload API...\nSuccessfully fetched X.509 bundles.\nAgent is healthy.\n');
    assert.equal(ok(noIdentity).stdout, 'Agent is healthy.\n');
    fails(missing, /^Agent is unhealthy: unable to determine health: cannot reach the Workload API at unix:\/\/.*gone\.sock \(no such socket\)/);
    assert.ok(agent.calls.filter((c) => c.rpc === 'Health').every((c) => c.header[0] === 'true'));

    agent.health = HealthCheckResponse_ServingStatus.NOT_SERVING;
    try {
      fails(await run(['healthcheck', '-shallow', '-socketPath', agent.socketPath]), /^Agent is unhealthy: agent returned status "NOT_SERVING"\n$/);
    } finally {
      agent.health = HealthCheckResponse_ServingStatus.SERVING;
    }
  });
});

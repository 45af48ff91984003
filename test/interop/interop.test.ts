// Interop: a Workload API client we did not write (Python's grpc, Debian python3-grpcio, with
// stubs generated from OUR proto/workload/workload.proto at test time by python3-grpc-tools)
// against real spindle-server and spindle-agent processes. The SVID it receives is checked by
// tools we did not write either: `openssl verify` against the server's bundle, openssl and
// python3-cryptography for the key. Missing python3/grpc is a failure, not a skip: CI installs
// them (.ci/run).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { repoRoot, startServerProcess, type ServerProcess } from '../support/serverproc.js';

const TD = 'example.org';
const ALIAS = `spiffe://${TD}/interop/node`;
const MY_UID = process.getuid!();
const MY_ID = `spiffe://${TD}/interop/python-uid-${MY_UID}`;
const AUDIENCES = ['interop-a', 'interop-b'];
const CLIENT = join(repoRoot, 'test', 'interop', 'workload_client.py');
const INSTALL_HINT = 'apt-get install -y python3-grpcio python3-grpc-tools python3-cryptography (as .ci/run does)';

let server: ServerProcess;
let agent: AgentProcess;
let work: string;

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, ...opts });
  if (r.error) return { status: null, stdout: '', stderr: String(r.error) };
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * The first python3 that has grpc, grpc_tools and cryptography. Debian's packages live in
 * /usr/bin/python3's dist-packages, which a python3 earlier in PATH (pyenv, venv) does not see.
 */
let pythonCache: string | undefined;
function python(): string {
  if (pythonCache) return pythonCache;
  const candidates = [process.env['SPINDLE_PYTHON'], '/usr/bin/python3', 'python3'].filter((c): c is string => !!c);
  const tried: string[] = [];
  for (const c of candidates) {
    const r = run(c, ['-c', 'import grpc, grpc_tools.protoc, cryptography']);
    if (r.status === 0) return (pythonCache = c);
    tried.push(`${c}: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 200)}`);
  }
  assert.fail(`no python3 with grpc, grpc_tools and cryptography (${INSTALL_HINT}):\n${tried.join('\n')}`);
}

before(async () => {
  server = await startServerProcess({ trustDomain: TD });
  const token = generateJoinToken(server, ALIAS);
  ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', MY_ID, '-selector', `unix:uid:${MY_UID}`]), 'entry create');
  agent = await startAgentProcess({ server, joinToken: token });
  work = join(agent.dir, 'interop');
  mkdirSync(join(work, 'stubs'), { recursive: true });
  mkdirSync(join(work, 'out'), { recursive: true });
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  if (!process.env['SPINDLE_E2E_KEEP']) for (const d of [agent?.dir, server?.dir]) if (d) rmSync(d, { recursive: true, force: true });
});

describe('Python grpc client (stubs generated from our proto)', () => {
  test('python3 with grpc, grpc_tools and cryptography is installed', () => {
    const py = python();
    const v = ok(run(py, ['-c', 'import grpc, google.protobuf, cryptography; print(grpc.__version__, google.protobuf.__version__, cryptography.__version__)']), 'python3 versions');
    console.log(`# ${py}: grpcio, protobuf, cryptography = ${v.trim()}`);
  });

  test('stubs generate from proto/workload/workload.proto with grpc_tools.protoc', () => {
    const py = python();
    // google/protobuf/struct.proto comes with grpc_tools.
    const wellKnown = ok(run(py, ['-c', 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))']), 'grpc_tools include dir').trim();
    const stubs = join(work, 'stubs');
    ok(
      run(py, ['-m', 'grpc_tools.protoc', `-I${join(repoRoot, 'proto')}`, `-I${wellKnown}`, `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, 'workload/workload.proto'], { cwd: repoRoot }),
      'grpc_tools.protoc',
    );
    for (const f of ['workload_pb2.py', 'workload_pb2_grpc.py']) assert.ok(existsSync(join(stubs, 'workload', f)), `${f} generated`);
    const grpcStub = readFileSync(join(stubs, 'workload', 'workload_pb2_grpc.py'), 'utf8');
    assert.match(grpcStub, /'\/SpiffeWorkloadAPI\/FetchX509SVID'/, 'method paths have no package prefix: /SpiffeWorkloadAPI/<Method>');
  });

  test('it fetches an X509-SVID and a JWT-SVID; openssl verifies the SVID against the server bundle', async () => {
    const py = python();
    const out = join(work, 'out');
    const stdout = ok(
      run(py, [CLIENT, '--stubs', join(work, 'stubs'), '--socket', agent.socketPath, '--out', out, ...AUDIENCES.flatMap((a) => ['--audience', a])]),
      'the Python client',
    );
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
      grpc_version: string;
      x509: { spiffe_ids: string[]; chain_len: number; bundle_len: number; leaf_uri_sans: string[]; key_matches_leaf: boolean; federated_bundles: string[]; chain_verified: string; chain_against_wrong_bundle: string };
      jwt: { signature_verified: string; other_audience: string; claims_changed: string; spiffe_id: string; sub: string; aud: string[]; validated: Array<{ audience: string; spiffe_id: string; sub: string }>; wrong_audience: string };
      no_header: Record<string, string>;
    };

    // What Python decoded from the wire.
    assert.deepEqual(r.x509.spiffe_ids, [MY_ID]);
    assert.deepEqual(r.x509.leaf_uri_sans, [MY_ID]);
    assert.equal(r.x509.key_matches_leaf, true, 'python3-cryptography: the key belongs to the leaf');
    assert.ok(r.x509.chain_len >= 1 && r.x509.bundle_len >= 1);
    // Python validated the chain itself (signatures, CA flags, validity, one SPIFFE URI SAN)
    // against the bundle, and refused it against a bundle that did not sign it.
    assert.equal(r.x509.chain_verified, 'ok', 'python3-cryptography: the X509-SVID chain verifies against the bundle');
    assert.equal(r.x509.chain_against_wrong_bundle, 'no bundle root signed the chain');

    // The bundle in the response is the server's bundle (as `bundle show` prints it).
    const certsOf = (pem: string): string[] => (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p).fingerprint256);
    assert.deepEqual(certsOf(readFileSync(join(out, 'bundle.pem'), 'utf8')).sort(), certsOf(readFileSync(agent.bundlePath, 'utf8')).sort());

    // openssl, independently: the leaf chains to the server's bundle (not the one from the response).
    const chainPems = readFileSync(join(out, 'svid.pem'), 'utf8').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g) ?? [];
    assert.equal(chainPems.length, r.x509.chain_len);
    const verifyArgs = ['verify', '-CAfile', agent.bundlePath];
    if (chainPems.length > 1) {
      writeFileSync(join(out, 'intermediates.pem'), chainPems.slice(1).join(''));
      verifyArgs.push('-untrusted', join(out, 'intermediates.pem'));
    }
    assert.match(ok(run('openssl', [...verifyArgs, join(out, 'svid.pem')]), 'openssl verify'), /svid\.pem: OK/);
    assert.match(ok(run('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-ext', 'subjectAltName']), 'openssl x509 -ext'), new RegExp(`URI:${MY_ID.replace(/[/.]/g, '\\$&')}`));
    // ... and the key matches the certificate.
    const certPub = ok(run('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-pubkey']), 'openssl x509 -pubkey');
    const keyPub = ok(run('openssl', ['pkey', '-in', join(out, 'svid.key'), '-pubout']), 'openssl pkey -pubout');
    assert.equal(keyPub, certPub, 'openssl: the private key matches the SVID');

    // JWT-SVID: every audience, validated by the agent for each of them.
    assert.equal(r.jwt.spiffe_id, MY_ID);
    assert.equal(r.jwt.sub, MY_ID);
    assert.deepEqual([...r.jwt.aud].sort(), [...AUDIENCES].sort());
    assert.deepEqual(r.jwt.validated, AUDIENCES.map((audience) => ({ audience, spiffe_id: MY_ID, sub: MY_ID })));
    assert.equal(r.jwt.wrong_audience, 'INVALID_ARGUMENT');
    // Python verified the JWT-SVID's signature with the key (by kid) from FetchJWTBundles, its
    // audience and expiry; a changed claim or another audience fails there too.
    assert.equal(r.jwt.signature_verified, 'ok', 'python3-cryptography: the JWT-SVID verifies with the FetchJWTBundles key');
    assert.equal(r.jwt.other_audience, 'audience');
    assert.equal(r.jwt.claims_changed, 'bad signature');

    // No security header: INVALID_ARGUMENT for the stream and the unary call.
    assert.deepEqual(r.no_header, { FetchX509SVID: 'INVALID_ARGUMENT', FetchJWTSVID: 'INVALID_ARGUMENT' });
    console.log(`# python grpc ${r.grpc_version}: X509-SVID ${r.x509.spiffe_ids.join(',')} (chain ${r.x509.chain_len}, bundle ${r.x509.bundle_len}) verified by openssl; JWT-SVID aud ${r.jwt.aud.join(',')} validated by the agent and its signature verified in Python; no header -> ${Object.values(r.no_header).join('/')}`);
  });
});

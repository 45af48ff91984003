// What an operator sees when spindle-server or spindle-agent cannot start or must stop: real
// processes, the exact message and exit code, no stack trace, no raw gRPC status text, and
// nothing created or spent before the problem is found (no CA or datastore for the server, an
// unused join token for the agent). The read-only file system is a tmpfs mounted read-only
// (needs root, as CI runs).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { generateJoinToken, startAgentProcess } from './support/agentproc.js';
import { needsRoot } from './support/otheruid.js';
import { agentBin, freePort, serverBin, startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';

/** No stack trace, no Node event dump, no raw gRPC status text or grpc-js log line. */
function assertClean(stderr: string): void {
  for (const bad of [/^\s+at /m, /Unhandled 'error' event/, /node:events/, /^\d+ [A-Z_]+: /m, /UNAVAILABLE|PERMISSION_DENIED/, /No address added/, /^E /m]) {
    assert.doesNotMatch(stderr, bad, `stderr holds ${bad}:\n${stderr}`);
  }
}

function run(bin: string, args: string[], cwd: string): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(bin, args, { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

/** A read-only tmpfs at a fresh directory (unmounted and removed at exit). */
function readOnlyMount(): string {
  needsRoot('mounting a read-only file system');
  const dir = mkdtempSync(join(tmpdir(), 'spindle-ro-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,mode=0755', 'tmpfs', dir]);
  process.once('exit', () => {
    spawnSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

describe('spindle-server: startup problems are found before the CA and datastore are created', () => {
  let dir: string;
  let ro: string;
  let port: number;
  const serverArgs = (tag: string, extra: string[] = []): string[] => [
    'run',
    '-trustDomain', 'example.org',
    '-dataDir', join(dir, `data-${tag}`),
    '-socketPath', join(dir, `admin-${tag}`, 'api.sock'),
    '-bindAddress', '127.0.0.1',
    '-serverPort', String(port),
    ...extra,
  ];
  /** Nothing of a server was created: no data dir (so no CA keys and no datastore). */
  const nothingCreated = (tag: string): void => assert.equal(existsSync(join(dir, `data-${tag}`)), false, `data dir of ${tag} was created`);

  before(async () => {
    dir = tempDir('spindle-errs-');
    ro = readOnlyMount();
    port = await freePort();
  });

  test('-logFile in a missing directory: message naming the file and flag, exit 1, nothing created; validate says the same', () => {
    const log = join(dir, 'missing', 'server.log');
    const want = `Error: cannot open the log file ${log} (-logFile / log_file): its directory ${join(dir, 'missing')} does not exist; create ${join(dir, 'missing')} first, or choose a file in a writable directory, or leave -logFile / log_file unset to log to stderr\n`;
    const r = run(serverBin, serverArgs('logmissing', ['-logFile', log]), dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, want);
    nothingCreated('logmissing');
    const v = run(serverBin, ['validate', '-trustDomain', 'example.org', '-dataDir', join(dir, 'data-v'), '-logFile', log], dir);
    assert.equal(v.status, 1);
    assert.equal(v.stderr, want);
    assert.equal(v.stdout, '');
  });

  test('-logFile that is a directory, or on a read-only file system: exit 1, the reason, nothing created', () => {
    let r = run(serverBin, serverArgs('logdir', ['-logFile', dir]), dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: cannot open the log file ${dir} (-logFile / log_file): it is a directory; give a file path such as ${join(dir, 'spindle.log')}, or leave -logFile / log_file unset to log to stderr\n`);
    nothingCreated('logdir');
    const log = join(ro, 'server.log');
    r = run(serverBin, serverArgs('logro', ['-logFile', log]), dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: cannot open the log file ${log} (-logFile / log_file): it is on a read-only file system; choose a file in a writable directory, or leave -logFile / log_file unset to log to stderr\n`);
    nothingCreated('logro');
    const v = run(serverBin, ['validate', '-trustDomain', 'example.org', '-logFile', log], dir);
    assert.equal(v.status, 1);
    assert.equal(v.stderr, r.stderr);
  });

  test('agent API port in use: one clear message, no grpc-js text, no CA or datastore created', async () => {
    const squatter: Server = createServer();
    await new Promise<void>((ok) => squatter.listen(port, '127.0.0.1', ok));
    try {
      const r = run(serverBin, serverArgs('port'), dir);
      assert.equal(r.status, 1);
      assert.equal(
        r.stderr,
        `Error: cannot listen on 127.0.0.1:${port} for the agent API: port ${port} is already in use by another process (is spindle-server already running?); stop it or choose another port with -serverPort / bind_port\n`,
      );
      assertClean(r.stderr);
      nothingCreated('port');
    } finally {
      await new Promise<void>((ok) => squatter.close(() => ok()));
    }
  });

  test('admin socket path taken by a file, or its directory on a read-only file system: no CA or datastore created', () => {
    const taken = join(dir, 'admin-taken', 'api.sock');
    mkdirSync(join(dir, 'admin-taken'), { mode: 0o700 });
    writeFileSync(taken, 'not a socket');
    let r = run(serverBin, [...serverArgs('sock'), '-socketPath', taken], dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: admin socket path ${taken} (-socketPath / socket_path) exists and is not a socket; remove it or choose another -socketPath / socket_path\n`);
    nothingCreated('sock');
    const roSock = join(ro, 'admin', 'api.sock');
    r = run(serverBin, [...serverArgs('sockro'), '-socketPath', roSock], dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: cannot create admin socket directory ${join(ro, 'admin')}: it is on a read-only file system; create it yourself, or choose a path on a writable file system (-socketPath / socket_path)\n`);
    nothingCreated('sockro');
  });

  test('data directory on a read-only file system: says read-only (not "no such file"), names -dataDir', () => {
    const data = join(ro, 'data');
    const r = run(serverBin, [...serverArgs('dataro'), '-dataDir', data], dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: data directory ${data} (-dataDir / data_dir) cannot be created in ${ro}: it is on a read-only file system; choose another -dataDir / data_dir, or fix its permissions or mount\n`);
  });
});

describe('spindle-agent: problems are found before the join token is spent, and server errors are explained', () => {
  let server: ServerProcess;
  let dir: string;
  let ro: string;
  let bundle: string;
  const agentArgs = (tag: string, extra: string[]): string[] => [
    'run',
    '-trustDomain', 'example.org',
    '-serverAddress', '127.0.0.1',
    '-serverPort', String(server.port),
    '-socketPath', join(dir, `sock-${tag}`, 'api.sock'),
    '-dataDir', join(dir, `data-${tag}`),
    '-trustBundle', bundle,
    ...extra,
  ];

  before(async () => {
    server = await startServerProcess();
    dir = tempDir('spindle-agent-errs-');
    ro = readOnlyMount();
    bundle = join(dir, 'bundle.pem');
    const b = server.cli(['bundle', 'show']);
    assert.equal(b.status, 0, b.stderr);
    writeFileSync(bundle, b.stdout);
  });
  after(async () => {
    await server?.stop();
  });

  test('socket path taken, socket directory read-only, log file unusable: clear errors, and the join token is still unused', async () => {
    const token = generateJoinToken(server);
    const taken = join(dir, 'taken', 'api.sock');
    mkdirSync(join(dir, 'taken'), { mode: 0o755 });
    writeFileSync(taken, 'not a socket');
    let r = run(agentBin, [...agentArgs('taken', ['-joinToken', token]), '-socketPath', taken], dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: Workload API socket path ${taken} (-socketPath / socket_path) exists and is not a socket; remove it or choose another -socketPath / socket_path\n`);

    const roSock = join(ro, 'api.sock');
    r = run(agentBin, [...agentArgs('ro', ['-joinToken', token]), '-socketPath', roSock], dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: Workload API socket directory ${ro} (-socketPath / socket_path) is not writable: ${ro}: it is on a read-only file system; choose another -socketPath / socket_path\n`);

    const log = join(dir, 'missing', 'agent.log');
    r = run(agentBin, agentArgs('log', ['-joinToken', token, '-logFile', log]), dir);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `Error: cannot open the log file ${log} (-logFile / log_file): its directory ${join(dir, 'missing')} does not exist; create ${join(dir, 'missing')} first, or choose a file in a writable directory, or leave -logFile / log_file unset to log to stderr\n`);
    for (const tag of ['taken', 'ro', 'log']) assert.equal(existsSync(join(dir, `data-${tag}`, 'agent_svid.pem')), false);

    // The token was never presented: an agent with a usable socket attests with it.
    const agent = await startAgentProcess({ server, joinToken: token });
    assert.match(agent.log(), new RegExp(`node attestation succeeded agent_id=spiffe://example.org/spire/agent/join_token/${token}`));
    await agent.stop();
  });

  test('-trustBundle: a missing file names the flag and path; a garbage file is said to hold no PEM certificate; validate checks it', () => {
    const token = generateJoinToken(server);
    const missing = join(dir, 'nope.pem');
    let r = run(agentBin, agentArgs('tbmissing', ['-joinToken', token, '-trustBundle', missing]), dir);
    assert.equal(r.status, 1);
    const wantMissing = `Error: cannot read the trust bundle ${missing} (-trustBundle / trust_bundle_path): it (or a directory above it) does not exist; write it with \`spindle-server bundle show > ${missing}\` on the server, or fix the path\n`;
    assert.equal(r.stderr, wantMissing);
    const v = run(agentBin, ['validate', '-trustDomain', 'example.org', '-joinToken', token, '-trustBundle', missing], dir);
    assert.equal(v.status, 1);
    assert.equal(v.stderr, wantMissing);

    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'this is not a bundle\n');
    r = run(agentBin, agentArgs('tbgarbage', ['-joinToken', token, '-trustBundle', garbage]), dir);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `Error: the trust bundle ${garbage} (-trustBundle / trust_bundle_path) holds no PEM certificate ("-----BEGIN CERTIFICATE-----" block); write it with \`spindle-server bundle show > ${garbage}\` on the server\n`,
    );
  });

  test('server errors in operator words: wrong bundle, wrong trust domain, unreachable server, used join token', async () => {
    // A bundle of another server (another CA).
    const other = await startServerProcess();
    const otherBundle = join(dir, 'other-bundle.pem');
    writeFileSync(otherBundle, other.cli(['bundle', 'show']).stdout);
    await other.stop();
    const addr = `127.0.0.1:${server.port}`;

    const token = generateJoinToken(server);
    let r = run(agentBin, agentArgs('wrongbundle', ['-joinToken', token, '-trustBundle', otherBundle]), dir);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `Error: the server's certificate at ${addr} is not signed by the trust bundle ${otherBundle} (-trustBundle): the bundle belongs to another server or is out of date; get the current one with \`spindle-server bundle show\` on the server and give it with -trustBundle\n`,
    );

    r = run(agentBin, [...agentArgs('wrongtd', ['-joinToken', token]), '-trustDomain', 'other.org'], dir);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `Error: the server at ${addr} identifies as spiffe://example.org/spire/server, but this agent expects spiffe://other.org/spire/server (trust domain other.org): check -trustDomain / trust_domain and -serverAddress / server_address\n`,
    );

    const closed = await freePort();
    r = run(agentBin, [...agentArgs('unreachable', ['-joinToken', token]), '-serverPort', String(closed)], dir);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `Error: cannot reach spindle-server at 127.0.0.1:${closed} (connection refused): check that it is running and that -serverAddress / server_address and -serverPort / server_port point at it\n`,
    );

    // None of those spent it; this one does, and the next agent is refused.
    const first = await startAgentProcess({ server, joinToken: token });
    await first.stop();
    r = run(agentBin, agentArgs('reused', ['-joinToken', token]), dir);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `Error: the server at ${addr} refused join token ${token}: it does not exist or was already used; create a new one with \`spindle-server token generate\` and pass it with -joinToken\n`,
    );
    for (const e of [r.stderr]) assertClean(e);
  });

  test('an evicted join-token agent says once what to do, forgets its SVID and exits with code 3; a new token brings it back', async () => {
    const token = generateJoinToken(server);
    const agent = await startAgentProcess({ server, joinToken: token });
    const agentId = `spiffe://example.org/spire/agent/join_token/${token}`;
    const exited = new Promise<number | null>((ok) => agent.proc.once('exit', (code) => ok(code)));
    const ev = server.cli(['agent', 'evict', '-spiffeID', agentId]);
    assert.equal(ev.status, 0, ev.stderr);
    const timeout = setTimeout(() => agent.proc.kill('SIGKILL'), 30_000);
    const code = await exited;
    clearTimeout(timeout);
    assert.equal(code, 3, agent.log());
    const message = `the server has evicted this agent (${agentId}) and it cannot attest again by itself (its join token was used up); its stored agent SVID was removed from ${agent.dataDir}. Create a new join token with \`spindle-server token generate\` and restart the agent with -joinToken <token>. Exiting with code 3.`;
    const lines = agent.log().split('\n').filter((l) => l.includes(message));
    assert.equal(lines.length, 1, agent.log());
    assert.match(lines[0]!, /ERROR /);
    assert.deepEqual(readdirSync(agent.dataDir).sort(), ['bundle.pem']);
    // Restarted with a new token in the same directories, it attests and serves again.
    const again = await startAgentProcess({ server, dir: agent.dir, joinToken: generateJoinToken(server) });
    assert.match(again.log(), /node attestation succeeded/);
    await again.stop();
  });
});

// Another local user (uid 65534) against root-run spindle-server, spindle-agent and the admin
// CLI, with real processes:
// - the admin socket permission race: a native-speed connect() loop running as 65534 while the
//   server starts under umask 000 in a socket directory others may enter must never get a
//   connection (and so never an admin call);
// - socket and data directories another user owns (or may write without the sticky bit) are
//   refused with the path, owner and mode named, before anything is created; root's admin CLI
//   refuses to talk through a socket directory the other user controls (where that user runs
//   a server of their own).
// Needs root to act as uid 65534 (CI runs as root): without it the tests FAIL, saying why.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentBin, freePort, serverBin, tempDir } from '../support/serverproc.js';
import { forOtherUid, needsRoot } from '../support/otheruid.js';
import { startUntilReady } from '../support/ready.js';

const NOBODY = 65534;
const asNobody = { uid: NOBODY, gid: NOBODY };
const procs: ChildProcess[] = [];
const tmpPaths: string[] = [];

before(() => {
  needsRoot('acting as uid 65534');
});

after(async () => {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
    }
  }
  for (const p of tmpPaths) rmSync(p, { recursive: true, force: true });
});

/** A fresh name directly under /tmp (like the default socket paths), removed at the end. */
function tmpName(prefix: string): string {
  const p = join('/tmp', `${prefix}${randomBytes(5).toString('hex')}`);
  tmpPaths.push(p);
  return p;
}

/** mkdir as uid 65534: the directory the other user pre-created. */
function mkdirAsNobody(path: string, mode = '0755'): void {
  const r = spawnSync('mkdir', ['-p', '-m', mode, path], { ...asNobody, encoding: 'utf8' });
  assert.equal(r.status, 0, `mkdir ${path} as 65534: ${r.stderr}`);
}

/** A dir that uid 65534 can traverse (tempDir is 0700 root). */
function openTempDir(prefix: string): string {
  const dir = tempDir(prefix);
  chmodSync(dir, 0o755);
  return dir;
}

/** Spawns `bin args` (see startUntilReady), kept for cleanup; resolves when `ready` is logged. */
function startProcess(bin: string, args: string[], ready: string, opts: { umask000?: boolean; uid?: number; cwd?: string } = {}): Promise<{ proc: ChildProcess; log: () => string }> {
  const started = startUntilReady(bin, args, ready, opts);
  procs.push(started.proc);
  return started.ready;
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

function serverArgs(o: { dataDir: string; socketPath: string; port: number }): string[] {
  return ['run', '-trustDomain', 'example.org', '-dataDir', o.dataDir, '-socketPath', o.socketPath, '-bindAddress', '127.0.0.1', '-serverPort', String(o.port), '-logLevel', 'DEBUG'];
}

/** Runs spindle-server expecting it to refuse to start. */
function serverMustRefuse(o: { dataDir: string; socketPath: string; port: number; cwd: string }): string {
  const r = spawnSync(serverBin, serverArgs(o), { cwd: o.cwd, encoding: 'utf8', timeout: 30_000 });
  const out = `${r.stdout}${r.stderr}`;
  assert.notEqual(r.status, 0, `spindle-server started although it should have refused:\n${out}`);
  assert.equal(r.signal, null, `spindle-server did not exit by itself (${r.signal}):\n${out}`);
  return out;
}

/** Runs spindle-agent expecting it to refuse to start (it never gets as far as dialing the server). */
function agentMustRefuse(o: { dataDir: string; socketPath: string; cwd: string }): string {
  const args = ['run', '-trustDomain', 'example.org', '-serverAddress', '127.0.0.1', '-serverPort', '1', '-socketPath', o.socketPath, '-dataDir', o.dataDir, '-insecureBootstrap', '-joinToken', randomUUID(), '-logLevel', 'DEBUG'];
  const r = spawnSync(agentBin, args, { cwd: o.cwd, encoding: 'utf8', timeout: 30_000 });
  const out = `${r.stdout}${r.stderr}`;
  assert.notEqual(r.status, 0, `spindle-agent started although it should have refused:\n${out}`);
  assert.equal(r.signal, null, `spindle-agent did not exit by itself (${r.signal}):\n${out}`);
  return out;
}

/** The refusal names `what` and the offending `path` with its owner and mode. */
function assertNames(out: string, what: string, path: string, owner: number, mode: string): void {
  assert.ok(out.includes(what), `message does not say which directory (${what}):\n${out}`);
  assert.ok(out.includes(`${path} is `), `message does not name ${path}:\n${out}`);
  assert.ok(out.includes(`owner uid ${owner}, mode ${mode}`), `message does not give owner ${owner} and mode ${mode}:\n${out}`);
}

// The attacker's connect loop: native speed (python3, AF_UNIX), started before the server, as
// uid 65534. Connections that succeed are kept; after the loop each kept one is handed (by fd)
// to a small Node helper that makes an admin call (EntryService/CountEntries) over it.
const HAMMER_PY = String.raw`
import ctypes, errno, json, os, select, socket, subprocess, sys, time
path, stopfile, node, helper, limit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
# Sleep (no CPU taken from the server) until something is created in the socket directory, via
# inotify: woken right at bind(), the loop then runs while the server is between steps.
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(0)
IN_CREATE = 0x100
if ino < 0 or libc.inotify_add_watch(ino, os.path.dirname(path).encode(), IN_CREATE) < 0:
    print(json.dumps({"error": "inotify: " + os.strerror(ctypes.get_errno())}), flush=True)
    sys.exit(1)
print("hammering", flush=True)
select.select([ino], [], [], limit)
end = time.monotonic() + limit
attempts = connects = missing = denied = 0
errors = {}
kept = []
# One socket retried until a connect succeeds (a failed AF_UNIX connect leaves it reusable):
# no socket()/close() per attempt, so the loop runs at a few microseconds per connect().
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn = s.connect
while True:
    attempts += 1
    try:
        conn(path)
        connects += 1
        if len(kept) < 3:
            kept.append(s)
        else:
            s.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn = s.connect
    except FileNotFoundError:
        missing += 1
    except PermissionError:
        denied += 1
    except OSError as e:
        name = os.strerror(e.errno) if e.errno else str(e)
        errors[name] = errors.get(name, 0) + 1
    # Bounded: stop once the socket has refused us for a while (its final mode is in place).
    if denied >= 20000 or (attempts % 1000 == 0 and (os.path.exists(stopfile) or time.monotonic() > end)):
        break
errors[os.strerror(errno.ENOENT)] = missing
errors[os.strerror(errno.EACCES)] = denied
calls = []
for k in kept:
    fd = k.fileno()
    r = subprocess.run([node, helper, str(fd)], pass_fds=[fd], capture_output=True, text=True, timeout=20)
    calls.append(r.stdout.strip() or r.stderr.strip())
print(json.dumps({"attempts": attempts, "connects": connects, "errors": errors, "calls": calls}), flush=True)
`;

const CALL_MJS = `
import http2 from 'node:http2';
import net from 'node:net';
const sock = new net.Socket({ fd: Number(process.argv[2]), readable: true, writable: true });
const done = (r) => { console.log(JSON.stringify(r)); process.exit(0); };
setTimeout(() => done({ ok: false, error: 'timeout' }), 10000).unref();
const session = http2.connect('http://localhost', { createConnection: () => sock });
session.on('error', (e) => done({ ok: false, error: String(e) }));
const req = session.request({ ':method': 'POST', ':path': '/spindle.admin.v1.EntryService/CountEntries', 'content-type': 'application/grpc', te: 'trailers' });
let status;
let body = Buffer.alloc(0);
req.on('response', (h) => { if (h['grpc-status'] !== undefined) status = h['grpc-status']; });
req.on('trailers', (h) => { status = h['grpc-status']; });
req.on('data', (d) => { body = Buffer.concat([body, d]); });
req.on('end', () => done({ ok: status === '0', grpcStatus: status, replyBytes: body.length }));
req.on('error', (e) => done({ ok: false, error: String(e) }));
req.end(Buffer.alloc(5));
`;

interface HammerResult {
  attempts: number;
  connects: number;
  errors: Record<string, number>;
  calls: string[];
}

/** One attacker loop as uid 65534; `started` once it loops, `result` when it has stopped. */
function startHammer(py: string, args: string[], cwd: string): { started: Promise<void>; result: Promise<HammerResult> } {
  const hammer = spawn('/usr/bin/python3', [py, ...args], { ...asNobody, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(hammer);
  let out = '';
  let err = '';
  hammer.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const started = new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`attack loop did not start: ${err}`)), 10_000);
    hammer.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('hammering')) {
        clearTimeout(t);
        ok();
      }
    });
  });
  const result = new Promise<HammerResult>((ok, fail) => {
    hammer.once('exit', () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) ok(JSON.parse(line) as HammerResult);
      else fail(new Error(`no result from the attack loop: ${out}\n${err}`));
    });
  });
  return { started, result };
}

describe('admin socket permission race (server under umask 000, socket directory others may enter)', () => {
  it('a uid-65534 connect() loop running during startup never connects, so never makes an admin call', async (t) => {
    const ROUNDS = 8;
    const HAMMERS = 2;
    const results: HammerResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const dir = openTempDir('spindle-race-');
      const socketDir = join(dir, 'admin');
      // Ours and 0755: allowed (others may enter, only the socket's mode keeps them out).
      mkdirSync(socketDir);
      chmodSync(socketDir, 0o755);
      const socketPath = join(socketDir, 'api.sock');
      const stopFile = join(dir, 'stop');
      const py = join(dir, 'hammer.py');
      const helper = join(dir, 'call.mjs');
      writeFileSync(py, HAMMER_PY, { mode: 0o644 });
      writeFileSync(helper, CALL_MJS, { mode: 0o644 });
      const hammers = Array.from({ length: HAMMERS }, () => startHammer(py, [socketPath, stopFile, process.execPath, helper, '60'], dir));
      await Promise.all(hammers.map((h) => h.started));
      // The server at the lowest CPU priority: on a busy machine it is preempted between any two
      // steps, which is when the attacker's loops run. That widens a window, never creates one.
      const server = await startProcess('nice', ['-n', '19', serverBin, ...serverArgs({ dataDir: join(dir, 'data'), socketPath, port: await freePort() })], 'spindle-server is ready', { umask000: true, cwd: dir });
      writeFileSync(stopFile, '');
      for (const h of hammers) results.push(await h.result);
      await stop(server.proc);
    }
    const summary = results.map((r) => `attempts ${r.attempts}, connects ${r.connects}, errors ${JSON.stringify(r.errors)}, calls ${JSON.stringify(r.calls)}`).join('\n');
    t.diagnostic(summary);
    assert.deepEqual(
      results.map((r) => r.connects),
      results.map(() => 0),
      `uid 65534 connected to the admin socket during startup:\n${summary}`,
    );
    for (const r of results) for (const c of r.calls) assert.doesNotMatch(c, /"ok":true/, `uid 65534 made an admin call:\n${summary}`);
    // The loops ran while the socket was in place (they saw it refuse them).
    for (const r of results) assert.ok(r.attempts >= 1000 && (r.errors['Permission denied'] ?? 0) > 0, `the attack loop ran too little to mean anything:\n${summary}`);
  });
});

describe('socket and data directories another local user controls', () => {
  it('server: a socket directory under /tmp pre-created by uid 65534 is refused, naming path, owner and mode; nothing is created', () => {
    const dir = tempDir('spindle-lu-');
    const theirs = tmpName('spindle-lu-srv-');
    mkdirAsNobody(join(theirs, 'private'));
    const dataDir = join(dir, 'data');
    const out = serverMustRefuse({ dataDir, socketPath: join(theirs, 'private', 'api.sock'), port: 1, cwd: dir });
    assertNames(out, 'admin socket directory', theirs, NOBODY, '0755');
    assert.equal(existsSync(dataDir), false, 'no data dir, CA or datastore may be created');
    assert.deepEqual(readdirSync(join(theirs, 'private')), []);
  });

  it('agent: a socket directory under /tmp pre-created by uid 65534 is refused, naming path, owner and mode; nothing is created', () => {
    const dir = tempDir('spindle-lu-');
    const theirs = tmpName('spindle-lu-agt-');
    mkdirAsNobody(join(theirs, 'public'));
    const dataDir = join(dir, 'data');
    const out = agentMustRefuse({ dataDir, socketPath: join(theirs, 'public', 'api.sock'), cwd: dir });
    assertNames(out, 'Workload API socket directory', theirs, NOBODY, '0755');
    assert.equal(existsSync(dataDir), false, 'no agent data dir may be created');
    assert.deepEqual(readdirSync(join(theirs, 'public')), []);
  });

  it('server and agent: a data directory owned by uid 65534 is refused', () => {
    const dir = tempDir('spindle-lu-');
    const theirs = join(dir, 'their-data');
    mkdirSync(theirs, { mode: 0o700 });
    chownSync(theirs, NOBODY, NOBODY);
    const srv = serverMustRefuse({ dataDir: theirs, socketPath: join(dir, 'admin', 'api.sock'), port: 1, cwd: dir });
    assertNames(srv, 'server data directory', theirs, NOBODY, '0700');
    assert.deepEqual(readdirSync(theirs), [], 'nothing written into their directory');
    assert.equal(existsSync(join(dir, 'admin')), false);
    const agt = agentMustRefuse({ dataDir: theirs, socketPath: join(dir, 'public', 'api.sock'), cwd: dir });
    assertNames(agt, 'agent data directory', theirs, NOBODY, '0700');
    assert.deepEqual(readdirSync(theirs), []);
  });

  it('a group- or world-writable socket directory without the sticky bit is refused, itself or as a parent', () => {
    const dir = tempDir('spindle-lu-');
    const world = join(dir, 'world');
    mkdirSync(world);
    chmodSync(world, 0o777);
    let out = serverMustRefuse({ dataDir: join(dir, 'data'), socketPath: join(world, 'api.sock'), port: 1, cwd: dir });
    assertNames(out, 'admin socket directory', world, 0, '0777');
    const group = join(dir, 'group');
    mkdirSync(join(group, 'private'), { recursive: true, mode: 0o700 });
    chmodSync(group, 0o775);
    out = serverMustRefuse({ dataDir: join(dir, 'data'), socketPath: join(group, 'private', 'api.sock'), port: 1, cwd: dir });
    assertNames(out, 'admin socket directory', group, 0, '0775');
    out = agentMustRefuse({ dataDir: join(dir, 'agent-data'), socketPath: join(world, 'public', 'api.sock'), cwd: dir });
    assertNames(out, 'Workload API socket directory', world, 0, '0777');
    assert.equal(existsSync(join(dir, 'data')), false);
    assert.equal(existsSync(join(dir, 'agent-data')), false);
  });

  it('/tmp itself (root-owned, sticky) is accepted as a socket directory', async () => {
    const dir = tempDir('spindle-lu-');
    const socketPath = tmpName('spindle-lu-') + '.sock';
    const server = await startProcess(serverBin, serverArgs({ dataDir: join(dir, 'data'), socketPath, port: await freePort() }), 'spindle-server is ready', { cwd: dir });
    try {
      const r = spawnSync(serverBin, ['bundle', 'show', '-socketPath', socketPath], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /BEGIN CERTIFICATE/);
    } finally {
      await stop(server.proc);
    }
    assert.equal(existsSync(socketPath), false, 'socket removed at shutdown');
  });
});

describe('admin CLI against a socket directory another local user controls', () => {
  let theirs: string;
  let socketPath: string;
  let attacker: ChildProcess;
  const cli = (args: string[], uid?: number): SpawnSyncReturns<string> =>
    spawnSync(uid !== undefined ? forOtherUid(serverBin) : serverBin, [...args, '-socketPath', socketPath], { encoding: 'utf8', timeout: 20_000, ...(uid !== undefined ? { uid, gid: uid } : {}) });

  before(async () => {
    // uid 65534 pre-creates the directory under /tmp and runs a server of its own there.
    theirs = tmpName('spindle-lu-cli-');
    mkdirAsNobody(theirs);
    socketPath = join(theirs, 'private', 'api.sock');
    ({ proc: attacker } = await startProcess(forOtherUid(serverBin), serverArgs({ dataDir: join(theirs, 'data'), socketPath, port: await freePort() }), 'spindle-server is ready', { uid: NOBODY, cwd: theirs }));
  });

  after(async () => {
    if (attacker) await stop(attacker);
  });

  it("root's `bundle show` and `entry create` refuse to talk to it: the attacker's CA is not printed, no entry reaches it", () => {
    const theirBundle = cli(['bundle', 'show'], NOBODY);
    assert.equal(theirBundle.status, 0, `the attacker's own server works for the attacker: ${theirBundle.stderr}`);
    assert.match(theirBundle.stdout, /BEGIN CERTIFICATE/);

    const show = cli(['bundle', 'show']);
    assert.notEqual(show.status, 0, `root's bundle show talked to the attacker's server:\n${show.stdout}`);
    assert.doesNotMatch(show.stdout, /BEGIN CERTIFICATE/, "root's bundle show printed the attacker's CA");
    assert.match(show.stderr, /refusing to connect to the admin socket/);
    assertNames(show.stderr, 'admin socket directory', theirs, NOBODY, '0755');

    const create = cli(['entry', 'create', '-parentID', 'spiffe://example.org/agent', '-spiffeID', 'spiffe://example.org/root-workload', '-selector', 'unix:uid:0']);
    assert.notEqual(create.status, 0, `root's entry create went to the attacker's server:\n${create.stdout}`);
    assert.match(create.stderr, /refusing to connect to the admin socket/);
    const count = cli(['entry', 'count'], NOBODY);
    assert.equal(count.status, 0, count.stderr);
    assert.match(count.stdout, /^0 registration entries|^0\b/m, `the attacker's server received an entry: ${count.stdout}`);
  });
});

// File modes regardless of umask: a server and an agent started under `umask 000` still write
// keys 0600, keep their data dirs closed to others, and the admin socket refuses another uid.
// The other-uid check needs root (CI runs as root): without it the test FAILS, saying why.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentBin, freePort, serverBin } from '../support/serverproc.js';
import { forOtherUid, needsRoot } from '../support/otheruid.js';
import { startUntilReady } from '../support/ready.js';

let dir: string;
const procs: ChildProcess[] = [];

function startUnderUmask000(bin: string, args: string[], ready: string): Promise<{ proc: ChildProcess; log: () => string }> {
  const started = startUntilReady(bin, args, ready, { umask000: true, timeoutMs: 20_000 });
  procs.push(started.proc);
  return started.ready;
}

const mode = (p: string): number => statSync(p).mode & 0o777;
const octal = (m: number): string => m.toString(8).padStart(3, '0');

let serverData: string;
let adminSocket: string;
let agentData: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-umask-'));
  chmodSync(dir, 0o755);
  serverData = join(dir, 'server-data');
  adminSocket = join(dir, 'admin', 'api.sock');
  // An existing, open socket directory: the server leaves it as it is, so only the socket's own
  // mode can keep other users out.
  mkdirSync(join(dir, 'admin'));
  chmodSync(join(dir, 'admin'), 0o755);
  const port = await freePort();
  await startUnderUmask000(serverBin, ['run', '-trustDomain', 'example.org', '-dataDir', serverData, '-socketPath', adminSocket, '-bindAddress', '127.0.0.1', '-serverPort', String(port), '-logLevel', 'DEBUG'], 'spindle-server is ready');
  const cli = (args: string[]) => spawnSync(serverBin, [...args, '-socketPath', adminSocket], { encoding: 'utf8', timeout: 20_000 });
  const token = /^Token: (\S+)$/m.exec(cli(['token', 'generate']).stdout)?.[1];
  assert.ok(token, 'token generate');
  const bundlePath = join(dir, 'bundle.pem');
  writeFileSync(bundlePath, cli(['bundle', 'show']).stdout);
  agentData = join(dir, 'agent-data');
  mkdirSync(join(dir, 'public'), { mode: 0o755 });
  await startUnderUmask000(
    agentBin,
    ['run', '-trustDomain', 'example.org', '-serverAddress', '127.0.0.1', '-serverPort', String(port), '-socketPath', join(dir, 'public', 'api.sock'), '-dataDir', agentData, '-trustBundle', bundlePath, '-joinToken', token, '-logLevel', 'DEBUG'],
    'spindle-agent is ready',
  );
});

after(async () => {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every file under `root`, recursively. */
function walk(root: string): string[] {
  return readdirSync(root, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? [join(root, e.name), ...walk(join(root, e.name))] : [join(root, e.name)]));
}

test('server under umask 000: key files 0600, data dir and everything in it closed to others', () => {
  assert.equal(mode(serverData) & 0o077, 0, `server data dir is ${octal(mode(serverData))}`);
  const files = walk(serverData);
  const keys = files.filter((f) => f.endsWith('.key'));
  assert.ok(keys.length >= 2, `CA and JWT key files exist: ${files.join(', ')}`);
  for (const k of keys) assert.equal(mode(k), 0o600, `${k} is ${octal(mode(k))}`);
  for (const f of files) assert.equal(mode(f) & 0o007, 0, `${f} is ${octal(mode(f))}: open to others`);
  for (const f of files.filter((x) => /sqlite3(-wal|-shm)?$/.test(x))) assert.equal(mode(f) & 0o077, 0, `${f} is ${octal(mode(f))}`);
});

test('agent under umask 000: SVID key 0600, data dir closed to others', () => {
  assert.equal(mode(agentData) & 0o077, 0, `agent data dir is ${octal(mode(agentData))}`);
  const key = join(agentData, 'agent_svid.key');
  assert.equal(mode(key), 0o600, `agent_svid.key is ${octal(mode(key))}`);
  for (const f of walk(agentData)) assert.equal(mode(f) & 0o002, 0, `${f} is ${octal(mode(f))}: writable by others`);
  for (const f of walk(agentData).filter((x) => /\.key$|sqlite/.test(x))) assert.equal(mode(f) & 0o077, 0, `${f} is ${octal(mode(f))}`);
});

test('admin socket under umask 000: not connectable by another uid (65534), connectable by its owner', () => {
  needsRoot('acting as another uid');
  assert.equal(mode(adminSocket) & 0o007, 0, `admin socket is ${octal(mode(adminSocket))}`);
  // The parent dirs are traversable by others here (0755), so only the socket's own mode stops them.
  const other = spawnSync(forOtherUid(serverBin), ['entry', 'count', '-socketPath', adminSocket], { encoding: 'utf8', uid: 65534, gid: 65534, timeout: 20_000 });
  assert.notEqual(other.status, 0, `uid 65534 reached the admin API:\n${other.stdout}`);
  assert.match(other.stderr, /permission|EACCES/i, other.stderr);
  const owner = spawnSync(serverBin, ['entry', 'count', '-socketPath', adminSocket], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(owner.status, 0, owner.stderr);
});

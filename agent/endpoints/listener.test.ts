import { credentials, Server, type ServiceError } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, fstatSync, linkSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadPeerCred, type PeerCredNative } from '../native/peercred.js';
import { WhoAmIClient, WhoAmIService, type WhoAmIReply } from './fixtures/whoami.js';
import { listenWorkloadSocket, TrackedPeer, type WorkloadListener } from './listener.js';
import { parseStartTime } from './procfs.js';
import { recordingLogger, silentLogger } from './testkit.js';
import { forOtherUid } from '../../test/support/otheruid.js';
import type { EndpointLogger, PeerContext } from './types.js';

/**
 * stillSameProcess() in the next synchronous run: /proc values read in one run are reused
 * within it (procfs.ts), so a change to the fake /proc files shows from the next run on.
 */
async function checkedNextTurn(ctx: { stillSameProcess(): boolean }): Promise<boolean> {
  await Promise.resolve();
  return ctx.stillSameProcess();
}

/**
 * A fake /proc/<this pid> under the test root: `stat` with the start time in field 22 (comm
 * `comm`), `status` with the effective uid and gid, `exe` pointing at an executable; starts at
 * start time 4711, this process's uid and gid and node's binary.
 */
function fakeProc(dirName: string, comm: string) {
  const procRoot = join(root, dirName);
  const pidDir = join(procRoot, String(process.pid));
  mkdirSync(pidDir, { recursive: true });
  const stat = (start: number): string => `${process.pid} (${comm}) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 ${start} 20 21\n`;
  const setStart = (start: number): void => writeFileSync(join(pidDir, 'stat'), stat(start));
  let ids = { uid: process.getuid!(), gid: process.getgid!() };
  const writeStatus = (): void => writeFileSync(join(pidDir, 'status'), `Name:\tnode\nUid:\t${ids.uid}\t${ids.uid}\t${ids.uid}\t${ids.uid}\nGid:\t${ids.gid}\t${ids.gid}\t${ids.gid}\t${ids.gid}\n`);
  const setUid = (uid: number): void => {
    ids = { ...ids, uid };
    writeStatus();
  };
  const setGid = (gid: number): void => {
    ids = { ...ids, gid };
    writeStatus();
  };
  const setExe = (target: string): void => {
    rmSync(join(pidDir, 'exe'), { force: true });
    symlinkSync(target, join(pidDir, 'exe'));
  };
  setStart(4711);
  writeStatus();
  setExe(process.execPath);
  return { procRoot, pidDir, stat, setStart, setUid, setGid, setExe };
}

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'fixtures', 'client.js');
const root = mkdtempSync(join(tmpdir(), 'spindle-listener-'));
chmodSync(root, 0o755);
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const socketIn = (sub = ''): string => join(root, `t${++n}`, sub, 'api.sock');

/** A server answering WhoAmI from peerOf(call), listening through the peer-tracking listener. */
async function whoAmIServer(socketPath: string, extra: { procRoot?: string; native?: PeerCredNative; logger?: EndpointLogger } = {}): Promise<{ listener: WorkloadListener; server: Server; seen: PeerContext[]; close(): Promise<void> }> {
  const server = new Server();
  const seen: PeerContext[] = [];
  let listener: WorkloadListener | undefined;
  server.addService(WhoAmIService, {
    whoAmI: (call: { getPeer(): string }, cb: (err: null, reply: WhoAmIReply) => void) => {
      const ctx = listener!.peerOf(call);
      if (ctx) seen.push(ctx);
      cb(null, { getPeer: call.getPeer(), ...(ctx ? { key: ctx.key, ...ctx.peer } : {}) });
    },
  });
  listener = await listenWorkloadSocket({ socketPath, server, logger: silentLogger, ...extra });
  return {
    listener,
    server,
    seen,
    async close() {
      server.forceShutdown();
      await listener.close();
    },
  };
}

function whoAmI(socketPath: string): { reply: Promise<WhoAmIReply>; close(): void } {
  // A local subchannel pool: each client gets its own connection (grpc-js shares them otherwise).
  const client = new WhoAmIClient(`unix:${socketPath}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  const reply = new Promise<WhoAmIReply>((resolve, reject) => {
    client.makeUnaryRequest(
      '/spindle.test.WhoAmI/WhoAmI',
      (v: unknown) => Buffer.from(JSON.stringify(v)),
      (b: Buffer) => JSON.parse(b.toString('utf8')) as WhoAmIReply,
      {},
      (err: ServiceError | null, r?: WhoAmIReply) => (err ? reject(err) : resolve(r!)),
    );
  });
  return { reply, close: () => client.close() };
}

function child(mode: string, socketPath: string, opts: { uid?: number; gid?: number } = {}): { proc: ChildProcess; line: Promise<Record<string, unknown>> } {
  const proc = spawn(process.execPath, [opts.uid !== undefined ? forOtherUid(CHILD) : CHILD, mode, socketPath], { stdio: ['ignore', 'pipe', 'inherit'], ...opts });
  const line = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>));
    proc.once('exit', (code) => reject(new Error(`child exited (${code}) before answering`)));
  });
  return { proc, line };
}

const exited = (p: ChildProcess): Promise<void> => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));

describe('peercred native addon', () => {
  it('loads and reads SO_PEERCRED, pidfds', async () => {
    const native = loadPeerCred();
    const path = socketIn();
    mkdirSync(dirname(path), { recursive: true });
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(path, r));
    const accepted = new Promise<Socket>((r) => srv.once('connection', r));
    const c = connect(path);
    const s = await accepted;
    const fd = (s as unknown as { _handle: { fd: number } })._handle.fd;
    assert.deepEqual(native.getPeerCred(fd), { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    const pidfd = native.pidfdOpen(process.pid);
    assert.ok(pidfd >= 0, 'this kernel offers pidfd_open');
    assert.equal(native.pidfdAlive(pidfd), true);
    closeSync(pidfd);
    assert.throws(() => native.pidfdOpen(2 ** 30), (err: NodeJS.ErrnoException) => err.code === 'ESRCH' || err.code === 'EINVAL');
    assert.throws(() => native.getPeerCred(-1), TypeError);
    c.destroy();
    s.destroy();
    srv.close();
  });

  it('SO_PEERGROUPS: the supplementary groups (and ids) a process had when it connected, whatever it runs as later', async () => {
    const native = loadPeerCred();
    const path = socketIn();
    mkdirSync(dirname(path), { recursive: true });
    chmodSync(dirname(path), 0o755);
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(path, r));
    chmodSync(path, 0o777);
    // 70 groups: more than the addon's first buffer (64), so the ERANGE retry is exercised.
    const groups = Array.from({ length: 70 }, (_, i) => 5000 + i);
    // Connects as uid 0, egid 65534 with 70 groups, then drops them all: the kernel keeps what it
    // had at connect().
    const script = [
      'import os, socket, sys',
      `os.setgroups(${JSON.stringify(groups)}); os.setgid(65534)`,
      's = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])',
      'os.setgroups([]); os.setuid(65534)',
      'sys.stdin.read()',
    ].join('\n');
    const accepted = new Promise<Socket>((r) => srv.once('connection', r));
    const py = spawn('python3', ['-c', script, path], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const s = await accepted;
      const fd = (s as unknown as { _handle: { fd: number } })._handle.fd;
      assert.deepEqual(native.getPeerGroups(fd), groups);
      assert.deepEqual(native.getPeerCred(fd), { pid: py.pid, uid: 0, gid: 65534 });
      s.destroy();
    } finally {
      py.kill('SIGKILL');
      srv.close();
    }
  });
});

describe('workload socket listener', () => {
  it('creates the parent dir 0755, makes the socket 0777, removes it on close', async () => {
    const path = socketIn('public');
    const s = await whoAmIServer(path);
    assert.equal(statSync(dirname(path)).mode & 0o777, 0o755);
    assert.ok(statSync(path).isSocket());
    assert.equal(statSync(path).mode & 0o777, 0o777);
    await s.close();
    assert.throws(() => statSync(path), /ENOENT/);
  });

  it('replaces a stale socket, refuses a live one and never deletes a non-socket file', async () => {
    const path = socketIn();
    mkdirSync(dirname(path), { recursive: true });
    // Stale: a socket file nobody listens on.
    const stale = createServer();
    await new Promise<void>((r) => stale.listen(path, r));
    // Close without unlinking: pretend the previous agent crashed (dup the file by hard link).
    const keep = `${path}.keep`;
    linkSync(path, keep);
    await new Promise<void>((r) => stale.close(() => r()));
    renameSync(keep, path);
    const s = await whoAmIServer(path);
    assert.equal((await whoAmI(path).reply).pid, process.pid);
    // Live: a second listener on the same path is refused.
    await assert.rejects(whoAmIServer(path), /already serving/);
    await s.close();
    // A regular file at the path stays.
    writeFileSync(path, 'not a socket');
    await assert.rejects(whoAmIServer(path), /exists and is not a socket/);
    assert.equal(readFileSync(path, 'utf8'), 'not a socket');
  });

  it('tells peers on concurrent connections apart (this process twice, and a child process)', async () => {
    const path = socketIn();
    const s = await whoAmIServer(path);
    const a = whoAmI(path);
    const b = whoAmI(path);
    const kid = child('whoami', path);
    try {
      const [ra, rb, rk] = await Promise.all([a.reply, b.reply, kid.line]);
      const rkReply = rk['reply'] as WhoAmIReply;
      // Same process, two connections: same pid, different keys.
      assert.equal(ra.pid, process.pid);
      assert.equal(rb.pid, process.pid);
      assert.notEqual(ra.key, rb.key);
      // The child: its own pid, its own key; getPeer() is exactly the key.
      assert.equal(rkReply.pid, rk['pid']);
      assert.notEqual(rkReply.pid, process.pid);
      assert.equal(rkReply.getPeer, rkReply.key);
      assert.match(String(ra.key), /^spindle-peer-\d+$/);
      assert.equal(new Set([ra.key, rb.key, rkReply.key]).size, 3);
      assert.equal(s.listener.connectionCount, 3);
      // All three connections are open at once and still answer as themselves.
      const c = whoAmI(path);
      assert.equal((await c.reply).pid, process.pid);
      c.close();
      const childCtx = s.seen.find((c) => c.peer.pid === rkReply.pid)!;
      assert.equal(childCtx.stillSameProcess(), true);
      kid.proc.kill('SIGKILL');
      await exited(kid.proc);
      // The child is gone: its PeerContext says so, and the connection leaves the map.
      assert.equal(childCtx.stillSameProcess(), false);
      const byKey = { getPeer: () => childCtx.key };
      for (let i = 0; i < 200 && s.listener.peerOf(byKey) !== undefined; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(s.listener.peerOf(byKey), undefined);
      assert.equal(s.listener.peerOf({ getPeer: () => ra.key! })?.peer.pid, process.pid);
    } finally {
      a.close();
      b.close();
      kid.proc.kill('SIGKILL');
      await s.close();
    }
  });

  it('without pidfds, start time and uid from /proc still guard against reuse', async () => {
    const real = loadPeerCred();
    const native: PeerCredNative = { getPeerCred: real.getPeerCred, getPeerGroups: real.getPeerGroups, pidfdOpen: () => -1, pidfdAlive: () => true };
    const { procRoot, pidDir, stat, setStart, setUid } = fakeProc('fakeproc', 'node (x) y');
    assert.equal(parseStartTime(stat(4711)), '4711');
    const path = socketIn();
    const s = await whoAmIServer(path, { procRoot, native });
    const c = whoAmI(path);
    try {
      await c.reply;
      const ctx = s.seen[0]!;
      assert.equal(await checkedNextTurn(ctx), true);
      setUid(12345); // setuid since connect
      assert.equal(await checkedNextTurn(ctx), false);
      setUid(process.getuid!());
      assert.equal(await checkedNextTurn(ctx), true);
      setStart(4712); // a new process with the same pid
      assert.equal(await checkedNextTurn(ctx), false);
      rmSync(pidDir, { recursive: true }); // gone
      assert.equal(await checkedNextTurn(ctx), false);
    } finally {
      c.close();
      await s.close();
    }
  });

  it('with a pidfd, its liveness replaces the start-time re-read; the uid is still checked', async () => {
    const real = loadPeerCred();
    let alive = true;
    const native: PeerCredNative = {
      getPeerCred: real.getPeerCred,
      getPeerGroups: real.getPeerGroups,
      pidfdOpen: () => openSync('/dev/null', 'r'), // stands in for the pidfd (closed on release)
      pidfdAlive: () => alive,
    };
    const { procRoot, setStart, setUid } = fakeProc('fakeproc-pidfd', 'node');
    const path = socketIn();
    const s = await whoAmIServer(path, { procRoot, native });
    const c = whoAmI(path);
    try {
      await c.reply;
      const ctx = s.seen[0]!;
      assert.equal(await checkedNextTurn(ctx), true);
      setStart(4712); // not consulted while the pidfd is alive
      assert.equal(await checkedNextTurn(ctx), true);
      setUid(12345); // setuid since connect
      assert.equal(await checkedNextTurn(ctx), false);
      setUid(process.getuid!());
      assert.equal(await checkedNextTurn(ctx), true);
      alive = false; // the process exited
      assert.equal(await checkedNextTurn(ctx), false);
    } finally {
      c.close();
      await s.close();
    }
  });

  it('an exec after connect is noticed: another executable, or effective ids other than the connect-time ones', async () => {
    const real = loadPeerCred();
    const native: PeerCredNative = { ...real, pidfdOpen: () => openSync('/dev/null', 'r'), pidfdAlive: () => true };
    const { procRoot, setUid, setGid, setExe } = fakeProc('fakeproc-exec', 'node');
    const other = join(root, 'other-program');
    copyFileSync(process.execPath, other); // same content, another file: another program to the kernel
    const path = socketIn();
    const s = await whoAmIServer(path, { procRoot, native });
    const c = whoAmI(path);
    try {
      await c.reply;
      const ctx = s.seen[0]!;
      const whyNextTurn = async (): Promise<string | undefined> => {
        await Promise.resolve();
        return ctx.whyNotSameProcess();
      };
      assert.equal(await whyNextTurn(), undefined);
      setExe(other); // execve() of another program (pid, pidfd, start time, uid unchanged)
      assert.match((await whyNextTurn())!, new RegExp(`process ${process.pid} executed another program since it connected`));
      assert.equal(ctx.stillSameProcess(), false);
      setExe(process.execPath); // back to the file seen at accept
      assert.equal(await whyNextTurn(), undefined);
      setGid(42); // a setgid program: egid differs from SO_PEERCRED's connect-time gid
      assert.match((await whyNextTurn())!, new RegExp(`connected with effective uid ${process.getuid!()} gid ${process.getgid!()} and now runs with uid ${process.getuid!()} gid 42`));
      setGid(process.getgid!());
      setUid(65534);
      assert.match((await whyNextTurn())!, /now runs with uid 65534/);
      setUid(process.getuid!());
      rmSync(join(procRoot, String(process.pid), 'exe')); // no longer inspectable
      assert.match((await whyNextTurn())!, /executed another program .* unreadable now/);
    } finally {
      c.close();
      await s.close();
    }
  });

  it('a kernel without SO_PEERGROUPS: each connection is closed and the error says what is missing', async () => {
    const real = loadPeerCred();
    const native: PeerCredNative = {
      ...real,
      getPeerGroups: () => {
        throw Object.assign(new Error('getsockopt(SO_PEERGROUPS) is not supported by this kernel (it needs Linux 4.13 or newer)'), { code: 'ENOPROTOOPT' });
      },
    };
    const logger = recordingLogger();
    const path = socketIn();
    const s = await whoAmIServer(path, { native, logger });
    const c = whoAmI(path);
    try {
      await assert.rejects(c.reply);
      assert.equal(s.seen.length, 0, 'no call was served');
      assert.equal(s.listener.connectionCount, 0);
      const rec = logger.records.find((r) => (r as { msg?: string }).msg?.includes('cannot read the peer credentials')) as { level: string; err: Error } | undefined;
      assert.equal(rec?.level, 'error');
      assert.match(rec.err.message, /SO_PEERGROUPS.*Linux 4\.13/);
    } finally {
      c.close();
      await s.close();
    }
  });

  it('a closed connection has no PeerContext and its context reports not-same', async () => {
    const path = socketIn();
    const s = await whoAmIServer(path);
    const c = whoAmI(path);
    await c.reply;
    const ctx = s.seen[0]!;
    assert.equal(ctx.stillSameProcess(), true);
    c.close();
    for (let i = 0; i < 200 && s.listener.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.listener.connectionCount, 0);
    assert.equal(s.listener.peerOf({ getPeer: () => ctx.key }), undefined);
    assert.equal(ctx.stillSameProcess(), false);
    await s.close();
  });
});

/**
 * TrackedPeer on its own, in this process, over a fake /proc/<pid> (stat, status, exe) and a fake
 * pidfd API that records what it is asked: every branch of the same-process check, its exact
 * reasons, and the pidfd's release.
 */
describe('TrackedPeer: the same-process check', () => {
  const procRoot = join(root, 'trackedpeer-proc');
  let nextPid = 100;
  const progA = join(root, 'trackedpeer-prog-a');
  const progB = join(root, 'trackedpeer-prog-b');
  writeFileSync(progA, 'a');
  writeFileSync(progB, 'b');
  const idOf = (f: string): string => {
    const st = statSync(f, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };
  const statLine = (pid: number, start: number): string => `${pid} (w) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 ${start} 20 21\n`;
  /** A fresh pid dir (a new pid each time, so the per-turn /proc cache never mixes cases). */
  function proc(opts: { start?: number; status?: string; uid?: number; gid?: number; exe?: string } = {}) {
    const pid = nextPid++;
    const dir = join(procRoot, String(pid));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'stat'), statLine(pid, opts.start ?? 4711));
    const uid = opts.uid ?? 1000;
    const gid = opts.gid ?? 2000;
    writeFileSync(join(dir, 'status'), opts.status ?? `Name:\tw\nUid:\t${uid}\t${uid}\t${uid}\t${uid}\nGid:\t${gid}\t${gid}\t${gid}\t${gid}\n`);
    if (opts.exe !== undefined) symlinkSync(opts.exe, join(dir, 'exe'));
    return { pid, peer: { pid, uid: 1000, gid: 2000, groups: [] } };
  }
  /** pidfdAlive answers from `alive` in turn (the last one repeats); every call is recorded. */
  function fakeNative(alive: Array<boolean | Error>) {
    const asked: number[] = [];
    const native: PeerCredNative = {
      getPeerCred: () => assert.fail('not used'),
      getPeerGroups: () => assert.fail('not used'),
      pidfdOpen: () => assert.fail('not used'),
      pidfdAlive: (fd) => {
        asked.push(fd);
        const a = alive.length > 1 ? alive.shift()! : alive[0]!;
        if (a instanceof Error) throw a;
        return a;
      },
    };
    return { native, asked };
  }

  it('its key, peer and processKey (pid:start time, "?" when the start time is unknown); hasPidfd for any fd >= 0', () => {
    const { native } = fakeNative([true]);
    const peer = { pid: 7, uid: 1, gid: 2, groups: [3] };
    const t = new TrackedPeer('spindle-peer-9', peer, native, procRoot, -1, '4711', undefined);
    assert.equal(t.key, 'spindle-peer-9');
    assert.equal(t.peer, peer);
    assert.equal(t.processKey, '7:4711');
    assert.equal(t.hasPidfd, false);
    assert.equal(new TrackedPeer('k', peer, native, procRoot, -1, undefined, undefined).processKey, '7:?');
    assert.equal(new TrackedPeer('k', peer, native, procRoot, 0, '1', undefined).hasPidfd, true);
    assert.equal(new TrackedPeer('k', peer, native, procRoot, 5, '1', undefined).hasPidfd, true);
  });

  it('a process that was not visible in /proc at accept is never the same process', () => {
    const { pid, peer } = proc({ exe: progA });
    const { native, asked } = fakeNative([true]);
    const t = new TrackedPeer('k', peer, native, procRoot, 5, undefined, idOf(progA));
    assert.equal(t.whyNotSameProcess(), `process ${pid} was not visible in /proc when it connected`);
    assert.equal(t.stillSameProcess(), false);
    assert.deepEqual(asked, [], 'nothing else is consulted');
  });

  it('with a pidfd: alive before and after the /proc reads is the same process; the start time is not re-read', () => {
    const { peer } = proc({ start: 9999, exe: progA });
    const { native, asked } = fakeNative([true]);
    const t = new TrackedPeer('k', peer, native, procRoot, 5, '4711', idOf(progA));
    assert.equal(t.whyNotSameProcess(), undefined);
    assert.equal(t.stillSameProcess(), true);
    assert.deepEqual(asked, [5, 5, 5, 5], 'asked before and after the reads, each time');
  });

  it('a pidfd at fd 0 is a pidfd: polled before and after the reads instead of re-reading the start time, and closed on release', () => {
    const restarted = proc({ start: 9999, exe: progA });
    const live = fakeNative([true]);
    assert.equal(new TrackedPeer('k', restarted.peer, live.native, procRoot, 0, '4711', idOf(progA)).whyNotSameProcess(), undefined);
    assert.deepEqual(live.asked, [0, 0]);
    const exitedDuring = proc({ exe: progA });
    const during = fakeNative([true, false]);
    assert.equal(new TrackedPeer('k', exitedDuring.peer, during.native, procRoot, 0, '4711', idOf(progA)).whyNotSameProcess(), `process ${exitedDuring.pid} exited or its pid was reused`);
    assert.deepEqual(during.asked, [0, 0]);
    // Release of a pidfd that is fd 0: this process's stdin (unused by the tests) makes room for it.
    closeSync(0);
    const fd = openSync('/dev/null', 'r');
    try {
      assert.equal(fd, 0, 'the lowest free fd');
      const t = new TrackedPeer('k', restarted.peer, live.native, procRoot, fd, '4711', idOf(progA));
      t.release();
      assert.throws(() => fstatSync(0), /EBADF/, 'fd 0 is closed by release');
      assert.equal(t.hasPidfd, false);
    } finally {
      // Leave fd 0 open, as it was.
      try {
        fstatSync(0);
      } catch {
        openSync('/dev/null', 'r');
      }
    }
  });

  it('with a pidfd: exited before the reads, exited during them, or a pidfd that cannot be polled: gone', () => {
    for (const alive of [[false], [true, false], [new Error('EBADF')], [true, new Error('EBADF')]]) {
      const { pid, peer } = proc({ exe: progA });
      const { native, asked } = fakeNative([...alive]);
      const t = new TrackedPeer('k', peer, native, procRoot, 5, '4711', idOf(progA));
      assert.equal(t.whyNotSameProcess(), `process ${pid} exited or its pid was reused`, String(alive));
      assert.equal(asked.length, alive.length, String(alive));
    }
  });

  it('without a pidfd: the start time is re-read; another one, or none, is another process', () => {
    const same = proc({ exe: progA });
    const { native, asked } = fakeNative([true]);
    assert.equal(new TrackedPeer('k', same.peer, native, procRoot, -1, '4711', idOf(progA)).whyNotSameProcess(), undefined);
    const reused = proc({ start: 4712, exe: progA });
    assert.equal(new TrackedPeer('k', reused.peer, native, procRoot, -1, '4711', idOf(progA)).whyNotSameProcess(), `process ${reused.pid} exited or its pid was reused`);
    const gone = proc({ exe: progA });
    rmSync(join(procRoot, String(gone.pid)), { recursive: true });
    assert.equal(new TrackedPeer('k', gone.peer, native, procRoot, -1, '4711', idOf(progA)).whyNotSameProcess(), `process ${gone.pid} exited or its pid was reused`);
    assert.deepEqual(asked, [], 'no pidfd, no poll');
  });

  it('effective ids that cannot be read mean gone; ids other than the connect-time ones are named', () => {
    const { native } = fakeNative([true]);
    const check = (opts: Parameters<typeof proc>[0]): [number, string | undefined] => {
      const { pid, peer } = proc({ exe: progA, ...opts });
      return [pid, new TrackedPeer('k', peer, native, procRoot, 5, '4711', idOf(progA)).whyNotSameProcess()];
    };
    for (const status of ['Name:\tw\nGid:\t2000\t2000\t2000\t2000\n', 'Name:\tw\nUid:\t1000\t1000\t1000\t1000\n', 'Name:\tw\n']) {
      const [pid, why] = check({ status });
      assert.equal(why, `process ${pid} exited or its pid was reused`, JSON.stringify(status));
    }
    let [pid, why] = check({ uid: 0 });
    assert.equal(why, `process ${pid} connected with effective uid 1000 gid 2000 and now runs with uid 0 gid 2000 (it executed a setuid/setgid program or changed its ids since it connected)`);
    [pid, why] = check({ gid: 42 });
    assert.equal(why, `process ${pid} connected with effective uid 1000 gid 2000 and now runs with uid 1000 gid 42 (it executed a setuid/setgid program or changed its ids since it connected)`);
  });

  it('the executable: the one seen at accept, or both unreadable, is the same; any other or a change in readability is named', () => {
    const { native } = fakeNative([true]);
    const a = proc({ exe: progA });
    assert.equal(new TrackedPeer('k', a.peer, native, procRoot, 5, '4711', idOf(progA)).whyNotSameProcess(), undefined);
    const none = proc();
    assert.equal(new TrackedPeer('k', none.peer, native, procRoot, 5, '4711', undefined).whyNotSameProcess(), undefined, 'an agent that may not stat it compares the ids only');
    const b = proc({ exe: progB });
    assert.equal(
      new TrackedPeer('k', b.peer, native, procRoot, 5, '4711', idOf(progA)).whyNotSameProcess(),
      `process ${b.pid} executed another program since it connected (executable ${idOf(progA)} at accept, ${idOf(progB)} now)`,
    );
    const lost = proc();
    assert.equal(
      new TrackedPeer('k', lost.peer, native, procRoot, 5, '4711', idOf(progA)).whyNotSameProcess(),
      `process ${lost.pid} executed another program since it connected (executable ${idOf(progA)} at accept, unreadable now)`,
    );
    const found = proc({ exe: progB });
    assert.equal(
      new TrackedPeer('k', found.peer, native, procRoot, 5, '4711', undefined).whyNotSameProcess(),
      `process ${found.pid} executed another program since it connected (executable unreadable at accept, ${idOf(progB)} now)`,
    );
  });

  it('release: the pidfd is closed once, the peer is no longer the same process, and a second release touches no fd', () => {
    const { peer } = proc({ exe: progA });
    const { native, asked } = fakeNative([true]);
    const fd = openSync('/dev/null', 'r');
    const t = new TrackedPeer('k', peer, native, procRoot, fd, '4711', idOf(progA));
    assert.equal(t.whyNotSameProcess(), undefined);
    t.release();
    assert.throws(() => fstatSync(fd), /EBADF/, 'the pidfd is closed');
    assert.equal(t.hasPidfd, false);
    assert.equal(t.whyNotSameProcess(), 'its connection is closed');
    assert.equal(t.stillSameProcess(), false);
    // The fd number is free again: whatever opens next may get it; a second release must not close that.
    const reused = openSync('/dev/null', 'r');
    try {
      assert.equal(reused, fd, 'the kernel hands out the lowest free fd');
      t.release();
      assert.doesNotThrow(() => fstatSync(reused), 'the reused fd is still open');
    } finally {
      closeSync(reused);
    }
    assert.equal(asked.length, 2, 'no poll after release');
  });

  it('release of a pidfd already closed elsewhere does not throw; a peer without a pidfd releases too', () => {
    const { peer } = proc({ exe: progA });
    const { native } = fakeNative([true]);
    const fd = openSync('/dev/null', 'r');
    closeSync(fd);
    const t = new TrackedPeer('k', peer, native, procRoot, fd, '4711', idOf(progA));
    assert.doesNotThrow(() => t.release());
    assert.equal(t.whyNotSameProcess(), 'its connection is closed');
    const noPidfd = new TrackedPeer('k', peer, native, procRoot, -1, '4711', idOf(progA));
    noPidfd.release();
    assert.equal(noPidfd.whyNotSameProcess(), 'its connection is closed');
  });
});

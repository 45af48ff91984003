// The connection limiter's counting (per uid, per process, releases, the reserve rule) and its
// place in the listener's accept path; the limits against processes of another uid are in
// test/security/connflood.test.ts.
import { Server } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadPeerCred, type PeerCredNative } from '../native/peercred.js';
import { ConnectionLimiter, connectionLimitProblems, DEFAULT_CONNECTION_LIMITS } from './connlimits.js';
import { listenWorkloadSocket } from './listener.js';
import { silentLogger } from './testkit.js';

describe('connection limiter', () => {
  it('admits up to the per-process limit, then refuses that process but not another of the same uid', () => {
    const l = new ConnectionLimiter({ maxConnections: 100, maxConnsPerUid: 10, maxConnsPerPid: 3 });
    const held = [1, 2, 3].map(() => l.acquire(1000, '42:7'));
    assert.ok(held.every((h) => typeof h === 'function'));
    const r = l.acquire(1000, '42:7');
    assert.equal(typeof r, 'object');
    assert.equal((r as { scope: string }).scope, 'process');
    assert.match((r as { message: string }).message, /process 42:7 .* already holds 3 connections \(agent\.workload_api_max_conns_per_pid\)/);
    assert.equal(typeof l.acquire(1000, '43:9'), 'function', 'another process of the uid');
    assert.equal(l.refusedCount('process'), 1);
  });

  it('refuses a uid at its limit before any process is looked at; other uids are served', () => {
    const l = new ConnectionLimiter({ maxConnections: 100, maxConnsPerUid: 4, maxConnsPerPid: 0 });
    for (let i = 0; i < 4; i++) assert.equal(typeof l.acquire(65534, `${i}:1`), 'function');
    const early = l.checkUid(65534);
    assert.equal(early?.scope, 'uid');
    assert.match(early!.message, /uid 65534 already holds 4 connections \(agent\.workload_api_max_conns_per_uid\)/);
    assert.equal((l.acquire(65534, '99:1') as { scope: string }).scope, 'uid');
    assert.equal(l.checkUid(0), undefined);
    assert.equal(typeof l.acquire(0, '1:1'), 'function');
    assert.equal(l.refusedCount('uid'), 2);
    assert.deepEqual(l.stats(), { refused: [{ scope: 'uid', count: 2 }], open: 5 });
  });

  it('releases are idempotent and free the slot; nothing is tracked once all are closed', () => {
    const l = new ConnectionLimiter({ maxConnections: 100, maxConnsPerUid: 1, maxConnsPerPid: 1 });
    const release = l.acquire(5, '1:1');
    assert.equal(typeof release, 'function');
    assert.equal(l.checkUid(5)?.scope, 'uid');
    (release as () => void)();
    (release as () => void)();
    assert.equal(l.stats().open, 0);
    assert.deepEqual(l.tracked, { uids: 0, processes: 0 });
    assert.equal(typeof l.acquire(5, '1:1'), 'function', 'the slot is free again');
  });

  it('0 disables a limit; dropped connections are counted as scope "all"', () => {
    const l = new ConnectionLimiter({ maxConnections: 0, maxConnsPerUid: 0, maxConnsPerPid: 0 });
    for (let i = 0; i < 5000; i++) assert.equal(typeof l.acquire(7, '1:1'), 'function');
    l.countDropped();
    assert.deepEqual(l.stats(), { refused: [{ scope: 'all', count: 1 }], open: 5000 });
  });

  it('the per-uid limit must leave room for other uids', () => {
    assert.deepEqual(connectionLimitProblems(DEFAULT_CONNECTION_LIMITS), []);
    assert.ok(DEFAULT_CONNECTION_LIMITS.maxConnsPerUid < DEFAULT_CONNECTION_LIMITS.maxConnections);
    const [p] = connectionLimitProblems({ ...DEFAULT_CONNECTION_LIMITS, maxConnections: 10, maxConnsPerUid: 10 });
    assert.match(p ?? '', /agent\.workload_api_max_conns_per_uid \(10\) must be less than agent\.workload_api_max_conns \(10\)/);
    assert.deepEqual(connectionLimitProblems({ ...DEFAULT_CONNECTION_LIMITS, maxConnections: 10, maxConnsPerUid: 0 }), []);
    assert.throws(() => new ConnectionLimiter({ maxConnsPerPid: -1 }), /agent\.workload_api_max_conns_per_pid must be a non-negative integer, got -1/);
  });
});

/** Connects and reports whether the listener closed the connection before sending a byte (refused at accept). */
function probe(path: string): Promise<{ socket: Socket; refused: Promise<boolean> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(path, () => {
      let gotData = false;
      socket.on('data', () => (gotData = true));
      const refused = new Promise<boolean>((r) => {
        socket.once('close', () => r(!gotData));
        // Admitted: the HTTP/2 server's SETTINGS frame arrives at once.
        socket.once('data', () => r(false));
      });
      resolve({ socket, refused });
    });
    socket.once('error', reject);
  });
}

describe('connection limits at accept (listener)', () => {
  it('a uid at its limit is refused before any pidfd is opened; a freed slot admits again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spindle-connlimits-'));
    const real = loadPeerCred();
    let pidfdOpens = 0;
    const native: PeerCredNative = {
      ...real,
      pidfdOpen: (pid: number) => {
        pidfdOpens++;
        return real.pidfdOpen(pid);
      },
    };
    const connections = new ConnectionLimiter({ maxConnections: 100, maxConnsPerUid: 2, maxConnsPerPid: 0 });
    const server = new Server();
    const listener = await listenWorkloadSocket({ socketPath: join(dir, 'api.sock'), server, logger: silentLogger, native, connections });
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const p = await probe(listener.socketPath);
        held.push(p.socket);
        assert.equal(await p.refused, false, `connection ${i + 1} admitted`);
      }
      assert.equal(pidfdOpens, 2);
      const third = await probe(listener.socketPath);
      assert.equal(await third.refused, true, 'the third connection of this uid is closed at accept');
      assert.equal(pidfdOpens, 2, 'no pidfd was opened for the refused connection');
      assert.equal(listener.connectionCount, 2);
      assert.equal(connections.refusedCount('uid'), 1);
      held.shift()!.destroy();
      for (let i = 0; i < 200 && connections.stats().open > 1; i++) await new Promise((r) => setTimeout(r, 10));
      const again = await probe(listener.socketPath);
      held.push(again.socket);
      assert.equal(await again.refused, false, 'admitted once a slot is free');
    } finally {
      for (const s of held) s.destroy();
      server.forceShutdown();
      await listener.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

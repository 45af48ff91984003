// The connection limiter's counting (per uid, per process, releases, the reserve rule); the
// limits against real processes are in test/security/connflood.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectionLimiter, connectionLimitProblems, DEFAULT_CONNECTION_LIMITS } from './connlimits.js';

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

/**
 * Caller attestation shared by the agent socket's APIs (caller.ts), in process: the refusal of a
 * call whose connection is not tracked, the union and de-duplication of the attestors'
 * selectors, the same-process check after attestation, the mapping of cache failures, and the
 * once-only end of a stream (StreamEnd).
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PeerInfo, WorkloadAttestor } from '../../attestors/workload/types.js';
import type { Selector } from '../../common/selector.js';
import type { WorkloadSubscription } from '../manager/types.js';
import { cacheError, callerAttestation, StreamEnd, type StreamEnder } from './caller.js';
import { WorkloadApiError } from './errors.js';
import { recordingLogger, sel } from './testkit.js';
import type { PeerContext } from './types.js';

const PEER: PeerInfo = { pid: 4242, uid: 1000, gid: 1000, groups: [] };

function peerContext(why: () => string | undefined = () => undefined): PeerContext {
  return { key: 'spindle-peer-1', peer: PEER, processKey: '4242:1', whyNotSameProcess: why, stillSameProcess: () => why() === undefined };
}

const attestor = (name: string, selectors: Selector[], seen: PeerInfo[] = []): WorkloadAttestor => ({
  name,
  attest: async (peer) => {
    seen.push(peer);
    return selectors;
  },
});

describe('callerAttestation', () => {
  it('a call on a connection that is not tracked is refused UNAVAILABLE, saying so; a tracked one gets its PeerContext', () => {
    const ctx = peerContext();
    const asked: string[] = [];
    const a = callerAttestation((call) => {
      asked.push(call.getPeer());
      return call.getPeer() === ctx.key ? ctx : undefined;
    }, []);
    assert.equal(a.peerOfCall({ getPeer: () => ctx.key }), ctx);
    assert.throws(
      () => a.peerOfCall({ getPeer: () => 'spindle-peer-2' }),
      (err: unknown) => err instanceof WorkloadApiError && err.grpcCode === GrpcStatus.UNAVAILABLE && err.message === 'caller connection is not tracked (closed?)',
    );
    assert.deepEqual(asked, [ctx.key, 'spindle-peer-2']);
  });

  it('every attestor sees the peer; the result is the union of their selectors, each once, in first-seen order', async () => {
    const seenA: PeerInfo[] = [];
    const seenB: PeerInfo[] = [];
    const a = callerAttestation(() => undefined, [
      attestor('unix', [sel('unix:uid:1000'), sel('unix:gid:1000'), sel('unix:uid:1000')], seenA),
      attestor('docker', [sel('docker:label:a'), sel('unix:gid:1000'), sel('docker:label:a'), sel('unix:gid:1001')], seenB),
    ]);
    const got = await a.attest(peerContext(), new AbortController().signal);
    assert.deepEqual(got, [sel('unix:uid:1000'), sel('unix:gid:1000'), sel('docker:label:a'), sel('unix:gid:1001')]);
    assert.deepEqual(seenA, [PEER]);
    assert.deepEqual(seenB, [PEER]);
    assert.deepEqual(await callerAttestation(() => undefined, []).attest(peerContext(), new AbortController().signal), []);
  });

  it('a caller whose process changed since it connected is refused UNAVAILABLE with the reason; the selectors are not returned', async () => {
    let why: string | undefined = 'process 4242 exited or its pid was reused';
    const a = callerAttestation(() => undefined, [attestor('unix', [sel('unix:uid:1000')])]);
    await assert.rejects(
      a.attest(peerContext(() => why), new AbortController().signal),
      (err: unknown) =>
        err instanceof WorkloadApiError &&
        err.grpcCode === GrpcStatus.UNAVAILABLE &&
        err.message ===
          'caller process changed since it connected: process 4242 exited or its pid was reused; identities are only served to the process that opened the connection; reconnect from it and retry',
    );
    why = undefined;
    assert.deepEqual(await a.attest(peerContext(() => why), new AbortController().signal), [sel('unix:uid:1000')]);
  });

  it('an abort during attestation rejects with the abort reason, before the same-process check', async () => {
    const ac = new AbortController();
    let checked = 0;
    const a = callerAttestation(() => undefined, [
      {
        name: 'slow',
        attest: async () => {
          ac.abort(new Error('client went away'));
          return [sel('slow:x')];
        },
      },
    ]);
    await assert.rejects(
      a.attest(
        peerContext(() => {
          checked++;
          return undefined;
        }),
        ac.signal,
      ),
      /client went away/,
    );
    assert.equal(checked, 0);
  });
});

describe('cacheError', () => {
  it('keeps a WorkloadApiError as it is; anything else becomes UNAVAILABLE "retry later" with the cause kept for the log', () => {
    const own = new WorkloadApiError(GrpcStatus.PERMISSION_DENIED, 'no identity issued');
    assert.equal(cacheError(own), own);
    const cause = new Error('datastore is locked');
    const mapped = cacheError(cause);
    assert.ok(mapped instanceof WorkloadApiError);
    assert.equal(mapped.grpcCode, GrpcStatus.UNAVAILABLE);
    assert.equal(mapped.message, 'identities are not available right now; retry later');
    assert.equal(mapped.cause, cause);
  });
});

/** A stand-in for a grpc-js server stream: records emitted errors and fires its listeners on demand. */
function fakeCall() {
  const listeners = new Map<string, Array<() => void>>();
  const emitted: Array<{ code: GrpcStatus; details: string }> = [];
  return {
    emitted,
    emit(event: 'error', status: { code: GrpcStatus; details: string }): boolean {
      assert.equal(event, 'error');
      emitted.push(status);
      return true;
    },
    once(event: 'cancelled' | 'close', listener: () => void): unknown {
      listeners.set(event, [...(listeners.get(event) ?? []), listener]);
      return this;
    },
    fire(event: 'cancelled' | 'close'): void {
      const ls = listeners.get(event) ?? [];
      listeners.delete(event);
      for (const l of ls) l();
    },
    count: (event: string): number => listeners.get(event)?.length ?? 0,
  };
}

function streamEnd() {
  const call = fakeCall();
  const open = new Set<StreamEnder>();
  const log = recordingLogger();
  const life = new StreamEnd(call, open, log, { method: 'FetchX509SVID', peer: 'spindle-peer-1' });
  let closed = 0;
  let released = 0;
  life.sub = { close: () => void closed++ } as unknown as WorkloadSubscription;
  life.release = () => void released++;
  return { call, open, log, life, closed: () => closed, released: () => released };
}

describe('StreamEnd', () => {
  it('registers its ender and listens for the client going away', () => {
    const s = streamEnd();
    assert.deepEqual([...s.open], [s.life.endWith]);
    assert.equal(s.call.count('cancelled'), 1);
    assert.equal(s.call.count('close'), 1);
    assert.equal(s.life.ended, false);
    assert.equal(s.life.abort.signal.aborted, false);
  });

  it('the client going away releases everything once, however many end events follow', () => {
    const s = streamEnd();
    s.call.fire('cancelled');
    assert.equal(s.life.ended, true);
    assert.equal(s.life.abort.signal.aborted, true);
    assert.equal(s.open.size, 0);
    assert.deepEqual([s.closed(), s.released()], [1, 1]);
    s.call.fire('close'); // the second end of the same stream
    s.life.cleanup();
    s.life.endWith(GrpcStatus.UNAVAILABLE, 'late');
    s.life.fail(new Error('late'));
    assert.deepEqual([s.closed(), s.released()], [1, 1], 'released once');
    assert.deepEqual(s.call.emitted, [], 'no status on a stream the client already left');
    assert.equal(s.log.records.length, 0, 'a failure after the end is not logged');
  });

  it('endWith ends the stream with that status once; later ends change nothing', () => {
    const s = streamEnd();
    s.life.endWith(GrpcStatus.UNAVAILABLE, 'agent is shutting down');
    assert.deepEqual(s.call.emitted, [{ code: GrpcStatus.UNAVAILABLE, details: 'agent is shutting down' }]);
    assert.equal(s.open.size, 0);
    assert.equal(s.life.abort.signal.aborted, true);
    assert.deepEqual([s.closed(), s.released()], [1, 1]);
    // What the shutdown loop does with every registered ender, and the stream's own close event.
    s.life.endWith(GrpcStatus.CANCELLED, 'again');
    s.life.fail(new WorkloadApiError(GrpcStatus.PERMISSION_DENIED, 'no identity issued'));
    s.call.fire('close');
    assert.equal(s.call.emitted.length, 1, 'one status per stream');
    assert.deepEqual([s.closed(), s.released()], [1, 1]);
    assert.equal(s.log.records.length, 0);
  });

  it('fail ends the stream with the status the error maps to, logged with the stream context, once', () => {
    const s = streamEnd();
    const cause = new Error('datastore is locked');
    s.life.fail(cacheError(cause));
    assert.deepEqual(s.call.emitted, [{ code: GrpcStatus.UNAVAILABLE, details: 'identities are not available right now; retry later' }]);
    assert.equal(s.log.records.length, 1);
    assert.deepEqual(s.log.records[0], { level: 'warn', method: 'FetchX509SVID', peer: 'spindle-peer-1', err: cause, msg: 'identities are not available right now; retry later' });
    s.life.fail(new Error('second failure'));
    assert.equal(s.call.emitted.length, 1);
    assert.equal(s.log.records.length, 1, 'the second failure is neither sent nor logged');
    assert.deepEqual([s.closed(), s.released()], [1, 1]);
  });

  it('ending before a subscription or a stream budget exists is fine', () => {
    const call = fakeCall();
    const open = new Set<StreamEnder>();
    const life = new StreamEnd(call, open, recordingLogger(), {});
    call.fire('close');
    assert.equal(life.ended, true);
    assert.equal(open.size, 0);
  });
});

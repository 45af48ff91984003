// SyncClient against fake streams (the e2e behaviour with real servers is in
// test/faults/failover.test.ts): make-before-break on reconnect(), a failed successor, a stream
// lost while its successor opens, and how soon it retries after losing a server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { status } from '@grpc/grpc-js';
import type { SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import type { AgentApiConnection } from '../client/serverclient.js';
import { RECONNECT_MIN_MS } from './backoff.js';
import { SyncClient } from './syncclient.js';

class FakeStream extends EventEmitter {
  cancelled = false;
  constructor(readonly peer: string) {
    super();
  }
  getPeer(): string {
    return this.peer;
  }
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    setImmediate(() => this.emit('error', { code: status.CANCELLED, details: 'Cancelled on client' }));
  }
  deliver(revision = 1n): void {
    const msg: SyncAuthorizedResponse = { revision, snapshot: false, entries: [], removedEntryIds: [], bundles: [], bundlesIncluded: false };
    this.emit('data', msg);
  }
  fail(code = status.UNAVAILABLE): void {
    this.emit('error', { code, details: 'Connection dropped' });
  }
}

function harness(alternatives: boolean) {
  const streams: FakeStream[] = [];
  const lines: string[] = [];
  let peer = 'server-a:8081';
  const conn = (): AgentApiConnection => ({
    client: { syncAuthorized: () => (streams.push(new FakeStream(peer)), streams.at(-1)) } as unknown as AgentApiConnection['client'],
    close: () => undefined,
  });
  let current = conn();
  const log = (level: string) => (_obj: object, msg: string) => void lines.push(`${level} ${msg}`);
  let applied = 0;
  const sync = new SyncClient({
    connection: () => current,
    logger: { debug: log('DEBUG'), info: log('INFO'), warn: log('WARN'), error: log('ERROR') },
    now: () => new Date(),
    request: () => ({}),
    apply: () => void applied++,
    resumed: () => undefined,
    refused: () => undefined,
    alternatives,
  });
  return {
    sync,
    streams,
    lines,
    applied: () => applied,
    /** A new connection whose streams reach `p` from now on. */
    newConnection(p: string): void {
      peer = p;
      current = conn();
    },
    servePeer(p: string): void {
      peer = p;
    },
  };
}

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('reconnect() while the stream is up: the new stream opens first, the old one is cancelled only when the new one delivers', async () => {
  const h = harness(true);
  h.sync.connect();
  h.streams[0]!.deliver();
  assert.equal(h.sync.server, 'server-a:8081');
  h.newConnection('server-b:8081');
  h.sync.reconnect();
  assert.equal(h.streams.length, 2, 'the successor is opened at once');
  assert.equal(h.streams[0]!.cancelled, false, 'the old stream stays open until the new one delivers');
  h.streams[0]!.deliver(2n); // still applied: no gap
  assert.equal(h.applied(), 2);
  h.streams[1]!.deliver(3n);
  assert.equal(h.streams[0]!.cancelled, true);
  assert.equal(h.sync.server, 'server-b:8081');
  assert.ok(h.lines.includes('INFO moved the sync stream to spindle-server at server-b:8081 from server-a:8081 (new connection opened before the old one was closed)'), h.lines.join('\n'));
  await tick(5);
  // The old stream's CANCELLED is not a loss; its late messages are ignored.
  h.streams[0]!.deliver(9n);
  assert.equal(h.applied(), 3);
  assert.equal(h.streams.length, 2);
  assert.ok(!h.lines.some((l) => l.includes('lost the server sync stream')), h.lines.join('\n'));
  h.sync.stop();
});

test('a successor that fails leaves the current stream in place', async () => {
  const h = harness(true);
  h.sync.connect();
  h.streams[0]!.deliver();
  h.newConnection('server-b:8081');
  h.sync.reconnect();
  h.streams[1]!.fail();
  await tick(RECONNECT_MIN_MS + 100);
  assert.equal(h.streams.length, 2, 'no reconnect: the current stream is fine');
  assert.equal(h.streams[0]!.cancelled, false);
  h.streams[0]!.deliver(2n);
  assert.equal(h.applied(), 2);
  assert.ok(h.lines.some((l) => l.startsWith('WARN could not open the sync stream on the new server connection')));
  h.sync.stop();
});

test('the current stream lost while its successor opens: the successor takes over, no third stream', async () => {
  const h = harness(false);
  h.sync.connect();
  h.streams[0]!.deliver();
  h.newConnection('server-b:8081');
  h.sync.reconnect();
  h.streams[0]!.fail();
  h.streams[1]!.deliver(2n);
  await tick(RECONNECT_MIN_MS + 200);
  assert.equal(h.streams.length, 2, 'the scheduled reconnect was dropped');
  assert.equal(h.sync.server, 'server-b:8081');
  assert.ok(h.lines.some((l) => l === 'INFO reconnected to the server'));
  h.sync.stop();
});

test('with other servers, a lost established stream is retried within RECONNECT_MIN_MS and the switch is logged', async () => {
  const h = harness(true);
  h.sync.connect();
  h.streams[0]!.deliver();
  const lost = Date.now();
  h.servePeer('server-b:8081'); // the channel reaches the other server next
  h.streams[0]!.fail();
  while (h.streams.length < 2 && Date.now() - lost < 2000) await tick(10);
  assert.equal(h.streams.length, 2);
  assert.ok(Date.now() - lost < RECONNECT_MIN_MS + 50, `retried after ${Date.now() - lost} ms`);
  h.streams[1]!.deliver(2n);
  assert.ok(h.lines.includes('INFO switched to spindle-server at server-b:8081 after server-a:8081 failed'), h.lines.join('\n'));
  h.sync.stop();
});

test('with one server, a lost stream waits out the backoff as before', async () => {
  const h = harness(false);
  h.sync.connect();
  h.streams[0]!.deliver();
  h.streams[0]!.fail();
  await tick(RECONNECT_MIN_MS - 100);
  assert.equal(h.streams.length, 1, 'no retry before the backoff');
  await tick(250);
  assert.equal(h.streams.length, 2);
  h.sync.stop();
});

// The inbound admission pools and the shed log summary (proxy/admission.ts), without sockets; the
// listener's use of them is tested end to end in proxy.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { addressKey, Admission, ShedLog } from './admission.js';

describe('admission', () => {
  test('pending per address and per listener, verified by max_connections; releases give slots back', () => {
    const a = new Admission({ maxConnections: 2, maxPendingHandshakes: 3, maxPendingPerAddress: 2 });
    assert.equal(a.admit('10.0.0.1'), undefined);
    assert.equal(a.admit('10.0.0.1'), undefined);
    assert.equal(a.admit('10.0.0.1'), 'pending_per_address');
    assert.equal(a.admit('10.0.0.2'), undefined);
    assert.equal(a.admit('10.0.0.3'), 'max_pending_handshakes');
    assert.equal(a.pending, 3);
    a.releasePending('10.0.0.1');
    assert.equal(a.pendingFrom('10.0.0.1'), 1);
    assert.equal(a.admit('10.0.0.3'), undefined);
    a.promote('10.0.0.1');
    a.promote('10.0.0.2');
    assert.equal(a.verified, 2);
    assert.equal(a.pending, 1);
    assert.equal(a.pendingFrom('10.0.0.1'), 0);
    assert.equal(a.hasVerifiedRoom(), false);
    assert.equal(a.admit('10.0.0.4'), 'max_connections', 'no point in a handshake while every verified slot is taken');
    a.releaseVerified();
    assert.equal(a.hasVerifiedRoom(), true);
    assert.equal(a.admit('10.0.0.4'), undefined);
  });

  test('addressKey: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64', () => {
    assert.equal(addressKey('127.0.0.2'), '127.0.0.2');
    assert.equal(addressKey('::ffff:127.0.0.2'), '127.0.0.2');
    assert.equal(addressKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:0db8:0001:0002::1'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });

  test('the shed log: one line at the first shed, then one summary per interval while sheds go on', async () => {
    const lines: { o: Record<string, unknown>; m: string }[] = [];
    const log = new ShedLog('in', (o, m) => lines.push({ o: o as Record<string, unknown>, m }), 100);
    log.record('pending_per_address', '10.0.0.1');
    for (let i = 0; i < 999; i++) log.record('pending_per_address', '10.0.0.1');
    log.record('max_pending_handshakes', '10.0.0.2');
    assert.equal(lines.length, 1);
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(lines.length, 2, 'the rest summarized in one line');
    assert.deepEqual(lines[1]!.o.shed, { pending_per_address: 999, max_pending_handshakes: 1 });
    assert.equal(lines[1]!.o.top_address, '10.0.0.1');
    assert.equal(lines[1]!.o.total, 1000);
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(lines.length, 2, 'no line while nothing is shed');
    log.stop();
  });
});

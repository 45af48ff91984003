import { test } from 'node:test';
import assert from 'node:assert/strict';
import { channelTarget, connectionOrder, formatServerAddresses, hasAlternatives, needsResolving, parseServerAddressList, resolveServerAddresses, type ServerAddress } from './serveraddress.js';

const ok = (text: string, port = 8081): ServerAddress[] => {
  const r = parseServerAddressList(text, port);
  assert.ok('addresses' in r, `${text}: ${'problem' in r ? r.problem : ''}`);
  return r.addresses;
};
const bad = (text: string): string => {
  const r = parseServerAddressList(text, 8081);
  assert.ok('problem' in r, `${text} is refused`);
  return r.problem;
};

test('one host parses as before: an IP address or a DNS name with server_port', () => {
  assert.deepEqual(ok('127.0.0.1'), [{ host: '127.0.0.1', port: 8081 }]);
  assert.deepEqual(ok('spindle-server.internal', 9000), [{ host: 'spindle-server.internal', port: 9000 }]);
  assert.deepEqual(ok('::1'), [{ host: '::1', port: 8081 }]);
});

test('a comma-separated list, with an optional port per element and bracketed IPv6', () => {
  assert.deepEqual(ok('127.0.0.1,127.0.0.2'), [
    { host: '127.0.0.1', port: 8081 },
    { host: '127.0.0.2', port: 8081 },
  ]);
  assert.deepEqual(ok(' 127.0.0.1:9001 , 127.0.0.2 ', 9000), [
    { host: '127.0.0.1', port: 9001 },
    { host: '127.0.0.2', port: 9000 },
  ]);
  assert.deepEqual(ok('[::1]:9001,[::2],::3'), [
    { host: '::1', port: 9001 },
    { host: '::2', port: 8081 },
    { host: '::3', port: 8081 },
  ]);
  assert.deepEqual(ok('server.example:9443'), [{ host: 'server.example', port: 9443 }]);
  assert.equal(formatServerAddresses(ok('127.0.0.1,127.0.0.2:1')), '127.0.0.1:8081, 127.0.0.2:1');
  assert.equal(formatServerAddresses(ok('[::1]:9001')), '[::1]:9001');
});

test('bad lists are refused with what is wrong', () => {
  assert.match(bad('127.0.0.1,,127.0.0.2'), /element 2 of the comma-separated list is empty/);
  assert.match(bad('127.0.0.1,'), /element 2 of the comma-separated list is empty/);
  assert.match(bad(' '), /must not be empty/);
  assert.match(bad('127.0.0.1:0'), /bad port in "127.0.0.1:0": expected an integer between 1 and 65535/);
  assert.match(bad('127.0.0.1:70000'), /bad port/);
  assert.match(bad('127.0.0.1:'), /bad port/);
  assert.match(bad('127.0.0.1:http'), /bad port/);
  assert.match(bad('[::1]:x'), /bad port/);
  assert.match(bad('[127.0.0.1]:80'), /expected an IPv6 address inside brackets/);
  assert.match(bad('http://server:8081'), /expected an IP address or host name, got "http:\/\/server:8081"/);
  assert.match(bad('bad_host'), /expected an IP address or host name/);
  assert.match(bad('1::2:8081:x'), /expected an IP address or host name, got "1::2:8081:x"/);
  assert.match(bad('fe80::1::2:8081'), /an IPv6 address with a port goes in brackets: \[::1\]:8081/);
  assert.match(bad('127.0.0.1,127.0.0.1:8081'), /lists 127.0.0.1:8081 twice/);
  assert.match(bad('127.0.0.1,::1'), /all IPv4 or all IPv6/);
  assert.match(bad('spindle-a.internal,spindle-a.internal:8081'), /lists spindle-a.internal:8081 twice/);
});

test('a list may name servers by DNS name (resolved by the agent), with or without a port', () => {
  assert.deepEqual(ok('spindle-a.internal,spindle-b.internal:9001,127.0.0.3'), [
    { host: 'spindle-a.internal', port: 8081 },
    { host: 'spindle-b.internal', port: 9001 },
    { host: '127.0.0.3', port: 8081 },
  ]);
  assert.equal(needsResolving(ok('spindle-a.internal,127.0.0.3')), true);
  assert.equal(needsResolving(ok('127.0.0.1,127.0.0.3')), false);
  // One name alone is resolved by grpc-js (dns: target), not by the agent.
  assert.equal(needsResolving(ok('spindle-a.internal')), false);
});

test('resolving a list: every address of every name, one family, names that fail left out and reported', async () => {
  const zone: Record<string, Array<{ address: string; family: number }>> = {
    'a.test': [{ address: '127.0.0.11', family: 4 }, { address: '127.0.0.12', family: 4 }],
    'b.test': [{ address: '::1', family: 6 }, { address: '127.0.0.13', family: 4 }, { address: '127.0.0.11', family: 4 }],
    'v6.test': [{ address: 'fd00::1', family: 6 }],
  };
  const lookup = async (host: string): Promise<Array<{ address: string; family: number }>> => {
    const r = zone[host];
    if (r === undefined) throw Object.assign(new Error(`queryA ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return r;
  };
  const r = await resolveServerAddresses(ok('a.test,b.test:9000,127.0.0.14,gone.test'), lookup);
  // IPv4 is used when there is any; a.test's 127.0.0.11:8081 and b.test's 127.0.0.11:9000 are different servers.
  assert.equal(formatServerAddresses(r.addresses), '127.0.0.11:8081, 127.0.0.12:8081, 127.0.0.13:9000, 127.0.0.11:9000, 127.0.0.14:8081');
  assert.deepEqual(r.unresolved, ['gone.test (ENOTFOUND)']);
  // Only IPv6 answers: IPv6 is used.
  assert.equal(formatServerAddresses((await resolveServerAddresses(ok('v6.test,gone.test'), lookup)).addresses), '[fd00::1]:8081');
  // Nothing resolves: one error naming every name.
  await assert.rejects(resolveServerAddresses(ok('gone.test,gone2.test'), lookup), /none of the servers in server_address resolves to an address: gone.test \(ENOTFOUND\), gone2.test \(ENOTFOUND\)/);
  // The system resolver: localhost is an address of this machine.
  const sys = await resolveServerAddresses(ok('localhost,127.0.0.2'));
  assert.ok(sys.addresses.some((a) => a.host === '127.0.0.1' || a.host === '::1'), formatServerAddresses(sys.addresses));
});

test('alternatives: several addresses, or a DNS name', () => {
  assert.equal(hasAlternatives(ok('127.0.0.1')), false);
  assert.equal(hasAlternatives(ok('127.0.0.1,127.0.0.2')), true);
  assert.equal(hasAlternatives(ok('spindle-server')), true);
});

test('connection order: random, with the server to keep first or to leave last', () => {
  const list = ok('127.0.0.1,127.0.0.2,127.0.0.3');
  const names = (l: ServerAddress[]): string => formatServerAddresses(l);
  // Every order comes up (a fleet spreads over the servers).
  const firsts = new Set<string>();
  for (let i = 0; i < 200; i++) firsts.add(connectionOrder(list)[0]!.host);
  assert.equal(firsts.size, 3);
  for (let i = 0; i < 50; i++) {
    assert.equal(connectionOrder(list, { last: '127.0.0.2:8081' })[2]!.host, '127.0.0.2');
    assert.equal(connectionOrder(list, { first: '127.0.0.3:8081' })[0]!.host, '127.0.0.3');
  }
  // An address not in the list (a DNS name's resolved address) changes nothing but the shuffle.
  assert.equal(connectionOrder(list, { last: '10.9.9.9:1' }, () => 0).length, 3);
  const identity = (n: number): number => n - 1;
  assert.equal(names(connectionOrder(list, {}, identity)), '127.0.0.1:8081, 127.0.0.2:8081, 127.0.0.3:8081');
});

test('channel targets: one address as before, several as one pick_first channel, a DNS name shuffled', () => {
  assert.deepEqual(channelTarget(ok('127.0.0.1')), { target: '127.0.0.1:8081', options: {} });
  assert.deepEqual(channelTarget(ok('::1')), { target: '[::1]:8081', options: {} });
  const many = channelTarget(ok('127.0.0.2,127.0.0.1:9000'));
  assert.equal(many.target, 'ipv4:127.0.0.2:8081,127.0.0.1:9000');
  assert.deepEqual(JSON.parse(many.options['grpc.service_config']!), { loadBalancingConfig: [{ pick_first: {} }] });
  assert.equal(channelTarget(ok('[::1],[::2]:9')).target, 'ipv6:[::1]:8081,[::2]:9');
  const dns = channelTarget(ok('spindle-server.internal'));
  assert.equal(dns.target, 'dns:spindle-server.internal:8081');
  assert.deepEqual(JSON.parse(dns.options['grpc.service_config']!), { loadBalancingConfig: [{ pick_first: { shuffleAddressList: true } }] });
  assert.throws(() => channelTarget([]));
});

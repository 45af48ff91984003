import { test } from 'node:test';
import assert from 'node:assert/strict';
import { channelTarget, connectionOrder, formatServerAddresses, hasAlternatives, parseServerAddressList, type ServerAddress } from './serveraddress.js';

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
  assert.match(bad('127.0.0.1,server.example'), /must be IP addresses, got the host name "server.example"; .*one DNS name that resolves to all of them/);
  assert.match(bad('127.0.0.1,::1'), /all IPv4 or all IPv6/);
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

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, SpiffeError } from './errors.js';
import { formatEndpointAddress, parseEndpointAddress, toGrpcTarget, type EndpointAddress } from './endpoint.js';

const VALID: Array<{ input: string; want: EndpointAddress; target: string; canonical: string }> = [
  { input: 'unix:///tmp/agent.sock', want: { kind: 'unix', path: '/tmp/agent.sock' }, target: 'unix:///tmp/agent.sock', canonical: 'unix:///tmp/agent.sock' },
  { input: 'unix:/tmp/agent.sock', want: { kind: 'unix', path: '/tmp/agent.sock' }, target: 'unix:///tmp/agent.sock', canonical: 'unix:///tmp/agent.sock' },
  { input: 'unix:///run/spire/sockets/api.sock', want: { kind: 'unix', path: '/run/spire/sockets/api.sock' }, target: 'unix:///run/spire/sockets/api.sock', canonical: 'unix:///run/spire/sockets/api.sock' },
  { input: 'unix:///s', want: { kind: 'unix', path: '/s' }, target: 'unix:///s', canonical: 'unix:///s' },
  { input: 'unix:///tmp/a@b', want: { kind: 'unix', path: '/tmp/a@b' }, target: 'unix:///tmp/a@b', canonical: 'unix:///tmp/a@b' },
  { input: 'tcp://127.0.0.1:8081', want: { kind: 'tcp', host: '127.0.0.1', port: 8081 }, target: 'ipv4:127.0.0.1:8081', canonical: 'tcp://127.0.0.1:8081' },
  { input: 'tcp://1.2.3.4:1', want: { kind: 'tcp', host: '1.2.3.4', port: 1 }, target: 'ipv4:1.2.3.4:1', canonical: 'tcp://1.2.3.4:1' },
  { input: 'tcp://1.2.3.4:65535', want: { kind: 'tcp', host: '1.2.3.4', port: 65535 }, target: 'ipv4:1.2.3.4:65535', canonical: 'tcp://1.2.3.4:65535' },
  { input: 'tcp://[::1]:8081', want: { kind: 'tcp', host: '::1', port: 8081 }, target: 'ipv6:[::1]:8081', canonical: 'tcp://[::1]:8081' },
  { input: 'tcp://[2001:db8::5]:443', want: { kind: 'tcp', host: '2001:db8::5', port: 443 }, target: 'ipv6:[2001:db8::5]:443', canonical: 'tcp://[2001:db8::5]:443' },
  { input: 'tcp://[::ffff:10.0.0.1]:80', want: { kind: 'tcp', host: '::ffff:10.0.0.1', port: 80 }, target: 'ipv6:[::ffff:10.0.0.1]:80', canonical: 'tcp://[::ffff:10.0.0.1]:80' },
];

const INVALID: Array<[string, string]> = [
  ['', 'empty'],
  ['/tmp/agent.sock', 'scheme'],
  ['tmp/agent.sock', 'scheme'],
  ['http://127.0.0.1:80', 'scheme'],
  ['unixgram:///tmp/s', 'scheme'],
  ['UNIX:///tmp/s', 'scheme'],
  ['Tcp://127.0.0.1:80', 'scheme'],
  [' unix:///tmp/s', 'scheme'],
  [':///tmp/s', 'scheme'],
  ['unix://host/tmp/s', 'unix_authority'],
  ['unix://localhost/tmp/s', 'unix_authority'],
  ['unix://tmp/s', 'unix_authority'],
  ['unix://user@/tmp/s', 'userinfo'],
  ['unix://user@host/tmp/s', 'userinfo'],
  ['unix:tmp/s', 'unix_relative_path'],
  ['unix:./s', 'unix_relative_path'],
  ['unix:', 'unix_empty_path'],
  ['unix:/', 'unix_empty_path'],
  ['unix://', 'unix_empty_path'],
  ['unix:///', 'unix_empty_path'],
  ['unix:///tmp/s?x=1', 'query'],
  ['unix:///tmp/s?', 'query'],
  ['unix:///tmp/s#f', 'fragment'],
  ['unix:///tmp/s#', 'fragment'],
  ['unix:///tmp/a%20b', 'percent_encoding'],
  ['unix:///tmp/a b', 'char'],
  ['unix:///tmp/s\n', 'char'],
  ['unix:///tmp/s\u0000', 'char'],
  ['unix:///tmp/caf\u00e9', 'char'],
  ['tcp:127.0.0.1:80', 'tcp_opaque'],
  ['tcp:/127.0.0.1:80', 'tcp_opaque'],
  ['tcp://', 'tcp_not_ip'],
  ['tcp://:80', 'tcp_not_ip'],
  ['tcp://localhost:80', 'tcp_not_ip'],
  ['tcp://example.org:80', 'tcp_not_ip'],
  ['tcp://1.2.3:80', 'tcp_not_ip'],
  ['tcp://256.1.1.1:80', 'tcp_not_ip'],
  ['tcp://01.2.3.4:80', 'tcp_not_ip'],
  ['tcp://::1:80', 'tcp_not_ip'],
  ['tcp://[::1:80', 'tcp_not_ip'],
  ['tcp://[1.2.3.4]:80', 'tcp_not_ip'],
  ['tcp://[localhost]:80', 'tcp_not_ip'],
  ['tcp://[fe80::1%25eth0]:80', 'percent_encoding'],
  ['tcp://127.0.0.1', 'tcp_port_missing'],
  ['tcp://127.0.0.1:', 'tcp_port_missing'],
  ['tcp://[::1]', 'tcp_port_missing'],
  ['tcp://[::1]:', 'tcp_port_missing'],
  ['tcp://127.0.0.1:0', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:65536', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:99999', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:100000', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:080', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:+80', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:8a', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:1e3', 'tcp_port_invalid'],
  ['tcp://[::1]x', 'tcp_port_invalid'],
  ['tcp://127.0.0.1:80/', 'tcp_path'],
  ['tcp://127.0.0.1:80/api', 'tcp_path'],
  ['tcp://127.0.0.1:80?x', 'query'],
  ['tcp://127.0.0.1:80#f', 'fragment'],
  ['tcp://user@127.0.0.1:80', 'userinfo'],
  ['tcp://user:pw@127.0.0.1:80', 'userinfo'],
  ['tcp://127.0.0.1:80 ', 'char'],
];

describe('parseEndpointAddress: accepted forms', () => {
  for (const v of VALID) {
    it(`accepts ${v.input}`, () => {
      const addr = parseEndpointAddress(v.input);
      assert.deepEqual(addr, v.want);
      assert.equal(toGrpcTarget(addr), v.target);
      assert.equal(formatEndpointAddress(addr), v.canonical);
      assert.deepEqual(parseEndpointAddress(formatEndpointAddress(addr)), v.want, 'canonical form round-trips');
    });
  }
});

describe('parseEndpointAddress: rejected forms', () => {
  for (const [input, reason] of INVALID) {
    it(`rejects ${JSON.stringify(input)} as ${reason}`, () => {
      let caught: unknown;
      try {
        parseEndpointAddress(input);
      } catch (err) {
        caught = err;
      }
      assert.ok(caught instanceof SpiffeError, `expected a SpiffeError, got ${String(caught)}`);
      assert.equal(caught.code, ErrorCode.ENDPOINT_ADDRESS_INVALID);
      assert.equal(caught.reason, reason, caught.message);
      assert.ok(caught.message.includes(JSON.stringify(input)), `message should quote the input: ${caught.message}`);
    });
  }
  it('rejects non-strings with a SpiffeError', () => {
    assert.throws(
      () => parseEndpointAddress(undefined as unknown as string),
      (e: unknown) => e instanceof SpiffeError && e.reason === 'not_string',
    );
  });
});

describe('toGrpcTarget', () => {
  it('keeps a path beginning with "//" intact for grpc-js', () => {
    const addr = parseEndpointAddress('unix:////tmp/s');
    assert.deepEqual(addr, { kind: 'unix', path: '//tmp/s' });
    // grpc-js reads unix://<empty authority>/<rest> as "/" + rest.
    assert.equal(toGrpcTarget(addr), 'unix:////tmp/s');
  });
});

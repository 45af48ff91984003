// Formatting and flag helpers of the agent's client commands (no processes, no sockets).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expandFetchAlias } from './api.js';
import { collectCommaList, DEFAULT_SOCKET_PATH, endpointAddressFor, parseTimeout } from './common.js';
import { goDurationString, writeProtoJson } from './printer.js';

test('goDurationString prints as Go time.Duration.String()', () => {
  const cases: [bigint, string][] = [
    [0n, '0s'],
    [812n, '812ns'],
    [1_500n, '1.5µs'],
    [8_123_456n, '8.123456ms'],
    [8_100_000n, '8.1ms'],
    [1_000_000_000n, '1s'],
    [1_500_000_000n, '1.5s'],
    [60_000_000_000n, '1m0s'],
    [123_004_500_000n, '2m3.0045s'],
    [3_600_000_000_000n, '1h0m0s'],
    [-2_000_000n, '-2ms'],
  ];
  for (const [ns, s] of cases) assert.equal(goDurationString(ns), s, String(ns));
});

test('parseTimeout: Go durations and whole seconds, positive only', () => {
  assert.equal(parseTimeout('5s'), 5000);
  assert.equal(parseTimeout('500ms'), 500);
  assert.equal(parseTimeout('1m30s'), 90_000);
  assert.equal(parseTimeout('1.5s'), 1500);
  assert.equal(parseTimeout('2'), 2000);
  for (const bad of ['', '0', '0s', '-1s', '5 s', 'soon', '5x', '100ns']) assert.throws(() => parseTimeout(bad), /invalid value/, bad);
});

test('endpointAddressFor: -socketPath, then SPIFFE_ENDPOINT_SOCKET, then the default', () => {
  assert.equal(endpointAddressFor('/run/a.sock', { SPIFFE_ENDPOINT_SOCKET: 'unix:///b.sock' }), 'unix:///run/a.sock');
  assert.equal(endpointAddressFor('rel/a.sock', {}), `unix://${process.cwd()}/rel/a.sock`);
  assert.equal(endpointAddressFor('tcp://127.0.0.1:9', {}), 'tcp://127.0.0.1:9');
  assert.equal(endpointAddressFor(undefined, { SPIFFE_ENDPOINT_SOCKET: 'unix:///b.sock' }), 'unix:///b.sock');
  assert.equal(endpointAddressFor(undefined, { SPIFFE_ENDPOINT_SOCKET: '' }), `unix://${DEFAULT_SOCKET_PATH}`);
  assert.equal(endpointAddressFor(undefined, {}), 'unix:///tmp/spindle-agent/public/api.sock');
});

test('`api fetch` is `api fetch x509` unless a kind or help follows', () => {
  assert.deepEqual(expandFetchAlias(['api', 'fetch']), ['api', 'fetch', 'x509']);
  assert.deepEqual(expandFetchAlias(['api', 'fetch', '-socketPath', 's']), ['api', 'fetch', 'x509', '-socketPath', 's']);
  assert.deepEqual(expandFetchAlias(['api', 'fetch', 'jwt', '-audience', 'a']), ['api', 'fetch', 'jwt', '-audience', 'a']);
  assert.deepEqual(expandFetchAlias(['api', 'fetch', '-h']), ['api', 'fetch', '-h']);
  assert.deepEqual(expandFetchAlias(['api', 'watch']), ['api', 'watch']);
});

test('-audience accepts repeats and comma separated lists', () => {
  assert.deepEqual(['a,b', 'c', ',d,'].reduce<string[] | undefined>((prev, v) => collectCommaList(v, prev), undefined), ['a', 'b', 'c', 'd']);
});

test('writeProtoJson: keys sorted at every level, Go escaping, several messages form an array', () => {
  let out = '';
  const w = { write: (s: string) => void (out += s) };
  writeProtoJson(w, [{ b: 1, a: { d: '<&>', c: [{ z: 1, y: 2 }] } }]);
  assert.equal(out, '{"a":{"c":[{"y":2,"z":1}],"d":"\\u003c\\u0026\\u003e"},"b":1}\n');
  out = '';
  writeProtoJson(w, [{ x: 1 }, { y: 2 }]);
  assert.equal(out, '[{"x":1},{"y":2}]\n');
});

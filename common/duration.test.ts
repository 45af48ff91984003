import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DurationError, MAX_DURATION_SECONDS, formatDuration, parseDuration } from './duration.js';

test('parseDuration reads Go-style durations into whole seconds', () => {
  const cases: Array<[string, number]> = [
    ['1h', 3600],
    ['5m', 300],
    ['90s', 90],
    ['1h30m', 5400],
    ['24h', 86400],
    ['1h0m0s', 3600],
    ['1.5h', 5400],
    ['.5m', 30],
    ['0.5m', 30],
    ['0', 0],
    ['0s', 0],
    ['2000ms', 2],
    ['1000000us', 1],
    ['1000000µs', 1],
    ['1000000μs', 1],
    ['1000000000ns', 1],
    ['1m500ms500ms', 61],
  ];
  for (const [input, want] of cases) {
    assert.equal(parseDuration(input, 'k'), want, input);
  }
});

test('parseDuration reads plain non-negative integers (numbers or digit strings) as seconds', () => {
  assert.equal(parseDuration(3600, 'k'), 3600);
  assert.equal(parseDuration(0, 'k'), 0);
  assert.equal(parseDuration('3600', 'k'), 3600);
  assert.equal(parseDuration(MAX_DURATION_SECONDS, 'k'), MAX_DURATION_SECONDS);
});

test('parseDuration rejects sub-second totals instead of rounding', () => {
  for (const input of ['500ms', '1500ms', '1.5s', '1ns', '0.1s']) {
    assert.throws(
      () => parseDuration(input, 'server.ca_ttl'),
      (err: unknown) => {
        assert.ok(err instanceof DurationError);
        assert.equal(err.message, `server.ca_ttl: must be a whole number of seconds, got ${JSON.stringify(input)}`);
        return true;
      },
      input,
    );
  }
});

test('parseDuration errors name the key and quote the value', () => {
  const bad: Array<string | number> = ['abc', '', '1d', '1 h', ' 1h', '1h ', 'h', '.s', '1.h.', '+1h', '1h-1m', '1.5', '1e3s', '1H', 1.5, NaN, Infinity];
  for (const input of bad) {
    assert.throws(
      () => parseDuration(input, 'server.default_x509_svid_ttl'),
      (err: unknown) => {
        assert.ok(err instanceof DurationError, String(input));
        assert.equal(err.code, 'ERR_DURATION_INVALID');
        assert.equal(err.key, 'server.default_x509_svid_ttl');
        assert.ok(err.message.startsWith('server.default_x509_svid_ttl: '), err.message);
        assert.ok(err.message.includes(typeof input === 'string' ? JSON.stringify(input) : String(input)), err.message);
        assert.equal(err.message, `server.default_x509_svid_ttl: ${err.detail}`);
        return true;
      },
      String(input),
    );
  }
});

test('parseDuration rejects negative values and values beyond Go\'s maximum duration', () => {
  assert.throws(() => parseDuration('-1h', 'k'), /k: must not be negative, got "-1h"/);
  assert.throws(() => parseDuration(-1, 'k'), /k: must not be negative, got -1/);
  assert.throws(() => parseDuration('3000000h', 'k'), /longer than the maximum duration/);
  assert.throws(() => parseDuration(String(MAX_DURATION_SECONDS + 1), 'k'), /longer than the maximum duration/);
  assert.throws(() => parseDuration(MAX_DURATION_SECONDS + 1, 'k'), DurationError);
  assert.equal(parseDuration('2562047h', 'k'), 2562047 * 3600); // just under Go's limit
});

test('parseDuration truncates sub-nanosecond fractions per part, as Go does', () => {
  assert.equal(parseDuration('1.0000000001s', 'k'), 1);
});

test('formatDuration writes the compact form', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(59), '59s');
  assert.equal(formatDuration(90), '1m30s');
  assert.equal(formatDuration(300), '5m');
  assert.equal(formatDuration(3600), '1h');
  assert.equal(formatDuration(3661), '1h1m1s');
  assert.equal(formatDuration(5400), '1h30m');
  assert.equal(formatDuration(86400), '24h');
  assert.equal(formatDuration(90000), '25h');
});

test('formatDuration output parses back to the same number', () => {
  for (const n of [0, 1, 59, 60, 61, 3599, 3600, 3601, 86399, 86400, 123456789, MAX_DURATION_SECONDS]) {
    assert.equal(parseDuration(formatDuration(n), 'k'), n);
  }
});

test('formatDuration rejects negative and fractional seconds', () => {
  assert.throws(() => formatDuration(-1), RangeError);
  assert.throws(() => formatDuration(1.5), RangeError);
  assert.throws(() => formatDuration(NaN), RangeError);
});

/**
 * Durations in config files, written the way SPIRE writes them (Go's `time.ParseDuration`).
 *
 * Contract for `parseDuration(value, key)` (returns whole SECONDS):
 * - Go syntax: one or more `<number><unit>` parts, number a decimal with optional fraction, unit
 *   one of `ns us µs ms s m h` ("1h", "5m", "90s", "1h30m", "1.5h", "2000ms"). No days: Go has
 *   none either, so "24h" is a day. "0" alone is zero, as in Go.
 * - A plain non-negative integer (a number, or a string of digits) is seconds: 3600, "3600".
 * - The total must be a whole number of seconds. "500ms" and "1500ms" are rejected rather than
 *   rounded (every consumer works in seconds, and X.509 validity has one-second resolution);
 *   "2000ms" is 2. Sub-nanosecond fractions are truncated per part, as Go does.
 * - Negative values, signs, spaces and values over Go's maximum duration (~292 years) are errors.
 * Errors are `DurationError` (code `ERR_DURATION_INVALID`) naming the key and quoting the value.
 *
 * `parseGoDuration(value)` is the syntax alone (exact nanoseconds, no bare-digit form, no
 * whole-second rule), for callers with other units such as the agent CLI's `-timeout` (ms).
 *
 * `formatDuration(seconds)` writes the compact form ("1h30m", "24h", "90s" -> "1m30s", "0s"),
 * which `parseDuration` reads back to the same number.
 */

/** Go's `time.Duration` maximum (2^63-1 ns), in whole seconds. */
export const MAX_DURATION_SECONDS = 9_223_372_036;

const NS_PER_SECOND = 1_000_000_000n;
const MAX_NS = 9_223_372_036_854_775_807n;

const UNIT_NS: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  'µs': 1_000n, // U+00B5 micro sign
  'μs': 1_000n, // U+03BC Greek mu
  ms: 1_000_000n,
  s: NS_PER_SECOND,
  m: 60n * NS_PER_SECOND,
  h: 3600n * NS_PER_SECOND,
};

/** One `<number><unit>` part; the whole string must be a sequence of these. */
const PART = /(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/y;
const DIGITS = /^\d+$/;

const EXPECTED = 'expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds)';

export class DurationError extends Error {
  readonly code = 'ERR_DURATION_INVALID';
  /** The config key the value came from, e.g. `server.ca_ttl`. */
  readonly key: string;
  readonly value: unknown;
  /** The message without the key, for callers that format the key themselves. */
  readonly detail: string;

  constructor(key: string, value: unknown, detail: string) {
    super(`${key}: ${detail}`);
    this.name = 'DurationError';
    this.key = key;
    this.value = value;
    this.detail = detail;
  }
}

function show(value: unknown): string {
  if (typeof value === 'string') {
    return JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);
  }
  return String(value);
}

/** Why parseGoDuration rejected a value. */
export type GoDurationProblem = 'syntax' | 'negative' | 'too_long';

/**
 * Go's `time.ParseDuration` syntax (see the module contract) to exact nanoseconds, or the reason
 * it is not one. Positive only (no sign), at most Go's maximum duration; "0" alone is zero.
 */
export function parseGoDuration(value: string): { ns: bigint } | { problem: GoDurationProblem } {
  if (value === '0') return { ns: 0n };
  if (value === '') return { problem: 'syntax' };
  if (value.startsWith('-')) return { problem: 'negative' };
  let totalNs = 0n;
  let pos = 0;
  while (pos < value.length) {
    PART.lastIndex = pos;
    const m = PART.exec(value);
    if (m === null || m.index !== pos) return { problem: 'syntax' };
    const int = m[1] ?? '';
    const frac = m[2] ?? '';
    if (int === '' && frac === '') return { problem: 'syntax' };
    const unit = UNIT_NS[m[3] ?? '']!;
    const scale = 10n ** BigInt(frac.length);
    // Truncates below one nanosecond, as Go does.
    totalNs += (BigInt(int || '0') * scale + BigInt(frac || '0')) * unit / scale;
    if (totalNs > MAX_NS) return { problem: 'too_long' };
    pos = PART.lastIndex;
  }
  return { ns: totalNs };
}

/** Parses a Go-style duration or whole seconds into whole seconds; see the module contract. */
export function parseDuration(value: string | number, key: string): number {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || value > MAX_DURATION_SECONDS) {
      throw new DurationError(
        key,
        value,
        value < 0 ? `must not be negative, got ${show(value)}` : `${EXPECTED}, got ${show(value)}`,
      );
    }
    return value;
  }
  if (typeof value !== 'string') throw new DurationError(key, value, `${EXPECTED}, got ${typeof value}`);
  if (DIGITS.test(value)) {
    const n = Number(value);
    if (n > MAX_DURATION_SECONDS) throw new DurationError(key, value, `is longer than the maximum duration, got ${show(value)}`);
    return n;
  }
  const parsed = parseGoDuration(value);
  if ('problem' in parsed) {
    const detail =
      parsed.problem === 'negative'
        ? 'must not be negative'
        : parsed.problem === 'too_long'
          ? 'is longer than the maximum duration'
          : EXPECTED;
    throw new DurationError(key, value, `${detail}, got ${show(value)}`);
  }
  const totalNs = parsed.ns;
  if (totalNs % NS_PER_SECOND !== 0n) {
    throw new DurationError(key, value, `must be a whole number of seconds, got ${show(value)}`);
  }
  return Number(totalNs / NS_PER_SECOND);
}

/** Writes whole seconds in the compact Go form: 5400 -> "1h30m", 90 -> "1m30s", 0 -> "0s". */
export function formatDuration(seconds: number): string {
  if (!Number.isInteger(seconds) || seconds < 0) {
    throw new RangeError(`formatDuration: expected a non-negative integer number of seconds, got ${seconds}`);
  }
  if (seconds === 0) return '0s';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h > 0 ? `${h}h` : ''}${m > 0 ? `${m}m` : ''}${s > 0 ? `${s}s` : ''}`;
}

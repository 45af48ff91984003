/**
 * The messages of config validation: `ConfigError` (every problem of a file at once), how a
 * value is shown in a problem, and the "unknown key" line with its typo suggestion.
 *
 * Every problem is one line, `config: <dotted.key>: <what was expected>, got <value>` (or
 * `config: <file>:<line>:<col>: ...` for syntax errors).
 */

export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG_INVALID';
  /** Every problem found, each a full line (`config: server.bind_port: ...`). */
  readonly problems: string[];

  constructor(problems: string[], options?: { cause?: unknown }) {
    super(
      problems.length === 1
        ? problems[0]!
        : `${problems.length} configuration problems:\n  ${problems.join('\n  ')}`,
      options,
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof ConfigError;
}

/** A value as shown in a problem: strings quoted (and cut), lists and maps by kind. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 100 ? `${v.slice(0, 100)}...` : v);
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a map';
  return String(v);
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The candidate closest to `key` (case-insensitive edit distance), if close enough to be a typo. */
export function closestKey(key: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  // Close enough to be a typo: at most a quarter of the key (at least 1 edit), and never most of it.
  const close = bestD <= Math.max(1, Math.floor(key.length / 4)) && bestD * 2 < key.length;
  return best !== undefined && close ? best : undefined;
}

/** The problem line for a key nobody asked for at dotted `path`, suggesting the closest of `known`. */
export function unknownKeyProblem(path: string, key: string, known: Iterable<string>): string {
  const near = closestKey(key, known);
  return `config: ${path}: unknown key${near !== undefined ? ` (did you mean "${near}"?)` : ''}`;
}

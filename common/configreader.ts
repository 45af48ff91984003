/**
 * `ConfigReader`: typed, key-tracking access to the plain object a config file became
 * (configformat.ts). Contract:
 * - Every getter names its key, so any key nobody asked for is an error ("unknown key") naming
 *   its full dotted path (`server.trust_domian`), with a suggestion when one is close.
 * - Problems are collected, not thrown one at a time: `throwIfInvalid()` throws one
 *   `ConfigError` (code `ERR_CONFIG_INVALID`) whose `problems` lists every one, each formatted
 *   `config: <dotted.key>: <what was expected>, got <value>` (configmessages.ts).
 * - `null` (YAML `key:` with nothing after it) means "not set", like an absent key. So does an
 *   empty string for string getters, as in SPIRE, where "" and unset cannot be told apart.
 * - Like HCL's decoder, integers and booleans may also be written as strings ("8081", "true"),
 *   since SPIRE configs commonly quote them.
 * - HCL-to-JSON shapes are accepted: a section may be a one-element list of maps.
 */
import { DurationError, formatDuration, parseDuration } from './duration.js';
import { ConfigError, describeValue, unknownKeyProblem } from './configmessages.js';

type RawMap = Record<string, unknown>;

interface Context {
  problems: string[];
  readers: ConfigReader[];
}

/** Set by `nested()` for the one constructor call it makes, so the new reader joins its list. */
let joiningContext: Context | undefined;

export function isPlainMap(v: unknown): v is RawMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One-element lists of maps stand for a single block (the HCL-to-JSON shape). */
export function unwrapBlock(v: unknown): unknown {
  return Array.isArray(v) && v.length === 1 && isPlainMap(v[0]) ? v[0] : v;
}

export interface IntOptions {
  min?: number;
  max?: number;
}

export interface DurationOptions {
  /** Smallest accepted value, in seconds. */
  min?: number;
  /** Largest accepted value, in seconds. */
  max?: number;
}

/**
 * Typed, key-tracking access to one map of a raw config (see the module contract). A root
 * reader and the sections reached from it share one problem list; `throwIfInvalid()` on the
 * root reports everything, unknown keys included.
 */
export class ConfigReader {
  /** Dotted path of this map ('' for the root). */
  readonly path: string;
  /** False when the section was absent or null (the reader is then empty). */
  readonly present: boolean;
  private readonly map: RawMap;
  private readonly known = new Set<string>();
  private readonly ctx: Context;

  /**
   * A root reader over `raw` (a map; null/undefined read as empty). `path` prefixes every key
   * in messages, for readers over a part of a larger file (`plugins.X.y.plugin_data`).
   */
  constructor(raw: unknown, path = '') {
    this.path = path;
    this.ctx = joiningContext ?? { problems: [], readers: [] };
    joiningContext = undefined;
    this.ctx.readers.push(this);
    const v = unwrapBlock(raw);
    this.present = v !== undefined && v !== null;
    if (isPlainMap(v)) this.map = v;
    else {
      this.map = {};
      if (this.present) this.problemHere(`expected a map of settings, got ${describeValue(v)}`);
    }
  }

  /** A reader over a value found under this one (at dotted `path`), sharing its problem list. */
  nested(raw: unknown, path: string): ConfigReader {
    joiningContext = this.ctx;
    return new ConfigReader(raw, path);
  }

  /** Full dotted path of a key of this map. */
  keyPath(key: string): string {
    return this.path === '' ? key : `${this.path}.${key}`;
  }

  /** The raw map (for passing through or comparing). */
  get value(): Readonly<RawMap> {
    return this.map;
  }

  /** The keys present in the map, in file order. */
  keys(): string[] {
    return Object.keys(this.map);
  }

  /** Whether the key is set (present and not null). Marks the key as known. */
  has(key: string): boolean {
    return this.raw(key) !== undefined;
  }

  /** The raw value of a key (undefined when absent or null). Marks the key as known. */
  raw(key: string): unknown {
    this.known.add(key);
    const v = Object.hasOwn(this.map, key) ? this.map[key] : undefined;
    return v === null ? undefined : v;
  }

  /** Records a problem about one key: `config: <path.key>: <detail>`. */
  problem(key: string, detail: string): void {
    this.ctx.problems.push(`config: ${this.keyPath(key)}: ${detail}`);
  }

  /** Records a problem about this section as a whole (or the file, for the root). */
  problemHere(detail: string): void {
    this.ctx.problems.push(this.path === '' ? `config: ${detail}` : `config: ${this.path}: ${detail}`);
  }

  /** Records a problem line as given (it should start with `config: `). */
  problemLine(line: string): void {
    this.ctx.problems.push(line);
  }

  /** If the key is set, records `detail` as a problem (for recognized but unsupported keys). */
  unsupported(key: string, detail: string): void {
    if (this.has(key)) this.problem(key, detail);
  }

  /** A string; "" counts as unset. Non-strings are problems (and give the default). */
  string(key: string): string | undefined;
  string(key: string, def: string): string;
  string(key: string, def?: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined || v === '') return def;
    if (typeof v !== 'string') {
      this.problem(key, `expected a string, got ${describeValue(v)}`);
      return def;
    }
    return v;
  }

  /** An integer (or a string of digits) within the bounds. */
  int(key: string, opts: IntOptions & { default: number }): number;
  int(key: string, opts?: IntOptions & { default?: number }): number | undefined;
  int(key: string, opts: IntOptions & { default?: number } = {}): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return opts.default;
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v.trim()) : NaN;
    const { min, max } = opts;
    if (!Number.isSafeInteger(n) || (min !== undefined && n < min) || (max !== undefined && n > max)) {
      let expected = 'expected an integer';
      if (min !== undefined && max !== undefined) expected += ` between ${min} and ${max}`;
      else if (min !== undefined) expected += ` of at least ${min}`;
      else if (max !== undefined) expected += ` of at most ${max}`;
      this.problem(key, `${expected}, got ${describeValue(v)}`);
      return opts.default;
    }
    return n;
  }

  /** true/false (or the strings "true"/"false"). */
  bool(key: string, def: boolean): boolean;
  bool(key: string): boolean | undefined;
  bool(key: string, def?: boolean): boolean | undefined {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === 'false') return v === 'true';
    this.problem(key, `expected true or false, got ${describeValue(v)}`);
    return def;
  }

  /** A duration in whole seconds (see common/duration.ts); the default is in seconds too. */
  duration(key: string, def: number, opts?: DurationOptions): number;
  duration(key: string, def?: number, opts?: DurationOptions): number | undefined;
  duration(key: string, def?: number, opts: DurationOptions = {}): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (typeof v !== 'string' && typeof v !== 'number') {
      this.problem(key, `expected a duration such as "1h", "30m" or "90s", got ${describeValue(v)}`);
      return def;
    }
    let seconds: number;
    try {
      seconds = parseDuration(v, this.keyPath(key));
    } catch (err) {
      if (!(err instanceof DurationError)) throw err;
      this.problem(key, err.detail);
      return def;
    }
    if (opts.min !== undefined && seconds < opts.min) {
      this.problem(key, `must be at least ${formatDuration(opts.min)}, got ${describeValue(v)}`);
      return def;
    }
    if (opts.max !== undefined && seconds > opts.max) {
      this.problem(key, `must be at most ${formatDuration(opts.max)}, got ${describeValue(v)}`);
      return def;
    }
    return seconds;
  }

  /**
   * One of `values`, returned in its canonical spelling from `values`. With `caseInsensitive`,
   * "debug" matches "DEBUG".
   */
  enum<T extends string>(key: string, values: readonly T[], def: T, opts?: { caseInsensitive?: boolean }): T;
  enum<T extends string>(key: string, values: readonly T[], def?: T, opts?: { caseInsensitive?: boolean }): T | undefined;
  enum<T extends string>(key: string, values: readonly T[], def?: T, opts: { caseInsensitive?: boolean } = {}): T | undefined {
    const v = this.raw(key);
    if (v === undefined || v === '') return def;
    if (typeof v === 'string') {
      const found = values.find((c) => (opts.caseInsensitive ? c.toLowerCase() === v.toLowerCase() : c === v));
      if (found !== undefined) return found;
    }
    this.problem(key, `expected one of ${values.join(', ')}, got ${describeValue(v)}`);
    return def;
  }

  /** A list of strings; each bad element is reported with its index (`key[2]`). */
  stringList(key: string, def: string[]): string[];
  stringList(key: string): string[] | undefined;
  stringList(key: string, def?: string[]): string[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (!Array.isArray(v)) {
      this.problem(key, `expected a list of strings, got ${describeValue(v)}`);
      return def;
    }
    const out: string[] = [];
    v.forEach((item, i) => {
      if (typeof item === 'string') out.push(item);
      else this.problem(`${key}[${i}]`, `expected a string, got ${describeValue(item)}`);
    });
    return out;
  }

  /** A nested map; absent or null gives an empty reader with `present` false. */
  section(key: string): ConfigReader {
    return this.nested(this.raw(key), this.keyPath(key));
  }

  /** The map's entries, each as a nested reader (for maps keyed by name); all keys count as known. */
  sections(): Array<[string, ConfigReader]> {
    return this.keys().map((k) => [k, this.section(k)]);
  }

  /**
   * Unknown keys of every reader sharing this reader's problem list, then every other problem
   * recorded so far. Does not throw.
   */
  collectProblems(): string[] {
    const unknown: string[] = [];
    for (const r of this.ctx.readers) {
      for (const key of r.keys()) {
        if (r.known.has(key)) continue;
        unknown.push(unknownKeyProblem(r.keyPath(key), key, r.known));
      }
    }
    return [...unknown, ...this.ctx.problems];
  }

  /** Throws one `ConfigError` listing every problem, if there are any. */
  throwIfInvalid(): void {
    const problems = this.collectProblems();
    if (problems.length > 0) throw new ConfigError(problems);
  }

  /** Takes in the problems of a reader with its own problem list (e.g. a plugin's data). */
  absorb(other: ConfigReader): void {
    if (other.ctx === this.ctx) return;
    this.ctx.problems.push(...other.collectProblems());
  }
}

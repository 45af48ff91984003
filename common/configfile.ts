/**
 * Config files and their validation, shared by spindle-server and spindle-agent.
 *
 * Files have SPIRE's structure (sections, key names, plugin blocks) written as YAML or JSON
 * instead of HCL. Loading gives a raw `unknown`; a `ConfigReader` then walks it with typed
 * getters. Contract:
 * - Every getter names its key, so any key nobody asked for is an error ("unknown key") naming
 *   its full dotted path (`server.trust_domian`), with a suggestion when one is close.
 * - Problems are collected, not thrown one at a time: `throwIfInvalid()` throws one
 *   `ConfigError` (code `ERR_CONFIG_INVALID`) whose `problems` lists every one, each formatted
 *   `config: <dotted.key>: <what was expected>, got <value>`.
 * - `null` (YAML `key:` with nothing after it) means "not set", like an absent key. So does an
 *   empty string for string getters, as in SPIRE, where "" and unset cannot be told apart.
 * - Like HCL's decoder, integers and booleans may also be written as strings ("8081", "true"),
 *   since SPIRE configs commonly quote them.
 * - HCL-to-JSON shapes are accepted: a section may be a one-element list of maps, and a plugin
 *   kind may be a list of `{ name: {...} }` maps.
 * Nothing here reads `process.env`: `expandEnv` takes the environment as an argument.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parseDocument } from 'yaml';
import { DurationError, formatDuration, parseDuration } from './duration.js';

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

// ---------------------------------------------------------------------------------------------
// Files

export type ConfigFormat = 'yaml' | 'json';

export interface LoadConfigOptions {
  /** When given, `$VAR` / `${VAR}` in the file text are expanded from it before parsing. */
  env?: Readonly<Record<string, string | undefined>>;
}

/**
 * Reads and parses a config file: `.yaml`/`.yml` as YAML, `.json` as JSON, anything else
 * (`.conf`, no extension) as JSON when it starts with `{` or `[` (so its errors are JSON
 * errors), else as YAML. Throws `ConfigError` naming the path, with line and column for syntax
 * errors. An empty file is `{}`. With `options.env`, the text is run through `expandEnv` first.
 */
export function loadConfigFile(path: string, options: LoadConfigOptions = {}): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : String((err as Error).message);
    throw new ConfigError([`config: cannot read config file ${path}: ${why}`], { cause: err });
  }
  if (options.env !== undefined) text = expandEnv(text, options.env);
  return parseConfigText(text, path);
}

function formatOf(path: string): ConfigFormat | undefined {
  const ext = extname(path).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  return undefined;
}

/** Parses config text; `source` (a path) names it in errors and picks the format by extension. */
export function parseConfigText(text: string, source: string, format: ConfigFormat | undefined = formatOf(source)): unknown {
  if (format === 'json') return parseJson(text, source);
  if (format === 'yaml') return parseYaml(text, source);
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    // Looks like JSON: a JSON error is the one worth showing, even if YAML would swallow it.
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return parseJson(text, source);
    }
  }
  return parseYaml(text, source);
}

function parseYaml(text: string, source: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const at = e.linePos?.[0];
        const where = at ? `${source}:${at.line}:${at.col}` : source;
        // prettyErrors appends " at line L, column C:" and a code excerpt; the position is above.
        const message = (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
        return `config: ${where}: invalid YAML: ${message}`;
      }),
    );
  }
  const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
  return value ?? {};
}

function parseJson(text: string, source: string): unknown {
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    // V8 sometimes quotes (part of) the input after the first clause; keep only that clause.
    const message = (err as Error).message
      .replace(/, (?:\.\.\.)?".*" is not valid JSON$/s, '')
      .replace(/ in JSON at position \d+.*$/s, '');
    const offset = jsonErrorOffset(text);
    const at = offset === undefined ? source : `${source}:${lineCol(text, offset)}`;
    throw new ConfigError([`config: ${at}: invalid JSON: ${message}`], { cause: err });
  }
}

function lineCol(text: string, offset: number): string {
  const lines = text.slice(0, offset).split('\n');
  return `${lines.length}:${(lines.at(-1)?.length ?? 0) + 1}`;
}

/**
 * Offset of the first syntax error in JSON text (undefined if it finds none), for error
 * positions: V8's JSON.parse messages do not always carry one. A plain recursive-descent scan.
 */
function jsonErrorOffset(text: string): number | undefined {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const literal = (word: string): void => {
    if (text.startsWith(word, i)) i += word.length;
    else fail();
  };
  const string = (): void => {
    i++; // opening quote
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        i++;
        return;
      }
      if (c === '\\') {
        const e = text[i + 1];
        if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else fail();
      } else if (c < ' ') fail();
      else i++;
    }
    fail();
  };
  const number = (): void => {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === '' || m[0] === '-') fail();
    i += m![0].length;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        string();
        ws();
        if (text[i] !== ':') fail();
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') {
          i++;
          return;
        } else fail();
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') {
          i++;
          return;
        } else fail();
      }
    } else if (c === '"') string();
    else if (c === 't') literal('true');
    else if (c === 'f') literal('false');
    else if (c === 'n') literal('null');
    else number();
  };
  try {
    value();
    ws();
    return i < text.length ? i : undefined;
  } catch (at) {
    if (typeof at === 'number') return at;
    throw at;
  }
}

/**
 * SPIRE's `-expandEnv`: replaces `$NAME` and `${NAME}` (NAME = letter or `_`, then letters,
 * digits, `_`) with `env[NAME]`, or with "" when unset, as Go's os.ExpandEnv does. Unlike Go,
 * `$$` is a literal `$` (so a password can keep its dollar signs) and any other `$` not followed
 * by a name (`$1`, `${`, a trailing `$`) is left as it is.
 */
export function expandEnv(text: string, env: Readonly<Record<string, string | undefined>>): string {
  return text.replace(/\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, dollar?: string, braced?: string, bare?: string) => {
    if (dollar !== undefined) return '$';
    const name = braced ?? bare ?? '';
    return Object.hasOwn(env, name) ? (env[name] ?? '') : '';
  });
}

// ---------------------------------------------------------------------------------------------
// Validation

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

/** One-element lists of maps stand for a single block (the HCL-to-JSON shape). */
function unwrapBlock(v: unknown): unknown {
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
        const near = closestKey(key, r.known);
        unknown.push(`config: ${r.keyPath(key)}: unknown key${near !== undefined ? ` (did you mean "${near}"?)` : ''}`);
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

// ---------------------------------------------------------------------------------------------
// Plugin sections

export interface PluginSection {
  /** The plugin's name (`join_token`). */
  name: string;
  /** Dotted path of the plugin block (`plugins.NodeAttestor.join_token`). */
  path: string;
  /**
   * The plugin's `plugin_data` (empty when omitted), as a reader with ITS OWN problem list, so
   * the plugin validates it later: it reads its keys, then calls `data.throwIfInvalid()` (or
   * the caller `absorb`s it). Paths in its messages are full (`...join_token.plugin_data.x`).
   */
  data: ConfigReader;
  /** SPIRE's `enabled` (default true). */
  enabled: boolean;
}

/**
 * The plugins of one kind under a `plugins` section, in file order. Accepts SPIRE's shape as
 * YAML/JSON, `{ Kind: { name: { plugin_data: {...}, enabled } } }`, and the HCL-to-JSON list
 * shape `{ Kind: [ { name: {...} }, ... ] }`; the body and `plugin_data` may be omitted or
 * null. `plugin_cmd`/`plugin_checksum` (external plugins) and `plugin_data_file` are reported
 * as unsupported; a name given twice is a problem. Names are not checked here.
 */
export function pluginSections(plugins: ConfigReader, kind: string): PluginSection[] {
  const kindPath = plugins.keyPath(kind);
  const raw = plugins.raw(kind);
  if (raw === undefined) return [];
  const entries: Array<[string, unknown]> = [];
  if (Array.isArray(raw)) {
    raw.forEach((item, i) => {
      if (isPlainMap(item)) entries.push(...Object.entries(item));
      else plugins.problemLine(`config: ${kindPath}[${i}]: expected a map of plugin name to plugin settings, got ${describeValue(item)}`);
    });
  } else if (isPlainMap(raw)) {
    entries.push(...Object.entries(raw));
  } else {
    plugins.problem(kind, `expected a map of plugin name to plugin settings, got ${describeValue(raw)}`);
    return [];
  }

  const seen = new Set<string>();
  const out: PluginSection[] = [];
  for (const [name, body] of entries) {
    const path = `${kindPath}.${name}`;
    if (seen.has(name)) {
      plugins.problemLine(`config: ${path}: configured more than once`);
      continue;
    }
    seen.add(name);
    const block = plugins.nested(body, path);
    block.unsupported('plugin_cmd', 'external plugins are not supported; Spindle plugins are built in');
    block.unsupported('plugin_checksum', 'external plugins are not supported; Spindle plugins are built in');
    block.unsupported('plugin_data_file', 'is not supported yet; put the settings in plugin_data');
    const enabled = block.bool('enabled', true);
    const dataRaw = unwrapBlock(block.raw('plugin_data'));
    let data: ConfigReader;
    if (dataRaw === undefined || isPlainMap(dataRaw)) {
      data = new ConfigReader(dataRaw, `${path}.plugin_data`);
    } else {
      block.problem('plugin_data', `expected a map of plugin settings, got ${describeValue(dataRaw)}`);
      data = new ConfigReader(undefined, `${path}.plugin_data`);
    }
    out.push({ name, path, data, enabled });
  }
  return out;
}

/**
 * Config field readers shared by spindle-server (server/config/config.ts) and spindle-agent
 * (agent/config/config.ts), built on the `ConfigReader` of ./configfile.ts.
 *
 * Each reader validates one key, records a problem on the reader when the value is rejected
 * (the problem names the key; values are quoted) and returns `undefined` for a rejected or
 * absent value, so callers can fall back to another source or a default. The `health_checks`
 * and `telemetry` sections have the same shape (and defaults) in both programs and are parsed
 * here whole, with the defaults passed in.
 */
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { ConfigReader, closestKey, isPlainMap, pluginSections, type PluginSection } from './configfile.js';
import type { LogFormat, LogLevel } from './logging.js';
import type { HealthChecksConfig } from './telemetryhttp.js';
import { parseTrustDomain, type TrustDomain } from '../spiffe/id.js';

export const LOG_LEVELS = ['DEBUG', 'INFO', 'WARN', 'ERROR'] as const satisfies readonly LogLevel[];
export const LOG_FORMATS = ['text', 'json'] as const satisfies readonly LogFormat[];

/** Longest Unix socket path Linux accepts (sun_path is 108 bytes including the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

export const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** `run` flags as a config map keyed `-flagName` (unset flags left out), for a `ConfigReader`. */
export function flagsAsMap(flags: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) out[`-${k}`] = v;
  return out;
}

/**
 * A reader over the `run` flags (see `flagsAsMap`), with `-config` and `-expandEnv` already
 * read: the caller used them to load the file.
 */
export function flagReaderFor(flags: object): ConfigReader {
  const flagReader = new ConfigReader(flagsAsMap(flags));
  flagReader.raw('-config');
  flagReader.bool('-expandEnv');
  return flagReader;
}

/**
 * The flag value if set, else the file value, else the default. Both are evaluated by the
 * caller first (never `flag ?? readFile()`), so the file's key is validated and counted as known.
 */
export function pick<T>(flagValue: T | undefined, fileValue: T | undefined, def: T): T {
  return flagValue ?? fileValue ?? def;
}

/** `invalid` when a value was given but rejected (the problem is already recorded). */
export function trustDomainAt(r: ConfigReader, key: string): { value?: TrustDomain; invalid: boolean } {
  const v = r.string(key);
  if (v === undefined) {
    const raw = r.raw(key);
    return { invalid: raw !== undefined && raw !== '' };
  }
  try {
    return { value: parseTrustDomain(v), invalid: false };
  } catch (err) {
    r.problem(key, (err as Error).message);
    return { invalid: true };
  }
}

/**
 * The trust domain: `-trustDomain`, else the section's `trust_domain` (both read, so both are
 * validated). Missing from both is a problem unless one was given but rejected (reported).
 */
export function requiredTrustDomain(root: ConfigReader, flags: ConfigReader, section: ConfigReader): TrustDomain | undefined {
  const tdFile = trustDomainAt(section, 'trust_domain');
  const tdFlag = trustDomainAt(flags, '-trustDomain');
  const trustDomain = tdFlag.value ?? tdFile.value;
  if (trustDomain === undefined && !tdFile.invalid && !tdFlag.invalid) {
    root.problemLine(`config: trust_domain is required (set ${section.keyPath('trust_domain')} in the config file or -trustDomain)`);
  }
  return trustDomain;
}

export function addressAt(r: ConfigReader, key: string): string | undefined {
  const v = r.string(key);
  if (v === undefined) return undefined;
  if (isIP(v) === 0 && !HOSTNAME.test(v)) {
    r.problem(key, `expected an IP address or host name, got ${JSON.stringify(v)}`);
    return undefined;
  }
  return v;
}

export function portAt(r: ConfigReader, key: string): number | undefined {
  return r.int(key, { min: 1, max: 65535 });
}

/** A file system path, resolved against `cwd`. */
export function pathAt(r: ConfigReader, key: string, cwd: string): string | undefined {
  const v = r.string(key);
  if (v === undefined) return undefined;
  if (v.includes('\0')) {
    r.problem(key, 'must not contain a NUL character');
    return undefined;
  }
  return resolve(cwd, v);
}

/** A Unix socket path: `pathAt`, no longer than `MAX_SOCKET_PATH_BYTES` once resolved. */
export function socketPathAt(r: ConfigReader, key: string, cwd: string): string | undefined {
  const p = pathAt(r, key, cwd);
  if (p !== undefined && Buffer.byteLength(p) > MAX_SOCKET_PATH_BYTES) {
    r.problem(key, `Unix socket paths are limited to ${MAX_SOCKET_PATH_BYTES} bytes, got ${JSON.stringify(p)} (${Buffer.byteLength(p)} bytes)`);
    return undefined;
  }
  return p;
}

/**
 * Reports each key of `unsupported` that is set (SPIRE keys Spindle recognizes but does not
 * implement, with what to say about them) and every key of the section's `experimental` map.
 */
export function rejectUnsupportedKeys(r: ConfigReader, unsupported: Readonly<Record<string, string>>): void {
  for (const [key, detail] of Object.entries(unsupported)) r.unsupported(key, detail);
  const experimental = r.section('experimental');
  for (const key of experimental.keys()) {
    experimental.raw(key);
    experimental.problem(key, 'unsupported experimental option (Spindle has none)');
  }
}

export interface LogDefaults {
  readonly log_level: LogLevel;
  readonly log_format: LogFormat;
}

/**
 * Log settings: `-logLevel`/`log_level` (upper case), `-logFormat`/`log_format` (lower case),
 * `-logFile`/`log_file` (a path); the flag wins, each key read in both places.
 */
export function logSettings(
  flags: ConfigReader,
  section: ConfigReader,
  cwd: string,
  d: LogDefaults,
): { logLevel: LogLevel; logFormat: LogFormat; logFile: string | undefined } {
  const logLevel = pick(
    flags.enum('-logLevel', LOG_LEVELS, undefined, { caseInsensitive: true }),
    section.enum('log_level', LOG_LEVELS, undefined, { caseInsensitive: true }),
    d.log_level,
  );
  const logFormat = pick(
    flags.enum('-logFormat', LOG_FORMATS, undefined, { caseInsensitive: true }),
    section.enum('log_format', LOG_FORMATS, undefined, { caseInsensitive: true }),
    d.log_format,
  );
  const logFileFromFlag = pathAt(flags, '-logFile', cwd);
  const logFileFromFile = pathAt(section, 'log_file', cwd);
  return { logLevel, logFormat, logFile: logFileFromFlag ?? logFileFromFile };
}

// ---------------------------------------------------------------------------------------------
// plugins

/**
 * Reports every key of the `plugins` section that is not one of `types`: those SPIRE has
 * (`spireOnly`) as not supported yet (`<program> has <types>`), others as unknown.
 */
export function rejectUnknownPluginTypes(p: ConfigReader, types: readonly string[], spireOnly: readonly string[], program: string): void {
  for (const kind of p.keys()) {
    if (types.includes(kind)) continue;
    p.raw(kind);
    if (spireOnly.includes(kind)) {
      p.problem(kind, `plugin type is not supported yet; ${program} has ${types.join(', ')}`);
    } else {
      const near = closestKey(kind, types);
      p.problem(kind, `unknown plugin type${near ? ` (did you mean "${near}"?)` : ''}; expected one of ${types.join(', ')}`);
    }
  }
}

export interface KindSections<N extends string> {
  /** Enabled plugins with known names, in file order. */
  enabled: Array<PluginSection & { name: N }>;
  /**
   * How many plugins had names we do not know (or, see `KindSectionsOptions`, lack or could
   * not read), each already reported.
   */
  unknown: number;
}

export interface KindSectionsOptions {
  /**
   * Count malformed plugin shapes (reported by `pluginSections`) as rejected too, so a kind
   * with nothing but malformed entries does not also get "found none".
   */
  countMalformed?: boolean;
  /**
   * For a name not in `names`: what to report instead of "unknown <kind> plugin" when it is a
   * plugin known elsewhere but not available here; `undefined` for a truly unknown name.
   */
  unavailable?: (kind: string, name: string) => string | undefined;
}

/** The plugins of a kind, split into enabled known ones and a count of rejected names (reported). */
export function kindSections<N extends string>(
  p: ConfigReader,
  kind: string,
  names: readonly N[],
  options: KindSectionsOptions = {},
): KindSections<N> {
  const result: KindSections<N> = { enabled: [], unknown: 0 };
  if (options.countMalformed === true) {
    const raw = p.raw(kind);
    if (Array.isArray(raw)) result.unknown += raw.filter((item) => !isPlainMap(item)).length;
    else if (raw !== undefined && !isPlainMap(raw)) result.unknown++;
  }
  for (const section of pluginSections(p, kind)) {
    if ((names as readonly string[]).includes(section.name)) {
      if (section.enabled) result.enabled.push(section as PluginSection & { name: N });
      continue;
    }
    result.unknown++;
    const unavailable = options.unavailable?.(kind, section.name);
    if (unavailable !== undefined) {
      p.problemLine(`config: ${section.path}: ${unavailable}`);
    } else {
      const near = closestKey(section.name, names);
      p.problemLine(
        `config: ${section.path}: unknown ${kind} plugin${near ? ` (did you mean "${near}"?)` : ''}; expected one of ${names.join(', ')}`,
      );
    }
  }
  return result;
}

/**
 * The one enabled plugin of a kind. More than one is a problem; none is a problem when
 * `required` (unless every name was unknown, which is reported already).
 */
export function onlyOne<N extends string>(p: ConfigReader, kind: string, sections: KindSections<N>, required: boolean): (PluginSection & { name: N }) | undefined {
  const { enabled, unknown } = sections;
  if (enabled.length > 1) {
    p.problem(kind, `only one ${kind} may be enabled, found ${enabled.length} (${enabled.map((s) => s.name).join(', ')})`);
  } else if (enabled.length === 0 && required && unknown === 0) {
    p.problem(kind, `exactly one ${kind} must be enabled, found none`);
  }
  return enabled[0];
}

// ---------------------------------------------------------------------------------------------
// health_checks, telemetry

/** SPIRE's `health_checks` defaults, the same for server and agent. */
export const HEALTH_CHECKS_DEFAULTS = {
  listener_enabled: false,
  bind_address: 'localhost',
  bind_port: 80,
  live_path: '/live',
  ready_path: '/ready',
} as const;

/** `telemetry` defaults, the same for server and agent. */
export const TELEMETRY_DEFAULTS = {
  Prometheus: { host: 'localhost' },
} as const;

export interface HealthChecksDefaults {
  readonly listener_enabled: boolean;
  readonly bind_address: string;
  readonly bind_port: number;
  readonly live_path: string;
  readonly ready_path: string;
}

export interface TelemetryDefaults {
  readonly Prometheus: { readonly host: string };
}

export interface TelemetryConfig {
  prometheus?: { host: string; port: number };
}

function urlPathAt(r: ConfigReader, key: string, def: string): string {
  const v = r.string(key);
  if (v === undefined) return def;
  if (!/^\/[^\s?#]*$/.test(v)) {
    r.problem(key, `expected an HTTP path starting with "/" (no spaces, "?" or "#"), got ${JSON.stringify(v)}`);
    return def;
  }
  return v;
}

export function parseHealthChecks(root: ConfigReader, d: HealthChecksDefaults): HealthChecksConfig {
  const h = root.section('health_checks');
  const result = {
    listenerEnabled: h.bool('listener_enabled', d.listener_enabled),
    bindAddress: addressAt(h, 'bind_address') ?? d.bind_address,
    bindPort: portAt(h, 'bind_port') ?? d.bind_port,
    livePath: urlPathAt(h, 'live_path', d.live_path),
    readyPath: urlPathAt(h, 'ready_path', d.ready_path),
  };
  if (result.livePath === result.readyPath) {
    h.problem('ready_path', `must differ from health_checks.live_path, got ${JSON.stringify(result.readyPath)}`);
  }
  return result;
}

export const SPIRE_ONLY_TELEMETRY_KEYS = [
  'DogStatsd',
  'Statsd',
  'M3',
  'InMem',
  'MetricPrefix',
  'EnableHostnameLabel',
  'AllowedPrefixes',
  'BlockedPrefixes',
  'AllowedLabels',
  'BlockedLabels',
];

export function parseTelemetry(root: ConfigReader, defaults: TelemetryDefaults): TelemetryConfig {
  const t = root.section('telemetry');
  for (const key of SPIRE_ONLY_TELEMETRY_KEYS) {
    t.unsupported(key, 'is not supported yet; Spindle exports telemetry to Prometheus only');
  }
  const prom = t.section('Prometheus');
  if (!prom.present) return {};
  const host = addressAt(prom, 'host') ?? defaults.Prometheus.host;
  const port = portAt(prom, 'port');
  if (port === undefined) {
    if (!prom.has('port')) prom.problem('port', 'is required when telemetry.Prometheus is set');
    return {};
  }
  return { prometheus: { host, port } };
}

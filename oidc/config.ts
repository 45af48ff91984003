/**
 * spindle-oidc configuration: SPIRE's oidc-discovery-provider config file (HCL as SPIRE writes
 * it, or YAML/JSON), same keys and defaults, validated into a typed `OidcConfig`.
 *
 * Contract:
 * - Keys (top level): `domains` (required), exactly one listener: `serving_cert_file { ... }`
 *   (HTTPS), `insecure_addr` (plain HTTP, behind a TLS proxy) or `listen_socket_path` (plain
 *   HTTP on a Unix socket); exactly one key source: `server_api { address poll_interval }` or
 *   `workload_api { socket_path trust_domain poll_interval }`; `jwt_issuer`, `jwks_uri`,
 *   `server_path_prefix`, `allow_insecure_scheme`, `set_key_use`, `log_level`, `log_format`,
 *   `log_path`, `log_requests`, `health_checks { bind_port ready_path live_path }`.
 * - SPIRE's `acme` section and `experimental` options are refused by name; unknown keys
 *   anywhere are errors naming their dotted path; every problem is reported at once.
 * - Differences from SPIRE, on purpose: `set_key_use` defaults to true (JWKS clients such as
 *   PyJWT's PyJWKClient want `use: "sig"`); `jwt_issuer` and `jwks_uri` must be http(s) URLs
 *   without query or fragment (common/issuerurl.ts).
 * Nothing here reads `process.env` or `process.cwd()`: main passes both in.
 */
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { ConfigReader, loadConfigFile } from '../common/configfile.js';
import { HOSTNAME, LOG_FORMATS, LOG_LEVELS, pathAt, rejectUnsupportedKeys, socketPathAt, trustDomainAt } from '../common/configfields.js';
import { issuerUrlProblem } from '../common/issuerurl.js';
import type { LogFormat, LogLevel } from '../common/logging.js';
import type { TrustDomain } from '../spiffe/id.js';

/** Every default, keyed by the config file's names; durations in seconds. */
export const OIDC_DEFAULTS = {
  config: 'oidc-discovery-provider.conf',
  log_level: 'INFO',
  log_format: 'text',
  log_requests: false,
  allow_insecure_scheme: false,
  /** SPIRE's default is false; see the module comment. */
  set_key_use: true,
  server_path_prefix: '/',
  serving_cert_file: { addr: ':443', file_sync_interval: 60 },
  server_api: { poll_interval: 10 },
  workload_api: { poll_interval: 10 },
  health_checks: { bind_port: 8008, ready_path: '/ready', live_path: '/live' },
} as const;

export interface ListenAddress {
  /** Host to bind ('' for every address, as Go's ":443"). */
  host: string;
  port: number;
}

export type OidcListener =
  | { kind: 'tls'; address: ListenAddress; certFilePath: string; keyFilePath: string; fileSyncIntervalSeconds: number }
  | { kind: 'insecure'; address: ListenAddress }
  | { kind: 'socket'; path: string };

export type OidcSource =
  | { kind: 'server_api'; socketPath: string; pollIntervalSeconds: number }
  | { kind: 'workload_api'; socketPath: string; trustDomain: TrustDomain; pollIntervalSeconds: number };

export interface OidcConfig {
  configPath?: string;
  /** Lower case, deduplicated, in file order. */
  domains: string[];
  listener: OidcListener;
  source: OidcSource;
  jwtIssuer?: string;
  jwksUri?: string;
  /** Starts and ends with "/" ("/" when unset). */
  serverPathPrefix: string;
  allowInsecureScheme: boolean;
  setKeyUse: boolean;
  logLevel: LogLevel;
  logFormat: LogFormat;
  logFile?: string;
  logRequests: boolean;
  healthChecks?: { bindPort: number; readyPath: string; livePath: string };
}

const UNSUPPORTED_KEYS: Readonly<Record<string, string>> = {
  acme: 'is not supported: Spindle does not obtain certificates by ACME; use serving_cert_file (or insecure_addr / listen_socket_path behind a TLS proxy)',
};

/** `host:port`, `:port` or `[v6]:port`, as Go's net.ResolveTCPAddr takes it. */
function listenAddressAt(r: ConfigReader, key: string, def?: string): ListenAddress | undefined {
  const v = r.string(key) ?? def;
  if (v === undefined) return undefined;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? m?.[2] ?? '';
  const port = Number(m?.[3]);
  if (m === null || port < 1 || port > 65535 || (host !== '' && isIP(host) === 0 && !HOSTNAME.test(host))) {
    r.problem(key, `expected an address such as ":8443", "127.0.0.1:8080" or "[::1]:8080", got ${JSON.stringify(v)}`);
    return undefined;
  }
  return { host, port };
}

function urlAt(r: ConfigReader, key: string): string | undefined {
  const v = r.string(key);
  if (v === undefined) return undefined;
  const problem = issuerUrlProblem(v);
  if (problem !== undefined) {
    r.problem(key, problem);
    return undefined;
  }
  return v;
}

/** SPIRE's server_api address: `unix:///path` or `unix:/path` (gRPC naming); a bare absolute path is accepted too. */
function serverApiSocketAt(r: ConfigReader, cwd: string): string | undefined {
  const v = r.string('address');
  if (v === undefined) {
    if (!r.has('address')) r.problem('address', 'is required (the server admin socket, such as "unix:///tmp/spindle-server/private/api.sock")');
    return undefined;
  }
  const path = v.startsWith('unix://') ? v.slice('unix://'.length) : v.startsWith('unix:') ? v.slice('unix:'.length) : v;
  if (!path.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(path)) {
    r.problem('address', `only the unix name system is supported: expected "unix:///path/to/api.sock", got ${JSON.stringify(v)}`);
    return undefined;
  }
  return resolve(cwd, path);
}

function pathPrefixAt(r: ConfigReader): string {
  const v = r.string('server_path_prefix');
  if (v === undefined || v === '' || v === '/') return OIDC_DEFAULTS.server_path_prefix;
  if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/.test(v) || v.includes('//') || /(^|\/)\.\.?(\/|$)/.test(v)) {
    r.problem('server_path_prefix', `expected an HTTP path such as "/instance/1" (no spaces, "?", "#", "." or ".." segments), got ${JSON.stringify(v)}`);
    return OIDC_DEFAULTS.server_path_prefix;
  }
  return v.endsWith('/') ? v : `${v}/`;
}

function urlPathAt(r: ConfigReader, key: string, def: string): string {
  const v = r.string(key);
  if (v === undefined) return def;
  if (!/^\/[^\s?#]*$/.test(v)) {
    r.problem(key, `expected an HTTP path starting with "/", got ${JSON.stringify(v)}`);
    return def;
  }
  return v;
}

export interface LoadOidcConfigOptions {
  configPath: string;
  cwd: string;
  /** The environment for `-expandEnv`; set only with that flag. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Reads and validates the provider's config file. Throws `ConfigError`. */
export function loadOidcConfig(o: LoadOidcConfigOptions): OidcConfig {
  const configPath = resolve(o.cwd, o.configPath);
  const raw = loadConfigFile(configPath, o.env !== undefined ? { env: o.env } : {});
  return parseOidcConfig(raw, { cwd: o.cwd, configPath });
}

export function parseOidcConfig(raw: unknown, o: { cwd: string; configPath?: string }): OidcConfig {
  const { cwd } = o;
  const root = new ConfigReader(raw);
  rejectUnsupportedKeys(root, UNSUPPORTED_KEYS);

  const domainList = root.stringList('domains');
  const domains: string[] = [];
  if (domainList === undefined) {
    if (!root.has('domains')) root.problem('domains', 'at least one domain must be configured (the host names the provider is reached at)');
  } else {
    if (domainList.length === 0) root.problem('domains', 'at least one domain must be configured (the host names the provider is reached at)');
    domainList.forEach((d, i) => {
      const name = d.toLowerCase().replace(/\.$/, '');
      if (isIP(name) === 0 && !HOSTNAME.test(name)) root.problem(`domains[${i}]`, `expected a host name or IP address (no port, no scheme), got ${JSON.stringify(d)}`);
      else if (!domains.includes(name)) domains.push(name);
    });
  }

  // Listener: exactly one.
  const listeners: OidcListener[] = [];
  if (root.has('serving_cert_file')) {
    const s = root.section('serving_cert_file');
    const certFilePath = pathAt(s, 'cert_file_path', cwd);
    const keyFilePath = pathAt(s, 'key_file_path', cwd);
    if (certFilePath === undefined && !s.has('cert_file_path')) s.problem('cert_file_path', 'is required');
    if (keyFilePath === undefined && !s.has('key_file_path')) s.problem('key_file_path', 'is required');
    const address = listenAddressAt(s, 'addr', OIDC_DEFAULTS.serving_cert_file.addr);
    const fileSyncIntervalSeconds = s.duration('file_sync_interval', OIDC_DEFAULTS.serving_cert_file.file_sync_interval, { min: 1 });
    if (certFilePath !== undefined && keyFilePath !== undefined && address !== undefined) {
      listeners.push({ kind: 'tls', address, certFilePath, keyFilePath, fileSyncIntervalSeconds });
    } else listeners.push({ kind: 'insecure', address: { host: '', port: 1 } }); // counted; the problems above fail the load
  }
  if (root.has('insecure_addr')) {
    const address = listenAddressAt(root, 'insecure_addr');
    listeners.push({ kind: 'insecure', address: address ?? { host: '', port: 1 } });
  }
  if (root.has('listen_socket_path')) {
    const path = socketPathAt(root, 'listen_socket_path', cwd);
    listeners.push({ kind: 'socket', path: path ?? '' });
  }
  if (listeners.length === 0) {
    root.problemHere('one of serving_cert_file, insecure_addr or listen_socket_path must be set (SPIRE\'s acme is not supported)');
  } else if (listeners.length > 1) {
    root.problemHere('serving_cert_file, insecure_addr and listen_socket_path are mutually exclusive: set one');
  }

  // Key source: exactly one.
  const sources: OidcSource[] = [];
  if (root.has('server_api')) {
    const s = root.section('server_api');
    const socketPath = serverApiSocketAt(s, cwd);
    const pollIntervalSeconds = s.duration('poll_interval', OIDC_DEFAULTS.server_api.poll_interval, { min: 1 });
    rejectUnsupportedKeys(s, {});
    sources.push({ kind: 'server_api', socketPath: socketPath ?? '', pollIntervalSeconds });
  }
  if (root.has('workload_api')) {
    const s = root.section('workload_api');
    const socketPath = socketPathAt(s, 'socket_path', cwd);
    if (socketPath === undefined && !s.has('socket_path')) s.problem('socket_path', 'is required (the agent\'s Workload API socket)');
    const td = trustDomainAt(s, 'trust_domain');
    if (td.value === undefined && !td.invalid) s.problem('trust_domain', 'is required (the trust domain whose JWT keys are served)');
    const pollIntervalSeconds = s.duration('poll_interval', OIDC_DEFAULTS.workload_api.poll_interval, { min: 1 });
    rejectUnsupportedKeys(s, {});
    sources.push({ kind: 'workload_api', socketPath: socketPath ?? '', trustDomain: td.value ?? ('' as TrustDomain), pollIntervalSeconds });
  }
  if (sources.length === 0) root.problemHere('either the server_api or the workload_api section must be configured');
  else if (sources.length > 1) root.problemHere('the server_api and workload_api sections are mutually exclusive');

  const jwtIssuer = urlAt(root, 'jwt_issuer');
  const jwksUri = urlAt(root, 'jwks_uri');
  const serverPathPrefix = pathPrefixAt(root);
  const allowInsecureScheme = root.bool('allow_insecure_scheme', OIDC_DEFAULTS.allow_insecure_scheme);
  if (allowInsecureScheme && listeners.length === 1 && listeners[0]!.kind === 'tls') {
    root.problem('allow_insecure_scheme', 'only works with insecure_addr or listen_socket_path (this provider serves HTTPS)');
  }
  const setKeyUse = root.bool('set_key_use', OIDC_DEFAULTS.set_key_use);
  const logLevel = root.enum('log_level', LOG_LEVELS, OIDC_DEFAULTS.log_level, { caseInsensitive: true });
  const logFormat = root.enum('log_format', LOG_FORMATS, OIDC_DEFAULTS.log_format, { caseInsensitive: true });
  const logFile = pathAt(root, 'log_path', cwd);
  const logRequests = root.bool('log_requests', OIDC_DEFAULTS.log_requests);

  let healthChecks: OidcConfig['healthChecks'];
  if (root.has('health_checks')) {
    const h = root.section('health_checks');
    const d = OIDC_DEFAULTS.health_checks;
    healthChecks = {
      bindPort: h.int('bind_port', { min: 1, max: 65535, default: d.bind_port }),
      readyPath: urlPathAt(h, 'ready_path', d.ready_path),
      livePath: urlPathAt(h, 'live_path', d.live_path),
    };
    if (healthChecks.readyPath === healthChecks.livePath) h.problem('ready_path', `must differ from health_checks.live_path, got ${JSON.stringify(healthChecks.readyPath)}`);
  }

  root.throwIfInvalid();
  const config: OidcConfig = {
    domains,
    listener: listeners[0]!,
    source: sources[0]!,
    serverPathPrefix,
    allowInsecureScheme,
    setKeyUse,
    logLevel,
    logFormat,
    logRequests,
  };
  if (o.configPath !== undefined) config.configPath = o.configPath;
  if (jwtIssuer !== undefined) config.jwtIssuer = jwtIssuer;
  if (jwksUri !== undefined) config.jwksUri = jwksUri;
  if (logFile !== undefined) config.logFile = logFile;
  if (healthChecks !== undefined) config.healthChecks = healthChecks;
  return config;
}

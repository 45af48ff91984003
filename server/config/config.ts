/**
 * spindle-server configuration: SPIRE's server.conf (same sections, key names and defaults)
 * written as YAML or JSON, plus SPIRE's `run` flags, validated into a typed `ServerConfig`.
 *
 * Contract:
 * - Sections: `server`, `plugins`, `health_checks`, `telemetry`. Unknown keys anywhere are
 *   errors naming their dotted path; every problem is reported at once in one `ConfigError`.
 * - Flags (`-trustDomain -bindAddress -serverPort -socketPath -dataDir -logLevel -logFormat
 *   -logFile`) override the file's values; flags alone (no file) are a complete config.
 * - Durations are whole seconds, paths absolute (relative ones resolve against the `cwd` the
 *   caller passes in, as SPIRE resolves against the working directory), enums normalized
 *   (log_level upper case, log_format and key types lower case).
 * - `federation` is parsed in federationconfig.ts (the bundle endpoint, `parseBundleEndpoint`;
 *   the relationships of `federates_with`, `parseFederatesWith`).
 * - SPIRE features Spindle lacks are rejected by name rather than ignored: `experimental` options, plugin types other than DataStore/KeyManager/NodeAttestor/
 *   UpstreamAuthority, database types other than sqlite3, telemetry sinks other than Prometheus.
 * - Node attestor `plugin_data` is passed through as a `ConfigReader` for the attestor to
 *   validate (it reads its keys and calls `data.throwIfInvalid()`); join_token takes none.
 * Nothing here reads `process.env` or `process.cwd()`: main passes both in.
 */
import { isAbsolute, join, resolve } from 'node:path';
import { ConfigReader, loadConfigFile } from '../../common/configfile.js';
import {
  HEALTH_CHECKS_DEFAULTS,
  TELEMETRY_DEFAULTS,
  addressAt,
  flagReaderFor,
  kindSections,
  onlyOne,
  logSettings,
  parseHealthChecks,
  parseTelemetry,
  pathAt,
  pick,
  portAt,
  rejectUnknownPluginTypes,
  rejectUnsupportedKeys,
  requiredTrustDomain,
  socketPathAt,
} from '../../common/configfields.js';
import { formatDuration } from '../../common/duration.js';
import { issuerUrlProblem } from '../../common/issuerurl.js';
import { parseBundleEndpoint, parseFederatesWith, type FederationConfig, type StaticRelationship } from './federationconfig.js';
import { NODE_ATTESTOR_PLUGINS, type NodeAttestorPlugin } from '../../attestors/node/registry.js';
import type { LogFormat, LogLevel } from '../../common/logging.js';
import type { TrustDomain } from '../../spiffe/id.js';
import { KEY_TYPES, type KeyType } from '../../spiffe/keys.js';

export { LOG_FORMATS, LOG_LEVELS } from '../../common/configfields.js';
export type { LogFormat, LogLevel } from '../../common/logging.js';
export type { BundleEndpointConfig, BundleEndpointProfile, FederationConfig } from './federationconfig.js';

/** Known node attestor names: the list in attestors/node/registry.ts. */
export const NODE_ATTESTORS: readonly string[] = NODE_ATTESTOR_PLUGINS.map((p) => p.name);
export const KEY_MANAGERS = ['disk', 'memory'] as const;
export const UPSTREAM_AUTHORITIES = ['disk'] as const;
export const DATA_STORES = ['sql'] as const;
export const DATABASE_TYPES = ['sqlite3', 'postgres'] as const;
export const PLUGIN_TYPES = ['DataStore', 'KeyManager', 'NodeAttestor', 'UpstreamAuthority'] as const;

/** Shortest accepted `ca_ttl`: the CA must outlive a useful SVID and leave room to rotate. */
export const MIN_CA_TTL_SECONDS = 120;

/**
 * Every default, keyed by the config file's names; durations in seconds (plain integers are
 * valid durations in the file too). Docs, the example file and tests use this one source.
 */
export const SERVER_DEFAULTS = {
  server: {
    bind_address: '0.0.0.0',
    bind_port: 8081,
    socket_path: '/tmp/spindle-server/private/api.sock',
    data_dir: './.data',
    log_level: 'INFO',
    log_format: 'text',
    default_x509_svid_ttl: 3600,
    default_jwt_svid_ttl: 300,
    /** agent_ttl defaults to the value of default_x509_svid_ttl, as in SPIRE. */
    ca_ttl: 86400,
    ca_key_type: 'ec-p256',
    /** jwt_key_type defaults to the value of ca_key_type, as in SPIRE. */
    ca_subject: { country: ['US'], organization: ['SPIFFE'], common_name: '' },
    audit_log_enabled: false,
  },
  plugins: {
    /** Used when no NodeAttestor is configured. */
    NodeAttestor: 'join_token',
    /** Used when no KeyManager is configured. */
    KeyManager: 'disk',
    /** KeyManager "disk" keys_path default: this directory under data_dir. */
    disk_keys_dir_in_data_dir: 'keys',
    /** Used when no DataStore is configured. */
    DataStore: 'sql',
    sql_database_type: 'sqlite3',
    /** DataStore "sql" connection_string default: this file under data_dir. */
    sqlite_file_in_data_dir: 'datastore.sqlite3',
  },
  health_checks: HEALTH_CHECKS_DEFAULTS,
  telemetry: TELEMETRY_DEFAULTS,
} as const;

/** `spindle-server run` flags, named as SPIRE names them. Strings as a CLI parser gives them. */
export interface ServerFlags {
  config?: string;
  expandEnv?: boolean;
  trustDomain?: string;
  bindAddress?: string;
  serverPort?: string | number;
  socketPath?: string;
  dataDir?: string;
  logLevel?: string;
  logFormat?: string;
  logFile?: string;
}

export interface NodeAttestorConfig {
  name: string;
  /** The attestor's plugin_data, for the attestor to validate (then `data.throwIfInvalid()`). */
  data: ConfigReader;
}

export type KeyManagerConfig = { name: 'disk'; keysPath: string } | { name: 'memory' };

export interface UpstreamAuthorityConfig {
  name: 'disk';
  keyFilePath: string;
  certFilePath: string;
  bundleFilePath?: string;
}

export interface DataStoreConfig {
  name: 'sql';
  databaseType: (typeof DATABASE_TYPES)[number];
  /**
   * For sqlite3: the absolute path of the database file. For postgres: a libpq keyword/value
   * string or a postgresql:// URI (checked when the datastore opens).
   */
  connectionString: string;
  /** postgres only: a read-only replica's connection string, for reads that may lag. */
  roConnectionString?: string;
  /** postgres only: most connections open at once (0: the driver's default). */
  maxOpenConns?: number;
  /** postgres only: 0 closes idle connections at once. */
  maxIdleConns?: number;
  /** postgres only: seconds a connection is used before it is replaced (0: no limit). */
  connMaxLifetime?: number;
  /** postgres only: do not migrate the schema; refuse one that is not this version's. */
  disableMigration?: boolean;
}

export interface ServerConfig {
  /** Absolute path of the config file read, if any. */
  configPath?: string;
  trustDomain: TrustDomain;
  bindAddress: string;
  bindPort: number;
  socketPath: string;
  dataDir: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  logFile?: string;
  /** Seconds. */
  defaultX509SvidTtl: number;
  /** Seconds. */
  defaultJwtSvidTtl: number;
  /** Seconds. */
  agentTtl: number;
  /** Seconds. */
  caTtl: number;
  caKeyType: KeyType;
  jwtKeyType: KeyType;
  caSubject: { country: string[]; organization: string[]; commonName: string };
  jwtIssuer?: string;
  /** `federation.federates_with`: the static federation relationships, sorted by trust domain. */
  federatesWith: StaticRelationship[];
  auditLogEnabled: boolean;
  plugins: {
    /** Enabled node attestors, in file order (default: join_token). */
    nodeAttestors: NodeAttestorConfig[];
    keyManager: KeyManagerConfig;
    upstreamAuthority?: UpstreamAuthorityConfig;
    dataStore: DataStoreConfig;
  };
  healthChecks: {
    listenerEnabled: boolean;
    bindAddress: string;
    bindPort: number;
    livePath: string;
    readyPath: string;
  };
  telemetry: {
    prometheus?: { host: string; port: number };
  };
  /** `server.federation`: absent when it configures no bundle endpoint. */
  federation?: FederationConfig;
}

export interface ParseServerConfigOptions {
  /** Absolute directory relative paths resolve against (the process's working directory). */
  cwd: string;
  /** The file the raw config came from, recorded in the result. */
  configPath?: string;
  /** The node attestors this server knows; default this build's list (tests extend it). */
  nodeAttestors?: readonly NodeAttestorPlugin[];
}

export interface LoadServerConfigOptions {
  /** The config file; defaults to `flags.config`. With neither, flags and defaults only. */
  configPath?: string;
  flags?: ServerFlags;
  /** Absolute working directory: relative paths (config file included) resolve against it. */
  cwd: string;
  /** The environment for `-expandEnv`; required when that flag is set. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Reads the config file (if any), applies the flags, validates. Throws `ConfigError`. */
export function loadServerConfig(options: LoadServerConfigOptions): ServerConfig {
  const flags = options.flags ?? {};
  const given = options.configPath ?? flags.config;
  if (given === undefined || given === '') return parseServerConfig({}, flags, { cwd: options.cwd });
  if (flags.expandEnv === true && options.env === undefined) {
    throw new TypeError('loadServerConfig: -expandEnv is set but no env was passed in');
  }
  const configPath = resolve(options.cwd, given);
  const raw = loadConfigFile(configPath, flags.expandEnv === true ? { env: options.env } : {});
  return parseServerConfig(raw, flags, { cwd: options.cwd, configPath });
}

/** Validates a raw config (as loaded from a file) with flag overrides. Throws `ConfigError`. */
export function parseServerConfig(raw: unknown, flags: ServerFlags, options: ParseServerConfigOptions): ServerConfig {
  if (!isAbsolute(options.cwd)) throw new TypeError(`parseServerConfig: cwd must be absolute, got ${JSON.stringify(options.cwd)}`);
  const cwd = options.cwd;
  const root = new ConfigReader(raw);
  const flagReader = flagReaderFor(flags);

  const s = root.section('server');
  rejectUnsupportedKeys(s, UNSUPPORTED_SERVER_KEYS);

  const trustDomain = requiredTrustDomain(root, flagReader, s);

  const bindAddress = pick(addressAt(flagReader, '-bindAddress'), addressAt(s, 'bind_address'), SERVER_DEFAULTS.server.bind_address);
  const bindPort = pick(portAt(flagReader, '-serverPort'), portAt(s, 'bind_port'), SERVER_DEFAULTS.server.bind_port);
  const socketPath = pick(
    socketPathAt(flagReader, '-socketPath', cwd),
    socketPathAt(s, 'socket_path', cwd),
    resolve(cwd, SERVER_DEFAULTS.server.socket_path),
  );
  const dataDir = pick(pathAt(flagReader, '-dataDir', cwd), pathAt(s, 'data_dir', cwd), resolve(cwd, SERVER_DEFAULTS.server.data_dir));
  const { logLevel, logFormat, logFile } = logSettings(flagReader, s, cwd, SERVER_DEFAULTS.server);

  // TTLs. Each is checked against ca_ttl only when both are valid, so one mistake is one problem.
  // Defaults are checked too (a short ca_ttl can be below the default SVID TTLs), except
  // agent_ttl's, which is default_x509_svid_ttl and so already checked.
  const caTtlValue = s.duration('ca_ttl', undefined, { min: MIN_CA_TTL_SECONDS });
  const caTtlOk = caTtlValue !== undefined || !s.has('ca_ttl');
  const caTtl = caTtlValue ?? SERVER_DEFAULTS.server.ca_ttl;
  const ttlWithinCa = (key: string, def: number, checkDefault: boolean): number => {
    const explicit = s.duration(key, undefined, { min: 1 });
    const invalid = explicit === undefined && s.has(key);
    const value = explicit ?? def;
    if (caTtlOk && !invalid && value > caTtl && (explicit !== undefined || checkDefault)) {
      const why = `must not be longer than server.ca_ttl (${formatDuration(caTtl)}): an SVID cannot outlive the CA that signs it`;
      s.problem(
        key,
        explicit !== undefined
          ? `${why}, got ${JSON.stringify(formatDuration(explicit))}`
          : `${why}; its default is ${formatDuration(def)}, so set it lower or raise ca_ttl`,
      );
    }
    return value;
  };
  const defaultX509SvidTtl = ttlWithinCa('default_x509_svid_ttl', SERVER_DEFAULTS.server.default_x509_svid_ttl, true);
  const defaultJwtSvidTtl = ttlWithinCa('default_jwt_svid_ttl', SERVER_DEFAULTS.server.default_jwt_svid_ttl, true);
  const agentTtl = ttlWithinCa('agent_ttl', defaultX509SvidTtl, false);

  const caKeyType = s.enum('ca_key_type', KEY_TYPES, SERVER_DEFAULTS.server.ca_key_type, { caseInsensitive: true });
  const jwtKeyType = s.enum('jwt_key_type', KEY_TYPES, caKeyType, { caseInsensitive: true });

  const subj = s.section('ca_subject');
  const caSubject = {
    country: subj.stringList('country', [...SERVER_DEFAULTS.server.ca_subject.country]),
    organization: subj.stringList('organization', [...SERVER_DEFAULTS.server.ca_subject.organization]),
    commonName: subj.string('common_name', SERVER_DEFAULTS.server.ca_subject.common_name),
  };

  const jwtIssuer = s.string('jwt_issuer');
  const issuerProblem = jwtIssuer === undefined ? undefined : issuerUrlProblem(jwtIssuer);
  if (issuerProblem !== undefined) s.problem('jwt_issuer', issuerProblem);
  const auditLogEnabled = s.bool('audit_log_enabled', SERVER_DEFAULTS.server.audit_log_enabled);
  // server.federation (federationconfig.ts), one reader for both parts: this server's bundle
  // endpoint, and the relationships with other trust domains.
  const federationSection = s.section('federation');
  const bundleEndpoint = parseBundleEndpoint(federationSection, cwd, { bindAddress, bindPort });
  const federatesWith = parseFederatesWith(federationSection, trustDomain);

  const plugins = parsePlugins(root, dataDir, cwd, options.nodeAttestors ?? NODE_ATTESTOR_PLUGINS);
  const healthChecks = parseHealthChecks(root, SERVER_DEFAULTS.health_checks);
  const telemetry = parseTelemetry(root, SERVER_DEFAULTS.telemetry);

  root.absorb(flagReader);
  root.throwIfInvalid();

  const config: ServerConfig = {
    trustDomain: trustDomain!,
    bindAddress,
    bindPort,
    socketPath,
    dataDir,
    logLevel,
    logFormat,
    defaultX509SvidTtl,
    defaultJwtSvidTtl,
    agentTtl,
    caTtl,
    caKeyType,
    jwtKeyType,
    caSubject,
    auditLogEnabled,
    plugins,
    healthChecks,
    telemetry,
    federatesWith,
  };
  if (options.configPath !== undefined) config.configPath = options.configPath;
  if (logFile !== undefined) config.logFile = logFile;
  if (jwtIssuer !== undefined) config.jwtIssuer = jwtIssuer;
  if (bundleEndpoint !== undefined) config.federation = { bundleEndpoint };
  return config;
}

// ---------------------------------------------------------------------------------------------
// server section

/** SPIRE server keys Spindle recognizes but does not implement, with what to say about them. */
const UNSUPPORTED_SERVER_KEYS: Readonly<Record<string, string>> = {
  admin_ids: 'is not supported yet',
  ratelimit: 'is not supported yet',
  profiling_enabled: 'is not supported yet',
  profiling_port: 'is not supported yet',
  profiling_freq: 'is not supported yet',
  profiling_names: 'is not supported yet',
  log_source_location: 'is not supported yet',
  prune_attested_nodes_expired_for: 'is not supported yet',
  prune_tofu_nodes: 'is not supported yet',
  max_attested_node_info_staleness: 'is not supported yet',
  registration_uds_path: 'was replaced by socket_path in SPIRE; use socket_path',
  default_svid_ttl: 'was replaced in SPIRE; use default_x509_svid_ttl and default_jwt_svid_ttl',
  upstream_bundle: 'was removed in SPIRE (upstream CA certificates are always in the bundle)',
};

// ---------------------------------------------------------------------------------------------
// plugins

const SPIRE_ONLY_PLUGIN_TYPES = ['BundlePublisher', 'CredentialComposer', 'Notifier', 'NodeResolver', 'UpstreamCA', 'SVIDStore'];

function parsePlugins(root: ConfigReader, dataDir: string, cwd: string, nodePlugins: readonly NodeAttestorPlugin[]): ServerConfig['plugins'] {
  const p = root.section('plugins');
  rejectUnknownPluginTypes(p, PLUGIN_TYPES, SPIRE_ONLY_PLUGIN_TYPES, 'Spindle');

  return {
    nodeAttestors: parseNodeAttestors(root, p, nodePlugins),
    keyManager: parseKeyManager(root, p, dataDir, cwd),
    ...optionalUpstream(parseUpstreamAuthority(root, p, cwd)),
    dataStore: parseDataStore(root, p, dataDir, cwd),
  };
}

function optionalUpstream(u: UpstreamAuthorityConfig | undefined): { upstreamAuthority?: UpstreamAuthorityConfig } {
  return u === undefined ? {} : { upstreamAuthority: u };
}

function parseNodeAttestors(root: ConfigReader, p: ConfigReader, plugins: readonly NodeAttestorPlugin[]): NodeAttestorConfig[] {
  if (!p.has('NodeAttestor')) {
    const name = SERVER_DEFAULTS.plugins.NodeAttestor;
    return [{ name, data: new ConfigReader(undefined, `plugins.NodeAttestor.${name}.plugin_data`) }];
  }
  const { enabled, unknown } = kindSections(
    p,
    'NodeAttestor',
    plugins.map((x) => x.name),
  );
  for (const section of enabled) {
    // An attestor without options (join_token): absorbing now reports any key as unknown.
    // The others validate their own plugin_data when they are built.
    if (plugins.find((x) => x.name === section.name)?.noPluginData === true) root.absorb(section.data);
  }
  if (enabled.length === 0 && unknown === 0) p.problem('NodeAttestor', 'at least one NodeAttestor must be enabled');
  return enabled.map((s) => ({ name: s.name, data: s.data }));
}

function parseKeyManager(root: ConfigReader, p: ConfigReader, dataDir: string, cwd: string): KeyManagerConfig {
  const defaultDisk: KeyManagerConfig = { name: 'disk', keysPath: join(dataDir, SERVER_DEFAULTS.plugins.disk_keys_dir_in_data_dir) };
  if (!p.has('KeyManager')) return defaultDisk;
  const section = onlyOne(p, 'KeyManager', kindSections(p, 'KeyManager', KEY_MANAGERS), true);
  if (section === undefined) return defaultDisk;
  let result: KeyManagerConfig;
  if (section.name === 'disk') {
    result = { name: 'disk', keysPath: pathAt(section.data, 'keys_path', cwd) ?? defaultDisk.keysPath };
  } else {
    result = { name: 'memory' };
  }
  root.absorb(section.data);
  return result;
}

function parseUpstreamAuthority(root: ConfigReader, p: ConfigReader, cwd: string): UpstreamAuthorityConfig | undefined {
  if (!p.has('UpstreamAuthority')) return undefined;
  const section = onlyOne(p, 'UpstreamAuthority', kindSections(p, 'UpstreamAuthority', UPSTREAM_AUTHORITIES), false);
  if (section === undefined) return undefined;
  const d = section.data;
  const keyFilePath = pathAt(d, 'key_file_path', cwd);
  const certFilePath = pathAt(d, 'cert_file_path', cwd);
  const bundleFilePath = pathAt(d, 'bundle_file_path', cwd);
  if (keyFilePath === undefined && !d.has('key_file_path')) d.problem('key_file_path', 'is required');
  if (certFilePath === undefined && !d.has('cert_file_path')) d.problem('cert_file_path', 'is required');
  root.absorb(d);
  const result: UpstreamAuthorityConfig = { name: 'disk', keyFilePath: keyFilePath ?? '', certFilePath: certFilePath ?? '' };
  if (bundleFilePath !== undefined) result.bundleFilePath = bundleFilePath;
  return result;
}

const SPIRE_ONLY_DATABASE_TYPES = ['mysql', 'aws_postgres', 'aws_mysql'];
/** DataStore "sql" keys that only the postgres database_type reads. */
const POSTGRES_ONLY_KEYS = ['ro_connection_string', 'max_open_conns', 'max_idle_conns', 'conn_max_lifetime', 'disable_migration'];

function parseDataStore(root: ConfigReader, p: ConfigReader, dataDir: string, cwd: string): DataStoreConfig {
  const defaultPath = join(dataDir, SERVER_DEFAULTS.plugins.sqlite_file_in_data_dir);
  const fallback: DataStoreConfig = { name: 'sql', databaseType: 'sqlite3', connectionString: defaultPath };
  if (!p.has('DataStore')) return fallback;
  const section = onlyOne(p, 'DataStore', kindSections(p, 'DataStore', DATA_STORES), true);
  if (section === undefined) return fallback;
  const d = section.data;
  const dbType = d.string('database_type');
  if (dbType === 'postgres') {
    const result = parsePostgres(d);
    root.absorb(d);
    return result;
  }
  if (dbType !== undefined && dbType !== 'sqlite3') {
    d.problem(
      'database_type',
      SPIRE_ONLY_DATABASE_TYPES.includes(dbType)
        ? `${JSON.stringify(dbType)} is not supported yet; Spindle supports ${DATABASE_TYPES.join(' and ')}`
        : `expected one of ${DATABASE_TYPES.join(', ')}, got ${JSON.stringify(dbType)}`,
    );
  }
  for (const key of POSTGRES_ONLY_KEYS) {
    if (d.has(key)) d.problem(key, 'applies to database_type "postgres" only; a sqlite3 datastore has one connection to its file');
  }
  const raw = d.string('connection_string');
  let connectionString = defaultPath;
  if (raw !== undefined && /^file:/i.test(raw)) {
    d.problem('connection_string', `expected the path of the SQLite database file (URIs are not supported), got ${JSON.stringify(raw)}`);
  } else {
    connectionString = pathAt(d, 'connection_string', cwd) ?? defaultPath;
  }
  root.absorb(d);
  return { name: 'sql', databaseType: 'sqlite3', connectionString };
}

/** database_type "postgres": SPIRE's keys; the connection strings are parsed when the datastore opens. */
function parsePostgres(d: ConfigReader): DataStoreConfig {
  const connectionString = d.string('connection_string');
  if (connectionString === undefined) {
    d.problem('connection_string', 'is required for database_type "postgres": a libpq keyword/value string ("host=... dbname=... user=...") or a postgresql:// URI');
  }
  const result: DataStoreConfig = { name: 'sql', databaseType: 'postgres', connectionString: connectionString ?? '' };
  const ro = d.string('ro_connection_string');
  if (ro !== undefined) result.roConnectionString = ro;
  const maxOpen = d.int('max_open_conns', { min: 0 });
  if (maxOpen !== undefined) result.maxOpenConns = maxOpen;
  const maxIdle = d.int('max_idle_conns', { min: 0 });
  if (maxIdle !== undefined) result.maxIdleConns = maxIdle;
  const lifetime = d.duration('conn_max_lifetime', undefined, { min: 0 });
  if (lifetime !== undefined) result.connMaxLifetime = lifetime;
  const disable = d.bool('disable_migration');
  if (disable !== undefined) result.disableMigration = disable;
  return result;
}

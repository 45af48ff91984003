/**
 * spindle-agent configuration: SPIRE's agent.conf (same sections, key names and defaults where
 * SPIRE has them) written as YAML or JSON, plus SPIRE's `run` flags, validated into the typed
 * `AgentConfig` of ./types.ts. Modelled on server/config/config.ts and built on the shared
 * toolkit in common/configfile.ts and common/configfields.ts.
 *
 * Contract:
 * - Sections: `agent`, `plugins`, `health_checks`, `telemetry`. Unknown keys anywhere are errors
 *   naming their dotted path; every problem is reported at once in one `ConfigError`.
 * - Flags (`-trustDomain -serverAddress -serverPort -socketPath -dataDir -logLevel -logFormat
 *   -logFile -joinToken -joinTokenFile -trustBundle -insecureBootstrap`) override the file's
 *   values; flags alone (no file) are a complete config. `-joinTokenFile` is read through the
 *   injected `readFile` and trimmed; it and `-joinToken` together are an error.
 * - Paths are absolute (relative ones resolve against the `cwd` the caller passes in, as SPIRE
 *   resolves against the working directory); enums are normalized (log_level upper case,
 *   log_format lower case); join tokens are trimmed and must look like the UUIDs
 *   `spindle-server token generate` prints (their values are never echoed in errors).
 * - `server_address` / `-serverAddress`: one host as in SPIRE, or a comma-separated list of
 *   servers sharing one datastore (`host`, `host:port`, `[ipv6]`, `[ipv6]:port`; one address
 *   family; names only as one DNS name), parsed by agent/client/serveraddress.ts into
 *   `servers` (elements without a port take `server_port`). Spindle extension:
 *   `agent.server_max_connection_age` (a duration, default 10m, 0 off), how long the agent keeps
 *   one server connection before choosing again (only with several servers or a DNS name).
 * - Defaults that differ from SPIRE: `server_address` is 127.0.0.1 (SPIRE requires it) so a
 *   local agent next to a local server needs no setting; `server_port` is 8081 (SPIRE has no
 *   default); data_dir is ./.data (SPIRE's is the working directory).
 * - Initial trust: `trust_bundle_path` and `insecure_bootstrap` are mutually exclusive (as in
 *   SPIRE), but neither is required here: an agent that already has its SVID and bundle in
 *   data_dir starts without either, so the agent checks at start, once it knows its state.
 *   `trust_bundle_url` (and -trustBundleUrl) is rejected: not supported yet.
 * - Plugins: exactly one NodeAttestor (join_token, the default when the section is absent, or
 *   k8s_psat); WorkloadAttestors unix (the default when the section is absent) and k8s. Their
 *   `plugin_data` (except join_token's, which takes none) is passed through as a `ConfigReader`
 *   for the attestor to validate (agent/plugins.ts builds them); KeyManager `memory`, or `disk` on data_dir
 *   (optional: the agent keeps workload keys in memory and its own SVID key under data_dir
 *   regardless). health_checks and telemetry are the server's.
 * - Spindle extensions (SPIRE has no Workload API limits), per caller process over the Workload
 *   API and SDS (agent/endpoints/limits.ts): `agent.workload_api_max_streams_per_pid` (default
 *   100) open streams, `agent.workload_api_rate_limit_per_pid` (200) calls per second with a
 *   burst of `agent.workload_api_rate_burst_per_pid` (500); per uid over all its processes
 *   `agent.workload_api_max_streams_per_uid` and `agent.workload_api_rate_limit_per_uid` (both 0:
 *   off) with `agent.workload_api_rate_burst_per_uid` (1000). Integers; 0 disables a limit;
 *   bursts are at least 1. Connections of the socket (agent/endpoints/connlimits.ts):
 *   `agent.workload_api_max_conns` (8192) in all, `agent.workload_api_max_conns_per_uid` (2048;
 *   must be less than the global limit, leaving room for other uids),
 *   `agent.workload_api_max_conns_per_pid` (256), and `agent.workload_api_idle_timeout` (a
 *   duration, default "2m") after which a connection without an open stream is closed.
 * - `agent.sds` (SPIRE's keys and defaults): default_svid_name "default", default_bundle_name
 *   "ROOTCA", default_all_bundles_name "ALL" (non-empty strings), disable_spiffe_cert_validation
 *   false. The SDS service on the Workload API socket uses them.
 * - SPIRE features Spindle lacks are rejected by name rather than ignored: `experimental`, admin API / delegated identity, profiling, rate limits, rebootstrap, other
 *   plugin types (SVIDStore) and telemetry sinks other than Prometheus.
 * Nothing here reads `process.env` or `process.cwd()`: main passes both in.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ConfigReader, loadConfigFile } from '../../common/configfile.js';
import {
  HEALTH_CHECKS_DEFAULTS,
  TELEMETRY_DEFAULTS,
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
  type KindSectionsOptions,
} from '../../common/configfields.js';
import { isWellFormedJoinToken } from '../../attestors/node/join_token/token.js';
import { NODE_ATTESTOR_PLUGINS, type NodeAttestorPlugin } from '../../attestors/node/registry.js';
import { WORKLOAD_ATTESTOR_PLUGINS, type WorkloadAttestorPlugin } from '../../attestors/workload/registry.js';
import { parseServerAddressList } from '../client/serveraddress.js';
import { DEFAULT_CONNECTION_LIMITS } from '../endpoints/connlimits.js';
import { DEFAULT_CALLER_LIMITS } from '../endpoints/limits.js';
import type { AgentConfig, AgentFlags } from './types.js';

export type { AgentConfig, AgentFlags } from './types.js';
export { LOG_FORMATS, LOG_LEVELS } from '../../common/configfields.js';

/** Known attestor names: the lists in attestors/node/registry.ts and attestors/workload/registry.ts. */
export const NODE_ATTESTORS: readonly string[] = NODE_ATTESTOR_PLUGINS.map((p) => p.name);
export const WORKLOAD_ATTESTORS: readonly string[] = WORKLOAD_ATTESTOR_PLUGINS.map((p) => p.name);
export const KEY_MANAGERS = ['memory', 'disk'] as const;
export const PLUGIN_TYPES = ['KeyManager', 'NodeAttestor', 'WorkloadAttestor'] as const;

/**
 * Every default, keyed by the config file's names. Docs, the example file and tests use this
 * one source.
 */
export const AGENT_DEFAULTS = {
  agent: {
    /** SPIRE requires server_address; Spindle defaults to a server on the same host. */
    server_address: '127.0.0.1',
    server_port: 8081,
    socket_path: '/tmp/spindle-agent/public/api.sock',
    data_dir: './.data',
    log_level: 'INFO',
    log_format: 'text',
    insecure_bootstrap: false,
    /**
     * Spindle extension (agent/attest/identity.ts): seconds after which (a random 75-100% of it)
     * the connection to the servers is replaced, trying the other servers first; 0 never. Only
     * used when server_address names several servers or a DNS name.
     */
    server_max_connection_age: 600,
    /** Spindle extensions (agent/endpoints/limits.ts): per-caller limits of the Workload API and SDS; 0 disables one. */
    workload_api_max_streams_per_pid: DEFAULT_CALLER_LIMITS.maxStreamsPerPid,
    workload_api_rate_limit_per_pid: DEFAULT_CALLER_LIMITS.ratePerPid,
    workload_api_rate_burst_per_pid: DEFAULT_CALLER_LIMITS.burstPerPid,
    workload_api_max_streams_per_uid: DEFAULT_CALLER_LIMITS.maxStreamsPerUid,
    workload_api_rate_limit_per_uid: DEFAULT_CALLER_LIMITS.ratePerUid,
    workload_api_rate_burst_per_uid: DEFAULT_CALLER_LIMITS.burstPerUid,
    /** Spindle extensions (agent/endpoints/connlimits.ts): connection limits of the Workload API socket. */
    workload_api_max_conns: DEFAULT_CONNECTION_LIMITS.maxConnections,
    workload_api_max_conns_per_uid: DEFAULT_CONNECTION_LIMITS.maxConnsPerUid,
    workload_api_max_conns_per_pid: DEFAULT_CONNECTION_LIMITS.maxConnsPerPid,
    workload_api_idle_timeout: DEFAULT_CONNECTION_LIMITS.idleTimeoutSeconds,
  },
  /** SPIRE's agent `sds` section (Envoy SDS on the Workload API socket); same defaults. */
  sds: {
    default_svid_name: 'default',
    default_bundle_name: 'ROOTCA',
    default_all_bundles_name: 'ALL',
    disable_spiffe_cert_validation: false,
  },
  plugins: {
    /** Used when no NodeAttestor is configured. */
    NodeAttestor: 'join_token',
    /** Used (with no plugin_data) when no WorkloadAttestor is configured. */
    WorkloadAttestor: 'unix',
  },
  health_checks: HEALTH_CHECKS_DEFAULTS,
  telemetry: TELEMETRY_DEFAULTS,
} as const;

export interface ParseAgentConfigOptions {
  /** Absolute directory relative paths resolve against (the process's working directory). */
  cwd: string;
  /** The file the raw config came from, recorded in the result. */
  configPath?: string;
  /** Reads `-joinTokenFile` (given an absolute path); default: fs.readFileSync as UTF-8. */
  readFile?: (path: string) => string;
  /** The node attestors this agent knows; default this build's list (tests extend it). */
  nodeAttestors?: readonly NodeAttestorPlugin[];
  /** The workload attestors this agent knows; default this build's list. */
  workloadAttestors?: readonly WorkloadAttestorPlugin[];
}

export interface LoadAgentConfigOptions {
  /** The config file; defaults to `flags.config`. With neither, flags and defaults only. */
  configPath?: string;
  flags?: AgentFlags;
  /** Absolute working directory: relative paths (config file included) resolve against it. */
  cwd: string;
  /** The environment for `-expandEnv`; required when that flag is set. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Reads `-joinTokenFile`; default: fs.readFileSync as UTF-8. */
  readFile?: (path: string) => string;
}

/** Reads the config file (if any), applies the flags, validates. Throws `ConfigError`. */
export function loadAgentConfig(options: LoadAgentConfigOptions): AgentConfig {
  const flags = options.flags ?? {};
  const parseOptions: ParseAgentConfigOptions = { cwd: options.cwd };
  if (options.readFile !== undefined) parseOptions.readFile = options.readFile;
  const given = options.configPath ?? flags.config;
  if (given === undefined || given === '') return parseAgentConfig({}, flags, parseOptions);
  if (flags.expandEnv === true && options.env === undefined) {
    throw new TypeError('loadAgentConfig: -expandEnv is set but no env was passed in');
  }
  const configPath = resolve(options.cwd, given);
  const raw = loadConfigFile(configPath, flags.expandEnv === true ? { env: options.env } : {});
  return parseAgentConfig(raw, flags, { ...parseOptions, configPath });
}

/** Validates a raw config (as loaded from a file) with flag overrides. Throws `ConfigError`. */
export function parseAgentConfig(raw: unknown, flags: AgentFlags, options: ParseAgentConfigOptions): AgentConfig {
  if (!isAbsolute(options.cwd)) throw new TypeError(`parseAgentConfig: cwd must be absolute, got ${JSON.stringify(options.cwd)}`);
  const cwd = options.cwd;
  const readFile = options.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const root = new ConfigReader(raw);
  const flagReader = flagReaderFor(flags);

  const a = root.section('agent');
  rejectUnsupportedKeys(a, UNSUPPORTED_AGENT_KEYS);

  const trustDomain = requiredTrustDomain(root, flagReader, a);

  const d = AGENT_DEFAULTS.agent;
  const address = parseServerAddress(a, flagReader);
  const serverPort = pick(portAt(flagReader, '-serverPort'), portAt(a, 'server_port'), d.server_port);
  const serverAddress = address.serverAddress;
  // Elements without a port of their own take server_port.
  const servers = address.servers.map((s) => ({ host: s.host, port: s.port === 0 ? serverPort : s.port }));
  const serverMaxConnectionAge = a.duration('server_max_connection_age', d.server_max_connection_age, { max: 7 * 24 * 3600 });
  const socketPath = pick(socketPathAt(flagReader, '-socketPath', cwd), socketPathAt(a, 'socket_path', cwd), resolve(cwd, d.socket_path));
  const dataDir = pick(pathAt(flagReader, '-dataDir', cwd), pathAt(a, 'data_dir', cwd), resolve(cwd, d.data_dir));
  const { logLevel, logFormat, logFile } = logSettings(flagReader, a, cwd, d);

  const joinToken = parseJoinToken(a, flagReader, cwd, readFile);
  const trust = parseInitialTrust(root, a, flagReader, cwd);

  const workloadApi = parseWorkloadApiLimits(a);

  const sds = parseSds(a);

  const plugins = parsePlugins(root, options.nodeAttestors ?? NODE_ATTESTOR_PLUGINS, options.workloadAttestors ?? WORKLOAD_ATTESTOR_PLUGINS, { dataDir, cwd });
  const healthChecks = parseHealthChecks(root, AGENT_DEFAULTS.health_checks);
  const telemetry = parseTelemetry(root, AGENT_DEFAULTS.telemetry);

  root.absorb(flagReader);
  root.throwIfInvalid();

  const config: AgentConfig = {
    trustDomain: trustDomain!,
    serverAddress,
    serverPort,
    servers,
    serverMaxConnectionAge,
    socketPath,
    dataDir,
    logLevel,
    logFormat,
    insecureBootstrap: trust.insecureBootstrap,
    plugins,
    healthChecks,
    telemetry,
    workloadApi,
    sds,
  };
  if (options.configPath !== undefined) config.configPath = options.configPath;
  if (logFile !== undefined) config.logFile = logFile;
  if (joinToken !== undefined) config.joinToken = joinToken;
  if (trust.trustBundlePath !== undefined) config.trustBundlePath = trust.trustBundlePath;
  return config;
}

// ---------------------------------------------------------------------------------------------
// agent section helpers

/**
 * -serverAddress, else agent.server_address, else the default: one host, or a comma-separated
 * list of servers (agent/client/serveraddress.ts), each `host`, `host:port`, `[ipv6]` or
 * `[ipv6]:port`; elements without a port take `server_port`.
 */
function parseServerAddress(a: ConfigReader, flags: ConfigReader): { serverAddress: string; servers: AgentConfig['servers'] } {
  // Port 0: "server_port", filled in by the caller (read after this, so problems keep the keys' order).
  const port = 0;
  const read = (r: ConfigReader, key: string): { text: string; servers: AgentConfig['servers'] } | undefined => {
    const v = r.string(key);
    if (v === undefined) return undefined;
    const parsed = parseServerAddressList(v, port);
    if ('problem' in parsed) {
      r.problem(key, parsed.problem);
      return undefined;
    }
    return { text: v.split(',').map((x) => x.trim()).join(','), servers: parsed.addresses };
  };
  const fromFlag = read(flags, '-serverAddress');
  const fromFile = read(a, 'server_address');
  const chosen = fromFlag ?? fromFile;
  if (chosen) return { serverAddress: chosen.text, servers: chosen.servers };
  const d = AGENT_DEFAULTS.agent.server_address;
  return { serverAddress: d, servers: [{ host: d, port }] };
}

/** The per-caller limits of the Workload API socket (Spindle extensions; 0 disables a limit). */
function parseWorkloadApiLimits(a: ConfigReader): AgentConfig['workloadApi'] {
  const d = AGENT_DEFAULTS.agent;
  const MAX = 1_000_000_000;
  const limit = (key: keyof typeof d & `workload_api_${string}`): number => a.int(key, { min: 0, max: MAX, default: d[key] as number });
  const burst = (key: keyof typeof d & `workload_api_${string}`): number => a.int(key, { min: 1, max: MAX, default: d[key] as number });
  const limits = {
    maxStreamsPerPid: limit('workload_api_max_streams_per_pid'),
    ratePerPid: limit('workload_api_rate_limit_per_pid'),
    burstPerPid: burst('workload_api_rate_burst_per_pid'),
    maxStreamsPerUid: limit('workload_api_max_streams_per_uid'),
    ratePerUid: limit('workload_api_rate_limit_per_uid'),
    burstPerUid: burst('workload_api_rate_burst_per_uid'),
    maxConnections: limit('workload_api_max_conns'),
    maxConnsPerUid: limit('workload_api_max_conns_per_uid'),
    maxConnsPerPid: limit('workload_api_max_conns_per_pid'),
    idleTimeoutSeconds: a.duration('workload_api_idle_timeout', d.workload_api_idle_timeout, { max: 7 * 24 * 3600 }),
  };
  // The per-uid limit is the reserve for other uids: it must stay below the global one.
  if (limits.maxConnections > 0 && limits.maxConnsPerUid >= limits.maxConnections) {
    a.problem(
      'workload_api_max_conns_per_uid',
      `must be less than agent.workload_api_max_conns (${limits.maxConnections}) so that one uid cannot take every connection, got ${limits.maxConnsPerUid}; lower it, or set it to 0 to disable the per-uid limit`,
    );
  }
  return limits;
}

const MALFORMED_TOKEN = 'is not a join token (expected a UUID as printed by `spindle-server token generate`)';

/** A join token from a string key: trimmed, checked, never echoed (it is a secret). */
function joinTokenAt(r: ConfigReader, key: string): string | undefined {
  const v = r.string(key)?.trim();
  if (v === undefined || v === '') return undefined;
  if (!isWellFormedJoinToken(v)) {
    r.problem(key, MALFORMED_TOKEN);
    return undefined;
  }
  return v;
}

/** -joinToken, else -joinTokenFile (read and trimmed), else agent.join_token. */
function parseJoinToken(a: ConfigReader, flags: ConfigReader, cwd: string, readFile: (path: string) => string): string | undefined {
  const fromFile = joinTokenAt(a, 'join_token');
  const given = (key: string): boolean => {
    const v = flags.raw(key);
    return v !== undefined && v !== '';
  };
  if (given('-joinToken') && given('-joinTokenFile')) {
    flags.problemLine('config: -joinToken and -joinTokenFile are mutually exclusive: give the join token one way');
    return undefined;
  }
  const fromFlag = joinTokenAt(flags, '-joinToken');
  const tokenFilePath = pathAt(flags, '-joinTokenFile', cwd);
  if (tokenFilePath === undefined) return fromFlag ?? fromFile;

  let text: string;
  try {
    text = readFile(tokenFilePath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    flags.problem('-joinTokenFile', `cannot read ${tokenFilePath}: ${why}`);
    return undefined;
  }
  const token = text.trim();
  if (token === '') {
    flags.problem('-joinTokenFile', `${tokenFilePath} is empty`);
    return undefined;
  }
  if (!isWellFormedJoinToken(token)) {
    flags.problem('-joinTokenFile', `the content of ${tokenFilePath} ${MALFORMED_TOKEN}`);
    return undefined;
  }
  return token;
}

const TRUST_BUNDLE_URL_UNSUPPORTED = 'is not supported yet: use trust_bundle_path or insecure_bootstrap';

/**
 * trust_bundle_path / -trustBundle and insecure_bootstrap / -insecureBootstrap (flags win).
 * Both in effect is an error, naming where each came from; neither is fine here (see the
 * module contract). trust_bundle_url is rejected.
 */
function parseInitialTrust(root: ConfigReader, a: ConfigReader, flags: ConfigReader, cwd: string): { trustBundlePath?: string; insecureBootstrap: boolean } {
  a.unsupported('trust_bundle_url', TRUST_BUNDLE_URL_UNSUPPORTED);
  flags.unsupported('-trustBundleUrl', 'is not supported yet: use -trustBundle or -insecureBootstrap');
  a.unsupported('trust_bundle_unix_socket', 'is not supported yet (it goes with trust_bundle_url, which is not supported yet either)');
  const format = a.string('trust_bundle_format');
  if (format !== undefined && format.toLowerCase() !== 'pem') {
    a.problem('trust_bundle_format', `only "pem" is supported yet, got ${JSON.stringify(format)}`);
  }

  const pathFromFlag = pathAt(flags, '-trustBundle', cwd);
  const pathFromFile = pathAt(a, 'trust_bundle_path', cwd);
  const insecureFromFlag = flags.bool('-insecureBootstrap');
  const insecureFromFile = a.bool('insecure_bootstrap');
  const trustBundlePath = pathFromFlag ?? pathFromFile;
  const insecureBootstrap = insecureFromFlag ?? insecureFromFile ?? AGENT_DEFAULTS.agent.insecure_bootstrap;
  if (trustBundlePath !== undefined && insecureBootstrap) {
    const pathName = pathFromFlag !== undefined ? '-trustBundle' : 'agent.trust_bundle_path';
    const insecureName = insecureFromFlag !== undefined ? '-insecureBootstrap' : 'agent.insecure_bootstrap';
    root.problemLine(
      `config: ${pathName} and ${insecureName} are mutually exclusive: verify the server with a trust bundle, or bootstrap without one, not both`,
    );
  }
  const result: { trustBundlePath?: string; insecureBootstrap: boolean } = { insecureBootstrap };
  if (trustBundlePath !== undefined) result.trustBundlePath = trustBundlePath;
  return result;
}

/** A non-empty SDS resource name (an empty one would never match a request). */
function sdsNameAt(r: ConfigReader, key: string, def: string): string {
  const v = r.raw(key);
  if (typeof v === 'string' && v.trim() === '') {
    r.problem(key, 'must not be empty');
    return def;
  }
  return r.string(key, def);
}

/** agent.sds: SPIRE's SDS settings; absent or null gives the defaults. */
function parseSds(a: ConfigReader): AgentConfig['sds'] {
  const s = a.section('sds');
  const d = AGENT_DEFAULTS.sds;
  return {
    defaultSvidName: sdsNameAt(s, 'default_svid_name', d.default_svid_name),
    defaultBundleName: sdsNameAt(s, 'default_bundle_name', d.default_bundle_name),
    defaultAllBundlesName: sdsNameAt(s, 'default_all_bundles_name', d.default_all_bundles_name),
    disableSpiffeCertValidation: s.bool('disable_spiffe_cert_validation', d.disable_spiffe_cert_validation),
  };
}

/** SPIRE agent keys Spindle recognizes but does not implement, with what to say about them. */
const UNSUPPORTED_AGENT_KEYS: Readonly<Record<string, string>> = {
  admin_socket_path: 'is not supported yet: spindle-agent has no admin API',
  authorized_delegates: 'is not supported yet: spindle-agent has no Delegated Identity API',
  allow_unauthenticated_verifiers: 'is not supported yet',
  allowed_foreign_jwt_claims: 'is not supported yet',
  availability_target: 'is not supported yet',
  workload_x509_svid_key_type: 'is not supported yet',
  rebootstrap_mode: 'is not supported yet',
  rebootstrap_delay: 'is not supported yet',
  retry_bootstrap: 'is not supported yet',
  ratelimit: 'is not supported yet',
  profiling_enabled: 'is not supported yet',
  profiling_port: 'is not supported yet',
  profiling_freq: 'is not supported yet',
  profiling_names: 'is not supported yet',
  log_source_location: 'is not supported yet',
};

// ---------------------------------------------------------------------------------------------
// plugins

const SPIRE_ONLY_PLUGIN_TYPES = ['SVIDStore'];


function parsePlugins(root: ConfigReader, nodePlugins: readonly NodeAttestorPlugin[], workloadPlugins: readonly WorkloadAttestorPlugin[], paths: { dataDir: string; cwd: string }): AgentConfig['plugins'] {
  const p = root.section('plugins');
  rejectUnknownPluginTypes(p, PLUGIN_TYPES, SPIRE_ONLY_PLUGIN_TYPES, 'spindle-agent');
  const nodeAttestor = parseNodeAttestor(root, p, nodePlugins);
  const workloadAttestors = parseWorkloadAttestors(p, workloadPlugins);
  parseKeyManager(root, p, paths);
  return { nodeAttestor, workloadAttestors };
}

/**
 * How the agent reads plugin kinds: malformed entries count as rejected (so "found none" is not
 * added), and plugins it lacks yet are reported as such rather than as unknown.
 */
const AGENT_KIND_SECTIONS: KindSectionsOptions = {
  countMalformed: true,
};

function parseNodeAttestor(root: ConfigReader, p: ConfigReader, plugins: readonly NodeAttestorPlugin[]): AgentConfig['plugins']['nodeAttestor'] {
  const name = AGENT_DEFAULTS.plugins.NodeAttestor;
  const fallback = { name, data: new ConfigReader(undefined, `plugins.NodeAttestor.${name}.plugin_data`) };
  if (!p.has('NodeAttestor')) return fallback;
  const names = plugins.map((x) => x.name);
  const section = onlyOne(p, 'NodeAttestor', kindSections(p, 'NodeAttestor', names, AGENT_KIND_SECTIONS), true);
  if (section === undefined) return fallback;
  // An attestor without options (join_token): absorbing now reports any key as unknown.
  if (plugins.find((x) => x.name === section.name)?.noPluginData === true) root.absorb(section.data);
  return { name: section.name, data: section.data };
}

function parseWorkloadAttestors(p: ConfigReader, plugins: readonly WorkloadAttestorPlugin[]): AgentConfig['plugins']['workloadAttestors'] {
  if (!p.has('WorkloadAttestor')) {
    const name = AGENT_DEFAULTS.plugins.WorkloadAttestor;
    return [{ name, data: new ConfigReader(undefined, `plugins.WorkloadAttestor.${name}.plugin_data`) }];
  }
  const { enabled, unknown } = kindSections(
    p,
    'WorkloadAttestor',
    plugins.map((x) => x.name),
    AGENT_KIND_SECTIONS,
  );
  if (enabled.length === 0 && unknown === 0) p.problem('WorkloadAttestor', 'at least one WorkloadAttestor must be enabled');
  // Each attestor validates its own plugin_data when it is built (agent/plugins.ts).
  return enabled.map((s) => ({ name: s.name, data: s.data }));
}

/**
 * KeyManager is optional and not in AgentConfig: spindle-agent keeps its own SVID key on disk
 * under data_dir (0600) and workload keys in memory, whichever is named. `memory` takes no
 * options. `disk` is accepted so SPIRE's agent.conf loads unchanged, when its `directory` is the
 * agent's data_dir (as in SPIRE's own examples); any other directory is refused, since no key
 * would be kept there.
 */
function parseKeyManager(root: ConfigReader, p: ConfigReader, paths: { dataDir: string; cwd: string }): void {
  if (!p.has('KeyManager')) return;
  const { enabled, unknown } = kindSections(p, 'KeyManager', KEY_MANAGERS, AGENT_KIND_SECTIONS);
  if (enabled.length === 0 && unknown === 0) p.problem('KeyManager', 'exactly one KeyManager must be enabled, found none');
  for (const section of enabled) {
    if (section.name === 'disk') {
      const directory = pathAt(section.data, 'directory', paths.cwd);
      if (directory === undefined) {
        if (!section.data.has('directory')) section.data.problem('directory', `is required: set it to the agent's data_dir (${paths.dataDir}), where spindle-agent keeps its own SVID key, or use KeyManager "memory"`);
      } else if (directory !== paths.dataDir) {
        section.data.problem(
          'directory',
          `must be the agent's data_dir (${paths.dataDir}), got ${directory}: spindle-agent keeps its own SVID key under data_dir and workload keys in memory; set directory to data_dir, or use KeyManager "memory"`,
        );
      }
    }
    root.absorb(section.data);
  }
}

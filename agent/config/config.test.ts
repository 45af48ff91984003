import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { isConfigError } from '../../common/configfile.js';
import { SPIRE_AGENT_CONF, SPIRE_AGENT_YAML } from '../../test/support/spireconf.js';
import { AGENT_DEFAULTS, loadAgentConfig, parseAgentConfig, type AgentConfig, type AgentFlags } from './config.js';

const CWD = '/srv/spindle';
const EXAMPLE = fileURLToPath(new URL('../../../agent/config/agent.example.yaml', import.meta.url));
const TOKEN = '5e0d1b4a-8c3f-4f6e-9a2b-1c7d3e5f9a0b';
const TOKEN2 = '0f8e2c6d-1a3b-4c5d-8e7f-9a0b1c2d3e4f';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-agent-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The config with each plugin's reader replaced by its raw data, for comparing. */
function plain(c: AgentConfig): unknown {
  return {
    ...c,
    plugins: {
      nodeAttestor: { name: c.plugins.nodeAttestor.name, data: c.plugins.nodeAttestor.data.value },
      workloadAttestors: c.plugins.workloadAttestors.map((a) => ({ name: a.name, data: a.data.value })),
    },
  };
}

/** A readFile that serves the given files (absolute paths) and fails like fs otherwise. */
function fakeFiles(files: Record<string, string>): (p: string) => string {
  return (p) => {
    const text = files[p];
    if (text === undefined) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${p}'`), { code: 'ENOENT' });
    return text;
  };
}

function parse(raw: unknown, flags: AgentFlags = {}, readFile?: (p: string) => string): AgentConfig {
  return parseAgentConfig(raw, flags, readFile === undefined ? { cwd: CWD } : { cwd: CWD, readFile });
}

function problems(raw: unknown, flags: AgentFlags = {}, readFile?: (p: string) => string): string[] {
  try {
    parse(raw, flags, readFile);
  } catch (err) {
    assert.ok(isConfigError(err), String(err));
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

/** Asserts the config is rejected with exactly this one problem. */
function rejects(raw: unknown, problem: string, flags: AgentFlags = {}, readFile?: (p: string) => string): void {
  assert.deepEqual(problems(raw, flags, readFile), [problem]);
}

const TD = { agent: { trust_domain: 'example.org' } };
const withAgent = (extra: Record<string, unknown>) => ({ agent: { trust_domain: 'example.org', ...extra } });
const withPlugins = (plugins: Record<string, unknown>) => ({ ...TD, plugins });

const FULL_YAML = `# A SPIRE agent.conf, as YAML
agent:
  trust_domain: example.org
  server_address: spindle-server.internal
  server_port: "9081"
  socket_path: /run/spindle/agent.sock
  data_dir: /var/lib/spindle-agent
  log_level: debug
  log_format: JSON
  log_file: ./agent.log
  join_token: "  ${TOKEN}\\n"
  trust_bundle_path: ./bundle.pem
  trust_bundle_format: PEM
  insecure_bootstrap: "false"
  workload_api_max_streams_per_pid: 20
  workload_api_rate_limit_per_pid: "50"
  workload_api_rate_burst_per_pid: 80
  workload_api_max_streams_per_uid: 300
  workload_api_rate_limit_per_uid: 0
  workload_api_rate_burst_per_uid: 2000
  workload_api_max_conns: 1000
  workload_api_max_conns_per_uid: "400"
  workload_api_max_conns_per_pid: 40
  workload_api_idle_timeout: 45s
  sds:
    default_svid_name: my_svid
    default_bundle_name: my_bundle
    default_all_bundles_name: my_all
    disable_spiffe_cert_validation: true

plugins:
  NodeAttestor:
    join_token:
      plugin_data: {}
  WorkloadAttestor:
    unix:
      plugin_data:
        discover_workload_path: true
        workload_size_limit: 1048576
  KeyManager:
    memory:
      plugin_data: {}

health_checks:
  listener_enabled: true
  bind_address: 0.0.0.0
  bind_port: "8080"
  live_path: /healthz/live
  ready_path: /healthz/ready

telemetry:
  Prometheus:
    host: 127.0.0.1
    port: 9989
`;

const FULL_EXPECTED: unknown = {
  trustDomain: 'example.org',
  serverAddress: 'spindle-server.internal',
  serverPort: 9081,
  servers: [{ host: 'spindle-server.internal', port: 9081 }],
  serverMaxConnectionAge: 600,
  socketPath: '/run/spindle/agent.sock',
  dataDir: '/var/lib/spindle-agent',
  logLevel: 'DEBUG',
  logFormat: 'json',
  logFile: `${CWD}/agent.log`,
  joinToken: TOKEN,
  trustBundlePath: `${CWD}/bundle.pem`,
  insecureBootstrap: false,
  plugins: {
    nodeAttestor: { name: 'join_token', data: {} },
    workloadAttestors: [{ name: 'unix', data: { discover_workload_path: true, workload_size_limit: 1048576 } }],
  },
  healthChecks: { listenerEnabled: true, bindAddress: '0.0.0.0', bindPort: 8080, livePath: '/healthz/live', readyPath: '/healthz/ready' },
  telemetry: { prometheus: { host: '127.0.0.1', port: 9989 } },
  workloadApi: {
    maxStreamsPerPid: 20,
    ratePerPid: 50,
    burstPerPid: 80,
    maxStreamsPerUid: 300,
    ratePerUid: 0,
    burstPerUid: 2000,
    maxConnections: 1000,
    maxConnsPerUid: 400,
    maxConnsPerPid: 40,
    idleTimeoutSeconds: 45,
  },
  sds: { defaultSvidName: 'my_svid', defaultBundleName: 'my_bundle', defaultAllBundlesName: 'my_all', disableSpiffeCertValidation: true },
};

// ------------------------------------------------------------------ whole files

test('a full SPIRE-style YAML file and the same in JSON parse to equal configs', (t) => {
  const dir = tempDir(t);
  const yamlPath = join(dir, 'agent.yaml');
  const jsonPath = join(dir, 'agent.json');
  const confPath = join(dir, 'agent.conf');
  writeFileSync(yamlPath, FULL_YAML);
  writeFileSync(jsonPath, JSON.stringify(parseYaml(FULL_YAML), null, 2));
  writeFileSync(confPath, JSON.stringify(parseYaml(FULL_YAML)));
  const fromYaml = loadAgentConfig({ configPath: yamlPath, cwd: CWD });
  const fromJson = loadAgentConfig({ configPath: jsonPath, cwd: CWD });
  const fromConf = loadAgentConfig({ flags: { config: confPath }, cwd: CWD });
  assert.deepEqual(plain(fromYaml), { configPath: yamlPath, ...(FULL_EXPECTED as object) });
  assert.deepEqual(plain(fromJson), { ...(plain(fromYaml) as object), configPath: jsonPath });
  assert.deepEqual(plain(fromConf), { ...(plain(fromYaml) as object), configPath: confPath });
});

test('the config path itself resolves against cwd', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'agent.yaml'), 'agent:\n  trust_domain: example.org\n  data_dir: data\n');
  const c = loadAgentConfig({ configPath: 'agent.yaml', cwd: dir });
  assert.equal(c.configPath, join(dir, 'agent.yaml'));
  assert.equal(c.dataDir, join(dir, 'data'), 'relative paths follow cwd, as in SPIRE');
});

test('file errors from loadAgentConfig are ConfigErrors naming the file', (t) => {
  const dir = tempDir(t);
  assert.throws(() => loadAgentConfig({ configPath: 'missing.yaml', cwd: dir }), (err: unknown) => {
    assert.ok(isConfigError(err));
    assert.deepEqual(err.problems, [`config: cannot read config file ${join(dir, 'missing.yaml')}: file not found`]);
    return true;
  });
  writeFileSync(join(dir, 'bad.yaml'), 'agent:\n  trust_domain: [\n');
  assert.throws(() => loadAgentConfig({ configPath: 'bad.yaml', cwd: dir }), /bad\.yaml:\d+:\d+: invalid YAML/);
});

test('the annotated example file loads, and shows exactly the defaults', () => {
  const fromExample = loadAgentConfig({ configPath: EXAMPLE, cwd: CWD });
  const fromDefaults = parseAgentConfig({}, { trustDomain: 'example.org' }, { cwd: CWD });
  assert.deepEqual(plain(fromExample), { ...(plain(fromDefaults) as object), configPath: EXAMPLE });
});

test('the example file mentions every key the parser knows', () => {
  const text = readFileSync(EXAMPLE, 'utf8');
  const keys = [
    ...Object.keys(AGENT_DEFAULTS.agent),
    ...Object.keys(AGENT_DEFAULTS.health_checks),
    ...Object.keys(AGENT_DEFAULTS.sds),
    'sds',
    'trust_domain', 'log_file', 'join_token', 'trust_bundle_path', 'trust_bundle_format',
    'NodeAttestor', 'join_token', 'enabled', 'plugin_data', 'WorkloadAttestor', 'unix', 'discover_workload_path',
    'workload_size_limit', 'KeyManager', 'memory', 'telemetry', 'Prometheus', 'host', 'port',
  ];
  for (const key of keys) assert.match(text, new RegExp(`(^|\\s|#\\s*)${key}:`, 'm'), key);
  // Keys rejected by name are listed as such.
  for (const key of ['trust_bundle_url', 'experimental', 'admin_socket_path']) assert.match(text, new RegExp(key), key);
});

test('AGENT_DEFAULTS is what a flags-only config gets', () => {
  const c = parse({}, { trustDomain: 'example.org' });
  const d = AGENT_DEFAULTS.agent;
  assert.equal(c.serverAddress, d.server_address);
  assert.equal(c.serverAddress, '127.0.0.1');
  assert.equal(c.serverPort, d.server_port);
  assert.equal(c.serverPort, 8081);
  assert.equal(c.socketPath, d.socket_path);
  assert.equal(c.socketPath, '/tmp/spindle-agent/public/api.sock');
  assert.equal(c.dataDir, join(CWD, d.data_dir));
  assert.equal(c.logLevel, d.log_level);
  assert.equal(c.logFormat, d.log_format);
  assert.equal(c.insecureBootstrap, false);
  assert.equal(c.logFile, undefined);
  assert.equal(c.joinToken, undefined);
  assert.equal(c.trustBundlePath, undefined);
  assert.equal(c.configPath, undefined);
  assert.deepEqual(c.workloadApi, {
    maxStreamsPerPid: d.workload_api_max_streams_per_pid,
    ratePerPid: d.workload_api_rate_limit_per_pid,
    burstPerPid: d.workload_api_rate_burst_per_pid,
    maxStreamsPerUid: d.workload_api_max_streams_per_uid,
    ratePerUid: d.workload_api_rate_limit_per_uid,
    burstPerUid: d.workload_api_rate_burst_per_uid,
    maxConnections: d.workload_api_max_conns,
    maxConnsPerUid: d.workload_api_max_conns_per_uid,
    maxConnsPerPid: d.workload_api_max_conns_per_pid,
    idleTimeoutSeconds: d.workload_api_idle_timeout,
  });
  // Per process: generous defaults; per uid: off, except connections (a quarter of the total).
  assert.deepEqual(c.workloadApi, {
    maxStreamsPerPid: 100,
    ratePerPid: 200,
    burstPerPid: 500,
    maxStreamsPerUid: 0,
    ratePerUid: 0,
    burstPerUid: 1000,
    maxConnections: 8192,
    maxConnsPerUid: 2048,
    maxConnsPerPid: 256,
    idleTimeoutSeconds: 120,
  });
  assert.deepEqual((plain(c) as { plugins: unknown }).plugins, {
    nodeAttestor: { name: AGENT_DEFAULTS.plugins.NodeAttestor, data: {} },
    workloadAttestors: [{ name: AGENT_DEFAULTS.plugins.WorkloadAttestor, data: {} }],
  });
  assert.equal(c.plugins.nodeAttestor.data.path, 'plugins.NodeAttestor.join_token.plugin_data');
  assert.equal(c.plugins.workloadAttestors[0]?.data.path, 'plugins.WorkloadAttestor.unix.plugin_data');
  assert.deepEqual(c.healthChecks, { listenerEnabled: false, bindAddress: 'localhost', bindPort: 80, livePath: '/live', readyPath: '/ready' });
  assert.deepEqual(c.telemetry, {});
});

// ------------------------------------------------------------------ flags

test('flags alone are a complete config (no file at all)', () => {
  const c = loadAgentConfig({
    flags: { trustDomain: 'example.org', serverAddress: '10.1.2.3', serverPort: '9000', dataDir: 'state', joinToken: TOKEN, trustBundle: 'bundle.pem' },
    cwd: CWD,
  });
  assert.equal(c.trustDomain, 'example.org');
  assert.equal(c.serverAddress, '10.1.2.3');
  assert.equal(c.serverPort, 9000);
  assert.equal(c.dataDir, join(CWD, 'state'));
  assert.equal(c.joinToken, TOKEN);
  assert.equal(c.trustBundlePath, join(CWD, 'bundle.pem'));
  assert.equal(c.plugins.nodeAttestor.name, 'join_token');
  assert.deepEqual(c.plugins.workloadAttestors.map((a) => a.name), ['unix']);
});

test('without a trust domain anywhere, the error says where to set it', () => {
  const required = 'config: trust_domain is required (set agent.trust_domain in the config file or -trustDomain)';
  rejects({}, required);
  rejects({ agent: { trust_domain: '' } }, required);
  assert.throws(() => loadAgentConfig({ cwd: CWD }), /trust_domain is required \(set agent\.trust_domain in the config file or -trustDomain\)/);
  // A spiffe:// trust domain ID is accepted and reduced to the name, as the server does.
  assert.equal(parse(withAgent({ trust_domain: 'spiffe://example.org' })).trustDomain, 'example.org');
});

test('flags override file values', () => {
  const file = withAgent({
    server_address: '10.0.0.1',
    server_port: 8081,
    socket_path: '/run/a.sock',
    data_dir: '/var/a',
    log_level: 'INFO',
    log_format: 'text',
    log_file: '/var/log/a.log',
    join_token: TOKEN,
    trust_bundle_path: '/etc/a.pem',
  });
  const flags: AgentFlags = {
    trustDomain: 'other.test',
    serverAddress: 'server.other.test',
    serverPort: '9090',
    socketPath: 'b.sock',
    dataDir: 'b',
    logLevel: 'warn',
    logFormat: 'json',
    logFile: 'b.log',
    joinToken: TOKEN2,
    trustBundle: 'b.pem',
  };
  const c = parse(file, flags);
  assert.equal(c.trustDomain, 'other.test');
  assert.equal(c.serverAddress, 'server.other.test');
  assert.equal(c.serverPort, 9090);
  assert.equal(c.socketPath, join(CWD, 'b.sock'));
  assert.equal(c.dataDir, join(CWD, 'b'));
  assert.equal(c.logLevel, 'WARN');
  assert.equal(c.logFormat, 'json');
  assert.equal(c.logFile, join(CWD, 'b.log'));
  assert.equal(c.joinToken, TOKEN2);
  assert.equal(c.trustBundlePath, join(CWD, 'b.pem'));
  // Unset (or empty) flags leave the file's values alone.
  const d = parse(file, { logLevel: undefined, serverPort: 7000, serverAddress: '' });
  assert.equal(d.logLevel, 'INFO');
  assert.equal(d.serverPort, 7000);
  assert.equal(d.serverAddress, '10.0.0.1');
  assert.equal(d.joinToken, TOKEN);
  assert.equal(d.trustBundlePath, '/etc/a.pem');
  // -insecureBootstrap given as false overrides the file's true.
  assert.equal(parse(withAgent({ insecure_bootstrap: true }), { insecureBootstrap: false }).insecureBootstrap, false);
  assert.equal(parse(TD, { insecureBootstrap: true }).insecureBootstrap, true);
});

test('bad flag values name the flag', () => {
  assert.deepEqual(
    problems(TD, {
      trustDomain: 'Bad.Domain',
      serverAddress: 'http://server:8081',
      serverPort: 'abc',
      socketPath: `/tmp/${'x'.repeat(120)}.sock`,
      logLevel: 'loud',
      logFormat: 'xml',
      joinToken: 'not-a-token',
    }),
    [
      'config: -trustDomain: invalid trust domain "Bad.Domain": trust domain may contain only a-z 0-9 . - _ (uppercase letters are not allowed: "B" at index 0)',
      'config: -serverAddress: expected an IP address or host name, got "http://server:8081"',
      'config: -serverPort: expected an integer between 1 and 65535, got "abc"',
      `config: -socketPath: Unix socket paths are limited to 107 bytes, got "/tmp/${'x'.repeat(120)}.sock" (130 bytes)`,
      'config: -logLevel: expected one of DEBUG, INFO, WARN, ERROR, got "loud"',
      'config: -logFormat: expected one of text, json, got "xml"',
      'config: -joinToken: is not a join token (expected a UUID as printed by `spindle-server token generate`)',
    ],
  );
  rejects(TD, 'config: -dataDir: must not contain a NUL character', { dataDir: 'a\0b' });
  rejects(TD, 'config: -serverPort: expected an integer between 1 and 65535, got 0', { serverPort: 0 });
});

test('server_address and -serverAddress take a comma-separated list of servers', () => {
  // -serverAddress 127.0.0.1,127.0.0.2 -serverPort 8082: both on port 8082.
  const c = parse(TD, { serverAddress: '127.0.0.1, 127.0.0.2', serverPort: '8082' });
  assert.equal(c.serverAddress, '127.0.0.1,127.0.0.2');
  assert.deepEqual(c.servers, [
    { host: '127.0.0.1', port: 8082 },
    { host: '127.0.0.2', port: 8082 },
  ]);
  // In the file, with a port per element and bracketed IPv6; the flag wins over the file.
  assert.deepEqual(parse(withAgent({ server_address: '[::1]:9001,[::2]', server_port: 9000 })).servers, [
    { host: '::1', port: 9001 },
    { host: '::2', port: 9000 },
  ]);
  assert.deepEqual(parse(withAgent({ server_address: '10.0.0.1,10.0.0.2' }), { serverAddress: '10.0.0.3' }).servers, [{ host: '10.0.0.3', port: 8081 }]);
  // One host is as before; the default is 127.0.0.1:8081.
  assert.deepEqual(parse(withAgent({ server_address: 'spire-server' })).servers, [{ host: 'spire-server', port: 8081 }]);
  assert.deepEqual(parse(TD).servers, [{ host: '127.0.0.1', port: 8081 }]);
  // Errors name the key or flag and the element.
  rejects(withAgent({ server_address: '127.0.0.1,,127.0.0.2' }), 'config: agent.server_address: element 2 of the comma-separated list is empty, got "127.0.0.1,,127.0.0.2"');
  rejects(TD, 'config: -serverAddress: bad port in "127.0.0.2:99999": expected an integer between 1 and 65535', { serverAddress: '127.0.0.1,127.0.0.2:99999' });
  // Servers by name in a list (the agent resolves them).
  assert.deepEqual(parse(withAgent({ server_address: '127.0.0.1,server-b:9000' })).servers, [
    { host: '127.0.0.1', port: 8081 },
    { host: 'server-b', port: 9000 },
  ]);
  rejects(withAgent({ server_address: '127.0.0.1,::1' }), 'config: agent.server_address: a list of several server addresses must be all IPv4 or all IPv6 addresses, not both');
});

test('server_max_connection_age (Spindle extension): a duration, default 10m, 0 disables', () => {
  assert.equal(parse(TD).serverMaxConnectionAge, AGENT_DEFAULTS.agent.server_max_connection_age);
  assert.equal(AGENT_DEFAULTS.agent.server_max_connection_age, 600);
  assert.equal(parse(withAgent({ server_max_connection_age: '2m30s' })).serverMaxConnectionAge, 150);
  assert.equal(parse(withAgent({ server_max_connection_age: 0 })).serverMaxConnectionAge, 0);
  rejects(withAgent({ server_max_connection_age: 'soon' }), problems(withAgent({ server_max_connection_age: 'soon' }))[0]!);
  assert.match(problems(withAgent({ server_max_connection_age: 'soon' }))[0]!, /^config: agent\.server_max_connection_age: /);
  assert.match(problems(withAgent({ server_max_connection_age: '200h' }))[0]!, /agent\.server_max_connection_age: must be at most/);
});

test('-expandEnv expands $VAR in the file from the env passed in', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'agent.yaml');
  writeFileSync(path, 'agent:\n  trust_domain: ${TD}\n  join_token: $JOIN_TOKEN\n  data_dir: $STATE/spindle-agent\n');
  const c = loadAgentConfig({ configPath: path, flags: { expandEnv: true }, env: { TD: 'example.org', JOIN_TOKEN: TOKEN, STATE: '/var/lib' }, cwd: CWD });
  assert.equal(c.trustDomain, 'example.org');
  assert.equal(c.joinToken, TOKEN);
  assert.equal(c.dataDir, '/var/lib/spindle-agent');
  // Without the flag the text is taken literally.
  assert.throws(
    () => loadAgentConfig({ configPath: path, env: { TD: 'example.org' }, cwd: CWD }),
    /config: agent\.trust_domain: invalid trust domain "\$\{TD\}"/,
  );
  assert.throws(() => loadAgentConfig({ configPath: path, flags: { expandEnv: true }, cwd: CWD }), TypeError);
});

test('cwd must be absolute', () => {
  assert.throws(() => parseAgentConfig(TD, {}, { cwd: 'relative' }), TypeError);
});

// ------------------------------------------------------------------ join tokens

test('-joinTokenFile is read through the injected readFile, trimmed, and resolved against cwd', () => {
  const files = { [join(CWD, 'secrets/token')]: `\n  ${TOKEN}  \r\n` };
  const c = parse(withAgent({ join_token: TOKEN2 }), { joinTokenFile: 'secrets/token' }, fakeFiles(files));
  assert.equal(c.joinToken, TOKEN, 'the flag wins over agent.join_token');
  const abs = parse(TD, { joinTokenFile: '/run/secrets/token' }, fakeFiles({ '/run/secrets/token': TOKEN }));
  assert.equal(abs.joinToken, TOKEN);
});

test('-joinTokenFile through loadAgentConfig reads the real file by default', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  const c = loadAgentConfig({ flags: { trustDomain: 'example.org', joinTokenFile: 'token' }, cwd: dir });
  assert.equal(c.joinToken, TOKEN);
  const injected = loadAgentConfig({ flags: { trustDomain: 'example.org', joinTokenFile: 'token' }, cwd: dir, readFile: () => TOKEN2 });
  assert.equal(injected.joinToken, TOKEN2);
  assert.throws(
    () => loadAgentConfig({ flags: { trustDomain: 'example.org', joinTokenFile: 'nope' }, cwd: dir }),
    new RegExp(`config: -joinTokenFile: cannot read ${join(dir, 'nope').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: file not found`),
  );
});

test('-joinTokenFile errors name the flag: unreadable, empty, malformed', () => {
  rejects(TD, `config: -joinTokenFile: cannot read ${CWD}/missing: file not found`, { joinTokenFile: 'missing' }, fakeFiles({}));
  const denied = (): string => {
    throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
  };
  rejects(TD, `config: -joinTokenFile: cannot read /root/token: permission denied`, { joinTokenFile: '/root/token' }, denied);
  rejects(TD, `config: -joinTokenFile: ${CWD}/empty is empty`, { joinTokenFile: 'empty' }, fakeFiles({ [`${CWD}/empty`]: ' \n\t\n' }));
  const secretish = 'SECRET-but-not-a-uuid';
  const [problem] = problems(TD, { joinTokenFile: 'bad' }, fakeFiles({ [`${CWD}/bad`]: secretish }));
  assert.equal(problem, `config: -joinTokenFile: the content of ${CWD}/bad is not a join token (expected a UUID as printed by \`spindle-server token generate\`)`);
});

test('-joinToken and -joinTokenFile together are an error', () => {
  let read = false;
  rejects(TD, 'config: -joinToken and -joinTokenFile are mutually exclusive: give the join token one way', { joinToken: TOKEN, joinTokenFile: 'token' }, () => {
    read = true;
    return TOKEN;
  });
  assert.equal(read, false, 'the file is not read when the flags conflict');
  // An empty flag counts as not given.
  assert.equal(parse(TD, { joinToken: '', joinTokenFile: 'token' }, () => TOKEN2).joinToken, TOKEN2);
});

test('join tokens are trimmed, validated and never echoed', () => {
  assert.equal(parse(withAgent({ join_token: ` ${TOKEN}\n` })).joinToken, TOKEN);
  const secretish = 'hunter2-hunter2';
  const all = problems(withAgent({ join_token: secretish }), {});
  assert.deepEqual(all, ['config: agent.join_token: is not a join token (expected a UUID as printed by `spindle-server token generate`)']);
  assert.ok(!all.join('\n').includes(secretish));
  rejects(withAgent({ join_token: 42 }), 'config: agent.join_token: expected a string, got 42');
  rejects(withAgent({ join_token: TOKEN.toUpperCase() }), 'config: agent.join_token: is not a join token (expected a UUID as printed by `spindle-server token generate`)');
});

// ------------------------------------------------------------------ initial trust

test('trust_bundle_path and insecure_bootstrap are mutually exclusive, wherever they come from', () => {
  const why = 'are mutually exclusive: verify the server with a trust bundle, or bootstrap without one, not both';
  rejects(withAgent({ trust_bundle_path: 'b.pem', insecure_bootstrap: true }), `config: agent.trust_bundle_path and agent.insecure_bootstrap ${why}`);
  rejects(withAgent({ insecure_bootstrap: true }), `config: -trustBundle and agent.insecure_bootstrap ${why}`, { trustBundle: 'b.pem' });
  rejects(withAgent({ trust_bundle_path: 'b.pem' }), `config: agent.trust_bundle_path and -insecureBootstrap ${why}`, { insecureBootstrap: true });
  rejects(TD, `config: -trustBundle and -insecureBootstrap ${why}`, { trustBundle: 'b.pem', insecureBootstrap: true });
  // insecure_bootstrap: false next to a bundle is fine; so is neither (the agent may have state).
  const c = parse(withAgent({ trust_bundle_path: 'b.pem', insecure_bootstrap: false }));
  assert.deepEqual([c.trustBundlePath, c.insecureBootstrap], [join(CWD, 'b.pem'), false]);
  const neither = parse(TD);
  assert.deepEqual([neither.trustBundlePath, neither.insecureBootstrap], [undefined, false]);
  const insecure = parse(withAgent({ insecure_bootstrap: 'true' }));
  assert.deepEqual([insecure.trustBundlePath, insecure.insecureBootstrap], [undefined, true]);
});

test('trust_bundle_url and -trustBundleUrl are rejected: not supported yet', () => {
  rejects(
    withAgent({ trust_bundle_url: 'https://example.org/bundle.pem' }),
    'config: agent.trust_bundle_url: is not supported yet: use trust_bundle_path or insecure_bootstrap',
  );
  rejects(TD, 'config: -trustBundleUrl: is not supported yet: use -trustBundle or -insecureBootstrap', { trustBundleUrl: 'https://example.org/b' });
  rejects(
    withAgent({ trust_bundle_unix_socket: '/tmp/web.sock' }),
    'config: agent.trust_bundle_unix_socket: is not supported yet (it goes with trust_bundle_url, which is not supported yet either)',
  );
  rejects(withAgent({ trust_bundle_format: 'spiffe' }), 'config: agent.trust_bundle_format: only "pem" is supported yet, got "spiffe"');
  assert.equal(parse(withAgent({ trust_bundle_format: 'pem' })).trustDomain, 'example.org');
});

// ------------------------------------------------------------------ agent section

test('every bad agent value names its key', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ trust_domain: 'Example.org' }, 'config: agent.trust_domain: invalid trust domain "Example.org": trust domain may contain only a-z 0-9 . - _ (uppercase letters are not allowed: "E" at index 0)'],
    [{ server_address: 'not an address!' }, 'config: agent.server_address: expected an IP address or host name, got "not an address!"'],
    // host:port is an element of the server list (agent/client/serveraddress.ts); its port is checked.
    [{ server_address: 'server:0' }, 'config: agent.server_address: bad port in "server:0": expected an integer between 1 and 65535'],
    [{ server_address: 8081 }, 'config: agent.server_address: expected a string, got 8081'],
    [{ server_port: 70000 }, 'config: agent.server_port: expected an integer between 1 and 65535, got 70000'],
    [{ server_port: 'abc' }, 'config: agent.server_port: expected an integer between 1 and 65535, got "abc"'],
    [{ socket_path: `/tmp/${'x'.repeat(120)}.sock` }, `config: agent.socket_path: Unix socket paths are limited to 107 bytes, got "/tmp/${'x'.repeat(120)}.sock" (130 bytes)`],
    [{ socket_path: ['a'] }, 'config: agent.socket_path: expected a string, got a list'],
    [{ data_dir: {} }, 'config: agent.data_dir: expected a string, got a map'],
    [{ log_level: 'TRACE' }, 'config: agent.log_level: expected one of DEBUG, INFO, WARN, ERROR, got "TRACE"'],
    [{ log_format: 'xml' }, 'config: agent.log_format: expected one of text, json, got "xml"'],
    [{ log_file: 'a\0b' }, 'config: agent.log_file: must not contain a NUL character'],
    [{ trust_bundle_path: true }, 'config: agent.trust_bundle_path: expected a string, got true'],
    [{ insecure_bootstrap: 'yes' }, 'config: agent.insecure_bootstrap: expected true or false, got "yes"'],
    [{ workload_api_max_streams_per_pid: -1 }, 'config: agent.workload_api_max_streams_per_pid: expected an integer between 0 and 1000000000, got -1'],
    [{ workload_api_max_streams_per_pid: 'many' }, 'config: agent.workload_api_max_streams_per_pid: expected an integer between 0 and 1000000000, got "many"'],
    [{ workload_api_rate_limit_per_pid: 2.5 }, 'config: agent.workload_api_rate_limit_per_pid: expected an integer between 0 and 1000000000, got 2.5'],
    [{ workload_api_rate_burst_per_pid: 0 }, 'config: agent.workload_api_rate_burst_per_pid: expected an integer between 1 and 1000000000, got 0'],
    [{ workload_api_max_streams_per_uid: '1e3' }, 'config: agent.workload_api_max_streams_per_uid: expected an integer between 0 and 1000000000, got "1e3"'],
    [{ workload_api_rate_limit_per_uid: -5 }, 'config: agent.workload_api_rate_limit_per_uid: expected an integer between 0 and 1000000000, got -5'],
    [{ workload_api_rate_burst_per_uid: 'lots' }, 'config: agent.workload_api_rate_burst_per_uid: expected an integer between 1 and 1000000000, got "lots"'],
    [{ workload_api_max_conns: -1 }, 'config: agent.workload_api_max_conns: expected an integer between 0 and 1000000000, got -1'],
    [{ workload_api_max_conns_per_pid: 'few' }, 'config: agent.workload_api_max_conns_per_pid: expected an integer between 0 and 1000000000, got "few"'],
    [{ workload_api_idle_timeout: 'soon' }, 'config: agent.workload_api_idle_timeout: expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds), got "soon"'],
    [
      { workload_api_max_conns: 100, workload_api_max_conns_per_uid: 100 },
      'config: agent.workload_api_max_conns_per_uid: must be less than agent.workload_api_max_conns (100) so that one uid cannot take every connection, got 100; lower it, or set it to 0 to disable the per-uid limit',
    ],
    [
      { workload_api_max_conns_per_uid: 9000 },
      'config: agent.workload_api_max_conns_per_uid: must be less than agent.workload_api_max_conns (8192) so that one uid cannot take every connection, got 9000; lower it, or set it to 0 to disable the per-uid limit',
    ],
  ];
  for (const [agent, problem] of cases) rejects(withAgent(agent), problem);
});

test('workload_api_* limits accept integers and digit strings; 0 disables a limit', () => {
  assert.equal(parse(withAgent({ workload_api_max_streams_per_pid: 1 })).workloadApi.maxStreamsPerPid, 1);
  assert.equal(parse(withAgent({ workload_api_max_streams_per_pid: '250' })).workloadApi.maxStreamsPerPid, 250);
  const off = parse(withAgent({ workload_api_max_streams_per_pid: 0, workload_api_rate_limit_per_pid: '0', workload_api_rate_burst_per_pid: 1 }));
  assert.deepEqual([off.workloadApi.maxStreamsPerPid, off.workloadApi.ratePerPid, off.workloadApi.burstPerPid], [0, 0, 1]);
  const uid = parse(withAgent({ workload_api_rate_limit_per_uid: 1000, workload_api_max_streams_per_uid: '400' })).workloadApi;
  assert.deepEqual([uid.ratePerUid, uid.maxStreamsPerUid, uid.burstPerUid], [1000, 400, 1000]);
  const conns = parse(withAgent({ workload_api_max_conns: 0, workload_api_max_conns_per_uid: 0, workload_api_max_conns_per_pid: '0', workload_api_idle_timeout: 0 })).workloadApi;
  assert.deepEqual([conns.maxConnections, conns.maxConnsPerUid, conns.maxConnsPerPid, conns.idleTimeoutSeconds], [0, 0, 0, 0]);
  // With the global limit off, any per-uid limit is fine; the idle timeout takes durations and seconds.
  const big = parse(withAgent({ workload_api_max_conns: 0, workload_api_max_conns_per_uid: 50000, workload_api_idle_timeout: '5m' })).workloadApi;
  assert.deepEqual([big.maxConnsPerUid, big.idleTimeoutSeconds], [50000, 300]);
  assert.equal(parse(withAgent({ workload_api_idle_timeout: 30 })).workloadApi.idleTimeoutSeconds, 30);
  // A misspelled limit key is an error naming it (not a silently ignored limit).
  const [problem, ...more] = problems(withAgent({ workload_api_rate_limit_per_process: 5 }));
  assert.match(problem ?? '', /^config: agent\.workload_api_rate_limit_per_process: unknown key/);
  assert.deepEqual(more, []);
});

test('enums are normalized and case-insensitive; IPv6 and host names are addresses', () => {
  const c = parse(withAgent({ log_level: 'warn', log_format: 'JSON', server_address: '::1' }));
  assert.deepEqual([c.logLevel, c.logFormat, c.serverAddress], ['WARN', 'json', '::1']);
  assert.equal(parse(withAgent({ server_address: 'spire-server' })).serverAddress, 'spire-server');
});

test('unknown keys are errors naming their full path', () => {
  rejects({ ...TD, agents: {} }, 'config: agents: unknown key (did you mean "agent"?)');
  rejects({ ...TD, server: { trust_domain: 'example.org' } }, 'config: server: unknown key');
  assert.deepEqual(problems({ agent: { trust_domian: 'example.org' } }), [
    'config: agent.trust_domian: unknown key (did you mean "trust_domain"?)',
    'config: trust_domain is required (set agent.trust_domain in the config file or -trustDomain)',
  ]);
  assert.deepEqual(problems({ agent: { trust_domian: 'example.org' } }, { trustDomain: 'example.org' }), [
    'config: agent.trust_domian: unknown key (did you mean "trust_domain"?)',
  ]);
  rejects(withAgent({ server_adress: 'x' }), 'config: agent.server_adress: unknown key (did you mean "server_address"?)');
  rejects(withAgent({ bind_port: 8081 }), 'config: agent.bind_port: unknown key');
  rejects({ ...TD, health_checks: { listener_enable: true } }, 'config: health_checks.listener_enable: unknown key (did you mean "listener_enabled"?)');
  rejects(
    withPlugins({ WorkloadAttestor: { unix: { plugin_dat: {} } } }),
    'config: plugins.WorkloadAttestor.unix.plugin_dat: unknown key (did you mean "plugin_data"?)',
  );
});

test('agent.sds: defaults when absent or null', () => {
  const expected = { defaultSvidName: 'default', defaultBundleName: 'ROOTCA', defaultAllBundlesName: 'ALL', disableSpiffeCertValidation: false };
  assert.deepEqual(parse(TD).sds, expected);
  assert.deepEqual(parse(withAgent({ sds: null })).sds, expected);
  assert.deepEqual(parse(withAgent({ sds: {} })).sds, expected);
  const d = AGENT_DEFAULTS.sds;
  assert.deepEqual(expected, {
    defaultSvidName: d.default_svid_name,
    defaultBundleName: d.default_bundle_name,
    defaultAllBundlesName: d.default_all_bundles_name,
    disableSpiffeCertValidation: d.disable_spiffe_cert_validation,
  });
});

test('agent.sds: each key is read', () => {
  assert.equal(parse(withAgent({ sds: { default_svid_name: 'svid' } })).sds.defaultSvidName, 'svid');
  assert.equal(parse(withAgent({ sds: { default_bundle_name: 'bundle' } })).sds.defaultBundleName, 'bundle');
  assert.equal(parse(withAgent({ sds: { default_all_bundles_name: 'everything' } })).sds.defaultAllBundlesName, 'everything');
  assert.equal(parse(withAgent({ sds: { disable_spiffe_cert_validation: true } })).sds.disableSpiffeCertValidation, true);
  assert.equal(parse(withAgent({ sds: { disable_spiffe_cert_validation: 'true' } })).sds.disableSpiffeCertValidation, true);
  assert.deepEqual(
    parse(withAgent({ sds: { default_svid_name: 'a', default_bundle_name: 'b', default_all_bundles_name: 'c', disable_spiffe_cert_validation: true } })).sds,
    { defaultSvidName: 'a', defaultBundleName: 'b', defaultAllBundlesName: 'c', disableSpiffeCertValidation: true },
  );
});

test('agent.sds: wrong types, unknown keys and empty names are errors naming agent.sds.<key>', () => {
  rejects(withAgent({ sds: { default_svid_name: 3 } }), 'config: agent.sds.default_svid_name: expected a string, got 3');
  rejects(withAgent({ sds: { default_bundle_name: ['x'] } }), 'config: agent.sds.default_bundle_name: expected a string, got a list');
  rejects(withAgent({ sds: { default_all_bundles_name: true } }), 'config: agent.sds.default_all_bundles_name: expected a string, got true');
  rejects(withAgent({ sds: { disable_spiffe_cert_validation: 'yes' } }), 'config: agent.sds.disable_spiffe_cert_validation: expected true or false, got "yes"');
  rejects(withAgent({ sds: { default_svid_nam: 'x' } }), 'config: agent.sds.default_svid_nam: unknown key (did you mean "default_svid_name"?)');
  rejects(withAgent({ sds: { default_svid_name: '' } }), 'config: agent.sds.default_svid_name: must not be empty');
  rejects(withAgent({ sds: { default_bundle_name: '  ' } }), 'config: agent.sds.default_bundle_name: must not be empty');
  rejects(withAgent({ sds: { default_all_bundles_name: '' } }), 'config: agent.sds.default_all_bundles_name: must not be empty');
  assert.equal(problems(withAgent({ sds: 'on' })).length, 1);
  assert.match(problems(withAgent({ sds: 'on' }))[0]!, /^config: agent\.sds: expected a map of settings/);
});

test('experimental and other SPIRE-only agent options are rejected by name', () => {
  rejects(withAgent({ experimental: { named_pipe_name: '\\spire-agent\\public\\api' } }), 'config: agent.experimental.named_pipe_name: unsupported experimental option (Spindle has none)');
  assert.equal(parse(withAgent({ experimental: {} })).trustDomain, 'example.org');
  rejects(withAgent({ admin_socket_path: '/tmp/admin.sock' }), 'config: agent.admin_socket_path: is not supported yet: spindle-agent has no admin API');
  rejects(withAgent({ authorized_delegates: ['spiffe://example.org/d'] }), 'config: agent.authorized_delegates: is not supported yet: spindle-agent has no Delegated Identity API');
  rejects(withAgent({ workload_x509_svid_key_type: 'rsa-2048' }), 'config: agent.workload_x509_svid_key_type: is not supported yet');
  rejects(withAgent({ profiling_enabled: true }), 'config: agent.profiling_enabled: is not supported yet');
});

// ------------------------------------------------------------------ plugins

test('unknown plugin types and names are errors listing what exists', () => {
  rejects(withPlugins({ NodeAtestor: {} }), 'config: plugins.NodeAtestor: unknown plugin type (did you mean "NodeAttestor"?); expected one of KeyManager, NodeAttestor, WorkloadAttestor');
  rejects(withPlugins({ SVIDStore: { aws_secretsmanager: {} } }), 'config: plugins.SVIDStore: plugin type is not supported yet; spindle-agent has KeyManager, NodeAttestor, WorkloadAttestor');
  rejects(withPlugins({ DataStore: { sql: {} } }), 'config: plugins.DataStore: unknown plugin type; expected one of KeyManager, NodeAttestor, WorkloadAttestor');
  rejects(withPlugins({ NodeAttestor: { aws_iid: {} } }), 'config: plugins.NodeAttestor.aws_iid: unknown NodeAttestor plugin; expected one of join_token, k8s_psat');
  rejects(
    withPlugins({ NodeAttestor: { join_tokn: {} } }),
    'config: plugins.NodeAttestor.join_tokn: unknown NodeAttestor plugin (did you mean "join_token"?); expected one of join_token, k8s_psat',
  );
  rejects(withPlugins({ WorkloadAttestor: { docker: {} } }), 'config: plugins.WorkloadAttestor.docker: unknown WorkloadAttestor plugin; expected one of unix, k8s');
  rejects(withPlugins({ KeyManager: { tpm: {} } }), 'config: plugins.KeyManager.tpm: unknown KeyManager plugin; expected one of memory, disk');
});

test('NodeAttestor k8s_psat and WorkloadAttestor k8s pass their plugin_data on to be validated by the attestor', () => {
  const c = parse(withPlugins({ NodeAttestor: { k8s_psat: { plugin_data: { cluster: 'prod' } } }, WorkloadAttestor: { k8s: { plugin_data: { node_name: 'n1' } }, unix: {} } }));
  assert.equal(c.plugins.nodeAttestor.name, 'k8s_psat');
  assert.equal(c.plugins.nodeAttestor.data.string('cluster'), 'prod');
  assert.equal(c.plugins.nodeAttestor.data.path, 'plugins.NodeAttestor.k8s_psat.plugin_data');
  assert.deepEqual(c.plugins.workloadAttestors.map((w) => w.name), ['k8s', 'unix']);
});

test('KeyManager disk (SPIRE agent.conf): accepted on the data_dir, refused elsewhere or without a directory, saying why', () => {
  // SPIRE's examples keep the agent's keys in its data_dir, which is where spindle-agent keeps its own SVID key.
  const onDataDir = parse({ agent: { trust_domain: 'example.org', data_dir: './data/agent' }, plugins: { KeyManager: { disk: { plugin_data: { directory: './data/agent' } } } } });
  assert.equal(onDataDir.dataDir, join(CWD, 'data/agent'));
  assert.equal(parse(withPlugins({ KeyManager: { disk: { plugin_data: { directory: join(CWD, '.data') } } } })).dataDir, join(CWD, '.data'), 'an absolute path to the default data_dir');
  rejects(
    withPlugins({ KeyManager: { disk: { plugin_data: { directory: './keys' } } } }),
    `config: plugins.KeyManager.disk.plugin_data.directory: must be the agent's data_dir (${join(CWD, '.data')}), got ${join(CWD, 'keys')}: spindle-agent keeps its own SVID key under data_dir and workload keys in memory; set directory to data_dir, or use KeyManager "memory"`,
  );
  rejects(
    withPlugins({ KeyManager: { disk: { plugin_data: {} } } }),
    `config: plugins.KeyManager.disk.plugin_data.directory: is required: set it to the agent's data_dir (${join(CWD, '.data')}), where spindle-agent keeps its own SVID key, or use KeyManager "memory"`,
  );
  rejects(withPlugins({ KeyManager: { disk: { plugin_data: { directory: './.data', keys_path: 'x' } } } }), 'config: plugins.KeyManager.disk.plugin_data.keys_path: unknown key');
  // -dataDir on the command line moves data_dir: the directory must follow it.
  assert.throws(() => parse({ agent: { trust_domain: 'example.org', data_dir: './data/agent' }, plugins: { KeyManager: { disk: { plugin_data: { directory: './data/agent' } } } } }, { dataDir: '/var/lib/other' }), /must be the agent's data_dir \(\/var\/lib\/other\)/);
});

test('NodeAttestor: exactly one, join_token, which takes no options', () => {
  assert.equal(parse(withPlugins({ NodeAttestor: { join_token: null } })).plugins.nodeAttestor.name, 'join_token');
  rejects(withPlugins({ NodeAttestor: { join_token: { plugin_data: { ttl: 5 } } } }), 'config: plugins.NodeAttestor.join_token.plugin_data.ttl: unknown key');
  rejects(withPlugins({ NodeAttestor: { join_token: { enabled: false } } }), 'config: plugins.NodeAttestor: exactly one NodeAttestor must be enabled, found none');
  rejects(withPlugins({ NodeAttestor: {} }), 'config: plugins.NodeAttestor: exactly one NodeAttestor must be enabled, found none');
  rejects(withPlugins({ NodeAttestor: [{ join_token: {} }, { join_token: {} }] }), 'config: plugins.NodeAttestor.join_token: configured more than once');
  rejects(withPlugins({ NodeAttestor: 'join_token' }), 'config: plugins.NodeAttestor: expected a map of plugin name to plugin settings, got "join_token"');
  rejects(withPlugins({ NodeAttestor: ['join_token'] }), 'config: plugins.NodeAttestor[0]: expected a map of plugin name to plugin settings, got "join_token"');
  rejects(
    withPlugins({ NodeAttestor: { join_token: { plugin_cmd: '/usr/bin/x' } } }),
    'config: plugins.NodeAttestor.join_token.plugin_cmd: external plugins are not supported; Spindle plugins are built in',
  );
});

test('WorkloadAttestor unix: plugin_data is passed through for the attestor to validate', () => {
  const c = parse(withPlugins({ WorkloadAttestor: { unix: { plugin_data: { discover_workload_path: true, workload_size_limit: 'big', bogus: 1 } } } }));
  const [unix] = c.plugins.workloadAttestors;
  assert.equal(unix?.name, 'unix');
  assert.deepEqual(unix.data.value, { discover_workload_path: true, workload_size_limit: 'big', bogus: 1 });
  // The attestor reads what it knows; the rest is reported with the full path.
  unix.data.bool('discover_workload_path', false);
  unix.data.int('workload_size_limit', { default: 0 });
  assert.throws(() => unix.data.throwIfInvalid(), (err: unknown) => {
    assert.ok(isConfigError(err));
    assert.deepEqual(err.problems, [
      'config: plugins.WorkloadAttestor.unix.plugin_data.bogus: unknown key',
      'config: plugins.WorkloadAttestor.unix.plugin_data.workload_size_limit: expected an integer, got "big"',
    ]);
    return true;
  });
  // No WorkloadAttestor section: unix with no options. A section with none enabled: an error.
  assert.deepEqual(parse(withPlugins({})).plugins.workloadAttestors.map((a) => [a.name, a.data.value]), [['unix', {}]]);
  rejects(withPlugins({ WorkloadAttestor: { unix: { enabled: false } } }), 'config: plugins.WorkloadAttestor: at least one WorkloadAttestor must be enabled');
  rejects(withPlugins({ WorkloadAttestor: { unix: { plugin_data: [1] } } }), 'config: plugins.WorkloadAttestor.unix.plugin_data: expected a map of plugin settings, got a list');
});

test('KeyManager: optional; memory takes no options', () => {
  assert.equal(parse(withPlugins({ KeyManager: { memory: {} } })).trustDomain, 'example.org');
  assert.equal(parse(withPlugins({ KeyManager: { memory: { plugin_data: {} } } })).trustDomain, 'example.org');
  rejects(withPlugins({ KeyManager: { memory: { plugin_data: { directory: 'k' } } } }), 'config: plugins.KeyManager.memory.plugin_data.directory: unknown key');
  rejects(withPlugins({ KeyManager: { memory: { enabled: false } } }), 'config: plugins.KeyManager: exactly one KeyManager must be enabled, found none');
});

test('the HCL-to-JSON list shape for plugins parses like the map shape', () => {
  const asMap = withPlugins({
    NodeAttestor: { join_token: { plugin_data: {} } },
    WorkloadAttestor: { unix: { plugin_data: { discover_workload_path: true } } },
    KeyManager: { memory: { plugin_data: {} } },
  });
  const asList = {
    agent: [{ trust_domain: 'example.org' }],
    plugins: [
      {
        NodeAttestor: [{ join_token: [{ plugin_data: [{}] }] }],
        WorkloadAttestor: [{ unix: [{ plugin_data: [{ discover_workload_path: true }] }] }],
        KeyManager: [{ memory: [{}] }],
      },
    ],
  };
  assert.deepEqual(plain(parse(asList)), plain(parse(asMap)));
  assert.deepEqual(plain(parse(asMap)), plain(parse(withPlugins({ WorkloadAttestor: { unix: { plugin_data: { discover_workload_path: true } } } }))));
});

// ------------------------------------------------------------------ health_checks, telemetry

test('health_checks values are validated by key', () => {
  rejects({ ...TD, health_checks: { bind_port: 70000 } }, 'config: health_checks.bind_port: expected an integer between 1 and 65535, got 70000');
  rejects({ ...TD, health_checks: { live_path: 'live' } }, 'config: health_checks.live_path: expected an HTTP path starting with "/" (no spaces, "?" or "#"), got "live"');
  rejects({ ...TD, health_checks: { live_path: '/x', ready_path: '/x' } }, 'config: health_checks.ready_path: must differ from health_checks.live_path, got "/x"');
  rejects({ ...TD, health_checks: { listener_enabled: 1 } }, 'config: health_checks.listener_enabled: expected true or false, got 1');
  rejects({ ...TD, health_checks: { bind_address: 'a b' } }, 'config: health_checks.bind_address: expected an IP address or host name, got "a b"');
});

test('telemetry: Prometheus needs a port; other sinks are rejected', () => {
  assert.deepEqual(parse({ ...TD, telemetry: { Prometheus: { port: '9988' } } }).telemetry, { prometheus: { host: 'localhost', port: 9988 } });
  rejects({ ...TD, telemetry: { Prometheus: {} } }, 'config: telemetry.Prometheus.port: is required when telemetry.Prometheus is set');
  rejects({ ...TD, telemetry: { Statsd: [{ address: 'localhost:8125' }] } }, 'config: telemetry.Statsd: is not supported yet; Spindle exports telemetry to Prometheus only');
  rejects({ ...TD, telemetry: { Prometheus: { port: 9988, path: '/m' } } }, 'config: telemetry.Prometheus.path: unknown key');
  assert.deepEqual(parse({ ...TD, telemetry: null }).telemetry, {});
});

// ------------------------------------------------------------------ all at once

test('multiple problems are reported together, unknown keys first', () => {
  assert.deepEqual(
    problems(
      {
        agent: { trust_domian: 'example.org', server_port: 'abc', log_level: 'verbose', trust_bundle_path: 'b.pem', insecure_bootstrap: true, sds: { default_svid_name: '' } },
        plugins: { NodeAttestor: { aws_iid: {} }, KeyManager: { disk: {} } },
        extra: true,
      },
      { trustBundleUrl: 'https://x' },
    ),
    [
      'config: extra: unknown key',
      'config: agent.trust_domian: unknown key (did you mean "trust_domain"?)',
      'config: trust_domain is required (set agent.trust_domain in the config file or -trustDomain)',
      'config: agent.server_port: expected an integer between 1 and 65535, got "abc"',
      'config: agent.log_level: expected one of DEBUG, INFO, WARN, ERROR, got "verbose"',
      'config: agent.trust_bundle_path and agent.insecure_bootstrap are mutually exclusive: verify the server with a trust bundle, or bootstrap without one, not both',
      'config: agent.sds.default_svid_name: must not be empty',
      'config: plugins.NodeAttestor.aws_iid: unknown NodeAttestor plugin; expected one of join_token, k8s_psat',
      `config: plugins.KeyManager.disk.plugin_data.directory: is required: set it to the agent's data_dir (${join(CWD, '.data')}), where spindle-agent keeps its own SVID key, or use KeyManager "memory"`,
      // Flag problems come after the file's, as in the server's config.
      'config: -trustBundleUrl: is not supported yet: use -trustBundle or -insecureBootstrap',
    ],
  );
});

test('the root of the file must be a map', () => {
  assert.deepEqual(problems([1, 2]), [
    'config: expected a map of settings, got a list',
    'config: trust_domain is required (set agent.trust_domain in the config file or -trustDomain)',
  ]);
  rejects([1, 2], 'config: expected a map of settings, got a list', { trustDomain: 'example.org' });
  assert.equal(parse(null, { trustDomain: 'example.org' }).trustDomain, 'example.org');
});

// ------------------------------------------------------------------ SPIRE's own HCL files

test("SPIRE's agent.conf (HCL) loads unchanged, to the same config as YAML (KeyManager disk on data_dir, or memory); a disk directory elsewhere gets the same message", (t) => {
  const dir = tempDir(t);
  const load = (name: string, text: string): AgentConfig => {
    writeFileSync(join(dir, name), text);
    return loadAgentConfig({ configPath: name, cwd: dir });
  };
  const problemsIn = (name: string, text: string): string[] => {
    try {
      load(name, text);
    } catch (err) {
      assert.ok(isConfigError(err));
      return err.problems;
    }
    return assert.fail(`${name} should not validate`);
  };
  // SPIRE's quickstart file as shipped (KeyManager "disk" in its data_dir) loads as its YAML twin does.
  const shipped = load('agent.conf', SPIRE_AGENT_CONF);
  assert.deepEqual(plain(shipped), { ...(plain(load('agent.yaml', SPIRE_AGENT_YAML)) as object), configPath: join(dir, 'agent.conf') });
  assert.equal(shipped.dataDir, join(dir, '.data'));
  // The keys in another directory: refused, in the same words in HCL and YAML.
  const elsewhere = problemsIn('agent-keys.conf', SPIRE_AGENT_CONF.replace('directory = "./.data"', 'directory = "./keys"'));
  assert.deepEqual(elsewhere, [
    `config: plugins.KeyManager.disk.plugin_data.directory: must be the agent's data_dir (${join(dir, '.data')}), got ${join(dir, 'keys')}: spindle-agent keeps its own SVID key under data_dir and workload keys in memory; set directory to data_dir, or use KeyManager "memory"`,
  ]);
  assert.deepEqual(elsewhere, problemsIn('agent-keys.yaml', SPIRE_AGENT_YAML.replace('directory: ./.data', 'directory: ./keys')));
  // With KeyManager "memory" it validates, to exactly what the YAML gives.
  const memHcl = SPIRE_AGENT_CONF.replace(/KeyManager "disk" \{[^}]*\}\s*\}/, 'KeyManager "memory" {\n        plugin_data {}\n    }');
  const memYaml = SPIRE_AGENT_YAML.replace(/ {4}disk:\n.*\n.*directory.*\n/, '    memory:\n      plugin_data: {}\n');
  assert.notEqual(memHcl, SPIRE_AGENT_CONF);
  assert.notEqual(memYaml, SPIRE_AGENT_YAML);
  const hcl = load('agent-mem.conf', memHcl);
  const yaml = load('agent-mem.yaml', memYaml);
  assert.deepEqual(plain(hcl), { ...(plain(yaml) as object), configPath: join(dir, 'agent-mem.conf') });
  assert.equal(hcl.trustDomain, 'example.org');
  assert.equal(hcl.serverPort, 8081);
  assert.equal(hcl.socketPath, '/tmp/spire-agent/public/api.sock');
});

test('an unknown key in an HCL agent.conf gets the same message as in YAML', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'agent.conf'), SPIRE_AGENT_CONF.replace('server_address = ', 'server_adress = ').replace('KeyManager "disk"', 'KeyManager "memory"').replace(/directory = .*\n/, ''));
  writeFileSync(join(dir, 'agent.yaml'), SPIRE_AGENT_YAML.replace('server_address: ', 'server_adress: ').replace('    disk:\n', '    memory:\n').replace(/ {8}directory: .*\n/, '').replace('      plugin_data:\n  WorkloadAttestor', '      plugin_data: {}\n  WorkloadAttestor'));
  const problemsIn = (file: string): string[] => {
    try {
      loadAgentConfig({ configPath: file, cwd: dir });
    } catch (err) {
      assert.ok(isConfigError(err));
      return err.problems;
    }
    return assert.fail(`${file} should not validate`);
  };
  const fromHcl = problemsIn('agent.conf');
  assert.deepEqual(fromHcl, ['config: agent.server_adress: unknown key (did you mean "server_address"?)']);
  assert.deepEqual(fromHcl, problemsIn('agent.yaml'));
});

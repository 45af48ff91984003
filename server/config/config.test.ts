import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { isConfigError } from '../../common/configfile.js';
import { parseDuration } from '../../common/duration.js';
import { SPIRE_SERVER_CONF, SPIRE_SERVER_YAML } from '../../test/support/spireconf.js';
import { SERVER_DEFAULTS, loadServerConfig, parseServerConfig, type ServerConfig, type ServerFlags } from './config.js';

const CWD = '/srv/spindle';
const EXAMPLE = fileURLToPath(new URL('../../../server/config/server.example.yaml', import.meta.url));

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-server-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The config with each node attestor's reader replaced by its raw data, for comparing. */
function plain(c: ServerConfig): unknown {
  return { ...c, plugins: { ...c.plugins, nodeAttestors: c.plugins.nodeAttestors.map((a) => ({ name: a.name, data: a.data.value })) } };
}

function parse(raw: unknown, flags: ServerFlags = {}): ServerConfig {
  return parseServerConfig(raw, flags, { cwd: CWD });
}

function problems(raw: unknown, flags: ServerFlags = {}): string[] {
  try {
    parse(raw, flags);
  } catch (err) {
    assert.ok(isConfigError(err), String(err));
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

/** Asserts the config is rejected with exactly this one problem. */
function rejects(raw: unknown, problem: string, flags: ServerFlags = {}): void {
  assert.deepEqual(problems(raw, flags), [problem]);
}

const TD = { server: { trust_domain: 'example.org' } };
const withServer = (extra: Record<string, unknown>) => ({ server: { trust_domain: 'example.org', ...extra } });
const withPlugins = (plugins: Record<string, unknown>) => ({ ...TD, plugins });

const FULL_YAML = `# A SPIRE server.conf, as YAML
server:
  bind_address: 127.0.0.1
  bind_port: "8081"
  socket_path: /run/spindle/server.sock
  trust_domain: example.org
  data_dir: /var/lib/spindle
  log_level: debug
  log_format: JSON
  log_file: /var/log/spindle.log
  default_x509_svid_ttl: 2h
  default_jwt_svid_ttl: 10m
  agent_ttl: 4h
  ca_ttl: 168h
  ca_key_type: ec-p384
  jwt_key_type: rsa-2048
  jwt_issuer: https://oidc.example.org
  audit_log_enabled: true
  ca_subject:
    country: [DE]
    organization: [Example Corp]
    common_name: Example CA

plugins:
  DataStore:
    sql:
      plugin_data:
        database_type: sqlite3
        connection_string: /var/lib/spindle/db.sqlite3
  KeyManager:
    disk:
      plugin_data:
        keys_path: /var/lib/spindle/keys
  NodeAttestor:
    join_token:
      plugin_data: {}
    k8s_psat:
      plugin_data:
        clusters:
          prod:
            service_account_allow_list: ["spire:spire-agent"]
  UpstreamAuthority:
    disk:
      plugin_data:
        key_file_path: ./upstream/ca.key
        cert_file_path: ./upstream/ca.crt
        bundle_file_path: ./upstream/roots.crt

health_checks:
  listener_enabled: true
  bind_address: 0.0.0.0
  bind_port: "8080"
  live_path: /healthz/live
  ready_path: /healthz/ready

telemetry:
  Prometheus:
    port: 9988
`;

const FULL_EXPECTED: unknown = {
  trustDomain: 'example.org',
  bindAddress: '127.0.0.1',
  bindPort: 8081,
  socketPath: '/run/spindle/server.sock',
  dataDir: '/var/lib/spindle',
  logLevel: 'DEBUG',
  logFormat: 'json',
  logFile: '/var/log/spindle.log',
  defaultX509SvidTtl: 7200,
  defaultJwtSvidTtl: 600,
  agentTtl: 14400,
  caTtl: 604800,
  caKeyType: 'ec-p384',
  jwtKeyType: 'rsa-2048',
  caSubject: { country: ['DE'], organization: ['Example Corp'], commonName: 'Example CA' },
  jwtIssuer: 'https://oidc.example.org',
  auditLogEnabled: true,
  plugins: {
    nodeAttestors: [
      { name: 'join_token', data: {} },
      { name: 'k8s_psat', data: { clusters: { prod: { service_account_allow_list: ['spire:spire-agent'] } } } },
    ],
    keyManager: { name: 'disk', keysPath: '/var/lib/spindle/keys' },
    upstreamAuthority: {
      name: 'disk',
      keyFilePath: `${CWD}/upstream/ca.key`,
      certFilePath: `${CWD}/upstream/ca.crt`,
      bundleFilePath: `${CWD}/upstream/roots.crt`,
    },
    dataStore: { name: 'sql', databaseType: 'sqlite3', connectionString: '/var/lib/spindle/db.sqlite3' },
  },
  healthChecks: { listenerEnabled: true, bindAddress: '0.0.0.0', bindPort: 8080, livePath: '/healthz/live', readyPath: '/healthz/ready' },
  telemetry: { prometheus: { host: 'localhost', port: 9988 } },
  federatesWith: [],
};

// ------------------------------------------------------------------ whole files

test('a full SPIRE-style YAML file and the same in JSON parse to equal configs', (t) => {
  const dir = tempDir(t);
  const yamlPath = join(dir, 'server.yaml');
  const jsonPath = join(dir, 'server.json');
  const confPath = join(dir, 'server.conf');
  writeFileSync(yamlPath, FULL_YAML);
  writeFileSync(jsonPath, JSON.stringify(parseYaml(FULL_YAML), null, 2));
  writeFileSync(confPath, JSON.stringify(parseYaml(FULL_YAML)));
  const fromYaml = loadServerConfig({ configPath: yamlPath, cwd: CWD });
  const fromJson = loadServerConfig({ configPath: jsonPath, cwd: CWD });
  const fromConf = loadServerConfig({ flags: { config: confPath }, cwd: CWD });
  assert.deepEqual(plain(fromYaml), { configPath: yamlPath, ...(FULL_EXPECTED as object) });
  assert.deepEqual(plain(fromJson), { ...(plain(fromYaml) as object), configPath: jsonPath });
  assert.deepEqual(plain(fromConf), { ...(plain(fromYaml) as object), configPath: confPath });
});

test('the config path itself resolves against cwd', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'server.yaml'), 'server:\n  trust_domain: example.org\n  data_dir: data\n');
  const c = loadServerConfig({ configPath: 'server.yaml', cwd: dir });
  assert.equal(c.configPath, join(dir, 'server.yaml'));
  assert.equal(c.dataDir, join(dir, 'data'), 'relative paths follow cwd, as in SPIRE');
});

test('file errors from loadServerConfig are ConfigErrors naming the file', (t) => {
  const dir = tempDir(t);
  assert.throws(() => loadServerConfig({ configPath: 'missing.yaml', cwd: dir }), (err: unknown) => {
    assert.ok(isConfigError(err));
    assert.deepEqual(err.problems, [`config: cannot read config file ${join(dir, 'missing.yaml')}: file not found`]);
    return true;
  });
  writeFileSync(join(dir, 'bad.yaml'), 'server:\n  trust_domain: [\n');
  assert.throws(() => loadServerConfig({ configPath: 'bad.yaml', cwd: dir }), /bad\.yaml:\d+:\d+: invalid YAML/);
});

test('the annotated example file loads, and shows exactly the defaults', () => {
  const fromExample = loadServerConfig({ configPath: EXAMPLE, cwd: CWD });
  const fromDefaults = parseServerConfig({}, { trustDomain: 'example.org' }, { cwd: CWD });
  assert.deepEqual(plain(fromExample), { ...(plain(fromDefaults) as object), configPath: EXAMPLE });
});

test('the example file mentions every key the parser knows', () => {
  const text = readFileSync(EXAMPLE, 'utf8');
  const keys = [
    ...Object.keys(SERVER_DEFAULTS.server),
    ...Object.keys(SERVER_DEFAULTS.server.ca_subject),
    ...Object.keys(SERVER_DEFAULTS.health_checks),
    'trust_domain', 'log_file', 'agent_ttl', 'jwt_key_type', 'jwt_issuer',
    'NodeAttestor', 'join_token', 'k8s_psat', 'enabled', 'KeyManager', 'disk', 'keys_path', 'memory',
    'UpstreamAuthority', 'key_file_path', 'cert_file_path', 'bundle_file_path',
    'DataStore', 'sql', 'database_type', 'connection_string', 'telemetry', 'Prometheus', 'host', 'port',
    'federation', 'bundle_endpoint', 'address', 'refresh_hint', 'profile', 'https_spiffe', 'https_web',
    'serving_cert_file', 'file_sync_interval',
  ];
  for (const key of keys) assert.match(text, new RegExp(`(^|\\s|#\\s*)${key}:`, 'm'), key);
});

test('SERVER_DEFAULTS is what a flags-only config gets', () => {
  const c = parse({}, { trustDomain: 'example.org' });
  const d = SERVER_DEFAULTS.server;
  assert.equal(c.bindAddress, d.bind_address);
  assert.equal(c.bindPort, d.bind_port);
  assert.equal(c.socketPath, d.socket_path);
  assert.equal(c.dataDir, join(CWD, d.data_dir));
  assert.equal(c.logLevel, d.log_level);
  assert.equal(c.logFormat, d.log_format);
  assert.equal(c.defaultX509SvidTtl, d.default_x509_svid_ttl);
  assert.equal(c.defaultX509SvidTtl, parseDuration('1h', 'x'));
  assert.equal(c.defaultJwtSvidTtl, d.default_jwt_svid_ttl);
  assert.equal(c.defaultJwtSvidTtl, parseDuration('5m', 'x'));
  assert.equal(c.caTtl, d.ca_ttl);
  assert.equal(c.caTtl, parseDuration('24h', 'x'));
  assert.equal(c.agentTtl, d.default_x509_svid_ttl);
  assert.equal(c.caKeyType, d.ca_key_type);
  assert.equal(c.jwtKeyType, d.ca_key_type);
  assert.deepEqual(c.caSubject, { country: ['US'], organization: ['SPIFFE'], commonName: '' });
  assert.equal(c.auditLogEnabled, false);
  assert.equal(c.logFile, undefined);
  assert.equal(c.jwtIssuer, undefined);
  assert.equal(c.configPath, undefined);
  assert.deepEqual(
    c.plugins.nodeAttestors.map((a) => a.name),
    ['join_token'],
  );
  assert.deepEqual(c.plugins.keyManager, { name: 'disk', keysPath: join(CWD, '.data', 'keys') });
  assert.equal(c.plugins.upstreamAuthority, undefined);
  assert.deepEqual(c.plugins.dataStore, { name: 'sql', databaseType: 'sqlite3', connectionString: join(CWD, '.data', 'datastore.sqlite3') });
  assert.deepEqual(c.healthChecks, { listenerEnabled: false, bindAddress: 'localhost', bindPort: 80, livePath: '/live', readyPath: '/ready' });
  assert.deepEqual(c.telemetry, {});
});

// ------------------------------------------------------------------ flags

test('flags alone are a complete config (no file at all)', () => {
  const c = loadServerConfig({ flags: { trustDomain: 'example.org', dataDir: 'state', serverPort: '9000' }, cwd: CWD });
  assert.equal(c.trustDomain, 'example.org');
  assert.equal(c.dataDir, join(CWD, 'state'));
  assert.equal(c.bindPort, 9000);
  assert.equal(c.plugins.dataStore.connectionString, join(CWD, 'state', 'datastore.sqlite3'), 'defaults follow -dataDir');
  assert.deepEqual(c.plugins.keyManager, { name: 'disk', keysPath: join(CWD, 'state', 'keys') });
});

test('without a trust domain anywhere, the error says where to set it', () => {
  rejects({}, 'config: trust_domain is required (set server.trust_domain in the config file or -trustDomain)');
  rejects({ server: { trust_domain: '' } }, 'config: trust_domain is required (set server.trust_domain in the config file or -trustDomain)');
  assert.throws(() => loadServerConfig({ cwd: CWD }), /trust_domain is required \(set server\.trust_domain in the config file or -trustDomain\)/);
});

test('flags override file values', () => {
  const file = withServer({
    bind_address: '10.0.0.1',
    bind_port: 8081,
    socket_path: '/run/a.sock',
    data_dir: '/var/a',
    log_level: 'INFO',
    log_format: 'text',
    log_file: '/var/log/a.log',
  });
  const flags: ServerFlags = {
    trustDomain: 'other.test',
    bindAddress: '10.0.0.2',
    serverPort: '9090',
    socketPath: 'b.sock',
    dataDir: 'b',
    logLevel: 'warn',
    logFormat: 'json',
    logFile: 'b.log',
  };
  const c = parse(file, flags);
  assert.equal(c.trustDomain, 'other.test');
  assert.equal(c.bindAddress, '10.0.0.2');
  assert.equal(c.bindPort, 9090);
  assert.equal(c.socketPath, join(CWD, 'b.sock'));
  assert.equal(c.dataDir, join(CWD, 'b'));
  assert.equal(c.logLevel, 'WARN');
  assert.equal(c.logFormat, 'json');
  assert.equal(c.logFile, join(CWD, 'b.log'));
  // Unset flags leave the file's values alone.
  const d = parse(file, { logLevel: undefined, serverPort: 7000 });
  assert.equal(d.logLevel, 'INFO');
  assert.equal(d.bindPort, 7000);
  assert.equal(d.bindAddress, '10.0.0.1');
});

test('bad flag values name the flag', () => {
  assert.deepEqual(problems(TD, { serverPort: 'abc', logLevel: 'loud', trustDomain: 'Bad.Domain' }), [
    'config: -trustDomain: invalid trust domain "Bad.Domain": trust domain may contain only a-z 0-9 . - _ (uppercase letters are not allowed: "B" at index 0)',
    'config: -serverPort: expected an integer between 1 and 65535, got "abc"',
    'config: -logLevel: expected one of DEBUG, INFO, WARN, ERROR, got "loud"',
  ]);
});

test('-expandEnv expands $VAR in the file from the env passed in', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'server.yaml');
  writeFileSync(path, 'server:\n  trust_domain: ${TD}\n  data_dir: $STATE/spindle\n');
  const c = loadServerConfig({ configPath: path, flags: { expandEnv: true }, env: { TD: 'example.org', STATE: '/var/lib' }, cwd: CWD });
  assert.equal(c.trustDomain, 'example.org');
  assert.equal(c.dataDir, '/var/lib/spindle');
  // Without the flag the text is taken literally.
  assert.throws(
    () => loadServerConfig({ configPath: path, env: { TD: 'example.org' }, cwd: CWD }),
    /config: server\.trust_domain: invalid trust domain "\$\{TD\}"/,
  );
  assert.throws(() => loadServerConfig({ configPath: path, flags: { expandEnv: true }, cwd: CWD }), TypeError);
});

test('cwd must be absolute', () => {
  assert.throws(() => parseServerConfig(TD, {}, { cwd: 'relative' }), TypeError);
});

// ------------------------------------------------------------------ server section

test('enums are normalized and case-insensitive', () => {
  const c = parse(withServer({ log_level: 'warn', log_format: 'JSON', ca_key_type: 'RSA-4096' }));
  assert.equal(c.logLevel, 'WARN');
  assert.equal(c.logFormat, 'json');
  assert.equal(c.caKeyType, 'rsa-4096');
  assert.equal(c.jwtKeyType, 'rsa-4096', 'jwt_key_type defaults to ca_key_type');
});

test('durations accept Go syntax and whole seconds', () => {
  const c = parse(withServer({ default_x509_svid_ttl: '1h30m', default_jwt_svid_ttl: 120, ca_ttl: '48h' }));
  assert.equal(c.defaultX509SvidTtl, 5400);
  assert.equal(c.defaultJwtSvidTtl, 120);
  assert.equal(c.caTtl, 172800);
  assert.equal(c.agentTtl, 5400, 'agent_ttl defaults to default_x509_svid_ttl');
});

test('ca_subject fields default one by one', () => {
  assert.deepEqual(parse(withServer({ ca_subject: { common_name: 'CA' } })).caSubject, {
    country: ['US'],
    organization: ['SPIFFE'],
    commonName: 'CA',
  });
  assert.deepEqual(parse(withServer({ ca_subject: { country: [], organization: ['O'] } })).caSubject, {
    country: [],
    organization: ['O'],
    commonName: '',
  });
});

test('trust_domain accepts the spiffe:// form and rejects bad domains by key', () => {
  assert.equal(parse(withServer({ trust_domain: 'spiffe://example.org' })).trustDomain, 'example.org');
  const [p] = problems({ server: { trust_domain: 'exa mple.org' } });
  assert.match(p!, /^config: server\.trust_domain: invalid trust domain "exa mple\.org": /);
});

test('every bad value names its key', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ bind_port: 70000 }, 'config: server.bind_port: expected an integer between 1 and 65535, got 70000'],
    [{ bind_port: 'abc' }, 'config: server.bind_port: expected an integer between 1 and 65535, got "abc"'],
    [{ bind_port: 0 }, 'config: server.bind_port: expected an integer between 1 and 65535, got 0'],
    [{ bind_address: 'not an address!' }, 'config: server.bind_address: expected an IP address or host name, got "not an address!"'],
    [{ ca_ttl: 'forever' }, 'config: server.ca_ttl: expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds), got "forever"'],
    [{ default_x509_svid_ttl: '500ms' }, 'config: server.default_x509_svid_ttl: must be a whole number of seconds, got "500ms"'],
    [{ default_jwt_svid_ttl: '0s' }, 'config: server.default_jwt_svid_ttl: must be at least 1s, got "0s"'],
    [{ ca_ttl: '1m' }, 'config: server.ca_ttl: must be at least 2m, got "1m"'],
    [{ ca_key_type: 'ec-p521' }, 'config: server.ca_key_type: expected one of ec-p256, ec-p384, rsa-2048, rsa-4096, got "ec-p521"'],
    [{ jwt_key_type: 'ed25519' }, 'config: server.jwt_key_type: expected one of ec-p256, ec-p384, rsa-2048, rsa-4096, got "ed25519"'],
    [{ log_level: 'TRACE' }, 'config: server.log_level: expected one of DEBUG, INFO, WARN, ERROR, got "TRACE"'],
    [{ log_format: 'xml' }, 'config: server.log_format: expected one of text, json, got "xml"'],
    [{ audit_log_enabled: 'yes' }, 'config: server.audit_log_enabled: expected true or false, got "yes"'],
    [{ ca_subject: { country: 'US' } }, 'config: server.ca_subject.country: expected a list of strings, got "US"'],
    [{ ca_subject: { organization: ['A', 1] } }, 'config: server.ca_subject.organization[1]: expected a string, got 1'],
    [{ jwt_issuer: 42 }, 'config: server.jwt_issuer: expected a string, got 42'],
    [{ jwt_issuer: 'oidc.example.org' }, 'config: server.jwt_issuer: must be an absolute URL such as https://oidc.example.org, got "oidc.example.org"'],
    [{ jwt_issuer: 'spiffe://example.org' }, 'config: server.jwt_issuer: must be an https (or http) URL, got scheme "spiffe" in "spiffe://example.org"'],
    [{ jwt_issuer: 'https://oidc.example.org/?a=1' }, 'config: server.jwt_issuer: must not have a query (OpenID Connect Discovery forbids it), got "https://oidc.example.org/?a=1"'],
    [{ jwt_issuer: 'https://oidc.example.org/#x' }, 'config: server.jwt_issuer: must not have a fragment (OpenID Connect Discovery forbids it), got "https://oidc.example.org/#x"'],
    [{ jwt_issuer: 'https://user@oidc.example.org' }, 'config: server.jwt_issuer: must not carry user information, got "https://user@oidc.example.org"'],
    [{ socket_path: `/tmp/${'x'.repeat(120)}.sock` }, `config: server.socket_path: Unix socket paths are limited to 107 bytes, got "/tmp/${'x'.repeat(120)}.sock" (130 bytes)`],
  ];
  for (const [server, problem] of cases) rejects(withServer(server), problem);
});

test('unknown keys are errors naming their full path', () => {
  rejects({ ...TD, servr: {} }, 'config: servr: unknown key (did you mean "server"?)');
  rejects({ ...TD, bogus: {} }, 'config: bogus: unknown key');
  assert.deepEqual(problems({ server: { trust_domian: 'example.org' } }), [
    'config: server.trust_domian: unknown key (did you mean "trust_domain"?)',
    'config: trust_domain is required (set server.trust_domain in the config file or -trustDomain)',
  ]);
  assert.deepEqual(problems({ server: { trust_domian: 'example.org' } }, { trustDomain: 'example.org' }), [
    'config: server.trust_domian: unknown key (did you mean "trust_domain"?)',
  ]);
  rejects(withServer({ ca_subject: { common_nam: 'x' } }), 'config: server.ca_subject.common_nam: unknown key (did you mean "common_name"?)');
  rejects({ ...TD, health_checks: { listener_enable: true } }, 'config: health_checks.listener_enable: unknown key (did you mean "listener_enabled"?)');
});

test('agent_ttl, default_x509_svid_ttl and default_jwt_svid_ttl must not exceed ca_ttl', () => {
  rejects(
    withServer({ agent_ttl: '48h' }),
    'config: server.agent_ttl: must not be longer than server.ca_ttl (24h): an SVID cannot outlive the CA that signs it, got "48h"',
  );
  rejects(
    withServer({ ca_ttl: '2h', default_x509_svid_ttl: '3h' }),
    'config: server.default_x509_svid_ttl: must not be longer than server.ca_ttl (2h): an SVID cannot outlive the CA that signs it, got "3h"',
  );
  rejects(
    withServer({ ca_ttl: '2m', default_x509_svid_ttl: '1m', default_jwt_svid_ttl: '5m' }),
    'config: server.default_jwt_svid_ttl: must not be longer than server.ca_ttl (2m): an SVID cannot outlive the CA that signs it, got "5m"',
  );
  // Defaults count: a ca_ttl below the default SVID TTLs is reported on those keys.
  assert.deepEqual(problems(withServer({ ca_ttl: '3m' })), [
    'config: server.default_x509_svid_ttl: must not be longer than server.ca_ttl (3m): an SVID cannot outlive the CA that signs it; its default is 1h, so set it lower or raise ca_ttl',
    'config: server.default_jwt_svid_ttl: must not be longer than server.ca_ttl (3m): an SVID cannot outlive the CA that signs it; its default is 5m, so set it lower or raise ca_ttl',
  ]);
  const short = parse(withServer({ ca_ttl: '30m', default_x509_svid_ttl: '10m' }));
  assert.deepEqual([short.caTtl, short.defaultX509SvidTtl, short.agentTtl, short.defaultJwtSvidTtl], [1800, 600, 600, 300]);
  // Equal is fine; an invalid ca_ttl does not add comparison noise.
  assert.equal(parse(withServer({ ca_ttl: '1h', agent_ttl: '1h' })).agentTtl, 3600);
  rejects(withServer({ ca_ttl: 'bad', agent_ttl: '48h' }), 'config: server.ca_ttl: expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds), got "bad"');
});

test('federation.federates_with: static federation relationships in SPIRE\'s shape (HCL blocks and YAML maps)', (t) => {
  const dir = tempDir(t);
  const conf = join(dir, 'server.conf');
  writeFileSync(
    conf,
    `server {
  trust_domain = "example.org"
  federation {
    federates_with "partner.example" {
      bundle_endpoint_url = "https://spire.partner.example:8443"
      bundle_endpoint_profile "https_spiffe" {
        endpoint_spiffe_id = "spiffe://partner.example/spire/server"
      }
    }
    federates_with "web.example" {
      bundle_endpoint_url = "https://bundle.web.example/bundle.json"
      bundle_endpoint_profile "https_web" {}
    }
  }
}
`,
  );
  const expected = [
    { trustDomain: 'partner.example', bundleEndpointUrl: 'https://spire.partner.example:8443', bundleEndpointProfile: 'https_spiffe', endpointSpiffeId: 'spiffe://partner.example/spire/server' },
    { trustDomain: 'web.example', bundleEndpointUrl: 'https://bundle.web.example/bundle.json', bundleEndpointProfile: 'https_web', endpointSpiffeId: '' },
  ];
  assert.deepEqual(loadServerConfig({ configPath: conf, cwd: CWD }).federatesWith, expected);
  const yaml = withServer({
    federation: {
      federates_with: {
        'web.example': { bundle_endpoint_url: 'https://bundle.web.example/bundle.json', bundle_endpoint_profile: { https_web: {} } },
        'partner.example': {
          bundle_endpoint_url: 'https://spire.partner.example:8443',
          bundle_endpoint_profile: { https_spiffe: { endpoint_spiffe_id: 'spiffe://partner.example/spire/server' } },
        },
      },
    },
  });
  assert.deepEqual(parse(yaml).federatesWith, expected, 'sorted by trust domain');
  assert.deepEqual(parse(TD).federatesWith, []);
});

test('federation.federates_with: each mistake is named', () => {
  const fw = (blocks: Record<string, unknown>) => withServer({ federation: { federates_with: blocks } });
  const web = { bundle_endpoint_profile: { https_web: {} } };
  rejects(fw({ 'a.example': { ...web } }), 'config: server.federation.federates_with.a.example.bundle_endpoint_url: is required');
  rejects(fw({ 'a.example': { ...web, bundle_endpoint_url: 'http://a.example/' } }), 'config: server.federation.federates_with.a.example.bundle_endpoint_url: must be an https URL, got "http://a.example/"');
  rejects(fw({ 'Not A Domain': { ...web, bundle_endpoint_url: 'https://a/' } }), 'config: server.federation.federates_with.Not A Domain: invalid trust domain "Not A Domain": trust domain may contain only a-z 0-9 . - _ (uppercase letters are not allowed: "N" at index 0)');
  rejects(fw({ 'example.org': { ...web, bundle_endpoint_url: 'https://a/' } }), "config: server.federation.federates_with.example.org: is the server's own trust domain: a server does not federate with itself");
  rejects(
    fw({ 'a.example': { bundle_endpoint_url: 'https://a/', bundle_endpoint_profile: { https: {} } } }),
    'config: server.federation.federates_with.a.example.bundle_endpoint_profile: must be exactly one block, "https_web" {} or "https_spiffe" { endpoint_spiffe_id = "..." }, got "https"',
  );
  rejects(
    fw({ 'a.example': { bundle_endpoint_url: 'https://a/', bundle_endpoint_profile: { https_spiffe: {} } } }),
    'config: server.federation.federates_with.a.example.bundle_endpoint_profile.https_spiffe.endpoint_spiffe_id: is required for the https_spiffe profile',
  );
  rejects(
    fw({ 'a.example': { bundle_endpoint_url: 'https://a/', bundle_endpoint_profile: { https_web: {} }, bundle_endpoint_urll: 'x' } }),
    'config: server.federation.federates_with.a.example.bundle_endpoint_urll: unknown key (did you mean "bundle_endpoint_url"?)',
  );
});

test('experimental and other SPIRE-only server options are rejected by name (federation: federationconfig.test.ts)', () => {
  assert.equal(parse(withServer({ federation: { bundle_endpoint: { port: 8443 } } })).federation?.bundleEndpoint?.port, 8443);
  rejects(withServer({ experimental: { events_based_cache: true } }), 'config: server.experimental.events_based_cache: unsupported experimental option (Spindle has none)');
  assert.equal(parse(withServer({ experimental: {} })).trustDomain, 'example.org');
  rejects(withServer({ admin_ids: ['spiffe://example.org/admin'] }), 'config: server.admin_ids: is not supported yet');
  rejects(withServer({ registration_uds_path: '/tmp/x.sock' }), 'config: server.registration_uds_path: was replaced by socket_path in SPIRE; use socket_path');
});

// ------------------------------------------------------------------ plugins

test('unknown plugin types and names are errors listing what exists', () => {
  rejects(withPlugins({ NodeAtestor: {} }), 'config: plugins.NodeAtestor: unknown plugin type (did you mean "NodeAttestor"?); expected one of DataStore, KeyManager, NodeAttestor, UpstreamAuthority');
  rejects(withPlugins({ Notifier: { k8sbundle: {} } }), 'config: plugins.Notifier: plugin type is not supported yet; Spindle has DataStore, KeyManager, NodeAttestor, UpstreamAuthority');
  rejects(withPlugins({ NodeAttestor: { aws_iid: {} } }), 'config: plugins.NodeAttestor.aws_iid: unknown NodeAttestor plugin; expected one of join_token, k8s_psat');
  rejects(
    withPlugins({ NodeAttestor: { join_tokn: {} } }),
    'config: plugins.NodeAttestor.join_tokn: unknown NodeAttestor plugin (did you mean "join_token"?); expected one of join_token, k8s_psat',
  );
  rejects(withPlugins({ KeyManager: { aws_kms: {} } }), 'config: plugins.KeyManager.aws_kms: unknown KeyManager plugin; expected one of disk, memory');
  rejects(withPlugins({ UpstreamAuthority: { vault: {} } }), 'config: plugins.UpstreamAuthority.vault: unknown UpstreamAuthority plugin; expected one of disk');
  rejects(withPlugins({ DataStore: { dynamo: {} } }), 'config: plugins.DataStore.dynamo: unknown DataStore plugin; expected one of sql');
});

test('node attestors: join_token takes no options; k8s_psat data is passed through for the attestor', () => {
  rejects(withPlugins({ NodeAttestor: { join_token: { plugin_data: { ttl: 5 } } } }), 'config: plugins.NodeAttestor.join_token.plugin_data.ttl: unknown key');
  const c = parse(withPlugins({ NodeAttestor: { k8s_psat: { plugin_data: { clusters: {}, bogus: 1 } } } }));
  const [psat] = c.plugins.nodeAttestors;
  assert.equal(psat?.name, 'k8s_psat');
  assert.deepEqual(psat.data.value, { clusters: {}, bogus: 1 });
  // The attestor reads what it knows; the rest is reported with the full path.
  psat.data.section('clusters');
  assert.throws(() => psat.data.throwIfInvalid(), /config: plugins\.NodeAttestor\.k8s_psat\.plugin_data\.bogus: unknown key/);
});

test('plugins with enabled: false are left out', () => {
  const c = parse(
    withPlugins({
      NodeAttestor: { join_token: { enabled: false, plugin_data: { ignored: true } }, k8s_psat: {} },
      KeyManager: { disk: { enabled: false }, memory: {} },
      UpstreamAuthority: { disk: { enabled: false } },
    }),
  );
  assert.deepEqual(c.plugins.nodeAttestors.map((a) => a.name), ['k8s_psat']);
  assert.deepEqual(c.plugins.keyManager, { name: 'memory' });
  assert.equal(c.plugins.upstreamAuthority, undefined);
  rejects(withPlugins({ NodeAttestor: { join_token: { enabled: false } } }), 'config: plugins.NodeAttestor: at least one NodeAttestor must be enabled');
  rejects(withPlugins({ KeyManager: { memory: { enabled: false } } }), 'config: plugins.KeyManager: exactly one KeyManager must be enabled, found none');
});

test('the HCL-to-JSON list shape for plugins parses like the map shape', () => {
  const asMap = withPlugins({
    NodeAttestor: { join_token: { plugin_data: {} }, k8s_psat: { plugin_data: { clusters: { a: {} } } } },
    KeyManager: { memory: { plugin_data: {} } },
    DataStore: { sql: { plugin_data: { database_type: 'sqlite3', connection_string: 'db.sqlite3' } } },
  });
  const asList = {
    server: [{ trust_domain: 'example.org' }],
    plugins: [
      {
        NodeAttestor: [{ join_token: [{ plugin_data: [{}] }] }, { k8s_psat: [{ plugin_data: [{ clusters: [{ a: [{}] }] }] }] }],
        KeyManager: [{ memory: [{}] }],
        DataStore: [{ sql: [{ plugin_data: [{ database_type: 'sqlite3', connection_string: 'db.sqlite3' }] }] }],
      },
    ],
  };
  const a = plain(parse(asMap)) as { plugins: { nodeAttestors: unknown[] } };
  const b = plain(parse(asList)) as { plugins: { nodeAttestors: unknown[] } };
  // The psat data keeps its raw (list) shape: the attestor reads it through a ConfigReader.
  a.plugins.nodeAttestors = [];
  b.plugins.nodeAttestors = [];
  assert.deepEqual(b, a);
  assert.deepEqual(
    parse(asList).plugins.nodeAttestors.map((n) => n.name),
    ['join_token', 'k8s_psat'],
  );
});

test('plugin blocks may omit plugin_data or have no body at all', () => {
  const c = parse(withPlugins({ NodeAttestor: { join_token: null }, KeyManager: { disk: {} }, DataStore: { sql: null } }));
  assert.deepEqual(c.plugins.nodeAttestors.map((a) => [a.name, a.data.value]), [['join_token', {}]]);
  assert.deepEqual(c.plugins.keyManager, { name: 'disk', keysPath: join(CWD, '.data', 'keys') });
  assert.equal(c.plugins.dataStore.connectionString, join(CWD, '.data', 'datastore.sqlite3'));
});

test('two KeyManagers (or DataStores, or UpstreamAuthorities) are an error', () => {
  rejects(withPlugins({ KeyManager: { disk: {}, memory: {} } }), 'config: plugins.KeyManager: only one KeyManager may be enabled, found 2 (disk, memory)');
  rejects(
    withPlugins({ KeyManager: [{ memory: {} }, { memory: {} }] }),
    'config: plugins.KeyManager.memory: configured more than once',
  );
});

test('KeyManager disk keys_path resolves against cwd; memory takes no options', () => {
  assert.deepEqual(parse(withPlugins({ KeyManager: { disk: { plugin_data: { keys_path: 'k' } } } })).plugins.keyManager, {
    name: 'disk',
    keysPath: join(CWD, 'k'),
  });
  rejects(withPlugins({ KeyManager: { memory: { plugin_data: { keys_path: 'k' } } } }), 'config: plugins.KeyManager.memory.plugin_data.keys_path: unknown key');
});

test('UpstreamAuthority disk needs key and cert paths', () => {
  assert.deepEqual(problems(withPlugins({ UpstreamAuthority: { disk: { plugin_data: { bundle_file_path: 'b.pem' } } } })), [
    'config: plugins.UpstreamAuthority.disk.plugin_data.key_file_path: is required',
    'config: plugins.UpstreamAuthority.disk.plugin_data.cert_file_path: is required',
  ]);
  const c = parse(withPlugins({ UpstreamAuthority: { disk: { plugin_data: { key_file_path: '/k.pem', cert_file_path: '/c.pem' } } } }));
  assert.deepEqual(c.plugins.upstreamAuthority, { name: 'disk', keyFilePath: '/k.pem', certFilePath: '/c.pem' });
});

test('DataStore sql: sqlite3 and postgres; other database types are rejected', () => {
  rejects(
    withPlugins({ DataStore: { sql: { plugin_data: { database_type: 'mysql', connection_string: 'dbname=spire' } } } }),
    'config: plugins.DataStore.sql.plugin_data.database_type: "mysql" is not supported yet; Spindle supports sqlite3 and postgres',
  );
  rejects(
    withPlugins({ DataStore: { sql: { plugin_data: { database_type: 'oracle' } } } }),
    'config: plugins.DataStore.sql.plugin_data.database_type: expected one of sqlite3, postgres, got "oracle"',
  );
  rejects(
    withPlugins({ DataStore: { sql: { plugin_data: { connection_string: 'file:x.db?cache=shared' } } } }),
    'config: plugins.DataStore.sql.plugin_data.connection_string: expected the path of the SQLite database file (URIs are not supported), got "file:x.db?cache=shared"',
  );
  rejects(
    withPlugins({ DataStore: { sql: { plugin_data: { max_open_conns: 5 } } } }),
    'config: plugins.DataStore.sql.plugin_data.max_open_conns: applies to database_type "postgres" only; a sqlite3 datastore has one connection to its file',
  );
  const c = parse(withPlugins({ DataStore: { sql: { plugin_data: { database_type: 'sqlite3', connection_string: 'db/spindle.sqlite3' } } } }));
  assert.deepEqual(c.plugins.dataStore, { name: 'sql', databaseType: 'sqlite3', connectionString: join(CWD, 'db/spindle.sqlite3') });
});

test('DataStore sql postgres: SPIRE\'s keys, validated by key', () => {
  const pgData = (extra: Record<string, unknown>) => withPlugins({ DataStore: { sql: { plugin_data: { database_type: 'postgres', ...extra } } } });
  const c = parse(
    pgData({
      connection_string: 'host=db.internal dbname=spire user=spire sslmode=verify-full',
      ro_connection_string: 'postgresql://reader@replica.internal/spire',
      max_open_conns: 20,
      max_idle_conns: '5',
      conn_max_lifetime: '1h',
      disable_migration: true,
    }),
  );
  assert.deepEqual(c.plugins.dataStore, {
    name: 'sql',
    databaseType: 'postgres',
    connectionString: 'host=db.internal dbname=spire user=spire sslmode=verify-full',
    roConnectionString: 'postgresql://reader@replica.internal/spire',
    maxOpenConns: 20,
    maxIdleConns: 5,
    connMaxLifetime: 3600,
    disableMigration: true,
  });
  assert.deepEqual(parse(pgData({ connection_string: 'postgresql:///spire' })).plugins.dataStore, {
    name: 'sql',
    databaseType: 'postgres',
    connectionString: 'postgresql:///spire',
  });
  assert.deepEqual(problems(pgData({ max_open_conns: -1, max_idle_conns: 'many', conn_max_lifetime: 'forever', disable_migration: 'yes' })), [
    'config: plugins.DataStore.sql.plugin_data.connection_string: is required for database_type "postgres": a libpq keyword/value string ("host=... dbname=... user=...") or a postgresql:// URI',
    'config: plugins.DataStore.sql.plugin_data.max_open_conns: expected an integer of at least 0, got -1',
    'config: plugins.DataStore.sql.plugin_data.max_idle_conns: expected an integer of at least 0, got "many"',
    'config: plugins.DataStore.sql.plugin_data.conn_max_lifetime: expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds), got "forever"',
    'config: plugins.DataStore.sql.plugin_data.disable_migration: expected true or false, got "yes"',
  ]);
  rejects(pgData({ connection_string: 'dbname=x', busy_timeout: 5 }), 'config: plugins.DataStore.sql.plugin_data.busy_timeout: unknown key');
});

test('external plugins are rejected', () => {
  rejects(
    withPlugins({ NodeAttestor: { join_token: { plugin_cmd: '/usr/bin/x' } } }),
    'config: plugins.NodeAttestor.join_token.plugin_cmd: external plugins are not supported; Spindle plugins are built in',
  );
});

// ------------------------------------------------------------------ health_checks, telemetry

test('health_checks values are validated by key', () => {
  rejects({ ...TD, health_checks: { bind_port: 70000 } }, 'config: health_checks.bind_port: expected an integer between 1 and 65535, got 70000');
  rejects({ ...TD, health_checks: { live_path: 'live' } }, 'config: health_checks.live_path: expected an HTTP path starting with "/" (no spaces, "?" or "#"), got "live"');
  rejects({ ...TD, health_checks: { live_path: '/x', ready_path: '/x' } }, 'config: health_checks.ready_path: must differ from health_checks.live_path, got "/x"');
  rejects({ ...TD, health_checks: { listener_enabled: 1 } }, 'config: health_checks.listener_enabled: expected true or false, got 1');
});

test('telemetry: Prometheus needs a port; other sinks are rejected', () => {
  assert.deepEqual(parse({ ...TD, telemetry: { Prometheus: { host: '0.0.0.0', port: '9988' } } }).telemetry, {
    prometheus: { host: '0.0.0.0', port: 9988 },
  });
  rejects({ ...TD, telemetry: { Prometheus: {} } }, 'config: telemetry.Prometheus.port: is required when telemetry.Prometheus is set');
  rejects({ ...TD, telemetry: { Statsd: [{ address: 'localhost:8125' }] } }, 'config: telemetry.Statsd: is not supported yet; Spindle exports telemetry to Prometheus only');
  rejects({ ...TD, telemetry: { Prometheus: { port: 9988, path: '/m' } } }, 'config: telemetry.Prometheus.path: unknown key');
  assert.deepEqual(parse({ ...TD, telemetry: null }).telemetry, {});
});

// ------------------------------------------------------------------ all at once

test('multiple problems are reported together, unknown keys first', () => {
  assert.deepEqual(
    problems({
      server: { trust_domian: 'example.org', bind_port: 'abc', ca_ttl: '1h', agent_ttl: '2h', log_level: 'verbose' },
      plugins: { KeyManager: { disk: {}, memory: {} }, DataStore: { sql: { plugin_data: { database_type: 'mysql' } } } },
      extra: true,
    }),
    [
      'config: extra: unknown key',
      'config: server.trust_domian: unknown key (did you mean "trust_domain"?)',
      'config: trust_domain is required (set server.trust_domain in the config file or -trustDomain)',
      'config: server.bind_port: expected an integer between 1 and 65535, got "abc"',
      'config: server.log_level: expected one of DEBUG, INFO, WARN, ERROR, got "verbose"',
      'config: server.agent_ttl: must not be longer than server.ca_ttl (1h): an SVID cannot outlive the CA that signs it, got "2h"',
      'config: plugins.KeyManager: only one KeyManager may be enabled, found 2 (disk, memory)',
      'config: plugins.DataStore.sql.plugin_data.database_type: "mysql" is not supported yet; Spindle supports sqlite3 and postgres',
    ],
  );
});

test('the root of the file must be a map', () => {
  assert.deepEqual(problems([1, 2]), [
    'config: expected a map of settings, got a list',
    'config: trust_domain is required (set server.trust_domain in the config file or -trustDomain)',
  ]);
  rejects([1, 2], 'config: expected a map of settings, got a list', { trustDomain: 'example.org' });
  assert.equal(parse(null, { trustDomain: 'example.org' }).trustDomain, 'example.org');
});

// ------------------------------------------------------------------ SPIRE's own HCL files

test("SPIRE's server.conf (HCL) loads unchanged, to the same config as its YAML equivalent", (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'server.conf'), SPIRE_SERVER_CONF);
  writeFileSync(join(dir, 'server.yaml'), SPIRE_SERVER_YAML);
  const fromHcl = loadServerConfig({ configPath: 'server.conf', cwd: dir });
  const fromYaml = loadServerConfig({ configPath: 'server.yaml', cwd: dir });
  assert.deepEqual(plain(fromHcl), { ...(plain(fromYaml) as object), configPath: join(dir, 'server.conf') });
  assert.equal(fromHcl.trustDomain, 'example.org');
  assert.equal(fromHcl.bindPort, 8081);
  assert.equal(fromHcl.dataDir, join(dir, '.data'));
});

test('an unknown key in an HCL server.conf gets the same message as in YAML', (t) => {
  const dir = tempDir(t);
  const typo = (text: string, from: string, to: string): string => text.replace(from, to);
  writeFileSync(join(dir, 'server.conf'), typo(SPIRE_SERVER_CONF, 'trust_domain = ', 'trust_domian = '));
  writeFileSync(join(dir, 'server.yaml'), typo(SPIRE_SERVER_YAML, 'trust_domain: ', 'trust_domian: '));
  const problemsIn = (file: string): string[] => {
    try {
      loadServerConfig({ configPath: file, cwd: dir });
    } catch (err) {
      assert.ok(isConfigError(err));
      return err.problems;
    }
    return assert.fail(`${file} should not validate`);
  };
  const fromHcl = problemsIn('server.conf');
  assert.ok(fromHcl.includes('config: server.trust_domian: unknown key (did you mean "trust_domain"?)'), fromHcl.join('\n'));
  assert.deepEqual(fromHcl, problemsIn('server.yaml'));
});

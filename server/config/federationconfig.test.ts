import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError } from '../../common/configfile.js';
import { PreflightError } from '../../common/preflight.js';
import { checkBundleEndpointFiles, checkServerCanStart } from '../errors.js';
import { loadServerConfig, parseServerConfig, type ServerConfig } from './config.js';
import { BUNDLE_ENDPOINT_DEFAULTS } from './federationconfig.js';

const CWD = '/srv/spindle';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-fedconfig-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const withFederation = (federation: unknown, extra: Record<string, unknown> = {}) => ({ server: { trust_domain: 'example.org', federation, ...extra } });
const parse = (raw: unknown): ServerConfig => parseServerConfig(raw, {}, { cwd: CWD });
const endpoint = (bundle_endpoint: unknown) => parse(withFederation({ bundle_endpoint })).federation?.bundleEndpoint;

function problems(raw: unknown): string[] {
  try {
    parse(raw);
  } catch (err) {
    assert.ok(isConfigError(err), String(err));
    return err.problems;
  }
  return assert.fail('expected a ConfigError');
}
const rejects = (bundle_endpoint: unknown, ...expected: string[]): void => assert.deepEqual(problems(withFederation({ bundle_endpoint })), expected);

test('no federation section: no endpoint', () => {
  assert.equal(parse({ server: { trust_domain: 'example.org' } }).federation, undefined);
  assert.equal(parse(withFederation({})).federation, undefined);
});

test("bundle_endpoint defaults: 0.0.0.0, port 443, SPIRE's 5m refresh hint, https_spiffe when no profile is set", () => {
  assert.deepEqual(endpoint({}), { address: '0.0.0.0', port: 443, refreshHint: 300, profile: { name: 'https_spiffe' }, profileDefaulted: true });
  assert.equal(BUNDLE_ENDPOINT_DEFAULTS.refresh_hint, 300);
  assert.equal(BUNDLE_ENDPOINT_DEFAULTS.file_sync_interval, 3600);
});

test("SPIRE's HCL stanza loads as written, https_spiffe and https_web", (t) => {
  const dir = tempDir(t);
  writeFileSync(
    join(dir, 'spiffe.conf'),
    `server {
  trust_domain = "example.org"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = 8443
      refresh_hint = "10m"
      profile "https_spiffe" {}
    }
  }
}
`,
  );
  writeFileSync(
    join(dir, 'web.conf'),
    `server {
  trust_domain = "example.org"
  federation {
    bundle_endpoint {
      address = "::"
      port = "9443"
      profile "https_web" {
        serving_cert_file {
          cert_file_path = "tls/federation.crt"
          key_file_path = "/etc/tls/federation.key"
          file_sync_interval = "1m"
        }
      }
    }
  }
}
`,
  );
  assert.deepEqual(loadServerConfig({ configPath: 'spiffe.conf', cwd: dir }).federation, {
    bundleEndpoint: { address: '127.0.0.1', port: 8443, refreshHint: 600, profile: { name: 'https_spiffe' }, profileDefaulted: false },
  });
  assert.deepEqual(loadServerConfig({ configPath: 'web.conf', cwd: dir }).federation, {
    bundleEndpoint: {
      address: '::',
      port: 9443,
      refreshHint: 300,
      profile: { name: 'https_web', certFilePath: join(dir, 'tls/federation.crt'), keyFilePath: '/etc/tls/federation.key', fileSyncInterval: 60 },
      profileDefaulted: false,
    },
  });
});

test('YAML and JSON shapes of the profile block', () => {
  assert.deepEqual(endpoint({ profile: { https_spiffe: {} } })?.profile, { name: 'https_spiffe' });
  assert.deepEqual(endpoint({ profile: [{ https_spiffe: [{}] }] })?.profile, { name: 'https_spiffe' });
  assert.deepEqual(endpoint({ profile: { https_web: { serving_cert_file: { cert_file_path: 'c.pem', key_file_path: 'k.pem' } } } })?.profile, {
    name: 'https_web',
    certFilePath: join(CWD, 'c.pem'),
    keyFilePath: join(CWD, 'k.pem'),
    fileSyncInterval: 3600,
  });
  assert.equal(endpoint({ address: '[::1]', port: 0 })?.address, '::1');
});

test('every bundle_endpoint key is checked', () => {
  const at = 'config: server.federation.bundle_endpoint';
  rejects({ address: 'bundle.example.org' }, `${at}.address: expected an IP address (0.0.0.0 listens on all IPv4 addresses), got "bundle.example.org"`);
  rejects({ port: 70000 }, `${at}.port: expected an integer between 0 and 65535, got 70000`);
  rejects({ port: 'https' }, `${at}.port: expected an integer between 0 and 65535, got "https"`);
  rejects({ refresh_hint: 'soon' }, `${at}.refresh_hint: expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds), got "soon"`);
  rejects({ refresh_hint: '0s' }, `${at}.refresh_hint: must be at least 1s, got "0s"`);
  rejects({ refersh_hint: '5m' }, `${at}.refersh_hint: unknown key (did you mean "refresh_hint"?)`);
});

test('exactly one known profile, with its own keys only', () => {
  const at = 'config: server.federation.bundle_endpoint';
  rejects(
    { profile: { https_spiffe: {}, https_web: {} } },
    `${at}.profile: exactly one profile is expected (profile "https_spiffe" {} or profile "https_web" { serving_cert_file { ... } }), got "https_spiffe" and "https_web"`,
  );
  rejects({ profile: {} }, `${at}.profile: exactly one profile is expected (profile "https_spiffe" {} or profile "https_web" { serving_cert_file { ... } }), got none`);
  rejects({ profile: { https_webpki: {} } }, `${at}.profile.https_webpki: unknown bundle endpoint profile; expected one of https_spiffe, https_web`);
  rejects({ profile: { https_spiffe: { endpoint_spiffe_id: 'spiffe://example.org/x' } } }, `${at}.profile.https_spiffe.endpoint_spiffe_id: unknown key`);
  rejects(
    { profile: { https_web: {} } },
    `${at}.profile.https_web: serving_cert_file is required: the https_web profile serves a certificate from files (serving_cert_file { cert_file_path = ... key_file_path = ... })`,
  );
  const sc = `${at}.profile.https_web.serving_cert_file`;
  rejects({ profile: { https_web: { serving_cert_file: {} } } }, `${sc}.cert_file_path: is required: the PEM certificate (chain, leaf first) the endpoint serves`, `${sc}.key_file_path: is required: the PEM private key of the certificate`);
  rejects({ profile: { https_web: { serving_cert_file: { cert_file_path: 'c', key_file_path: 'k', file_sync_interval: '500ms' } } } }, `${sc}.file_sync_interval: must be a whole number of seconds, got "500ms"`);
  rejects({ profile: { https_web: { serving_cert_file: { cert_file_path: 'c', key_file_path: 'k', file_sync_interval: '0s' } } } }, `${sc}.file_sync_interval: must be at least 1s, got "0s"`);
});

test('ACME is refused by name, in the profile and in the older bundle_endpoint.acme', () => {
  const why =
    'is not supported: Spindle does not obtain certificates itself; get one with any ACME client (certbot, lego, cert-manager) and serve it with profile "https_web" { serving_cert_file { cert_file_path = ... key_file_path = ... } }';
  rejects({ acme: { domain_name: 'example.org', email: 'a@example.org' } }, `config: server.federation.bundle_endpoint.acme: ${why}`);
  rejects({ profile: { https_web: { acme: { domain_name: 'example.org' } } } }, `config: server.federation.bundle_endpoint.profile.https_web.acme: ${why}`);
});

test("the endpoint cannot take the agent API's port", () => {
  rejects({ port: 8081 }, "config: server.federation.bundle_endpoint.port: 8081 is the agent API's port (server.bind_port); the bundle endpoint needs a port of its own");
  assert.deepEqual(
    problems(withFederation({ bundle_endpoint: { address: '127.0.0.1', port: 9000 } }, { bind_address: '0.0.0.0', bind_port: 9000 })),
    ["config: server.federation.bundle_endpoint.port: 9000 is the agent API's port (server.bind_port); the bundle endpoint needs a port of its own"],
  );
  assert.equal(parse(withFederation({ bundle_endpoint: { address: '127.0.0.1', port: 9000 } }, { bind_address: '127.0.0.2', bind_port: 9000 })).bindPort, 9000);
});

test('federates_with and bundle_endpoint together in one federation section; other federation keys are unknown', () => {
  const both = parse(
    withFederation({
      bundle_endpoint: { port: 8443 },
      federates_with: { 'domain1.test': { bundle_endpoint_url: 'https://1.2.3.4:8443', bundle_endpoint_profile: { https_web: {} } } },
    }),
  );
  assert.equal(both.federation?.bundleEndpoint?.port, 8443);
  assert.deepEqual(both.federatesWith, [{ trustDomain: 'domain1.test', bundleEndpointUrl: 'https://1.2.3.4:8443', bundleEndpointProfile: 'https_web', endpointSpiffeId: '' }]);
  assert.deepEqual(problems(withFederation({ bundle_endpiont: {} })), ['config: server.federation.bundle_endpiont: unknown key (did you mean "bundle_endpoint"?)']);
});

test('startup checks: certificate files readable, port bindable, each with one operator message', async (t) => {
  const dir = tempDir(t);
  const cert = join(dir, 'tls.crt');
  writeFileSync(cert, 'x');
  const web = (certFilePath: string, keyFilePath: string): ServerConfig =>
    parse(withFederation({ bundle_endpoint: { port: 0, profile: { https_web: { serving_cert_file: { cert_file_path: certFilePath, key_file_path: keyFilePath } } } } }));
  assert.throws(
    () => checkBundleEndpointFiles(web(cert, join(dir, 'missing.key'))),
    (err: Error) =>
      err instanceof PreflightError &&
      err.message.startsWith(`cannot read ${join(dir, 'missing.key')} (federation.bundle_endpoint profile "https_web" serving_cert_file key_file_path): `),
  );
  assert.throws(() => checkBundleEndpointFiles(web(dir, cert)), (err: Error) => err instanceof PreflightError && err.message.includes(`cannot read ${dir} `));
  if (process.getuid?.() !== 0) {
    chmodSync(cert, 0o000);
    assert.throws(() => checkBundleEndpointFiles(web(cert, cert)), PreflightError);
  }

  // A port in use: the run preflight says which setting to change.
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  t.after(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  // A free port for the agent API, so only the endpoint's check fails.
  const probe = createServer();
  const agentPort = await new Promise<number>((r) => probe.listen(0, '127.0.0.1', () => r((probe.address() as { port: number }).port)));
  await new Promise<void>((r) => probe.close(() => r()));
  const config = parseServerConfig(
    withFederation({ bundle_endpoint: { address: '127.0.0.1', port } }, { data_dir: join(dir, 'data'), socket_path: join(dir, 'api.sock'), bind_address: '127.0.0.1', bind_port: agentPort }),
    {},
    { cwd: dir },
  );
  await assert.rejects(
    checkServerCanStart(config),
    (err: Error) =>
      err instanceof PreflightError &&
      err.message.startsWith(`cannot listen on 127.0.0.1:${port} for the SPIFFE bundle endpoint: port ${port} is already in use`) &&
      err.message.includes('federation.bundle_endpoint.port'),
  );
});

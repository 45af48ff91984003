import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError } from '../common/configfile.js';
import { loadOidcConfig, OIDC_DEFAULTS, parseOidcConfig } from './config.js';

const CWD = '/srv/oidc';
const BASE = { domains: ['oidc.example.org'], insecure_addr: ':8080', server_api: { address: 'unix:///tmp/spindle-server/private/api.sock' } };

function problems(raw: unknown): string[] {
  try {
    parseOidcConfig(raw, { cwd: CWD });
  } catch (err) {
    if (isConfigError(err)) return err.problems;
    throw err;
  }
  return [];
}

test('SPIRE-shaped HCL file: serving_cert_file and server_api, with SPIRE defaults', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-config-'));
  try {
    const file = join(dir, 'oidc-discovery-provider.conf');
    writeFileSync(
      file,
      `log_level = "debug"
domains = ["mypublicdomain.test", "MyPublicDomain.test", "other.test"]
serving_cert_file {
  cert_file_path = "/some/path/on/disk/to/cert.pem"
  key_file_path = "/some/path/on/disk/to/key.pem"
}
server_api {
  address = "unix:///tmp/spire-server/private/api.sock"
}
`,
    );
    const c = loadOidcConfig({ configPath: file, cwd: dir });
    assert.deepEqual(c.domains, ['mypublicdomain.test', 'other.test']);
    assert.deepEqual(c.listener, {
      kind: 'tls',
      address: { host: '', port: 443 },
      certFilePath: '/some/path/on/disk/to/cert.pem',
      keyFilePath: '/some/path/on/disk/to/key.pem',
      fileSyncIntervalSeconds: 60,
    });
    assert.deepEqual(c.source, { kind: 'server_api', socketPath: '/tmp/spire-server/private/api.sock', pollIntervalSeconds: 10 });
    assert.equal(c.logLevel, 'DEBUG');
    assert.equal(c.serverPathPrefix, '/');
    assert.equal(c.setKeyUse, OIDC_DEFAULTS.set_key_use);
    assert.equal(c.allowInsecureScheme, false);
    assert.equal(c.jwtIssuer, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('workload_api, listen_socket_path, jwt_issuer, jwks_uri, server_path_prefix, health_checks', () => {
  const c = parseOidcConfig(
    {
      domains: ['oidc.example.org'],
      listen_socket_path: 'run/oidc.sock',
      allow_insecure_scheme: true,
      jwt_issuer: 'https://oidc.example.org/td',
      jwks_uri: 'https://cdn.example.org/keys',
      server_path_prefix: '/instance/1',
      set_key_use: false,
      health_checks: {},
      workload_api: { socket_path: '/tmp/spindle-agent/public/api.sock', trust_domain: 'example.org', poll_interval: '30s' },
    },
    { cwd: CWD },
  );
  assert.deepEqual(c.listener, { kind: 'socket', path: '/srv/oidc/run/oidc.sock' });
  assert.deepEqual(c.source, { kind: 'workload_api', socketPath: '/tmp/spindle-agent/public/api.sock', trustDomain: 'example.org', pollIntervalSeconds: 30 });
  assert.equal(c.jwtIssuer, 'https://oidc.example.org/td');
  assert.equal(c.jwksUri, 'https://cdn.example.org/keys');
  assert.equal(c.serverPathPrefix, '/instance/1/');
  assert.equal(c.setKeyUse, false);
  assert.deepEqual(c.healthChecks, { bindPort: 8008, readyPath: '/ready', livePath: '/live' });
});

test('exact messages for what is missing, conflicting or invalid', () => {
  assert.deepEqual(problems({}), [
    'config: domains: at least one domain must be configured (the host names the provider is reached at)',
    'config: one of serving_cert_file, insecure_addr or listen_socket_path must be set (SPIRE\'s acme is not supported)',
    'config: either the server_api or the workload_api section must be configured',
  ]);
  assert.deepEqual(problems({ ...BASE, listen_socket_path: '/run/x.sock', workload_api: { socket_path: '/a.sock', trust_domain: 'example.org' } }), [
    'config: serving_cert_file, insecure_addr and listen_socket_path are mutually exclusive: set one',
    'config: the server_api and workload_api sections are mutually exclusive',
  ]);
  assert.deepEqual(problems({ ...BASE, acme: { email: 'a@b', tos_accepted: true } }), [
    'config: acme: is not supported: Spindle does not obtain certificates by ACME; use serving_cert_file (or insecure_addr / listen_socket_path behind a TLS proxy)',
  ]);
  assert.deepEqual(problems({ ...BASE, jwt_issuer: 'oidc.example.org', jwks_uri: 'ftp://x/keys' }), [
    'config: jwt_issuer: must be an absolute URL such as https://oidc.example.org, got "oidc.example.org"',
    'config: jwks_uri: must be an https (or http) URL, got scheme "ftp" in "ftp://x/keys"',
  ]);
  assert.deepEqual(problems({ ...BASE, insecure_addr: 'localhost' }), [
    'config: insecure_addr: expected an address such as ":8443", "127.0.0.1:8080" or "[::1]:8080", got "localhost"',
  ]);
  assert.deepEqual(problems({ ...BASE, domains: ['https://oidc.example.org'] }), [
    'config: domains[0]: expected a host name or IP address (no port, no scheme), got "https://oidc.example.org"',
  ]);
  assert.deepEqual(problems({ ...BASE, server_api: { address: 'dns:///server:8081' } }), [
    'config: server_api.address: only the unix name system is supported: expected "unix:///path/to/api.sock", got "dns:///server:8081"',
  ]);
  assert.deepEqual(problems({ ...BASE, server_api: undefined, workload_api: { socket_path: '/a.sock' } }), [
    'config: workload_api.trust_domain: is required (the trust domain whose JWT keys are served)',
  ]);
  assert.deepEqual(problems({ ...BASE, insecure_addr: undefined, serving_cert_file: { cert_file_path: '/c.pem' }, allow_insecure_scheme: true }), [
    'config: serving_cert_file.key_file_path: is required',
  ]);
  assert.deepEqual(problems({ ...BASE, insecure_addr: undefined, serving_cert_file: { cert_file_path: '/c.pem', key_file_path: '/k.pem' }, allow_insecure_scheme: true }), [
    'config: allow_insecure_scheme: only works with insecure_addr or listen_socket_path (this provider serves HTTPS)',
  ]);
  assert.deepEqual(problems({ ...BASE, server_path_prefix: '/a/../b' }), [
    'config: server_path_prefix: expected an HTTP path such as "/instance/1" (no spaces, "?", "#", "." or ".." segments), got "/a/../b"',
  ]);
  assert.match(problems({ ...BASE, domain: ['x'] }).join('\n'), /config: domain: unknown key \(did you mean "domains"\?\)/);
});

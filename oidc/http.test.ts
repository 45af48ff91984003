import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Bundle } from '../spiffe/bundle.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { generateKeyPair } from '../spiffe/keys.js';
import { parseOidcConfig } from './config.js';
import { HTTP_LIMITS, createHandler, createPlainServer, hostNameOf } from './http.js';
import { KeySource, jwksOf } from './keyset.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined };
const config = parseOidcConfig(
  { domains: ['oidc.example.org', '10.0.0.1', '::1'], insecure_addr: '127.0.0.1:1', server_path_prefix: '/instance/1', server_api: { address: 'unix:///x.sock' } },
  { cwd: '/' },
);
const keys = new KeySource(true, quiet);
const server = createPlainServer(createHandler(config, keys, quiet));
let port = 0;

function get(path: string, host: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers: { host } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
after(() => new Promise<void>((r) => server.close(() => r())));

test('hostNameOf: name, name:port, IPv6 with and without brackets, case and trailing dot', () => {
  assert.equal(hostNameOf('OIDC.example.org.:443'), 'oidc.example.org');
  assert.equal(hostNameOf('10.0.0.1:8080'), '10.0.0.1');
  assert.equal(hostNameOf('[::1]:8443'), '::1');
  assert.equal(hostNameOf('::1'), '::1');
});

test('server_path_prefix: documents under the prefix only; 503 on /keys until keys arrive', async () => {
  assert.equal((await get('/keys', 'oidc.example.org')).status, 404);
  assert.equal((await get('/instance/1/keys', 'oidc.example.org')).status, 503);
  const doc = JSON.parse((await get('/instance/1/.well-known/openid-configuration', 'oidc.example.org:443')).body) as Record<string, unknown>;
  assert.equal(doc['issuer'], 'https://oidc.example.org:443/instance/1');
  assert.equal(doc['jwks_uri'], 'https://oidc.example.org:443/instance/1/keys');
  const td = parseTrustDomain('example.org');
  const ec = await generateKeyPair('ec-p384');
  const rsa = await generateKeyPair('rsa-2048');
  keys.update(new Bundle(td, { jwtAuthorities: [['b-rsa', rsa.privateKey], ['a-ec', ec.publicKey]] }));
  const jwks = JSON.parse((await get('/instance/1/keys', '[::1]:80')).body) as { keys: Array<Record<string, unknown>> };
  assert.deepEqual(jwks.keys.map((k) => [k['kid'], k['kty'], k['alg'], k['use']]), [['a-ec', 'EC', 'ES384', 'sig'], ['b-rsa', 'RSA', 'RS256', 'sig']]);
  for (const k of jwks.keys) for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(k[m], undefined);
  assert.equal((await get('/instance/1/keys', '10.0.0.2')).status, 400);
  assert.equal((await get('/instance/1/keys', 'oidc.example.org', 'DELETE')).status, 405);
  assert.deepEqual(jwksOf(new Bundle(td, { jwtAuthorities: [['k', ec.publicKey]] }), false).keys.map((k) => k.use), [undefined]);
});

test('the listener carries the public endpoint limits', () => {
  assert.equal(server.headersTimeout, HTTP_LIMITS.headersTimeoutMs);
  assert.equal(server.requestTimeout, HTTP_LIMITS.requestTimeoutMs);
  assert.equal(server.maxConnections, HTTP_LIMITS.maxConnections);
  assert.equal(server.maxRequestsPerSocket, HTTP_LIMITS.maxRequestsPerSocket);
});

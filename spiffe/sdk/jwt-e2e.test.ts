// JWT-SVIDs over HTTP end to end: a real spindle-server (with jwt_issuer) and spindle-agent; this
// process is the workload (registered by its uid). It gets a JWT-SVID through JwtSource and sends
// it to an HTTP server on 127.0.0.1 that validates it through BundleSource.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import { rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../errors.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../../test/support/agentproc.js';
import { startServerProcess, tempDir, type ServerProcess } from '../../test/support/serverproc.js';
import { authorizeID, BundleSource, JwtSource, jwtAuthHeaders, withJwtSvid } from './index.js';

const TD = 'example.org';
const ISSUER = 'https://oidc.example.org';
const ALIAS = `spiffe://${TD}/jwt-e2e/node`;
const MY_ID = `spiffe://${TD}/jwt-e2e/uid-${process.getuid!()}`;
const PAYMENTS = `spiffe://${TD}/payments`;

let server: ServerProcess | undefined;
let agent: AgentProcess | undefined;
let dir: string | undefined;
const closers: Array<{ close(): void }> = [];

before(async () => {
  dir = tempDir('spindle-jwt-e2e-');
  writeFileSync(join(dir, 'server.yaml'), `server:\n  jwt_issuer: ${ISSUER}\n`);
  server = await startServerProcess({ dir, trustDomain: TD, extraArgs: ['-config', join(dir, 'server.yaml')] });
  const token = generateJoinToken(server, ALIAS);
  const r = server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', MY_ID, '-selector', `unix:uid:${process.getuid!()}`]);
  assert.equal(r.status, 0, `entry create: ${r.stderr}${r.stdout}`);
  agent = await startAgentProcess({ server, joinToken: token });
});

after(async () => {
  for (const c of closers) c.close();
  await agent?.stop();
  await server?.stop();
  for (const d of [agent?.dir, dir]) if (d) rmSync(d, { recursive: true, force: true });
});

test('a workload gets a JWT-SVID through JwtSource; a server validates it through BundleSource', async () => {
  const jwt = await JwtSource.create({ env: { SPIFFE_ENDPOINT_SOCKET: agent!.address } });
  closers.push(jwt);
  const bundles = await BundleSource.create({ socketPath: agent!.socketPath });
  closers.push(bundles);

  // Both sources see the server's JWT authorities for the trust domain.
  const kids = [...jwt.getJwtBundleForTrustDomain(TD).jwtAuthorities().keys()];
  assert.ok(kids.length > 0, 'the trust domain has JWT authorities');
  assert.deepEqual([...bundles.getJwtBundleForTrustDomain(TD).jwtAuthorities().keys()], kids);
  assert.ok(bundles.getX509BundleForTrustDomain(TD).x509Authorities().length > 0);

  const rejected: SpiffeError[] = [];
  const httpServer = http.createServer(
    withJwtSvid({ bundles, audience: PAYMENTS, issuer: ISSUER, authorizer: authorizeID(MY_ID), onRejected: (e) => rejected.push(e) }, (_req, res, spiffe) => {
      res.end(`hello ${spiffe.id} from ${String(spiffe.claims['iss'])}`);
    }),
  );
  closers.push({ close: () => (httpServer.closeAllConnections(), httpServer.close()) });
  httpServer.listen(0, '127.0.0.1');
  await once(httpServer, 'listening');
  const url = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/pay`;

  const svid = await jwt.fetchJwtSvid({ audience: PAYMENTS });
  assert.equal(svid.id, MY_ID);
  assert.deepEqual(svid.audience, [PAYMENTS]);
  assert.equal(svid.claims['iss'], ISSUER);
  assert.equal((await jwt.fetchJwtSvid({ audience: PAYMENTS })).token, svid.token, 'the second call is served from the cache');

  const res = await fetch(url, { headers: await jwtAuthHeaders(jwt, PAYMENTS) });
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal(await res.text(), `hello ${MY_ID} from ${ISSUER}`);

  // A token the agent issued for another audience is refused, naming the audience expected.
  const wrong = await fetch(url, { headers: await jwtAuthHeaders(jwt, `spiffe://${TD}/elsewhere`) });
  assert.equal(wrong.status, 401);
  assert.match(wrong.headers.get('www-authenticate')!, /^Bearer error="invalid_token", error_description="audience: JWT-SVID audience does not include 'spiffe:\/\/example\.org\/payments'"$/);
  const err = rejected.at(-1);
  assert.ok(isSpiffeError(err) && err.code === ErrorCode.JWT_SVID_INVALID && err.reason === 'audience', String(err));
});

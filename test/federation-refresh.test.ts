/**
 * A real spindle-server with a static federation relationship (HCL `federation.federates_with`,
 * https_spiffe) fetching a foreign trust domain's bundle from an HTTPS bundle endpoint on
 * loopback: before the foreign bundle is bootstrapped the refresh fails and says why; after
 * `bundle set` the endpoint is authenticated with it and `federation refresh` stores the bundle it
 * serves, which `bundle list` then shows, and a real agent pushes it (and the next rotation) to a
 * workload whose entry federates with the trust domain. Static relationships cannot be deleted
 * through the CLI.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bundle, marshalBundle } from '../spiffe/bundle.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { certificatesToPem } from '../spiffe/pem.js';
import { startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';
import { TestCa, privateKeyPem } from './support/testca.js';
import { createWorkloadApiClient } from '../spiffe/workloadapi/index.js';
import { generateJoinToken, serverCliAsync, startAgentProcess, type AgentProcess, type CliResult } from './support/agentproc.js';

let partnerCa: TestCa;
let endpoint: https.Server;
let server: ServerProcess;
let requests = 0;
let served = '';
let agent: AgentProcess | undefined;

/** The CLI, without blocking this process's event loop (the bundle endpoint lives here). */
const cli = (args: string[], input?: string): Promise<CliResult> => serverCliAsync(server, args, 20_000, input);

before(async () => {
  partnerCa = await TestCa.create({ trustDomain: 'partner.test' });
  const svid = await partnerCa.issueSvid('spiffe://partner.test/spire/server');
  served = marshalBundle(new Bundle(parseTrustDomain('partner.test'), { x509Authorities: [partnerCa.rootDer], sequence: 3n, refreshHintSeconds: 300 }));
  endpoint = https.createServer({ cert: certificatesToPem(svid.chain), key: privateKeyPem(svid.privateKey) }, (_req, res) => {
    requests++;
    res.setHeader('content-type', 'application/json');
    res.end(served);
  });
  await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', r));
  const port = (endpoint.address() as AddressInfo).port;
  const dir = tempDir('spindle-fedrefresh-');
  const conf = join(dir, 'server.conf');
  writeFileSync(
    conf,
    `server {
  trust_domain = "example.org"
  federation {
    federates_with "partner.test" {
      bundle_endpoint_url = "https://127.0.0.1:${port}"
      bundle_endpoint_profile "https_spiffe" {
        endpoint_spiffe_id = "spiffe://partner.test/spire/server"
      }
    }
  }
}
`,
  );
  server = await startServerProcess({ dir, extraArgs: ['-config', conf] });
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  endpoint.closeAllConnections();
  endpoint.close();
});

test('a static https_spiffe relationship: refused until bootstrapped, then refreshed and stored', async () => {
  const before = await cli(['federation', 'refresh', '-id', 'partner.test']);
  assert.equal(before.status, 1);
  assert.match(before.stderr, /no bundle is held for trust domain "partner\.test" to authenticate the endpoint spiffe:\/\/partner\.test\/spire\/server/);
  assert.equal(requests, 0, 'nothing is asked of an endpoint that cannot be authenticated');

  const set = await cli(['bundle', 'set', '-id', 'partner.test', '-format', 'pem'], certificatesToPem([partnerCa.rootDer]));
  assert.equal(set.status, 0, set.stderr);
  const refreshed = await cli(['federation', 'refresh', '-id', 'partner.test']);
  assert.equal(refreshed.status, 0, refreshed.stderr);
  assert.equal(refreshed.stdout, 'Bundle refreshed\n');

  const shown = await cli(['bundle', 'list', '-id', 'partner.test', '-format', 'spiffe']);
  assert.equal(shown.status, 0, shown.stderr);
  assert.match(shown.stdout, /"spiffe_sequence": 3/);
  assert.match(shown.stdout, /"spiffe_refresh_hint": 300/);

  const show = await cli(['federation', 'show', '-trustDomain', 'partner.test']);
  assert.match(show.stdout, /Configured in {13}: server config \(federation\.federates_with\)\n/);
  assert.match(show.stdout, /Last refresh result {7}: ok\nLast successful refresh {3}: \d{4}-.* UTC\nBundle sequence {11}: 3\n/);

  const del = await cli(['federation', 'delete', '-id', 'partner.test']);
  assert.equal(del.status, 1);
  assert.match(del.stderr, /configured in the server config \(federation\.federates_with\); change it there/);
  assert.match(server.log(), /federation: stored a new bundle/);
});

test('a workload whose entry federates with the trust domain is pushed each bundle the refresher stores', async () => {
  const alias = 'spiffe://example.org/fed/node';
  agent = await startAgentProcess({ server, joinToken: generateJoinToken(server, alias) });
  const uid = process.getuid!();
  const entry = await cli(['entry', 'create', '-parentID', alias, '-spiffeID', `spiffe://example.org/fed/uid-${uid}`, '-selector', `unix:uid:${uid}`, '-federatesWith', 'partner.test']);
  assert.equal(entry.status, 0, entry.stderr);
  const client = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
  const partner = parseTrustDomain('partner.test');
  const authoritiesSeen = async (want: Buffer[]): Promise<readonly Buffer[] | undefined> => {
    const deadline = Date.now() + 20_000;
    let got: readonly Buffer[] | undefined;
    while (Date.now() < deadline) {
      try {
        got = (await client.fetchX509Bundles({ timeoutMs: 5000 })).getX509Authorities(partner);
      } catch {
        got = undefined; // the entry has not reached the agent yet
      }
      if (got !== undefined && got.length === want.length && got.every((d, i) => d.equals(want[i]!))) return got;
      await new Promise((r) => setTimeout(r, 100));
    }
    return got;
  };
  try {
    assert.deepEqual(await authoritiesSeen([partnerCa.rootDer]), [partnerCa.rootDer], 'the refreshed bundle reached the workload');
    // The far side publishes its next CA; a refresh stores it and the agent is pushed the change.
    const next = await TestCa.create({ trustDomain: 'partner.test' });
    served = marshalBundle(new Bundle(partner, { x509Authorities: [partnerCa.rootDer, next.rootDer], sequence: 4n, refreshHintSeconds: 300 }));
    const refreshed = await cli(['federation', 'refresh', '-id', 'partner.test']);
    assert.equal(refreshed.status, 0, refreshed.stderr);
    assert.deepEqual(await authoritiesSeen([partnerCa.rootDer, next.rootDer]), [partnerCa.rootDer, next.rootDer], 'the rotation reached the workload');
  } finally {
    client.close();
  }
});

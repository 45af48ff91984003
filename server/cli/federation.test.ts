/**
 * `spindle-server federation ...` against a real admin server (in this process, over its Unix
 * socket) with a real bundle refresher, whose refreshes go to an HTTPS bundle endpoint on
 * loopback. The CLI runs as the real program (bin/spindle-server).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bundle, marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { parseTrustDomain } from '../../spiffe/id.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { TestCa, privateKeyPem } from '../../test/support/testca.js';
import { silentLogger, startTestAdmin, type TestAdmin } from '../api/admin/testkit.js';
import { BundleRefresher } from '../federation/refresher.js';

const BIN = join(fileURLToPath(new URL('../../../', import.meta.url)), 'bin', 'spindle-server');

let admin: TestAdmin;
let work: string;
let webCa: TestCa;
let partnerCa: TestCa;
let webTdCa: TestCa;
let endpoint: https.Server;
let port = 0;
let served = '';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], input = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args, '-socketPath', admin.socketPath], { cwd: work, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}
const ok = (r: Run): Run => {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
};
const fails = (r: Run, stderr: RegExp): Run => {
  assert.notEqual(r.code, 0, `expected failure\nstdout: ${r.stdout}`);
  assert.match(r.stderr, stderr);
  return r;
};

before(async () => {
  webCa = await TestCa.create({ trustDomain: 'webpki.test' });
  partnerCa = await TestCa.create({ trustDomain: 'partner.test' });
  webTdCa = await TestCa.create({ trustDomain: 'web.test' });
  const leaf = await webCa.issueSvid('spiffe://webpki.test/web', { dnsNames: ['localhost'] });
  endpoint = https.createServer({ cert: certificatesToPem(leaf.chain), key: privateKeyPem(leaf.privateKey) }, (_req, res) => res.end(served));
  await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', r));
  port = (endpoint.address() as AddressInfo).port;
  admin = await startTestAdmin({
    trustDomain: 'example.org',
    federation: (datastore, trustDomain) =>
      new BundleRefresher({
        datastore,
        trustDomain,
        logger: silentLogger,
        staticRelationships: [
          { trustDomain: parseTrustDomain('static.test'), bundleEndpointUrl: 'https://static.test/bundle', bundleEndpointProfile: 'https_web', endpointSpiffeId: '' },
        ],
        fetch: { webRoots: certificatesToPem([webCa.rootDer]), connectAddress: '127.0.0.1', totalTimeoutMs: 5000 },
      }),
  });
  work = mkdtempSync(join(tmpdir(), 'spindle-fedcli-'));
});

after(async () => {
  await admin.close();
  endpoint.closeAllConnections();
  endpoint.close();
  rmSync(work, { recursive: true, force: true });
});

describe('spindle-server federation', () => {
  test('create with flags (https_spiffe, bootstrap bundle from PEM) prints SPIRE\'s block and stores the bundle', async () => {
    const pem = join(work, 'partner.pem');
    writeFileSync(pem, certificatesToPem([partnerCa.rootDer]));
    const r = ok(
      await run([
        'federation', 'create', '-trustDomain', 'partner.test', '-bundleEndpointURL', 'https://127.0.0.1:8443', '-bundleEndpointProfile', 'https_spiffe',
        '-endpointSpiffeID', 'spiffe://partner.test/spire/server', '-trustDomainBundlePath', pem, '-trustDomainBundleFormat', 'pem',
      ]),
    );
    assert.equal(
      r.stdout,
      '\nTrust domain              : partner.test\nBundle endpoint URL       : https://127.0.0.1:8443\n' +
        'Bundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://partner.test/spire/server\n',
    );
    const stored = (await admin.datastore.getBundle(parseTrustDomain('partner.test')))!;
    assert.equal(stored.sequence, 0n, 'a PEM bootstrap takes sequence 0: the first bundle the endpoint serves replaces it');
    assert.deepEqual(parseBundle(parseTrustDomain('partner.test'), stored.document).x509Authorities(), [partnerCa.rootDer]);
  });

  test('create with -data (SPIRE\'s JSON, from stdin), list (static and dynamic together), -output json', async () => {
    const data = {
      federation_relationships: [
        { trust_domain: 'web.test', bundle_endpoint_url: `https://localhost:${port}/`, https_web: {} },
        {
          trust_domain: 'other.test',
          bundle_endpoint_url: 'https://other.test/',
          https_spiffe: { endpoint_spiffe_id: 'spiffe://other.test/spire/server' },
          trust_domain_bundle: { x509_authorities: [{ asn1: partnerCa.rootDer.toString('base64') }], sequence_number: 12 },
        },
      ],
    };
    const r = ok(await run(['federation', 'create', '-data', '-'], JSON.stringify(data)));
    assert.match(r.stdout, /Trust domain {14}: web\.test\nBundle endpoint URL {7}: https:\/\/localhost:\d+\/\nBundle endpoint profile {3}: https_web\n/);
    assert.equal((await admin.datastore.getBundle(parseTrustDomain('other.test')))?.sequence, 12n);
    const list = ok(await run(['federation', 'list']));
    assert.match(list.stdout, /^Found 4 federation relationships\n\nTrust domain {14}: other\.test\n/);
    assert.deepEqual([...list.stdout.matchAll(/Trust domain +: (\S+)/g)].map((m) => m[1]), ['other.test', 'partner.test', 'static.test', 'web.test']);
    const json = JSON.parse(ok(await run(['federation', 'list', '-output', 'json'])).stdout) as { federation_relationships: Array<{ trustDomain: string; static: boolean }> };
    assert.deepEqual(json.federation_relationships.map((x) => [x.trustDomain, x.static ?? false]), [['other.test', false], ['partner.test', false], ['static.test', true], ['web.test', false]]);
  });

  test('refresh fetches now; show prints the last refresh time, result and sequence', async () => {
    served = marshalBundle(new Bundle(parseTrustDomain('web.test'), { x509Authorities: [webTdCa.rootDer], sequence: 4n }));
    assert.equal(ok(await run(['federation', 'refresh', '-id', 'web.test'])).stdout, 'Bundle refreshed\n');
    const show = ok(await run(['federation', 'show', '-trustDomain', 'web.test'])).stdout;
    assert.match(show, /^Found a federation relationship with trust domain web\.test:\n\nTrust domain {14}: web\.test\n/);
    assert.match(show, /Last refresh {14}: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC\nLast refresh result {7}: ok\n/);
    assert.match(show, /Bundle sequence {11}: 4\n/);
    served = '<html>not a bundle</html>';
    fails(await run(['federation', 'refresh', '-id', 'web.test']), /^Error: .*refreshing the bundle of "web\.test" failed: the bundle endpoint did not serve a valid SPIFFE bundle document/);
    const after = ok(await run(['federation', 'show', '-trustDomain', 'web.test'])).stdout;
    assert.match(after, /Last refresh result {7}: error: the bundle endpoint did not serve a valid SPIFFE bundle document/);
    assert.match(after, /Bundle sequence {11}: 4\n/, 'the last good bundle is kept');
    const stat = ok(await run(['federation', 'show', '-trustDomain', 'static.test'])).stdout;
    assert.match(stat, /Configured in {13}: server config \(federation\.federates_with\)\nLast refresh {14}: never\n/);
  });

  test('update replaces URL and profile; delete removes the relationship (the bundle stays)', async () => {
    const r = ok(await run(['federation', 'update', '-trustDomain', 'other.test', '-bundleEndpointURL', 'https://other.test:9443/', '-bundleEndpointProfile', 'https_web']));
    assert.match(r.stdout, /Bundle endpoint URL {7}: https:\/\/other\.test:9443\/\nBundle endpoint profile {3}: https_web\n$/);
    assert.equal((await admin.datastore.getFederationRelationship(parseTrustDomain('other.test')))?.bundleEndpointProfile, 'https_web');
    assert.equal(ok(await run(['federation', 'delete', '-id', 'other.test'])).stdout, 'federation relationship deleted.\n');
    assert.equal(await admin.datastore.getFederationRelationship(parseTrustDomain('other.test')), undefined);
    assert.equal((await admin.datastore.getBundle(parseTrustDomain('other.test')))?.sequence, 12n);
    fails(await run(['federation', 'delete', '-id', 'other.test']), /^Error: failed to delete federation relationship "other\.test": no federation relationship with trust domain "other\.test"/);
  });

  test('errors: flags, server-side checks in SPIRE\'s failure block, static and own trust domains', async () => {
    fails(await run(['federation', 'create', '-bundleEndpointURL', 'https://x/', '-bundleEndpointProfile', 'https_web']), /^Error: trust domain is required/);
    fails(await run(['federation', 'create', '-trustDomain', 'x.test', '-bundleEndpointURL', 'https://x/', '-bundleEndpointProfile', 'https']), /unknown bundle endpoint profile type: "https"/);
    fails(
      await run(['federation', 'create', '-trustDomain', 'x.test', '-bundleEndpointURL', 'https://x/', '-bundleEndpointProfile', 'https_spiffe']),
      /endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set/,
    );
    const http = fails(await run(['federation', 'create', '-trustDomain', 'x.test', '-bundleEndpointURL', 'http://x/', '-bundleEndpointProfile', 'https_web']), /failed to create one or more federation relationships/);
    assert.match(http.stderr, /^Failed to create the following federation relationship \(code: InvalidArgument, msg: "invalid bundle_endpoint_url \\"http:\/\/x\/\\": the bundle endpoint URL must be an https URL"\):\nTrust domain {14}: x\.test\n/);
    fails(await run(['federation', 'create', '-trustDomain', 'static.test', '-bundleEndpointURL', 'https://x/', '-bundleEndpointProfile', 'https_web']), /code: FailedPrecondition, msg: "cannot create the federation relationship with \\"static\.test\\": it is configured in the server config/);
    fails(await run(['federation', 'delete', '-id', 'static.test']), /it is configured in the server config \(federation\.federates_with\); change it there/);
    fails(await run(['federation', 'create', '-trustDomain', 'example.org', '-bundleEndpointURL', 'https://x/', '-bundleEndpointProfile', 'https_web']), /this is the server's own trust domain/);
    fails(await run(['federation', 'create', '-trustDomain', 'web.test', '-bundleEndpointURL', 'https://x/', '-bundleEndpointProfile', 'https_web']), /code: AlreadyExists/);
    fails(await run(['federation', 'create', '-data', '-', '-trustDomain', 'x.test'], '{}'), /-data cannot be combined with -trustDomain/);
    fails(await run(['federation', 'create', '-data', '-'], '{"federation_relationships":[{"trust_domain":"x.test","bundle_endpoint_url":"https://x/","https_web":{},"colour":1}]}'), /unknown field "colour"/);
    fails(await run(['federation', 'show', '-trustDomain', 'nobody.test']), /no federation relationship with trust domain "nobody\.test"/);
    fails(await run(['federation', 'refresh', '-id', 'nobody.test']), /no federation relationship with trust domain "nobody\.test"/);
    assert.equal((await admin.datastore.listFederationRelationships()).length, 2, 'nothing was written by the failures');
  });

  test('https_spiffe with the endpoint in another trust domain: the bundle given is that trust domain\'s (as SPIRE)', async () => {
    const pem = join(work, 'partner2.pem');
    writeFileSync(pem, certificatesToPem([partnerCa.rootDer]));
    const before = (await admin.datastore.getBundle(parseTrustDomain('partner.test')))!.sequence;
    ok(
      await run([
        'federation', 'create', '-trustDomain', 'broker.test', '-bundleEndpointURL', 'https://127.0.0.1:9443', '-bundleEndpointProfile', 'https_spiffe',
        '-endpointSpiffeID', 'spiffe://partner.test/spire/server', '-trustDomainBundlePath', pem,
      ]),
    );
    assert.equal((await admin.datastore.getBundle(parseTrustDomain('partner.test')))?.sequence, before + 1n, 'stored for the endpoint\'s trust domain (PEM: held sequence + 1)');
    assert.equal(await admin.datastore.getBundle(parseTrustDomain('broker.test')), undefined);
    ok(await run(['federation', 'delete', '-id', 'broker.test']));
  });
});

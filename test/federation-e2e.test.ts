/**
 * Two trust domains on one machine, federated both ways over https_spiffe bundle endpoints:
 * two real spindle-server processes (td-a.test and td-b.test), each serving its bundle on a
 * loopback port, and one real agent each. Each server gets the other's X.509 authorities once
 * (`federation create -trustDomainBundlePath`, PEM) and from then on the whole bundle only from
 * the other's bundle endpoint. A workload in each domain, registered
 * with `-federatesWith` the other, takes its X509-SVID and bundles from its own agent's Workload
 * API and they do mTLS with node:tls: each side checks the peer's chain against the bundle of
 * the peer's trust domain and the peer's SPIFFE ID. A peer of a trust domain neither knows is
 * refused. Then A's CA rotates (ca_ttl 2m): its next authority reaches B's workload through A's
 * bundle endpoint, B's refresher and B's agent while A's old authority is still published, and
 * A's workload, now signed by the new CA, is still accepted by B.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, type PeerCertificate, type Server, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { BundleSet, parseBundle } from '../spiffe/bundle.js';
import { parseTrustDomain, type TrustDomain } from '../spiffe/id.js';
import { certificatesToPem } from '../spiffe/pem.js';
import { createWorkloadApiClient, type WorkloadApiClient, type X509Context } from '../spiffe/workloadapi/index.js';
import { verifyX509Svid } from '../spiffe/x509/index.js';
import { generateJoinToken, serverCliAsync, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { freePort, startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';
import { TestCa, privateKeyPem } from './support/testca.js';

const TD_A = parseTrustDomain('td-a.test');
const TD_B = parseTrustDomain('td-b.test');
const WORKLOAD_A = 'spiffe://td-a.test/workload/client';
const WORKLOAD_B = 'spiffe://td-b.test/workload/server';

let serverA: ServerProcess;
let serverB: ServerProcess;
let agentA: AgentProcess;
let agentB: AgentProcess;
let clientA: WorkloadApiClient;
let clientB: WorkloadApiClient;
let startedA = 0;
const closers: (() => Promise<unknown> | void)[] = [];

function config(dir: string, endpointPort: number, serverExtra: string, federationExtra: string): string {
  const path = join(dir, 'server.conf');
  writeFileSync(
    path,
    `server {
${serverExtra}
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = ${endpointPort}
      refresh_hint = "30s"
      profile "https_spiffe" {}
    }
${federationExtra}
  }
}
`,
  );
  return path;
}

async function cli(server: ServerProcess, args: string[], input?: string): Promise<string> {
  const r = await serverCliAsync(server, args, 20_000, input);
  assert.equal(r.status, 0, `spindle-server ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The X.509 authorities a server holds for a trust domain (its own or federated). */
async function heldAuthorities(server: ServerProcess, td: TrustDomain): Promise<Buffer[]> {
  const own = td === parseTrustDomain(server.trustDomain);
  const out = await cli(server, own ? ['bundle', 'show', '-format', 'spiffe'] : ['bundle', 'list', '-id', td, '-format', 'spiffe']);
  return parseBundle(td, out).x509Authorities();
}

/** Polls the Workload API until `ok` holds for the X.509 context (bounded); returns the last one. */
async function contextWhere(client: WorkloadApiClient, ok: (ctx: X509Context) => boolean, what: string, ms = 30_000): Promise<X509Context> {
  const deadline = Date.now() + ms;
  let last: X509Context | undefined;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      last = await client.fetchX509Context({ timeoutMs: 5000 });
      if (ok(last)) return last;
    } catch (err) {
      lastErr = err; // the entry has not reached the agent yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: not seen in ${ms / 1000} s (last context: ${last ? `${last.defaultSvid.id}, bundles ${last.bundles.trustDomains().join(' ')}` : String(lastErr)})`);
}

const pemKey = (ctx: X509Context): string => privateKeyPem(ctx.defaultSvid.privateKey);
const pemCerts = (ctx: X509Context): string => certificatesToPem(ctx.defaultSvid.certificates);

/** The peer's chain as presented (leaf first), without the link a self-signed root makes to itself. */
function chainOf(cert: PeerCertificate & { issuerCertificate?: PeerCertificate }): Buffer[] {
  const out: Buffer[] = [];
  let c: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = cert;
  while (c !== undefined && c.raw !== undefined && out.length < 16) {
    if (out.some((d) => d.equals(c!.raw))) break;
    out.push(c.raw);
    c = c.issuerCertificate as typeof c;
  }
  return out;
}

/**
 * The SPIFFE check of a peer: OpenSSL has already chained it to one of the bundles the workload
 * holds (the `ca` given to node:tls); verifyX509Svid checks it again with the SPIFFE rules
 * against the bundle of the leaf's own trust domain only, and the ID must be the one expected.
 */
function checkPeer(chain: Buffer[], bundles: X509Context['bundles'], expected: string): Error | undefined {
  try {
    const id = verifyX509Svid(chain, bundles).id;
    return id === expected ? undefined : new Error(`peer is ${id}, expected ${expected}`);
  } catch (err) {
    return err as Error;
  }
}

interface MtlsServer {
  port: number;
  accepted: string[];
  refused: string[];
  close(): Promise<void>;
}

/**
 * A TLS server presenting the workload's SVID (its latest, on every handshake); OpenSSL chains
 * the client to one of the bundles the workload holds, then checkPeer: only `expected`.
 */
async function mtlsServer(ctx: () => { cert: string; key: string; bundles: X509Context['bundles'] }, expected: string): Promise<MtlsServer> {
  const accepted: string[] = [];
  const refused: string[] = [];
  const options = () => {
    const c = ctx();
    return { cert: c.cert, key: c.key, ca: certificatesToPem(c.bundles.bundles().flatMap((b) => b.x509Authorities())) };
  };
  const { createSecureContext } = await import('node:tls');
  const server: Server = createServer({
    ...options(),
    requestCert: true,
    rejectUnauthorized: true,
    // Every handshake uses the workload's latest SVID and bundles.
    SNICallback: (_name, cb) => cb(null, createSecureContext(options())),
  });
  server.on('secureConnection', (s: TLSSocket) => {
    const err = checkPeer(chainOf(s.getPeerCertificate(true)), ctx().bundles, expected);
    if (err) {
      refused.push(err.message);
      s.destroy();
      return;
    }
    accepted.push((s.getPeerCertificate() as PeerCertificate).subjectaltname ?? '');
    s.end('hello');
  });
  server.on('tlsClientError', (err) => refused.push(err.message));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, accepted, refused, close: () => new Promise((r) => server.close(() => r())) };
}

/** Connects with the client's SVID, accepting only a server with ID `expected` verified by `bundles`; resolves with what the server said. */
function mtlsDial(port: number, client: { cert: string; key: string }, bundles: X509Context['bundles'], expected: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({
      host: '127.0.0.1',
      port,
      servername: 'workload',
      cert: client.cert,
      key: client.key,
      ca: certificatesToPem(bundles.bundles().flatMap((b) => b.x509Authorities())),
      rejectUnauthorized: true,
      checkServerIdentity: (_host, cert) => checkPeer(chainOf(cert), bundles, expected),
    });
    let got = '';
    s.setTimeout(10_000, () => s.destroy(new Error('timed out')));
    s.on('data', (d: Buffer) => (got += d.toString()));
    // In TLS 1.3 the client's handshake ends before the server has checked the client's
    // certificate: a refused client sees the connection closed without an answer.
    s.on('end', () => (got === '' ? reject(new Error('the server closed the connection without an answer')) : resolve(got)));
    s.on('error', reject);
  });
}

before(async () => {
  const [portA, portB] = [await freePort(), await freePort()];
  const dirA = tempDir('spindle-fed-a-');
  const dirB = tempDir('spindle-fed-b-');
  // A: a 2-minute CA (rotation below) and SVIDs short enough for it.
  const confA = config(dirA, portA, `  ca_ttl = "2m"
  default_x509_svid_ttl = "20s"
  default_jwt_svid_ttl = "20s"`, '');
  const confB = config(dirB, portB, '', '');
  serverA = await startServerProcess({ dir: dirA, trustDomain: 'td-a.test', extraArgs: ['-config', confA] });
  startedA = Date.now();
  closers.push(() => serverA.stop());
  serverB = await startServerProcess({ dir: dirB, trustDomain: 'td-b.test', extraArgs: ['-config', confB] });
  closers.push(() => serverB.stop());

  // The bootstrap, once: each server is given the other's X.509 authorities (PEM) with the
  // relationship. Nothing else is ever copied between them.
  for (const [self, peer, peerPort] of [[serverA, serverB, portB], [serverB, serverA, portA]] as const) {
    const pem = join(self.dir, `${peer.trustDomain}.pem`);
    writeFileSync(pem, await cli(peer, ['bundle', 'show']));
    await cli(self, [
      'federation', 'create', '-trustDomain', peer.trustDomain, '-bundleEndpointURL', `https://127.0.0.1:${peerPort}`, '-bundleEndpointProfile', 'https_spiffe',
      '-endpointSpiffeID', `spiffe://${peer.trustDomain}/spire/server`, '-trustDomainBundlePath', pem, '-trustDomainBundleFormat', 'pem',
    ]);
    assert.equal(await cli(self, ['federation', 'refresh', '-id', peer.trustDomain]), 'Bundle refreshed\n');
  }

  const uid = process.getuid!();
  agentA = await startAgentProcess({ server: serverA, joinToken: generateJoinToken(serverA, 'spiffe://td-a.test/node') });
  closers.unshift(() => agentA.stop());
  agentB = await startAgentProcess({ server: serverB, joinToken: generateJoinToken(serverB, 'spiffe://td-b.test/node') });
  closers.unshift(() => agentB.stop());
  await cli(serverA, ['entry', 'create', '-parentID', 'spiffe://td-a.test/node', '-spiffeID', WORKLOAD_A, '-selector', `unix:uid:${uid}`, '-federatesWith', 'td-b.test']);
  await cli(serverB, ['entry', 'create', '-parentID', 'spiffe://td-b.test/node', '-spiffeID', WORKLOAD_B, '-selector', `unix:uid:${uid}`, '-federatesWith', 'spiffe://td-a.test']);
  clientA = createWorkloadApiClient({ address: agentA.address, backoff: { initialMs: 200, maxMs: 1000 } });
  clientB = createWorkloadApiClient({ address: agentB.address, backoff: { initialMs: 200, maxMs: 1000 } });
  closers.unshift(() => clientA.close(), () => clientB.close());
});

after(async () => {
  for (const c of closers) await c();
});

test('bootstrapped once, the bundles come from the bundle endpoints', async () => {
  // Each was given only the other's X.509 authorities (PEM, sequence 0); what each holds now is
  // the other's whole bundle document, JWT keys and sequence included: fetched from its endpoint.
  for (const [self, peer, td] of [[serverA, serverB, TD_B], [serverB, serverA, TD_A]] as const) {
    const held = parseBundle(td, await cli(self, ['bundle', 'list', '-id', td, '-format', 'spiffe']));
    const own = parseBundle(td, await cli(peer, ['bundle', 'show', '-format', 'spiffe']));
    assert.equal(held.sequence, own.sequence);
    assert.ok(own.sequence > 0n);
    assert.ok(held.jwtAuthorities().size > 0, 'the JWT keys came from the endpoint, not the PEM bootstrap');
    assert.deepEqual([...held.jwtAuthorities().keys()], [...own.jwtAuthorities().keys()]);
    assert.deepEqual(held.x509Authorities(), own.x509Authorities());
  }
  for (const [server, td] of [[serverA, 'td-b.test'], [serverB, 'td-a.test']] as const) {
    const shown = await cli(server, ['federation', 'show', '-trustDomain', td]);
    assert.match(shown, /Bundle endpoint profile {3}: https_spiffe\n/);
    assert.match(shown, /Last refresh result {7}: ok\n/);
  }
});

test('a workload in A and a workload in B do mTLS, each verifying the other through the federated bundle; an unknown trust domain is refused', async () => {
  const [authA, authB] = [await heldAuthorities(serverA, TD_A), await heldAuthorities(serverB, TD_B)];
  const hasFederated = (td: TrustDomain, want: Buffer[]) => (ctx: X509Context) => {
    const got = ctx.bundles.get(td)?.x509Authorities() ?? [];
    return want.every((w) => got.some((g) => g.equals(w)));
  };
  const ctxA = await contextWhere(clientA, hasFederated(TD_B, authB), "A's workload holding td-b.test's bundle");
  const ctxB = await contextWhere(clientB, hasFederated(TD_A, authA), "B's workload holding td-a.test's bundle");
  assert.equal(ctxA.defaultSvid.id, WORKLOAD_A);
  assert.equal(ctxB.defaultSvid.id, WORKLOAD_B);
  assert.deepEqual(ctxA.bundles.trustDomains().sort(), ['td-a.test', 'td-b.test']);
  assert.deepEqual(ctxB.bundles.trustDomains().sort(), ['td-a.test', 'td-b.test']);

  const material = (ctx: X509Context) => ({ cert: pemCerts(ctx), key: pemKey(ctx), bundles: ctx.bundles });
  let latestB = material(ctxB);
  const serverSide = await mtlsServer(() => latestB, WORKLOAD_A);
  closers.unshift(() => serverSide.close());
  const said = await mtlsDial(serverSide.port, material(ctxA), ctxA.bundles, WORKLOAD_B);
  assert.equal(said, 'hello', 'A verified B and B answered');
  assert.deepEqual(serverSide.accepted, [`URI:${WORKLOAD_A}`], 'B verified A');
  assert.deepEqual(serverSide.refused, []);

  // A peer of a third trust domain, whose bundle neither side holds.
  const other = await TestCa.create({ trustDomain: 'td-c.test' });
  const intruder = await other.issueSvid('spiffe://td-c.test/workload/client');
  const intruderCreds = { cert: certificatesToPem(intruder.chain), key: privateKeyPem(intruder.privateKey) };
  assert.ok(checkPeer(intruder.chain, ctxB.bundles, 'spiffe://td-c.test/workload/client') instanceof Error, "td-c.test's SVID does not verify with B's bundles");
  // As a client of B's workload (the intruder trusts B, so only B's verdict decides).
  await assert.rejects(mtlsDial(serverSide.port, intruderCreds, ctxA.bundles, WORKLOAD_B));
  assert.equal(serverSide.accepted.length, 1, 'B accepted no td-c.test client');
  assert.ok(serverSide.refused.length >= 1, `B refused the td-c.test client (${serverSide.refused.join('; ')})`);
  // As the server A's workload dials when it expects B's workload: A refuses it in the handshake.
  const intruderServer = await mtlsServer(() => ({ ...intruderCreds, bundles: ctxA.bundles }), WORKLOAD_A);
  closers.unshift(() => intruderServer.close());
  await assert.rejects(mtlsDial(intruderServer.port, material(ctxA), ctxA.bundles, WORKLOAD_B));
  assert.deepEqual(intruderServer.accepted, [], 'A completed no connection to the td-c.test server');

  // The federated bundle is what lets B accept A: B's workload without td-a.test's bundle refuses A.
  latestB = { ...material(ctxB), bundles: new BundleSet([ctxB.bundles.get(TD_B)!]) };
  const refusedBefore = serverSide.refused.length;
  await assert.rejects(mtlsDial(serverSide.port, material(ctxA), ctxA.bundles, WORKLOAD_B));
  assert.ok(serverSide.refused.length > refusedBefore, 'without the federated bundle B refuses A');
  assert.equal(serverSide.accepted.length, 1);
});

test("A's CA rotation reaches B's workload through the bundle endpoint before A's old authority is dropped", async () => {
  // ca_ttl 2m: A prepares its next CA at about 60 s and activates it at about 100 s; the old one
  // is pruned at about 180 s. B refreshes at the 30 s hint A's endpoint serves.
  const initial = await heldAuthorities(serverA, TD_A);
  assert.equal(initial.length, 1);
  const old = initial[0]!;
  const signedByNew = (ctx: X509Context): boolean => {
    const chain = ctx.defaultSvid.certificates;
    return chain.length > 0 && !verifiesWith(chain, old);
  };
  const remaining = Math.max(5_000, startedA + 150_000 - Date.now());
  const ctxA = await contextWhere(clientA, signedByNew, "A's workload with an SVID signed by A's next CA", remaining);
  const now = parseBundle(TD_A, await cli(serverA, ['bundle', 'show', '-format', 'spiffe'])).x509Authorities();
  const next = now.find((d) => !d.equals(old) && verifiesWith(ctxA.defaultSvid.certificates, d));
  assert.ok(next, "the CA that signed A's new SVID is in A's bundle");
  // B's workload holds the new authority and still the old one.
  const ctxB = await contextWhere(clientB, (c) => (c.bundles.get(TD_A)?.x509Authorities() ?? []).some((d) => d.equals(next)), "B's workload holding A's next CA", 40_000);
  const heldForA = ctxB.bundles.get(TD_A)!.x509Authorities();
  assert.ok(heldForA.some((d) => d.equals(old)), "A's old authority is still trusted by B's workload");
  assert.ok(Date.now() < startedA + 180_000, 'all of this before the old authority could be pruned');
  const serverSide = await mtlsServer(() => ({ cert: pemCerts(ctxB), key: pemKey(ctxB), bundles: ctxB.bundles }), WORKLOAD_A);
  closers.unshift(() => serverSide.close());
  const said = await mtlsDial(serverSide.port, { cert: pemCerts(ctxA), key: pemKey(ctxA) }, ctxA.bundles, WORKLOAD_B);
  assert.equal(said, 'hello');
  assert.deepEqual(serverSide.accepted, [`URI:${WORKLOAD_A}`], "B accepted A's SVID of the new CA");
});

function verifiesWith(chain: Buffer[], root: Buffer): boolean {
  try {
    verifyX509Svid(chain, { getX509Authorities: () => [root] });
    return true;
  } catch {
    return false;
  }
}

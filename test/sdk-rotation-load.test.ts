// SVID rotation under load through the Node SDK (spiffe/sdk): a real spindle-server and
// spindle-agent, two workload identities of this uid with a 10 s X509-SVID TTL (the agent renews
// at about half-life, so each rotates every 4-5 s), an mTLS HTTPS server made with
// createMtlsHttpsServer (accepting only the client's ID) and a client with mtlsClientOptions
// (accepting only the server's ID), both on X509Sources from the agent. For 60 s the client sends
// requests at a bounded rate: fresh connections (a full handshake each), keep-alive connections
// through a pooling agent with the options spread per request (the pool follows the client's
// SVID), and two pinned keep-alive connections opened at the start (keep-alive through the SDK's
// SpiffeHttpsAgent). The promise under test:
// rotation takes effect on new connections and drops nothing, and live connections keep working.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type * as tls from 'node:tls';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { authorizeID, createMtlsHttpsServer, mtlsClientOptions, peerIdOf, X509Source } from '../spiffe/sdk/index.js';
import { SpiffeHttpsAgent } from '../spiffe/sdk/tlsconfig.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { startServerProcess, type ServerProcess } from './support/serverproc.js';

const TD = 'example.org';
const ALIAS = `spiffe://${TD}/rotload/node`;
const SERVER_ID = `spiffe://${TD}/rotload/server`;
const CLIENT_ID = `spiffe://${TD}/rotload/client`;
const MY_UID = process.getuid!();
const TTL_SECONDS = 10;
const LOAD_MS = 60_000;
const MIN_ROTATIONS = 5;
/** Pauses between requests per loop (bounded rate), and a count bound per loop. */
const FRESH_LOOPS = 2;
const FRESH_PAUSE_MS = 60;
const POOLED_LOOPS = 4;
const POOLED_PAUSE_MS = 20;
const PINNED = 2;
const PINNED_PAUSE_MS = 100;
const MAX_PER_LOOP = 5_000;

let server: ServerProcess;
let agent: AgentProcess;
const sources: X509Source[] = [];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** An X509Source for one of this uid's identities, once the agent serves it. */
async function sourceFor(id: string): Promise<X509Source> {
  const s = await X509Source.create({ socketPath: agent.address, picker: (svids) => svids.find((v) => v.id === id) ?? svids[0]! });
  sources.push(s);
  const end = Date.now() + 20_000;
  while (!s.context.svids.some((v) => v.id === id)) {
    if (Date.now() > end) throw new Error(`the agent never served ${id}`);
    await sleep(100);
  }
  return s;
}

before(async () => {
  server = await startServerProcess({ trustDomain: TD });
  const token = generateJoinToken(server, ALIAS);
  for (const id of [SERVER_ID, CLIENT_ID]) {
    ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', id, '-selector', `unix:uid:${MY_UID}`, '-x509SVIDTTL', String(TTL_SECONDS)]), `entry create ${id}`);
  }
  agent = await startAgentProcess({ server, joinToken: token });
});

after(async () => {
  for (const s of sources) s.close();
  await agent?.stop();
  await server?.stop();
  if (process.env['SPINDLE_E2E_KEEP']) {
    if (agent) writeFileSync(join(agent.dir, 'agent.log'), agent.log());
    if (server) writeFileSync(join(server.dir, 'server.log'), server.log());
    console.log(`# kept ${agent?.dir} and ${server?.dir}`);
  } else {
    for (const d of [agent?.dir, server?.dir]) if (d) rmSync(d, { recursive: true, force: true });
  }
});

interface Answer {
  /** The server's leaf serial, as the client saw it on this request's connection. */
  serverSerial: string;
  socket: tls.TLSSocket;
  /** Whether this request opened its connection (else it reused a kept-alive one). */
  reused: boolean;
}

test(`SVIDs rotating every ~${TTL_SECONDS / 2} s on both sides for ${LOAD_MS / 1000} s under load: no failed request, new connections get new SVIDs, live ones keep working`, { timeout: 150_000 }, async () => {
  const serverSource = await sourceFor(SERVER_ID);
  const clientSource = await sourceFor(CLIENT_ID);
  assert.equal(serverSource.getX509Svid().id, SERVER_ID);
  assert.equal(clientSource.getX509Svid().id, CLIENT_ID);

  // Server: the client's leaf serial and ID, seen per request.
  const clientSerialsAtServer = new Set<string>();
  const refusals: string[] = [];
  const httpsServer = createMtlsHttpsServer(serverSource, serverSource, authorizeID(CLIENT_ID), (req, res) => {
    const socket = req.socket as tls.TLSSocket;
    const serial = socket.getPeerX509Certificate()?.serialNumber ?? '';
    clientSerialsAtServer.add(serial);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ peer: peerIdOf(socket), clientSerial: serial }));
  });
  httpsServer.on('spiffeRejected', (err: Error) => refusals.push(err.message));
  httpsServer.on('tlsClientError', (err: Error) => refusals.push(`tlsClientError: ${err.message}`));
  let serverRotations = 0;
  serverSource.on('updated', () => serverRotations++);
  await new Promise<void>((resolve) => httpsServer.listen(0, '127.0.0.1', resolve));
  const port = (httpsServer.address() as AddressInfo).port;

  const opts = mtlsClientOptions(clientSource, clientSource, authorizeID(SERVER_ID));
  const failures: string[] = [];
  const request = (reqOpts: https.RequestOptions): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = https.request({ ...reqOpts, host: '127.0.0.1', port, path: '/', method: 'GET' }, (res) => {
        // The socket and the server's certificate, read now: at the end a keep-alive agent has
        // taken the socket back, and another has closed it.
        const socket = res.socket as tls.TLSSocket;
        // (getPeerCertificate: on a client socket Node 20's getPeerX509Certificate answers once.)
        const serverSerial = socket.getPeerCertificate().serialNumber ?? '';
        let serverId: string | undefined;
        try {
          serverId = peerIdOf(socket);
        } catch (err) {
          serverId = `not verified: ${(err as Error).message}`;
        }
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('error', reject);
        res.on('end', () => {
          try {
            assert.equal(res.statusCode, 200, `status ${res.statusCode}: ${body}`);
            const parsed = JSON.parse(body) as { peer: string; clientSerial: string };
            assert.equal(parsed.peer, CLIENT_ID, 'the server saw the client ID');
            assert.equal(serverId, SERVER_ID, 'the client verified the server ID');
            assert.notEqual(serverSerial, '', 'the server presented a certificate');
            resolve({ serverSerial, socket, reused: req.reusedSocket });
          } catch (err) {
            reject(err as Error);
          }
        });
      });
      req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
      req.on('error', reject);
      req.end();
    });

  const start = Date.now();
  const end = start + LOAD_MS;
  let requests = 0;
  const loop = async (what: string, pause: number, call: () => Promise<Answer>, seen: (a: Answer) => void): Promise<void> => {
    for (let i = 0; i < MAX_PER_LOOP && Date.now() < end; i++) {
      try {
        seen(await call());
        requests++;
      } catch (err) {
        failures.push(`${what} at +${Date.now() - start} ms: ${(err as Error).message}`);
      }
      await sleep(pause);
    }
  };

  const keepAliveAgent = (maxSockets: number): https.Agent => new SpiffeHttpsAgent(clientSource, authorizeID(SERVER_ID), { keepAlive: true, maxSockets });
  // Fresh connections: the options' own agent neither keeps connections alive nor resumes sessions.
  const serverSerialsFresh = new Set<string>();
  let freshReused = 0;
  const fresh = (): Promise<Answer> => request({ ...opts });
  // Pooled keep-alive: options spread per request (current SVID; the pool is keyed by it).
  const pool = keepAliveAgent(POOLED_LOOPS);
  let pooledReused = 0;
  // Pinned: each on its own agent, options taken once now, so every request goes over the first connection.
  const pinned = await Promise.all(
    Array.from({ length: PINNED }, async () => {
      const agent1 = keepAliveAgent(1);
      const frozen = { ...opts, agent: agent1 };
      const first = await request(frozen);
      const p = { agent: agent1, frozen, serial: first.serverSerial, sockets: new Set([first.socket]), serials: new Set([first.serverSerial]), count: 1, lastOkAt: Date.now() };
      return p;
    }),
  );
  const pinnedSerial = pinned[0]!.serial;

  await Promise.all([
    ...Array.from({ length: FRESH_LOOPS }, (_, i) =>
      loop(`fresh ${i}`, FRESH_PAUSE_MS, fresh, (a) => {
        serverSerialsFresh.add(a.serverSerial);
        if (a.reused) freshReused++;
      }),
    ),
    ...Array.from({ length: POOLED_LOOPS }, (_, i) =>
      loop(`pooled ${i}`, POOLED_PAUSE_MS, () => request({ ...opts, agent: pool }), (a) => {
        if (a.reused) pooledReused++;
      }),
    ),
    ...pinned.map((p, i) =>
      loop(`pinned ${i}`, PINNED_PAUSE_MS, () => request(p.frozen), (a) => {
        p.sockets.add(a.socket);
        p.serials.add(a.serverSerial);
        p.count++;
        p.lastOkAt = Date.now();
      }),
    ),
  ]);
  pool.destroy();
  for (const p of pinned) p.agent.destroy();
  await new Promise<void>((resolve) => httpsServer.close(() => resolve()));
  httpsServer.closeAllConnections();

  const summary = `${requests} requests, ${serverSerialsFresh.size} server SVIDs seen by the client, ${clientSerialsAtServer.size} client SVIDs seen by the server, ${serverRotations} X509 context updates`;
  assert.deepEqual(failures, [], `failed requests (${summary})`);
  assert.deepEqual(refusals, [], `the server refused connections (${summary})`);
  assert.ok(serverSerialsFresh.size >= MIN_ROTATIONS, `at least ${MIN_ROTATIONS} server SVIDs on new connections: ${summary}`);
  assert.ok(clientSerialsAtServer.size >= MIN_ROTATIONS, `at least ${MIN_ROTATIONS} client SVIDs seen by the server: ${summary}`);
  assert.equal(freshReused, 0, 'fresh requests each opened a connection');
  assert.ok(pooledReused > 0, 'pooled requests reused kept-alive connections');
  for (const [i, p] of pinned.entries()) {
    // One connection all along, still presenting the server SVID it was opened with, while the
    // server rotated: requests kept succeeding on it to the end of the run.
    assert.equal(p.sockets.size, 1, `pinned ${i} stayed on one connection`);
    assert.deepEqual([...p.serials], [pinnedSerial], `pinned ${i} kept the server SVID of its handshake`);
    assert.ok(p.lastOkAt >= end - 2_000, `pinned ${i} worked to the end (last success at +${p.lastOkAt - start} ms)`);
    assert.ok(p.count > (LOAD_MS / PINNED_PAUSE_MS) / 4, `pinned ${i} carried requests throughout (${p.count})`);
  }
  assert.ok([...serverSerialsFresh].some((s) => s !== pinnedSerial), 'new connections saw newer server SVIDs than the pinned ones');
});

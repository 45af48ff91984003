// The SPIFFE bundle endpoint of a real spindle-server process, configured with SPIRE's HCL
// stanza: what it serves matches `bundle show -format spiffe`, a client authenticates it with
// the trust domain's bundle (https_spiffe), it stops with the server, and a busy port stops the
// server before anything is created, with one operator message.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { parseBundle } from '../spiffe/bundle.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { verifyX509Svid } from '../spiffe/x509/index.js';
import { freePort, serverBin, startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';

const TD = parseTrustDomain('example.org');
const dirs: string[] = [];
const servers: ServerProcess[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function configFile(dir: string, port: number): string {
  const path = join(dir, 'server.conf');
  writeFileSync(
    path,
    `server {
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = ${port}
      refresh_hint = "2m"
      profile "https_spiffe" {}
    }
  }
}
`,
  );
  return path;
}

function get(port: number): Promise<{ status: number; type: string | undefined; body: Buffer; chain: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false, agent: false, timeout: 15_000 }, (res) => {
      const chain: Buffer[] = [];
      let c: PeerCertificate | undefined = (res.socket as TLSSocket).getPeerCertificate(true);
      const seen = new Set<string>();
      while (c?.raw !== undefined && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        chain.push(c.raw);
        c = (c as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
      }
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: Buffer.concat(parts), chain }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('spindle-server with federation.bundle_endpoint', () => {
  test('serves the bundle it holds, authenticated by its own SVID, and stops with the server', async () => {
    const dir = tempDir('spindle-fedep-');
    dirs.push(dir);
    const port = await freePort();
    const server = await startServerProcess({ dir, extraArgs: ['-config', configFile(dir, port)] });
    servers.push(server);
    assert.match(server.log(), new RegExp(`serving the SPIFFE bundle endpoint.*https://127\\.0\\.0\\.1:${port}/`));
    assert.match(server.log(), /spiffe:\/\/example\.org\/spire\/server/);

    const r = await get(port);
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/json');
    const served = parseBundle(TD, r.body);
    assert.equal(served.refreshHintSeconds, 120);
    const shown = server.cli(['bundle', 'show', '-format', 'spiffe']);
    assert.equal(shown.status, 0, shown.stderr);
    const held = parseBundle(TD, shown.stdout);
    assert.equal(served.sequence, held.sequence);
    held.refreshHintSeconds = 120;
    assert.ok(served.equals(held), 'the endpoint serves the bundle `bundle show` prints');
    assert.equal(verifyX509Svid(r.chain, served).id, 'spiffe://example.org/spire/server');

    assert.equal(await server.stop('SIGTERM'), 0);
    await assert.rejects(get(port), 'the endpoint is gone with the server');
  });

  test('a busy endpoint port: one message naming the setting, exit 1, nothing created', async () => {
    const dir = tempDir('spindle-fedep-');
    dirs.push(dir);
    const busy = createServer();
    const port = await new Promise<number>((r) => busy.listen(0, '127.0.0.1', () => r((busy.address() as { port: number }).port)));
    try {
      const agentPort = await freePort();
      const dataDir = join(dir, 'data');
      const r = spawnSync(
        serverBin,
        ['run', '-config', configFile(dir, port), '-trustDomain', 'example.org', '-dataDir', dataDir, '-socketPath', join(dir, 'admin', 'api.sock'), '-bindAddress', '127.0.0.1', '-serverPort', String(agentPort)],
        { cwd: dir, encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(r.status, 1, r.stderr);
      assert.equal(
        r.stderr,
        `Error: cannot listen on 127.0.0.1:${port} for the SPIFFE bundle endpoint: port ${port} is already in use by another process (is spindle-server already running?); stop it or choose another port with federation.bundle_endpoint.port\n`,
      );
      assert.equal(existsSync(dataDir), false, 'no data directory (CA, datastore) was created');
    } finally {
      busy.close();
    }
  });
});

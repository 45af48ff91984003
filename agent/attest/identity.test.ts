// AgentIdentity against a real spindle-server process: attestation with a join token, the
// files it keeps in data_dir, resuming on restart, bootstrapping the bundle, and renewal.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { AgentIdentity, type AgentIdentityLogger } from './identity.js';
import { JoinTokenAgentAttestor } from '../../attestors/node/join_token/agent.js';
import { syncAuthorized, type AgentApiConnection } from '../client/serverclient.js';
import type { SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import { pemToCertificates, pemToPrivateKey } from '../../spiffe/pem.js';
import { certificateMatchesKey, parseCertificate } from '../../spiffe/x509/index.js';
import { importPrivateKeyPkcs8 } from '../../spiffe/keys.js';
import { startServerProcess, type ServerProcess } from '../../test/support/serverproc.js';

const td: TrustDomain = parseTrustDomain('example.org');
let server: ServerProcess;
let bundlePem: string;
const work = mkdtempSync(join(tmpdir(), 'spindle-identity-'));

const logs: string[] = [];
const logger: AgentIdentityLogger = {
  info: (o, m) => void logs.push(`INFO ${m} ${JSON.stringify(o)}`),
  warn: (o, m) => void logs.push(`WARN ${m} ${JSON.stringify(o)}`),
  error: (o, m) => void logs.push(`ERROR ${m} ${JSON.stringify(o)}`),
};

function ok(r: { status: number | null; stdout: string; stderr: string }): string {
  assert.equal(r.status, 0, `CLI failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function newToken(): string {
  return /^Token: (\S+)$/m.exec(ok(server.cli(['token', 'generate'])))![1]!;
}

let dirs = 0;
const freshDir = (): string => join(work, `agent-${++dirs}`, 'data');

function startOpts(dataDir: string, extra: Partial<Parameters<typeof AgentIdentity.start>[0]> = {}): Parameters<typeof AgentIdentity.start>[0] {
  return { dataDir, trustDomain: td, address: { host: '127.0.0.1', port: server.port }, attestor: undefined, logger, ...extra };
}

/** The first SyncAuthorized message on this connection, or the stream's error. */
function firstSync(conn: AgentApiConnection): Promise<SyncAuthorizedResponse> {
  return new Promise((resolve, reject) => {
    const s = syncAuthorized(conn.client);
    s.on('data', (m: SyncAuthorizedResponse) => {
      resolve(m);
      s.cancel();
    });
    s.on('error', (e: ServiceError) => {
      if (e.code !== status.CANCELLED) reject(e);
    });
  });
}

const serialOnDisk = (dataDir: string): string => parseCertificate(pemToCertificates(readFileSync(join(dataDir, 'agent_svid.pem'), 'utf8'))[0]!).serialHex;

function agentCount(agentId: string): number {
  const out = JSON.parse(ok(server.cli(['agent', 'list', '-output', 'json']))) as { agents?: Array<{ spiffeId: string }> };
  return (out.agents ?? []).filter((a) => a.spiffeId === agentId).length;
}

before(async () => {
  server = await startServerProcess({ trustDomain: td });
  bundlePem = ok(server.cli(['bundle', 'show']));
});

after(async () => {
  await server?.stop();
});

describe('AgentIdentity', () => {
  let firstDir: string;
  let firstId: string;
  let firstSerial: string;

  test('start with a join token attests and writes the four files (key 0600, data dir 0700)', async () => {
    firstDir = freshDir();
    mkdirSync(firstDir, { recursive: true, mode: 0o755 }); // an existing, too open dir gets tightened
    const token = newToken();
    const id = await AgentIdentity.start(startOpts(firstDir, { attestor: new JoinTokenAgentAttestor(token), trustBundlePem: bundlePem }));
    try {
      firstId = id.agentId;
      assert.equal(id.agentId, `spiffe://example.org/spire/agent/join_token/${token}`);
      for (const f of ['agent_svid.pem', 'agent_svid.key', 'bundle.pem', 'agent_data.json']) assert.ok(existsSync(join(firstDir, f)), f);
      assert.equal(statSync(join(firstDir, 'agent_svid.key')).mode & 0o777, 0o600);
      assert.equal(statSync(firstDir).mode & 0o777, 0o700);
      const chain = pemToCertificates(readFileSync(join(firstDir, 'agent_svid.pem'), 'utf8'));
      const key = importPrivateKeyPkcs8(pemToPrivateKey(readFileSync(join(firstDir, 'agent_svid.key'), 'utf8')));
      assert.ok(certificateMatchesKey(chain[0]!, key), 'the stored key belongs to the stored SVID');
      assert.deepEqual(parseCertificate(chain[0]!).uriSans, [id.agentId]);
      assert.deepEqual(
        pemToCertificates(readFileSync(join(firstDir, 'bundle.pem'), 'utf8')),
        pemToCertificates(bundlePem),
      );
      const data = JSON.parse(readFileSync(join(firstDir, 'agent_data.json'), 'utf8')) as { agentId: string; reattestable: boolean };
      assert.deepEqual(data, { agentId: id.agentId, reattestable: false });
      assert.equal(id.svidNotAfter().getTime(), parseCertificate(chain[0]!).notAfter.getTime());
      firstSerial = parseCertificate(chain[0]!).serialHex;
      // The connection authenticates with that SVID.
      const first = await firstSync(id.connection());
      assert.equal(first.snapshot, true);
    } finally {
      id.stop();
    }
  });

  test('a second start with the same data dir and no attestor resumes (same agent, same SVID, no attestation)', async () => {
    const attestedBefore = (server.log().match(/agent attested agent_id=/g) ?? []).length;
    assert.ok(attestedBefore >= 1, 'the server logs attestations');
    const id = await AgentIdentity.start(startOpts(firstDir));
    try {
      assert.equal(id.agentId, firstId);
      assert.equal(serialOnDisk(firstDir), firstSerial, 'the stored SVID was reused, not replaced');
      const first = await firstSync(id.connection());
      assert.equal(first.snapshot, true);
      assert.equal((server.log().match(/agent attested agent_id=/g) ?? []).length, attestedBefore, 'no new attestation on the server');
      assert.equal(agentCount(firstId), 1);
      assert.ok(logs.some((l) => l.startsWith('INFO resuming with the stored agent SVID')));
    } finally {
      id.stop();
    }
  });

  test('an expired stored SVID without an attestor is a clear error', async () => {
    const later = new Date(Date.now() + 3 * 24 * 3600_000);
    await assert.rejects(AgentIdentity.start(startOpts(firstDir, { now: () => later })), /expired.*-joinToken|-joinToken.*expired/s);
  });

  test('no stored SVID and no attestor: a clear error', async () => {
    await assert.rejects(AgentIdentity.start(startOpts(freshDir())), /no agent SVID.*-joinToken/);
  });

  test('no bundle and no insecureBootstrap: a clear error, and the token is not consumed', async () => {
    const dir = freshDir();
    const token = newToken();
    await assert.rejects(AgentIdentity.start(startOpts(dir, { attestor: new JoinTokenAgentAttestor(token) })), /no trust bundle.*-trustBundle.*-insecureBootstrap/);
    assert.ok(!existsSync(join(dir, 'agent_svid.pem')));
    // The token still works.
    const id = await AgentIdentity.start(startOpts(dir, { attestor: new JoinTokenAgentAttestor(token), trustBundlePem: bundlePem }));
    assert.equal(id.agentId, `spiffe://example.org/spire/agent/join_token/${token}`);
    id.stop();
  });

  test('insecureBootstrap fetches the bundle from the server and keeps it', async () => {
    const dir = freshDir();
    const token = newToken();
    const id = await AgentIdentity.start(startOpts(dir, { attestor: new JoinTokenAgentAttestor(token), insecureBootstrap: true }));
    try {
      assert.equal(id.agentId, `spiffe://example.org/spire/agent/join_token/${token}`);
      assert.deepEqual(pemToCertificates(readFileSync(join(dir, 'bundle.pem'), 'utf8')), pemToCertificates(bundlePem));
      assert.ok(logs.some((l) => l.startsWith('WARN insecure bootstrap')));
      await firstSync(id.connection());
    } finally {
      id.stop();
    }
  });

  test('renew() gets a new serial, persists it, and the connection uses it; the old SVID is refused afterwards', async () => {
    const dir = freshDir();
    const id = await AgentIdentity.start(startOpts(dir, { attestor: new JoinTokenAgentAttestor(newToken()), trustBundlePem: bundlePem }));
    try {
      const oldConn = id.connection();
      const oldSerial = serialOnDisk(dir);
      let changes = 0;
      id.onConnectionChange(() => changes++);
      await firstSync(oldConn);

      await id.renew();
      const newSerial = serialOnDisk(dir);
      assert.notEqual(newSerial, oldSerial);
      assert.equal(changes, 1, 'listeners hear about the new connection');
      assert.notEqual(id.connection(), oldConn);
      const chain = pemToCertificates(readFileSync(join(dir, 'agent_svid.pem'), 'utf8'));
      const key = importPrivateKeyPkcs8(pemToPrivateKey(readFileSync(join(dir, 'agent_svid.key'), 'utf8')));
      assert.ok(certificateMatchesKey(chain[0]!, key), 'the new key is stored with the new SVID');
      assert.equal(statSync(join(dir, 'agent_svid.key')).mode & 0o777, 0o600);

      // The server accepts the new SVID (which retires the old one) ...
      await firstSync(id.connection());
      // ... and refuses the old one from then on.
      await assert.rejects(firstSync(oldConn), (e: ServiceError) => e.code === status.PERMISSION_DENIED && /superseded/.test(e.details));

      // A restart resumes with the renewed SVID.
      id.stop();
      const again = await AgentIdentity.start(startOpts(dir));
      try {
        assert.equal(again.agentId, id.agentId);
        await firstSync(again.connection());
      } finally {
        again.stop();
      }
    } finally {
      id.stop();
    }
  });

  test('concurrent renew() calls make one renewal', async () => {
    const dir = freshDir();
    const id = await AgentIdentity.start(startOpts(dir, { attestor: new JoinTokenAgentAttestor(newToken()), trustBundlePem: bundlePem }));
    try {
      let changes = 0;
      id.onConnectionChange(() => changes++);
      const before = (server.log().match(/renewed agent SVID agent_id=/g) ?? []).length;
      await Promise.all([id.renew(), id.renew(), id.renew()]);
      assert.equal(changes, 1);
      assert.equal((server.log().match(/renewed agent SVID agent_id=/g) ?? []).length - before, 1);
      await firstSync(id.connection());
    } finally {
      id.stop();
    }
  });

  test('renew() of an evicted agent rejects (and the caller learns why)', async () => {
    const dir = freshDir();
    const id = await AgentIdentity.start(startOpts(dir, { attestor: new JoinTokenAgentAttestor(newToken()), trustBundlePem: bundlePem }));
    try {
      const serial = serialOnDisk(dir);
      ok(server.cli(['agent', 'evict', '-spiffeID', id.agentId]));
      await assert.rejects(id.renew(), (e: ServiceError) => e.code === status.PERMISSION_DENIED);
      assert.equal(serialOnDisk(dir), serial, 'nothing replaced on disk');
    } finally {
      id.stop();
    }
  });
});

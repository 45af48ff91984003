// Logs never contain private keys, join tokens or full JWTs: a server and an agent at DEBUG,
// attested with a join token, issue X.509 and JWT SVIDs, go through error paths (bad join
// tokens, bad JWTs, bad requests), and then both logs are searched for every secret.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { JWTSVIDRequest, ValidateJWTSVIDRequest, X509SVIDRequest, X509SVIDResponse, JWTSVIDResponse } from '../../proto/gen/workload/workload.js';
import { AttestAgentRequest } from '../../proto/gen/spindle/agent/v1/agent.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { createCsr } from '../../spiffe/x509/index.js';
import { generateJoinToken } from '../support/agentproc.js';
import { startSecurityCluster, type SecurityCluster } from './fuzz/cluster.js';
import { connectRaw, frame, rawCall, rawUnary } from './fuzz/wire.js';

let c: SecurityCluster;
before(async () => {
  c = await startSecurityCluster();
});
after(async () => {
  await c?.stop();
});

const JWT_RE = /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{10,}/;

test('after issuing, minting and failing at DEBUG, neither log holds a private key, a join token or a JWT', async () => {
  const secrets: Array<[string, string]> = [];
  const hdr = { 'workload.spiffe.io': 'true' };
  const wl = connectRaw(c.raw.workload);
  const attest = connectRaw(c.raw.agentAnonymous);
  try {
    // X509-SVID (its key) and JWT-SVIDs through the Workload API.
    const x = await rawCall(wl, { path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: hdr, body: [frame(X509SVIDRequest.encode({}).finish())], stopAfterMessages: 1 });
    const svid = X509SVIDResponse.decode(x.messages[0]!).svids[0]!;
    secrets.push(['workload SVID key (base64 DER)', Buffer.from(svid.x509SvidKey).toString('base64').slice(0, 60)]);
    const j = await rawUnary(wl, '/SpiffeWorkloadAPI/FetchJWTSVID', JWTSVIDRequest.encode({ audience: ['logs-test'], spiffeId: '' }).finish(), hdr);
    assert.equal(j.code, 0, j.details);
    const token = JWTSVIDResponse.decode(j.messages[0]!).svids[0]!.svid;
    secrets.push(['JWT-SVID from the Workload API', token], ['JWT-SVID signature', token.split('.')[2]!]);
    // Validate it (ok) and broken variants (error paths that might echo the token).
    assert.equal((await rawUnary(wl, '/SpiffeWorkloadAPI/ValidateJWTSVID', ValidateJWTSVIDRequest.encode({ audience: 'logs-test', svid: token }).finish(), hdr)).code, 0);
    for (const bad of [`${token}x`, token.split('.').slice(0, 2).join('.') + '.', `${token.split('.')[0]}.${token.split('.')[1]}.AAAA`]) {
      const r = await rawUnary(wl, '/SpiffeWorkloadAPI/ValidateJWTSVID', ValidateJWTSVIDRequest.encode({ audience: 'logs-test', svid: bad }).finish(), hdr);
      assert.equal(r.code, 3, r.details);
      assert.ok(!r.details.includes(token.split('.')[2]!), 'the error echoes the signature');
    }
    // A JWT minted by the admin CLI.
    const minted = c.server.cli(['jwt', 'mint', '-spiffeID', 'spiffe://example.org/minted', '-audience', 'logs-test']);
    assert.equal(minted.status, 0, minted.stderr);
    secrets.push(['JWT from jwt mint', minted.stdout.trim()]);
    // Join tokens: an unused one and a used one presented again, a near-miss, garbage.
    const unused = generateJoinToken(c.server);
    secrets.push(['unused join token', unused]);
    const keys = await generateKeyPair();
    for (const t of [c.joinToken, unused.replace(/[a-f]/, (ch) => ch.toUpperCase()), `${unused.slice(0, -1)}${unused.endsWith('0') ? '1' : '0'}`, 'x'.repeat(100)]) {
      const req = AttestAgentRequest.encode({ step: { $case: 'params', value: { data: { type: 'join_token', payload: Buffer.from(t) }, csr: createCsr(keys.privateKey) } } }).finish();
      const r = await rawCall(attest, { path: '/spindle.agent.v1.AgentAPI/AttestAgent', body: [frame(req)] });
      assert.equal(r.code, 7, `attest with a bad token: ${r.code} ${r.details}`);
      assert.ok(!r.details.includes(t), 'the attestation error echoes the token');
    }
  } finally {
    wl.destroy();
    attest.destroy();
  }
  // Let the processes flush their logs.
  await c.probe();
  await new Promise((r) => setTimeout(r, 300));

  // Keys on disk: CA, JWT signer, agent SVID key.
  const keyB64 = (pem: string): string => exportPrivateKeyPkcs8(createPrivateKey(pem)).toString('base64').slice(0, 60);
  secrets.push(
    ['X.509 CA key', keyB64(readFileSync(join(c.server.dataDir, 'keys', 'x509-CA-A.key'), 'utf8'))],
    ['JWT signing key', keyB64(readFileSync(join(c.server.dataDir, 'keys', 'JWT-Signer-A.key'), 'utf8'))],
    ['agent SVID key', keyB64(c.agentKeyPem)],
  );

  for (const [name, log] of [['server', c.server.log()], ['agent', c.agent.log()]] as const) {
    assert.ok(log.length > 1000 && /"level":20|DEBUG/i.test(log), `${name} log is at DEBUG and not empty (${log.length} bytes)`);
    assert.doesNotMatch(log, /PRIVATE KEY/, `${name} log holds a PEM private key`);
    const jwt = JWT_RE.exec(log);
    assert.equal(jwt, null, `${name} log holds a JWT: ${jwt?.[0].slice(0, 40)}...`);
    for (const [what, value] of secrets) assert.ok(!log.includes(value), `${name} log holds the ${what}`);
    // The join token in use may appear only as part of the agent's SPIFFE ID (SPIRE's agent ID
    // embeds it: spiffe://<td>/spire/agent/join_token/<token>), never on its own.
    const bare = log.split(`join_token/${c.joinToken}`).join('');
    assert.ok(!bare.includes(c.joinToken), `${name} log holds the join token outside the agent ID`);
  }
});

// Logs never contain private keys, join tokens or full JWTs: a server and an agent at DEBUG,
// attested with a join token, issue X.509 and JWT SVIDs, go through error paths (bad join
// tokens, bad JWTs, bad requests), and then both logs are searched for every secret.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { JWTSVIDRequest, ValidateJWTSVIDRequest, X509SVIDRequest, X509SVIDResponse, JWTSVIDResponse } from '../../proto/gen/workload/workload.js';
import { AttestAgentRequest } from '../../proto/gen/spindle/agent/v1/agent.js';
import { generateKeyPair } from '../../spiffe/keys.js';
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

/**
 * The private part of a key (EC: the scalar d; RSA: the private exponent d, first 32 bytes) as
 * base64url, base64 and hex: what a log line holding the key in any usual form contains.
 */
function secretForms(name: string, key: KeyObject): Array<[string, string]> {
  const d = Buffer.from((key.export({ format: 'jwk' }) as { d: string }).d, 'base64url').subarray(0, 32);
  assert.equal(d.length, 32, `${name}: a private part of 32 bytes`);
  return [
    [`${name} (private part, base64url)`, d.toString('base64url').slice(0, 40)],
    [`${name} (private part, base64)`, d.toString('base64').slice(0, 40)],
    [`${name} (private part, hex)`, d.toString('hex')],
  ];
}

const JWT_RE = /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{10,}/;

test('after issuing, minting and failing at DEBUG, neither log holds a private key, a join token or a JWT', async () => {
  const secrets: Array<[string, string]> = [];
  let workloadKey: KeyObject | undefined;
  const hdr = { 'workload.spiffe.io': 'true' };
  const wl = connectRaw(c.raw.workload);
  const attest = connectRaw(c.raw.agentAnonymous);
  try {
    // X509-SVID (its key) and JWT-SVIDs through the Workload API.
    const x = await rawCall(wl, { path: '/SpiffeWorkloadAPI/FetchX509SVID', headers: hdr, body: [frame(X509SVIDRequest.encode({}).finish())], stopAfterMessages: 1 });
    const svid = X509SVIDResponse.decode(x.messages[0]!).svids[0]!;
    workloadKey = createPrivateKey({ key: Buffer.from(svid.x509SvidKey), format: 'der', type: 'pkcs8' });
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
  // Keys on disk (CA, JWT signer, agent SVID key) and the workload's: searched for by their
  // SECRET part (the private scalar), in the encodings a careless log line would use. A prefix of
  // the PKCS#8 DER would not do: its first ~36 bytes are the same for every key of a curve.
  secrets.push(
    ...secretForms('X.509 CA key', createPrivateKey(readFileSync(join(c.server.dataDir, 'keys', 'x509-CA-A.key'), 'utf8'))),
    ...secretForms('JWT signing key', createPrivateKey(readFileSync(join(c.server.dataDir, 'keys', 'JWT-Signer-A.key'), 'utf8'))),
    ...secretForms('agent SVID key', createPrivateKey(c.agentKeyPem)),
    ...secretForms('workload SVID key', workloadKey!),
  );
  // Every log line written: stop both processes and wait until their output is closed (read to
  // the end), rather than waiting some time and hoping the last lines have come.
  await c.probe();
  const closed = [once(c.server.proc, 'close'), once(c.agent.proc, 'close')];
  await c.stop();
  await Promise.all(closed);

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

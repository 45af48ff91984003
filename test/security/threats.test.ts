// Threats a SPIFFE deployment must withstand that no other test covered end to end, against
// real processes (docs/security.md lists them all).
// Forgeries use the server's own CA and JWT keys (read from its data dir, as an attacker who
// stole nothing could not): every forged credential differs from a valid one in exactly the
// property under test, and a control case made the same way but valid is accepted, so each
// refusal is caused by that property.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createPrivateKey, createPublicKey, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ValidateJWTSVIDRequest, JWTSVIDRequest } from '../../proto/gen/workload/workload.js';
import { SyncAuthorizedRequest, BatchNewX509SVIDRequest } from '../../proto/gen/spindle/agent/v1/agent.js';
import { parseSpiffeId } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, exportPublicKeySpki, generateKeyPair, jwsAlgFor, publicKeyToJwk } from '../../spiffe/keys.js';
import { pemToCertificates, privateKeyToPem, certificatesToPem } from '../../spiffe/pem.js';
import { createIssuer, createSelfSignedCa, issueX509Svid, parseCertificate, type Issuer } from '../../spiffe/x509/index.js';
import { parseTrustDomain } from '../../spiffe/id.js';
import { startSecurityCluster, type SecurityCluster } from './fuzz/cluster.js';
import { codeName, connectRaw, frame, rawCall, rawUnary, type RawResult } from './fuzz/wire.js';

let c: SecurityCluster;
let caIssuer: Issuer;
let jwtKey: KeyObject;
let jwtKid: string;

before(async () => {
  c = await startSecurityCluster();
  const caCert = pemToCertificates(c.caPem)[0]!;
  const caKey = createPrivateKey(readFileSync(join(c.server.dataDir, 'keys', 'x509-CA-A.key'), 'utf8'));
  caIssuer = createIssuer([caCert], caKey);
  jwtKey = createPrivateKey(readFileSync(join(c.server.dataDir, 'keys', 'JWT-Signer-A.key'), 'utf8'));
  const jwks = JSON.parse(c.server.cli(['bundle', 'show', '-format', 'spiffe']).stdout) as { keys: Array<{ use: string; kid?: string; x?: string; n?: string }> };
  const mine = publicKeyToJwk(createPublicKey(jwtKey)) as { x?: string; n?: string };
  const jwk = jwks.keys.find((k) => k.use === 'jwt-svid' && (k.x ?? k.n) === (mine.x ?? mine.n));
  assert.ok(jwk?.kid, 'the JWT signing key is in the bundle with a kid');
  jwtKid = jwk.kid;
});
after(async () => {
  await c?.stop();
});

// ---------------------------------------------------------------------------------------------
// Agent API: forged or stale agent SVIDs

async function agentApiAs(certPem: string, keyPem: string): Promise<{ sync: RawResult; sign: RawResult }> {
  const s = connectRaw({ kind: 'tls', host: '127.0.0.1', port: c.server.port, caPem: c.caPem, certPem, keyPem });
  try {
    const sync = await rawCall(s, { path: '/spindle.agent.v1.AgentAPI/SyncAuthorized', body: [frame(SyncAuthorizedRequest.encode({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map() }).finish())], stopAfterMessages: 1 });
    const sign = await rawUnary(s, '/spindle.agent.v1.AgentAPI/BatchNewX509SVID', BatchNewX509SVIDRequest.encode({ params: [] }).finish());
    return { sync, sign };
  } finally {
    s.destroy();
  }
}

async function forgedAgentSvid(opts: { now: Date; ttlSeconds: number; issuer?: Issuer; id?: string }): Promise<{ certPem: string; keyPem: string }> {
  const keys = await generateKeyPair();
  const serialHex = parseCertificate(pemToCertificates(c.agentCertPem)[0]!).serialHex;
  const cert = issueX509Svid({
    id: parseSpiffeId(opts.id ?? c.agentId),
    publicKey: keys.publicKey,
    ttlSeconds: opts.ttlSeconds,
    issuer: opts.issuer ?? caIssuer,
    now: opts.now,
    serial: Buffer.from(serialHex, 'hex'),
  });
  return { certPem: certificatesToPem([cert.der]), keyPem: privateKeyToPem(exportPrivateKeyPkcs8(keys.privateKey)) };
}

/**
 * Refused by the agent API's own check: the server accepts any client certificate at the TLS
 * layer and verifies it itself, so every forged or stale SVID must end in UNAUTHENTICATED with
 * the explanation, and no data. A crash, a reset or a timeout (no status) is a failure here.
 */
function refused(r: RawResult, what: string): void {
  assert.equal(r.messages.length, 0, `${what}: the server answered with data`);
  assert.equal(r.code, 16, `${what}: expected UNAUTHENTICATED, got ${codeName(r.code)} ${r.details} ${r.failure ?? ''}`);
  assert.match(r.details, /no valid agent X509-SVID was presented/, what);
}

describe('agent API: forged and stale agent SVIDs', () => {
  test('control: an SVID made with the CA key, the agent ID and the current serial is accepted', async () => {
    const ok = await forgedAgentSvid({ now: new Date(), ttlSeconds: 600 });
    const r = await agentApiAs(ok.certPem, ok.keyPem);
    assert.equal(r.sync.messages.length, 1, `sync: ${codeName(r.sync.code)} ${r.sync.details}`);
    assert.equal(r.sign.code, 0, `sign: ${codeName(r.sign.code)} ${r.sign.details}`);
  });

  test('an expired agent SVID is refused (UNAUTHENTICATED), nothing synced or signed', async () => {
    const expired = await forgedAgentSvid({ now: new Date(Date.now() - 2 * 3600_000), ttlSeconds: 3600 });
    const r = await agentApiAs(expired.certPem, expired.keyPem);
    refused(r.sync, 'sync with an expired SVID');
    refused(r.sign, 'sign with an expired SVID');
  });

  test('a not-yet-valid agent SVID is refused', async () => {
    const early = await forgedAgentSvid({ now: new Date(Date.now() + 3600_000), ttlSeconds: 3600 });
    const r = await agentApiAs(early.certPem, early.keyPem);
    refused(r.sync, 'sync with a not-yet-valid SVID');
    refused(r.sign, 'sign with a not-yet-valid SVID');
  });

  test('an agent SVID of another trust domain, and one for our agent ID signed by another CA, are refused', async () => {
    const other = await generateKeyPair();
    const otherTd = parseTrustDomain('other.org');
    const otherCa = createIssuer([createSelfSignedCa({ trustDomain: otherTd, keyPair: other, ttlSeconds: 3600 })], other.privateKey);
    const foreign = await forgedAgentSvid({ now: new Date(), ttlSeconds: 600, issuer: otherCa, id: `spiffe://other.org/spire/agent/join_token/${c.joinToken}` });
    let r = await agentApiAs(foreign.certPem, foreign.keyPem);
    refused(r.sync, 'sync with another trust domain\'s SVID');
    refused(r.sign, 'sign with another trust domain\'s SVID');
    // A CA of other.org cannot issue example.org IDs through issueX509Svid, so make a self-made
    // CA for example.org (not in the bundle) and claim our agent's ID.
    const rogue = await generateKeyPair();
    const rogueCa = createIssuer([createSelfSignedCa({ trustDomain: parseTrustDomain('example.org'), keyPair: rogue, ttlSeconds: 3600 })], rogue.privateKey);
    const impostor = await forgedAgentSvid({ now: new Date(), ttlSeconds: 600, issuer: rogueCa });
    r = await agentApiAs(impostor.certPem, impostor.keyPem);
    refused(r.sync, 'sync with an SVID from a rogue CA');
    refused(r.sign, 'sign with an SVID from a rogue CA');
  });
});

// ---------------------------------------------------------------------------------------------
// Workload API: forged JWT-SVIDs through the agent's ValidateJWTSVID

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function signJwt(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject = jwtKey): string {
  const input = `${b64(header)}.${b64(claims)}`;
  const alg = jwsAlgFor(key);
  const sig = cryptoSign(alg === 'RS256' ? 'sha256' : alg === 'ES384' ? 'sha384' : 'sha256', Buffer.from(input), alg.startsWith('ES') ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${input}.${sig.toString('base64url')}`;
}

function claims(over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { sub: 'spiffe://example.org/forged', aud: ['svc'], exp: now + 300, iat: now, ...over };
}

async function validate(token: string, audience = 'svc'): Promise<RawResult> {
  const s = connectRaw(c.raw.workload);
  try {
    return await rawUnary(s, '/SpiffeWorkloadAPI/ValidateJWTSVID', ValidateJWTSVIDRequest.encode({ audience, svid: token }).finish(), { 'workload.spiffe.io': 'true' });
  } finally {
    s.destroy();
  }
}

async function assertInvalid(token: string, what: string, reason: RegExp, audience = 'svc'): Promise<void> {
  const r = await validate(token, audience);
  assert.equal(r.code, 3, `${what}: expected INVALID_ARGUMENT, got ${codeName(r.code)} ${r.details}`);
  assert.match(r.details, reason, `${what}: ${r.details}`);
  assert.ok(!r.details.includes(token), `${what}: the error echoes the token`);
}

describe('Workload API: forged JWT-SVIDs are refused by ValidateJWTSVID', () => {
  const alg = (): string => jwsAlgFor(jwtKey);

  test('control: a token signed with the JWT key, with kid, exp and audience, validates', async () => {
    const r = await validate(signJwt({ alg: alg(), kid: jwtKid, typ: 'JWT' }, claims()));
    assert.equal(r.code, 0, `${codeName(r.code)} ${r.details}`);
  });

  test('alg none', async () => {
    await assertInvalid(`${b64({ alg: 'none', kid: jwtKid })}.${b64(claims())}.`, 'alg none', /alg|algorithm/i);
  });

  test('HS256 signed with the public key as the HMAC secret (SPKI DER, PEM and JWK forms)', async () => {
    const pub = createPublicKey(jwtKey);
    for (const secret of [exportPublicKeySpki(pub), Buffer.from(pub.export({ type: 'spki', format: 'pem' }) as string), Buffer.from(JSON.stringify(publicKeyToJwk(pub)))]) {
      const input = `${b64({ alg: 'HS256', kid: jwtKid, typ: 'JWT' })}.${b64(claims())}`;
      await assertInvalid(`${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`, 'HS256 with the public key', /alg|algorithm/i);
    }
  });

  test('missing exp', async () => {
    const { exp: _omit, ...noExp } = claims();
    await assertInvalid(signJwt({ alg: alg(), kid: jwtKid }, noExp), 'missing exp', /exp/i);
  });

  test('missing kid: only a key of the sub\'s trust domain that verifies the signature is accepted', async () => {
    // A token without a kid is tried against every key of its sub's trust domain and no other
    // (go-spiffe refuses it outright; docs/security.md notes the difference).
    const foreign = await generateKeyPair();
    await assertInvalid(signJwt({ alg: jwsAlgFor(foreign.privateKey), typ: 'JWT' }, claims(), foreign.privateKey), 'missing kid, foreign key', /signature|no JWT authority/i);
    await assertInvalid(signJwt({ alg: alg(), typ: 'JWT' }, claims({ aud: ['other'] })), 'missing kid, wrong audience', /audience/i);
    await assertInvalid(signJwt({ alg: alg(), typ: 'JWT' }, claims({ exp: undefined })), 'missing kid and exp', /exp/i);
    const r = await validate(signJwt({ alg: alg(), typ: 'JWT' }, claims()));
    assert.equal(r.code, 0, `missing kid, signed by the trust domain's key: ${codeName(r.code)} ${r.details}`);
  });

  test('wrong audience, and expired', async () => {
    await assertInvalid(signJwt({ alg: alg(), kid: jwtKid }, claims({ aud: ['other'] })), 'wrong audience', /audience/i);
    const long = Math.floor(Date.now() / 1000) - 3600;
    await assertInvalid(signJwt({ alg: alg(), kid: jwtKid }, claims({ exp: long, iat: long - 300 })), 'expired', /expired/i);
  });

  test('a JWT of another trust domain (signed by its own key) and one claiming ours but signed by a foreign key', async () => {
    const foreign = await generateKeyPair();
    await assertInvalid(signJwt({ alg: jwsAlgFor(foreign.privateKey), kid: 'foreign' }, claims({ sub: 'spiffe://other.org/x' }), foreign.privateKey), 'other trust domain', /bundle|trust domain|other\.org/i);
    await assertInvalid(signJwt({ alg: jwsAlgFor(foreign.privateKey), kid: jwtKid }, claims(), foreign.privateKey), 'foreign key with our kid', /signature|key/i);
  });
});

// ---------------------------------------------------------------------------------------------
// IDs and selectors entering through the admin CLI and the Workload API

const DOT_IDS = [
  'spiffe://example.org/a/../admin',
  'spiffe://example.org/./a',
  'spiffe://example.org/a/%2e%2e/admin',
  'spiffe://example.org/a%2Fb',
  'spiffe://example.org/a//b',
  'spiffe://Example.org/a',
  'spiffe://example.org/a/',
];

function entryCount(): number {
  const r = c.server.cli(['entry', 'count']);
  assert.equal(r.status, 0, r.stderr);
  return Number(/(\d+)/.exec(r.stdout)?.[1]);
}

describe('dot-segment and encoded IDs, malformed selectors', () => {
  test('entry create, token generate, x509/jwt mint refuse them (non-zero exit naming the value); nothing is stored', () => {
    const before = entryCount();
    for (const [i, bad] of DOT_IDS.entries()) {
      // Every ID through entry create; a few through the other entry points (CLI runs cost ~0.4 s).
      const attempts: string[][] = [
        ['entry', 'create', '-parentID', c.agentId, '-spiffeID', bad, '-selector', 'unix:uid:4242'],
        ...(i < 3
          ? [
              ['entry', 'create', '-parentID', bad, '-spiffeID', 'spiffe://example.org/ok', '-selector', 'unix:uid:4242'],
              ['token', 'generate', '-spiffeID', bad],
              ['jwt', 'mint', '-spiffeID', bad, '-audience', 'x'],
              ['x509', 'mint', '-spiffeID', bad],
            ]
          : []),
      ];
      for (const args of attempts) {
        const r = c.server.cli(args);
        assert.notEqual(r.status, 0, `${args.join(' ')} succeeded:\n${r.stdout}`);
        assert.ok(!/BEGIN CERTIFICATE|eyJ|^Token: /m.test(r.stdout), `${args.join(' ')} issued something:\n${r.stdout}`);
        // The refusal names the value (as given, or JSON-quoted) and why.
        assert.ok(r.stderr.includes(bad) || r.stderr.includes(JSON.stringify(bad)), `${args.join(' ')}: the error does not name ${JSON.stringify(bad)}:\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, /\n\s+at /, `${args.join(' ')}: a stack trace instead of a message:\n${r.stderr}`);
      }
    }
    // (`uid:0` is a valid selector of type "uid": SPIRE accepts any type.)
    const selectors = ['unix', 'unix:', ':uid:0', ''];
    for (const sel of selectors) {
      const r = c.server.cli(['entry', 'create', '-parentID', c.agentId, '-spiffeID', 'spiffe://example.org/sel', '-selector', sel]);
      assert.notEqual(r.status, 0, `selector ${JSON.stringify(sel)} accepted:\n${r.stdout}`);
      assert.match(r.stderr, /selector/i, `selector ${JSON.stringify(sel)}: the error does not say what was wrong:\n${r.stderr}`);
    }
    assert.equal(entryCount(), before, 'no entry was stored');
  });

  test('FetchJWTSVID for a dot-segment or encoded variant of the caller\'s own ID: INVALID_ARGUMENT or PERMISSION_DENIED, never a token', async () => {
    const s = connectRaw(c.raw.workload);
    try {
      for (const bad of [`${c.workloadId}/../workload`, `${c.workloadId}/.`, c.workloadId.replace('/workload', '/%77orkload'), c.workloadId.toUpperCase(), `${c.workloadId}/`]) {
        const r = await rawUnary(s, '/SpiffeWorkloadAPI/FetchJWTSVID', JWTSVIDRequest.encode({ audience: ['a'], spiffeId: bad }).finish(), { 'workload.spiffe.io': 'true' });
        assert.ok(r.code === 3 || r.code === 7, `${bad}: ${codeName(r.code)} ${r.details}`);
      }
      const good = await rawUnary(s, '/SpiffeWorkloadAPI/FetchJWTSVID', JWTSVIDRequest.encode({ audience: ['a'], spiffeId: c.workloadId }).finish(), { 'workload.spiffe.io': 'true' });
      assert.equal(good.code, 0, `control: ${codeName(good.code)} ${good.details}`);
    } finally {
      s.destroy();
    }
  });
});

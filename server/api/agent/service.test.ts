// AgentApi's caller authentication, driven through its handlers with a small CA and fakes for
// the datastore, authorization cache and feed: chain verification is remembered per agent
// certificate, but the node checks run on every call and the bundle/clock invalidate it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { Bundle } from '../../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../../../spiffe/id.js';
import { generateKeyPair } from '../../../spiffe/keys.js';
import { mintJwtSvid } from '../../../spiffe/jwtsvid.js';
import { createIssuer, createSelfSignedCa, issueIntermediateCa, issueX509Svid, issueX509SvidFromCsr, parseCertificate, verifyX509Svid, type Issuer } from '../../../spiffe/x509/index.js';
import { entryWithDefaults } from '../../../test/support/entries.js';
import { freshCsr } from '../../ca/testkit.js';
import { DataStoreError, type AttestedNode, type DataStore, type RegistrationEntry } from '../../datastore/types.js';
import { EntryIndex } from '../../entries/entryindex.js';
import { AuthorizationCache } from '../../entries/authcache.js';
import type { ChangeFeed, FeedListener } from '../../entries/feed.js';
import type { CaSigner, SignedJwtSvid } from '../../ca/types.js';
import type { ApiLogger } from '../logger.js';
import { AgentApi, MAX_AUDIENCES, MAX_CSRS_PER_BATCH } from './service.js';
import type { AgentApiMetrics } from './deps.js';
import { VERIFIED_AGENT_CERT_TTL_MS } from './auth.js';
import { remoteAddressOf } from './attest.js';

const td = parseTrustDomain('example.org');
const AGENT = parseSpiffeId('spiffe://example.org/spire/agent/join_token/t1');
const WORKLOAD = parseSpiffeId('spiffe://example.org/workload');
const T0 = Date.UTC(2030, 0, 1);

const quiet: ApiLogger = { info() {}, warn() {}, error() {}, debug() {}, child: () => quiet };

/** With `intermediate`, agent certificates are issued by an intermediate CA the server lists as its intermediates. */
async function setup(opts: { intermediate?: boolean } = {}) {
  let t = T0;
  const now = (): Date => new Date(t);
  const caKeys = await generateKeyPair('ec-p256');
  const caDer = createSelfSignedCa({ trustDomain: td, keyPair: caKeys, ttlSeconds: 86400, now: now() });
  let issuer: Issuer = createIssuer([caDer], caKeys.privateKey);
  const intermediates: Buffer[] = [];
  if (opts.intermediate) {
    const interKeys = await generateKeyPair('ec-p256');
    const interDer = issueIntermediateCa({ trustDomain: td, publicKey: interKeys.publicKey, issuer, ttlSeconds: 86400, now: now() });
    intermediates.push(interDer);
    issuer = createIssuer([interDer, caDer], interKeys.privateKey);
  }
  const jwtKey = await generateKeyPair('ec-p256');
  let bundle = new Bundle(td, { x509Authorities: [caDer], sequence: 1n });
  const listeners = new Set<(b: Bundle) => void>();
  /** Chain verifications: each asks the CA for its intermediates once. */
  let verifications = 0;
  const ca: CaSigner = {
    trustDomain: td,
    signX509Svid: () => {
      throw new Error('not used');
    },
    mintJwtSvid: async (req): Promise<SignedJwtSvid> => mintJwtSvid({ id: req.id, audience: req.audience, signer: { kid: 'k', privateKey: jwtKey.privateKey }, now: now() }),
    bundle: () => bundle.clone(),
    intermediates: () => {
      verifications++;
      return intermediates;
    },
    onBundleChange: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  const agentKeys = await generateKeyPair('ec-p256');
  const agentCert = issueX509Svid({ id: AGENT, publicKey: agentKeys.publicKey, ttlSeconds: 3600, issuer, now: now() });
  const node: AttestedNode = {
    spiffeId: AGENT, attestationType: 'join_token', certSerial: agentCert.serialHex, certNotAfter: 0, newCertSerial: '', newCertNotAfter: 0,
    selectors: [], banned: false, canReattest: false, createdAt: 0, updatedAt: 0,
  };
  let stored: AttestedNode | undefined = node;
  /** While set, every datastore call fails as during a PostgreSQL outage. */
  let down = false;
  const outage = (): DataStoreError =>
    new DataStoreError('unavailable', 'datastore unavailable: cannot reach PostgreSQL at 10.0.0.9:5432 (connection refused)', {
      redacted: 'datastore unavailable: the server cannot reach its database; retry later',
    });
  const datastore = {
    getAttestedNode: async (id: SpiffeId) => {
      if (down) throw outage();
      return id === AGENT && stored ? { ...stored } : undefined;
    },
    updateAttestedNode: async (n: AttestedNode) => {
      if (down) throw outage();
      return (stored = { ...n });
    },
  } as unknown as DataStore;
  const entry = { id: 'e1', spiffeId: WORKLOAD, parentId: AGENT, selectors: [], x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: [], federatesWith: [] } as unknown as RegistrationEntry;
  const cache = { entriesFor: () => [entry], entryFor: (_a: string, id: string) => (id === entry.id ? entry : undefined), index: { authorizedEntries: () => [entry] } } as unknown as AuthorizationCache;
  const feedListeners: FeedListener[] = [];
  const feed = {
    subscribe: (l: FeedListener) => {
      feedListeners.push(l);
      return () => undefined;
    },
    revision: 0,
  } as unknown as ChangeFeed;
  const api = new AgentApi({ trustDomain: td, datastore, ca, attestors: new Map(), cache, feed, now, agentTtlSeconds: 3600, logger: quiet });
  const svc = api.service();
  /** One NewJWTSVID call presenting `cert`; resolves with the gRPC status code (0 = OK). */
  const call = (cert: Buffer | null = agentCert.der): Promise<{ code: number; details?: string }> =>
    new Promise((resolve) => {
      const fakeCall = { request: { entryId: 'e1', audience: ['a'] }, getAuthContext: () => ({ sslPeerCertificate: cert === null ? {} : { raw: cert } }) };
      (svc.newJwtsvid as unknown as (c: unknown, cb: (err: { code: number; details?: string } | null) => void) => void)(fakeCall, (err) =>
        resolve(err ? { code: err.code, details: err.details } : { code: 0 }),
      );
    });
  return {
    api,
    call,
    node: () => stored,
    setNode: (n: AttestedNode | undefined) => (stored = n),
    setDown: (d: boolean) => (down = d),
    nodeEvent: (id: SpiffeId) => feedListeners.forEach((l) => l.node?.(id, 1)),
    advance: (ms: number) => (t += ms),
    verifications: () => verifications,
    changeBundle: (b: Bundle) => {
      bundle = b;
      for (const l of listeners) l(b.clone());
    },
    issuer,
    agentKeys,
    now,
  };
}

describe('AgentApi caller authentication', () => {
  test('the chain is verified once per certificate; later calls reuse it', async () => {
    const s = await setup();
    for (let i = 0; i < 5; i++) assert.equal((await s.call()).code, 0);
    assert.equal(s.verifications(), 1, 'one chain verification for five calls');
    s.api.close();
  });

  test('ban and eviction apply to the next call even with the chain remembered', async () => {
    const s = await setup();
    assert.equal((await s.call()).code, 0);
    s.setNode({ ...s.node()!, banned: true });
    const banned = await s.call();
    assert.equal(banned.code, status.PERMISSION_DENIED);
    assert.match(banned.details ?? '', /banned/);
    s.setNode(undefined);
    assert.equal((await s.call()).code, status.PERMISSION_DENIED);
    s.api.close();
  });

  test('datastore unavailable: the node record last read authenticates; a node event drops it; agents are not told the database address', async () => {
    const s = await setup();
    assert.equal((await s.call()).code, 0);
    s.setDown(true);
    assert.equal((await s.call()).code, 0, 'served from the node record read before the outage');
    s.setDown(false);
    // The node changed (a ban, say, seen by the change feed): it is no longer trusted from memory.
    s.nodeEvent(AGENT);
    s.setDown(true);
    const r = await s.call();
    assert.equal(r.code, status.UNAVAILABLE);
    assert.equal(r.details, 'datastore unavailable: the server cannot reach its database; retry later');
    s.setDown(false);
    s.setNode({ ...s.node()!, banned: true });
    assert.equal((await s.call()).code, status.PERMISSION_DENIED, 'once back, the stored record decides');
    s.setDown(true);
    assert.equal((await s.call()).code, status.PERMISSION_DENIED, 'the banned record read last is what memory holds');
    s.api.close();
  });

  test('a superseded serial is refused even with the chain remembered', async () => {
    const s = await setup();
    assert.equal((await s.call()).code, 0);
    s.setNode({ ...s.node()!, certSerial: 'abcdef' });
    const r = await s.call();
    assert.equal(r.code, status.PERMISSION_DENIED);
    assert.match(r.details ?? '', /superseded/);
    s.api.close();
  });

  test('a bundle change drops remembered verifications (root removed: refused)', async () => {
    const s = await setup();
    assert.equal((await s.call()).code, 0);
    const otherRoot = createSelfSignedCa({ trustDomain: td, keyPair: await generateKeyPair('ec-p256'), ttlSeconds: 86400, now: s.now() });
    s.changeBundle(new Bundle(td, { x509Authorities: [otherRoot], sequence: 2n }));
    const r = await s.call();
    assert.equal(r.code, status.UNAUTHENTICATED);
    s.api.close();
  });

  test('expiry: a remembered certificate is refused once it expires; re-verified after the TTL', async () => {
    const s = await setup();
    assert.equal((await s.call()).code, 0);
    s.advance(VERIFIED_AGENT_CERT_TTL_MS - 1);
    assert.equal((await s.call()).code, 0);
    assert.equal(s.verifications(), 1, 'remembered until the TTL');
    s.advance(1);
    assert.equal((await s.call()).code, 0);
    assert.equal(s.verifications(), 2, 'verified again at the TTL');
    s.advance(VERIFIED_AGENT_CERT_TTL_MS + 1);
    assert.equal((await s.call()).code, 0);
    assert.equal(s.verifications(), 3, 'verified again after the TTL');
    s.advance(3600 * 1000);
    const r = await s.call();
    assert.equal(r.code, status.UNAUTHENTICATED);
    s.api.close();
  });

  test('a certificate that is not an agent ID is refused every time (failures are not remembered)', async () => {
    const s = await setup();
    const w = issueX509Svid({ id: WORKLOAD, publicKey: s.agentKeys.publicKey, ttlSeconds: 600, issuer: s.issuer, now: s.now() });
    for (let i = 0; i < 2; i++) assert.equal((await s.call(w.der)).code, status.PERMISSION_DENIED);
    assert.equal(s.verifications(), 2);
    s.api.close();
  });
});

describe('AgentApi caller authentication: refusals and the remembered verification\'s bounds', () => {
  test('no client certificate: UNAUTHENTICATED, saying so', async () => {
    const s = await setup();
    const r = await s.call(null);
    assert.equal(r.code, status.UNAUTHENTICATED);
    assert.match(r.details ?? '', /no valid agent X509-SVID was presented/);
    s.api.close();
  });

  test('each refusal says why: not attested, not valid, not an agent ID', async () => {
    const s = await setup();
    s.setNode(undefined);
    const evicted = await s.call();
    assert.equal(evicted.code, status.PERMISSION_DENIED);
    assert.match(evicted.details ?? '', /agent spiffe:\/\/example\.org\/spire\/agent\/join_token\/t1 is not attested/);
    const strangerCa = createIssuer([createSelfSignedCa({ trustDomain: td, keyPair: s.agentKeys, ttlSeconds: 86400, now: s.now() })], s.agentKeys.privateKey);
    const forged = issueX509Svid({ id: AGENT, publicKey: s.agentKeys.publicKey, ttlSeconds: 600, issuer: strangerCa, now: s.now() });
    const invalid = await s.call(forged.der);
    assert.equal(invalid.code, status.UNAUTHENTICATED);
    assert.match(invalid.details ?? '', /agent SVID is not valid: /);
    const w = issueX509Svid({ id: WORKLOAD, publicKey: s.agentKeys.publicKey, ttlSeconds: 600, issuer: s.issuer, now: s.now() });
    const notAgent = await s.call(w.der);
    assert.equal(notAgent.code, status.PERMISSION_DENIED);
    assert.match(notAgent.details ?? '', /spiffe:\/\/example\.org\/workload is not an agent ID of this trust domain/);
    s.api.close();
  });

  test('a remembered certificate that expires before the verification TTL is refused from its expiry on', async () => {
    const s = await setup();
    const short = issueX509Svid({ id: AGENT, publicKey: s.agentKeys.publicKey, ttlSeconds: 30, issuer: s.issuer, now: s.now() });
    s.setNode({ ...s.node()!, certSerial: short.serialHex });
    assert.equal((await s.call(short.der)).code, 0);
    // At its notAfter exactly it is still valid, and still the remembered verification.
    s.advance(short.notAfter.getTime() - s.now().getTime());
    assert.equal((await s.call(short.der)).code, 0);
    assert.equal(s.verifications(), 1);
    s.advance(1000);
    assert.ok(short.notAfter.getTime() + 1000 - T0 < VERIFIED_AGENT_CERT_TTL_MS);
    assert.equal((await s.call(short.der)).code, status.UNAUTHENTICATED);
    s.api.close();
  });

  test('a clock set back is not trusted: verified again, and refused before the certificate\'s notBefore', async () => {
    const s = await setup();
    s.advance(10 * 60_000);
    assert.equal((await s.call()).code, 0);
    s.advance(-5 * 60_000);
    assert.equal((await s.call()).code, 0);
    assert.equal(s.verifications(), 2, 'verified again after the clock went back');
    // A certificate issued an hour later, then the clock set back half an hour: not yet valid.
    s.advance(55 * 60_000);
    const later = issueX509Svid({ id: AGENT, publicKey: s.agentKeys.publicKey, ttlSeconds: 3600, issuer: s.issuer, now: s.now() });
    s.setNode({ ...s.node()!, certSerial: later.serialHex });
    assert.equal((await s.call(later.der)).code, 0);
    s.advance(-30 * 60_000);
    assert.equal((await s.call(later.der)).code, status.UNAUTHENTICATED);
    s.api.close();
  });

  test('an agent certificate issued by an intermediate verifies with the CA\'s intermediates', async () => {
    const s = await setup({ intermediate: true });
    assert.equal((await s.call()).code, 0);
    s.api.close();
  });
});

describe('remoteAddressOf (the per-address attestation limit key)', () => {
  test('grpc-js peers: IPv4, IPv6, IPv4-mapped IPv6 and unknown', () => {
    assert.equal(remoteAddressOf('127.0.0.2:54321'), '127.0.0.2');
    assert.equal(remoteAddressOf('::1:54321'), '::1');
    assert.equal(remoteAddressOf('2001:db8::7:443'), '2001:db8::7');
    assert.equal(remoteAddressOf('::ffff:10.1.2.3:8081'), '10.1.2.3');
    assert.equal(remoteAddressOf('[::1]:1'), '::1');
    assert.equal(remoteAddressOf('unknown'), 'unknown');
  });
});

/**
 * The signing handlers against the real authorization index and cache: agent A and agent B each
 * have an entry; the handlers sign and mint from A's authorized set only, whether A's sync stream
 * is open (tracked in the cache) or not (computed from the index).
 */
async function signingSetup(opts: { tracked: boolean; batch?: boolean }) {
  const t = T0;
  const now = (): Date => new Date(t);
  const caKeys = await generateKeyPair('ec-p256');
  const caDer = createSelfSignedCa({ trustDomain: td, keyPair: caKeys, ttlSeconds: 86400, now: now() });
  const issuer: Issuer = createIssuer([caDer], caKeys.privateKey);
  const jwtKey = await generateKeyPair('ec-p256');
  const bundle = new Bundle(td, { x509Authorities: [caDer], sequence: 1n });
  /** What the CA was asked to sign and mint, in order. */
  const signedFor: Array<{ id: string; dnsNames: readonly string[]; ttlSeconds: number | undefined }> = [];
  const mintedFor: Array<{ id: string; audience: readonly string[]; ttlSeconds: number | undefined }> = [];
  let signingBroken = false;
  const ca: CaSigner = {
    trustDomain: td,
    signX509Svid: (req) => {
      if (signingBroken) throw new Error('HSM on fire');
      signedFor.push({ id: req.id, dnsNames: req.dnsNames ?? [], ttlSeconds: req.ttlSeconds });
      const c = issueX509SvidFromCsr({ id: req.id, csr: req.csr, dnsNames: req.dnsNames, ttlSeconds: req.ttlSeconds ?? 3600, issuer, now: now() });
      return { chain: [c.der], notAfter: c.notAfter, serialHex: c.serialHex };
    },
    mintJwtSvid: async (req): Promise<SignedJwtSvid> => {
      mintedFor.push({ id: req.id, audience: req.audience, ttlSeconds: req.ttlSeconds });
      return mintJwtSvid({ id: req.id, audience: req.audience, signer: { kid: 'k', privateKey: jwtKey.privateKey }, now: now() });
    },
    bundle: () => {
      if (broken === 'bundle') throw new Error('key manager on fire');
      return bundle.clone();
    },
    onBundleChange: () => () => undefined,
  };
  if (opts.batch) {
    // The pooled path: one call for the whole batch, an Error in place of each failure.
    ca.signX509SvidBatch = async (reqs) =>
      reqs.map((r) => {
        try {
          return ca.signX509Svid(r);
        } catch (err) {
          return err as Error;
        }
      });
  }
  /** What the API counted. */
  const counted: string[] = [];
  const metrics: AgentApiMetrics = {
    x509SvidSigned: (kind, count) => counted.push(`x509 ${kind} ${count ?? 1}`),
    jwtSvidMinted: () => counted.push('jwt'),
    nodeAttestation: () => undefined,
  };
  const B = parseSpiffeId('spiffe://example.org/spire/agent/join_token/t2');
  const agentKeys = await generateKeyPair('ec-p256');
  const agentCert = issueX509Svid({ id: AGENT, publicKey: agentKeys.publicKey, ttlSeconds: 3600, issuer, now: now() });
  let stored: AttestedNode | undefined = {
    spiffeId: AGENT, attestationType: 'join_token', certSerial: agentCert.serialHex, certNotAfter: 0, newCertSerial: '', newCertNotAfter: 0,
    selectors: [], banned: false, canReattest: false, createdAt: 0, updatedAt: 0,
  };
  /** While set, the datastore (or the CA's bundle) fails with a plain (internal) error. */
  let broken: 'datastore' | 'bundle' | undefined;
  const datastore = {
    getAttestedNode: async (id: SpiffeId) => {
      if (broken === 'datastore') throw new Error('disk on fire');
      return id === AGENT && stored ? { ...stored } : undefined;
    },
    updateAttestedNode: async (n: AttestedNode) => (stored = { ...n }),
  } as unknown as DataStore;
  const logged: Array<{ level: string; obj: Record<string, unknown>; msg: string | undefined }> = [];
  const capture: ApiLogger = {
    info: (obj, msg) => logged.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => logged.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    error: (obj, msg) => logged.push({ level: 'error', obj: obj as Record<string, unknown>, msg }),
    debug: () => undefined,
    child: () => capture,
  };
  const entry = (id: string, spiffeId: string, parentId: SpiffeId, extra: Partial<RegistrationEntry> = {}): RegistrationEntry => ({
    ...entryWithDefaults({ spiffeId: parseSpiffeId(spiffeId), parentId, selectors: [{ type: 'unix', value: 'uid:1000' }] }),
    id, revisionNumber: 0, createdAt: 0, updatedAt: 0, ...extra,
  });
  const mine = entry('mine', 'spiffe://example.org/mine', AGENT, { dnsNames: ['mine.example.org'], x509SvidTtl: 120, jwtSvidTtl: 60 });
  const theirs = entry('theirs', 'spiffe://example.org/theirs', B);
  const index = new EntryIndex({ trustDomain: td, now: () => Math.floor(t / 1000) });
  index.load([mine, theirs]);
  const cache = new AuthorizationCache(index);
  if (opts.tracked) {
    cache.setAgent(AGENT, []);
    cache.setAgent(B, []);
  }
  const feed = { subscribe: () => () => undefined, revision: 0 } as unknown as ChangeFeed;
  const api = new AgentApi({ trustDomain: td, datastore, ca, attestors: new Map(), cache, feed, now, agentTtlSeconds: 3600, logger: capture, metrics });
  const svc = api.service() as unknown as Record<string, (c: unknown, cb: (err: { code: number; details?: string } | null, res?: unknown) => void) => void>;
  const invoke = <Res>(method: string, request: unknown, cert: Buffer = agentCert.der): Promise<{ code: number; details?: string; res?: Res }> =>
    new Promise((resolve) => {
      const fakeCall = { request, getAuthContext: () => ({ sslPeerCertificate: { raw: cert } }) };
      svc[method]!(fakeCall, (err, res) => resolve(err ? { code: err.code, details: err.details } : { code: 0, res: res as Res }));
    });
  return { api, invoke, signedFor, mintedFor, counted, logged, breakIt: (what: 'datastore' | 'bundle') => (broken = what), breakSigning: () => (signingBroken = true), node: () => stored, setNode: (n: AttestedNode | undefined) => (stored = n), issuer, bundle, now, agentKeys };
}

type BatchRes = { results: Array<{ status: { code: number; message: string }; svid: { spiffeId: string; certChain: Buffer[] } | undefined }> };
type JwtRes = { svid: { token: string; spiffeId: string; expiresAt: bigint; issuedAt: bigint } };

for (const tracked of [false, true]) {
  describe(`AgentApi signing authorization (sync stream ${tracked ? 'open' : 'closed'})`, () => {
    test('BatchNewX509SVID signs the caller\'s entry with the entry\'s identity, refuses another agent\'s, and keeps the order', async () => {
      const s = await signingSetup({ tracked });
      const csr = await freshCsr();
      const r = await s.invoke<BatchRes>('batchNewX509Svid', { params: [{ entryId: 'theirs', csr }, { entryId: 'mine', csr }, { entryId: 'nope', csr }] });
      assert.equal(r.code, 0);
      const [theirs, mine, nope] = r.res!.results;
      assert.equal(theirs!.status.code, status.PERMISSION_DENIED);
      assert.match(theirs!.status.message, /entry "theirs" is not authorized for this agent/);
      assert.equal(theirs!.svid, undefined);
      assert.equal(nope!.status.code, status.PERMISSION_DENIED);
      assert.equal(nope!.svid, undefined);
      assert.equal(mine!.status.code, status.OK);
      assert.equal(mine!.svid!.spiffeId, 'spiffe://example.org/mine');
      const leaf = verifyX509Svid(mine!.svid!.certChain, s.bundle, { now: s.now() });
      assert.equal(leaf.id, 'spiffe://example.org/mine');
      assert.deepEqual(s.signedFor, [{ id: 'spiffe://example.org/mine', dnsNames: ['mine.example.org'], ttlSeconds: 120 }], 'only the authorized entry reached the CA, with its own DNS names and TTL');
      assert.deepEqual(s.counted, ['x509 workload 1']);
      s.api.close();
    });

    test('NewJWTSVID mints for the caller\'s entry only; another agent\'s entry is PERMISSION_DENIED and nothing is minted', async () => {
      const s = await signingSetup({ tracked });
      const denied = await s.invoke<JwtRes>('newJwtsvid', { entryId: 'theirs', audience: ['a'] });
      assert.equal(denied.code, status.PERMISSION_DENIED);
      assert.match(denied.details ?? '', /entry "theirs" is not authorized for this agent/);
      assert.equal(s.mintedFor.length, 0);
      const ok = await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience: ['a', 'b'] });
      assert.equal(ok.code, 0);
      assert.equal(ok.res!.svid.spiffeId, 'spiffe://example.org/mine');
      assert.deepEqual(s.mintedFor, [{ id: 'spiffe://example.org/mine', audience: ['a', 'b'], ttlSeconds: 60 }]);
      // The response's times are the token's own, in seconds.
      const claims = JSON.parse(Buffer.from(ok.res!.svid.token.split('.')[1]!, 'base64url').toString()) as { exp: number; iat: number };
      assert.equal(ok.res!.svid.expiresAt, BigInt(claims.exp));
      assert.equal(ok.res!.svid.issuedAt, BigInt(claims.iat));
      assert.deepEqual(s.counted, ['jwt']);
      s.api.close();
    });
  });
}

describe('AgentApi signing: input checks and agent renewal', () => {
  test('GetBundle returns the trust domain\'s current bundle', async () => {
    const s = await signingSetup({ tracked: false });
    const r = await s.invoke<{ bundle: { trustDomain: string; sequence: bigint } }>('getBundle', {});
    assert.equal(r.code, 0);
    assert.equal(r.res!.bundle.trustDomain, 'example.org');
    assert.equal(r.res!.bundle.sequence, 1n);
    s.api.close();
  });


  test('NewJWTSVID refuses no audience, an empty audience and too many, minting nothing', async () => {
    const s = await signingSetup({ tracked: false });
    for (const audience of [[], [''], ['a', ''], Array.from({ length: MAX_AUDIENCES + 1 }, (_, i) => `a${i}`)]) {
      const r = await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience });
      assert.equal(r.code, status.INVALID_ARGUMENT, JSON.stringify(audience));
      assert.match(r.details ?? '', audience.length > MAX_AUDIENCES ? /too many audiences \(at most 32\)/ : /audience is required and must not contain empty values/);
    }
    assert.equal((await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience: Array.from({ length: MAX_AUDIENCES }, (_, i) => `a${i}`) })).code, 0);
    assert.equal(s.mintedFor.length, 1);
    s.api.close();
  });

  test('BatchNewX509SVID refuses more than MAX_CSRS_PER_BATCH CSRs before signing any', async () => {
    const s = await signingSetup({ tracked: false });
    const csr = await freshCsr();
    const r = await s.invoke<BatchRes>('batchNewX509Svid', { params: Array.from({ length: MAX_CSRS_PER_BATCH + 1 }, () => ({ entryId: 'mine', csr })) });
    assert.equal(r.code, status.INVALID_ARGUMENT);
    assert.match(r.details ?? '', /too many CSRs/);
    assert.equal(s.signedFor.length, 0);
    s.api.close();
  });

  test('BatchNewX509SVID: exactly MAX_CSRS_PER_BATCH CSRs are signed', async () => {
    const s = await signingSetup({ tracked: false });
    const csr = await freshCsr();
    const r = await s.invoke<BatchRes>('batchNewX509Svid', { params: Array.from({ length: MAX_CSRS_PER_BATCH }, () => ({ entryId: 'mine', csr })) });
    assert.equal(r.code, 0);
    assert.equal(r.res!.results.length, MAX_CSRS_PER_BATCH);
    assert.ok(r.res!.results.every((x) => x.status.code === status.OK && x.svid !== undefined));
    assert.deepEqual(s.counted, [`x509 workload ${MAX_CSRS_PER_BATCH}`]);
    s.api.close();
  });

  for (const batch of [false, true]) {
    test(`BatchNewX509SVID: a CSR the CA refuses fails alone, in its place (${batch ? 'pooled signing' : 'one by one'})`, async () => {
      const s = await signingSetup({ tracked: false, batch });
      const csr = await freshCsr();
      const r = await s.invoke<BatchRes>('batchNewX509Svid', { params: [{ entryId: 'mine', csr }, { entryId: 'mine', csr: Buffer.from('not a CSR') }, { entryId: 'mine', csr }] });
      assert.equal(r.code, 0);
      const [a, bad, c] = r.res!.results;
      assert.equal(a!.status.code, status.OK);
      assert.equal(c!.status.code, status.OK);
      assert.equal(verifyX509Svid(c!.svid!.certChain, s.bundle, { now: s.now() }).id, 'spiffe://example.org/mine');
      assert.notEqual(bad!.status.code, status.OK);
      assert.equal(bad!.svid, undefined);
      assert.deepEqual(s.counted, ['x509 workload 2']);
      s.api.close();
    });
  }

  test('an internal failure is INTERNAL to the agent and logged with the method (and the entry, for one CSR of a batch)', async () => {
    const s = await signingSetup({ tracked: false });
    s.breakIt('datastore');
    const calls: Array<[string, unknown]> = [
      ['renewAgent', { csr: await freshCsr() }],
      ['batchNewX509Svid', { params: [] }],
      ['newJwtsvid', { entryId: 'mine', audience: ['a'] }],
    ];
    for (const [method, request] of calls) {
      const r = await s.invoke(method, request);
      assert.equal(r.code, status.INTERNAL, method);
      assert.equal(r.details, 'internal error');
    }
    s.api.close();
    const b = await signingSetup({ tracked: false });
    b.breakIt('bundle');
    assert.equal((await b.invoke('getBundle', {})).code, status.INTERNAL);
    b.api.close();
    assert.deepEqual(
      [...s.logged, ...b.logged].filter((l) => l.level === 'error').map((l) => l.obj.method),
      ['RenewAgent', 'BatchNewX509SVID', 'NewJWTSVID', 'GetBundle'],
    );
    const t = await signingSetup({ tracked: false });
    t.breakSigning();
    const r = await t.invoke<BatchRes>('batchNewX509Svid', { params: [{ entryId: 'mine', csr: await freshCsr() }] });
    assert.equal(r.code, 0);
    assert.equal(r.res!.results[0]!.status.code, status.INTERNAL);
    const err = t.logged.find((l) => l.level === 'error')!;
    assert.equal(err.obj.method, 'BatchNewX509SVID');
    assert.equal(err.obj.entry_id, 'mine');
    t.api.close();
  });

  test('RenewAgent signs the caller\'s own agent ID; the new SVID replaces the old one on first use; an evicted agent is refused', async () => {
    const s = await signingSetup({ tracked: false });
    const oldSerial = s.node()!.certSerial;
    const r = await s.invoke<{ svid: { spiffeId: string; certChain: Buffer[]; serial: string } }>('renewAgent', { csr: await freshCsr() });
    assert.equal(r.code, 0);
    assert.equal(r.res!.svid.spiffeId, AGENT);
    assert.equal(verifyX509Svid(r.res!.svid.certChain, s.bundle, { now: s.now() }).id, AGENT);
    assert.equal(s.node()!.newCertSerial, r.res!.svid.serial, 'the renewed serial is recorded as pending');
    assert.equal(s.node()!.newCertNotAfter, Math.floor(parseCertificate(r.res!.svid.certChain[0]!).notAfter.getTime() / 1000));
    assert.deepEqual(s.counted, ['x509 agent 1']);
    assert.deepEqual(s.logged.filter((l) => l.level === 'info'), [{ level: 'info', obj: { agent_id: AGENT, serial: r.res!.svid.serial }, msg: 'renewed agent SVID' }]);
    // While the renewal is pending, a certificate with a third serial is still refused and promotes nothing.
    const third = issueX509Svid({ id: AGENT, publicKey: s.agentKeys.publicKey, ttlSeconds: 3600, issuer: s.issuer, now: s.now() });
    const pending = s.node()!;
    const refused = await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience: ['a'] }, third.der);
    assert.equal(refused.code, status.PERMISSION_DENIED);
    assert.match(refused.details ?? '', /superseded/);
    assert.deepEqual(s.node(), pending);
    assert.equal(s.node()!.certSerial, oldSerial, 'the old one stays current until the new one is used');
    // First call with the renewed certificate: it becomes current, the old one is refused.
    const renewed = r.res!.svid.certChain[0]!;
    assert.equal((await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience: ['a'] }, renewed)).code, 0);
    assert.equal(s.node()!.certSerial, r.res!.svid.serial);
    assert.equal(s.node()!.newCertSerial, '');
    const old = await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience: ['a'] });
    assert.equal(old.code, status.PERMISSION_DENIED);
    assert.match(old.details ?? '', /superseded/);
    s.setNode(undefined);
    const evicted = await s.invoke('renewAgent', { csr: await freshCsr() }, renewed);
    assert.equal(evicted.code, status.PERMISSION_DENIED);
    s.api.close();
  });

  test('a certificate whose serial is neither current nor pending is refused, and does not become current', async () => {
    const s = await signingSetup({ tracked: false });
    const other = issueX509Svid({ id: AGENT, publicKey: s.agentKeys.publicKey, ttlSeconds: 3600, issuer: s.issuer, now: s.now() });
    const before = s.node()!;
    const r = await s.invoke<JwtRes>('newJwtsvid', { entryId: 'mine', audience: ['a'] }, other.der);
    assert.equal(r.code, status.PERMISSION_DENIED);
    assert.match(r.details ?? '', /superseded/);
    assert.deepEqual(s.node(), before);
    s.api.close();
  });
});

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
import { createIssuer, createSelfSignedCa, issueX509Svid, type Issuer } from '../../../spiffe/x509/index.js';
import type { AttestedNode, DataStore, RegistrationEntry } from '../../datastore/types.js';
import type { AuthorizationCache } from '../../entries/authorized.js';
import type { ChangeFeed } from '../../entries/feed.js';
import type { CaSigner, SignedJwtSvid } from '../../ca/types.js';
import type { ApiLogger } from '../shared/logger.js';
import { AgentApi, remoteAddressOf, VERIFIED_AGENT_CERT_TTL_MS } from './service.js';

const td = parseTrustDomain('example.org');
const AGENT = parseSpiffeId('spiffe://example.org/spire/agent/join_token/t1');
const WORKLOAD = parseSpiffeId('spiffe://example.org/workload');
const T0 = Date.UTC(2030, 0, 1);

const quiet: ApiLogger = { info() {}, warn() {}, error() {}, debug() {}, child: () => quiet };

async function setup() {
  let t = T0;
  const now = (): Date => new Date(t);
  const caKeys = await generateKeyPair('ec-p256');
  const caDer = createSelfSignedCa({ trustDomain: td, keyPair: caKeys, ttlSeconds: 86400, now: now() });
  const issuer: Issuer = createIssuer([caDer], caKeys.privateKey);
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
      return [];
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
  const datastore = {
    getAttestedNode: async (id: SpiffeId) => (id === AGENT && stored ? { ...stored } : undefined),
    updateAttestedNode: async (n: AttestedNode) => (stored = { ...n }),
  } as unknown as DataStore;
  const entry = { id: 'e1', spiffeId: WORKLOAD, parentId: AGENT, selectors: [], x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: [], federatesWith: [] } as unknown as RegistrationEntry;
  const cache = { entriesFor: () => [entry], entryFor: (_a: string, id: string) => (id === entry.id ? entry : undefined), index: { authorizedEntries: () => [entry] } } as unknown as AuthorizationCache;
  const feed = { subscribe: () => () => undefined, revision: 0 } as unknown as ChangeFeed;
  const api = new AgentApi({ trustDomain: td, datastore, ca, attestors: new Map(), cache, feed, now, agentTtlSeconds: 3600, logger: quiet });
  const svc = api.service();
  /** One NewJWTSVID call presenting `cert`; resolves with the gRPC status code (0 = OK). */
  const call = (cert: Buffer = agentCert.der): Promise<{ code: number; details?: string }> =>
    new Promise((resolve) => {
      const fakeCall = { request: { entryId: 'e1', audience: ['a'] }, getAuthContext: () => ({ sslPeerCertificate: { raw: cert } }) };
      (svc.newJwtsvid as unknown as (c: unknown, cb: (err: { code: number; details?: string } | null) => void) => void)(fakeCall, (err) =>
        resolve(err ? { code: err.code, details: err.details } : { code: 0 }),
      );
    });
  return {
    api,
    call,
    node: () => stored,
    setNode: (n: AttestedNode | undefined) => (stored = n),
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
    s.advance(VERIFIED_AGENT_CERT_TTL_MS + 1);
    assert.equal((await s.call()).code, 0);
    assert.equal(s.verifications(), 2, 'verified again after the TTL');
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

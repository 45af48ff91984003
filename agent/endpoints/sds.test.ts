import { credentials, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WorkloadAttestationError, type WorkloadAttestor } from '../../attestors/workload/types.js';
import { UnixWorkloadAttestor } from '../../attestors/workload/unix/unix.js';
import type { Node } from '../../proto/gen/envoy/config/core/v3/base.js';
import type { DiscoveryRequest, DiscoveryResponse } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { HealthCheckResponse_ServingStatus, HealthClient } from '../../proto/gen/grpc/health/v1/health.js';
import { SecretDiscoveryServiceClient } from '../../proto/gen/envoy/service/secret/v3/sds.js';
import type { DataSource } from '../../proto/gen/envoy/config/core/v3/base.js';
import { Secret } from '../../proto/gen/envoy/extensions/transport_sockets/tls/v3/secret.js';
import { SPIFFECertValidatorConfig } from '../../proto/gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.js';
import { BundleSet, parseX509BundlePem } from '../../spiffe/bundle.js';
import { parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import { importPrivateKeyPkcs8 } from '../../spiffe/keys.js';
import { pemToCertificates, pemToPrivateKey } from '../../spiffe/pem.js';
import { certificateMatchesKey } from '../../spiffe/x509/parse.js';
import { verifyX509Svid } from '../../spiffe/x509/verify.js';
import type { X509Identity } from '../manager/types.js';
import { createSdsService, nodeDisablesSpiffeValidation, SDS_SERVICE_NAME, SECRET_TYPE_URL, SPIFFE_VALIDATOR_CONFIG_TYPE_URL, SPIFFE_VALIDATOR_NAME } from './sds.js';
import { collect, FakeIdentityCache, sel, silentLogger, TestTrustDomain, within } from './testkit.js';
import { startAgentEndpoint, type AgentEndpoint } from './endpoint.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-sds-'));
chmodSync(root, 0o755);
let n = 0;
const UID = process.getuid!();
const NOBODY = 65534;

let own: TestTrustDomain;
let partner: TestTrustDomain;
let other: TestTrustDomain;
let rootId: X509Identity;
let rootDbId: X509Identity;
let nobodyId: X509Identity;

before(async () => {
  [own, partner, other] = await Promise.all([TestTrustDomain.create('example.org'), TestTrustDomain.create('partner.org'), TestTrustDomain.create('other.org')]);
  rootId = await own.identity('spiffe://example.org/workload/root', { federatesWith: [partner.trustDomain] });
  rootDbId = await own.identity('spiffe://example.org/workload/db');
  nobodyId = await own.identity('spiffe://example.org/workload/nobody');
});

type Client = InstanceType<typeof SecretDiscoveryServiceClient>;
interface Env {
  cache: FakeIdentityCache;
  ep: AgentEndpoint;
  client: Client;
}
const envs: Env[] = [];
after(async () => {
  for (const e of envs) {
    e.client.close();
    await e.ep.close();
  }
  rmSync(root, { recursive: true, force: true });
});

async function setup(config: Parameters<typeof createSdsService>[0]['config'] = {}, attestorList?: WorkloadAttestor[]): Promise<Env> {
  const cache = new FakeIdentityCache(own);
  cache.federated.set(partner.trustDomain, partner.bundle);
  cache.federated.set(other.trustDomain, other.bundle);
  cache.entries = [
    { selectors: [sel(`unix:uid:${UID}`)], identity: rootId },
    { selectors: [sel(`unix:uid:${UID}`), sel(`unix:gid:${process.getgid!()}`)], identity: rootDbId },
    { selectors: [sel(`unix:uid:${NOBODY}`)], identity: nobodyId },
  ];
  const socketPath = join(root, `s${++n}.sock`);
  const attestors = attestorList ?? [new UnixWorkloadAttestor()];
  const ep = await startAgentEndpoint({ socketPath, cache, attestors, logger: silentLogger, sds: config });
  const client = new SecretDiscoveryServiceClient(`unix:${socketPath}`, credentials.createInsecure());
  const env = { cache, ep, client };
  envs.push(env);
  return env;
}

const NODE: Node = { id: 'envoy-1', cluster: 'web', metadata: undefined, userAgentName: 'envoy', userAgentVersionType: undefined };

function req(resourceNames: string[], extra: Partial<DiscoveryRequest> = {}): DiscoveryRequest {
  return { versionInfo: '', node: undefined, resourceNames, typeUrl: SECRET_TYPE_URL, responseNonce: '', errorDetail: undefined, ...extra };
}

function open(e: Env) {
  const stream = e.client.streamSecrets();
  const c = collect<DiscoveryResponse>(stream);
  return {
    ...c,
    send: (r: DiscoveryRequest) => void stream.write(r),
    /** Asserts that no message arrives within `ms`. */
    async none(ms = 300) {
      const before = c.messages.length;
      await new Promise((r) => setTimeout(r, ms));
      assert.equal(c.messages.length, before, 'unexpected SDS response');
    },
  };
}

function decode(res: DiscoveryResponse): Map<string, Secret> {
  assert.equal(res.typeUrl, SECRET_TYPE_URL);
  const out = new Map<string, Secret>();
  for (const a of res.resources) {
    assert.equal(a.typeUrl, SECRET_TYPE_URL);
    const s = Secret.decode(a.value);
    out.set(s.name, s);
  }
  return out;
}

function text(ds: DataSource | undefined): string {
  assert.equal(ds?.specifier?.$case, 'inlineBytes');
  return (ds!.specifier!.value as Buffer).toString('utf8');
}

function tlsOf(s: Secret | undefined): { chain: Buffer[]; keyPem: string } {
  assert.equal(s?.type?.$case, 'tlsCertificate');
  if (s?.type?.$case !== 'tlsCertificate') throw new Error('unreachable');
  const keyPem = text(s.type.value.privateKey);
  assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----/);
  return { chain: pemToCertificates(text(s.type.value.certificateChain)), keyPem };
}

function caOf(s: Secret | undefined): string {
  assert.equal(s?.type?.$case, 'validationContext');
  if (s?.type?.$case !== 'validationContext') throw new Error('unreachable');
  assert.equal(s.type.value.customValidatorConfig, undefined);
  return text(s.type.value.trustedCa);
}

/** Key matches the leaf; the chain verifies against the served CA PEM; returns the SPIFFE ID. */
function checkSvid(s: Secret | undefined, caPem: string, td: TrustDomain, want: X509Identity): void {
  const { chain, keyPem } = tlsOf(s);
  assert.deepEqual(chain, want.chain.map((c) => Buffer.from(c)));
  const key = importPrivateKeyPkcs8(pemToPrivateKey(keyPem));
  assert.ok(certificateMatchesKey(chain[0]!, key), 'private key matches the certificate');
  const v = verifyX509Svid(chain, new BundleSet([parseX509BundlePem(td, caPem)]));
  assert.equal(v.id, want.spiffeId);
}

async function statusOf(p: Promise<ServiceError | null>): Promise<ServiceError> {
  const err = await within(p, 5000, 'stream end');
  assert.ok(err, 'stream ended with an error');
  return err;
}

describe('SDS v3 over the agent socket', () => {
  it('is served on the socket next to the Workload API, with no security header', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req(['ROOTCA'], { node: NODE }));
    const r = await s.next();
    assert.equal(r.versionInfo, '1');
    assert.ok(r.nonce.length > 0);
    assert.equal(SDS_SERVICE_NAME, 'envoy.service.secret.v3.SecretDiscoveryService');
    s.cancel();
  });

  it("follows Envoy's sequence: first request, ACK, stale nonce, NACK, name-set change", async () => {
    const e = await setup();
    const s = open(e);
    s.send(req([rootId.spiffeId], { node: NODE }));
    const first = await s.next();
    assert.equal(first.versionInfo, '1');
    const secrets = decode(first);
    assert.deepEqual([...secrets.keys()], [rootId.spiffeId]);

    // ACK: version + nonce, same names -> nothing.
    s.send(req([rootId.spiffeId], { versionInfo: first.versionInfo, responseNonce: first.nonce }));
    await s.none();

    // Stale nonce with a different name set -> ignored.
    s.send(req([rootId.spiffeId, 'ROOTCA'], { versionInfo: first.versionInfo, responseNonce: 'not-the-last-nonce' }));
    await s.none();

    // NACK (error_detail) -> logged, no resend, even repeated.
    const nack = req([rootId.spiffeId], { versionInfo: '0', responseNonce: first.nonce, errorDetail: { code: 3, message: 'bad secret', details: [] } });
    s.send(nack);
    s.send(nack);
    await s.none();

    // Name-set change with the current nonce -> answered.
    s.send(req([rootId.spiffeId, 'ROOTCA'], { versionInfo: first.versionInfo, responseNonce: first.nonce }));
    const second = await s.next();
    assert.equal(second.versionInfo, '2');
    assert.notEqual(second.nonce, first.nonce);
    assert.deepEqual([...decode(second).keys()].sort(), ['ROOTCA', rootId.spiffeId].sort());

    // The old nonce is now stale.
    s.send(req(['ROOTCA'], { versionInfo: first.versionInfo, responseNonce: first.nonce }));
    await s.none();
    // ACK of the second response -> nothing.
    s.send(req(['ROOTCA', rootId.spiffeId], { versionInfo: second.versionInfo, responseNonce: second.nonce }));
    await s.none();
    s.cancel();
  });

  it('pushes rotation and bundle changes on an open stream, skips changes that do not touch the requested resources', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req([rootId.spiffeId, 'ROOTCA'], { node: NODE }));
    const first = await s.next();
    s.send(req([rootId.spiffeId, 'ROOTCA'], { versionInfo: first.versionInfo, responseNonce: first.nonce }));

    // A change to an SVID the caller did not request: nothing.
    const otherDb = await own.identity(rootDbId.spiffeId);
    e.cache.entries[1] = { ...e.cache.entries[1]!, identity: otherDb };
    e.cache.notify();
    await s.none();

    const rotated = await own.identity(rootId.spiffeId, { federatesWith: [partner.trustDomain] });
    e.cache.entries[0] = { ...e.cache.entries[0]!, identity: rotated };
    e.cache.notify();
    const pushed = await s.next();
    assert.equal(pushed.versionInfo, '2');
    const m = decode(pushed);
    checkSvid(m.get(rotated.spiffeId), caOf(m.get('ROOTCA')), own.trustDomain, rotated);
    e.cache.entries[0] = { ...e.cache.entries[0]!, identity: rootId };
    s.cancel();
  });

  it('serves a SPIFFE ID, default, spiffe://<td> and ROOTCA, with keys matching and chains verifying', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req([rootDbId.spiffeId, 'default', 'spiffe://example.org', 'spiffe://partner.org', 'ROOTCA'], { node: NODE }));
    const m = decode(await s.next());
    assert.deepEqual([...m.keys()], [rootDbId.spiffeId, 'default', 'spiffe://example.org', 'spiffe://partner.org', 'ROOTCA']);
    const ownPem = caOf(m.get('spiffe://example.org'));
    assert.equal(caOf(m.get('ROOTCA')), ownPem);
    checkSvid(m.get(rootDbId.spiffeId), ownPem, own.trustDomain, rootDbId);
    checkSvid(m.get('default'), caOf(m.get('ROOTCA')), own.trustDomain, rootId); // first SVID
    assert.deepEqual(pemToCertificates(caOf(m.get('spiffe://partner.org'))), partner.bundle.x509Authorities());
    s.cancel();
  });

  it('an empty name list returns every SVID and every bundle the caller sees', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req([], { node: NODE }));
    const m = decode(await s.next());
    assert.deepEqual([...m.keys()].sort(), [rootId.spiffeId, rootDbId.spiffeId, 'spiffe://example.org', 'spiffe://partner.org'].sort());
    const ownPem = caOf(m.get('spiffe://example.org'));
    checkSvid(m.get(rootId.spiffeId), ownPem, own.trustDomain, rootId);
    checkSvid(m.get(rootDbId.spiffeId), ownPem, own.trustDomain, rootDbId);
    s.cancel();
  });

  it('ALL: SPIFFE certificate validator config with every trust domain', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req(['ALL', rootId.spiffeId], { node: NODE }));
    const m = decode(await s.next());
    const all = m.get('ALL');
    assert.equal(all?.type?.$case, 'validationContext');
    if (all?.type?.$case !== 'validationContext') return;
    assert.equal(all.type.value.trustedCa, undefined);
    const cvc = all.type.value.customValidatorConfig;
    assert.equal(cvc?.name, SPIFFE_VALIDATOR_NAME);
    assert.equal(cvc?.typedConfig?.typeUrl, SPIFFE_VALIDATOR_CONFIG_TYPE_URL);
    const cfg = SPIFFECertValidatorConfig.decode(cvc!.typedConfig!.value);
    assert.deepEqual(cfg.trustDomains.map((t) => t.name), ['example.org', 'partner.org']);
    const ownPem = text(cfg.trustDomains[0]!.trustBundle);
    assert.deepEqual(pemToCertificates(text(cfg.trustDomains[1]!.trustBundle)), partner.bundle.x509Authorities());
    checkSvid(m.get(rootId.spiffeId), ownPem, own.trustDomain, rootId);
    s.cancel();
  });

  const plainAll = async (e: Env, node: Node): Promise<void> => {
    const s = open(e);
    s.send(req(['ALL'], { node }));
    const pem = caOf(decode(await s.next()).get('ALL'));
    assert.deepEqual(pemToCertificates(pem), [...own.bundle.x509Authorities(), ...partner.bundle.x509Authorities()]);
    s.cancel();
  };

  it('ALL with SPIFFE validation disabled by config: one trusted_ca with every bundle', async () => {
    await plainAll(await setup({ disableSpiffeCertValidation: true }), NODE);
  });

  it('ALL with SPIFFE validation disabled by Node metadata (bool or string) or Envoy <= 1.17', async () => {
    const e = await setup();
    await plainAll(e, { ...NODE, metadata: { disable_spiffe_cert_validation: true } });
    await plainAll(e, { ...NODE, metadata: { disable_spiffe_cert_validation: 'true' } });
    await plainAll(e, { ...NODE, userAgentVersionType: { $case: 'userAgentBuildVersion', value: { version: { majorNumber: 1, minorNumber: 17, patch: 4 }, metadata: undefined } } });
    const v = (minor: number): Node => ({ ...NODE, userAgentVersionType: { $case: 'userAgentBuildVersion', value: { version: { majorNumber: 1, minorNumber: minor, patch: 0 }, metadata: undefined } } });
    assert.equal(nodeDisablesSpiffeValidation(v(18)), false);
    assert.equal(nodeDisablesSpiffeValidation(v(16)), true);
    assert.equal(nodeDisablesSpiffeValidation({ ...NODE, metadata: { disable_spiffe_cert_validation: 'false' } }), false);
    assert.equal(nodeDisablesSpiffeValidation(undefined), false);
  });

  it('configured names replace default, ROOTCA and ALL', async () => {
    const e = await setup({ defaultSvidName: 'my-svid', defaultBundleName: 'my-ca', defaultAllBundlesName: 'my-all' });
    const s = open(e);
    s.send(req(['my-svid', 'my-ca', 'my-all'], { node: NODE }));
    const m = decode(await s.next());
    checkSvid(m.get('my-svid'), caOf(m.get('my-ca')), own.trustDomain, rootId);
    assert.equal(m.get('my-all')?.type?.$case, 'validationContext');
    s.cancel();
    const s2 = open(e);
    s2.send(req(['default'], { node: NODE }));
    assert.equal((await statusOf(s2.ended)).code, GrpcStatus.INVALID_ARGUMENT);
  });

  for (const [what, name] of [
    ['an SVID held by another workload', 'spiffe://example.org/workload/nobody'],
    ['a trust domain the caller does not federate with', 'spiffe://other.org'],
    ['an unknown name', 'nonsense'],
    ['an invalid SPIFFE ID', 'spiffe://Bad Domain/x'],
  ] as const) {
    it(`ends the stream INVALID_ARGUMENT for ${what}`, async () => {
      const e = await setup();
      const s = open(e);
      s.send(req([rootId.spiffeId, name], { node: NODE }));
      const err = await statusOf(s.ended);
      assert.equal(err.code, GrpcStatus.INVALID_ARGUMENT);
      assert.equal(s.messages.length, 0);
    });
  }

  it('a name-set change to an unauthorized name ends the stream INVALID_ARGUMENT', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req(['ROOTCA'], { node: NODE }));
    const first = await s.next();
    s.send(req(['ROOTCA', nobodyId.spiffeId], { versionInfo: first.versionInfo, responseNonce: first.nonce }));
    assert.equal((await statusOf(s.ended)).code, GrpcStatus.INVALID_ARGUMENT);
  });

  it('FetchSecrets answers once; DeltaSecrets is UNIMPLEMENTED', async () => {
    const e = await setup();
    const res = await new Promise<DiscoveryResponse>((resolve, reject) =>
      e.client.fetchSecrets(req([rootId.spiffeId, 'ROOTCA'], { node: NODE }), (err, r) => (err ? reject(err) : resolve(r!))),
    );
    const m = decode(res);
    checkSvid(m.get(rootId.spiffeId), caOf(m.get('ROOTCA')), parseTrustDomain('example.org'), rootId);
    const err = await new Promise<ServiceError | null>((resolve) =>
      e.client.fetchSecrets(req([nobodyId.spiffeId]), (er) => resolve(er)),
    );
    assert.equal(err?.code, GrpcStatus.INVALID_ARGUMENT);

    const d = e.client.deltaSecrets();
    const dc = collect<unknown>(d);
    d.write({ node: NODE, typeUrl: SECRET_TYPE_URL, resourceNamesSubscribe: [], resourceNamesUnsubscribe: [], initialResourceVersions: new Map(), responseNonce: '', errorDetail: undefined });
    assert.equal((await statusOf(dc.ended)).code, GrpcStatus.UNIMPLEMENTED);
  });

  it('attestation failure is UNAVAILABLE (stream and unary)', async () => {
    const failing: WorkloadAttestor = {
      name: 'broken',
      attest: async () => {
        throw new WorkloadAttestationError('cannot read /proc/1/status');
      },
    };
    const e = await setup({}, [new UnixWorkloadAttestor(), failing]);
    const s = open(e);
    s.send(req(['ROOTCA'], { node: NODE }));
    const err = await statusOf(s.ended);
    assert.equal(err.code, GrpcStatus.UNAVAILABLE);
    assert.equal(err.details, 'workload attestation failed');
    const uerr = await new Promise<ServiceError | null>((resolve) => e.client.fetchSecrets(req(['ROOTCA']), (er) => resolve(er)));
    assert.equal(uerr?.code, GrpcStatus.UNAVAILABLE);
  });

  it('is listed SERVING by the socket health service', async () => {
    const e = await setup();
    const socketPath = e.ep.socketPath;
    const h = new HealthClient(`unix:${socketPath}`, credentials.createInsecure());
    try {
      const r = await new Promise<{ status: number }>((resolve, reject) => h.check({ service: SDS_SERVICE_NAME }, (err, res) => (err ? reject(err) : resolve(res!))));
      assert.equal(r.status, HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      h.close();
    }
  });

  it('a caller that loses the requested SVID gets INVALID_ARGUMENT at the next push', async () => {
    const e = await setup();
    const s = open(e);
    s.send(req([rootDbId.spiffeId], { node: NODE }));
    const first = await s.next();
    s.send(req([rootDbId.spiffeId], { versionInfo: first.versionInfo, responseNonce: first.nonce }));
    e.cache.entries.splice(1, 1);
    e.cache.notify();
    assert.equal((await statusOf(s.ended)).code, GrpcStatus.INVALID_ARGUMENT);
  });
});

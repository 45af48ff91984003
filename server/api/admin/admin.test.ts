// The admin API over a real Unix socket, backed by a real SQLite file and a small real CA.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { marshalBundle, parseBundle } from '../../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../../../spiffe/id.js';
import { validateJwtSvid } from '../../../spiffe/jwtsvid.js';
import { generateKeyPair } from '../../../spiffe/keys.js';
import { certificatesToPem } from '../../../spiffe/pem.js';
import { createCsr, parseCertificate, verifyX509Svid } from '../../../spiffe/x509/index.js';
import { MatchBehavior, type EntryFilter, type ListEntriesRequest } from '../../../proto/gen/spindle/admin/v1/admin.js';
import { Entry } from '../../../proto/gen/spindle/types/v1/types.js';
import { HealthCheckResponse_ServingStatus } from '../../../proto/gen/grpc/health/v1/health.js';
import { AdminClient } from '../../cli/client.js';
import { CliError } from '../../cli/errors.js';
import { DataStoreError } from '../../datastore/types.js';
import { EntryValidationError } from '../../entries/validate.js';
import { ApiError, statusOf } from '../errors.js';
import { createTestCaSigner, startTestAdmin, type TestAdmin } from './testkit.js';

const TD = 'example.org';
const AGENT = 'spiffe://example.org/spire/agent/join_token/abc' as SpiffeId;

let admin: TestAdmin;
let client: AdminClient;

before(async () => {
  admin = await startTestAdmin({ trustDomain: TD });
  client = new AdminClient(admin.socketPath, { timeoutMs: 10_000 });
});

after(async () => {
  client.close();
  await admin.close();
});

function entry(spiffe: string, selectors: string[], extra: Partial<Entry> = {}): Entry {
  return Entry.fromPartial({
    spiffeId: spiffe,
    parentId: AGENT,
    selectors: selectors.map((s) => {
      const colon = s.indexOf(':');
      return colon === -1 ? { type: s, value: '' } : { type: s.slice(0, colon), value: s.slice(colon + 1) };
    }),
    ...extra,
  });
}

async function rpcFails(p: Promise<unknown>, code: GrpcStatus, message?: RegExp): Promise<CliError> {
  const err = await p.then(
    () => assert.fail('expected the call to fail'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CliError, String(err));
  assert.equal(err.grpcCode, code, err.message);
  if (message) assert.match(err.details ?? '', message);
  return err;
}

const create = (entries: Entry[]) => client.call(client.entry.batchCreateEntry, { entries });
const list = (req: ListEntriesRequest) => client.call(client.entry.listEntries, req);

describe('EntryService', () => {
  test('batch create: one result per entry, in order, with per-entry status', async () => {
    const resp = await create([
      entry('spiffe://example.org/web', ['unix:uid:1000'], { dnsNames: ['web.example.org'], hint: 'web' }),
      entry('spiffe://example.org/bad', ['nocolon']),
      entry('spiffe://other.org/w', ['unix:uid:1']),
      entry('spiffe://example.org/a/../b', ['unix:uid:1']),
      entry('spiffe://example.org/%41', ['unix:uid:1']),
      entry('spiffe://example.org/noparent', ['unix:uid:1'], { parentId: '' }),
      entry('spiffe://example.org/web', ['unix:uid:1000']),
    ]);
    const codes = resp.results.map((r) => r.status?.code);
    assert.deepEqual(codes, [
      GrpcStatus.OK,
      GrpcStatus.INVALID_ARGUMENT,
      GrpcStatus.INVALID_ARGUMENT,
      GrpcStatus.INVALID_ARGUMENT,
      GrpcStatus.INVALID_ARGUMENT,
      GrpcStatus.INVALID_ARGUMENT,
      GrpcStatus.ALREADY_EXISTS,
    ]);
    const created = resp.results[0]!.entry!;
    assert.equal(created.spiffeId, 'spiffe://example.org/web');
    assert.deepEqual(created.dnsNames, ['web.example.org']);
    assert.equal(created.revisionNumber, 0n);
    assert.match(resp.results[1]!.status!.message, /selectors/);
    assert.match(resp.results[2]!.status!.message, /spiffeId.*trust domain "example.org"/);
    assert.match(resp.results[3]!.status!.message, /spiffeId.*"\." or "\.\." segments/);
    assert.match(resp.results[4]!.status!.message, /spiffeId.*percent-encoding/);
    assert.match(resp.results[5]!.status!.message, /parentId/);
    // SPIRE: AlreadyExists "similar entry already exists", carrying the existing entry.
    assert.equal(resp.results[6]!.status!.message, 'similar entry already exists');
    assert.equal(resp.results[6]!.entry?.id, created.id);
    assert.equal(await admin.datastore.countEntries({ bySpiffeId: parseSpiffeId('spiffe://example.org/web') }), 1);
  });

  test('get: found, not found, missing id', async () => {
    const [e] = (await admin.datastore.listEntries({ bySpiffeId: parseSpiffeId('spiffe://example.org/web') })).items;
    const got = await client.call(client.entry.getEntry, { id: e!.id });
    assert.equal(got.hint, 'web');
    await rpcFails(client.call(client.entry.getEntry, { id: 'nope' }), GrpcStatus.NOT_FOUND, /not found/);
    await rpcFails(client.call(client.entry.getEntry, { id: '' }), GrpcStatus.INVALID_ARGUMENT, /id/);
  });

  test('list filters, paging and counts', async () => {
    const resp = await create([
      entry('spiffe://example.org/db', ['unix:uid:1001', 'unix:gid:50']),
      entry('spiffe://example.org/db2', ['unix:uid:1001'], { federatesWith: ['partner.org'], downstream: true }),
      entry('spiffe://example.org/cache', ['k8s:ns:prod']),
    ]);
    assert.ok(resp.results.every((r) => r.status?.code === GrpcStatus.OK));
    const bySel = (sels: string[], match: MatchBehavior) =>
      list({
        filter: {
          bySpiffeId: '',
          byParentId: '',
          byHint: '',
          byFederatesWith: undefined,
          bySelectors: { selectors: sels.map((s) => ({ type: 'unix', value: s })), match },
        },
        pageSize: 0,
        pageToken: '',
      });
    const ids = async (p: ReturnType<typeof list>) => (await p).entries.map((e) => e.spiffeId).sort();
    assert.deepEqual(await ids(bySel(['uid:1001'], MatchBehavior.MATCH_SUPERSET)), ['spiffe://example.org/db', 'spiffe://example.org/db2']);
    assert.deepEqual(await ids(bySel(['uid:1001'], MatchBehavior.MATCH_EXACT)), ['spiffe://example.org/db2']);
    assert.deepEqual(await ids(bySel(['uid:1001', 'gid:50'], MatchBehavior.MATCH_SUBSET)), ['spiffe://example.org/db', 'spiffe://example.org/db2']);
    assert.deepEqual(await ids(bySel(['gid:50', 'uid:1000'], MatchBehavior.MATCH_ANY)), ['spiffe://example.org/db', 'spiffe://example.org/web']);

    const filter = { bySpiffeId: '', byParentId: AGENT, byHint: '', bySelectors: undefined, byFederatesWith: undefined };
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await list({ filter, pageSize: 2, pageToken: token });
      assert.ok(page.entries.length <= 2);
      seen.push(...page.entries.map((e) => e.id));
      token = page.nextPageToken;
      pages++;
    } while (token !== '');
    assert.equal(seen.length, 4);
    assert.equal(new Set(seen).size, 4);
    assert.ok(pages >= 2);
    await rpcFails(list({ filter, pageSize: 2, pageToken: 'garbage' }), GrpcStatus.INVALID_ARGUMENT);
    await rpcFails(list({ filter, pageSize: -1, pageToken: '' }), GrpcStatus.INVALID_ARGUMENT, /page_size/);

    const count = (f: Partial<EntryFilter>) =>
      client.call(client.entry.countEntries, { filter: { ...filter, byParentId: '', ...f } });
    assert.equal((await count({})).count, 4);
    assert.equal((await count({ byDownstream: true })).count, 1);
    assert.equal((await count({ byFederatesWith: { trustDomains: ['partner.org'], match: MatchBehavior.MATCH_ANY } })).count, 1);
    assert.equal((await count({ byHint: 'web' })).count, 1);
    await rpcFails(count({ bySpiffeId: 'spiffe://example.org/a/./b' }), GrpcStatus.INVALID_ARGUMENT, /by_spiffe_id/);
  });

  test('SQL metacharacters in filters match nothing and change nothing', async () => {
    const before = await admin.datastore.countEntries();
    const nasty = ["' OR '1'='1", "x'; DROP TABLE entries; --", '%', '_', '" OR ""="', '\\'];
    for (const s of nasty) {
      const f = { bySpiffeId: '', byParentId: '', byHint: s, bySelectors: { selectors: [{ type: 'unix', value: s }], match: MatchBehavior.MATCH_ANY }, byFederatesWith: undefined };
      assert.equal((await list({ filter: f, pageSize: 0, pageToken: '' })).entries.length, 0, s);
      assert.equal((await client.call(client.entry.countEntries, { filter: { ...f, bySelectors: undefined } })).count, 0, s);
    }
    await rpcFails(
      list({ filter: { bySpiffeId: "spiffe://example.org/x' OR '1'='1", byParentId: '', byHint: '', bySelectors: undefined, byFederatesWith: undefined }, pageSize: 0, pageToken: '' }),
      GrpcStatus.INVALID_ARGUMENT,
    );
    assert.equal(await admin.datastore.countEntries(), before);
  });

  test('batch update replaces the fields and bumps the revision; failures per entry', async () => {
    const [db] = (await admin.datastore.listEntries({ bySpiffeId: parseSpiffeId('spiffe://example.org/db') })).items;
    const [web] = (await admin.datastore.listEntries({ bySpiffeId: parseSpiffeId('spiffe://example.org/web') })).items;
    const resp = await client.call(client.entry.batchUpdateEntry, {
      entries: [
        entry('spiffe://example.org/db', ['unix:uid:2000'], { id: db!.id, x509SvidTtl: 120, admin: true }),
        entry('spiffe://example.org/x', ['unix:uid:1'], { id: 'missing-id' }),
        entry('spiffe://example.org/x', ['unix:uid:1'], { id: '' }),
        // Would duplicate `web`.
        entry('spiffe://example.org/web', ['unix:uid:1000'], { id: db!.id }),
        entry('spiffe://example.org/web', ['bad'], { id: web!.id }),
      ],
    });
    assert.deepEqual(
      resp.results.map((r) => r.status?.code),
      [GrpcStatus.OK, GrpcStatus.NOT_FOUND, GrpcStatus.INVALID_ARGUMENT, GrpcStatus.ALREADY_EXISTS, GrpcStatus.INVALID_ARGUMENT],
    );
    const updated = resp.results[0]!.entry!;
    assert.equal(updated.revisionNumber, 1n);
    assert.equal(updated.x509SvidTtl, 120);
    assert.deepEqual(updated.selectors, [{ type: 'unix', value: 'uid:2000' }]);
    assert.equal(resp.results[3]!.entry?.id, web!.id);
    const stored = await admin.datastore.getEntry(db!.id);
    assert.equal(stored?.admin, true);
    assert.equal(stored?.revisionNumber, 1);
  });

  test('batch delete reports each id', async () => {
    const made = await create([entry('spiffe://example.org/tmp', ['unix:uid:7'])]);
    const id = made.results[0]!.entry!.id;
    const resp = await client.call(client.entry.batchDeleteEntry, { ids: [id, 'nope', ''] });
    assert.deepEqual(
      resp.results.map((r) => [r.id, r.status?.code]),
      [
        [id, GrpcStatus.OK],
        ['nope', GrpcStatus.NOT_FOUND],
        ['', GrpcStatus.INVALID_ARGUMENT],
      ],
    );
    assert.equal(await admin.datastore.getEntry(id), undefined);
  });
});

describe('AgentService', () => {
  before(async () => {
    const base = { newCertSerial: '', newCertNotAfter: 0, banned: false };
    await admin.datastore.createAttestedNode(
      { ...base, spiffeId: AGENT, attestationType: 'join_token', certSerial: 'aa01', certNotAfter: 2_000_000_000, selectors: [], canReattest: false },
      1_700_000_000,
    );
    await admin.datastore.createAttestedNode(
      {
        ...base,
        spiffeId: parseSpiffeId('spiffe://example.org/spire/agent/k8s_psat/c1/node1'),
        attestationType: 'k8s_psat',
        certSerial: 'bb02',
        certNotAfter: 1_800_000_000,
        selectors: [{ type: 'k8s_psat', value: 'cluster:c1' }],
        canReattest: true,
      },
      1_700_000_000,
    );
  });

  const filter = (f: Record<string, unknown> = {}) => ({ byAttestationType: '', bySelectors: undefined, byExpiresBefore: 0n, ...f });

  test('list, count and filters', async () => {
    const all = await client.call(client.agent.listAgents, { filter: filter(), pageSize: 0, pageToken: '' });
    assert.equal(all.agents.length, 2);
    const jt = all.agents.find((a) => a.attestationType === 'join_token')!;
    assert.equal(jt.x509SvidSerialNumber, 'aa01');
    assert.equal(jt.x509SvidExpiresAt, 2_000_000_000n);
    const count = async (f: Record<string, unknown>) => (await client.call(client.agent.countAgents, { filter: filter(f) })).count;
    assert.equal(await count({}), 2);
    assert.equal(await count({ byAttestationType: 'k8s_psat' }), 1);
    assert.equal(await count({ byCanReattest: true }), 1);
    assert.equal(await count({ byExpiresBefore: 1_900_000_000n }), 1);
    assert.equal(await count({ bySelectors: { selectors: [{ type: 'k8s_psat', value: 'cluster:c1' }], match: MatchBehavior.MATCH_SUPERSET } }), 1);
    assert.equal(await count({ byAttestationType: "join_token' OR '1'='1" }), 0);
  });

  test('get, ban, evict', async () => {
    const got = await client.call(client.agent.getAgent, { id: AGENT });
    assert.equal(got.spiffeId, AGENT);
    await rpcFails(client.call(client.agent.getAgent, { id: 'spiffe://example.org/spire/agent/x/none' }), GrpcStatus.NOT_FOUND);
    await rpcFails(client.call(client.agent.getAgent, { id: 'not an id' }), GrpcStatus.INVALID_ARGUMENT, /id/);

    await client.call(client.agent.banAgent, { id: AGENT });
    const banned = await admin.datastore.getAttestedNode(AGENT);
    assert.equal(banned?.banned, true);
    assert.equal(banned?.certSerial, '');
    assert.equal((await client.call(client.agent.countAgents, { filter: filter({ byBanned: true }) })).count, 1);

    await client.call(client.agent.deleteAgent, { id: AGENT });
    assert.equal(await admin.datastore.getAttestedNode(AGENT), undefined);
    await rpcFails(client.call(client.agent.deleteAgent, { id: AGENT }), GrpcStatus.NOT_FOUND);
    await rpcFails(client.call(client.agent.banAgent, { id: AGENT }), GrpcStatus.NOT_FOUND);
  });

  test('join token: UUID v4, stored hashed, default TTL 600, single use', async () => {
    const before = Math.floor(Date.now() / 1000);
    const resp = await client.call(client.agent.createJoinToken, { ttl: 0, agentAliasSpiffeId: '' });
    assert.match(resp.value, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const exp = Number(resp.expiresAt);
    const afterCall = Math.floor(Date.now() / 1000);
    assert.ok(exp >= before + 600 && exp <= afterCall + 600, String(exp - before));
    assert.equal(await admin.datastore.consumeJoinToken(resp.value), undefined, 'the raw token is not a key');
    const hash = createHash('sha256').update(resp.value).digest('hex');
    const stored = await admin.datastore.consumeJoinToken(hash);
    assert.equal(stored?.expiresAt, exp);
    await rpcFails(client.call(client.agent.createJoinToken, { ttl: -1, agentAliasSpiffeId: '' }), GrpcStatus.INVALID_ARGUMENT, /ttl/);
  });

  test('join token with an alias creates the entry SPIRE creates', async () => {
    const resp = await client.call(client.agent.createJoinToken, { ttl: 60, agentAliasSpiffeId: 'spiffe://example.org/nodes/blue' });
    const agentId = `spiffe://example.org/spire/agent/join_token/${resp.value}`;
    const { items } = await admin.datastore.listEntries({ bySpiffeId: parseSpiffeId('spiffe://example.org/nodes/blue') });
    assert.equal(items.length, 1);
    assert.equal(items[0]!.parentId, agentId);
    assert.deepEqual(items[0]!.selectors, [{ type: 'spiffe_id', value: agentId }]);

    const entriesBefore = await admin.datastore.countEntries();
    for (const bad of ['spiffe://other.org/n', 'spiffe://example.org/spire/agent/x', 'spiffe://example.org', 'spiffe://example.org/a/../b']) {
      await rpcFails(client.call(client.agent.createJoinToken, { ttl: 60, agentAliasSpiffeId: bad }), GrpcStatus.INVALID_ARGUMENT, /agent_alias_spiffe_id/);
    }
    assert.equal(await admin.datastore.countEntries(), entriesBefore);
  });
});

describe('BundleService', () => {
  test('own bundle', async () => {
    const b = await client.call(client.bundle.getBundle, {});
    assert.equal(b.trustDomain, TD);
    assert.equal(b.sequence, 1n);
    const parsed = parseBundle(parseTrustDomain(TD), b.document);
    assert.deepEqual(parsed.x509Authorities(), [admin.ca.rootDer]);
    assert.ok(parsed.jwtAuthority(admin.ca.jwtKid));
  });

  test('federated bundles: set (SPIFFE and PEM), list, get, delete; our own trust domain refused', async () => {
    const partner = await createTestCaSigner(parseTrustDomain('partner.org'));
    const other = await createTestCaSigner(parseTrustDomain('other.org'));
    const partnerDoc = marshalBundle(partner.bundle());
    const set = await client.call(client.bundle.batchSetFederatedBundle, {
      bundles: [
        { trustDomain: 'spiffe://partner.org', document: Buffer.from(partnerDoc), sequence: 0n },
        { trustDomain: TD, document: Buffer.from(partnerDoc), sequence: 0n },
        { trustDomain: 'bad.org', document: Buffer.from('{"keys": 3}'), sequence: 0n },
        { trustDomain: 'Bad.Org', document: Buffer.from(partnerDoc), sequence: 0n },
      ],
      pem: false,
    });
    assert.deepEqual(
      set.results.map((r) => [r.trustDomain, r.status?.code]),
      [
        ['partner.org', GrpcStatus.OK],
        [TD, GrpcStatus.INVALID_ARGUMENT],
        ['bad.org', GrpcStatus.INVALID_ARGUMENT],
        ['Bad.Org', GrpcStatus.INVALID_ARGUMENT],
      ],
    );
    assert.match(set.results[1]!.status!.message, /own trust domain/);

    const pemSet = await client.call(client.bundle.batchSetFederatedBundle, {
      bundles: [{ trustDomain: 'other.org', document: Buffer.from(certificatesToPem([other.rootDer])), sequence: 0n }],
      pem: true,
    });
    assert.equal(pemSet.results[0]!.status?.code, GrpcStatus.OK);

    const listed = await client.call(client.bundle.listFederatedBundles, {});
    assert.deepEqual(listed.bundles.map((b) => b.trustDomain).sort(), ['other.org', 'partner.org']);
    const got = await client.call(client.bundle.getFederatedBundle, { trustDomain: 'other.org' });
    assert.deepEqual(parseBundle(parseTrustDomain('other.org'), got.document).x509Authorities(), [other.rootDer]);
    assert.equal(got.sequence, 1n);
    await rpcFails(client.call(client.bundle.getFederatedBundle, { trustDomain: TD }), GrpcStatus.INVALID_ARGUMENT);
    await rpcFails(client.call(client.bundle.getFederatedBundle, { trustDomain: 'nobody.org' }), GrpcStatus.NOT_FOUND);

    // An entry federating with partner.org blocks its deletion (SPIRE's "restrict").
    const made = await create([entry('spiffe://example.org/fed', ['unix:uid:9'], { federatesWith: ['partner.org'] })]);
    const del = await client.call(client.bundle.batchDeleteFederatedBundle, { trustDomains: ['partner.org', 'other.org', 'nobody.org', TD] });
    assert.deepEqual(
      del.results.map((r) => r.status?.code),
      [GrpcStatus.FAILED_PRECONDITION, GrpcStatus.OK, GrpcStatus.NOT_FOUND, GrpcStatus.INVALID_ARGUMENT],
    );
    assert.match(del.results[0]!.status!.message, /2 registration entries federate/);
    const federating = await admin.datastore.listEntries({ byFederatesWith: { trustDomains: [parseTrustDomain('partner.org')], match: 'any' } });
    assert.ok(federating.items.some((e) => e.id === made.results[0]!.entry!.id));
    await client.call(client.entry.batchDeleteEntry, { ids: federating.items.map((e) => e.id) });
    const del2 = await client.call(client.bundle.batchDeleteFederatedBundle, { trustDomains: ['partner.org'] });
    assert.equal(del2.results[0]!.status?.code, GrpcStatus.OK);
    assert.deepEqual((await admin.datastore.listBundles()).map((b) => b.trustDomain), []);
  });
});

describe('SVIDService', () => {
  test('MintX509SVID: identity and DNS names from the request; the CSR only gives the key', async () => {
    const keys = await generateKeyPair();
    // The CSR asks for another identity and extra names: ignored.
    const csr = createCsr(keys.privateKey, { uris: ['spiffe://example.org/admin'], dnsNames: ['evil.example.org'] });
    const resp = await client.call(client.svid.mintX509Svid, { csr, spiffeId: 'spiffe://example.org/minted', ttl: 300, dnsNames: ['m.example.org'] });
    const chain = resp.svid!.certChain;
    const verified = verifyX509Svid(chain, admin.ca.bundle());
    assert.equal(verified.id, 'spiffe://example.org/minted');
    const leaf = parseCertificate(chain[0]!);
    assert.deepEqual(leaf.dnsSans, ['m.example.org']);
    assert.equal(resp.svid!.serial, leaf.serialHex);
    assert.deepEqual(resp.bundle, [admin.ca.rootDer]);
    assert.ok(Number(resp.svid!.expiresAt) - Date.now() / 1000 <= 300);
  });

  test('MintX509SVID refusals', async () => {
    const csr = createCsr((await generateKeyPair()).privateKey);
    const mint = (req: { spiffeId: string; csr?: Buffer; ttl?: number; dnsNames?: string[] }) =>
      client.call(client.svid.mintX509Svid, { csr: req.csr ?? csr, spiffeId: req.spiffeId, ttl: req.ttl ?? 0, dnsNames: req.dnsNames ?? [] });
    await rpcFails(mint({ spiffeId: 'spiffe://other.org/w' }), GrpcStatus.INVALID_ARGUMENT, /trust domain/);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org' }), GrpcStatus.INVALID_ARGUMENT, /non-root/);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org/spire/server' }), GrpcStatus.INVALID_ARGUMENT, /reserved/);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org/%2e' }), GrpcStatus.INVALID_ARGUMENT, /spiffe_id/);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org/w', csr: Buffer.alloc(0) }), GrpcStatus.INVALID_ARGUMENT, /csr/);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org/w', csr: Buffer.from('not a csr') }), GrpcStatus.INVALID_ARGUMENT);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org/w', ttl: -5 }), GrpcStatus.INVALID_ARGUMENT, /ttl/);
    await rpcFails(mint({ spiffeId: 'spiffe://example.org/w', dnsNames: ['bad name'] }), GrpcStatus.INVALID_ARGUMENT, /dns_names/);
  });

  test('MintJWTSVID', async () => {
    const resp = await client.call(client.svid.mintJwtsvid, { spiffeId: 'spiffe://example.org/jwt', audience: ['a1', 'a2'], ttl: 120 });
    const v = await validateJwtSvid(resp.svid!.token, { audience: 'a2', bundles: admin.ca.bundle() });
    assert.equal(v.id, 'spiffe://example.org/jwt');
    assert.deepEqual(v.audience, ['a1', 'a2']);
    await rpcFails(client.call(client.svid.mintJwtsvid, { spiffeId: 'spiffe://example.org/jwt', audience: [], ttl: 0 }), GrpcStatus.INVALID_ARGUMENT, /audience/);
    await rpcFails(client.call(client.svid.mintJwtsvid, { spiffeId: 'spiffe://x.org/jwt', audience: ['a'], ttl: 0 }), GrpcStatus.INVALID_ARGUMENT);
  });
});

test('health: SERVING for the server and its services, NOT_FOUND otherwise', async () => {
  const all = await client.call(client.health.check, { service: '' });
  assert.equal(all.status, HealthCheckResponse_ServingStatus.SERVING);
  const one = await client.call(client.health.check, { service: 'spindle.admin.v1.EntryService' });
  assert.equal(one.status, HealthCheckResponse_ServingStatus.SERVING);
  await rpcFails(client.call(client.health.check, { service: 'nope' }), GrpcStatus.NOT_FOUND);
});

test('statusOf: caller errors keep their message; internal ones are hidden and logged', () => {
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  assert.deepEqual(statusOf(new EntryValidationError('selectors', 'format', 'invalid selectors "x"'), log), {
    code: GrpcStatus.INVALID_ARGUMENT,
    message: 'invalid selectors "x"',
  });
  assert.equal(statusOf(new DataStoreError('not_found', 'entry "x" not found'), log).code, GrpcStatus.NOT_FOUND);
  assert.equal(statusOf(new DataStoreError('duplicate_entry', 'dup'), log).code, GrpcStatus.ALREADY_EXISTS);
  assert.equal(statusOf(new ApiError(GrpcStatus.FAILED_PRECONDITION, 'why'), log).code, GrpcStatus.FAILED_PRECONDITION);
  assert.equal(lines.length, 0);
  const io = statusOf(new DataStoreError('io', 'SQLITE_CORRUPT at /secret/path'), log);
  assert.equal(io.code, GrpcStatus.UNAVAILABLE);
  assert.doesNotMatch(io.message, /secret/);
  const sqliteError = (code: string): Error => Object.assign(new Error(`${code}: /secret/path`), { code });
  const full = statusOf(new DataStoreError('io', 'write failed', { cause: sqliteError('SQLITE_FULL') }), log);
  assert.equal(full.code, GrpcStatus.RESOURCE_EXHAUSTED);
  assert.match(full.message, /disk holding the datastore is full: nothing was written/);
  const ro = statusOf(new DataStoreError('io', 'write failed', { cause: sqliteError('SQLITE_READONLY_DBMOVED') }), log);
  assert.equal(ro.code, GrpcStatus.UNAVAILABLE);
  assert.match(ro.message, /read-only/);
  assert.doesNotMatch(full.message + ro.message, /secret/);
  const internal = statusOf(new TypeError('x is undefined in /secret/file.ts'), log);
  assert.deepEqual(internal, { code: GrpcStatus.INTERNAL, message: 'internal error' });
  assert.equal(lines.length, 4);
  assert.match(lines.join(''), /secret/);
});

// Decoding of Workload API responses, without gRPC.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mintJwtSvid } from '../jwtsvid.js';
import type { SpiffeId } from '../id.js';
import { parseJwtBundlesResponse, parseJwtSvidResponse, parseValidateJwtSvidResponse, parseX509BundlesResponse, parseX509SvidResponse } from './parse.js';
import { buildX509Response, createTestTrust, td, type TestTrust } from './testkit.js';
import type { X509SVIDResponse } from '../../proto/gen/workload/workload.js';

let trust: TestTrust;
let base: X509SVIDResponse;

before(async () => {
  trust = await createTestTrust();
  base = buildX509Response({ identities: [trust.web, trust.db], ...trust.material });
});

test('X.509: federated bundles keyed spiffe://td or bare td; a federated entry for the own trust domain is ignored', () => {
  const ctx = parseX509SvidResponse({
    ...base,
    federatedBundles: new Map([
      ['partner.org', trust.partner.rootDer],
      ['spiffe://example.org', trust.partner.rootDer],
    ]),
  });
  assert.deepEqual(ctx.bundles.trustDomains(), ['example.org', 'partner.org']);
  assert.deepEqual(ctx.bundles.get(td('example.org'))!.x509Authorities(), [trust.ca.rootDer], 'own bundle wins');
});

test('X.509: of SVIDs sharing a non-empty hint only the first is kept; empty hints never collide', () => {
  const [web, db] = base.svids;
  const ctx = parseX509SvidResponse({ ...base, svids: [web!, { ...db!, hint: 'web' }] });
  assert.deepEqual(ctx.svids.map((s) => s.id), ['spiffe://example.org/web']);
  const ctx2 = parseX509SvidResponse({ ...base, svids: [{ ...web!, hint: '' }, { ...db!, hint: '' }] });
  assert.equal(ctx2.svids.length, 2);
});

test('X.509: a leaf with CA=true, a bad spiffe_id or trailing garbage is refused', async () => {
  const evil = await trust.ca.evilLeaf('ca_leaf', { id: 'spiffe://example.org/web' });
  const first = base.svids[0]!;
  assert.throws(() => parseX509SvidResponse({ ...base, svids: [{ ...first, x509Svid: evil.certDer, x509SvidKey: evil.keyPkcs8 }] }), /not a valid X509-SVID/);
  assert.throws(() => parseX509SvidResponse({ ...base, svids: [{ ...first, spiffeId: 'spiffe://example.org/a/../web' }] }), /is not a SPIFFE ID/);
  assert.throws(() => parseX509SvidResponse({ ...base, svids: [{ ...first, x509Svid: Buffer.concat([first.x509Svid, Buffer.from([1, 2])]) }] }), /concatenated DER/);
});

test('X.509 bundles: map keys parsed, values must be DER certificates', () => {
  const set = parseX509BundlesResponse({ crl: [], bundles: new Map([['spiffe://partner.org', trust.partner.rootDer]]) });
  assert.deepEqual(set.trustDomains(), ['partner.org']);
  assert.throws(() => parseX509BundlesResponse({ crl: [], bundles: new Map([['spiffe://partner.org/path', trust.partner.rootDer]]) }), /not a trust domain ID/);
  assert.throws(() => parseX509BundlesResponse({ crl: [], bundles: new Map([['spiffe://partner.org', Buffer.from('junk')]]) }), /concatenated DER/);
  assert.throws(
    () => parseX509BundlesResponse({ crl: [], bundles: new Map([['spiffe://partner.org', trust.partner.rootDer], ['partner.org', trust.partner.rootDer]]) }),
    /two entries/,
  );
});

test('JWT bundles: JWKS per trust domain, keys need a kid', () => {
  const map = trust.material.jwtBundles.jwtBundlesMap();
  assert.deepEqual(parseJwtBundlesResponse({ bundles: map }).trustDomains(), ['example.org', 'partner.org']);
  const noKid = Buffer.from(JSON.stringify({ keys: [{ use: 'jwt-svid', kty: 'EC', crv: 'P-256', x: 'a', y: 'b' }] }));
  assert.throws(() => parseJwtBundlesResponse({ bundles: new Map([['spiffe://example.org', noKid]]) }), /not a JWKS/);
});

test('JWT-SVIDs: sub must equal spiffe_id, the requested ID and carry every requested audience', async () => {
  const id = 'spiffe://example.org/web' as SpiffeId;
  const { token } = await mintJwtSvid({ id, audience: ['a', 'b'], signer: trust.signer });
  const svids = parseJwtSvidResponse({ svids: [{ spiffeId: id, svid: token, hint: '' }] }, ['a', 'b'], id);
  assert.deepEqual(svids[0]!.audience, ['a', 'b']);
  assert.throws(() => parseJwtSvidResponse({ svids: [{ spiffeId: 'spiffe://example.org/db', svid: token, hint: '' }] }, ['a']), /does not match the token's sub/);
  assert.throws(() => parseJwtSvidResponse({ svids: [{ spiffeId: id, svid: token, hint: '' }] }, ['c']), /requested audience "c"/);
  assert.throws(() => parseJwtSvidResponse({ svids: [{ spiffeId: id, svid: token, hint: '' }] }, ['a'], 'spiffe://example.org/db' as SpiffeId), /not the requested/);
  assert.throws(() => parseJwtSvidResponse({ svids: [] }, ['a']), /no JWT-SVID/);
  const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${token.split('.')[1]}.x`;
  assert.throws(() => parseJwtSvidResponse({ svids: [{ spiffeId: id, svid: none, hint: '' }] }, ['a']), /not a JWT-SVID/);
});

test('ValidateJWTSVID: the subject must be a SPIFFE ID', () => {
  assert.deepEqual(parseValidateJwtSvidResponse({ spiffeId: 'spiffe://example.org/web', claims: { a: 1 } }), { spiffeId: 'spiffe://example.org/web', claims: { a: 1 } });
  assert.throws(() => parseValidateJwtSvidResponse({ spiffeId: 'web', claims: undefined }), /not a SPIFFE ID/);
});

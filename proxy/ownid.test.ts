// ownIdReader: our SPIFFE ID read once per SVID, a rotation seen at once, none after notAfter.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { X509Source } from '../spiffe/sdk/x509source.js';
import { createTestTrust, FakeAgent, type TestTrust } from '../spiffe/workloadapi/testkit.js';
import { ownIdReader } from './ownid.js';

let trust: TestTrust;
let agent: FakeAgent;
let source: X509Source;
let clock = Date.now();

before(async () => {
  trust = await createTestTrust();
  agent = await FakeAgent.start({ identities: [trust.db], ...trust.material });
  source = await X509Source.create({ socketPath: agent.socketPath, now: () => new Date(clock) });
});

after(async () => {
  source?.close();
  await agent?.close();
});

test('the ID of the current SVID, the same answer while it holds, the new one after a rotation', async () => {
  const own = ownIdReader(source, () => clock);
  assert.equal(own(), 'spiffe://example.org/db');
  assert.equal(own(), 'spiffe://example.org/db');

  const updated = once(source, 'updated');
  agent.update({ identities: [trust.web] });
  await updated;
  assert.equal(own(), 'spiffe://example.org/web');

  // Past the leaf's notAfter (1 h by default): the source refuses an expired SVID, so no ID.
  clock += 2 * 3600_000;
  assert.equal(own(), undefined);
});

test('a closed source: no ID rather than a throw', async () => {
  const agent2 = await FakeAgent.start({ identities: [trust.db], ...trust.material });
  const s2 = await X509Source.create({ socketPath: agent2.socketPath });
  const own = ownIdReader(s2);
  assert.equal(own(), 'spiffe://example.org/db');
  s2.close();
  assert.equal(own(), undefined);
  await agent2.close();
});

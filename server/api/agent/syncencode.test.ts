import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentAPIService, SyncAuthorizedResponse } from '../../../proto/gen/spindle/agent/v1/agent.js';
import type { SpiffeId, TrustDomain } from '../../../spiffe/id.js';
import type { RegistrationEntry } from '../../datastore/types.js';
import { entryToProto } from '../convert.js';
import { agentApiServiceDefinition, encodedEntry, encodeSyncResponse } from './syncencode.js';

function entry(n: number, over: Partial<RegistrationEntry> = {}): RegistrationEntry {
  return {
    id: `0190c0de-0000-7000-8000-${String(n).padStart(12, '0')}`,
    spiffeId: `spiffe://example.org/w/${n}` as SpiffeId,
    parentId: 'spiffe://example.org/spire/agent/join_token/x' as SpiffeId,
    selectors: [{ type: 'unix', value: `uid:${1000 + n}` }],
    x509SvidTtl: n % 2 === 0 ? 0 : 600,
    jwtSvidTtl: 0,
    dnsNames: n % 3 === 0 ? [`w${n}.local`, 'x.local'] : [],
    federatesWith: n % 4 === 0 ? (['other.org'] as TrustDomain[]) : [],
    admin: n === 1,
    downstream: false,
    hint: n === 2 ? 'hint' : '',
    entryExpiry: n === 5 ? 2_000_000_000 : 0,
    revisionNumber: n,
    createdAt: 1_700_000_000 + n,
    updatedAt: 1_700_000_100 + n,
    ...over,
  };
}

const base = (over: Partial<SyncAuthorizedResponse> = {}): SyncAuthorizedResponse => ({
  revision: 42n,
  snapshot: true,
  entries: [],
  removedEntryIds: ['gone-1', 'gone-2'],
  bundles: [{ trustDomain: 'example.org', document: Buffer.from('{"keys":[]}'), sequence: 7n }],
  bundlesIncluded: true,
  ...over,
});

test('a message with pre-encoded entries decodes to exactly what the generated encoder would send', () => {
  const entries = Array.from({ length: 12 }, (_, i) => entry(i + 1));
  // One entry over 16 KiB: its length prefix takes three varint bytes.
  entries.push(entry(13, { dnsNames: Array.from({ length: 300 }, (_, i) => `${'d'.repeat(50)}-${i}.example.org`) }));
  const expected = base({ entries: entries.map(entryToProto) });
  const bytes = encodeSyncResponse(base(), entries);
  assert.deepEqual(SyncAuthorizedResponse.decode(bytes), SyncAuthorizedResponse.decode(SyncAuthorizedResponse.encode(expected).finish()));
  assert.equal(bytes.length, SyncAuthorizedResponse.encode(expected).finish().length, 'same fields, same size: only their order differs');
  // Entries given in the message itself are ignored (the list argument is what is sent).
  assert.deepEqual(SyncAuthorizedResponse.decode(encodeSyncResponse(base({ entries: [entryToProto(entry(99))] }), entries)).entries, expected.entries);
  // No entries and default values.
  const empty = { revision: 0n, snapshot: false, entries: [], removedEntryIds: [], bundles: [], bundlesIncluded: false };
  assert.deepEqual(SyncAuthorizedResponse.decode(encodeSyncResponse(empty, [])), empty);
});

test('an entry is encoded once per version: a new revision of the same object is encoded again', () => {
  const e = entry(3);
  const first = encodedEntry(e);
  assert.equal(encodedEntry(e), first, 'cached');
  e.revisionNumber = 4;
  e.dnsNames = ['changed.local'];
  const second = encodedEntry(e);
  assert.notEqual(second, first);
  assert.deepEqual(SyncAuthorizedResponse.decode(encodeSyncResponse(base(), [e])).entries[0]!.dnsNames, ['changed.local']);
});

test('the SyncAuthorized serializer passes encoded messages through and still encodes objects', () => {
  const ser = agentApiServiceDefinition.syncAuthorized.responseSerialize;
  const encoded = encodeSyncResponse(base(), [entry(1)]);
  assert.equal(ser(encoded as unknown as SyncAuthorizedResponse), encoded);
  const msg = base({ entries: [entryToProto(entry(2))] });
  assert.deepEqual(ser(msg), AgentAPIService.syncAuthorized.responseSerialize(msg));
  // Every other method is the generated one.
  assert.equal(agentApiServiceDefinition.newJwtsvid, AgentAPIService.newJwtsvid);
  assert.equal(agentApiServiceDefinition.syncAuthorized.path, AgentAPIService.syncAuthorized.path);
});

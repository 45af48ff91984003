// Pure formatting and parsing helpers of the CLI (no processes, no sockets).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { goTimeString, grpcCodeName, indentJsonText, parseOutputFormat, pluralize } from '../../common/output.js';
import { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import { SERVER_DEFAULTS } from '../config/config.js';
import { DEFAULT_SOCKET_PATH } from './common.js';
import { formatEntry, parseEntriesJson, sortEntries } from './entryformat.js';

test('the CLI default socket path is the server default', () => {
  assert.equal(DEFAULT_SOCKET_PATH, SERVER_DEFAULTS.server.socket_path);
});

test('indentJsonText: Go json.Indent layout, 64-bit numbers and strings untouched', () => {
  const text = '{"keys":[],"a":{"s":"x,\\"y\\":[{}]","n":[1,2]},"spiffe_sequence":18446744073709551615,"e":{}}';
  assert.equal(
    indentJsonText(text),
    '{\n    "keys": [],\n    "a": {\n        "s": "x,\\"y\\":[{}]",\n        "n": [\n            1,\n            2\n        ]\n    },\n' +
      '    "spiffe_sequence": 18446744073709551615,\n    "e": {}\n}',
  );
});

test('Go-style helpers', () => {
  assert.equal(goTimeString(0), '1970-01-01 00:00:00 +0000 UTC');
  assert.equal(goTimeString(2_000_000_000n), '2033-05-18 03:33:20 +0000 UTC');
  assert.equal(pluralize(1, 'entry', 'entries'), '1 entry');
  assert.equal(pluralize(0, 'entry', 'entries'), '0 entries');
  assert.equal(grpcCodeName(6), 'AlreadyExists');
  assert.equal(grpcCodeName(99), 'Code(99)');
  assert.equal(parseOutputFormat('JSON'), 'json');
  assert.throws(() => parseOutputFormat('yaml'), /expected one of pretty, json/);
});

test('formatEntry prints only what is set, in SPIRE order', () => {
  const e = Entry.fromPartial({ id: 'id1', spiffeId: 'spiffe://td/w', parentId: 'spiffe://td/p', selectors: [{ type: 'unix', value: 'uid:1' }] });
  assert.equal(
    formatEntry(e),
    'Entry ID         : id1\nSPIFFE ID        : spiffe://td/w\nParent ID        : spiffe://td/p\nRevision         : 0\n' +
      'X509-SVID TTL    : default\nJWT-SVID TTL     : default\nSelector         : unix:uid:1\n\n',
  );
});

test('sortEntries orders by SPIFFE ID, parent, selectors, id', () => {
  const mk = (spiffeId: string, parentId: string, id: string) => Entry.fromPartial({ spiffeId, parentId, id });
  const sorted = sortEntries([mk('spiffe://td/b', 'spiffe://td/p', '1'), mk('spiffe://td/a', 'spiffe://td/q', '2'), mk('spiffe://td/a', 'spiffe://td/p', '3')]);
  assert.deepEqual(sorted.map((e) => e.id), ['3', '2', '1']);
});

test('parseEntriesJson: SPIRE keys, Go-style case-insensitive matching, errors naming the key', () => {
  const [a, b] = parseEntriesJson(
    JSON.stringify({
      entries: [
        {
          entry_id: 'e1',
          spiffe_id: 'spiffe://td/a',
          parent_id: 'spiffe://td/p',
          selectors: [{ type: 'unix', value: 'uid:1' }],
          ttl: 30,
          jwt_svid_ttl: 40,
          federates_with: ['spiffe://other'],
          dns_names: ['a.td'],
          admin: true,
          downstream: true,
          entryExpiry: 99,
          hint: 'h',
          revision_number: 3,
        },
        { SPIFFE_ID: 'spiffe://td/b', parentId: 'spiffe://td/p', selectors: ['k8s:ns:prod'], x509_svid_ttl: 5, ttl: 30 },
      ],
    }),
    'f.json',
  );
  assert.deepEqual(
    [a!.id, a!.spiffeId, a!.parentId, a!.x509SvidTtl, a!.jwtSvidTtl, a!.federatesWith, a!.dnsNames, a!.admin, a!.downstream, a!.expiresAt, a!.hint],
    ['e1', 'spiffe://td/a', 'spiffe://td/p', 30, 40, ['spiffe://other'], ['a.td'], true, true, 99n, 'h'],
  );
  assert.deepEqual([b!.spiffeId, b!.selectors, b!.x509SvidTtl], ['spiffe://td/b', [{ type: 'k8s', value: 'ns:prod' }], 5]);
  assert.throws(() => parseEntriesJson('{', 'f.json'), /f\.json: invalid JSON/);
  assert.throws(() => parseEntriesJson('[]', 'f.json'), /expected a JSON object/);
  assert.throws(() => parseEntriesJson('{"entries":[]}', 'f.json'), /"entries" is empty/);
  assert.throws(() => parseEntriesJson('{"entries":[{"spiffe_id":1}]}', 'f.json'), /entries\[0\]\.spiffe_id: expected a string/);
  assert.throws(() => parseEntriesJson('{"entries":[{"selectors":[{"type":"a","valu":"b"}]}]}', 'f.json'), /unknown selector key "valu"/);
  assert.throws(() => parseEntriesJson('{"entries":[{"store_svid":true}]}', 'f.json'), /not supported/);
  assert.throws(() => parseEntriesJson('{"entries":[],"extra":1}', 'f.json'), /unknown key "extra"/);
});

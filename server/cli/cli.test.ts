// The spindle-server admin CLI as a real process (bin/spindle-server) against a real admin
// server on a real Unix socket, over a real SQLite file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId } from '../../spiffe/id.js';
import { validateJwtSvid } from '../../spiffe/jwtsvid.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { forOtherUid, needsRoot } from '../../test/support/otheruid.js';
import { createTestCaSigner, startTestAdmin, type TestAdmin } from '../api/admin/testkit.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'spindle-server');
const TD = 'example.org';
const AGENT = 'spiffe://example.org/spire/agent/join_token/agent-1' as SpiffeId;
const UUID_V4 = /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/;

let admin: TestAdmin;
let work: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/spindle-server asynchronously (the admin server lives in this process). */
function run(args: string[], opts: { input?: string; socket?: boolean; umask0?: boolean; uid?: number; gid?: number } = {}): Promise<Run> {
  const argv = opts.socket === false ? args : [...args, '-socketPath', admin.socketPath];
  const [cmd, cmdArgs] = opts.umask0
    ? ['/bin/sh', ['-c', 'umask 000; exec "$0" "$@"', process.execPath, BIN, ...argv]]
    : [process.execPath, [opts.uid === undefined ? BIN : forOtherUid(BIN), ...argv]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, cmdArgs as string[], {
      cwd: work,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.gid }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function fails(r: Run, stderr: RegExp): Run {
  assert.notEqual(r.code, 0, `expected failure\nstdout: ${r.stdout}`);
  assert.match(r.stderr, stderr);
  return r;
}

const json = (r: Run): Record<string, unknown> => JSON.parse(ok(r).stdout) as Record<string, unknown>;
const id = (s: string): SpiffeId => parseSpiffeId(s);

before(async () => {
  admin = await startTestAdmin({ trustDomain: TD });
  work = mkdtempSync(join(tmpdir(), 'spindle-cli-'));
  chmodSync(work, 0o755);
  const node = { newCertSerial: '', newCertNotAfter: 0, banned: false, canReattest: false };
  await admin.datastore.createAttestedNode(
    { ...node, spiffeId: AGENT, attestationType: 'join_token', certSerial: '0a1b', certNotAfter: 2_000_000_000, selectors: [{ type: 'join_token', value: 'agent-1' }] },
    1_700_000_000,
  );
  await admin.datastore.createAttestedNode(
    { ...node, spiffeId: id('spiffe://example.org/spire/agent/k8s_psat/c1/n2'), attestationType: 'k8s_psat', certSerial: 'ff', certNotAfter: 1_800_000_000, selectors: [], canReattest: true },
    1_700_000_000,
  );
});

after(async () => {
  await admin.close();
  rmSync(work, { recursive: true, force: true });
});

describe('entry', () => {
  test('create (pretty): SPIRE output, stored as given', async () => {
    const r = ok(
      await run([
        'entry', 'create',
        '-spiffeID', 'spiffe://example.org/web',
        '-parentID', AGENT,
        '-selector', 'unix:uid:1000',
        '-selector', 'unix:gid:1000',
        '-dns', 'web.example.org',
        '-x509SVIDTTL', '600',
        '-jwtSVIDTTL=120',
        '-hint', 'web',
        '-admin',
        '-entryExpiry', '4102444800',
        '-federatesWith', 'spiffe://partner.org',
      ]),
    );
    const stored = (await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/web') })).items;
    assert.equal(stored.length, 1);
    const e = stored[0]!;
    assert.equal(
      r.stdout,
      `Entry ID         : ${e.id}\n` +
        'SPIFFE ID        : spiffe://example.org/web\n' +
        `Parent ID        : ${AGENT}\n` +
        'Revision         : 0\n' +
        'X509-SVID TTL    : 600\n' +
        'JWT-SVID TTL     : 120\n' +
        'Expiration time  : 2100-01-01 00:00:00 +0000 UTC\n' +
        'Selector         : unix:gid:1000\n' +
        'Selector         : unix:uid:1000\n' +
        'FederatesWith    : partner.org\n' +
        'DNS name         : web.example.org\n' +
        'Admin            : true\n' +
        'Hint             : web\n\n',
    );
    assert.deepEqual([e.x509SvidTtl, e.jwtSvidTtl, e.admin, e.hint, e.entryExpiry], [600, 120, true, 'web', 4102444800]);
    assert.deepEqual(e.federatesWith, ['partner.org']);
  });

  test('create (json) with --kebab-case spellings, and -node aliases', async () => {
    const [created, nodeRun] = await Promise.all([
      run(['entry', 'create', '--spiffe-id', 'spiffe://example.org/db', '--parent-id=' + AGENT, '--selector', 'unix:uid:1001', '--x509-svid-ttl', '60', '--output', 'json']),
      run(['entry', 'create', '-node', '-spiffeID', 'spiffe://example.org/nodes/jt', '-selector', 'join_token:agent-1']),
    ]);
    const out = json(created);
    const results = out['results'] as Array<{ status?: { code?: number }; entry: { id: string; spiffeId: string; x509SvidTtl: number } }>;
    assert.equal(results.length, 1);
    assert.equal(results[0]!.status?.code ?? 0, 0);
    assert.equal(results[0]!.entry.spiffeId, 'spiffe://example.org/db');
    assert.equal(results[0]!.entry.x509SvidTtl, 60);
    assert.ok(await admin.datastore.getEntry(results[0]!.entry.id));

    assert.match(ok(nodeRun).stdout, /Parent ID {8}: spiffe:\/\/example\.org\/spire\/server\n/);
  });

  test('duplicate entry: AlreadyExists per entry, exit 1', async () => {
    const r = fails(
      await run(['entry', 'create', '-spiffeID', 'spiffe://example.org/db', '-parentID', AGENT, '-selector', 'unix:uid:1001']),
      /Failed to create the following entry \(code: AlreadyExists, msg: "similar entry already exists"\):\nEntry ID {9}: \(none\)\nSPIFFE ID {8}: spiffe:\/\/example\.org\/db\n/,
    );
    assert.match(r.stderr, /Error: failed to create one or more entries\n$/);
    assert.equal(r.stdout, '');
  });

  test('validation errors name the field and create nothing', async () => {
    const before = await admin.datastore.countEntries();
    const base = ['entry', 'create', '-parentID', AGENT];
    const cases: Array<[string[], RegExp]> = [
      [[...base, '-spiffeID', 'spiffe://example.org/x', '-selector', 'nocolon'], /Error: -selector: .*"nocolon".*type:value/],
      [[...base, '-spiffeID', 'spiffe://example.org/x', '-selector', 'unix:'], /Error: -selector: .*value must not be empty/],
      [[...base, '-spiffeID', 'spiffe://example.org/a/../b', '-selector', 'unix:uid:1'], /Error: -spiffeID: invalid SPIFFE ID .*"\." or "\.\." segments/],
      [[...base, '-spiffeID', 'spiffe://example.org/%41', '-selector', 'unix:uid:1'], /Error: -spiffeID: .*percent-encoding/],
      [['entry', 'create', '-parentID', 'spiffe://example.org/./p', '-spiffeID', 'spiffe://example.org/x', '-selector', 'unix:uid:1'], /Error: -parentID: /],
      [[...base, '-spiffeID', 'spiffe://other.org/x', '-selector', 'unix:uid:1'], /code: InvalidArgument, msg: "invalid spiffeId .*must be in this server's trust domain/],
      [[...base, '-spiffeID', 'spiffe://example.org/spire/x', '-selector', 'unix:uid:1'], /code: InvalidArgument, msg: "invalid spiffeId .*reserved/],
      [['entry', 'create', '-spiffeID', 'spiffe://example.org/x', '-selector', 'unix:uid:1'], /Error: a parent ID is required .*-parentID/],
      [[...base, '-spiffeID', 'spiffe://example.org/x'], /Error: at least one selector is required/],
      [[...base, '-selector', 'unix:uid:1'], /Error: a SPIFFE ID is required/],
      [[...base, '-spiffeID', 'spiffe://example.org/x', '-selector', 'unix:uid:1', '-x509SVIDTTL', 'abc'], /Error: invalid value "abc" for -x509SVIDTTL/],
      [[...base, '-spiffeID', 'spiffe://example.org/x', '-selector', 'unix:uid:1', '-output', 'yaml'], /Error: invalid -output "yaml"/],
      [[...base, '-spiffeID', 'spiffe://example.org/x', '-selector', 'unix:uid:1', '-nosuchflag'], /^Error: unknown flag -nosuchflag \(run 'spindle-server entry create -h' for usage\)$/m],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    results.forEach((r, i) => fails(r, cases[i]![1]));
    assert.equal(await admin.datastore.countEntries(), before);
  });

  test('-data batch from a file and from stdin (SPIRE JSON), per-entry failures reported', async () => {
    const file = join(work, 'entries.json');
    writeFileSync(
      file,
      JSON.stringify({
        entries: [
          { spiffe_id: 'spiffe://example.org/batch1', parent_id: AGENT, selectors: [{ type: 'unix', value: 'uid:3001' }], x509_svid_ttl: 100, dns_names: ['b1.example.org'] },
          { spiffeId: 'spiffe://example.org/batch2', parentID: AGENT, selectors: [{ type: 'unix', value: 'uid:3002' }], admin: true, entryExpiry: 0 },
        ],
      }),
    );
    const r = ok(await run(['entry', 'create', '-data', file]));
    assert.equal(r.stdout.match(/^Entry ID/gm)?.length, 2);
    const b1 = (await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/batch1') })).items[0];
    assert.deepEqual([b1?.x509SvidTtl, b1?.dnsNames], [100, ['b1.example.org']]);
    assert.equal((await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/batch2') })).items[0]?.admin, true);

    const stdin = JSON.stringify({
      entries: [
        { spiffe_id: 'spiffe://example.org/batch3', parent_id: AGENT, selectors: [{ type: 'unix', value: 'uid:3003' }] },
        { spiffe_id: 'spiffe://example.org/batch1', parent_id: AGENT, selectors: [{ type: 'unix', value: 'uid:3001' }] },
      ],
    });
    const [dup, unknownKey, combined] = await Promise.all([
      run(['entry', 'create', '-data', '-'], { input: stdin }),
      run(['entry', 'create', '-data', '-'], { input: '{"entries":[{"spife_id":"x"}]}' }),
      run(['entry', 'create', '-data', file, '-spiffeID', 'spiffe://example.org/x']),
    ]);
    assert.match(fails(dup, /code: AlreadyExists/).stdout, /SPIFFE ID {8}: spiffe:\/\/example\.org\/batch3/);
    fails(unknownKey, /Error: stdin: entries\[0\]: unknown key "spife_id"/);
    fails(combined, /-data cannot be combined/);
  });

  test('show: filters, -entryID, json; SQL metacharacters change nothing', async () => {
    const total = await admin.datastore.countEntries();
    const [db] = (await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/db') })).items;
    const [allRun, oneRun, byIdRun, notFoundRun, exactRun, supersetRun, hintRun, badMatchRun, ...nasty] = await Promise.all([
      run(['entry', 'show']),
      run(['entry', 'show', '-spiffeID', 'spiffe://example.org/db']),
      run(['entry', 'show', '-entryID', db!.id]),
      run(['entry', 'show', '-entryID', 'nope']),
      run(['entry', 'show', '-selector', 'unix:uid:1000', '-matchSelectorsOn', 'exact', '-output', 'json']),
      run(['entry', 'show', '-selector', 'unix:uid:1000', '--match-selectors-on', 'superset', '-output', 'json']),
      run(['entry', 'show', '-hint', 'web']),
      run(['entry', 'show', '-selector', 'unix:uid:1', '-matchSelectorsOn', 'most']),
      run(['entry', 'show', '-selector', "unix:' OR '1'='1"]),
      run(['entry', 'show', '-hint', "x' OR 1=1; DROP TABLE entries; --"]),
      run(['entry', 'show', '-federatesWith', "partner.org' OR 1=1 --"]),
      run(['entry', 'show', '-spiffeID', "spiffe://example.org/x' OR '1'='1"]),
    ]);
    const all = ok(allRun!);
    assert.match(all.stdout, new RegExp(`^Found ${total} entries\n`));
    // SPIRE order: by SPIFFE ID.
    const shown = [...all.stdout.matchAll(/^SPIFFE ID {8}: (.*)$/gm)].map((m) => m[1]!);
    assert.deepEqual(shown, [...shown].sort());

    assert.match(ok(oneRun!).stdout, /^Found 1 entry\nEntry ID/);
    assert.match(ok(byIdRun!).stdout, /SPIFFE ID {8}: spiffe:\/\/example\.org\/db\n/);
    fails(notFoundRun!, /Error: error fetching entry ID nope: rpc error: code = NotFound/);
    assert.deepEqual(json(exactRun!)['entries'], []);
    assert.deepEqual((json(supersetRun!)['entries'] as Array<{ spiffeId: string }>).map((e) => e.spiffeId), ['spiffe://example.org/web']);
    assert.match(ok(hintRun!).stdout, /^Found 1 entry\n/);
    fails(badMatchRun!, /match behavior "most" unknown/);
    assert.equal(ok(nasty[0]!).stdout, 'Found 0 entries\n');
    assert.equal(ok(nasty[1]!).stdout, 'Found 0 entries\n');
    fails(nasty[2]!, /InvalidArgument/);
    fails(nasty[3]!, /Error: -spiffeID: invalid SPIFFE ID/);
    assert.equal(await admin.datastore.countEntries(), total);
  });

  test('show: a stored value with U+2028 and U+0085 stays on its line, escaped (pretty and json)', async () => {
    // Validation refuses such values today; a row stored by an older version (or written to the
    // database directly) must still not split or forge lines of the output.
    const [created] = await admin.datastore.createEntries(
      [
        {
          spiffeId: id('spiffe://example.org/linesep'),
          parentId: AGENT,
          selectors: [{ type: 'unix', value: 'uid:1\u2028Selector         : unix:uid:0' }],
          x509SvidTtl: 0,
          jwtSvidTtl: 0,
          dnsNames: [],
          federatesWith: [],
          admin: false,
          downstream: false,
          hint: 'web\u0085Admin            : true',
          entryExpiry: 0,
        },
      ],
      1_700_000_000,
    );
    assert.ok(created && 'entry' in created);
    const entryId = created.entry.id;
    const pretty = ok(await run(['entry', 'show', '-entryID', entryId])).stdout;
    assert.doesNotMatch(pretty, /[\u0085\u2028\u2029]/, 'no raw line separator in the output');
    const lines = pretty.split(/\r\n|[\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/);
    assert.ok(lines.includes('Selector         : unix:uid:1\\u2028Selector         : unix:uid:0'), pretty);
    assert.ok(lines.includes('Hint             : web\\u0085Admin            : true'), pretty);
    assert.equal(lines.filter((l) => l.startsWith('Selector')).length, 1);
    assert.equal(lines.filter((l) => l.startsWith('Admin')).length, 0);
    const js = ok(await run(['entry', 'show', '-entryID', entryId, '-output', 'json'])).stdout;
    assert.doesNotMatch(js, /[\u0085\u2028\u2029]/);
    assert.equal(js.trimEnd().split('\n').length, 1);
    await admin.datastore.deleteEntries([entryId], 1_700_000_001);
  });

  test('update replaces the fields; count; delete', async () => {
    const [db] = (await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/db') })).items;
    const up = ok(await run(['entry', 'update', '-entryID', db!.id, '-spiffeID', 'spiffe://example.org/db', '-parentID', AGENT, '-selector', 'unix:uid:2001', '-downstream']));
    assert.match(up.stdout, /Revision {9}: 1\nDownstream {7}: true\n/);
    const stored = await admin.datastore.getEntry(db!.id);
    assert.deepEqual([stored?.revisionNumber, stored?.downstream, stored?.x509SvidTtl, stored?.selectors], [1, true, 0, [{ type: 'unix', value: 'uid:2001' }]]);
    const total = await admin.datastore.countEntries();
    const [noId, missing, count, countDown, countJson] = await Promise.all([
      run(['entry', 'update', '-spiffeID', 'spiffe://example.org/db', '-parentID', AGENT, '-selector', 'a:b']),
      run(['entry', 'update', '-entryID', 'missing', '-spiffeID', 'spiffe://example.org/db', '-parentID', AGENT, '-selector', 'a:b']),
      run(['entry', 'count']),
      run(['entry', 'count', '-downstream']),
      run(['entry', 'count', '-spiffeID', 'spiffe://example.org/none', '-output', 'json']),
    ]);
    fails(noId, /Error: entry ID is required/);
    fails(missing, /Failed to update the following entry \(code: NotFound/);
    assert.equal(ok(count).stdout, `${total} registration entries\n`);
    assert.equal(ok(countDown).stdout, '1 registration entry\n');
    assert.deepEqual(json(countJson), { count: 0 });

    const del = ok(await run(['entry', 'delete', '-entryID', db!.id]));
    assert.equal(del.stdout, `Deleted entry with ID: ${db!.id}\n`);
    assert.equal(await admin.datastore.getEntry(db!.id), undefined);
    const [again, noArg] = await Promise.all([run(['entry', 'delete', '-entryID', db!.id]), run(['entry', 'delete'])]);
    fails(again, /Error: failed to delete entry: entry ".*" not found/);
    fails(noArg, /Error: an entry ID is required/);

    // Batch deletion from a file (here stdin), SPIRE's {"ids": [...]}: each result reported.
    const [b1] = (await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/batch1') })).items;
    const batch = await run(['entry', 'delete', '-file', '-'], { input: JSON.stringify({ ids: [b1!.id, 'no-such-id'] }) });
    fails(batch, /Failed to delete entry with ID no-such-id \(code: NotFound, msg: "entry \\"no-such-id\\" not found"\)\nError: failed to delete one or more entries\n$/);
    assert.equal(batch.stdout, `Deleted entry with ID: ${b1!.id}\n`);
    assert.equal(await admin.datastore.getEntry(b1!.id), undefined);
  });
});

describe('agent', () => {
  test('list, show, count (pretty and json)', async () => {
    const [listRun, filteredRun, nastyRun, listJsonRun, showRun, showJsonRun, showMissing, showNoId, countRun, countJson] = await Promise.all([
      run(['agent', 'list']),
      run(['agent', 'list', '-attestationType', 'k8s_psat', '-canReattest', 'true']),
      run(['agent', 'list', '-attestationType', "x' OR '1'='1"]),
      run(['agent', 'list', '-output', 'json', '-expiresBefore', '2030-01-01']),
      run(['agent', 'show', '-spiffeID', AGENT]),
      run(['agent', 'show', '-spiffeID', AGENT, '-output', 'json']),
      run(['agent', 'show', '-spiffeID', 'spiffe://example.org/spire/agent/x/none']),
      run(['agent', 'show']),
      run(['agent', 'count']),
      run(['agent', 'count', '-banned', 'true', '-output', 'json']),
    ]);
    const list = ok(listRun);
    assert.match(
      list.stdout,
      new RegExp(
        '^Found 2 attested agents:\n\n' +
          'SPIFFE ID {9}: spiffe://example.org/spire/agent/join_token/agent-1\n' +
          'Attestation type  : join_token\n' +
          'Expiration time   : 2033-05-18 03:33:20 \\+0000 UTC\n' +
          'Serial number     : 0a1b\n' +
          'Can re-attest     : false\n\n',
      ),
    );
    assert.match(ok(filteredRun).stdout, /^Found 1 attested agent:\n\nSPIFFE ID {9}: spiffe:\/\/example\.org\/spire\/agent\/k8s_psat\/c1\/n2\n/);
    assert.equal(ok(nastyRun).stdout, 'No attested agents found\n');
    assert.deepEqual((json(listJsonRun)['agents'] as Array<{ spiffeId: string }>).map((a) => a.spiffeId), ['spiffe://example.org/spire/agent/k8s_psat/c1/n2']);

    assert.match(ok(showRun).stdout, /^Found an attested agent given its SPIFFE ID\n\nSPIFFE ID {9}: .*\n[\s\S]*\n\nSelectors {9}: join_token:agent-1\n$/);
    assert.equal(json(showJsonRun)['attestationType'], 'join_token');
    fails(showMissing, /Error: rpc error: code = NotFound/);
    fails(showNoId, /Error: a SPIFFE ID is required/);
    assert.equal(ok(countRun).stdout, '2 attested agents\n');
    assert.deepEqual(json(countJson), { count: 0 });
  });

  test('ban then evict', async () => {
    assert.equal(ok(await run(['agent', 'ban', '-spiffeID', AGENT])).stdout, 'Agent banned successfully\n');
    assert.equal((await admin.datastore.getAttestedNode(AGENT))?.banned, true);
    assert.match(ok(await run(['agent', 'list', '-banned', 'true'])).stdout, /Banned {12}: true\n/);
    assert.equal(ok(await run(['agent', 'evict', '-spiffeID', AGENT])).stdout, 'Agent evicted successfully\n');
    assert.equal(await admin.datastore.getAttestedNode(AGENT), undefined);
    fails(await run(['agent', 'evict', '-spiffeID', AGENT]), /NotFound/);
  });
});

test('token generate: prints Token: <uuid>; only a hash reaches the database', async () => {
  const [plain, aliasRun, jsonRun, foreign, zero] = await Promise.all([
    run(['token', 'generate', '-ttl', '300']),
    run(['token', 'generate', '--spiffe-id', 'spiffe://example.org/nodes/alias']),
    run(['token', 'generate', '-output', 'json']),
    run(['token', 'generate', '-spiffeID', 'spiffe://other.org/n']),
    run(['token', 'generate', '-ttl', '0']),
  ]);
  const r = ok(plain);
  const m = /^Token: (\S+)\n$/.exec(r.stdout);
  assert.ok(m, r.stdout);
  const token = m[1]!;
  assert.match(token, new RegExp(`^${UUID_V4.source}$`));
  assert.match(r.stderr, /Warning: Missing SPIFFE ID\./);

  const alias = ok(aliasRun);
  const aliasToken = /^Token: (\S+)\n$/.exec(alias.stdout)![1]!;
  const [e] = (await admin.datastore.listEntries({ bySpiffeId: id('spiffe://example.org/nodes/alias') })).items;
  assert.equal(e?.parentId, `spiffe://example.org/spire/agent/join_token/${aliasToken}`);
  assert.deepEqual(e?.selectors, [{ type: 'spiffe_id', value: `spiffe://example.org/spire/agent/join_token/${aliasToken}` }]);

  const j = json(jsonRun);
  assert.match(String(j['value']), UUID_V4);
  assert.ok(Number(j['expiresAt']) > Date.now() / 1000);

  fails(foreign, /InvalidArgument.*agent_alias_spiffe_id/);
  fails(zero, /Error: a positive -ttl/);

  // Neither token string appears anywhere in the database files (main file, WAL, shared memory).
  const bytes = [admin.dbPath, `${admin.dbPath}-wal`, `${admin.dbPath}-shm`].filter(existsSync).map((p) => readFileSync(p).toString('latin1'));
  for (const t of [token, String(j['value'])]) {
    assert.ok(bytes.every((b) => !b.includes(t)), 'token found in the database files');
  }
});

describe('bundle', () => {
  test('show: pem (default), spiffe, json', async () => {
    const [pemRun, spiffeRun, jsonRun, badFormat] = await Promise.all([
      run(['bundle', 'show']),
      run(['bundle', 'show', '-format', 'spiffe']),
      run(['bundle', 'show', '-output', 'json']),
      run(['bundle', 'show', '-format', 'der']),
    ]);
    assert.equal(ok(pemRun).stdout, certificatesToPem([admin.ca.rootDer]));
    const spiffe = ok(spiffeRun);
    assert.match(spiffe.stdout, /^\{\n {4}"keys": \[\n {8}\{\n/);
    assert.deepEqual(parseBundle(parseTrustDomain(TD), spiffe.stdout).x509Authorities(), [admin.ca.rootDer]);
    assert.equal(json(jsonRun)['trustDomain'], TD);
    fails(badFormat, /Error: invalid format: "der"/);
  });

  test('set (pem file, spiffe stdin), list, count, delete', async () => {
    const partner = await createTestCaSigner(parseTrustDomain('partner.org'));
    const other = await createTestCaSigner(parseTrustDomain('other.org'));
    const pemFile = join(work, 'partner.pem');
    writeFileSync(pemFile, certificatesToPem([partner.rootDer]));
    const sets = await Promise.all([
      run(['bundle', 'set', '-id', 'spiffe://partner.org', '-path', pemFile]),
      run(['bundle', 'set', '-id', 'other.org', '-format', 'spiffe'], { input: marshalBundle(other.bundle()) }),
      run(['bundle', 'set', '-id', TD, '-path', pemFile]),
      run(['bundle', 'set', '-id', 'bad.org'], { input: 'not pem' }),
      run(['bundle', 'set', '-path', pemFile]),
    ]);
    assert.equal(ok(sets[0]!).stdout, 'bundle set.\n');
    assert.equal(ok(sets[1]!).stdout, 'bundle set.\n');
    assert.deepEqual((await admin.datastore.listBundles()).map((b) => b.trustDomain).sort(), ['other.org', 'partner.org']);
    fails(sets[2]!, /Error: failed to set federated bundle: .*own trust domain/);
    fails(sets[3]!, /Error: failed to set federated bundle: /);
    fails(sets[4]!, /Error: id flag is required/);

    const [listRun, listIdRun, spiffeListRun, listJsonRun, countRun] = await Promise.all([
      run(['bundle', 'list']),
      run(['bundle', 'list', '-id', 'partner.org']),
      run(['bundle', 'list', '-id', 'other.org', '-format', 'spiffe']),
      run(['bundle', 'list', '-output', 'json']),
      run(['bundle', 'count']),
    ]);
    const list = ok(listRun);
    assert.equal(
      list.stdout,
      `****************************************\n* other.org\n****************************************\n${certificatesToPem([other.rootDer])}\n` +
        `****************************************\n* partner.org\n****************************************\n${certificatesToPem([partner.rootDer])}`,
    );
    assert.equal(ok(listIdRun).stdout, certificatesToPem([partner.rootDer]));
    assert.deepEqual(parseBundle(parseTrustDomain('other.org'), ok(spiffeListRun).stdout).x509Authorities(), [other.rootDer]);
    assert.equal((json(listJsonRun)['bundles'] as unknown[]).length, 2);
    assert.equal(ok(countRun).stdout, '3 bundles\n');

    assert.equal(ok(await run(['bundle', 'delete', '-id', 'other.org'])).stdout, 'bundle deleted.\n');
    const [again, own, countJson] = await Promise.all([
      run(['bundle', 'delete', '-id', 'other.org']),
      run(['bundle', 'delete', '-id', TD]),
      run(['bundle', 'count', '-output', 'json']),
    ]);
    fails(again, /Error: failed to delete federated bundle "other.org": no federated bundle/);
    fails(own, /own trust domain/);
    assert.deepEqual(json(countJson), { count: 2 });
  });
});

describe('x509 and jwt mint', () => {
  test('x509 mint -write: key 0600 even with umask 0; the SVID verifies with openssl', async () => {
    const out = mkdtempSync(join(work, 'mint-'));
    const r = ok(await run(['x509', 'mint', '-spiffeID', 'spiffe://example.org/minted', '-dns', 'm.example.org', '-ttl', '1h', '-write', out], { umask0: true }));
    assert.equal(
      r.stdout,
      `X509-SVID written to ${join(out, 'svid.pem')}\nPrivate key written to ${join(out, 'key.pem')}\nRoot CAs written to ${join(out, 'bundle.pem')}\n`,
    );
    assert.equal(statSync(join(out, 'key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(out, 'svid.pem')).mode & 0o777, 0o644);
    assert.equal(readFileSync(join(out, 'bundle.pem'), 'utf8'), certificatesToPem([admin.ca.rootDer]));
    const verify = spawnSync('openssl', ['verify', '-CAfile', join(out, 'bundle.pem'), join(out, 'svid.pem')], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stderr);
    assert.match(verify.stdout, /svid\.pem: OK/);
    const text = spawnSync('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-text'], { encoding: 'utf8' }).stdout;
    assert.match(text, /URI:spiffe:\/\/example\.org\/minted/);
    assert.match(text, /DNS:m\.example\.org/);
    // The key on disk is the certificate's key.
    const pub1 = spawnSync('openssl', ['pkey', '-in', join(out, 'key.pem'), '-pubout'], { encoding: 'utf8' }).stdout;
    const pub2 = spawnSync('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-pubkey'], { encoding: 'utf8' }).stdout;
    assert.ok(pub1.length > 0 && pub1 === pub2);
  });

  test('-write creates a missing directory 0700 (parents too); jwt mint -write creates the file\'s directory', async () => {
    const base = mkdtempSync(join(work, 'mint-new-'));
    const dir = join(base, 'a', 'b');
    const file = join(base, 'jwt', 'token');
    const [x, j] = await Promise.all([
      run(['x509', 'mint', '-spiffeID', 'spiffe://example.org/minted', '-write', dir], { umask0: true }),
      run(['jwt', 'mint', '-spiffeID', 'spiffe://example.org/j', '-audience', 'a', '-write', file], { umask0: true }),
    ]);
    assert.equal(ok(x).stdout, `X509-SVID written to ${join(dir, 'svid.pem')}\nPrivate key written to ${join(dir, 'key.pem')}\nRoot CAs written to ${join(dir, 'bundle.pem')}\n`);
    assert.equal(ok(j).stdout, `JWT-SVID written to ${file}\n`);
    for (const d of [dir, join(base, 'a'), join(base, 'jwt')]) assert.equal(statSync(d).mode & 0o777, 0o700, d);
    assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(dir, 'bundle.pem'), 'utf8'), certificatesToPem([admin.ca.rootDer]));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    // A path that exists as a file is refused, naming it.
    const notDir = await run(['x509', 'mint', '-spiffeID', 'spiffe://example.org/minted', '-write', file]);
    assert.equal(notDir.code, 1);
    assert.match(notDir.stderr, /^Error: cannot use .*jwt\/token for -write: -write directory .*jwt\/token exists and is not a directory\n$/);
  });

  test('x509 mint to stdout (pretty and json) and refusals', async () => {
    const [prettyRun, jsonRun, noId, foreign, badTtl] = await Promise.all([
      run(['x509', 'mint', '-spiffeID', 'spiffe://example.org/p']),
      run(['x509', 'mint', '-spiffeID', 'spiffe://example.org/p', '-output', 'json']),
      run(['x509', 'mint']),
      run(['x509', 'mint', '-spiffeID', 'spiffe://other.org/p']),
      run(['x509', 'mint', '-spiffeID', 'spiffe://example.org/p', '-ttl', 'forever']),
    ]);
    assert.match(ok(prettyRun).stdout, /^X509-SVID:\n-----BEGIN CERTIFICATE-----\n[\s\S]*\n\nPrivate key:\n-----BEGIN PRIVATE KEY-----\n[\s\S]*\n\nRoot CAs:\n-----BEGIN CERTIFICATE-----\n[\s\S]*\n\n$/);
    const j = json(jsonRun);
    assert.equal((j['x509_svid'] as string[]).length, 1);
    assert.equal(typeof j['private_key'], 'string');
    assert.deepEqual(j['root_cas'], [admin.ca.rootDer.toString('base64')]);
    fails(noId, /Error: spiffeID must be specified/);
    fails(foreign, /InvalidArgument.*trust domain/);
    fails(badTtl, /-ttl: expected a duration/);
  });

  test('jwt mint: stdout, -write 0600, audience required', async () => {
    const file = join(work, 'jwt.txt');
    const [stdoutRun, writeRun, jsonRun, noAud] = await Promise.all([
      run(['jwt', 'mint', '-spiffeID', 'spiffe://example.org/j', '-audience', 'aud1', '-audience', 'aud2', '-ttl', '2m']),
      run(['jwt', 'mint', '-spiffeID', 'spiffe://example.org/j', '-audience', 'a', '-write', file], { umask0: true }),
      run(['jwt', 'mint', '-spiffeID', 'spiffe://example.org/j', '-audience', 'a', '-output', 'json']),
      run(['jwt', 'mint', '-spiffeID', 'spiffe://example.org/j']),
    ]);
    const r = ok(stdoutRun);
    const token = r.stdout.trim();
    const v = await validateJwtSvid(token, { audience: 'aud2', bundles: admin.ca.bundle() });
    assert.equal(v.id, 'spiffe://example.org/j');
    const w = ok(writeRun);
    assert.equal(w.stdout, `JWT-SVID written to ${file}\n`);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal((await validateJwtSvid(readFileSync(file, 'utf8'), { audience: 'a', bundles: admin.ca.bundle() })).id, 'spiffe://example.org/j');
    assert.equal((json(jsonRun)['svid'] as { spiffeId: string }).spiffeId, 'spiffe://example.org/j');
    fails(noAud, /Error: at least one audience must be specified/);
  });
});

describe('healthcheck and connection errors', () => {
  test('healthcheck', async () => {
    const missing = join(work, 'nothing-here.sock');
    const [plain, shallow, verbose, jsonRun, unreachable] = await Promise.all([
      run(['healthcheck']),
      run(['healthcheck', '-shallow']),
      run(['healthcheck', '-verbose']),
      run(['healthcheck', '-output', 'json']),
      run(['healthcheck', '-socketPath', missing], { socket: false }),
    ]);
    assert.equal(ok(plain).stdout, 'Server is healthy.\n');
    assert.equal(ok(shallow).stdout, 'Server is healthy.\n');
    assert.match(ok(verbose).stdout, /Fetching bundle via Bundle API\.\.\.\nSuccessfully fetched bundle\.\nServer is healthy\.\n$/);
    assert.deepEqual(json(jsonRun), { status: 'SERVING' });
    fails(
      unreachable,
      new RegExp(`^Server is unhealthy: connection error: cannot reach the server at ${missing}: is spindle-server running\\?`),
    );
  });

  test('an unreachable server is reported with what to do', async () => {
    const missing = join(work, 'nothing-here.sock');
    const r = fails(
      await run(['entry', 'show', '-socketPath', missing], { socket: false }),
      new RegExp(`^Error: connection error: cannot reach the server at ${missing}: is spindle-server running\\?`),
    );
    assert.equal(r.code, 1);
  });

  test('the admin socket refuses other users', async () => {
    needsRoot('running the CLI as another user');
    const [r, h] = await Promise.all([run(['entry', 'show'], { uid: 65534, gid: 65534 }), run(['healthcheck'], { uid: 65534, gid: 65534 })]);
    fails(r, /Error: permission denied on the admin socket .*: run this command as the user or group that runs spindle-server/);
    fails(h, /Server is unhealthy: permission denied/);
  });
});

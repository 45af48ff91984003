// `npm run demo:mesh` (scripts/demomesh.ts) end to end: the demo runs as a real process (its own
// spindle-server, spindle-agent and three service processes using the Node SDK) for 16 s, and
// everything is judged from what it prints and its exit code: payments -> database calls all
// succeed, the database refuses frontend with the typed reason naming frontend's ID, callers are
// printed by ID with the serial of the SVID they presented, every service rotates its SVID (and
// its peers see the new serial), and the summary agrees. Once with the default identities (as
// root: a uid per service) and once with per-path identities (a node link per service).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, tempDir } from './support/serverproc.js';
import { runScript } from './support/scriptrun.js';

const demoJs = join(repoRoot, 'dist', 'scripts', 'demomesh.js');
const ID = (name: string): string => `spiffe://example.org/${name}`;
const SERVICES = ['frontend', 'payments', 'database'];

/** Serials (as printed, shortened) each service announced for its own SVID, first one included. */
function ownSerials(out: string, name: string): Set<string> {
  const re = new RegExp(`^\\S+  ${name}: (?:first SVID \\S+|new SVID) serial (\\S+) expires`, 'gm');
  return new Set([...out.matchAll(re)].map((m) => m[1]!));
}

/** Serials a server printed for requests from `caller`. */
function seenSerials(out: string, server: string, caller: string): string[] {
  const re = new RegExp(`^\\S+  ${server}: request from ${ID(caller).replace(/[/.]/g, '\\$&')} \\(svid serial (\\S+)\\)$`, 'gm');
  return [...out.matchAll(re)].map((m) => m[1]!);
}

function summaryCount(out: string, re: RegExp): number[] {
  const m = re.exec(out);
  assert.ok(m, `the summary has ${re}\n${out.slice(out.lastIndexOf('Summary'))}`);
  return m.slice(1).map(Number);
}

async function runMesh(args: string[]): Promise<{ out: string; err: string; code: number | null }> {
  // The demo's directory goes under TMPDIR: here a temp dir removed when the tests end, also when
  // a failed run kept its logs. 0711: the services' uids must pass through it to the agent socket.
  const tmp = tempDir('spindle-demo-mesh-test-');
  chmodSync(tmp, 0o711);
  const run = runScript('demo:mesh', demoJs, ['--duration', '16', ...args], { cwd: tmp, env: { TMPDIR: tmp } });
  await run.waitFor(/Requests flow/, 60_000);
  await run.waitFor(/^Result: /m, 60_000);
  const code = await run.exited;
  return { out: run.out(), err: run.err(), code };
}

function assertMesh(out: string, err: string, code: number | null): void {
  const all = `--- stdout\n${out}\n--- stderr\n${err}`;
  assert.equal(code, 0, all);
  assert.match(out, /^Result: OK/m, all);
  assert.equal(err, '', 'nothing on stderr');

  // Allowed calls: all succeeded, and there were some.
  const [pdOk, pdFailed] = summaryCount(out, /^ {2}payments -> database +allowed +ok (\d+) +failed (\d+)$/m);
  assert.ok(pdOk! > 0, 'payments -> database calls succeeded');
  assert.equal(pdFailed, 0);
  const [fpOk, fpFailed] = summaryCount(out, /^ {2}frontend -> payments +allowed +ok (\d+) +failed (\d+)$/m);
  assert.ok(fpOk! > 0);
  assert.equal(fpFailed, 0);
  assert.doesNotMatch(out, /FAILED/);

  // The forbidden call: refused by the database with the typed reason naming frontend's ID,
  // seen as refused by frontend, never served.
  assert.match(out, /^\S+ {2}database: refused a client: ERR_SPIFFE_UNAUTHORIZED id_mismatch: peer spiffe:\/\/example\.org\/frontend is not the expected spiffe:\/\/example\.org\/payments$/m);
  assert.match(out, /^\S+ {2}frontend: call to database refused: /m);
  const [refused, through] = summaryCount(out, /^ {2}frontend -> database +forbidden +refused (\d+) +got through (\d+)$/m);
  assert.ok(refused! > 0);
  assert.equal(through, 0);
  assert.doesNotMatch(out, /GOT THROUGH/);
  assert.deepEqual(seenSerials(out, 'database', 'frontend'), [], 'the database never served frontend');
  const [dbRefusals] = summaryCount(out, /^ {2}database refused (\d+) clients? \(ERR_SPIFFE_UNAUTHORIZED id_mismatch: \d+\)/m);
  assert.equal(dbRefusals, refused, 'every refusal frontend saw, the database counted with its reason');

  // Callers by ID, with the serial of an SVID the caller really had.
  for (const [server, caller] of [['database', 'payments'], ['payments', 'frontend']] as const) {
    const seen = seenSerials(out, server, caller);
    assert.ok(seen.length > 0, `${server} printed requests from ${ID(caller)}`);
    const own = ownSerials(out, caller);
    for (const s of seen) assert.ok(own.has(s), `${server} saw serial ${s}, one ${caller} announced (${[...own].join(', ')})`);
    assert.ok(new Set(seen).size >= 2, `${server} saw ${caller} present a rotated SVID (serials ${[...new Set(seen)].join(', ')})`);
  }

  // Every service rotated at least once, and the summary counts it.
  const rotations = /^ {2}rotations: (.*)$/m.exec(out)?.[1] ?? '';
  for (const name of SERVICES) {
    assert.match(out, new RegExp(`^\\S+  ${name}: new SVID serial \\S+ expires \\d\\d:\\d\\d:\\d\\d$`, 'm'), `${name} rotated`);
    const n = Number(new RegExp(`${name} (\\d+)`).exec(rotations)?.[1]);
    assert.ok(n >= 1, `summary rotations for ${name}: ${rotations}`);
  }
}

describe('npm run demo:mesh', { timeout: 240_000 }, () => {
  test('default identities (as root: a uid per service): allowed calls succeed, frontend is refused by the database, SVIDs rotate', async () => {
    const { out, err, code } = await runMesh([]);
    if (process.getuid?.() === 0) {
      // A uid per service, unless the checkout is not readable by other users (then it says so).
      assert.match(out, /each service runs under its own uid \(database \d+, payments \d+, frontend \d+\); selectors unix:uid:<n>|could not run under other uids from here/);
    } else {
      assert.match(out, /each service runs its own (hard link|copy) of node/);
    }
    assertMesh(out, err, code);
  });

  test('per-path identities (a node binary link per service, unix:path selectors): the same mesh', async () => {
    const { out, err, code } = await runMesh(['--identities', 'path']);
    assert.match(out, /each service runs its own (hard link|copy) of node in \S+; the agent discovers workload paths; selectors unix:path:<file>/);
    assertMesh(out, err, code);
  });
});

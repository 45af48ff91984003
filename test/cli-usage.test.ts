// How the bin/ executables present themselves: SPIRE-style single-dash flags in help, required
// flags marked, one-line usage errors with a suggestion, and usage + exit 1 with no arguments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { agentBin, serverBin } from './support/paths.js';

const run = (bin: string, args: string[]) => spawnSync(bin, args, { cwd: tmpdir(), encoding: 'utf8', timeout: 30_000 });

for (const [name, bin] of [
  ['spindle-server', serverBin],
  ['spindle-agent', agentBin],
] as const) {
  test(`${name} with no arguments prints usage on stderr and exits 1`, () => {
    const r = run(bin, []);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^Usage: ${name} `));
    assert.match(r.stderr, /^ {2}-h, -help /m);
  });

  test(`${name} help lists every flag single-dash`, () => {
    for (const args of [['-h'], ['run', '-h'], ['validate', '-help']]) {
      const r = run(bin, args);
      assert.equal(r.status, 0, r.stderr);
      if (args[0] !== '-h') assert.match(r.stdout, /^ {2}-config <file> /m);
      else assert.match(r.stdout, /^ {2}-v, -version /m);
      // A flag term in help starts the line with two spaces; none may be written `--x`.
      assert.doesNotMatch(r.stdout, /^\s+--\w/m, `${args.join(' ')}:\n${r.stdout}`);
      assert.doesNotMatch(r.stdout, /^\s+-\w, --\w/m, `${args.join(' ')}:\n${r.stdout}`);
    }
  });
}

test('spindle-server entry create help marks the required flags', () => {
  const r = run(serverBin, ['entry', 'create', '-h']);
  assert.equal(r.status, 0, r.stderr);
  const flat = r.stdout.replace(/\s+/g, ' ');
  assert.match(flat, / -parentID <id> The SPIFFE ID of this record's parent \(required unless -node or -data\)/);
  assert.match(flat, / -spiffeID <id> The SPIFFE ID that this record represents \(required unless -data\)/);
  assert.match(flat, / -selector <type:value> A colon-delimited type:value selector\. Can be used more than once \(required unless -data\)/);
  assert.doesNotMatch(flat, /-hint <hint> [^-]*required/);
  const del = run(serverBin, ['entry', 'delete', '-h']).stdout.replace(/\s+/g, ' ');
  assert.match(del, / -entryID <id> The Registration Entry ID of the record to delete \(required unless -file\)/);
  const jwt = run(agentBin, ['api', 'validate', 'jwt', '-h']).stdout.replace(/\s+/g, ' ');
  assert.match(jwt, / -svid <token> JWT SVID \(required\)/);
});

test('an unknown flag is one line naming it, with a single-dash suggestion and the help command', () => {
  const cases: Array<[string, string[], string]> = [
    [serverBin, ['entry', 'create', '-spifeID', 'spiffe://example.org/w'], "Error: unknown flag -spifeID: did you mean -spiffeID? (run 'spindle-server entry create -h' for usage)\n"],
    [serverBin, ['entry', 'show', '-parentId2=x'], "Error: unknown flag -parentId2: did you mean -parentID? (run 'spindle-server entry show -h' for usage)\n"],
    [serverBin, ['token', 'generate', '-zzzzzz'], "Error: unknown flag -zzzzzz (run 'spindle-server token generate -h' for usage)\n"],
    [serverBin, ['entyr', 'show'], "Error: unknown command entyr: did you mean entry? (run 'spindle-server -h' for usage)\n"],
    [agentBin, ['api', 'fetch', 'jwt', '-audiense', 'x'], "Error: unknown flag -audiense: did you mean -audience? (run 'spindle-agent api fetch jwt -h' for usage)\n"],
    [agentBin, ['run', '-dataDri', 'x'], "Error: unknown flag -dataDri: did you mean -dataDir? (run 'spindle-agent run -h' for usage)\n"],
  ];
  for (const [bin, args, expected] of cases) {
    const r = run(bin, args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, expected, args.join(' '));
    assert.equal(r.stdout, '');
  }
});

test('a missing flag value names the flag single-dash', () => {
  const r = run(serverBin, ['token', 'generate', '-ttl']);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, "Error: option '-ttl <seconds>' argument missing (run 'spindle-server token generate -h' for usage)\n");
});

test("no help text says 'a agent'", () => {
  for (const [bin, args] of [
    [agentBin, ['-h']],
    [agentBin, ['validate', '-h']],
    [serverBin, ['agent', '-h']],
  ] as const) {
    const r = run(bin, [...args]);
    assert.doesNotMatch(r.stdout + r.stderr, /\ba agent/i);
  }
  assert.match(run(agentBin, ['-h']).stdout, /validate \[options\] +Validates an agent configuration file/);
});

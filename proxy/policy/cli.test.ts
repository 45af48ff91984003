import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runPolicyCli } from './testkit.js';

/** The checkout: this file runs from dist/proxy/policy/. */
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ex = (f: string): string => join(repo, 'docs', 'examples', 'proxy', f);

describe('spindle-proxy policy', () => {
  test('policy test: a table, a summary, exit status 0 when every case passes', async () => {
    const r = await runPolicyCli(['policy', 'test', '-policy', ex('policy.yaml'), '-cases', ex('cases.yaml')]);
    assert.equal(r.status, 0, r.both);
    assert.equal(r.err, '');
    const lines = r.out.trimEnd().split('\n');
    assert.match(lines[0]!, /^RESULT +CASE +LISTENER +SOURCE +REQUEST +EXPECTED +DECIDED$/);
    assert.match(lines[1]!, /^PASS +payments reads items +database-in +spiffe:\/\/example\.org\/payments +GET \/v1\/items +ALLOW payments-to-database +ALLOW payments-to-database$/);
    assert.equal(lines.filter((l) => l.startsWith('PASS ')).length, 10);
    assert.equal(lines.at(-1), '10 cases: 10 passed, 0 failed');
  });

  test('policy test: a mismatch is marked FAIL, explained, and exits with status 1', async () => {
    const r = await runPolicyCli(['policy', 'test', `-policy=${ex('policy.yaml')}`, '--cases', ex('cases-wrong.yaml')]);
    assert.equal(r.status, 1, r.both);
    assert.match(r.out, /^FAIL +frontend reads items +database-in /m);
    assert.ok(r.out.includes(`FAIL frontend reads items (${ex('cases-wrong.yaml')}:3:5): expected ALLOW, got DENY: denied: no rule allows spiffe://example.org/frontend GET /v1/items on database-in\n`), r.out);
    assert.ok(r.out.endsWith('1 case: 0 passed, 1 failed\n'));
  });

  test('policy lint: no findings is status 0; error findings are status 1; warnings alone are status 0', async () => {
    const clean = await runPolicyCli(['policy', 'lint', '-policy', ex('policy.yaml')]);
    assert.deepEqual([clean.status, clean.out, clean.err], [0, 'no findings\n', '']);
    const bad = await runPolicyCli(['policy', 'lint', '-policy', ex('permissive.yaml')]);
    assert.equal(bad.status, 1, bad.both);
    assert.ok(bad.out.includes(`${ex('permissive.yaml')}:9:5: error: rule anyone-health: allows any caller, with or without an X509-SVID (it has no from) on sensitive listener database-in [any-source]\n`), bad.out);
    assert.ok(bad.out.endsWith('6 findings: 4 errors, 2 warnings, 0 info\n'), bad.out);
    const dir = mkdtempSync(join(tmpdir(), 'policy-cli-'));
    try {
      const file = join(dir, 'dry.yaml');
      writeFileSync(file, 'mode: dry-run\nrules:\n  - { name: r, action: ALLOW, from: { ids: [spiffe://example.org/a] } }\n');
      const warn = await runPolicyCli(['policy', 'lint', '-policy', file]);
      assert.equal(warn.status, 0, warn.both);
      assert.equal(warn.out, `${file}:1:1: warning: mode is dry-run: denials are reported but not enforced, every request is let through [dry-run]\n${file}:1:1: info: no listeners section: listener names in rules are not checked against a list, and no listener is marked sensitive or tcp [listeners-not-declared]\n2 findings: 0 errors, 1 warning, 1 info\n`);
      writeFileSync(file, 'rules:\n  - { name: r, action: allow }\n');
      const invalid = await runPolicyCli(['policy', 'lint', '-policy', file]);
      assert.deepEqual([invalid.status, invalid.out, invalid.err], [1, '', `Error: ${file}:2:24: rule r: action must be ALLOW or DENY, got "allow"\n`]);
      const invalidCases = await runPolicyCli(['policy', 'test', '-policy', ex('policy.yaml'), '-cases', file]);
      assert.equal(invalidCases.status, 1);
      assert.match(invalidCases.err, /^Error: .*dry\.yaml:1:1: the cases file: unknown key "rules"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('usage errors: a missing flag, an unknown flag (with a suggestion), a missing file', async () => {
    const missing = await runPolicyCli(['policy', 'test', '-policy', ex('policy.yaml')]);
    assert.deepEqual([missing.status, missing.err], [1, 'Error: -cases is required\n']);
    const typo = await runPolicyCli(['policy', 'lint', '-polcy', 'x']);
    assert.deepEqual([typo.status, typo.err], [1, "Error: unknown flag -polcy: did you mean -policy? (run 'spindle-proxy policy lint -h' for usage)\n"]);
    const noValue = await runPolicyCli(['policy', 'lint', '-policy']);
    assert.equal(noValue.status, 1);
    assert.match(noValue.err, /^Error: option '-policy <file>' argument missing/);
    const nofile = await runPolicyCli(['policy', 'lint', '-policy', '/nonexistent/p.yaml']);
    assert.deepEqual([nofile.status, nofile.err], [1, 'Error: /nonexistent/p.yaml:1:1: cannot read the policy file: no such file\n']);
  });

  test('help shows the flags single-dash', async () => {
    const r = await runPolicyCli(['policy', 'test', '-help']);
    assert.equal(r.status, 0);
    assert.match(r.out, /^Usage: spindle-proxy policy test \[options\]/);
    assert.match(r.out, /^ {2}-policy <file> +the policy file \(required\)$/m);
    assert.match(r.out, /^ {2}-cases <file> +the test cases file \(required\)$/m);
    assert.doesNotMatch(r.out, /--policy/);
  });
});

// docs/proxy-policy.md as a reader uses it: the example files it shows are the files in
// docs/examples/proxy/, and each `bin/spindle-proxy policy ...` command block, run in-process
// through policyCommand (as bin/spindle-proxy runs it) from the checkout's root, prints exactly
// the `text` block that follows it, with the exit status the block shows. (test/docs/ runs the
// same command blocks through bin/spindle-proxy in a shell.)
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePolicy } from './policy.js';
import { PolicyError } from './source.js';
import { runPolicyCli } from './testkit.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const DOC = 'docs/proxy-policy.md';
const markdown = readFileSync(join(repo, DOC), 'utf8');

interface Fence {
  line: number;
  lang: string;
  text: string;
  /** The `<!-- example: PATH -->` marker on the line before the fence, if any. */
  example?: string;
}

function fences(md: string): Fence[] {
  const lines = md.split('\n');
  const out: Fence[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)$/.exec(lines[i]!);
    if (!open) continue;
    let j = i + 1;
    while (j < lines.length && lines[j] !== '```') j++;
    assert.ok(j < lines.length, `${DOC}:${i + 1}: unclosed fence`);
    const marker = /^<!-- example: (\S+) -->$/.exec(lines[i - 1] ?? '');
    out.push({ line: i + 1, lang: open[1]!, text: `${lines.slice(i + 1, j).join('\n')}\n`, ...(marker ? { example: marker[1]! } : {}) });
    i = j;
  }
  return out;
}

const blocks = fences(markdown);
const COMMAND = /^bin\/spindle-proxy (policy [^|]*?)( \|\| echo "exit status \$\?")?\n$/;

describe(DOC, () => {
  test('the example files shown are the files in docs/examples/proxy/, and every file there is used', () => {
    const shown = blocks.filter((b) => b.example !== undefined);
    assert.ok(shown.length >= 5);
    for (const b of shown) {
      assert.equal(b.lang, 'yaml', `${DOC}:${b.line}`);
      assert.equal(b.text, readFileSync(join(repo, b.example!), 'utf8'), `${DOC}:${b.line}: the block differs from ${b.example}`);
    }
    for (const f of readdirSync(join(repo, 'docs/examples/proxy'))) {
      assert.ok(markdown.includes(`docs/examples/proxy/${f}`), `docs/examples/proxy/${f} is not shown or used in ${DOC}`);
    }
  });

  const commands = blocks.filter((b) => ['sh', 'bash', 'shell'].includes(b.lang));
  test('every command block is a policy command followed by its output', () => {
    assert.ok(commands.length >= 5);
    for (const b of commands) {
      assert.match(b.text, COMMAND, `${DOC}:${b.line}: a command block here is one bin/spindle-proxy policy command`);
      const next = blocks[blocks.indexOf(b) + 1];
      assert.equal(next?.lang, 'text', `${DOC}:${b.line}: the command's output block (text) must follow it`);
    }
  });

  for (const b of commands) {
    test(`${DOC}:${b.line}: ${b.text.trim()}`, async () => {
      const m = COMMAND.exec(b.text)!;
      const expected = blocks[blocks.indexOf(b) + 1]!.text;
      const cwd = process.cwd();
      process.chdir(repo);
      let r;
      try {
        r = await runPolicyCli(m[1]!.split(' '));
      } finally {
        process.chdir(cwd);
      }
      const echoed = m[2] !== undefined;
      assert.equal(r.status !== 0, echoed, `exit status ${r.status}: a block ends with || echo "exit status $?" exactly when the command fails\n${r.both}`);
      assert.equal(r.both + (echoed ? `exit status ${r.status}\n` : ''), expected);
    });
  }

  test('the yaml fragments are valid policy text', () => {
    const when = blocks.find((b) => b.lang === 'yaml' && b.text.startsWith('when:'));
    assert.ok(when);
    const indented = when.text.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');
    const p = parsePolicy(`rules:\n  - name: r\n    action: ALLOW\n${indented}\n`, 'when.yaml');
    assert.equal(p.jwtIssuer('any'), 'https://oidc.example.org');
    const dry = blocks.find((b) => b.lang === 'yaml' && b.text === 'mode: dry-run\n');
    assert.ok(dry);
    assert.equal(parsePolicy(`${dry.text}rules:\n  - { name: r, action: ALLOW }\n`).mode, 'dry-run');
  });

  test('the errors shown are what the parser reports', () => {
    const section = markdown.slice(markdown.indexOf('## Errors'));
    const shown = fences(section).find((b) => b.lang === 'text')!.text.trimEnd().split('\n');
    const bad = `rules:
  - name: a
    action: ALLOW
    from: { ids: [spiffe://Example.org/x], trustDomains: [x] }
    to: { methods: [get] }
  - name: a
    action: ALLOW
`;
    assert.throws(
      () => parsePolicy(bad, 'bad.yaml'),
      (e: unknown) => e instanceof PolicyError && assert.deepEqual(e.message.split('\n'), shown) === undefined,
    );
  });
});

// Policy reload plumbing (watchPolicy): a changed file is loaded into the listener's decider,
// a file that fails to load leaves the previous decider in place, and bursts of writes are
// debounced into one load. The reload test uses a stand-in loader; the first test loads real policy files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllowlistDecider } from './allowlist.js';
import type { PolicyDecider } from './decision.js';
import { DeciderRef, loadDecider, watchPolicy } from './policyhook.js';

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('loadDecider loads a policy file with the policy engine, and names a broken one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-policy-'));
  try {
    const file = join(dir, 'p.yaml');
    writeFileSync(file, 'rules:\n  - name: web-in\n    action: ALLOW\n    listeners: [in]\n    from: { ids: [spiffe://example.org/web] }\n');
    const d = await loadDecider(file);
    assert.equal(d.decide({ listener: 'in', sourceId: 'spiffe://example.org/web' }).rule, 'web-in');
    assert.equal(d.decide({ listener: 'in', sourceId: 'spiffe://example.org/db' }).allow, false);
    writeFileSync(file, 'rules:\n  - name: web-in\n    action: ALLOW\n    listeners: [in]\n    from: { idz: [spiffe://example.org/web] }\n');
    await assert.rejects(loadDecider(file), (err: Error) => err.message.includes(`${file}:5:`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reload on change: new decider swapped in, a failing file keeps the old one, bursts debounced', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-policy-'));
  const file = join(dir, 'policy.txt');
  writeFileSync(file, 'spiffe://example.org/web\n');
  // Stand-in loader: one allowed ID per line; "broken" fails.
  let loads = 0;
  const load = async (f: string): Promise<PolicyDecider> => {
    loads++;
    const text = readFileSync(f, 'utf8');
    if (text.includes('broken')) throw new Error(`${f}:1: broken policy`);
    return new AllowlistDecider(text.split('\n').filter((l) => l !== ''));
  };
  const ref = new DeciderRef(await load(file));
  const logs: string[] = [];
  const log = { info: (_o: object, m: string) => logs.push(`info ${m}`), error: (o: object, m: string) => logs.push(`error ${m} ${JSON.stringify(o)}`) };
  const results: boolean[] = [];
  const w = watchPolicy(file, ref, log, { load, debounceMs: 100, onReload: (ok) => results.push(ok) });
  try {
    const allowed = (id: string) => ref.current.decide({ listener: 'in', sourceId: id }).allow;
    assert.equal(allowed('spiffe://example.org/db'), false);

    // An editor's save: write a temp file and rename it over the policy.
    writeFileSync(`${file}.tmp`, 'spiffe://example.org/db\n');
    renameSync(`${file}.tmp`, file);
    await until(() => results.length === 1, 'the first reload');
    assert.deepEqual(results, [true]);
    assert.equal(allowed('spiffe://example.org/db'), true);
    assert.equal(allowed('spiffe://example.org/web'), false);

    const kept = ref.current;
    writeFileSync(file, 'broken\n');
    await until(() => results.length === 2, 'the failed reload');
    assert.deepEqual(results, [true, false]);
    assert.equal(ref.current, kept, 'the previous decider stays');
    assert.ok(logs.some((l) => l.startsWith('error policy reload failed; keeping the previous policy') && l.includes('broken policy')));

    const before = loads;
    for (let i = 0; i < 10; i++) writeFileSync(file, `spiffe://example.org/w${i}\n`);
    await until(() => results.length === 3, 'the debounced reload');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(loads - before, 1, 'ten quick writes, one load');
    assert.equal(allowed('spiffe://example.org/w9'), true);

    // Other files in the directory are ignored.
    writeFileSync(join(dir, 'other.txt'), 'x');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(results.length, 3);
  } finally {
    w.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

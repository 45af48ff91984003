// The bin/ executables work straight after `npm install`, from any working directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const version = (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string }).version;

for (const name of ['spindle-server', 'spindle-agent']) {
  test(`${name} prints help from another working directory`, () => {
    const r = spawnSync(`${root}bin/${name}`, [], { cwd: tmpdir(), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Usage: ${name}`));
  });

  test(`${name} --version prints the package version`, () => {
    const r = spawnSync(`${root}bin/${name}`, ['--version'], { cwd: tmpdir(), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), version);
  });

  test(`${name} rejects an unknown command with a non-zero exit`, () => {
    const r = spawnSync(`${root}bin/${name}`, ['no-such-command'], { cwd: tmpdir(), encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown command|too many arguments/);
  });
}

test('package.json bin entries point at the executables', () => {
  const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { bin: Record<string, string> };
  assert.deepEqual(pkg.bin, { 'spindle-server': 'bin/spindle-server', 'spindle-agent': 'bin/spindle-agent' });
});

// The bin/ executables work straight after `npm install`, from any working directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const version = (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string }).version;

for (const name of ['spindle-server', 'spindle-agent', 'spindle-oidc', 'spindle-proxy']) {
  test(`${name} prints help from another working directory`, () => {
    const r = spawnSync(`${root}bin/${name}`, ['-h'], { cwd: tmpdir(), encoding: 'utf8' });
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
  assert.deepEqual(pkg.bin, { 'spindle-server': 'bin/spindle-server', 'spindle-agent': 'bin/spindle-agent', 'spindle-oidc': 'bin/spindle-oidc', 'spindle-proxy': 'bin/spindle-proxy' });
});

test('spindle-agent validate checks plugin_data of the configured attestors (without contacting anything)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-validate-'));
  try {
    const write = (name: string, plugins: unknown): string => {
      const p = join(dir, name);
      writeFileSync(p, JSON.stringify({ agent: { trust_domain: 'example.org' }, plugins }));
      return p;
    };
    const validate = (p: string) => spawnSync(`${root}bin/spindle-agent`, ['validate', '-config', p], { cwd: dir, encoding: 'utf8' });
    const good = validate(
      write('good.json', {
        NodeAttestor: { k8s_psat: { plugin_data: { cluster: 'demo' } } },
        WorkloadAttestor: { k8s: { plugin_data: { node_name: 'n1', skip_kubelet_verification: true, use_anonymous_authentication: true } } },
      }),
    );
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /Configuration is valid/);

    const bad = validate(write('bad.json', { NodeAttestor: { k8s_psat: { plugin_data: { clustr: 'demo' } } } }));
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /plugins\.NodeAttestor\.k8s_psat\.plugin_data\.cluster: is required/);
    assert.match(bad.stderr, /plugins\.NodeAttestor\.k8s_psat\.plugin_data\.clustr: unknown key/);

    const unix = validate(write('unix.json', { WorkloadAttestor: { unix: { plugin_data: { discover_workload_path: 'maybe' } } } }));
    assert.notEqual(unix.status, 0);
    assert.match(unix.stderr, /plugins\.WorkloadAttestor\.unix\.plugin_data\.discover_workload_path/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

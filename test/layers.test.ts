/**
 * The layer check (`npm run lint:layers`, run by `npm test` before the build; the rules are in
 * .dependency-cruiser.cjs): the tree as it is passes, and a copy of the tree with wrong imports
 * added fails, naming the broken rule and the offending import. Both run the npm script itself,
 * so what is asserted is what `npm test` runs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from './support/paths.js';

/** The source folders the check reads, and the files it needs next to them. */
const SOURCE_DIRS = ['proto', 'spiffe', 'common', 'attestors', 'server', 'agent', 'oidc', 'proxy', 'scripts', 'bench', 'test'];
const ROOT_FILES = ['package.json', 'tsconfig.json', '.dependency-cruiser.cjs'];

function lintLayers(cwd: string): { status: number | null; output: string } {
  const r = spawnSync('npm', ['run', '--silent', 'lint:layers'], { cwd, encoding: 'utf8', timeout: 180_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** A copy of the TypeScript sources and the check's configuration in a temp dir. */
function copyTree(): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-layers-'));
  for (const f of ROOT_FILES) cpSync(join(repoRoot, f), join(dir, f));
  for (const d of SOURCE_DIRS) {
    cpSync(join(repoRoot, d), join(dir, d), {
      recursive: true,
      filter: (src) => !/[\\/](node_modules|dist|build)$/.test(src) && (!/\.[a-z]+$/i.test(src) || src.endsWith('.ts')),
    });
  }
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

describe('layer check', { timeout: 400_000 }, () => {
  it('passes on the tree as it is', () => {
    const r = lintLayers(repoRoot);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /no dependency violations found/);
  });

  it('fails when agent/ imports server/, oidc/ imports server/ or server/ imports oidc/, proxy/ imports agent/ or agent/ imports proxy/, production code imports a test kit, anything but the factory imports a datastore backend, or imports form a cycle', () => {
    const dir = copyTree();
    try {
      writeFileSync(
        join(dir, 'agent', 'layerprobe.ts'),
        "import { openDataStore } from '../server/datastore/factory.js';\nexport const probe = openDataStore;\n",
      );
      writeFileSync(join(dir, 'server', 'layerprobe.ts'), "import { TD } from './ca/testkit.js';\nexport const probe = TD;\n");
      writeFileSync(join(dir, 'server', 'storeprobe.ts'), "import { openSqliteDataStore } from './datastore/sqlite/store.js';\nexport const probe = openSqliteDataStore;\n");
      writeFileSync(join(dir, 'server', 'pgprobe.ts'), "import { openPostgresDataStore } from './datastore/postgres/store.js';\nexport const probe = openPostgresDataStore;\n");
      writeFileSync(join(dir, 'oidc', 'layerprobe.ts'), "import { AdminClient } from '../server/cli/client.js';\nexport const probe = AdminClient;\n");
      writeFileSync(join(dir, 'server', 'oidcprobe.ts'), "import { jwksOf } from '../oidc/keyset.js';\nexport const probe = jwksOf;\n");
      writeFileSync(join(dir, 'proxy', 'layerprobe.ts'), "import { DEFAULT_SOCKET_PATH } from '../agent/cli/common.js';\nexport const probe = DEFAULT_SOCKET_PATH;\n");
      writeFileSync(join(dir, 'agent', 'proxyprobe.ts'), "import { AllowlistDecider } from '../proxy/allowlist.js';\nexport const probe = AllowlistDecider;\n");
      writeFileSync(join(dir, 'common', 'cyclea.ts'), "import { b } from './cycleb.js';\nexport const a = (): number => b() + 1;\n");
      writeFileSync(join(dir, 'common', 'cycleb.ts'), "import { a } from './cyclea.js';\nexport const b = (): number => a() - 1;\n");

      const r = lintLayers(dir);
      assert.notEqual(r.status, 0, `the check passed with wrong imports:\n${r.output}`);
      assert.match(r.output, /error agent-not-server: agent\/layerprobe\.ts → server\/datastore\/factory\.ts/);
      assert.match(r.output, /error datastore-backend-via-factory: server\/storeprobe\.ts → server\/datastore\/sqlite\/store\.ts/);
      assert.match(r.output, /error datastore-backend-via-factory: server\/pgprobe\.ts → server\/datastore\/postgres\/store\.ts/);
      assert.match(r.output, /error production-not-testkits: server\/layerprobe\.ts → server\/ca\/testkit\.ts/);
      assert.match(r.output, /error no-circular: common\/cyclea\.ts →\s+common\/cycleb\.ts →\s+common\/cyclea\.ts/);
      assert.match(r.output, /error oidc-not-server-or-agent: oidc\/layerprobe\.ts → server\/cli\/client\.ts/);
      assert.match(r.output, /error server-not-oidc: server\/oidcprobe\.ts → oidc\/keyset\.ts/);
      assert.match(r.output, /error proxy-only-spiffe-and-common: proxy\/layerprobe\.ts → agent\/cli\/common\.ts/);
      assert.match(r.output, /error nothing-imports-proxy: agent\/proxyprobe\.ts → proxy\/allowlist\.ts/);
      assert.match(r.output, /x 9 dependency violations/, 'exactly the probes fail; the rest of the copy is clean');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

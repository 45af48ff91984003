// Builds the peercred addon (build/Release/peercred.node) with node-gyp. Run by the root
// package's `install` script (so `npm install` and `npm rebuild` build it) and by
// `npm run build:native`. Works offline: node-gyp is the one bundled with npm, and when no
// nodedir is configured but this Node's own headers are installed next to it (official
// tarballs, Debian's /usr/include/node), they are used instead of downloading headers.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const prefix = dirname(dirname(process.execPath)); // /usr for /usr/bin/node

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp, // set by npm for lifecycle scripts
    join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
    join(prefix, 'share/nodejs/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ];
  return candidates.find((p) => p && existsSync(p));
}

const nodeGyp = findNodeGyp();
const args = ['rebuild', `--directory=${here}`];
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = nodeGyp
  ? spawnSync(process.execPath, [nodeGyp, ...args], { stdio: 'inherit' })
  : spawnSync('node-gyp', args, { stdio: 'inherit' });
if (r.status !== 0) {
  console.error(
    `\nspindle: building the peercred native addon failed (${r.error?.message ?? `exit ${r.status}`}).\n` +
      'The agent needs it to read Workload API callers\' credentials (SO_PEERCRED). Install a C\n' +
      'compiler, make and python3, then run `npm run build:native` (or `npm rebuild`).\n',
  );
  process.exit(1);
}

/**
 * Running test processes as another local user (uid/gid 65534, "nobody"): workloads of another
 * uid, an unprivileged attacker, a CLI user without access to the admin socket.
 *
 * Such a process must be able to read our code: bin/, dist/, node_modules/, proto/ and package.json. In
 * a checkout other users can enter that is the checkout itself. In one they cannot (cloned under
 * /root, or inside a 0700 `mktemp -d`), those are copied once into a world-readable temp
 * directory and the processes run from the copy: `forOtherUid(path)` maps a path in the checkout
 * to the one such a process can use. `scripts/test.ts` makes the copy once for a whole `npm test`
 * and passes it down in SPINDLE_TEST_OTHER_UID_ROOT; a test file run on its own makes its own.
 *
 * Acting as another uid needs root. `npm test` runs as root (CI does); as another user the
 * tests that need root FAIL with `needsRoot`'s message: they are never skipped and counted as
 * passed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { repoRoot } from './paths.js';

export const OTHER_UID = 65534;
export const OTHER_ROOT_ENV = 'SPINDLE_TEST_OTHER_UID_ROOT';
const NEEDED = ['package.json', 'bin', 'dist', 'node_modules', 'proto'];

/** Fails the calling test, naming what needs root, when this process is not root. */
export function needsRoot(what: string): void {
  assert.equal(
    process.getuid?.(),
    0,
    `${what} needs root (to act as another uid, or to mount a file system); run npm test as root, as CI does. This test did NOT run.`,
  );
}

/** Whether uid OTHER_UID can read `root`'s code (checked by asking as that uid, not by mode bits). */
export function readableByOtherUid(root: string): boolean {
  const probes = [join(root, 'package.json'), join(root, 'bin', 'spindle-server'), join(root, 'dist', 'spiffe', 'workloadapi', 'index.js'), join(root, 'node_modules', '@grpc', 'grpc-js', 'package.json')];
  const r = spawnSync('/bin/sh', ['-c', 'for p; do test -r "$p" || exit 1; done', 'sh', ...probes], { uid: OTHER_UID, gid: OTHER_UID, stdio: 'ignore' });
  return r.status === 0;
}

/**
 * A copy of the code other users can read, in a fresh world-readable temp directory (removed
 * when this process exits unless `keep`).
 */
export function makeOtherUidCopy(opts: { keep?: boolean } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-otheruid-'));
  for (const name of NEEDED) cpSync(join(repoRoot, name), join(dir, name), { recursive: true });
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  chmodSync(dir, 0o755);
  if (!opts.keep) process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let root: string | undefined;

/** The root other-uid processes run our code from (the checkout, or a readable copy of it). */
export function otherUidRoot(): string {
  if (root !== undefined) return root;
  needsRoot('running a process as another uid');
  const given = process.env[OTHER_ROOT_ENV];
  if (given !== undefined && given !== '' && existsSync(join(given, 'dist'))) return (root = given);
  root = readableByOtherUid(repoRoot) ? repoRoot : makeOtherUidCopy();
  return root;
}

/** `path` (inside the checkout) as a process of uid OTHER_UID can reach it. */
export function forOtherUid(path: string): string {
  const rel = relative(repoRoot, path);
  if (rel.startsWith('..')) return path;
  return join(otherUidRoot(), rel);
}

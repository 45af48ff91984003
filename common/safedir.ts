/**
 * Directories another local user must not control: the socket directories (admin socket,
 * Workload API socket) and the data directories of spindle-server and spindle-agent.
 *
 * A directory is "safe" when it and every ancestor up to / is owned by this process's effective
 * uid or by root, and none of them is writable by group or others unless it has the sticky bit
 * (like /tmp: others may create entries there but not rename or delete ours). Anyone who owns a
 * directory on the path, or may write into one without the sticky bit, can swap what lies below
 * it: replace a socket with their own server, read or plant keys.
 *
 * Symlinks on the path are judged twice: every component of the path as written (a symlink must
 * itself be owned by us or root, a directory must pass the rules above), and every component of
 * the path with symlinks resolved.
 *
 * `ensureSafeDirectory` creates missing components one by one with mkdir(mode) (the umask can
 * only take bits away, so a new directory is never wider than `mode`), then checks that what is
 * there now is a directory we own (another user may have won a race to create it in a sticky
 * directory) and chmods it to exactly `mode`. Errors name the path, its owner uid and its mode.
 */
import { chmodSync, lstatSync, mkdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { resolve } from 'node:path';
import { describeFsError } from './fserrors.js';

/** The path is unsafe (as opposed to an fs error while looking at it, which is thrown as is). */
export class UnsafeDirectoryError extends Error {}

const STICKY = 0o1000;
const GROUP_OR_OTHER_WRITE = 0o022;

export const octalMode = (mode: number): string => `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;

function euid(): number {
  return process.geteuid?.() ?? 0;
}

/** `/a/b/c` -> [`/`, `/a`, `/a/b`, `/a/b/c`]. */
function prefixes(absolute: string): string[] {
  const out = ['/'];
  let cur = '';
  for (const part of absolute.split('/')) {
    if (part === '') continue;
    cur = `${cur}/${part}`;
    out.push(cur);
  }
  return out;
}

/** Why `st` (of `path`) makes a directory path unsafe, or undefined when it does not. */
function problem(path: string, st: Stats, uid: number): string | undefined {
  const facts = `owner uid ${st.uid}, mode ${octalMode(st.mode)}`;
  if (st.uid !== uid && st.uid !== 0) {
    return `${path} is owned by another user (${facts}; expected this user, uid ${uid}, or root)`;
  }
  if (st.isDirectory() && (st.mode & GROUP_OR_OTHER_WRITE) !== 0 && (st.mode & STICKY) === 0) {
    return `${path} is writable by group or others without the sticky bit (${facts})`;
  }
  return undefined;
}

/**
 * Checks `dir` and all its ancestors (or, for a path that does not exist yet, its nearest
 * existing ancestor and theirs). Throws an Error naming `what`, the offending path, its owner
 * and mode (an UnsafeDirectoryError). Something that exists at `dir` but is not a directory is
 * an error too. A component that cannot be looked at (EACCES) throws that fs error.
 */
export function checkSafeDirectory(dir: string, what: string): void {
  const abs = resolve(dir);
  const uid = euid();
  const fail = (why: string): never => {
    throw new UnsafeDirectoryError(`${what} ${abs} is not safe to use: ${why}; another local user could take it over. Use a directory owned by this user (uid ${uid}) or root that only its owner can write to, or fix its owner/mode.`);
  };
  // Components as written: lstat, so a symlink is judged by its own owner.
  let existing = '';
  for (const p of prefixes(abs)) {
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
      throw err;
    }
    const why = problem(p, st, uid);
    if (why !== undefined) fail(why);
    if (!st.isDirectory() && !st.isSymbolicLink()) fail(`${p} exists and is not a directory`);
    existing = p;
  }
  if (existing === '') return;
  // The same with symlinks resolved: where the path really leads.
  const real = realpathSync(existing);
  for (const p of prefixes(real)) {
    const st = statSync(p);
    const why = problem(p, st, uid);
    if (why !== undefined) fail(why);
    if (!st.isDirectory()) fail(`${p} exists and is not a directory`);
  }
}

/**
 * Makes sure `dir` exists and is safe (see checkSafeDirectory). Missing components are created
 * with `mode` (and chmod'ed to it, so the umask cannot narrow them); an existing `dir` keeps its
 * mode, which is returned as its Stats (`undefined` when this call created it).
 */
export function ensureSafeDirectory(dir: string, mode: number, what: string): Stats | undefined {
  const abs = resolve(dir);
  checkSafeDirectory(abs, what);
  const uid = euid();
  let existed: Stats | undefined;
  try {
    existed = statSync(abs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existed === undefined) {
    for (const p of prefixes(abs)) {
      try {
        mkdirSync(p, { mode });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        // mkdir's ENOENT with an existing parent (we create top-down) is a file system that
        // does not allow new directories there (/proc, /sys), not a missing path.
        const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'this file system does not allow creating directories there' : describeFsError(err);
        throw new Error(`cannot create ${what} ${p}: ${why}; create it yourself, or choose a path on a writable file system`, { cause: err });
      }
      // Ours if mkdir succeeded, unless someone swapped it since: verify before widening.
      const st = lstatSync(p);
      if (!st.isDirectory() || st.uid !== uid) {
        throw new UnsafeDirectoryError(`${what} ${p} was replaced right after this process created it (now owner uid ${st.uid}, mode ${octalMode(st.mode)}); another local user is interfering, refusing to use it`);
      }
      chmodSync(p, mode);
    }
  }
  // Whatever happened in between (a component created by someone else racing us), judge the
  // final state of the whole path.
  checkSafeDirectory(abs, what);
  return existed;
}

/**
 * The directory a CLI `-write` option puts SVIDs and keys in. An existing directory is used as
 * it is (its mode is the user's choice; the key files themselves are written 0600). A missing
 * one is created with ensureSafeDirectory at 0700, parents included, as `mkdir -p` would but
 * refusing a path another local user controls: the directory will hold a private key. Returns
 * true when this call created it.
 */
export function ensureOutputDirectory(dir: string, what: string): boolean {
  let st: Stats | undefined;
  try {
    st = statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (st !== undefined) {
    if (!st.isDirectory()) throw new Error(`${what} ${resolve(dir)} exists and is not a directory`);
    return false;
  }
  ensureSafeDirectory(dir, 0o700, what);
  return true;
}

/**
 * One process per data directory: spindle-server and spindle-agent hold `<dataDir>/spindle.lock`
 * while they run. Two servers on one datastore, or two agents on one agent key, would overwrite
 * each other's files (keys, SVIDs, the SQLite journal) and serve diverging state.
 *
 * Contract:
 * - The lock file is created with O_CREAT|O_EXCL (mode 0600) and holds the owner's pid. Creating
 *   it is atomic: of two processes starting together, exactly one gets it.
 * - When it exists and its pid is a live process (signal 0 succeeds, or fails with EPERM: a
 *   process of another user), acquiring fails with a DataDirLockedError naming the directory and
 *   that pid. A lock this process already holds (two services in one process) is refused the
 *   same way.
 * - When its pid is not alive (or the file holds no pid: a crash between create and write), the
 *   lock is stale: it is removed, taken over and `onStale` is told (the caller logs it). Caveat:
 *   two processes taking over the same stale lock at the same moment may both remove it; the
 *   one whose O_EXCL create then fails is refused, so at most one wins.
 * - A pid reused by an unrelated process after a crash keeps the lock "held": the error says
 *   which pid and which file, so the operator can check and delete it.
 * - `release()` removes the file only while it still holds this process's pid.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ensureSafeDirectory } from './safedir.js';

export const LOCK_FILE_NAME = 'spindle.lock';

/** The directory is in use by another live process (or by this one). */
export class DataDirLockedError extends Error {
  readonly dir: string;
  /** The holder's pid; undefined when it lost a race and the winner has not written it yet. */
  readonly pid: number | undefined;
  constructor(what: string, dir: string, pid: number | undefined, lockPath: string) {
    const who = pid === undefined ? 'another process' : pid === process.pid ? 'this process (another service in it)' : `process ${pid}`;
    super(
      `${what} ${dir} is in use by ${who}: only one process may use a data directory; stop it, or set another data directory. ` +
        `If no such process runs, delete ${lockPath}`,
    );
    this.name = 'DataDirLockedError';
    this.dir = dir;
    this.pid = pid;
  }
}

export interface DataDirLock {
  readonly path: string;
  release(): void;
}

/** Lock paths held by this process. */
const held = new Set<string>();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in a lock file, or undefined when it holds none (empty, garbage) or is gone. */
function readPid(path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const m = /^\s*(\d+)\s*$/.exec(text);
  const pid = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

function tryCreate(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
}

/**
 * Takes the lock of `dir` (created 0700 when missing, see common/safedir.ts). `what` names the
 * directory in errors ("server data directory").
 */
export function lockDataDir(dir: string, what: string, onStale: (info: { path: string; pid: number | undefined }) => void): DataDirLock {
  const abs = resolve(dir);
  ensureSafeDirectory(abs, 0o700, what);
  const path = join(abs, LOCK_FILE_NAME);
  if (held.has(path)) throw new DataDirLockedError(what, abs, process.pid, path);
  let created = tryCreate(path);
  if (!created) {
    const pid = readPid(path);
    if (pid !== undefined && isAlive(pid)) throw new DataDirLockedError(what, abs, pid, path);
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    created = tryCreate(path);
    if (!created) throw new DataDirLockedError(what, abs, readPid(path), path);
    onStale({ path, pid });
  }
  held.add(path);
  let released = false;
  return {
    path,
    release(): void {
      if (released) return;
      released = true;
      held.delete(path);
      if (readPid(path) === process.pid) {
        try {
          unlinkSync(path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
    },
  };
}

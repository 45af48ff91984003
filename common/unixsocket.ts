/**
 * The socket file of a server listening on a Unix socket path (spindle-agent's Workload API,
 * spindle-server's admin API), before bind and after close:
 * - the parent directory must be safe from other local users (common/safedir.ts: it and every
 *   ancestor owned by us or root, none writable by others without the sticky bit); a missing one
 *   is created with the caller's mode (chmod after mkdir: the umask does not matter); an existing
 *   one is left as it is and its stats returned; anything else there is an error;
 * - the socket is bound inside a fresh private staging directory next to the final path
 *   (mkdtemp, 0700), chmod'ed there and then renamed into place, so at the final path it only
 *   ever exists with its final mode: nobody can connect during a window between bind and chmod;
 * - a stale socket from a previous run is removed only if it IS a socket and nothing answers
 *   on it; any other file at the path is an error (never deleted), and so is a live socket;
 * - on close, the path is unlinked only while it is still a socket.
 * Messages name the socket by the caller's `what` ("admin socket", "Workload API socket").
 */
import { chmodSync, lstatSync, mkdtempSync, renameSync, rmdirSync, unlinkSync, type Stats } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { ensureSafeDirectory } from './safedir.js';

const PROBE_TIMEOUT_MS = 1000;

export interface SocketPathNames {
  /** What the socket is, as messages start: "admin socket" (path ... exists and is not a socket). */
  what: string;
  /** The error message when something already answers on `path`. */
  inUse: (path: string) => string;
}

/** Whether something accepts connections on the Unix socket at `path` (no answer in time counts as yes). */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((done) => {
    const sock = connect({ path });
    const finish = (answers: boolean): void => {
      sock.destroy();
      done(answers);
    };
    sock.setTimeout(PROBE_TIMEOUT_MS, () => finish(true));
    sock.once('connect', () => finish(true));
    sock.once('error', () => finish(false));
  });
}

/**
 * Makes sure the socket's directory `dir` exists and no other local user controls it or any
 * ancestor (throws, naming the path, owner and mode, when one does): created (with its parents)
 * and chmod'ed to `mode` when missing, then `undefined`; an existing directory is left alone and
 * its stats returned (for the caller to judge its mode). Anything else at `dir` is an error.
 */
export function prepareSocketDirectory(dir: string, mode: number, what: string): Stats | undefined {
  return ensureSafeDirectory(dir, mode, `${what} directory`);
}

/**
 * Binds a socket that appears at `path` only with `mode`: `bind` is called with a path inside a
 * fresh 0700 directory made next to `path` (same directory, so the same filesystem), the socket
 * is chmod'ed there and then renamed onto `path`; the staging directory is removed. The rename
 * keeps the listening socket working (it is bound to the inode, not the name). The staging name
 * is `<dir>/.bind-XXXXXX/s`: `path`'s directory must leave room for it within the Unix socket
 * path limit (107 bytes). On failure the caller closes what `bind` opened; the staging directory
 * is removed here.
 */
export async function bindSocketInPlace(path: string, mode: number, bind: (stagingPath: string) => Promise<void>): Promise<void> {
  const staging = mkdtempSync(join(dirname(path), '.bind-'));
  const stagingPath = join(staging, 's');
  try {
    await bind(stagingPath);
    chmodSync(stagingPath, mode);
    renameSync(stagingPath, path);
  } finally {
    try {
      unlinkSync(stagingPath);
    } catch {
      // renamed away, or never bound
    }
    rmdirSync(staging);
  }
}

/**
 * Clears `path` for bind: nothing there is fine; a socket nothing answers on is removed; a
 * socket something answers on (`names.inUse`) and any other file are errors, left in place.
 */
export async function removeStaleSocket(path: string, names: SocketPathNames): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`${names.what} path ${path} exists and is not a socket; remove it or choose another socket_path`);
  if (await socketAnswers(path)) throw new Error(names.inUse(path));
  unlinkSync(path);
}

/** Removes our socket file at close, if `path` is still a socket (else, or when gone, nothing). */
export function removeSocketFile(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // already gone
  }
}

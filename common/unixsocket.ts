/**
 * The socket file of a server listening on a Unix socket path (spindle-agent's Workload API,
 * spindle-server's admin API), before bind and after close:
 * - the parent directory is created with the caller's mode if missing (chmod after mkdir: the
 *   umask does not matter); an existing directory is left as it is and its stats returned;
 *   anything else there is an error;
 * - a stale socket from a previous run is removed only if it IS a socket and nothing answers
 *   on it; any other file at the path is an error (never deleted), and so is a live socket;
 * - on close, the path is unlinked only while it is still a socket.
 * Messages name the socket by the caller's `what` ("admin socket", "Workload API socket").
 */
import { chmodSync, lstatSync, mkdirSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { connect } from 'node:net';

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
 * Makes sure the socket's directory `dir` exists: created (with its parents) and chmod'ed to
 * `mode` when missing, then `undefined`; an existing directory is left alone and its stats
 * returned (for the caller to judge its mode). Anything else at `dir` is an error.
 */
export function prepareSocketDirectory(dir: string, mode: number, what: string): Stats | undefined {
  let existing;
  try {
    existing = statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing === undefined) {
    mkdirSync(dir, { recursive: true, mode });
    chmodSync(dir, mode); // the umask must not narrow it
    return undefined;
  }
  if (!existing.isDirectory()) throw new Error(`${what} directory ${dir} exists and is not a directory`);
  return existing;
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

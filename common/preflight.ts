/**
 * Checks spindle-server and spindle-agent run before they do anything that cannot be undone
 * (create a CA and datastore, spend a single-use join token): the log file can be opened, the
 * data directories are writable, the Unix socket path is free and its directory usable, the TCP
 * port can be bound. Each check throws a PreflightError whose message names the file, flag or
 * address, says what is wrong in plain words (no errno codes alone) and what to do.
 *
 * These checks do not replace the real operations (which keep their own error handling): a port
 * taken between the probe and the bind still fails there. They only make the common mistakes
 * fail first, with nothing created.
 */
import { accessSync, constants, lstatSync, openSync, statSync, type Stats } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { socketAnswers } from './unixsocket.js';
import { describeFsError } from './fserrors.js';
import { ensureSafeDirectory, UnsafeDirectoryError } from './safedir.js';

export { describeFsError };

/** A problem found before startup did anything; its message is the whole operator-facing text. */
export class PreflightError extends Error {
  override readonly name = 'PreflightError';
}

/** The Unix socket path limit (sun_path holds 108 bytes, NUL included). */
const MAX_SOCKET_PATH_BYTES = 107;
/** What bindSocketInPlace (common/unixsocket.ts) adds below the socket's directory. */
const STAGING_SUFFIX = join('.bind-XXXXXX', 's');

/** The nearest existing ancestor of `abs` (itself when it exists) and its stats. */
function nearestExisting(abs: string): { path: string; st: Stats } {
  let p = abs;
  for (;;) {
    try {
      return { path: p, st: statSync(p) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(p) === p) throw err;
      p = dirname(p);
    }
  }
}

/**
 * Checks that `dir` is a directory this process may write in, or can be created: the nearest
 * existing ancestor must be a directory it may write in. `what` names it with its flag, e.g.
 * "data directory /x (-dataDir / data_dir)". Creates nothing.
 */
export function checkWritableDirectory(dir: string, what: string, advice: string): void {
  const abs = resolve(dir);
  let found: { path: string; st: Stats };
  try {
    found = nearestExisting(abs);
  } catch (err) {
    throw new PreflightError(`${what} cannot be used: ${abs}: ${describeFsError(err)}; ${advice}`);
  }
  if (!found.st.isDirectory()) {
    throw new PreflightError(`${what} cannot be used: ${found.path} exists and is not a directory; ${advice}`);
  }
  try {
    accessSync(found.path, constants.W_OK | constants.X_OK);
  } catch (err) {
    const where = found.path === abs ? `is not writable: ${abs}` : `cannot be created in ${found.path}`;
    throw new PreflightError(`${what} ${where}: ${describeFsError(err)}; ${advice}`);
  }
}

export interface LogFileNames {
  /** How the setting is written, e.g. "-logFile / log_file". */
  setting: string;
}

function logFileProblem(path: string, err: unknown, names: LogFileNames): PreflightError {
  const code = (err as NodeJS.ErrnoException).code;
  let reason = describeFsError(err);
  let advice = `choose a file in a writable directory, or leave ${names.setting} unset to log to stderr`;
  if (code === 'ENOENT') {
    reason = `its directory ${dirname(path)} does not exist`;
    advice = `create ${dirname(path)} first, or ${advice}`;
  } else if (code === 'EISDIR') {
    reason = 'it is a directory';
    advice = `give a file path such as ${join(path, 'spindle.log')}, or leave ${names.setting} unset to log to stderr`;
  }
  return new PreflightError(`cannot open the log file ${path} (${names.setting}): ${reason}; ${advice}`);
}

/**
 * Opens the log file for appending (created 0640 when missing) and returns its descriptor, or
 * throws a PreflightError naming the file and the setting.
 */
export function openLogFile(path: string, names: LogFileNames): number {
  const abs = resolve(path);
  try {
    return openSync(abs, 'a', 0o640);
  } catch (err) {
    throw logFileProblem(abs, err, names);
  }
}

/** The checks of openLogFile without creating or opening anything (for `validate`). */
export function checkLogFile(path: string, names: LogFileNames): void {
  const abs = resolve(path);
  let st: Stats | undefined;
  try {
    st = statSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw logFileProblem(abs, err, names);
  }
  try {
    if (st === undefined) {
      const parent = statSync(dirname(abs));
      if (!parent.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      accessSync(dirname(abs), constants.W_OK | constants.X_OK);
    } else if (st.isDirectory()) {
      throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    } else {
      accessSync(abs, constants.W_OK);
    }
  } catch (err) {
    throw logFileProblem(abs, err, names);
  }
}

export interface SocketNames {
  /** "admin socket", "Workload API socket". */
  what: string;
  /** How the setting is written, e.g. "-socketPath / socket_path". */
  setting: string;
  /** The mode a missing socket directory is created with. */
  dirMode: number;
  /** The message when something already answers on the socket. */
  inUse: (path: string) => string;
}

/**
 * Checks that a Unix socket can be bound at `path`: short enough, its directory writable (a
 * missing one is created here as the listener would, with `dirMode`: only trying tells whether a
 * file system such as /proc allows it), nothing but a dead socket at the path, and no live
 * server answering on it. Removes nothing (a dead socket is removed later, at bind).
 */
export async function checkSocketPath(path: string, names: SocketNames): Promise<void> {
  const abs = resolve(path);
  const advice = `choose another ${names.setting}`;
  if (Buffer.byteLength(join(dirname(abs), STAGING_SUFFIX)) > MAX_SOCKET_PATH_BYTES) {
    throw new PreflightError(
      `${names.what} path ${abs} (${names.setting}) is too long: Unix socket paths are limited to ${MAX_SOCKET_PATH_BYTES} bytes, and binding it needs ${Buffer.byteLength(STAGING_SUFFIX) + 1} more below its directory; ${advice} in a shorter directory`,
    );
  }
  try {
    ensureSafeDirectory(dirname(abs), names.dirMode, `${names.what} directory`);
  } catch (err) {
    if (err instanceof UnsafeDirectoryError) throw err;
    throw new PreflightError(`${(err as Error).message} (${names.setting})`);
  }
  checkWritableDirectory(dirname(abs), `${names.what} directory ${dirname(abs)} (${names.setting})`, advice);
  let st: Stats;
  try {
    st = lstatSync(abs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new PreflightError(`${names.what} path ${abs} (${names.setting}) cannot be used: ${describeFsError(err)}; ${advice}`);
  }
  if (!st.isSocket()) throw new PreflightError(`${names.what} path ${abs} (${names.setting}) exists and is not a socket; remove it or ${advice}`);
  if (await socketAnswers(abs)) throw new PreflightError(names.inUse(abs));
}

export interface PortNames {
  /** What listens there: "agent API". */
  what: string;
  /** How the address setting is written: "-bindAddress / bind_address". */
  addressSetting: string;
  /** How the port setting is written: "-serverPort / bind_port". */
  portSetting: string;
  /** Said when the port is in use, e.g. "is spindle-server already running?". */
  inUseHint: string;
}

/** The text for a failed TCP listen on host:port (EADDRINUSE, EADDRNOTAVAIL, EACCES, ...). */
export function describeListenError(err: unknown, host: string, port: number, names: PortNames): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  const addr = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  switch (code) {
    case 'EADDRINUSE':
      return `cannot listen on ${addr} for the ${names.what}: port ${port} is already in use by another process (${names.inUseHint}); stop it or choose another port with ${names.portSetting}`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${addr} for the ${names.what}: ${host} is not an address of this machine; fix ${names.addressSetting} (0.0.0.0 listens on all addresses)`;
    case 'EACCES':
    case 'EPERM':
      return `cannot listen on ${addr} for the ${names.what}: permission denied (ports below 1024 need privileges); choose a port of 1024 or above with ${names.portSetting}`;
    default:
      return `cannot listen on ${addr} for the ${names.what}: ${err instanceof Error ? err.message : String(err)}; check ${names.addressSetting} and ${names.portSetting}`;
  }
}

/**
 * Binds host:port for a moment and releases it: throws a PreflightError when it cannot be
 * bound. Port 0 (any free port) is not probed.
 */
export async function checkTcpPort(host: string, port: number, names: PortNames): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((ok, fail) => {
    const s = createServer();
    s.once('error', (err) => fail(new PreflightError(describeListenError(err, host, port, names))));
    s.listen({ host, port, exclusive: true }, () => s.close(() => ok()));
  });
}

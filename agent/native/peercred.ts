/**
 * The peercred native addon (agent/native/peercred/peercred.c): what the kernel says about the
 * process on the other end of an accepted Unix socket, plus pidfds to notice when that process
 * is gone. Linux only. Built by the package's install step (`npm install`, `npm rebuild`, or
 * `npm run build:native`); there is deliberately no fallback: without SO_PEERCRED the agent
 * cannot know who is calling, and must not guess.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface PeerCredNative {
  /** getsockopt(SO_PEERCRED) on a connected Unix socket fd. Throws (err.code = errno name). */
  getPeerCred(fd: number): PeerCred;
  /**
   * getsockopt(SO_PEERGROUPS) on a connected Unix socket fd: the peer's supplementary groups at
   * connect() (Linux >= 4.13). Throws (err.code = errno name; ENOPROTOOPT on older kernels).
   */
  getPeerGroups(fd: number): number[];
  /** pidfd_open(pid): a new O_CLOEXEC fd (close with fs.closeSync), or -1 when the kernel does not offer pidfds. Throws ESRCH when no such process. */
  pidfdOpen(pid: number): number;
  /** false once the pidfd's process has exited (poll: readable). */
  pidfdAlive(pidfd: number): boolean;
}

export class PeerCredUnavailableError extends Error {
  readonly code = 'ERR_PEERCRED_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PeerCredUnavailableError';
  }
}

/**
 * Where the built addon may be: this file runs from dist/agent/native/ (compiled) while the
 * addon is built in the source tree agent/native/peercred/build/, so try both layouts.
 */
const CANDIDATES = [
  '../../../agent/native/peercred/build/Release/peercred.node', // from dist/agent/native/
  './peercred/build/Release/peercred.node', // from agent/native/ (source layout)
  '../../../agent/native/peercred/build/Debug/peercred.node',
  './peercred/build/Debug/peercred.node',
];

let loaded: PeerCredNative | undefined;

/** Loads the addon once; throws PeerCredUnavailableError saying how to build it. */
export function loadPeerCred(): PeerCredNative {
  if (loaded !== undefined) return loaded;
  if (process.platform !== 'linux') {
    throw new PeerCredUnavailableError(`the Workload API needs Linux peer credentials (SO_PEERCRED); this platform is ${process.platform}`);
  }
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  let lastError: unknown;
  for (const rel of CANDIDATES) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    tried.push(path);
    if (!existsSync(path)) continue;
    try {
      loaded = require(path) as PeerCredNative;
      return loaded;
    } catch (err) {
      lastError = err;
    }
  }
  const why = lastError === undefined ? 'it has not been built' : `it failed to load: ${(lastError as Error).message}`;
  throw new PeerCredUnavailableError(
    `the peercred native addon is not available (${why}; looked for ${tried[0]}). ` +
      'Build it with `npm rebuild` or `npm run build:native` (needs python3, make and a C compiler).',
    { cause: lastError },
  );
}

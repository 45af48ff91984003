/**
 * The Workload API socket and the peer tracker.
 *
 * We own the listening Unix socket (net.Server) instead of letting grpc-js bind it, because the
 * caller's identity must come from the kernel at accept time: on each connection we read
 * SO_PEERCRED (pid, effective uid and gid at connect()) and SO_PEERGROUPS (supplementary groups
 * at connect()), open a pidfd for the pid, read its start time (/proc/<pid>/stat field 22) and
 * the identity of its executable (dev:ino behind /proc/<pid>/exe, one stat), and only then hand
 * the socket to grpc-js through `Server.createConnectionInjector(...).injectConnection(socket)`.
 *
 * Exec after connect: pid, pidfd, start time and uid survive execve(), so a process that
 * connects, forks and execs a setgid (or otherwise identified) program while its child uses the
 * connection would be attested as that program. The unix attestor takes ids from the kernel's
 * connect-time credentials, and the same-process check (TrackedPeer.whyNotSameProcess) refuses
 * once the executable differs from the one seen at accept or /proc's effective uid/gid differ
 * from the connect-time ones. What it cannot see: an exec between connect() and accept() that
 * changes no credential (the program at accept is then the only one known), an exec of the same
 * file, and a program that execs another and comes back between two checks.
 *
 * Telling handlers which connection a call came from: grpc-js 1.14 gives a handler no supported
 * way to reach the socket (call objects expose only `getPeer()`, `getAuthContext()` - TLS only -
 * and, to interceptors, `getConnectionInfo()`, all derived from `socket.remoteAddress` and
 * `remotePort`). A Unix socket has neither, so each accepted socket gets OWN properties
 * `remoteAddress = "spindle-peer-<n>"` (n never reused) and `remotePort = undefined`, which makes
 * `call.getPeer()` return exactly that key; a Map from key to PeerContext does the rest. The key
 * is ours, not the client's: nothing a client sends can change it. Entries leave the map (and
 * the pidfd is closed) when the socket closes, so a call racing with a closed connection finds
 * nothing and is refused.
 *
 * Socket file: the parent directory and its ancestors must not be controlled by another local
 * user (owned by us or root, not writable by others without the sticky bit; common/safedir.ts),
 * else listening fails naming the directory, owner and mode; it is created 0755 if missing (an
 * existing one is left alone); a stale SOCKET at the path is removed only when nothing answers
 * on it (any other file type is an error, never deleted); the socket is bound in a private
 * staging directory, chmod'ed 0777 there and renamed into place, so it appears at the path only
 * with its final mode: world-connectable, authority comes from attestation.
 *
 * Connection limits (connlimits.ts) are enforced at accept, cheapest first: the global maximum by
 * the net.Server itself, the per-uid limit right after SO_PEERCRED (before any pidfd or /proc
 * work), the per-process limit once the start time is known. A refused socket is destroyed at
 * once, so the accept queue keeps draining during a flood; the listen backlog is LISTEN_BACKLOG
 * (4096, capped by net.core.somaxconn) so bursts of connects queue instead of failing with
 * EAGAIN.
 */
import { ServerCredentials, type Server } from '@grpc/grpc-js';
import { closeSync } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { dirname, resolve } from 'node:path';
import { bindSocketInPlace, prepareSocketDirectory, removeSocketFile, removeStaleSocket } from '../../common/unixsocket.js';
import { loadPeerCred, type PeerCredNative } from '../native/peercred.js';
import { CONNECTION_LIMIT_CONFIG_KEYS, ConnectionLimiter, type ConnectionRefusal } from './connlimits.js';
import { readCallerFacts, readExeId, readStartTime } from './procfs.js';
import type { PeerInfo } from '../../attestors/workload/types.js';
import type { EndpointLogger, PeerContext, PeerOf } from './types.js';

export const WORKLOAD_SOCKET_MODE = 0o777;
export const WORKLOAD_SOCKET_DIR_MODE = 0o755;
/** Pending connects the kernel queues before accept (capped by net.core.somaxconn). */
export const LISTEN_BACKLOG = 4096;
/** At most one refusal warning per this many ms (the count since the last one is logged). */
const REFUSAL_LOG_INTERVAL_MS = 10_000;
const PEER_KEY_PREFIX = 'spindle-peer-';

export interface WorkloadListenerOptions {
  socketPath: string;
  /** Accepted connections are injected into this gRPC server. */
  server: Server;
  logger: EndpointLogger;
  /** Default /proc. */
  procRoot?: string;
  /** Default: the built addon (throws a build hint when it is missing). */
  native?: PeerCredNative;
  /** Global, per-uid and per-process connection limits. Default: DEFAULT_CONNECTION_LIMITS (connlimits.ts). */
  connections?: ConnectionLimiter;
}

export interface WorkloadListener {
  /** Absolute socket path. */
  readonly socketPath: string;
  readonly peerOf: PeerOf;
  /** Connections currently tracked. */
  readonly connectionCount: number;
  /** Stops accepting new connections (open ones keep working). */
  stopAccepting(): Promise<void>;
  /** Stops accepting, destroys every open connection, removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/**
 * One connection's peer: SO_PEERCRED/SO_PEERGROUPS facts plus the handles to re-check them.
 * Created only by the listener at accept (exported for its tests); `release` closes the pidfd.
 */
export class TrackedPeer implements PeerContext {
  readonly key: string;
  readonly peer: PeerInfo;
  readonly processKey: string;
  readonly #native: PeerCredNative;
  readonly #procRoot: string;
  /** -1: no pidfd (kernel without pidfd_open, or process gone at accept). */
  #pidfd: number;
  readonly #startTime: string | undefined;
  /** readExeId at accept; undefined when the agent may not stat it (it must stay so: then only the ids are compared). */
  readonly #exe: string | undefined;
  #closed = false;

  constructor(key: string, peer: PeerInfo, native: PeerCredNative, procRoot: string, pidfd: number, startTime: string | undefined, exe: string | undefined) {
    this.key = key;
    this.peer = peer;
    this.#native = native;
    this.#procRoot = procRoot;
    this.#pidfd = pidfd;
    this.#startTime = startTime;
    this.#exe = exe;
    this.processKey = `${peer.pid}:${startTime ?? '?'}`;
  }

  get hasPidfd(): boolean {
    return this.#pidfd >= 0;
  }

  #alive(): boolean {
    try {
      return this.#native.pidfdAlive(this.#pidfd);
    } catch {
      return false;
    }
  }

  whyNotSameProcess(): string | undefined {
    if (this.#closed) return 'its connection is closed';
    const { pid, uid, gid } = this.peer;
    if (this.#startTime === undefined) return `process ${pid} was not visible in /proc when it connected`;
    const gone = `process ${pid} exited or its pid was reused`;
    if (this.#pidfd >= 0) {
      // A live pidfd is the process itself: while it has not exited its pid cannot be reused,
      // so the start time needs no re-reading (one /proc read per check instead of two).
      if (!this.#alive()) return gone;
    } else if (readStartTime(this.#procRoot, pid) !== this.#startTime) {
      return gone;
    }
    const now = readCallerFacts(this.#procRoot, pid);
    // Alive before and after the /proc reads: what they saw was the caller, not a successor.
    if (this.#pidfd >= 0 && !this.#alive()) return gone;
    if (now.euid === undefined || now.egid === undefined) return gone;
    if (now.euid !== uid || now.egid !== gid) {
      return `process ${pid} connected with effective uid ${uid} gid ${gid} and now runs with uid ${now.euid} gid ${now.egid} (it executed a setuid/setgid program or changed its ids since it connected)`;
    }
    // Both unreadable (an agent without the right to inspect the process): only the ids above count.
    if (now.exe !== this.#exe) {
      return `process ${pid} executed another program since it connected (executable ${this.#exe ?? 'unreadable'} at accept, ${now.exe ?? 'unreadable'} now)`;
    }
    return undefined;
  }

  stillSameProcess(): boolean {
    return this.whyNotSameProcess() === undefined;
  }

  release(): void {
    this.#closed = true;
    if (this.#pidfd >= 0) {
      try {
        closeSync(this.#pidfd);
      } catch {
        // already closed
      }
      this.#pidfd = -1;
    }
  }
}

function listen(server: NetServer, path: string): Promise<void> {
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen({ path, exclusive: true, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', fail);
      ok();
    });
  });
}

export async function listenWorkloadSocket(options: WorkloadListenerOptions): Promise<WorkloadListener> {
  const native = options.native ?? loadPeerCred();
  const procRoot = options.procRoot ?? '/proc';
  const log = options.logger;
  const socketPath = resolve(options.socketPath);
  prepareSocketDirectory(dirname(socketPath), WORKLOAD_SOCKET_DIR_MODE, 'Workload API socket');
  await removeStaleSocket(socketPath, {
    what: 'Workload API socket',
    inUse: (path) => `another process is already serving on ${path} (is spindle-agent already running?)`,
  });

  const injector = options.server.createConnectionInjector(ServerCredentials.createInsecure());
  const peers = new Map<string, TrackedPeer>();
  const sockets = new Set<Socket>();
  let counter = 0;
  const limits = options.connections ?? new ConnectionLimiter();
  let refusedSinceLog = 0;
  let lastRefusalLog = -Infinity;
  // One warning per interval during a flood, not one per connection.
  const logRefusal = (fields: object, message: string): void => {
    refusedSinceLog++;
    const now = performance.now();
    if (now - lastRefusalLog < REFUSAL_LOG_INTERVAL_MS) return;
    log.warn({ ...fields, refused: refusedSinceLog }, message);
    refusedSinceLog = 0;
    lastRefusalLog = now;
  };
  const refuse = (socket: Socket, cred: { pid: number; uid: number }, r: ConnectionRefusal): void => {
    logRefusal({ pid: cred.pid, uid: cred.uid, scope: r.scope }, `Workload API connection refused: ${r.message}`);
    socket.destroy();
  };

  const onConnection = (socket: Socket): void => {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    let cred;
    let groups: number[];
    try {
      if (typeof fd !== 'number' || fd < 0) throw new Error('accepted socket has no file descriptor');
      cred = native.getPeerCred(fd);
      groups = native.getPeerGroups(fd);
    } catch (err) {
      log.error({ err }, 'cannot read the peer credentials of a Workload API connection; closing it');
      socket.destroy();
      return;
    }
    const early = limits.checkUid(cred.uid);
    if (early !== undefined) return refuse(socket, cred, early);
    // pid 0: the caller's pid is not visible in our pid namespace; it cannot be attested.
    let pidfd = -1;
    let startTime: string | undefined;
    let exe: string | undefined;
    if (cred.pid > 0) {
      try {
        pidfd = native.pidfdOpen(cred.pid);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') log.warn({ err, pid: cred.pid }, 'pidfd_open failed; relying on /proc start time only');
      }
      // Read after the pidfd is open: if the pid was already reused, the start time belongs to
      // the same (new) process as the pidfd, and attestation sees that process too.
      startTime = readStartTime(procRoot, cred.pid);
      // The program it runs now, to notice an exec before attestation (one stat per accept).
      exe = readExeId(procRoot, cred.pid);
    }
    const key = `${PEER_KEY_PREFIX}${++counter}`;
    const peer = new TrackedPeer(key, { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups }, native, procRoot, pidfd, startTime, exe);
    const releaseSlot = limits.acquire(cred.uid, peer.processKey);
    if (typeof releaseSlot !== 'function') {
      peer.release();
      return refuse(socket, cred, releaseSlot);
    }
    Object.defineProperty(socket, 'remoteAddress', { value: key, enumerable: true, configurable: false, writable: false });
    Object.defineProperty(socket, 'remotePort', { value: undefined, enumerable: true, configurable: false, writable: false });
    peers.set(key, peer);
    sockets.add(socket);
    socket.once('close', () => {
      peers.delete(key);
      sockets.delete(socket);
      peer.release();
      releaseSlot();
    });
    // Once the HTTP/2 session has ended our side (idle timeout, GOAWAY, shutdown) nothing reads
    // or writes this socket again: close it instead of waiting for the client's end, or a client
    // that never closes would keep its slot, its pidfd and the socket forever.
    socket.once('finish', () => socket.destroy());
    log.debug({ peer: key, pid: cred.pid, uid: cred.uid, gid: cred.gid, pidfd: pidfd >= 0 }, 'Workload API connection accepted');
    injector.injectConnection(socket);
  };

  const netServer = createServer({ pauseOnConnect: false }, onConnection);
  if (limits.settings.maxConnections > 0) netServer.maxConnections = limits.settings.maxConnections;
  netServer.on('drop', () => {
    limits.countDropped();
    logRefusal({ scope: 'all' }, `Workload API connection refused: ${limits.settings.maxConnections} connections are open (${CONNECTION_LIMIT_CONFIG_KEYS.maxConnections})`);
  });
  try {
    await bindSocketInPlace(socketPath, WORKLOAD_SOCKET_MODE, (staging) => listen(netServer, staging));
  } catch (err) {
    netServer.close();
    injector.destroy();
    throw new Error(`cannot listen on the Workload API socket ${socketPath}: ${(err as Error).message}`, { cause: err });
  }
  netServer.on('error', (err) => log.error({ err }, 'Workload API listener error'));

  let stopped: Promise<void> | undefined;
  const stopAccepting = (): Promise<void> => {
    stopped ??= new Promise<void>((done) => {
      netServer.close(() => done());
      // The net.Server only emits 'close' once its accepted sockets are gone; don't wait for that here.
      queueMicrotask(() => {
        if (!netServer.listening) done();
      });
    });
    return stopped;
  };
  let closed: Promise<void> | undefined;

  return {
    socketPath,
    peerOf: (call) => peers.get(call.getPeer()),
    get connectionCount() {
      return peers.size;
    },
    stopAccepting,
    close(): Promise<void> {
      closed ??= (async () => {
        await stopAccepting();
        injector.destroy();
        for (const s of sockets) s.destroy();
        removeSocketFile(socketPath);
      })();
      return closed;
    },
  };
}

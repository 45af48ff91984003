/** Shared shapes of the agent's local endpoints (Workload API listener, peer tracking). */
import type { PeerInfo } from '../../attestors/workload/types.js';

/** The pino methods the endpoints use; a pino Logger satisfies it. */
export interface EndpointLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): EndpointLogger;
}

/** The process on the other end of one accepted Workload API connection. */
export interface PeerContext {
  /** Unique per connection for the listener's lifetime (also what grpc-js `call.getPeer()` returns). */
  readonly key: string;
  /** From SO_PEERCRED and SO_PEERGROUPS: the caller's pid, effective uid/gid and supplementary groups when it connected. */
  readonly peer: PeerInfo;
  /**
   * The calling process as the per-caller limits count it: `<pid>:<start time>` (start time from
   * /proc at accept; `?` when it could not be read). Connections of one process share it; a
   * reused pid gets another.
   */
  readonly processKey: string;
  /**
   * Undefined while the process that opened the connection is still the one that connected and
   * still runs the same program with the same credentials; otherwise why not (for the error
   * message). Checked: its pidfd has not signalled exit (without pidfds: /proc/<pid>/stat start
   * time is the one read at accept); /proc/<pid>/status effective uid and gid are still
   * `peer.uid` / `peer.gid` (a setuid/setgid exec, or setuid()/setgid(), changes them); the
   * executable behind /proc/<pid>/exe is still the one stat'ed at accept (an exec of another
   * program changes it). "Not the same" once the connection is closed. Checked after
   * attestation and before every push: a pid can be reused, a socket can be handed to another
   * process (fork, SCM_RIGHTS) after the original caller exits, and the caller can exec another
   * program while a forked child keeps using the connection.
   * While the connector lives (and runs the same program), whoever holds the socket is served
   * as the connector: SO_PEERCRED describes the process that called connect(), and sharing the
   * socket is that process's choice.
   */
  whyNotSameProcess(): string | undefined;
  /** `whyNotSameProcess() === undefined`. */
  stillSameProcess(): boolean;
}

/** Finds the PeerContext of a call (anything with grpc-js's `getPeer()`); undefined once the connection is gone. */
export type PeerOf = (call: { getPeer(): string }) => PeerContext | undefined;

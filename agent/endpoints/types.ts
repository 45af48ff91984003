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
  /** From SO_PEERCRED at accept: the caller's pid and effective uid/gid when it connected. */
  readonly peer: PeerInfo;
  /**
   * The calling process as the per-caller limits count it: `<pid>:<start time>` (start time from
   * /proc at accept; `?` when it could not be read). Connections of one process share it; a
   * reused pid gets another.
   */
  readonly processKey: string;
  /**
   * True while the process that opened the connection still runs as the same uid: its pidfd
   * has not signalled exit (without pidfds: /proc/<pid>/stat start time is the one read at
   * accept), and /proc/<pid>/status effective uid is still `peer.uid`. False once the
   * connection is closed. Checked after attestation: a pid can be reused, and a socket can be
   * handed to another process (fork, SCM_RIGHTS) and used after the original caller exits.
   * While the connector lives, whoever holds the socket is served as the connector: SO_PEERCRED
   * describes the process that called connect(), and sharing the socket is that process's choice.
   */
  stillSameProcess(): boolean;
}

/** Finds the PeerContext of a call (anything with grpc-js's `getPeer()`); undefined once the connection is gone. */
export type PeerOf = (call: { getPeer(): string }) => PeerContext | undefined;

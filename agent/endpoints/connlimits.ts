/**
 * Connection limits of the agent socket (Workload API and SDS share it), so one local user
 * cannot exhaust the socket for everyone else by opening connections and sending nothing:
 *
 * - `maxConnections`: open connections over all callers (the net.Server's maxConnections: the
 *   kernel hands us the socket, Node closes it before any of our code runs);
 * - `maxConnsPerUid`: connections all processes of one uid may hold. This is the RESERVE: it must
 *   stay below `maxConnections` (config validation enforces it), so a single flooding uid always
 *   leaves `maxConnections - maxConnsPerUid` connections for the other uids (0 disables the
 *   per-uid limit, and with it that reserve);
 * - `maxConnsPerPid`: connections one process (pid + start time) may hold, so one runaway process
 *   does not use up its uid's share for the other workloads of that uid;
 * - `idleTimeoutSeconds`: a connection with no open stream for this long (including one that
 *   never opened any) is closed with an HTTP/2 GOAWAY (grpc-js `grpc.max_connection_idle_ms`,
 *   which fires between one and two timeouts after the last stream; the listener then closes the
 *   socket without waiting for the client's end).
 *   A connection holding a stream (a FetchX509SVID watch, an SDS stream) is never idle; gRPC
 *   clients reconnect transparently on their next call.
 *
 * The per-uid check runs right after SO_PEERCRED (one getsockopt), BEFORE the listener opens a
 * pidfd or reads /proc, so a refused connection costs one accept, one getsockopt and one close.
 * The per-process check needs the start time, so it runs after the pidfd is open (the listener
 * closes it again on refusal). A refused connection is closed without a gRPC status: the client
 * sees the connection end (UNAVAILABLE) and retries with backoff.
 *
 * Every limit: 0 disables it. Refusals are counted by scope (stats(), exported as
 * spindle_agent_workload_api_refused_total{api="socket",reason="connections",scope} by
 * agent/telemetry.ts).
 */

export interface ConnectionLimitSettings {
  /** Open connections over all callers. 0: no limit. */
  maxConnections: number;
  /** Open connections of all processes of one uid together; below maxConnections. 0: no limit (no reserve). */
  maxConnsPerUid: number;
  /** Open connections of one process (pid + start time). 0: no limit. */
  maxConnsPerPid: number;
  /** Seconds a connection may go without an open stream before it is closed. 0: never. */
  idleTimeoutSeconds: number;
}

/**
 * Real workloads hold few connections: an SDK client one, Envoy a handful, a process with many
 * independent clients some tens. A quarter of the global budget per uid leaves three quarters to
 * everyone else while one uid floods, and still lets several hundred workloads share a uid (root
 * on a host without user namespaces). An idle connection costs the agent a socket, an HTTP/2
 * session and a pidfd; two minutes without a stream is long for any client that still wants it.
 */
export const DEFAULT_CONNECTION_LIMITS: Readonly<ConnectionLimitSettings> = Object.freeze({
  maxConnections: 8192,
  maxConnsPerUid: 2048,
  maxConnsPerPid: 256,
  idleTimeoutSeconds: 120,
});

/** The config key of each setting (in messages and docs). */
export const CONNECTION_LIMIT_CONFIG_KEYS = {
  maxConnections: 'agent.workload_api_max_conns',
  maxConnsPerUid: 'agent.workload_api_max_conns_per_uid',
  maxConnsPerPid: 'agent.workload_api_max_conns_per_pid',
  idleTimeoutSeconds: 'agent.workload_api_idle_timeout',
} as const satisfies Record<keyof ConnectionLimitSettings, string>;

/** Which limit refused a connection (the `scope` label of the refusal metric). */
export type ConnectionScope = 'all' | 'uid' | 'process';

export interface ConnectionRefusal {
  scope: ConnectionScope;
  /** For the log: the limit, its value and its config key. */
  message: string;
}

export interface ConnectionLimitStats {
  /** Refused connections so far, by scope (only non-zero ones). */
  refused: Array<{ scope: ConnectionScope; count: number }>;
  /** Connections admitted and still open. */
  open: number;
}

/**
 * Checks `settings` for values that would defeat the limits; returns one message per problem
 * (empty when fine). The per-uid limit must leave room for other uids.
 */
export function connectionLimitProblems(s: Readonly<ConnectionLimitSettings>): string[] {
  const problems: string[] = [];
  for (const k of Object.keys(CONNECTION_LIMIT_CONFIG_KEYS) as Array<keyof ConnectionLimitSettings>) {
    if (!Number.isSafeInteger(s[k]) || s[k] < 0) problems.push(`${CONNECTION_LIMIT_CONFIG_KEYS[k]} must be a non-negative integer, got ${String(s[k])}`);
  }
  if (s.maxConnections > 0 && s.maxConnsPerUid >= s.maxConnections) {
    problems.push(
      `${CONNECTION_LIMIT_CONFIG_KEYS.maxConnsPerUid} (${s.maxConnsPerUid}) must be less than ${CONNECTION_LIMIT_CONFIG_KEYS.maxConnections} (${s.maxConnections}), ` +
        `so that one uid cannot take every connection; lower it (0 disables the per-uid limit and with it the reserve for other uids)`,
    );
  }
  return problems;
}

/** Counts open connections per uid and per process; admits or refuses new ones. */
export class ConnectionLimiter {
  readonly settings: Readonly<ConnectionLimitSettings>;
  readonly #perUid = new Map<number, number>();
  readonly #perProcess = new Map<string, number>();
  readonly #refused = new Map<ConnectionScope, number>();
  #open = 0;

  constructor(settings: Partial<ConnectionLimitSettings> = {}) {
    const s: ConnectionLimitSettings = { ...DEFAULT_CONNECTION_LIMITS };
    for (const [k, v] of Object.entries(settings) as Array<[keyof ConnectionLimitSettings, number | undefined]>) if (v !== undefined) s[k] = v;
    const problems = connectionLimitProblems(s);
    if (problems.length > 0) throw new TypeError(problems.join('; '));
    this.settings = Object.freeze(s);
  }

  /** Counts a connection the net.Server closed at accept because `maxConnections` were open. */
  countDropped(): void {
    this.#count('all');
  }

  #count(scope: ConnectionScope): void {
    this.#refused.set(scope, (this.#refused.get(scope) ?? 0) + 1);
  }

  /**
   * The cheap check, before any pidfd or /proc work: undefined when `uid` is below its limit,
   * else the refusal (counted).
   */
  checkUid(uid: number): ConnectionRefusal | undefined {
    const max = this.settings.maxConnsPerUid;
    if (max > 0 && (this.#perUid.get(uid) ?? 0) >= max) {
      this.#count('uid');
      return { scope: 'uid', message: `uid ${uid} already holds ${max} connections (${CONNECTION_LIMIT_CONFIG_KEYS.maxConnsPerUid})` };
    }
    return undefined;
  }

  /**
   * Takes a connection slot for `uid` and `processKey`: returns the release function (idempotent;
   * call it when the connection closes), or the refusal (counted) when either limit is reached.
   */
  acquire(uid: number, processKey: string): (() => void) | ConnectionRefusal {
    const early = this.checkUid(uid);
    if (early !== undefined) return early;
    const maxPid = this.settings.maxConnsPerPid;
    const n = this.#perProcess.get(processKey) ?? 0;
    if (maxPid > 0 && n >= maxPid) {
      this.#count('process');
      return { scope: 'process', message: `process ${processKey} (pid:start time) already holds ${maxPid} connections (${CONNECTION_LIMIT_CONFIG_KEYS.maxConnsPerPid})` };
    }
    this.#perProcess.set(processKey, n + 1);
    this.#perUid.set(uid, (this.#perUid.get(uid) ?? 0) + 1);
    this.#open++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      decrement(this.#perProcess, processKey);
      decrement(this.#perUid, uid);
    };
  }

  /** Refusals so far for one scope (tests, logs). */
  refusedCount(scope: ConnectionScope): number {
    return this.#refused.get(scope) ?? 0;
  }

  stats(): ConnectionLimitStats {
    return { refused: [...this.#refused].map(([scope, count]) => ({ scope, count })), open: this.#open };
  }

  /** Uids and processes with open connections (memory bounds in tests). */
  get tracked(): { uids: number; processes: number } {
    return { uids: this.#perUid.size, processes: this.#perProcess.size };
  }
}

function decrement<K>(m: Map<K, number>, k: K): void {
  const left = (m.get(k) ?? 1) - 1;
  if (left <= 0) m.delete(k);
  else m.set(k, left);
}

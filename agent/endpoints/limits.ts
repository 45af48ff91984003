/**
 * The per-process stream budget of the agent's socket: open streaming calls are counted per
 * caller pid (over all its connections). Per process rather than per uid: unrelated workloads
 * often share a uid (root, a service account), and one misbehaving process must not lock the
 * others out; connection floods are bounded separately (listener maxConnections).
 */
export const DEFAULT_MAX_STREAMS_PER_PID = 100;

/** Counts open streams per caller pid. */
export class StreamLimiter {
  readonly max: number;
  readonly #open = new Map<number, number>();
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) throw new TypeError('maxStreamsPerPid must be a positive integer');
    this.max = max;
  }
  /** Takes a slot for `pid`; returns its release function (idempotent), or undefined when the budget is spent. */
  acquire(pid: number): (() => void) | undefined {
    const n = this.#open.get(pid) ?? 0;
    if (n >= this.max) return undefined;
    this.#open.set(pid, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#open.get(pid) ?? 1) - 1;
      if (left <= 0) this.#open.delete(pid);
      else this.#open.set(pid, left);
    };
  }
  get size(): number {
    let total = 0;
    for (const n of this.#open.values()) total += n;
    return total;
  }
}

/**
 * The agent manager's retry delays: how soon the sync stream reconnects and how soon SVIDs that
 * could not be signed (or renewed) are tried again, and the doubling backoff both use.
 */

/** First delay before the sync stream reconnects (and the delay after any message arrives). */
export const RECONNECT_MIN_MS = 500;
/**
 * Upper bound of the reconnect backoff. Kept at SPIRE's poll interval: after an outage, entry
 * changes reach workloads at most this long after the server is back.
 */
export const RECONNECT_MAX_MS = 5_000;
/** How soon a failed renewal is tried again (and the default first retry for subscribers). */
export const RENEW_RETRY_MS = 5_000;
/** Longest wait between attempts to sign SVIDs a subscriber is missing. */
export const RETRY_MAX_MS = 300_000;

/** A delay that doubles on every `grow()` up to `max`, and starts over at `initial` on `reset()`. */
export class Backoff {
  #ms: number;
  constructor(
    private readonly initial: number,
    private readonly max: number,
  ) {
    this.#ms = initial;
  }

  /** The delay to wait now. */
  get ms(): number {
    return this.#ms;
  }

  /** The next delay doubles (up to the maximum). */
  grow(): void {
    this.#ms = Math.min(this.#ms * 2, this.max);
  }

  reset(): void {
    this.#ms = this.initial;
  }
}

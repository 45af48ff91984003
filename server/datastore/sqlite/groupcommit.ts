/**
 * SQLite: group commit of createEntries. Calls made in the same event-loop turn (concurrent
 * admin API calls) are queued and committed together in ONE transaction on the next turn
 * (setImmediate), each caller getting its own per-item results. Any other datastore call first
 * commits the queued calls (flush, wired to SqliteConnection.beforeOperation), so operations
 * still take effect in the order they were called. A failing transaction fails every queued
 * call (as it would have failed each alone: an IO error).
 */

interface Pending<I, R> {
  item: I;
  resolve(result: R): void;
  reject(err: unknown): void;
}

export class GroupCommit<I, R> {
  private pending: Array<Pending<I, R>> = [];
  private scheduled = false;

  /** `commit` runs the queued calls in one transaction and returns one result per call, in order. */
  constructor(private readonly commit: (items: I[]) => R[]) {}

  /** Queues one call; it is committed on the next turn or by the next flush, whichever is first. */
  enqueue(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits every queued call in one transaction (no-op when none is queued). */
  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    let results: R[];
    try {
      results = this.commit(batch.map((p) => p.item));
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i]!));
  }
}

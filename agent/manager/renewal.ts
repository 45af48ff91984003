/**
 * X509-SVID renewal for the agent manager: one timer for all SVIDs (the earliest renewal due,
 * or the earliest moment one stops being served), renewal at half-life, the current SVID served
 * until its replacement arrives, and one WARN per SVID that expires without being renewed.
 */
import type { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import type { CsrBatcher } from './csrbatcher.js';
import type { SelectorIndex } from './selectorindex.js';
import { iso, servedUntil, usable, type CachedSvid } from './svid.js';
import type { SyncClient } from './syncclient.js';
import type { ManagerLogger } from './types.js';

export interface RenewalHost {
  logger: ManagerLogger;
  now: () => Date;
  entries: SelectorIndex;
  svids: Map<string, CachedSvid>;
  signer: CsrBatcher;
  sync: SyncClient;
  stopped: () => boolean;
  /** An SVID stopped being served or was dropped: updates built before are stale. */
  changed: () => void;
  /** Pushes the current state to subscribers (after a renewal, or an SVID no longer served). */
  refresh: () => void;
}

export class Renewal {
  readonly #h: RenewalHost;
  #timer: NodeJS.Timeout | undefined;

  constructor(host: RenewalHost) {
    this.#h = host;
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
  }

  /** SVIDs whose half-life passed during an outage are due now (not when their retry timer fires). */
  catchUp(now: number): void {
    for (const s of this.#h.svids.values()) if (s.dueAt <= now && s.renewAt > now) s.renewAt = now;
  }

  /** Sets the one timer to the earliest renewal or end of serving of the held SVIDs. */
  schedule(): void {
    const h = this.#h;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (h.stopped()) return;
    let earliest = Infinity;
    for (const [id, s] of h.svids) {
      // Also wake when an SVID stops being served (its renewal failed until then): subscribers
      // must hear that it is gone, and an operator why.
      if (!s.expiryLogged) earliest = Math.min(earliest, servedUntil(s));
      if (!h.signer.busy(id)) earliest = Math.min(earliest, s.renewAt);
    }
    if (earliest === Infinity) return;
    const delay = Math.max(0, Math.min(earliest - h.now().getTime(), 2 ** 31 - 1));
    this.#timer = setTimeout(() => this.renewDue(), delay);
    this.#timer.unref();
  }

  /** Renews every SVID whose renewal time has come. */
  renewDue(): void {
    const h = this.#h;
    if (h.stopped()) return;
    const now = h.now().getTime();
    const due: Entry[] = [];
    let expired = false;
    for (const [id, s] of h.svids) {
      if (!s.expiryLogged && !usable(s, now)) {
        // Served no more: said once per SVID, and pushed to subscribers below.
        s.expiryLogged = true;
        expired = true;
        h.changed();
        const since = h.sync.unreachableSince ?? h.sync.lostAt;
        h.logger.warn(
          { spiffe_id: s.identity.spiffeId, entry_id: id, expires_at: iso(s.identity.notAfter.getTime()), ...(since !== undefined ? { server_unreachable_since: iso(since) } : {}) },
          since !== undefined ? 'X509-SVID expired without being renewed: the server is unreachable; retrying' : 'X509-SVID expired without being renewed; retrying',
        );
      }
      if (s.renewAt > now || h.signer.busy(id)) continue;
      const e = h.entries.get(id);
      if (e) due.push(e);
      else {
        h.svids.delete(id); // cannot happen: removing an entry drops its SVID
        h.changed();
      }
    }
    if (due.length === 0) {
      this.schedule();
      if (expired) h.refresh();
      return;
    }
    // The current SVIDs keep being served until their replacements arrive; those that fail are
    // retried RENEW_RETRY_MS later (see CsrBatcher).
    void h.signer.ensureSigned(due, true).then((errors) => {
      if (errors.length > 0) {
        h.logger.warn({ err: String((errors[0] as Error)?.message ?? errors[0]), failed: errors.length }, 'SVID renewal failed; keeping the current SVIDs and retrying');
      }
      h.refresh();
    });
  }
}

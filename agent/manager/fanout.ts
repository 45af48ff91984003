/**
 * What the agent manager serves workloads, and the push to subscribers: builds the update for a
 * set of matched entries (shared by every workload matching the same entries until anything
 * changes), says why an entitled workload has nothing servable, delivers changes to subscribers
 * in chunks (only when what they hold changed), and retries with backoff the signing of what
 * subscribers are missing.
 */
import type { Bundle } from '../../spiffe/bundle.js';
import type { TrustDomain } from '../../spiffe/id.js';
import type { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import { Backoff, RENEW_RETRY_MS, RETRY_MAX_MS } from './backoff.js';
import type { CsrBatcher } from './csrbatcher.js';
import { iso, servedUntil, usable, type CachedSvid } from './svid.js';
import type { SyncClient } from './syncclient.js';
import { NotReadyError, type ManagerLogger, type WorkloadUpdate, type X509Identity } from './types.js';

/** Subscribers pushed to before yielding to the event loop (so earlier pushes get written). */
const PUSH_CHUNK = 64;
/** Distinct shared updates kept between changes (one per distinct set of matched entries). */
const MAX_SHARED_UPDATES = 4096;

export interface FanOutHost {
  trustDomain: TrustDomain;
  logger: ManagerLogger;
  now: () => Date;
  /** First delay before trying again to sign what subscribers miss; default RENEW_RETRY_MS. */
  retryMs: number | undefined;
  svids: Map<string, CachedSvid>;
  bundles: () => Map<string, Bundle>;
  /** The entries a set of selector map keys matches (SelectorIndex.match). */
  match: (selectors: ReadonlySet<string>) => Entry[];
  signer: CsrBatcher;
  sync: SyncClient;
  stopped: () => boolean;
  /** Bumped on every change to entries, SVIDs or bundles: updates built before are stale. */
  generation: () => number;
}

/** One subscribed workload. */
export interface Sub {
  /** Its selectors (map keys). */
  selectors: Set<string>;
  listener: ((u: WorkloadUpdate) => void) | undefined;
  /** Fingerprint of the last update it got. */
  last: string | undefined;
  closed: boolean;
}

export class FanOut {
  readonly #h: FanOutHost;
  readonly #log: ManagerLogger;
  readonly #subs = new Set<Sub>();
  /**
   * Updates built at `#updatesGeneration`, by the IDs of the entries they were built from:
   * workloads that match the same entries share one update object (and the Workload API its
   * encoding), so a change pushed to many streams is built once, not once per stream.
   */
  readonly #updates = new Map<string, { update: WorkloadUpdate; validUntil: number }>();
  #updatesGeneration = -1;
  /** Retries signing for subscribers whose SVIDs could not all be signed (with backoff). */
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #retryBackoff: Backoff;

  constructor(host: FanOutHost) {
    this.#h = host;
    this.#log = host.logger;
    this.#retryBackoff = new Backoff(host.retryMs ?? RENEW_RETRY_MS, RETRY_MAX_MS);
  }

  /** Starts pushing to `sub` after it received `initial` (unless it closed meanwhile). */
  add(sub: Sub, initial: WorkloadUpdate, listener: (update: WorkloadUpdate) => void): void {
    sub.last = fingerprint(initial);
    sub.listener = listener;
    if (!sub.closed) this.#subs.add(sub);
  }

  remove(sub: Sub): void {
    sub.closed = true;
    this.#subs.delete(sub);
  }

  stop(): void {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    for (const s of this.#subs) s.closed = true;
    this.#subs.clear();
  }

  /** The server is back: the retry starts over (and is not waited for). */
  resetRetry(): void {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#retryBackoff.reset();
  }

  #update(entries: readonly Entry[]): WorkloadUpdate {
    const identities: X509Identity[] = [];
    const seenHints = new Set<string>();
    const now = this.#h.now().getTime();
    let missing: { entry: Entry; svid: CachedSvid | undefined } | undefined;
    for (const e of entries) {
      const s = this.#h.svids.get(e.id);
      // Never hand out an expired SVID, nor one about to expire before the workload reads it
      // (e.g. the server has been unreachable for too long).
      if (!s || !usable(s, now)) {
        missing ??= { entry: e, svid: s };
        continue;
      }
      if (s.identity.hint !== '') {
        if (seenHints.has(s.identity.hint)) continue;
        seenHints.add(s.identity.hint);
      }
      identities.push(s.identity);
    }
    const bundles = this.#h.bundles();
    const own = bundles.get(this.#h.trustDomain);
    if (!own) throw new NotReadyError('the agent has no trust bundle yet');
    const fed = new Set<string>();
    for (const i of identities) for (const td of i.federatesWith) if (td !== this.#h.trustDomain) fed.add(td);
    const federatedBundles = [...fed].sort().flatMap((td) => {
      const b = bundles.get(td);
      return b ? [b] : [];
    });
    const update: WorkloadUpdate = { identities, bundle: own, federatedBundles };
    if (identities.length === 0 && missing) update.unavailable = this.#unavailableReason(missing.entry, missing.svid);
    return update;
  }

  /** Why a workload matching `entry` has no SVID for it right now (sent to that workload). */
  #unavailableReason(entry: Entry, svid: CachedSvid | undefined): string {
    const since = this.#h.sync.unreachableSince;
    const what = svid ? `X509-SVID for ${entry.spiffeId} expired at ${iso(svid.identity.notAfter.getTime())}` : `no X509-SVID for ${entry.spiffeId} yet`;
    return since !== undefined ? `${what}; server unreachable since ${iso(since)}; retrying` : `${what}; signing it failed; retrying`;
  }

  /**
   * The update for these entries, shared: the same object for the same entries until anything
   * changes (or one of its SVIDs expires). Callers must not modify it.
   */
  updateFor(entries: readonly Entry[]): WorkloadUpdate {
    const generation = this.#h.generation();
    if (this.#updatesGeneration !== generation || this.#updates.size >= MAX_SHARED_UPDATES) {
      this.#updates.clear();
      this.#updatesGeneration = generation;
    }
    const key = entries.map((e) => e.id).join('\n');
    const now = this.#h.now().getTime();
    const cached = this.#updates.get(key);
    if (cached && now < cached.validUntil) return cached.update;
    const update = this.#update(entries);
    let validUntil = Infinity;
    for (const e of entries) {
      const s = this.#h.svids.get(e.id);
      if (s && update.identities.includes(s.identity)) validUntil = Math.min(validUntil, servedUntil(s));
    }
    // A reason names the outage's start: built afresh each time, never shared stale.
    if (update.unavailable !== undefined) validUntil = 0;
    this.#updates.set(key, { update, validUntil });
    return update;
  }

  /** Signs what subscribers miss and pushes every subscriber whose update changed. */
  refresh(): void {
    const h = this.#h;
    // Subscribers matching the same entries wait for one signing and share one update.
    const groups = new Map<string, { entries: Entry[]; subs: Sub[] }>();
    for (const sub of this.#subs) {
      const entries = h.match(sub.selectors);
      const key = entries.map((e) => e.id).join('\n');
      const g = groups.get(key);
      if (g) g.subs.push(sub);
      else groups.set(key, { entries, subs: [sub] });
    }
    for (const { entries, subs } of groups.values()) {
      void h.signer.ensureSigned(entries).then((errors) => {
        if (h.stopped()) return;
        if (errors.length > 0) {
          this.#log.warn({ err: String((errors[0] as Error)?.message ?? errors[0]), failed: errors.length, subscribers: subs.length, retry_ms: this.#retryBackoff.ms }, 'could not sign some SVIDs for subscribers');
          this.#scheduleRetry();
        } else if (!this.#retryTimer) {
          this.#retryBackoff.reset();
        }
        // Whatever could be signed goes out: a failing entry must not hold back removals and
        // rotations. Each subscriber is matched again against the state as it is NOW (entries
        // may have changed while signing); the update object is shared per match result.
        // Delivered PUSH_CHUNK subscribers at a time, yielding in between, so that what is
        // written already reaches the sockets while the rest is still being prepared (a
        // subscriber whose turn comes after a newer change gets that state, never an older one).
        const fingerprints = new Map<WorkloadUpdate, string>();
        const deliver = (from: number): void => {
          if (h.stopped()) return;
          const to = Math.min(subs.length, from + PUSH_CHUNK);
          for (let i = from; i < to; i++) {
            const sub = subs[i]!;
            if (sub.closed) continue;
            let u: WorkloadUpdate;
            try {
              u = this.updateFor(h.match(sub.selectors));
            } catch (err) {
              this.#log.warn({ err: (err as Error).message }, 'could not build an update for a subscriber');
              continue;
            }
            // Nothing servable only because a newer change's signing is under way: that change's
            // own refresh delivers (a workload is not told "unavailable" for a moment's wait).
            if (u.unavailable !== undefined && h.match(sub.selectors).some((e) => h.signer.busy(e.id))) continue;
            let fp = fingerprints.get(u);
            if (fp === undefined) fingerprints.set(u, (fp = fingerprint(u)));
            if (fp === sub.last) continue;
            sub.last = fp;
            try {
              sub.listener?.(u);
            } catch (err) {
              this.#log.error({ err }, 'a subscriber failed to handle an update');
            }
          }
          if (to < subs.length) setImmediate(deliver, to);
        };
        deliver(0);
      });
    }
  }

  /** Tries again (later, with backoff) to sign what subscribers are still missing. */
  #scheduleRetry(): void {
    if (this.#retryTimer || this.#h.stopped()) return;
    const delay = this.#retryBackoff.ms;
    this.#retryBackoff.grow();
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      const now = this.#h.now().getTime();
      const missing = [...this.#subs].some((sub) =>
        this.#h.match(sub.selectors).some((e) => {
          const s = this.#h.svids.get(e.id);
          return !s || !usable(s, now);
        }),
      );
      if (missing) this.refresh();
      else this.#retryBackoff.reset();
    }, delay);
    this.#retryTimer.unref();
  }
}

/** Identity of an update's content, to skip pushing what a subscriber already has. */
function fingerprint(u: WorkloadUpdate): string {
  const ids = u.identities.map((i) => `${i.entryId}/${i.spiffeId}/${i.hint}/${i.notAfter.getTime()}/${i.chain[0]!.length}/${i.chain[0]!.subarray(-16).toString('hex')}`);
  const bundles = [u.bundle, ...u.federatedBundles].map((b) => `${b.trustDomain}#${b.sequence}#${b.x509Authorities().length}`);
  return `${ids.join(',')}|${bundles.join(',')}`;
}

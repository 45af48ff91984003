/**
 * The agent's manager: the IdentityCache the Workload API and SDS serve from. It ties together
 * the parts that hold the server's push stream of authorized entries and bundles, make keys and
 * get SVIDs signed for the entries workloads use, renew them, cache JWT-SVIDs and push changes
 * to subscribers; and it decides which identities a caller gets (fetchX509, fetchJwt).
 *
 * - syncclient.ts: the SyncAuthorized stream (a snapshot, or after a reconnect the difference
 *   from what we hold, then every change as it commits); reconnects with backoff (backoff.ts).
 * - selectorindex.ts: the entries by selector; a caller gets only entries all of whose
 *   selectors it has.
 * - csrbatcher.ts: SVIDs are signed lazily, only for entries some connected workload matches,
 *   in batches (one BatchNewX509SVID call per burst), never twice at once; an SVID signed for an
 *   entry that changed or vanished meanwhile is dropped. A workload's first response waits for
 *   at most one batch round trip.
 * - renewal.ts: one timer renews at half the lifetime (with jitter); the current SVID is served
 *   until its replacement arrives, and never past a margin before its notAfter (svid.ts).
 * - fanout.ts: the updates served (shared between workloads matching the same entries) and the
 *   push to subscribers; an entry the server will not sign costs only that identity, and is
 *   retried with backoff.
 * - jwtcache.ts: JWT-SVIDs cached per entry and audience set until their half-life, bounded.
 * - Server unreachable: what is cached keeps being served until it expires.
 */
import { createHash } from 'node:crypto';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { Bundle, BundleSet, parseBundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import type { Entry, Bundle as ProtoBundle } from '../../proto/gen/spindle/types/v1/types.js';
import type { SyncAuthorizedResponse, NewJWTSVIDResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { selectorMapKey as selKey, type Selector } from '../../common/selector.js';
import { retryUnavailable, type AgentApiConnection } from '../client/serverclient.js';
import { CsrBatcher } from './csrbatcher.js';
import { FanOut, type Sub } from './fanout.js';
import { JWT_CACHE_MAX_PER_ENTRY, JWT_CACHE_MAX_TOTAL, JwtCache } from './jwtcache.js';
import { Renewal } from './renewal.js';
import { SelectorIndex } from './selectorindex.js';
import type { CachedSvid } from './svid.js';
import { SyncClient } from './syncclient.js';
import {
  IdentityUnavailableError,
  NotReadyError,
  type IdentityCache,
  type JwtIdentity,
  type ManagerLogger,
  type WorkloadSubscription,
  type WorkloadUpdate,
} from './types.js';

export { JWT_CACHE_MAX_PER_ENTRY, JWT_CACHE_MAX_TOTAL } from './jwtcache.js';
export { NotReadyError, type ManagerLogger } from './types.js';

export interface ManagerOptions {
  trustDomain: TrustDomain;
  /** Returns the current connection to the server (it changes when the agent SVID renews). */
  connection: () => AgentApiConnection;
  logger: ManagerLogger;
  now?: () => Date;
  /** Called when the server refuses the agent (banned, evicted, superseded SVID). */
  onRefused?: (err: ServiceError) => void;
  /** Turns a failed server call into the operator-facing text its log lines carry (agent/errors.ts); default the gRPC details. */
  describeError?: (err: ServiceError) => string;
  /** Max CSRs per BatchNewX509SVID call. */
  batchSize?: number;
  /**
   * Several servers (server_address): how often a signing call (X509-SVIDs, JWT-SVIDs) that
   * failed with UNAVAILABLE is made again, once the connection has moved to another server;
   * also makes the sync stream retry soon after it loses a server. Default 0: one server.
   */
  failoverRetries?: number;
  /** First delay before trying again to sign SVIDs that failed (doubles up to 5 min); default 5 s. */
  retryMs?: number;
  /** JWT-SVIDs cached per entry (distinct audience sets); default JWT_CACHE_MAX_PER_ENTRY. */
  jwtCacheMaxPerEntry?: number;
  /** JWT-SVIDs cached in all; default JWT_CACHE_MAX_TOTAL. */
  jwtCacheMaxTotal?: number;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class AgentManager implements IdentityCache {
  readonly trustDomain: TrustDomain;
  readonly #o: ManagerOptions;
  readonly #log: ManagerLogger;
  readonly #now: () => Date;
  readonly #entries = new SelectorIndex();
  readonly #svids = new Map<string, CachedSvid>();
  readonly #jwts: JwtCache;
  #bundles = new Map<string, Bundle>();
  readonly #bundleListeners = new Set<(b: BundleSet) => void>();
  readonly #sync: SyncClient;
  readonly #signer: CsrBatcher;
  readonly #renewal: Renewal;
  readonly #fanout: FanOut;
  #synced = false;
  #readyWaiters: Waiter[] = [];
  #revision = 0n;
  #stopped = false;
  /** Bumped on every change to entries, SVIDs or bundles: updates built before are stale. */
  #generation = 0;

  constructor(opts: ManagerOptions) {
    this.trustDomain = opts.trustDomain;
    this.#o = opts;
    this.#log = opts.logger;
    const now = (this.#now = opts.now ?? (() => new Date()));
    const stopped = (): boolean => this.#stopped;
    const changed = (): void => void this.#generation++;
    this.#jwts = new JwtCache({
      maxPerEntry: Math.max(1, opts.jwtCacheMaxPerEntry ?? JWT_CACHE_MAX_PER_ENTRY),
      maxTotal: Math.max(1, opts.jwtCacheMaxTotal ?? JWT_CACHE_MAX_TOTAL),
      now,
    });
    this.#sync = new SyncClient({
      connection: opts.connection,
      logger: opts.logger,
      now,
      request: () => {
        const known = [...this.#entries.values()].map((e) => ({ id: e.id, revisionNumber: e.revisionNumber }));
        const knownBundles = new Map([...this.#bundles.values()].map((b) => [b.trustDomain as string, b.sequence]));
        return {
          sinceRevision: this.#revision,
          knownEntries: this.#synced ? known : [],
          knownBundleSequences: this.#synced ? knownBundles : new Map(),
        };
      },
      apply: (msg) => this.#apply(msg),
      resumed: () => this.#resumeAfterOutage(),
      describeError: opts.describeError,
      alternatives: (opts.failoverRetries ?? 0) > 0,
      refused: (err) => {
        this.#o.onRefused?.(err);
        for (const w of this.#readyWaiters.splice(0)) w.reject(err);
      },
    });
    this.#signer = new CsrBatcher({
      connection: opts.connection,
      logger: opts.logger,
      now,
      batchSize: opts.batchSize,
      retryMs: opts.retryMs,
      failoverRetries: opts.failoverRetries ?? 0,
      entries: this.#entries,
      svids: this.#svids,
      sync: this.#sync,
      stopped,
      changed,
      settled: () => this.#renewal.schedule(),
    });
    this.#fanout = new FanOut({
      trustDomain: opts.trustDomain,
      logger: opts.logger,
      now,
      retryMs: opts.retryMs,
      svids: this.#svids,
      bundles: () => this.#bundles,
      match: (selectors) => this.#entries.match(selectors),
      signer: this.#signer,
      sync: this.#sync,
      stopped,
      generation: () => this.#generation,
    });
    this.#renewal = new Renewal({
      logger: opts.logger,
      now,
      entries: this.#entries,
      svids: this.#svids,
      signer: this.#signer,
      sync: this.#sync,
      stopped,
      changed,
      refresh: () => this.#fanout.refresh(),
    });
  }

  /** Opens the sync stream; resolves once the first message has been applied. */
  start(): Promise<void> {
    this.#sync.connect();
    return this.ready();
  }

  ready(): Promise<void> {
    if (this.#synced) return Promise.resolve();
    if (this.#stopped) return Promise.reject(new NotReadyError('the agent manager has stopped'));
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /** Re-opens the sync stream on a new connection (after the agent SVID renewed). */
  reconnect(): void {
    if (this.#stopped) return;
    this.#sync.reconnect();
  }

  stop(): void {
    this.#stopped = true;
    this.#sync.stop();
    this.#renewal.stop();
    this.#jwts.stop();
    this.#fanout.stop();
    const stopped = new NotReadyError('the agent manager has stopped');
    for (const w of this.#readyWaiters.splice(0)) w.reject(stopped);
    this.#signer.stop();
  }

  get entryCount(): number {
    return this.#entries.size;
  }

  /** Number of X509-SVIDs held (signed for entries some workload asked for). */
  get svidCount(): number {
    return this.#svids.size;
  }

  /** Number of JWT-SVIDs cached (over all entries and audience sets). */
  get jwtCacheSize(): number {
    return this.#jwts.size;
  }

  /** JWT-SVIDs evicted from the cache by its caps so far (not counting expired ones). */
  get jwtCacheEvictions(): number {
    return this.#jwts.evictions;
  }

  /** The server the sync stream is on (`host:port`), once it has delivered. */
  get server(): string | undefined {
    return this.#sync.server;
  }

  /** Server revision of the last applied sync message. */
  get revision(): bigint {
    return this.#revision;
  }

  // ---- what the sync stream brings

  #apply(msg: SyncAuthorizedResponse): void {
    this.#revision = msg.revision;
    const changed = new Set<string>();
    if (msg.snapshot) {
      const incoming = new Set(msg.entries.map((e) => e.id));
      for (const id of [...this.#entries.keys()]) if (!incoming.has(id)) changed.add(this.#removeEntry(id));
    }
    for (const e of msg.entries) {
      this.#upsertEntry(e);
      changed.add(e.id);
    }
    for (const id of msg.removedEntryIds) if (this.#entries.has(id)) changed.add(this.#removeEntry(id));
    let bundlesChanged = false;
    if (msg.bundlesIncluded) bundlesChanged = this.#setBundles(msg.bundles);
    if (!this.#synced) {
      this.#synced = true;
      for (const w of this.#readyWaiters.splice(0)) w.resolve();
      this.#log.info({ entries: this.#entries.size, revision: String(msg.revision), server: this.#sync.server }, 'synchronized with the server');
    }
    if (changed.size > 0 || bundlesChanged) this.#fanout.refresh();
  }

  #upsertEntry(e: Entry): void {
    this.#generation++;
    const old = this.#entries.upsert(e);
    const cached = this.#svids.get(e.id);
    // Identity-relevant change: the SVID must be re-signed.
    if (cached && (cached.revision !== e.revisionNumber || cached.identity.spiffeId !== e.spiffeId)) this.#svids.delete(e.id);
    // A resent, unchanged entry (snapshot) keeps its JWT-SVIDs.
    if (!old || old.revisionNumber !== e.revisionNumber || old.spiffeId !== e.spiffeId) this.#jwts.dropEntry(e.id);
  }

  #removeEntry(id: string): string {
    this.#generation++;
    this.#entries.remove(id);
    this.#svids.delete(id);
    this.#jwts.dropEntry(id);
    return id;
  }

  #setBundles(list: ProtoBundle[]): boolean {
    const next = new Map<string, Bundle>();
    for (const pb of list) {
      try {
        const td = parseTrustDomain(pb.trustDomain);
        next.set(td, parseBundle(td, pb.document));
      } catch (err) {
        this.#log.error({ err, trust_domain: pb.trustDomain }, 'ignoring an invalid bundle from the server');
      }
    }
    const own = next.get(this.trustDomain);
    if (!own || own.x509Authorities().length === 0) {
      this.#log.error({}, 'the server sent no usable bundle for our trust domain; keeping the previous one');
      return false;
    }
    const same = next.size === this.#bundles.size && [...next].every(([td, b]) => this.#bundles.get(td)?.equals(b));
    if (same) return false;
    this.#bundles = next;
    this.#generation++;
    const set = this.bundles();
    for (const l of this.#bundleListeners) l(set);
    return true;
  }

  /**
   * The server is back after an outage: renew at once whatever came due meanwhile (not when its
   * retry timer fires), and sign what subscribers are missing (their SVIDs expired, or were
   * never signed).
   */
  #resumeAfterOutage(): void {
    if (this.#stopped) return;
    this.#renewal.catchUp(this.#now().getTime());
    this.#fanout.resetRetry();
    this.renewDue();
    this.#fanout.refresh();
  }

  /** Renews every SVID whose renewal time has come (the timer calls this; tests may too). */
  renewDue(): void {
    this.#renewal.renewDue();
  }

  // ---- IdentityCache

  async fetchX509(selectors: readonly Selector[]): Promise<WorkloadUpdate> {
    await this.ready();
    const keys = new Set(selectors.map(selKey));
    const errors = await this.#signer.ensureSigned(this.#entries.match(keys));
    const u = this.#fanout.updateFor(this.#entries.match(keys));
    // Entitled to identities, none of them can be served now: a transient state, not a refusal.
    if (u.unavailable !== undefined) throw new IdentityUnavailableError(u.unavailable, { cause: errors[0] });
    if (errors.length > 0) {
      // One entry the server will not sign must not cost the workload its other identities.
      if (u.identities.length === 0) throw errors[0];
      this.#log.warn({ err: String((errors[0] as Error)?.message ?? errors[0]), failed: errors.length }, 'some SVIDs could not be signed; serving the others');
    }
    return u;
  }

  subscribe(selectors: readonly Selector[], listener: (update: WorkloadUpdate) => void): WorkloadSubscription {
    const sub: Sub = { selectors: new Set(selectors.map(selKey)), listener: undefined, last: undefined, closed: false };
    const initial = this.fetchX509(selectors).then((u) => {
      this.#fanout.add(sub, u, listener);
      return u;
    });
    return {
      initial,
      close: () => this.#fanout.remove(sub),
    };
  }

  async fetchJwt(selectors: readonly Selector[], audience: readonly string[], spiffeId?: SpiffeId): Promise<JwtIdentity[]> {
    await this.ready();
    let entries = this.#entries.match(new Set(selectors.map(selKey)));
    if (spiffeId !== undefined) entries = entries.filter((e) => e.spiffeId === spiffeId);
    const aud = [...new Set(audience)].sort();
    // JSON, not a joined string: audiences may contain any character.
    const audKey = createHash('sha256').update(JSON.stringify(aud)).digest('hex');
    const seenHints = new Set<string>();
    const wanted = entries.filter((e) => {
      if (e.hint === '') return true;
      if (seenHints.has(e.hint)) return false;
      seenHints.add(e.hint);
      return true;
    });
    // One round trip for all of them, not one after the other.
    return Promise.all(wanted.map((e) => this.#jwtFor(e, aud, audKey)));
  }

  async #jwtFor(e: Entry, aud: string[], audKey: string): Promise<JwtIdentity> {
    const cached = this.#jwts.get(e.id, audKey);
    if (cached) return cached;
    // A server that goes away under the call: made again once the channel has moved to another.
    const res = await retryUnavailable(
      () =>
        new Promise<NewJWTSVIDResponse>((resolve, reject) =>
          this.#o.connection().client.newJwtsvid({ entryId: e.id, audience: aud }, new Metadata(), { deadline: Date.now() + 15_000 }, (err, r) => (err ? reject(err) : resolve(r!))),
        ),
      this.#o.failoverRetries ?? 0,
    );
    const svid = res.svid!;
    const jwt: JwtIdentity = { spiffeId: parseSpiffeId(svid.spiffeId), token: svid.token, hint: e.hint, expiresAt: new Date(Number(svid.expiresAt) * 1000) };
    const issued = Number(svid.issuedAt) * 1000;
    // Cache only for the entry as it still is (not for one removed or changed meanwhile).
    const current = this.#entries.get(e.id);
    if (current && current.revisionNumber === e.revisionNumber && current.spiffeId === e.spiffeId && !this.#stopped) {
      this.#jwts.put(e.id, audKey, jwt, issued + (jwt.expiresAt.getTime() - issued) / 2);
    }
    return jwt;
  }

  bundles(): BundleSet {
    return new BundleSet(this.#bundles.values());
  }

  subscribeBundles(listener: (bundles: BundleSet) => void): () => void {
    this.#bundleListeners.add(listener);
    return () => this.#bundleListeners.delete(listener);
  }
}

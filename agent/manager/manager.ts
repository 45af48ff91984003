/**
 * The agent's manager: holds the server's push stream of authorized entries and bundles, makes
 * keys and gets SVIDs signed for the entries workloads use, renews them at half their lifetime
 * (with jitter), and is the IdentityCache the Workload API and SDS serve from.
 *
 * - Entries arrive on one SyncAuthorized stream: a snapshot (or, after a reconnect, the
 *   difference from what we hold) and then every change as it commits on the server.
 * - SVIDs are signed lazily: only for entries some connected workload matches, in batches
 *   (one BatchNewX509SVID call per burst), so thousands of entries cost nothing until used.
 *   A workload's first response waits for at most one batch round trip.
 * - An entry is never signed twice at once: requests for an entry already queued or in flight
 *   wait for that call. An SVID signed for an entry that changed or vanished meanwhile is
 *   dropped (and re-signed for the entry as it now is).
 * - One timer drives renewals (the earliest due SVID), not one timer per SVID; the current SVID
 *   is served until its replacement arrives.
 * - An entry the server will not sign costs only that identity: the others are still served,
 *   pushed and rotated, and the missing one is retried with backoff.
 * - Server unreachable: what is cached keeps being served until it expires; the stream
 *   reconnects with backoff.
 * - JWT-SVIDs are cached per entry and audience set until their half-life, bounded: at most
 *   `jwtCacheMaxPerEntry` audience sets per entry and `jwtCacheMaxTotal` tokens in all, the
 *   least recently used evicted first, tokens past their renewal time dropped (a workload asking
 *   for ever new audiences costs server calls, not agent memory).
 */
import { createHash, randomInt } from 'node:crypto';
import { Metadata, status as GrpcStatus, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { Bundle, BundleSet, parseBundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { createCsr } from '../../spiffe/x509/index.js';
import type { Entry, Bundle as ProtoBundle } from '../../proto/gen/spindle/types/v1/types.js';
import type { SyncAuthorizedResponse, BatchNewX509SVIDResponse, NewJWTSVIDResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { selectorMapKey as selKey, type Selector } from '../../common/selector.js';
import type { AgentApiConnection } from '../client/serverclient.js';
import { syncAuthorized } from '../client/serverclient.js';
import { IdentityUnavailableError, type IdentityCache, type JwtIdentity, type WorkloadSubscription, type WorkloadUpdate, type X509Identity } from './types.js';

export interface ManagerLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

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
  /** First delay before trying again to sign SVIDs that failed (doubles up to 5 min); default 5 s. */
  retryMs?: number;
  /** JWT-SVIDs cached per entry (distinct audience sets); default JWT_CACHE_MAX_PER_ENTRY. */
  jwtCacheMaxPerEntry?: number;
  /** JWT-SVIDs cached in all; default JWT_CACHE_MAX_TOTAL. */
  jwtCacheMaxTotal?: number;
}

/** Default cap of cached JWT-SVIDs per entry (one per distinct audience set). */
export const JWT_CACHE_MAX_PER_ENTRY = 100;
/** Default cap of cached JWT-SVIDs over all entries. */
export const JWT_CACHE_MAX_TOTAL = 10_000;
/** How often JWT-SVIDs past their renewal time are swept from the cache. */
const JWT_SWEEP_MS = 30_000;

interface CachedJwt {
  entryId: string;
  audKey: string;
  jwt: JwtIdentity;
  /** Half-life: from then on the token is not served from the cache (a fresh one is minted). */
  renewAt: number;
}

interface CachedSvid {
  identity: X509Identity;
  /** When to renew next (half-life with jitter; later after a failed attempt). */
  renewAt: number;
  /** The half-life renewal time itself (what is overdue once the server is back). */
  dueAt: number;
  /** Served only while now < notAfter - margin (so it cannot expire on its way to the workload). */
  marginMs: number;
  /** Its expiry without renewal has been logged. */
  expiryLogged: boolean;
  /** Entry revision the SVID was signed for. */
  revision: bigint;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface Sub {
  selectors: Set<string>;
  listener: ((u: WorkloadUpdate) => void) | undefined;
  last: string | undefined;
  closed: boolean;
}

const RECONNECT_MIN_MS = 500;
/**
 * Upper bound of the reconnect backoff. Kept at SPIRE's poll interval: after an outage, entry
 * changes reach workloads at most this long after the server is back.
 */
const RECONNECT_MAX_MS = 5_000;
/** How soon a failed renewal is tried again. */
const RENEW_RETRY_MS = 5_000;
/** Longest wait between attempts to sign SVIDs a subscriber is missing. */
const RETRY_MAX_MS = 300_000;
/** Subscribers pushed to before yielding to the event loop (so earlier pushes get written). */
const PUSH_CHUNK = 64;
/** Distinct shared updates kept between changes (one per distinct set of matched entries). */
const MAX_SHARED_UPDATES = 4096;
/**
 * An SVID is no longer served this long before its notAfter (at most a tenth of its lifetime):
 * an update is pushed, encoded and read after it is built, and must not arrive expired.
 */
const EXPIRY_MARGIN_MS = 1_000;
const iso = (ms: number): string => new Date(ms).toISOString();

export class NotReadyError extends Error {
  readonly code = 'ERR_AGENT_NOT_READY';
}

export class AgentManager implements IdentityCache {
  readonly trustDomain: TrustDomain;
  readonly #o: ManagerOptions;
  readonly #log: ManagerLogger;
  readonly #now: () => Date;
  readonly #entries = new Map<string, Entry>();
  readonly #bySelector = new Map<string, Set<string>>();
  readonly #svids = new Map<string, CachedSvid>();
  /** Entry ID -> audience set key -> cached JWT-SVID, least recently used first. */
  readonly #jwts = new Map<string, Map<string, CachedJwt>>();
  /** Every cached JWT-SVID by `${entryId}\n${audKey}`, least recently used first (the total cap). */
  readonly #jwtLru = new Map<string, CachedJwt>();
  readonly #jwtMaxPerEntry: number;
  readonly #jwtMaxTotal: number;
  #jwtEvictions = 0;
  #jwtSweepTimer: NodeJS.Timeout | undefined;
  #bundles = new Map<string, Bundle>();
  readonly #subs = new Set<Sub>();
  readonly #bundleListeners = new Set<(b: BundleSet) => void>();
  #stream: ClientReadableStream<SyncAuthorizedResponse> | undefined;
  #synced = false;
  #readyWaiters: Waiter[] = [];
  #revision = 0n;
  #backoff = RECONNECT_MIN_MS;
  /** When the sync stream was lost (undefined while connected), by the injected clock. */
  #lostAt: number | undefined;
  /** Since when the server cannot be reached (stream lost or a signing call failed in transport), by the injected clock. */
  #unreachableSince: number | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Entries waiting to be signed (not sent yet), with the promises of whoever waits for them. */
  #pending = new Map<string, Waiter[]>();
  /** Entries whose CSR is in a BatchNewX509SVID call now: later requests wait for that call. */
  #inflight = new Map<string, Waiter[]>();
  #flushScheduled = false;
  /** reconnect() cancelled the stream on purpose: reconnect at once rather than backing off. */
  #reconnectNow = false;
  /** Retries signing for subscribers whose SVIDs could not all be signed (with backoff). */
  #retryTimer: NodeJS.Timeout | undefined;
  #retryBackoff: number;
  /** Bumped on every change to entries, SVIDs or bundles: updates built before are stale. */
  #generation = 0;
  /**
   * Updates built at `#updatesGeneration`, by the IDs of the entries they were built from:
   * workloads that match the same entries share one update object (and the Workload API its
   * encoding), so a change pushed to many streams is built once, not once per stream.
   */
  readonly #updates = new Map<string, { update: WorkloadUpdate; validUntil: number }>();
  #updatesGeneration = -1;

  constructor(opts: ManagerOptions) {
    this.trustDomain = opts.trustDomain;
    this.#o = opts;
    this.#log = opts.logger;
    this.#now = opts.now ?? (() => new Date());
    this.#retryBackoff = opts.retryMs ?? RENEW_RETRY_MS;
    this.#jwtMaxPerEntry = Math.max(1, opts.jwtCacheMaxPerEntry ?? JWT_CACHE_MAX_PER_ENTRY);
    this.#jwtMaxTotal = Math.max(1, opts.jwtCacheMaxTotal ?? JWT_CACHE_MAX_TOTAL);
  }

  /** Opens the sync stream; resolves once the first message has been applied. */
  start(): Promise<void> {
    this.#connect();
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
    this.#backoff = RECONNECT_MIN_MS;
    if (this.#stream) {
      this.#reconnectNow = true;
      this.#stream.cancel();
    } else if (this.#reconnectTimer) {
      // Waiting out a backoff on the old connection: try the new one now.
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
      this.#connect();
    }
  }

  stop(): void {
    this.#stopped = true;
    this.#stream?.cancel();
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    if (this.#jwtSweepTimer) clearInterval(this.#jwtSweepTimer);
    this.#jwtSweepTimer = undefined;
    for (const s of this.#subs) s.closed = true;
    this.#subs.clear();
    const stopped = new NotReadyError('the agent manager has stopped');
    for (const w of this.#readyWaiters.splice(0)) w.reject(stopped);
    for (const list of this.#pending.values()) for (const w of list) w.reject(stopped);
    this.#pending.clear();
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
    return this.#jwtLru.size;
  }

  /** JWT-SVIDs evicted from the cache by its caps so far (not counting expired ones). */
  get jwtCacheEvictions(): number {
    return this.#jwtEvictions;
  }

  /** Server revision of the last applied sync message. */
  get revision(): bigint {
    return this.#revision;
  }

  // ---- sync stream

  #connect(): void {
    if (this.#stopped) return;
    const known = [...this.#entries.values()].map((e) => ({ id: e.id, revisionNumber: e.revisionNumber }));
    const knownBundles = new Map([...this.#bundles.values()].map((b) => [b.trustDomain as string, b.sequence]));
    const stream = syncAuthorized(this.#o.connection().client, {
      sinceRevision: this.#revision,
      knownEntries: this.#synced ? known : [],
      knownBundleSequences: this.#synced ? knownBundles : new Map(),
    });
    this.#stream = stream;
    stream.on('data', (msg: SyncAuthorizedResponse) => {
      const wasLost = this.#lostAt !== undefined || this.#unreachableSince !== undefined;
      if (this.#lostAt !== undefined) {
        this.#log.info({ after_ms: this.#now().getTime() - this.#lostAt, revision: String(msg.revision) }, 'reconnected to the server');
        this.#lostAt = undefined;
      }
      this.#unreachableSince = undefined;
      this.#backoff = RECONNECT_MIN_MS;
      try {
        this.#apply(msg);
      } catch (err) {
        this.#log.error({ err }, 'could not apply an update from the server');
      }
      if (wasLost) this.#resumeAfterOutage();
    });
    stream.on('error', (err: ServiceError) => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      if (this.#stopped) return;
      if (err.code === GrpcStatus.CANCELLED && this.#reconnectNow) {
        this.#reconnectNow = false;
        this.#scheduleReconnect(0);
        return;
      }
      if (err.code === GrpcStatus.PERMISSION_DENIED || err.code === GrpcStatus.UNAUTHENTICATED) {
        this.#log.error({ code: err.code, details: this.#o.describeError?.(err) ?? err.details }, 'the server refused this agent; serving cached identities until they expire');
        this.#o.onRefused?.(err);
        for (const w of this.#readyWaiters.splice(0)) w.reject(err);
      } else {
        this.#log.warn({ code: err.code, details: this.#o.describeError?.(err) ?? err.details, retry_ms: this.#backoff }, 'lost the server sync stream; serving cached identities and retrying');
      }
      this.#lostAt ??= this.#now().getTime();
      this.#unreachableSince ??= this.#lostAt;
      this.#scheduleReconnect(this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, RECONNECT_MAX_MS);
    });
    stream.on('end', () => {
      if (this.#stream === stream && !this.#stopped) {
        this.#log.warn({ retry_ms: this.#backoff }, 'the server closed the sync stream; reconnecting');
        this.#lostAt ??= this.#now().getTime();
        this.#unreachableSince ??= this.#lostAt;
        this.#stream = undefined;
        this.#scheduleReconnect(this.#backoff);
      }
    });
  }

  #scheduleReconnect(ms: number): void {
    if (this.#stopped || this.#reconnectTimer) return;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, ms);
    this.#reconnectTimer.unref();
  }

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
      this.#log.info({ entries: this.#entries.size, revision: String(msg.revision) }, 'synchronized with the server');
    }
    if (changed.size > 0 || bundlesChanged) this.#refreshSubscribers();
  }

  #unindex(e: Entry): void {
    for (const s of e.selectors) {
      const k = selKey(s);
      const set = this.#bySelector.get(k);
      // Drop emptied sets: selectors churn (pod UIDs...) and the index must not keep them all.
      if (set?.delete(e.id) && set.size === 0) this.#bySelector.delete(k);
    }
  }

  #upsertEntry(e: Entry): void {
    this.#generation++;
    const old = this.#entries.get(e.id);
    if (old) this.#unindex(old);
    this.#entries.set(e.id, e);
    for (const s of e.selectors) {
      const k = selKey(s);
      let set = this.#bySelector.get(k);
      if (!set) this.#bySelector.set(k, (set = new Set()));
      set.add(e.id);
    }
    const cached = this.#svids.get(e.id);
    // Identity-relevant change: the SVID must be re-signed.
    if (cached && (cached.revision !== e.revisionNumber || cached.identity.spiffeId !== e.spiffeId)) this.#svids.delete(e.id);
    // A resent, unchanged entry (snapshot) keeps its JWT-SVIDs.
    if (!old || old.revisionNumber !== e.revisionNumber || old.spiffeId !== e.spiffeId) this.#dropJwts(e.id);
  }

  #dropJwts(entryId: string): void {
    const perEntry = this.#jwts.get(entryId);
    if (!perEntry) return;
    for (const c of perEntry.values()) this.#jwtLru.delete(`${c.entryId}\n${c.audKey}`);
    this.#jwts.delete(entryId);
  }

  #deleteJwt(c: CachedJwt): void {
    this.#jwtLru.delete(`${c.entryId}\n${c.audKey}`);
    const perEntry = this.#jwts.get(c.entryId);
    if (perEntry?.delete(c.audKey) && perEntry.size === 0) this.#jwts.delete(c.entryId);
  }

  /** Drops every cached JWT-SVID past its renewal time (never served again). */
  #sweepJwts(): void {
    const now = this.#now().getTime();
    for (const c of [...this.#jwtLru.values()]) if (c.renewAt <= now) this.#deleteJwt(c);
    if (this.#jwtLru.size === 0 && this.#jwtSweepTimer) {
      clearInterval(this.#jwtSweepTimer);
      this.#jwtSweepTimer = undefined;
    }
  }

  /** Caches `c`, evicting within the caps: the entry's least recently used first, then the oldest overall. */
  #cacheJwt(c: CachedJwt): void {
    const old = this.#jwts.get(c.entryId)?.get(c.audKey);
    if (old) this.#deleteJwt(old);
    let perEntry = this.#jwts.get(c.entryId);
    if (perEntry) {
      const now = this.#now().getTime();
      for (const v of [...perEntry.values()]) if (v.renewAt <= now) this.#deleteJwt(v);
    }
    perEntry = this.#jwts.get(c.entryId);
    if (!perEntry) this.#jwts.set(c.entryId, (perEntry = new Map()));
    while (perEntry.size >= this.#jwtMaxPerEntry) {
      this.#deleteJwt(perEntry.values().next().value!);
      this.#jwtEvictions++;
      perEntry = this.#jwts.get(c.entryId) ?? perEntry;
    }
    if (this.#jwtLru.size >= this.#jwtMaxTotal) this.#sweepJwts();
    while (this.#jwtLru.size >= this.#jwtMaxTotal) {
      this.#deleteJwt(this.#jwtLru.values().next().value!);
      this.#jwtEvictions++;
    }
    perEntry = this.#jwts.get(c.entryId);
    if (!perEntry) this.#jwts.set(c.entryId, (perEntry = new Map()));
    perEntry.set(c.audKey, c);
    this.#jwtLru.set(`${c.entryId}\n${c.audKey}`, c);
    if (!this.#jwtSweepTimer && !this.#stopped) {
      this.#jwtSweepTimer = setInterval(() => this.#sweepJwts(), JWT_SWEEP_MS);
      this.#jwtSweepTimer.unref();
    }
  }

  #removeEntry(id: string): string {
    this.#generation++;
    const e = this.#entries.get(id);
    if (e) this.#unindex(e);
    this.#entries.delete(id);
    this.#svids.delete(id);
    this.#dropJwts(id);
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

  // ---- matching and signing

  /** Entries whose selectors are all among `selectors`, in a stable order. */
  #match(selectors: ReadonlySet<string>): Entry[] {
    const candidates = new Set<string>();
    for (const s of selectors) for (const id of this.#bySelector.get(s) ?? []) candidates.add(id);
    const out: Entry[] = [];
    for (const id of candidates) {
      const e = this.#entries.get(id)!;
      if (e.selectors.length > 0 && e.selectors.every((s) => selectors.has(selKey(s)))) out.push(e);
    }
    // Deterministic default identity: oldest entry first, then by ID.
    out.sort((a, b) => (a.createdAt === b.createdAt ? (a.id < b.id ? -1 : 1) : a.createdAt < b.createdAt ? -1 : 1));
    return out;
  }

  /**
   * Gets SVIDs signed for these entries (those without one, or all of them with `renew`),
   * joining a batch already queued or in flight for the same entry. Resolves, once every
   * entry has been dealt with, with the errors of those that could not be signed.
   */
  #ensureSigned(entries: readonly Entry[], renew = false): Promise<unknown[]> {
    const waits: Promise<void>[] = [];
    const now = this.#now().getTime();
    for (const e of entries) {
      // A held SVID is served while its renewal is under way; one past its serving time is
      // as good as missing (it is signed again now, not when its renewal retry comes).
      const held = this.#svids.get(e.id);
      if (!renew && held && usable(held, now)) continue;
      const joined = this.#inflight.get(e.id) ?? this.#pending.get(e.id);
      waits.push(
        new Promise((resolve, reject) => {
          if (joined) joined.push({ resolve, reject });
          else this.#pending.set(e.id, [{ resolve, reject }]);
        }),
      );
    }
    if (this.#pending.size > 0) this.#scheduleFlush();
    return Promise.allSettled(waits).then((rs) => rs.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])));
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    if (this.#stopped) {
      const stopped = new NotReadyError('the agent manager has stopped');
      for (const list of this.#pending.values()) for (const w of list) w.reject(stopped);
      this.#pending.clear();
      return;
    }
    const batchSize = this.#o.batchSize ?? 500;
    const ids = [...this.#pending.keys()].slice(0, batchSize);
    if (ids.length === 0) return;
    for (const id of ids) {
      this.#inflight.set(id, this.#pending.get(id)!);
      this.#pending.delete(id);
    }
    if (this.#pending.size > 0) this.#scheduleFlush();
    /** Ends the wait for one entry: its SVID is stored (or it cannot be, `err`). */
    const settle = (id: string, err?: unknown): void => {
      const w = this.#inflight.get(id) ?? [];
      this.#inflight.delete(id);
      const held = this.#svids.get(id);
      // A failed renewal: keep the current SVID and try again soon (not in a tight loop).
      if (err && held) held.renewAt = Math.max(held.renewAt, this.#now().getTime() + (this.#o.retryMs ?? RENEW_RETRY_MS));
      for (const x of w) (err ? x.reject(err) : x.resolve());
    };
    /** The entry changed while it was being signed: sign its current version for the same waiters. */
    const requeue = (id: string): void => {
      const w = this.#inflight.get(id) ?? [];
      this.#inflight.delete(id);
      const list = this.#pending.get(id);
      if (list) list.push(...w);
      else this.#pending.set(id, w);
      this.#scheduleFlush();
    };
    let todo: Array<{ entry: Entry; keys: Awaited<ReturnType<typeof generateKeyPair>>; csr: Buffer }> = [];
    try {
      const work = await Promise.all(
        ids.map(async (id) => {
          const entry = this.#entries.get(id);
          if (!entry) return undefined;
          const keys = await generateKeyPair('ec-p256');
          return { entry, keys, csr: createCsr(keys.privateKey) };
        }),
      );
      todo = work.filter((w): w is NonNullable<typeof w> => w !== undefined);
      // Removed before we got to it: nothing to sign, nothing to wait for.
      for (const id of ids) if (!todo.some((t) => t.entry.id === id)) settle(id);
      if (todo.length === 0) return;
      const res = await new Promise<BatchNewX509SVIDResponse>((resolve, reject) =>
        this.#o.connection().client.batchNewX509Svid(
          { params: todo.map((t) => ({ entryId: t.entry.id, csr: t.csr })) },
          new Metadata(),
          { deadline: Date.now() + 30_000 },
          (err, r) => (err ? reject(err) : resolve(r!)),
        ),
      );
      const now = this.#now().getTime();
      if (this.#stream !== undefined && this.#lostAt === undefined) this.#unreachableSince = undefined;
      else if (this.#stream === undefined && this.#reconnectTimer) {
        // The server answers again while the sync stream waits out its backoff: reconnect now.
        clearTimeout(this.#reconnectTimer);
        this.#reconnectTimer = undefined;
        this.#backoff = RECONNECT_MIN_MS;
        this.#connect();
      }
      todo.forEach((t, i) => {
        const r = res.results[i];
        const current = this.#entries.get(t.entry.id);
        if (!current) {
          // Removed while it was being signed: do not keep an SVID for it.
          settle(t.entry.id);
          return;
        }
        if (current.revisionNumber !== t.entry.revisionNumber || current.spiffeId !== t.entry.spiffeId) {
          // Changed while it was being signed (new SPIFFE ID, DNS names, TTL...): that SVID is stale.
          requeue(t.entry.id);
          return;
        }
        if (!r?.svid || (r.status && r.status.code !== 0)) {
          settle(t.entry.id, new Error(`server refused to sign ${t.entry.spiffeId}: ${r?.status?.message ?? 'no result'}`));
          return;
        }
        const notAfter = new Date(Number(r.svid.expiresAt) * 1000);
        const life = notAfter.getTime() - now;
        // Renew at half the remaining life, minus up to 10% jitter so a fleet does not stampede.
        const renewAt = now + life / 2 - randomInt(0, Math.max(1, Math.floor(life / 10)));
        this.#generation++;
        this.#svids.set(t.entry.id, {
          revision: t.entry.revisionNumber,
          renewAt,
          dueAt: renewAt,
          marginMs: Math.min(EXPIRY_MARGIN_MS, Math.max(0, life / 10)),
          expiryLogged: false,
          identity: {
            entryId: t.entry.id,
            spiffeId: parseSpiffeId(r.svid.spiffeId),
            hint: t.entry.hint,
            chain: r.svid.certChain,
            privateKey: t.keys.privateKey,
            privateKeyPkcs8: exportPrivateKeyPkcs8(t.keys.privateKey),
            notAfter,
            federatesWith: t.entry.federatesWith.map((td) => parseTrustDomain(td)),
          },
        });
        settle(t.entry.id);
      });
      this.#log.debug({ count: todo.length }, 'X509-SVIDs signed');
    } catch (err) {
      const code = (err as Partial<ServiceError>).code;
      if (code === GrpcStatus.UNAVAILABLE || code === GrpcStatus.DEADLINE_EXCEEDED) this.#unreachableSince ??= this.#now().getTime();
      this.#log.warn({ err: (err as Error).message, count: ids.length }, 'signing X509-SVIDs failed');
      for (const id of ids) if (this.#inflight.has(id)) settle(id, err);
    } finally {
      this.#scheduleRenewal();
    }
  }

  #scheduleRenewal(): void {
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    this.#renewTimer = undefined;
    if (this.#stopped) return;
    let earliest = Infinity;
    for (const [id, s] of this.#svids) {
      // Also wake when an SVID stops being served (its renewal failed until then): subscribers
      // must hear that it is gone, and an operator why.
      if (!s.expiryLogged) earliest = Math.min(earliest, servedUntil(s));
      if (!this.#inflight.has(id) && !this.#pending.has(id)) earliest = Math.min(earliest, s.renewAt);
    }
    if (earliest === Infinity) return;
    const delay = Math.max(0, Math.min(earliest - this.#now().getTime(), 2 ** 31 - 1));
    this.#renewTimer = setTimeout(() => this.renewDue(), delay);
    this.#renewTimer.unref();
  }

  /** Renews every SVID whose renewal time has come (the timer calls this; tests may too). */
  renewDue(): void {
    if (this.#stopped) return;
    const now = this.#now().getTime();
    const due: Entry[] = [];
    let expired = false;
    for (const [id, s] of this.#svids) {
      if (!s.expiryLogged && !usable(s, now)) {
        // Served no more: said once per SVID, and pushed to subscribers below.
        s.expiryLogged = true;
        expired = true;
        this.#generation++;
        const since = this.#unreachableSince ?? this.#lostAt;
        this.#log.warn(
          { spiffe_id: s.identity.spiffeId, entry_id: id, expires_at: iso(s.identity.notAfter.getTime()), ...(since !== undefined ? { server_unreachable_since: iso(since) } : {}) },
          since !== undefined ? 'X509-SVID expired without being renewed: the server is unreachable; retrying' : 'X509-SVID expired without being renewed; retrying',
        );
      }
      if (s.renewAt > now || this.#inflight.has(id) || this.#pending.has(id)) continue;
      const e = this.#entries.get(id);
      if (e) due.push(e);
      else {
        this.#svids.delete(id); // cannot happen: removing an entry drops its SVID
        this.#generation++;
      }
    }
    if (due.length === 0) {
      this.#scheduleRenewal();
      if (expired) this.#refreshSubscribers();
      return;
    }
    // The current SVIDs keep being served until their replacements arrive; those that fail are
    // retried RENEW_RETRY_MS later (see #flush).
    void this.#ensureSigned(due, true).then((errors) => {
      if (errors.length > 0) {
        this.#log.warn({ err: String((errors[0] as Error)?.message ?? errors[0]), failed: errors.length }, 'SVID renewal failed; keeping the current SVIDs and retrying');
      }
      this.#refreshSubscribers();
    });
  }

  // ---- IdentityCache

  #update(entries: readonly Entry[]): WorkloadUpdate {
    const identities: X509Identity[] = [];
    const seenHints = new Set<string>();
    const now = this.#now().getTime();
    let missing: { entry: Entry; svid: CachedSvid | undefined } | undefined;
    for (const e of entries) {
      const s = this.#svids.get(e.id);
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
    const own = this.#bundles.get(this.trustDomain);
    if (!own) throw new NotReadyError('the agent has no trust bundle yet');
    const fed = new Set<string>();
    for (const i of identities) for (const td of i.federatesWith) if (td !== this.trustDomain) fed.add(td);
    const federatedBundles = [...fed].sort().flatMap((td) => {
      const b = this.#bundles.get(td);
      return b ? [b] : [];
    });
    const update: WorkloadUpdate = { identities, bundle: own, federatedBundles };
    if (identities.length === 0 && missing) update.unavailable = this.#unavailableReason(missing.entry, missing.svid);
    return update;
  }

  /** Why a workload matching `entry` has no SVID for it right now (sent to that workload). */
  #unavailableReason(entry: Entry, svid: CachedSvid | undefined): string {
    const since = this.#unreachableSince;
    const what = svid ? `X509-SVID for ${entry.spiffeId} expired at ${iso(svid.identity.notAfter.getTime())}` : `no X509-SVID for ${entry.spiffeId} yet`;
    return since !== undefined ? `${what}; server unreachable since ${iso(since)}; retrying` : `${what}; signing it failed; retrying`;
  }

  /**
   * `#update(entries)`, shared: the same object for the same entries until anything changes (or
   * one of its SVIDs expires). Callers must not modify it.
   */
  #updateFor(entries: readonly Entry[]): WorkloadUpdate {
    if (this.#updatesGeneration !== this.#generation || this.#updates.size >= MAX_SHARED_UPDATES) {
      this.#updates.clear();
      this.#updatesGeneration = this.#generation;
    }
    const key = entries.map((e) => e.id).join('\n');
    const now = this.#now().getTime();
    const cached = this.#updates.get(key);
    if (cached && now < cached.validUntil) return cached.update;
    const update = this.#update(entries);
    let validUntil = Infinity;
    for (const e of entries) {
      const s = this.#svids.get(e.id);
      if (s && update.identities.includes(s.identity)) validUntil = Math.min(validUntil, servedUntil(s));
    }
    // A reason names the outage's start: built afresh each time, never shared stale.
    if (update.unavailable !== undefined) validUntil = 0;
    this.#updates.set(key, { update, validUntil });
    return update;
  }

  async fetchX509(selectors: readonly Selector[]): Promise<WorkloadUpdate> {
    await this.ready();
    const keys = new Set(selectors.map(selKey));
    const errors = await this.#ensureSigned(this.#match(keys));
    const u = this.#updateFor(this.#match(keys));
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
      sub.last = fingerprint(u);
      sub.listener = listener;
      if (!sub.closed) this.#subs.add(sub);
      return u;
    });
    return {
      initial,
      close: () => {
        sub.closed = true;
        this.#subs.delete(sub);
      },
    };
  }

  #refreshSubscribers(): void {
    // Subscribers matching the same entries wait for one signing and share one update.
    const groups = new Map<string, { entries: Entry[]; subs: Sub[] }>();
    for (const sub of this.#subs) {
      const entries = this.#match(sub.selectors);
      const key = entries.map((e) => e.id).join('\n');
      const g = groups.get(key);
      if (g) g.subs.push(sub);
      else groups.set(key, { entries, subs: [sub] });
    }
    for (const { entries, subs } of groups.values()) {
      void this.#ensureSigned(entries).then((errors) => {
        if (this.#stopped) return;
        if (errors.length > 0) {
          this.#log.warn({ err: String((errors[0] as Error)?.message ?? errors[0]), failed: errors.length, subscribers: subs.length, retry_ms: this.#retryBackoff }, 'could not sign some SVIDs for subscribers');
          this.#scheduleRetry();
        } else if (!this.#retryTimer) {
          this.#retryBackoff = this.#o.retryMs ?? RENEW_RETRY_MS;
        }
        // Whatever could be signed goes out: a failing entry must not hold back removals and
        // rotations. Each subscriber is matched again against the state as it is NOW (entries
        // may have changed while signing); the update object is shared per match result.
        // Delivered PUSH_CHUNK subscribers at a time, yielding in between, so that what is
        // written already reaches the sockets while the rest is still being prepared (a
        // subscriber whose turn comes after a newer change gets that state, never an older one).
        const fingerprints = new Map<WorkloadUpdate, string>();
        const deliver = (from: number): void => {
          if (this.#stopped) return;
          const to = Math.min(subs.length, from + PUSH_CHUNK);
          for (let i = from; i < to; i++) {
            const sub = subs[i]!;
            if (sub.closed) continue;
            let u: WorkloadUpdate;
            try {
              u = this.#updateFor(this.#match(sub.selectors));
            } catch (err) {
              this.#log.warn({ err: (err as Error).message }, 'could not build an update for a subscriber');
              continue;
            }
            // Nothing servable only because a newer change's signing is under way: that change's
            // own refresh delivers (a workload is not told "unavailable" for a moment's wait).
            if (u.unavailable !== undefined && this.#match(sub.selectors).some((e) => this.#pending.has(e.id) || this.#inflight.has(e.id))) continue;
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

  /**
   * The server is back after an outage: renew at once whatever came due meanwhile (not when its
   * retry timer fires), and sign what subscribers are missing (their SVIDs expired, or were
   * never signed).
   */
  #resumeAfterOutage(): void {
    if (this.#stopped) return;
    const now = this.#now().getTime();
    for (const s of this.#svids.values()) if (s.dueAt <= now && s.renewAt > now) s.renewAt = now;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#retryBackoff = this.#o.retryMs ?? RENEW_RETRY_MS;
    this.renewDue();
    this.#refreshSubscribers();
  }

  /** Tries again (later, with backoff) to sign what subscribers are still missing. */
  #scheduleRetry(): void {
    if (this.#retryTimer || this.#stopped) return;
    const delay = this.#retryBackoff;
    this.#retryBackoff = Math.min(this.#retryBackoff * 2, RETRY_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      const now = this.#now().getTime();
      const missing = [...this.#subs].some((sub) =>
        this.#match(sub.selectors).some((e) => {
          const s = this.#svids.get(e.id);
          return !s || !usable(s, now);
        }),
      );
      if (missing) this.#refreshSubscribers();
      else this.#retryBackoff = this.#o.retryMs ?? RENEW_RETRY_MS;
    }, delay);
    this.#retryTimer.unref();
  }

  async fetchJwt(selectors: readonly Selector[], audience: readonly string[], spiffeId?: SpiffeId): Promise<JwtIdentity[]> {
    await this.ready();
    let entries = this.#match(new Set(selectors.map(selKey)));
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
    const cached = this.#jwts.get(e.id)?.get(audKey);
    if (cached) {
      if (cached.renewAt > this.#now().getTime()) {
        // Most recently used now: to the end of both orders.
        this.#jwts.get(e.id)!.delete(audKey);
        this.#jwts.get(e.id)!.set(audKey, cached);
        const k = `${e.id}\n${audKey}`;
        this.#jwtLru.delete(k);
        this.#jwtLru.set(k, cached);
        return cached.jwt;
      }
      this.#deleteJwt(cached);
    }
    const res = await new Promise<NewJWTSVIDResponse>((resolve, reject) =>
      this.#o.connection().client.newJwtsvid({ entryId: e.id, audience: aud }, new Metadata(), { deadline: Date.now() + 15_000 }, (err, r) => (err ? reject(err) : resolve(r!))),
    );
    const svid = res.svid!;
    const jwt: JwtIdentity = { spiffeId: parseSpiffeId(svid.spiffeId), token: svid.token, hint: e.hint, expiresAt: new Date(Number(svid.expiresAt) * 1000) };
    const issued = Number(svid.issuedAt) * 1000;
    // Cache only for the entry as it still is (not for one removed or changed meanwhile).
    const current = this.#entries.get(e.id);
    if (current && current.revisionNumber === e.revisionNumber && current.spiffeId === e.spiffeId && !this.#stopped) {
      this.#cacheJwt({ entryId: e.id, audKey, jwt, renewAt: issued + (jwt.expiresAt.getTime() - issued) / 2 });
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

/** The last moment an SVID is served (a margin before its notAfter). */
function servedUntil(s: CachedSvid): number {
  return s.identity.notAfter.getTime() - s.marginMs;
}

function usable(s: CachedSvid, now: number): boolean {
  return now < servedUntil(s);
}

/** Identity of an update's content, to skip pushing what a subscriber already has. */
function fingerprint(u: WorkloadUpdate): string {
  const ids = u.identities.map((i) => `${i.entryId}/${i.spiffeId}/${i.hint}/${i.notAfter.getTime()}/${i.chain[0]!.length}/${i.chain[0]!.subarray(-16).toString('hex')}`);
  const bundles = [u.bundle, ...u.federatedBundles].map((b) => `${b.trustDomain}#${b.sequence}#${b.x509Authorities().length}`);
  return `${ids.join(',')}|${bundles.join(',')}`;
}

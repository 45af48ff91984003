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
 * - One timer drives renewals (the earliest due SVID), not one timer per SVID.
 * - Server unreachable: what is cached keeps being served; the stream reconnects with backoff.
 */
import { createHash, randomInt } from 'node:crypto';
import { Metadata, status as GrpcStatus, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { Bundle, BundleSet, parseBundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { createCsr } from '../../spiffe/x509/index.js';
import type { Entry, Bundle as ProtoBundle } from '../../proto/gen/spindle/types/v1/types.js';
import type { SyncAuthorizedResponse, BatchNewX509SVIDResponse, NewJWTSVIDResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import type { Selector } from '../../server/datastore/types.js';
import type { AgentApiConnection } from '../client/serverclient.js';
import { syncAuthorized } from '../client/serverclient.js';
import type { IdentityCache, JwtIdentity, WorkloadSubscription, WorkloadUpdate, X509Identity } from './types.js';

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
  /** Max CSRs per BatchNewX509SVID call. */
  batchSize?: number;
}

interface CachedSvid {
  identity: X509Identity;
  /** When to renew (half-life with jitter). */
  renewAt: number;
  /** Entry revision the SVID was signed for. */
  revision: bigint;
}

interface Sub {
  selectors: Set<string>;
  listener: ((u: WorkloadUpdate) => void) | undefined;
  last: string | undefined;
  closed: boolean;
}

const selKey = (s: Selector): string => `${s.type}:${s.value}`;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;

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
  readonly #jwts = new Map<string, { jwt: JwtIdentity; renewAt: number }>();
  #bundles = new Map<string, Bundle>();
  readonly #subs = new Set<Sub>();
  readonly #bundleListeners = new Set<(b: BundleSet) => void>();
  #stream: ClientReadableStream<SyncAuthorizedResponse> | undefined;
  #synced = false;
  #readyWaiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  #revision = 0n;
  #backoff = RECONNECT_MIN_MS;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Entries waiting to be signed, with the promises of whoever waits for them. */
  #pending = new Map<string, Array<{ resolve: () => void; reject: (e: unknown) => void }>>();
  #flushScheduled = false;

  constructor(opts: ManagerOptions) {
    this.trustDomain = opts.trustDomain;
    this.#o = opts;
    this.#log = opts.logger;
    this.#now = opts.now ?? (() => new Date());
  }

  /** Opens the sync stream; resolves once the first message has been applied. */
  start(): Promise<void> {
    this.#connect();
    return this.ready();
  }

  ready(): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /** Re-opens the sync stream on a new connection (after the agent SVID renewed). */
  reconnect(): void {
    this.#stream?.cancel();
  }

  stop(): void {
    this.#stopped = true;
    this.#stream?.cancel();
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    for (const s of this.#subs) s.closed = true;
    this.#subs.clear();
  }

  get entryCount(): number {
    return this.#entries.size;
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
      this.#backoff = RECONNECT_MIN_MS;
      try {
        this.#apply(msg);
      } catch (err) {
        this.#log.error({ err }, 'could not apply an update from the server');
      }
    });
    stream.on('error', (err: ServiceError) => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      if (this.#stopped || err.code === GrpcStatus.CANCELLED) {
        if (!this.#stopped) this.#scheduleReconnect(0);
        return;
      }
      if (err.code === GrpcStatus.PERMISSION_DENIED || err.code === GrpcStatus.UNAUTHENTICATED) {
        this.#log.error({ code: err.code, details: err.details }, 'the server refused this agent; serving cached identities until they expire');
        this.#o.onRefused?.(err);
        for (const w of this.#readyWaiters.splice(0)) w.reject(err);
      } else {
        this.#log.warn({ code: err.code, details: err.details, retry_ms: this.#backoff }, 'lost the server sync stream; serving cached identities and retrying');
      }
      this.#scheduleReconnect(this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, RECONNECT_MAX_MS);
    });
    stream.on('end', () => {
      if (this.#stream === stream && !this.#stopped) {
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

  #upsertEntry(e: Entry): void {
    const old = this.#entries.get(e.id);
    if (old) for (const s of old.selectors) this.#bySelector.get(selKey(s))?.delete(e.id);
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
    for (const k of [...this.#jwts.keys()]) if (k.startsWith(`${e.id}\n`)) this.#jwts.delete(k);
  }

  #removeEntry(id: string): string {
    const e = this.#entries.get(id);
    if (e) for (const s of e.selectors) this.#bySelector.get(selKey(s))?.delete(id);
    this.#entries.delete(id);
    this.#svids.delete(id);
    for (const k of [...this.#jwts.keys()]) if (k.startsWith(`${id}\n`)) this.#jwts.delete(k);
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

  #ensureSigned(entries: readonly Entry[]): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const e of entries) {
      if (this.#svids.has(e.id)) continue;
      waits.push(
        new Promise((resolve, reject) => {
          let list = this.#pending.get(e.id);
          if (!list) this.#pending.set(e.id, (list = []));
          list.push({ resolve, reject });
        }),
      );
    }
    if (waits.length > 0) this.#scheduleFlush();
    return Promise.all(waits).then(() => undefined);
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
    const batchSize = this.#o.batchSize ?? 500;
    const ids = [...this.#pending.keys()].slice(0, batchSize);
    if (ids.length === 0) return;
    const waiters = ids.map((id) => [id, this.#pending.get(id)!] as const);
    for (const id of ids) this.#pending.delete(id);
    if (this.#pending.size > 0) this.#scheduleFlush();
    const settle = (id: string, err?: unknown): void => {
      const w = waiters.find(([i]) => i === id)?.[1] ?? [];
      for (const x of w) (err ? x.reject(err) : x.resolve());
    };
    try {
      const work = await Promise.all(
        ids.map(async (id) => {
          const entry = this.#entries.get(id);
          if (!entry) return undefined;
          const keys = await generateKeyPair('ec-p256');
          return { entry, keys, csr: createCsr(keys.privateKey) };
        }),
      );
      const todo = work.filter((w): w is NonNullable<typeof w> => w !== undefined);
      for (const id of ids) if (!todo.some((t) => t.entry.id === id)) settle(id, new NotReadyError(`entry ${id} was removed`));
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
      todo.forEach((t, i) => {
        const r = res.results[i];
        if (!r?.svid || (r.status && r.status.code !== 0)) {
          settle(t.entry.id, new Error(`server refused to sign ${t.entry.spiffeId}: ${r?.status?.message ?? 'no result'}`));
          return;
        }
        const notAfter = new Date(Number(r.svid.expiresAt) * 1000);
        const life = notAfter.getTime() - now;
        // Renew at half the remaining life, minus up to 10% jitter so a fleet does not stampede.
        const renewAt = now + life / 2 - randomInt(0, Math.max(1, Math.floor(life / 10)));
        this.#svids.set(t.entry.id, {
          revision: t.entry.revisionNumber,
          renewAt,
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
      this.#scheduleRenewal();
    } catch (err) {
      this.#log.warn({ err: (err as Error).message, count: ids.length }, 'signing X509-SVIDs failed');
      for (const id of ids) settle(id, err);
    }
  }

  #scheduleRenewal(): void {
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    let earliest = Infinity;
    for (const s of this.#svids.values()) earliest = Math.min(earliest, s.renewAt);
    if (earliest === Infinity) return;
    const delay = Math.max(0, Math.min(earliest - this.#now().getTime(), 2 ** 31 - 1));
    this.#renewTimer = setTimeout(() => this.renewDue(), delay);
    this.#renewTimer.unref();
  }

  /** Renews every SVID whose renewal time has come (the timer calls this; tests may too). */
  renewDue(): void {
    const now = this.#now().getTime();
    const due: Entry[] = [];
    for (const [id, s] of this.#svids) {
      if (s.renewAt <= now) {
        const e = this.#entries.get(id);
        if (e) due.push(e);
      }
    }
    if (due.length === 0) {
      this.#scheduleRenewal();
      return;
    }
    // Keep serving the old SVIDs until the new ones arrive.
    const old = new Map(due.map((e) => [e.id, this.#svids.get(e.id)!]));
    for (const e of due) this.#svids.delete(e.id);
    this.#ensureSigned(due).then(
      () => this.#refreshSubscribers(),
      (err: unknown) => {
        for (const [id, s] of old) if (!this.#svids.has(id) && this.#entries.has(id)) this.#svids.set(id, { ...s, renewAt: now + 5_000 });
        this.#log.warn({ err: (err as Error).message }, 'SVID renewal failed; keeping the current SVIDs and retrying');
        this.#scheduleRenewal();
      },
    );
  }

  // ---- IdentityCache

  #update(entries: readonly Entry[]): WorkloadUpdate {
    const identities: X509Identity[] = [];
    const seenHints = new Set<string>();
    for (const e of entries) {
      const s = this.#svids.get(e.id);
      if (!s) continue;
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
    return { identities, bundle: own, federatedBundles };
  }

  async fetchX509(selectors: readonly Selector[]): Promise<WorkloadUpdate> {
    await this.ready();
    const entries = this.#match(new Set(selectors.map(selKey)));
    await this.#ensureSigned(entries);
    return this.#update(this.#match(new Set(selectors.map(selKey))));
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
    for (const sub of this.#subs) {
      const entries = this.#match(sub.selectors);
      this.#ensureSigned(entries).then(
        () => {
          if (sub.closed) return;
          const u = this.#update(this.#match(sub.selectors));
          const fp = fingerprint(u);
          if (fp === sub.last) return;
          sub.last = fp;
          sub.listener?.(u);
        },
        (err: unknown) => this.#log.warn({ err: (err as Error).message }, 'could not sign SVIDs for a subscriber'),
      );
    }
  }

  async fetchJwt(selectors: readonly Selector[], audience: readonly string[], spiffeId?: SpiffeId): Promise<JwtIdentity[]> {
    await this.ready();
    let entries = this.#match(new Set(selectors.map(selKey)));
    if (spiffeId !== undefined) entries = entries.filter((e) => e.spiffeId === spiffeId);
    const aud = [...new Set(audience)].sort();
    const now = this.#now().getTime();
    const out: JwtIdentity[] = [];
    const seenHints = new Set<string>();
    for (const e of entries) {
      if (e.hint !== '') {
        if (seenHints.has(e.hint)) continue;
        seenHints.add(e.hint);
      }
      const key = `${e.id}\n${createHash('sha256').update(aud.join('\n')).digest('hex')}`;
      const cached = this.#jwts.get(key);
      if (cached && cached.renewAt > now) {
        out.push(cached.jwt);
        continue;
      }
      const res = await new Promise<NewJWTSVIDResponse>((resolve, reject) =>
        this.#o.connection().client.newJwtsvid({ entryId: e.id, audience: aud }, new Metadata(), { deadline: Date.now() + 15_000 }, (err, r) => (err ? reject(err) : resolve(r!))),
      );
      const svid = res.svid!;
      const jwt: JwtIdentity = { spiffeId: parseSpiffeId(svid.spiffeId), token: svid.token, hint: e.hint, expiresAt: new Date(Number(svid.expiresAt) * 1000) };
      const issued = Number(svid.issuedAt) * 1000;
      this.#jwts.set(key, { jwt, renewAt: issued + (jwt.expiresAt.getTime() - issued) / 2 });
      out.push(jwt);
    }
    return out;
  }

  bundles(): BundleSet {
    return new BundleSet(this.#bundles.values());
  }

  subscribeBundles(listener: (bundles: BundleSet) => void): () => void {
    this.#bundleListeners.add(listener);
    return () => this.#bundleListeners.delete(listener);
  }
}

/** Identity of an update's content, to skip pushing what a subscriber already has. */
function fingerprint(u: WorkloadUpdate): string {
  const ids = u.identities.map((i) => `${i.entryId}/${i.spiffeId}/${i.hint}/${i.notAfter.getTime()}/${i.chain[0]!.length}/${i.chain[0]!.subarray(-16).toString('hex')}`);
  const bundles = [u.bundle, ...u.federatedBundles].map((b) => `${b.trustDomain}#${b.sequence}#${b.x509Authorities().length}`);
  return `${ids.join(',')}|${bundles.join(',')}`;
}

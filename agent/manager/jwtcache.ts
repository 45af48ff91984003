/**
 * The agent's cache of JWT-SVIDs, per entry and audience set, each until its half-life; bounded:
 * at most `maxPerEntry` audience sets per entry and `maxTotal` tokens in all, the least recently
 * used evicted first, tokens past their renewal time swept (a workload asking for ever new
 * audiences costs server calls, not agent memory).
 */
import type { JwtIdentity } from './types.js';

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

export interface JwtCacheOptions {
  /** At least 1. */
  maxPerEntry: number;
  /** At least 1. */
  maxTotal: number;
  now: () => Date;
}

export class JwtCache {
  /** Entry ID -> audience set key -> cached JWT-SVID, least recently used first. */
  readonly #jwts = new Map<string, Map<string, CachedJwt>>();
  /** Every cached JWT-SVID by `${entryId}\n${audKey}`, least recently used first (the total cap). */
  readonly #lru = new Map<string, CachedJwt>();
  readonly #o: JwtCacheOptions;
  #evictions = 0;
  #sweepTimer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(opts: JwtCacheOptions) {
    this.#o = opts;
  }

  /** Number of JWT-SVIDs cached (over all entries and audience sets). */
  get size(): number {
    return this.#lru.size;
  }

  /** JWT-SVIDs evicted by the caps so far (not counting expired ones). */
  get evictions(): number {
    return this.#evictions;
  }

  /** The cached token for this entry and audience set if it is before its renewal time (it becomes the most recently used). */
  get(entryId: string, audKey: string): JwtIdentity | undefined {
    const cached = this.#jwts.get(entryId)?.get(audKey);
    if (!cached) return undefined;
    if (cached.renewAt > this.#o.now().getTime()) {
      // Most recently used now: to the end of both orders.
      this.#jwts.get(entryId)!.delete(audKey);
      this.#jwts.get(entryId)!.set(audKey, cached);
      const k = `${entryId}\n${audKey}`;
      this.#lru.delete(k);
      this.#lru.set(k, cached);
      return cached.jwt;
    }
    this.#delete(cached);
    return undefined;
  }

  /** Caches `jwt`, evicting within the caps: the entry's least recently used first, then the oldest overall. */
  put(entryId: string, audKey: string, jwt: JwtIdentity, renewAt: number): void {
    const c: CachedJwt = { entryId, audKey, jwt, renewAt };
    const old = this.#jwts.get(c.entryId)?.get(c.audKey);
    if (old) this.#delete(old);
    let perEntry = this.#jwts.get(c.entryId);
    if (perEntry) {
      const now = this.#o.now().getTime();
      for (const v of [...perEntry.values()]) if (v.renewAt <= now) this.#delete(v);
    }
    perEntry = this.#jwts.get(c.entryId);
    if (!perEntry) this.#jwts.set(c.entryId, (perEntry = new Map()));
    while (perEntry.size >= this.#o.maxPerEntry) {
      this.#delete(perEntry.values().next().value!);
      this.#evictions++;
      perEntry = this.#jwts.get(c.entryId) ?? perEntry;
    }
    if (this.#lru.size >= this.#o.maxTotal) this.#sweep();
    while (this.#lru.size >= this.#o.maxTotal) {
      this.#delete(this.#lru.values().next().value!);
      this.#evictions++;
    }
    perEntry = this.#jwts.get(c.entryId);
    if (!perEntry) this.#jwts.set(c.entryId, (perEntry = new Map()));
    perEntry.set(c.audKey, c);
    this.#lru.set(`${c.entryId}\n${c.audKey}`, c);
    if (!this.#sweepTimer && !this.#stopped) {
      this.#sweepTimer = setInterval(() => this.#sweep(), JWT_SWEEP_MS);
      this.#sweepTimer.unref();
    }
  }

  /** Drops every token of an entry (it changed or was removed). */
  dropEntry(entryId: string): void {
    const perEntry = this.#jwts.get(entryId);
    if (!perEntry) return;
    for (const c of perEntry.values()) this.#lru.delete(`${c.entryId}\n${c.audKey}`);
    this.#jwts.delete(entryId);
  }

  /** Stops the sweep timer for good. */
  stop(): void {
    this.#stopped = true;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
  }

  #delete(c: CachedJwt): void {
    this.#lru.delete(`${c.entryId}\n${c.audKey}`);
    const perEntry = this.#jwts.get(c.entryId);
    if (perEntry?.delete(c.audKey) && perEntry.size === 0) this.#jwts.delete(c.entryId);
  }

  /** Drops every cached JWT-SVID past its renewal time (never served again). */
  #sweep(): void {
    const now = this.#o.now().getTime();
    for (const c of [...this.#lru.values()]) if (c.renewAt <= now) this.#delete(c);
    if (this.#lru.size === 0 && this.#sweepTimer) {
      clearInterval(this.#sweepTimer);
      this.#sweepTimer = undefined;
    }
  }
}

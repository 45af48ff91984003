/**
 * Per-caller limits of the agent socket (Workload API and SDS share them), so one workload
 * cannot starve the others:
 *
 * - a RATE limit: a token bucket per caller (calls and stream opens per second, with a burst),
 *   taken before any attestation work, so a flooding process costs a map lookup per call;
 * - a CONCURRENT STREAM limit: streaming calls a caller may hold open at once, over all its
 *   connections and both APIs.
 *
 * The caller is the PROCESS: pid plus its start time, as the listener saw it at accept
 * (PeerContext.processKey). Per process rather than per uid: unrelated workloads often share a
 * uid (root, a service account), and one misbehaving process must not lock the others out. A
 * reused pid is a new process and starts with a fresh budget.
 *
 * Forking many processes multiplies the per-process budget, so optional per-UID aggregates
 * (rate and streams over every process of one uid) bound that too. They are off by default: a
 * uid-wide limit lets one process exhaust the budget of every unrelated workload of its uid,
 * which is exactly what the per-process limits prevent; enable them where each workload has
 * its own uid. Connection floods are bounded separately (connlimits.ts, enforced at accept).
 *
 * Every limit: 0 disables it. Refusals are RESOURCE_EXHAUSTED with a message naming the limit
 * and its config key, and are counted (stats(), exported as Prometheus metrics by
 * agent/telemetry.ts).
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { apiError } from './errors.js';
import type { PeerContext } from './types.js';

/** The APIs whose calls are limited (the `api` label of the metrics). */
export const LIMITED_APIS = ['workload', 'sds'] as const;
export type LimitedApi = (typeof LIMITED_APIS)[number];
export type LimitReason = 'rate' | 'streams';
export type LimitScope = 'process' | 'uid';

export interface CallerLimitSettings {
  /** Streams one process may hold open (Workload API + SDS). 0: no limit. */
  maxStreamsPerPid: number;
  /** Calls and stream opens per second per process (the bucket's refill rate). 0: no limit. */
  ratePerPid: number;
  /** Calls a process may make at once before the rate applies (the bucket's size). */
  burstPerPid: number;
  /** Streams all processes of one uid may hold open together. 0: no limit (the default). */
  maxStreamsPerUid: number;
  /** Calls per second over all processes of one uid. 0: no limit (the default). */
  ratePerUid: number;
  /** Burst of the per-uid bucket. */
  burstPerUid: number;
}

/**
 * Generous for real workloads: Envoy holds a handful of SDS streams, an SDK opens three streams
 * and a few unary calls when it (re)connects, and even a service that fetches a JWT-SVID for
 * every outgoing request without caching rarely sustains 200/s from one process. A burst of 500
 * absorbs every client of a process reconnecting at once after an agent restart. A flooding
 * process still costs at most 200 attestations a second.
 */
export const DEFAULT_CALLER_LIMITS: Readonly<CallerLimitSettings> = Object.freeze({
  maxStreamsPerPid: 100,
  ratePerPid: 200,
  burstPerPid: 500,
  maxStreamsPerUid: 0,
  ratePerUid: 0,
  burstPerUid: 1000,
});

/** The config key of each limit (in refusal messages and docs). */
export const LIMIT_CONFIG_KEYS = {
  maxStreamsPerPid: 'agent.workload_api_max_streams_per_pid',
  ratePerPid: 'agent.workload_api_rate_limit_per_pid',
  burstPerPid: 'agent.workload_api_rate_burst_per_pid',
  maxStreamsPerUid: 'agent.workload_api_max_streams_per_uid',
  ratePerUid: 'agent.workload_api_rate_limit_per_uid',
  burstPerUid: 'agent.workload_api_rate_burst_per_uid',
} as const satisfies Record<keyof CallerLimitSettings, string>;

/** Counts open streams per key; max 0 means unlimited. */
export class StreamLimiter {
  readonly max: number;
  readonly #open = new Map<string, number>();
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 0) throw new TypeError(`stream limit must be a non-negative integer, got ${String(max)}`);
    this.max = max;
  }
  /** Takes a slot for `key`; returns its release function (idempotent), or undefined when the budget is spent. */
  acquire(key: string): (() => void) | undefined {
    const n = this.#open.get(key) ?? 0;
    if (this.max > 0 && n >= this.max) return undefined;
    this.#open.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#open.get(key) ?? 1) - 1;
      if (left <= 0) this.#open.delete(key);
      else this.#open.set(key, left);
    };
  }
  /** Open streams over all keys. */
  get size(): number {
    let total = 0;
    for (const n of this.#open.values()) total += n;
    return total;
  }
  /** Keys holding at least one stream. */
  get keys(): number {
    return this.#open.size;
  }
}

interface Bucket {
  tokens: number;
  /** Clock reading (ms) `tokens` was computed at. */
  at: number;
}

/** Token buckets per key (rate tokens per second up to `burst`); rate 0: unlimited. */
export class RateLimiter {
  readonly rate: number;
  readonly burst: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  #lastSweep: number;

  constructor(rate: number, burst: number, now: () => number) {
    if (!Number.isFinite(rate) || rate < 0) throw new TypeError(`rate limit must be a non-negative number, got ${String(rate)}`);
    if (rate > 0 && (!Number.isFinite(burst) || burst < 1)) throw new TypeError(`rate burst must be at least 1, got ${String(burst)}`);
    this.rate = rate;
    this.burst = rate > 0 ? burst : 0;
    this.#now = now;
    this.#lastSweep = now();
  }

  #refilled(b: Bucket, now: number): number {
    return Math.min(this.burst, b.tokens + (Math.max(0, now - b.at) * this.rate) / 1000);
  }

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    if (this.rate === 0) return true;
    const now = this.#now();
    this.#sweep(now);
    const b = this.#buckets.get(key);
    const tokens = b === undefined ? this.burst : this.#refilled(b, now);
    if (tokens < 1) {
      if (b !== undefined) {
        b.tokens = tokens;
        b.at = now;
      }
      return false;
    }
    if (b === undefined) this.#buckets.set(key, { tokens: tokens - 1, at: now });
    else {
      b.tokens = tokens - 1;
      b.at = now;
    }
    return true;
  }

  /**
   * Forgets buckets that have refilled completely (same as a new one), at most once per the
   * time a bucket needs to refill from empty, so memory follows the callers active recently.
   */
  #sweep(now: number): void {
    const period = Math.max(1000, (this.burst / this.rate) * 1000);
    if (now - this.#lastSweep < period) return;
    this.#lastSweep = now;
    for (const [key, b] of this.#buckets) if (this.#refilled(b, now) >= this.burst) this.#buckets.delete(key);
  }

  /** Buckets held (callers seen within about one refill period). */
  get size(): number {
    return this.#buckets.size;
  }
}

export interface CallerLimitStats {
  /** Refused calls so far, by API, reason and scope (only non-zero combinations). */
  refused: Array<{ api: LimitedApi; reason: LimitReason; scope: LimitScope; count: number }>;
  /** Streams open now, by API. */
  openStreams: Record<LimitedApi, number>;
}

/** The per-caller limits of one agent socket, shared by the Workload API and SDS. */
export class CallerLimits {
  readonly settings: Readonly<CallerLimitSettings>;
  readonly #pidRate: RateLimiter;
  readonly #uidRate: RateLimiter;
  readonly #pidStreams: StreamLimiter;
  readonly #uidStreams: StreamLimiter;
  readonly #refused = new Map<string, number>();
  readonly #open: Record<LimitedApi, number> = { workload: 0, sds: 0 };

  /** `now`: a monotonic clock in milliseconds (default performance.now), injectable for tests. */
  constructor(settings: Partial<CallerLimitSettings> = {}, opts: { now?: () => number } = {}) {
    const s: CallerLimitSettings = { ...DEFAULT_CALLER_LIMITS };
    for (const [k, v] of Object.entries(settings) as Array<[keyof CallerLimitSettings, number | undefined]>) if (v !== undefined) s[k] = v;
    for (const k of ['maxStreamsPerPid', 'maxStreamsPerUid'] as const) {
      if (!Number.isSafeInteger(s[k]) || s[k] < 0) throw new TypeError(`${LIMIT_CONFIG_KEYS[k]} must be a non-negative integer, got ${String(s[k])}`);
    }
    const now = opts.now ?? (() => performance.now());
    this.settings = Object.freeze(s);
    this.#pidRate = new RateLimiter(s.ratePerPid, s.burstPerPid, now);
    this.#uidRate = new RateLimiter(s.ratePerUid, s.burstPerUid, now);
    this.#pidStreams = new StreamLimiter(s.maxStreamsPerPid);
    this.#uidStreams = new StreamLimiter(s.maxStreamsPerUid);
  }

  #refuse(api: LimitedApi, reason: LimitReason, scope: LimitScope, message: string): never {
    const k = `${api}|${reason}|${scope}`;
    this.#refused.set(k, (this.#refused.get(k) ?? 0) + 1);
    throw apiError(GrpcStatus.RESOURCE_EXHAUSTED, message);
  }

  /**
   * Admits one call or stream open of `peer` against the rate limits; throws WorkloadApiError
   * RESOURCE_EXHAUSTED when the caller's bucket (or its uid's) is empty.
   */
  admitCall(peer: PeerContext, api: LimitedApi): void {
    const s = this.settings;
    if (!this.#pidRate.take(peer.processKey)) {
      this.#refuse(api, 'rate', 'process', `rate limit exceeded for this process: at most ${s.ratePerPid} calls per second, burst ${s.burstPerPid} (${LIMIT_CONFIG_KEYS.ratePerPid}); retry later`);
    }
    if (!this.#uidRate.take(String(peer.peer.uid))) {
      this.#refuse(api, 'rate', 'uid', `rate limit exceeded for uid ${peer.peer.uid}: at most ${s.ratePerUid} calls per second, burst ${s.burstPerUid} over all its processes (${LIMIT_CONFIG_KEYS.ratePerUid}); retry later`);
    }
  }

  /**
   * Takes a stream slot of `peer` (its process and its uid); returns the release function
   * (idempotent); throws RESOURCE_EXHAUSTED when either budget is spent.
   */
  openStream(peer: PeerContext, api: LimitedApi): () => void {
    const s = this.settings;
    const releasePid = this.#pidStreams.acquire(peer.processKey);
    if (releasePid === undefined) {
      this.#refuse(api, 'streams', 'process', `too many open streams for this process (limit ${s.maxStreamsPerPid}, ${LIMIT_CONFIG_KEYS.maxStreamsPerPid})`);
    }
    const releaseUid = this.#uidStreams.acquire(String(peer.peer.uid));
    if (releaseUid === undefined) {
      releasePid();
      this.#refuse(api, 'streams', 'uid', `too many open streams for uid ${peer.peer.uid} (limit ${s.maxStreamsPerUid} over all its processes, ${LIMIT_CONFIG_KEYS.maxStreamsPerUid})`);
    }
    this.#open[api]++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open[api]--;
      releasePid();
      releaseUid();
    };
  }

  stats(): CallerLimitStats {
    const refused: CallerLimitStats['refused'] = [];
    for (const [k, count] of this.#refused) {
      const [api, reason, scope] = k.split('|') as [LimitedApi, LimitReason, LimitScope];
      refused.push({ api, reason, scope, count });
    }
    return { refused, openStreams: { ...this.#open } };
  }

  /** Refusals so far for one combination (tests, logs). */
  refusedCount(api: LimitedApi, reason: LimitReason, scope: LimitScope = 'process'): number {
    return this.#refused.get(`${api}|${reason}|${scope}`) ?? 0;
  }

  /** Processes with a rate bucket in use, and processes holding streams (memory bounds in tests). */
  get tracked(): { rateBuckets: number; streamHolders: number } {
    return { rateBuckets: this.#pidRate.size, streamHolders: this.#pidStreams.keys };
  }
}

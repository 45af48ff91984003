/**
 * JwtSource (go-spiffe's `workloadapi.JWTSource`): JWT-SVIDs from the Workload API, and the JWT
 * bundles (own and federated) kept current from a FetchJWTBundles watch.
 *
 *   const source = await JwtSource.create();                                 // SPIFFE_ENDPOINT_SOCKET
 *   const svid = await source.fetchJwtSvid({ audience: 'spiffe://example.org/payments' });
 *   fetch(url, { headers: { authorization: `Bearer ${svid.token}` } });
 *   source.getJwtBundleForTrustDomain('example.org');                       // current JWT authorities
 *   source.close();
 *
 * Contract:
 * - Address: as X509Source (workload.ts): `socketPath`, else `env.SPIFFE_ENDPOINT_SOCKET`, or a
 *   ready `client`; neither, or a missing Unix socket: one SpiffeError `ERR_JWT_SOURCE` (reason
 *   `no_endpoint` / `socket_missing`) naming SPIFFE_ENDPOINT_SOCKET.
 * - `create()` resolves when the first JWT bundles arrive; rejects on a fatal status before
 *   (`watch_ended`) or after `timeoutMs` (`timeout`, default 30 s). Every later message replaces
 *   the bundles and emits `updated` (with the BundleSet); reconnecting with backoff is the
 *   Workload API client's; errors after the first message are emitted as `error` only when
 *   there is an `error` listener.
 * - `fetchJwtSvid({ audience, extraAudiences?, subject? })` (go-spiffe's jwtsvid.Params): one
 *   FetchJWTSVID RPC with every audience (and `spiffeId` = subject when given); the first SVID
 *   the agent returns (its default identity) or the subject's. The result is cached per
 *   (set of audiences, subject) until half its lifetime (`iat` to `exp`; without `iat`, from the
 *   moment the request was sent) has passed, then fetched again on the next call. Concurrent
 *   calls for one key share one RPC. The cache holds at most `cacheSize` keys (default 256;
 *   least recently used evicted). A token whose `exp` has passed is never returned, cached or
 *   fresh (`svid_expired`).
 * - `fetchJwtSvids(params)` (go-spiffe's FetchJWTSVIDs): every identity's SVID; never cached.
 * - Implements JwtBundleSource, so it can be passed to validateJwtSvid / validateJwtFromRequest.
 * - `close()` ends the watch and, when the source made the client, the client (an RPC in
 *   flight rejects with `closed`). Later calls throw reason `closed`.
 *
 * Errors: SpiffeError `ERR_JWT_SOURCE`, reasons `no_endpoint`, `socket_missing`, `timeout`,
 * `watch_ended`, `bad_params` (empty audience, bad subject), `fetch_failed` (the RPC failed: the
 * Workload API error is the `cause`), `no_svid` (the agent returned none for the subject),
 * `svid_expired`, `no_bundle`, `closed`, `not_ready`.
 */
import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { Bundle, BundleSet } from '../bundle.js';
import { ErrorCode, quote } from '../errors.js';
import { parseSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../id.js';
import type { JwtBundleSource } from '../source.js';
import type { Watch, WorkloadApiClient } from '../workloadapi/client.js';
import type { WorkloadJwtSvid } from '../workloadapi/parse.js';
import { sourceClient, sourceErrorFactory, watchUntilFirst, type SourceEndpointOptions } from './workload.js';

/** A JWT-SVID as the Workload API returned it: `token` (the compact JWS), `id`, `audience`, `expiresAt`, `claims`, `hint`. */
export type JwtSvid = WorkloadJwtSvid;

/** go-spiffe's `jwtsvid.Params`. */
export interface JwtSvidParams {
  /** The audience the token is for (a SPIFFE ID or any string the validator expects). */
  audience: string;
  /** More audiences the same token carries. */
  extraAudiences?: readonly string[];
  /** Only this identity of the workload (one it holds); default the agent's default identity. */
  subject?: string;
}

export interface JwtSourceOptions extends SourceEndpointOptions {
  /** How long create() waits for the first JWT bundles; default 30 s. */
  timeoutMs?: number;
  /** Deadline of each FetchJWTSVID RPC; default the client's (10 s). */
  fetchTimeoutMs?: number;
  /** Most (audiences, subject) keys cached; default 256. */
  cacheSize?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

export const DEFAULT_JWT_CACHE_SIZE = 256;

const sourceError = sourceErrorFactory(ErrorCode.JWT_SOURCE);

interface CacheEntry {
  svid: JwtSvid;
  /** Epoch ms after which the next call fetches again (half the lifetime). */
  refreshAt: number;
}

interface Request {
  audience: string[];
  subject: SpiffeId | undefined;
  key: string;
}

function checkParams(params: JwtSvidParams): Request {
  if (typeof params !== 'object' || params === null) throw sourceError('bad_params', 'fetchJwtSvid needs { audience }');
  const { audience, extraAudiences = [], subject } = params;
  if (typeof audience !== 'string' || audience === '') throw sourceError('bad_params', 'audience must be a non-empty string');
  if (!Array.isArray(extraAudiences) || extraAudiences.some((a) => typeof a !== 'string' || a === '')) {
    throw sourceError('bad_params', 'extraAudiences must be a list of non-empty strings');
  }
  let sub: SpiffeId | undefined;
  if (subject !== undefined && subject !== '') {
    try {
      sub = parseSpiffeId(subject);
    } catch (err) {
      throw sourceError('bad_params', `subject ${quote(String(subject))} is not a SPIFFE ID: ${(err as Error).message}`, err);
    }
  }
  const all = [...new Set([audience, ...extraAudiences])];
  // The key is the set of audiences (order does not change the token's meaning) and the subject.
  return { audience: all, subject: sub, key: JSON.stringify([sub ?? '', [...all].sort()]) };
}

function positiveInt(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`${what} must be a positive integer, got ${String(value)}`);
  return v;
}

export class JwtSource extends EventEmitter implements JwtBundleSource {
  #bundles: BundleSet | undefined;
  #watch: Watch | undefined;
  #client!: WorkloadApiClient;
  #ownsClient = false;
  #closed = false;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #pending = new Map<string, Promise<JwtSvid>>();
  readonly #cacheSize: number;
  readonly #fetchTimeoutMs: number | undefined;
  readonly #now: () => Date;

  private constructor(opts: JwtSourceOptions) {
    super();
    this.#cacheSize = positiveInt(opts.cacheSize, DEFAULT_JWT_CACHE_SIZE, 'cacheSize');
    this.#fetchTimeoutMs = opts.fetchTimeoutMs;
    this.#now = opts.now ?? (() => new Date());
  }

  /** Connects, and resolves once the first JWT bundles have arrived. */
  static async create(opts: JwtSourceOptions = {}): Promise<JwtSource> {
    const source = new JwtSource(opts);
    const { client, owned } = sourceClient(opts, sourceError);
    source.#client = client;
    source.#ownsClient = owned;
    const { watch, first } = watchUntilFirst<BundleSet>({
      start: (onUpdate, onError) => client.watchJwtBundles(onUpdate, onError),
      onUpdate: (bundles) => {
        source.#bundles = bundles;
        source.emit('updated', bundles);
      },
      onErrorAfterFirst: (err) => {
        if (source.listenerCount('error') > 0) source.emit('error', err);
      },
      timeoutMs: opts.timeoutMs ?? 30_000,
      fail: sourceError,
      what: 'JWT bundles',
      address: client.address,
    });
    source.#watch = watch;
    try {
      await first;
    } catch (err) {
      source.close();
      throw err;
    }
    return source;
  }

  /** The Workload API address this source talks to. */
  get address(): string {
    return this.#client.address;
  }

  /**
   * A JWT-SVID for `audience` (and `extraAudiences`), of `subject` or the default identity:
   * from the cache while less than half its lifetime has passed, else from the agent.
   */
  fetchJwtSvid(params: JwtSvidParams): Promise<JwtSvid> {
    let req: Request;
    try {
      this.#checkOpen();
      req = checkParams(params);
    } catch (err) {
      return Promise.reject(err);
    }
    const now = this.#now().getTime();
    const hit = this.#cache.get(req.key);
    if (hit !== undefined) {
      this.#cache.delete(req.key);
      if (now < hit.refreshAt && now < hit.svid.expiresAt.getTime()) {
        this.#cache.set(req.key, hit); // most recently used
        return Promise.resolve(hit.svid);
      }
    }
    const pending = this.#pending.get(req.key);
    if (pending !== undefined) return pending;
    const p = this.#fetch(req, now).finally(() => this.#pending.delete(req.key));
    this.#pending.set(req.key, p);
    return p;
  }

  /** Every identity's JWT-SVID for the audiences (go-spiffe's FetchJWTSVIDs); not cached. */
  async fetchJwtSvids(params: JwtSvidParams): Promise<JwtSvid[]> {
    this.#checkOpen();
    const req = checkParams(params);
    const svids = await this.#rpc(req);
    const now = this.#now().getTime();
    return svids.filter((s) => s.expiresAt.getTime() > now);
  }

  /** Number of cached (audiences, subject) keys. */
  get cachedCount(): number {
    return this.#cache.size;
  }

  /** The current JWT bundles (own and federated). */
  get bundles(): BundleSet {
    this.#checkOpen();
    if (this.#bundles === undefined) throw sourceError('not_ready', 'the JwtSource has no JWT bundles yet');
    return this.#bundles;
  }

  /** The JWT bundle of `td` (`example.org` or `spiffe://example.org`), or an error `no_bundle`. */
  getJwtBundleForTrustDomain(td: TrustDomain | string): Bundle {
    const t = parseTrustDomain(td);
    const b = this.bundles.get(t);
    if (b === undefined) throw sourceError('no_bundle', `no JWT bundle for trust domain ${t}`);
    return b;
  }

  getJwtAuthorities(td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined {
    return this.bundles.getJwtAuthorities(td);
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.close();
    this.#cache.clear();
    if (this.#ownsClient) this.#client?.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw sourceError('closed', 'the JwtSource is closed');
  }

  async #rpc(req: Request): Promise<JwtSvid[]> {
    try {
      return await this.#client.fetchJwtSvid(
        { audience: req.audience, ...(req.subject === undefined ? {} : { spiffeId: req.subject }) },
        this.#fetchTimeoutMs === undefined ? {} : { timeoutMs: this.#fetchTimeoutMs },
      );
    } catch (err) {
      if (this.#closed) throw sourceError('closed', 'the JwtSource was closed while fetching a JWT-SVID', err);
      throw sourceError('fetch_failed', `FetchJWTSVID for audience ${req.audience.map((a) => quote(a)).join(', ')} failed: ${(err as Error).message}`, err);
    }
  }

  async #fetch(req: Request, sentAt: number): Promise<JwtSvid> {
    const svids = await this.#rpc(req);
    const svid = req.subject === undefined ? svids[0] : svids.find((s) => s.id === req.subject);
    if (svid === undefined) throw sourceError('no_svid', `the agent returned no JWT-SVID${req.subject === undefined ? '' : ` for ${req.subject}`}`);
    const exp = svid.expiresAt.getTime();
    const now = this.#now().getTime();
    if (exp <= now) {
      throw sourceError('svid_expired', `the JWT-SVID the agent returned for ${svid.id} expired at ${svid.expiresAt.toISOString()}`);
    }
    if (this.#closed) throw sourceError('closed', 'the JwtSource is closed');
    const iat = svid.claims['iat'];
    const issuedAt = typeof iat === 'number' && Number.isFinite(iat) && iat * 1000 <= exp ? iat * 1000 : sentAt;
    this.#cache.set(req.key, { svid, refreshAt: issuedAt + (exp - issuedAt) / 2 });
    while (this.#cache.size > this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!);
    return svid;
  }
}

/**
 * The Workload API client (Spindle's Node SDK, after go-spiffe's `workloadapi`).
 *
 *   const client = createWorkloadApiClient({ env: process.env });      // SPIFFE_ENDPOINT_SOCKET
 *   const { defaultSvid, bundles } = await client.fetchX509Context();
 *   const watch = client.watchX509Context((ctx) => use(ctx), (err) => log(err));
 *   ...
 *   watch.close(); client.close();
 *
 * Contract:
 * - The address is `address`, else `env.SPIFFE_ENDPOINT_SOCKET`; parsed by parseEndpointAddress
 *   (unix:///abs/path, unix:/abs/path, tcp://<IP>:<port>); anything else throws a SpiffeError
 *   `ERR_ENDPOINT_ADDRESS_INVALID` at construction. This module never reads `process.env`:
 *   callers pass `env` (or `address`).
 * - Plaintext gRPC (the Workload API has no TLS); every call carries the security header
 *   `workload.spiffe.io: true`.
 * - Unary calls and the `fetch*` methods on streaming RPCs have a deadline (`timeoutMs`, default
 *   10 s, per call or per client). `fetch*` on a stream takes the first message and cancels.
 * - `watch*` keep the stream open and call `onUpdate` with every message (each is the full current
 *   state). When the stream fails with a code in `fatalCodes` (default PERMISSION_DENIED,
 *   INVALID_ARGUMENT, UNIMPLEMENTED) the watch reports it (`final: true`) and ends; on any other
 *   failure (UNAVAILABLE when the agent restarts, a stream the agent ends, ...) it reports it
 *   (`final: false`) and reconnects with exponential backoff (`backoff`, default 1 s doubling to
 *   30 s, reset by every message received). A message that does not decode is reported
 *   (`final: false`, reason `bad_response`) and skipped; the stream stays open.
 * - Watches deliver the newest state: messages that arrive together (a reader that fell behind)
 *   are coalesced and only the last one is decoded and passed to `onUpdate` (each message is
 *   the full current state, so nothing is lost, and a slow reader catches up instead of working
 *   through SVIDs that were replaced, or have expired, meanwhile).
 * - The channel's own reconnect backoff (grpc-js `grpc.initial_reconnect_backoff_ms` /
 *   `grpc.max_reconnect_backoff_ms`, 1 s growing to 120 s by default) follows `backoff` unless
 *   `channelOptions` sets it: a watch retrying every second must not sit behind a channel that
 *   waits two minutes before it dials the restarted agent again.
 * - Every failure is a WorkloadApiError (errors.ts) keeping the gRPC status `code`.
 * - Watch callbacks run on grpc-js stream events: they must not throw (an exception escapes as
 *   from any event handler). close() may be called from inside them.
 * - `close()` cancels open calls and watches (their `done` resolves with undefined) and closes the
 *   channel; later calls reject with reason `closed`, later watches end at once the same way.
 */
import { credentials, Metadata, status as Status, type ClientOptions, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { BundleSet } from '../bundle.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import { formatEndpointAddress, parseEndpointAddress, toGrpcTarget, type EndpointAddress } from '../endpoint.js';
import { parseSpiffeId, type SpiffeId } from '../id.js';
import {
  SpiffeWorkloadAPIClient,
  type JWTBundlesResponse,
  type JWTSVIDResponse,
  type ValidateJWTSVIDResponse,
  type X509BundlesResponse,
  type X509SVIDResponse,
} from '../../proto/gen/workload/workload.js';
import { badRequest, badResponse, closedError, fromServiceError, WorkloadApiError } from './errors.js';
import {
  parseJwtBundlesResponse,
  parseJwtSvidResponse,
  parseValidateJwtSvidResponse,
  parseX509BundlesResponse,
  parseX509SvidResponse,
  type ValidatedWorkloadJwt,
  type WorkloadJwtSvid,
  type WorkloadX509Svid,
  type X509Context,
} from './parse.js';

export const ENDPOINT_SOCKET_ENV = 'SPIFFE_ENDPOINT_SOCKET';
export const SECURITY_HEADER = 'workload.spiffe.io';
export const DEFAULT_TIMEOUT_MS = 10_000;
export const DEFAULT_BACKOFF = { initialMs: 1000, maxMs: 30_000 } as const;
/** Event-loop turns a watch waits for more buffered messages before delivering the newest. */
const COALESCE_MAX_TURNS = 8;
/** First reconnect delay of the channel (at most the watch backoff's initial delay). */
const DEFAULT_CHANNEL_INITIAL_BACKOFF_MS = 100;
export const DEFAULT_FATAL_CODES: readonly number[] = [Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT, Status.UNIMPLEMENTED];

export interface WorkloadApiClientOptions {
  /** Endpoint address (`unix:///path`, `tcp://1.2.3.4:5`). Default: `env.SPIFFE_ENDPOINT_SOCKET`. */
  address?: string;
  /** Environment to read SPIFFE_ENDPOINT_SOCKET from when `address` is not given (e.g. `process.env`). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Deadline of unary calls and of the first message of `fetch*` on streams. */
  timeoutMs?: number;
  /** Reconnect backoff of watches. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Extra grpc-js channel options (message sizes, reconnect backoff, ...). */
  channelOptions?: Partial<ClientOptions>;
}

export interface CallOptions {
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number;
}

export interface WatchErrorInfo {
  /** true when the watch has ended because of this error; false when it carries on (reconnects). */
  final: boolean;
  /** When reconnecting: the delay before the next attempt. */
  retryInMs?: number;
}

export type WatchErrorHandler = (err: WorkloadApiError, info: WatchErrorInfo) => void;

export interface WatchOptions {
  /** Status codes that end the watch instead of reconnecting. */
  fatalCodes?: readonly number[];
}

export interface Watch {
  /** Stops watching (cancels the stream, no more callbacks). Idempotent. */
  close(): void;
  /** Resolves when the watch ends: undefined after close(), the error after a fatal one. */
  readonly done: Promise<WorkloadApiError | undefined>;
}

export interface JwtSvidParams {
  /** Every audience the tokens must carry; at least one. */
  audience: readonly string[];
  /** Only this identity (must be one the caller holds); default: all of them. */
  spiffeId?: string;
}

/** Resolves the endpoint address from the options (explicit address, else the env). */
export function resolveEndpointAddress(opts: Pick<WorkloadApiClientOptions, 'address' | 'env'>): EndpointAddress {
  const raw = opts.address ?? opts.env?.[ENDPOINT_SOCKET_ENV];
  if (raw === undefined || raw === '') {
    throw new SpiffeError(
      ErrorCode.ENDPOINT_ADDRESS_INVALID,
      'missing',
      `no Workload API address: pass an address or set ${ENDPOINT_SOCKET_ENV} (e.g. unix:///tmp/spindle-agent/public/api.sock)`,
    );
  }
  return parseEndpointAddress(raw);
}

type StreamStarter<Res> = (md: Metadata, opts: { deadline?: number }) => ClientReadableStream<Res>;

function positive(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${what} must be a positive number of milliseconds, got ${String(value)}`);
  return v;
}

export class WorkloadApiClient {
  /** The endpoint, in its canonical SPIFFE_ENDPOINT_SOCKET form. */
  readonly address: string;
  readonly timeoutMs: number;
  readonly #grpc: SpiffeWorkloadAPIClient;
  readonly #backoff: { initialMs: number; maxMs: number };
  readonly #calls = new Set<{ cancel(): void }>();
  readonly #watches = new Set<Watch>();
  #closed = false;

  constructor(opts: WorkloadApiClientOptions = {}) {
    const addr = resolveEndpointAddress(opts);
    this.address = formatEndpointAddress(addr);
    this.timeoutMs = positive(opts.timeoutMs, DEFAULT_TIMEOUT_MS, 'timeoutMs');
    const initialMs = positive(opts.backoff?.initialMs, DEFAULT_BACKOFF.initialMs, 'backoff.initialMs');
    this.#backoff = { initialMs, maxMs: Math.max(initialMs, positive(opts.backoff?.maxMs, DEFAULT_BACKOFF.maxMs, 'backoff.maxMs')) };
    const channelOptions: Partial<ClientOptions> = {
      'grpc.initial_reconnect_backoff_ms': Math.min(this.#backoff.initialMs, DEFAULT_CHANNEL_INITIAL_BACKOFF_MS),
      'grpc.max_reconnect_backoff_ms': this.#backoff.maxMs,
      ...opts.channelOptions,
    };
    this.#grpc = new SpiffeWorkloadAPIClient(toGrpcTarget(addr), credentials.createInsecure(), channelOptions);
  }

  get closed(): boolean {
    return this.#closed;
  }

  // ---- X.509 ----

  /** Every X509-SVID of the caller and the X.509 bundles (own + federated). */
  fetchX509Context(opts: CallOptions = {}): Promise<X509Context> {
    return this.#first('FetchX509SVID', (md, o) => this.#grpc.fetchX509Svid({}, md, o), parseX509SvidResponse, opts);
  }

  /** The caller's default X509-SVID (the first one). */
  async fetchX509Svid(opts: CallOptions = {}): Promise<WorkloadX509Svid> {
    return (await this.fetchX509Context(opts)).defaultSvid;
  }

  watchX509Context(onUpdate: (ctx: X509Context) => void, onError?: WatchErrorHandler, opts: WatchOptions = {}): Watch {
    return this.#watch<X509SVIDResponse, X509Context>('FetchX509SVID', (md) => this.#grpc.fetchX509Svid({}, md), parseX509SvidResponse, onUpdate, onError, opts);
  }

  /** X.509 bundles of every trust domain the caller trusts. */
  fetchX509Bundles(opts: CallOptions = {}): Promise<BundleSet> {
    return this.#first('FetchX509Bundles', (md, o) => this.#grpc.fetchX509Bundles({}, md, o), parseX509BundlesResponse, opts);
  }

  watchX509Bundles(onUpdate: (bundles: BundleSet) => void, onError?: WatchErrorHandler, opts: WatchOptions = {}): Watch {
    return this.#watch<X509BundlesResponse, BundleSet>('FetchX509Bundles', (md) => this.#grpc.fetchX509Bundles({}, md), parseX509BundlesResponse, onUpdate, onError, opts);
  }

  // ---- JWT ----

  /** JWT-SVIDs for `audience` (all identities of the caller, or only `spiffeId`). */
  async fetchJwtSvid(params: JwtSvidParams, opts: CallOptions = {}): Promise<WorkloadJwtSvid[]> {
    const rpc = 'FetchJWTSVID';
    const audience = [...(params?.audience ?? [])];
    if (audience.length === 0 || audience.some((a) => typeof a !== 'string' || a === '')) {
      throw badRequest(rpc, 'audience must hold at least one non-empty value');
    }
    let spiffeId: SpiffeId | undefined;
    if (params.spiffeId !== undefined && params.spiffeId !== '') {
      try {
        spiffeId = parseSpiffeId(params.spiffeId);
      } catch (err) {
        throw badRequest(rpc, `spiffeId: ${(err as Error).message}`);
      }
    }
    const resp = await this.#unary<JWTSVIDResponse>(rpc, (md, o, cb) => this.#grpc.fetchJwtsvid({ audience, spiffeId: spiffeId ?? '' }, md, o, cb), opts);
    return this.#decode(rpc, () => parseJwtSvidResponse(resp, audience, spiffeId));
  }

  /** JWT bundles (JWT authorities) of every trust domain the caller trusts. */
  fetchJwtBundles(opts: CallOptions = {}): Promise<BundleSet> {
    return this.#first('FetchJWTBundles', (md, o) => this.#grpc.fetchJwtBundles({}, md, o), parseJwtBundlesResponse, opts);
  }

  watchJwtBundles(onUpdate: (bundles: BundleSet) => void, onError?: WatchErrorHandler, opts: WatchOptions = {}): Watch {
    return this.#watch<JWTBundlesResponse, BundleSet>('FetchJWTBundles', (md) => this.#grpc.fetchJwtBundles({}, md), parseJwtBundlesResponse, onUpdate, onError, opts);
  }

  /**
   * Asks the agent to validate a JWT-SVID for `audience`. A token the agent refuses rejects with
   * code INVALID_ARGUMENT and the agent's reason in `details`.
   */
  async validateJwtSvid(token: string, audience: string, opts: CallOptions = {}): Promise<ValidatedWorkloadJwt> {
    const rpc = 'ValidateJWTSVID';
    if (typeof token !== 'string' || token === '') throw badRequest(rpc, 'the token to validate must be a non-empty string');
    if (typeof audience !== 'string' || audience === '') throw badRequest(rpc, 'audience must be a non-empty string');
    const resp = await this.#unary<ValidateJWTSVIDResponse>(rpc, (md, o, cb) => this.#grpc.validateJwtsvid({ audience, svid: token }, md, o, cb), opts);
    return this.#decode(rpc, () => parseValidateJwtSvidResponse(resp));
  }

  /** Cancels every open call and watch and closes the channel. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) w.close();
    for (const c of [...this.#calls]) c.cancel();
    this.#grpc.close();
  }

  // ---- plumbing ----

  #metadata(): Metadata {
    const md = new Metadata();
    md.set(SECURITY_HEADER, 'true');
    return md;
  }

  #decode<T>(rpc: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw badResponse(rpc, 'the response does not decode', err);
    }
  }

  #unary<Res>(
    rpc: string,
    invoke: (md: Metadata, o: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => { cancel(): void },
    opts: CallOptions,
  ): Promise<Res> {
    if (this.#closed) return Promise.reject(closedError(rpc));
    const timeoutMs = positive(opts.timeoutMs, this.timeoutMs, 'timeoutMs');
    return new Promise<Res>((resolve, reject) => {
      const call = invoke(this.#metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        this.#calls.delete(call);
        if (err) reject(this.#closed && err.code === Status.CANCELLED ? closedError(rpc) : fromServiceError(rpc, this.address, err, timeoutMs));
        else resolve(res);
      });
      this.#calls.add(call);
    });
  }

  #first<Res, T>(rpc: string, start: StreamStarter<Res>, parse: (res: Res) => T, opts: CallOptions): Promise<T> {
    if (this.#closed) return Promise.reject(closedError(rpc));
    const timeoutMs = positive(opts.timeoutMs, this.timeoutMs, 'timeoutMs');
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const call = start(this.#metadata(), { deadline: Date.now() + timeoutMs });
      this.#calls.add(call);
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        this.#calls.delete(call);
        fn();
      };
      call.on('data', (res: Res) => {
        settle(() => {
          call.cancel();
          try {
            resolve(parse(res));
          } catch (err) {
            reject(badResponse(rpc, 'the first message does not decode', err));
          }
        });
      });
      call.on('error', () => {
        /* the outcome is taken from 'status' */
      });
      call.on('status', (s: { code: number; details: string }) => {
        settle(() => {
          if (s.code === Status.OK) {
            reject(new WorkloadApiError(rpc, Status.UNAVAILABLE, 'rpc', `${rpc}: the agent ended the stream before sending a message`));
          } else if (this.#closed && s.code === Status.CANCELLED) {
            reject(closedError(rpc));
          } else {
            reject(fromServiceError(rpc, this.address, s, timeoutMs));
          }
        });
      });
    });
  }

  #watch<Res, T>(
    rpc: string,
    start: (md: Metadata) => ClientReadableStream<Res>,
    parse: (res: Res) => T,
    onUpdate: (value: T) => void,
    onError: WatchErrorHandler | undefined,
    opts: WatchOptions,
  ): Watch {
    const fatal = new Set(opts.fatalCodes ?? DEFAULT_FATAL_CODES);
    let ended = false;
    let current: ClientReadableStream<Res> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let delay = this.#backoff.initialMs;
    let resolveDone!: (err: WorkloadApiError | undefined) => void;
    const done = new Promise<WorkloadApiError | undefined>((r) => (resolveDone = r));

    const end = (err: WorkloadApiError | undefined): void => {
      if (ended) return;
      ended = true;
      if (timer !== undefined) clearTimeout(timer);
      const call = current;
      current = undefined;
      call?.cancel();
      this.#watches.delete(watch);
      resolveDone(err);
    };
    const report = (err: WorkloadApiError, info: WatchErrorInfo): void => {
      onError?.(err, info);
    };
    const connect = (): void => {
      timer = undefined;
      if (ended) return;
      const call = start(this.#metadata());
      current = call;
      // Coalescing: messages received before the next turn of the event loop replace each other.
      // grpc-js hands over buffered messages a few per turn, so a backlog is waited out for a
      // few more turns (bounded: a steady stream still gets through).
      let latest: { res: Res } | undefined;
      let arrived = 0;
      let rounds = 0;
      const settleThenDeliver = (seen: number): void => {
        if (arrived !== seen && rounds++ < COALESCE_MAX_TURNS) setImmediate(settleThenDeliver, arrived);
        else deliver();
      };
      const deliver = (): void => {
        rounds = 0;
        const m = latest;
        latest = undefined;
        if (m === undefined || ended || current !== call) return;
        let value: T;
        try {
          value = parse(m.res);
        } catch (err) {
          report(badResponse(rpc, 'a message does not decode (skipped)', err), { final: false });
          return;
        }
        onUpdate(value);
      };
      call.on('data', (res: Res) => {
        if (ended || current !== call) return;
        delay = this.#backoff.initialMs;
        const scheduled = latest !== undefined;
        latest = { res };
        arrived++;
        if (!scheduled) setImmediate(settleThenDeliver, arrived);
      });
      call.on('error', () => {
        /* the outcome is taken from 'status' */
      });
      call.on('status', (s: { code: number; details: string }) => {
        if (ended || current !== call) return;
        deliver(); // what arrived before the status first
        if (ended || current !== call) return;
        current = undefined;
        const err =
          s.code === Status.OK
            ? new WorkloadApiError(rpc, Status.UNAVAILABLE, 'rpc', `${rpc}: the agent ended the stream`)
            : fromServiceError(rpc, this.address, s);
        if (fatal.has(s.code)) {
          report(err, { final: true });
          end(err);
          return;
        }
        const wait = delay;
        delay = Math.min(delay * 2, this.#backoff.maxMs);
        report(err, { final: false, retryInMs: wait });
        if (!ended) timer = setTimeout(connect, wait);
      });
    };

    const watch: Watch = { close: () => end(undefined), done };
    if (this.#closed) {
      ended = true;
      resolveDone(closedError(rpc));
      return watch;
    }
    this.#watches.add(watch);
    connect();
    return watch;
  }
}

/** A Workload API client for `opts.address` or `opts.env.SPIFFE_ENDPOINT_SOCKET`. */
export function createWorkloadApiClient(opts: WorkloadApiClientOptions = {}): WorkloadApiClient {
  return new WorkloadApiClient(opts);
}

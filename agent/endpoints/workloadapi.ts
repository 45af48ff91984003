/**
 * The SPIFFE Workload API over the agent's identity cache.
 *
 * Every call, in this order:
 * 1. Security header: metadata `workload.spiffe.io` must be exactly one value, `true`, else
 *    INVALID_ARGUMENT (before anything else is looked at).
 * 2. Per-caller rate limit (limits.ts): one token of the caller process's bucket (and of its
 *    uid's, when configured), else RESOURCE_EXHAUSTED naming the limit; no attestation work yet.
 * 3. Request fields that need no kernel or cache work (audience presence and count, svid,
 *    spiffe_id syntax):
 *    INVALID_ARGUMENT, as SPIRE checks them before attesting.
 * 4. Stream calls take a slot of the caller process's stream budget (RESOURCE_EXHAUSTED).
 * 5. Attestation: every attestor on the kernel's SO_PEERCRED view of the caller, selectors
 *    unioned; any failure (process gone, /proc unreadable) is UNAVAILABLE.
 * 6. The caller must still be the same process (PeerContext.whyNotSameProcess: pidfd not exited,
 *    same start time, same effective uid/gid, same executable), else UNAVAILABLE: the process
 *    that connected exited (its socket may live on in a process it was handed to), its pid was
 *    reused, or it exec'd another program.
 *
 * Streams (FetchX509SVID, FetchX509Bundles, FetchJWTBundles) follow one cache subscription: the
 * first message as soon as the subscription's initial update is there, then one message per
 * change, each the full current state. Byte-identical consecutive messages are skipped. A caller
 * with no identity gets PERMISSION_DENIED "no identity issued", at once or, when it loses its
 * last identity, as the end of the stream. A slow reader never makes updates pile up: while a
 * message is not yet taken by the transport, only the newest next one waits. No timers: a stream ends when the client
 * cancels, the connection closes, or `closeStreams()` (agent shutdown) ends it with UNAVAILABLE;
 * each end closes the subscription and frees the slot. Before every push the caller must still be
 * the same process, else the stream ends UNAVAILABLE (a child that inherited the connection after
 * the caller exited gets no rotated SVIDs; while the connector lives, any holder of the socket is
 * served as the connector, which is what SO_PEERCRED describes); a first message sent within a millisecond of
 * attestation's own check (step 5) is not checked twice.
 *
 * Bundle streams send our trust domain's bundle plus the federated bundles of the CALLER'S
 * identities (what the cache's WorkloadUpdate carries), as SPIRE does; a caller without identity
 * gets PERMISSION_DENIED, as in SPIRE without `allow_unauthenticated_verifiers`. ValidateJWTSVID
 * checks tokens against every bundle the agent knows (`cache.bundles()`).
 */
import {
  Server,
  status as GrpcStatus,
  type Metadata,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { IdentityUnavailableError, type IdentityCache, type WorkloadSubscription, type WorkloadUpdate } from '../manager/types.js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import type { Selector } from '../../common/selector.js';
import { BundleSet } from '../../spiffe/bundle.js';
import { parseSpiffeId, type SpiffeId } from '../../spiffe/id.js';
import { MAX_JWT_SVID_AUDIENCES, validateJwtSvid } from '../../spiffe/jwtsvid.js';
import { HealthService } from '../../proto/gen/grpc/health/v1/health.js';
import {
  JWTBundlesResponse,
  JWTSVIDResponse,
  SpiffeWorkloadAPIClient,
  SpiffeWorkloadAPIService,
  X509BundlesResponse,
  X509SVIDResponse,
  type JWTSVIDRequest,
  type SpiffeWorkloadAPIServer,
  type ValidateJWTSVIDRequest,
  type ValidateJWTSVIDResponse,
} from '../../proto/gen/workload/workload.js';
import type { PeerCredNative } from '../native/peercred.js';
import { apiError, toStatus } from './errors.js';
import { cacheError, callerAttestation, StreamEnd, type StreamEnder } from './caller.js';
import { createWorkloadHealthService } from './health.js';
import { addReflection } from './reflection.js';
import { CallerLimits, StreamLimiter, type CallerLimitSettings } from './limits.js';
import { ConnectionLimiter, type ConnectionLimitSettings } from './connlimits.js';
import { listenWorkloadSocket } from './listener.js';
import type { EndpointLogger, PeerContext, PeerOf } from './types.js';

export const SECURITY_HEADER = 'workload.spiffe.io';
/** A caller confirmed this recently (attestation's check) is not re-checked for the first push. */
const FRESH_CHECK_MS = 1;

export interface WorkloadApiServiceOptions {
  cache: IdentityCache;
  attestors: readonly WorkloadAttestor[];
  peerOf: PeerOf;
  logger: EndpointLogger;
  /** Per-caller rate and stream limits, shared with SDS on the same socket. Default: a CallerLimits of its own with the defaults. */
  limits?: CallerLimits;
  /** Clock for JWT-SVID validation. Default: the system clock. */
  now?: () => Date;
}

export interface WorkloadApiService {
  /** Register with `server.addService(WORKLOAD_API_SERVICE, implementation)`. */
  readonly implementation: SpiffeWorkloadAPIServer;
  /** The per-caller limits this service applies. */
  readonly limits: CallerLimits;
  /** Open streaming calls. */
  readonly openStreams: number;
  /** Ends every open stream with UNAVAILABLE (agent shutting down). */
  closeStreams(): void;
}

/** A composed response and its encoding (what `last` compares and the transport sends). */
interface Message<Res> {
  res: Res;
  bytes: Buffer;
}

/**
 * Responses encoded already (by the streams, to skip repeats), so the service definition's
 * serializer sends those bytes instead of encoding the same message again.
 */
const preEncoded = new WeakMap<object, Buffer>();

function reuseEncoding<D extends { responseSerialize: (value: never) => Buffer }>(def: D): D {
  const serialize = def.responseSerialize as (value: object) => Buffer;
  return { ...def, responseSerialize: (value: object) => preEncoded.get(value) ?? serialize(value) };
}

/**
 * The Workload API service definition to register `implementation` with: the generated one,
 * except that stream responses already encoded are sent as they are (the generated definition
 * works too, encoding every message once more).
 */
export const WORKLOAD_API_SERVICE: typeof SpiffeWorkloadAPIService = {
  ...SpiffeWorkloadAPIService,
  fetchX509Svid: reuseEncoding(SpiffeWorkloadAPIService.fetchX509Svid),
  fetchX509Bundles: reuseEncoding(SpiffeWorkloadAPIService.fetchX509Bundles),
  fetchJwtBundles: reuseEncoding(SpiffeWorkloadAPIService.fetchJwtBundles),
};

interface Admitted {
  peer: PeerContext;
  selectors: Selector[];
}

/** Exactly one value, exactly `true`. */
function hasSecurityHeader(metadata: Metadata): boolean {
  const values = metadata.get(SECURITY_HEADER);
  return values.length === 1 && values[0] === 'true';
}

function checkHeader(metadata: Metadata): void {
  if (!hasSecurityHeader(metadata)) throw apiError(GrpcStatus.INVALID_ARGUMENT, 'security header missing from request');
}


/** Map keyed `spiffe://<td>` for our bundle plus the caller's federated bundles (own trust domain never overridden). */
function bundleSetOf(update: WorkloadUpdate): BundleSet {
  const own = update.bundle.trustDomain;
  return new BundleSet([...update.federatedBundles.filter((b) => b.trustDomain !== own), update.bundle]);
}

export function composeX509SvidResponse(update: WorkloadUpdate): X509SVIDResponse {
  const bundle = update.bundle.x509AuthoritiesDer();
  const federated = new BundleSet(update.federatedBundles.filter((b) => b.trustDomain !== update.bundle.trustDomain));
  return {
    svids: update.identities.map((id) => ({
      spiffeId: id.spiffeId,
      x509Svid: Buffer.concat(id.chain),
      x509SvidKey: id.privateKeyPkcs8,
      bundle,
      hint: id.hint,
    })),
    crl: [],
    federatedBundles: federated.x509BundlesMap(),
  };
}

export function composeX509BundlesResponse(update: WorkloadUpdate): X509BundlesResponse {
  return { crl: [], bundles: bundleSetOf(update).x509BundlesMap() };
}

export function composeJwtBundlesResponse(update: WorkloadUpdate): JWTBundlesResponse {
  return { bundles: bundleSetOf(update).jwtBundlesMap() };
}

export function createWorkloadApiService(options: WorkloadApiServiceOptions): WorkloadApiService {
  const { cache, attestors, peerOf } = options;
  const log = options.logger;
  const now = options.now ?? (() => new Date());
  const limits = options.limits ?? new CallerLimits();
  /** Enders of open streams, for closeStreams(). */
  const open = new Set<StreamEnder>();

  const { peerOfCall, attest } = callerAttestation(peerOf, attestors);

  function unary<Req, Res>(method: string, check: (req: Req) => void, handle: (req: Req, admitted: Admitted) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      const abort = new AbortController();
      call.once('cancelled', () => abort.abort());
      const context = { method, peer: call.getPeer() };
      (async () => {
        checkHeader(call.metadata);
        const peer = peerOfCall(call);
        limits.admitCall(peer, 'workload');
        check(call.request);
        const selectors = await attest(peer, abort.signal);
        return handle(call.request, { peer, selectors });
      })().then(
        (res) => callback(null, res),
        (err: unknown) => {
          if (!abort.signal.aborted) callback(toStatus(err, log, context));
        },
      );
    };
  }

  /**
   * A stream following the cache subscription of the caller's selectors; `compose` makes the
   * message for an update with at least one identity.
   */
  function subscriptionStream<Res extends object>(method: string, encode: (res: Res) => Uint8Array, compose: (update: WorkloadUpdate) => Res) {
    // The cache hands streams whose callers match the same entries the same update object:
    // compose and encode it once for all of them (a rotation pushed to many streams).
    const messages = new WeakMap<WorkloadUpdate, Message<Res>>();
    const messageOf = (update: WorkloadUpdate): Message<Res> => {
      let m = messages.get(update);
      if (m === undefined) {
        const res = compose(update);
        const u8 = encode(res);
        const bytes = Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
        preEncoded.set(res, bytes);
        messages.set(update, (m = { res, bytes }));
      }
      return m;
    };
    return (call: ServerWritableStream<unknown, Res>): void => {
      const context = { method, peer: call.getPeer() };
      const life = new StreamEnd(call, open, log, context);
      const { endWith, fail } = life;
      let caller: PeerContext | undefined;
      /** When attestation last confirmed the caller (cleared by the first push). */
      let checkedAt: number | undefined;

      // Writer: skips repeats; while a message is not yet taken by the transport (the client
      // does not read, flow control holds it), only the newest next message waits: one in
      // flight and one pending at most, however many updates come.
      let last: Buffer | undefined;
      let inflight = false;
      let pending: Message<Res> | undefined;
      const send = (msg: Message<Res>): void => {
        if (life.ended) return;
        if (inflight) {
          pending = msg;
          return;
        }
        const { res, bytes } = msg;
        if (last !== undefined && (last === bytes || last.equals(bytes))) return;
        last = bytes;
        inflight = true;
        call.write(res, () => {
          inflight = false;
          const next = pending;
          pending = undefined;
          if (next !== undefined) send(next);
        });
      };
      const onUpdate = (update: WorkloadUpdate): void => {
        if (life.ended) return;
        // Re-checked before every push (a poll of the pidfd and a /proc read): a process that
        // inherited the connection after the caller exited gets no further SVIDs. Not again for
        // a message right behind attestation's own check (the first one, SVIDs already held):
        // that is the same check, microseconds earlier.
        const fresh = checkedAt !== undefined && performance.now() - checkedAt < FRESH_CHECK_MS;
        checkedAt = undefined;
        const changed = caller !== undefined && !fresh ? caller.whyNotSameProcess() : undefined;
        if (changed !== undefined) {
          endWith(GrpcStatus.UNAVAILABLE, `caller process changed: ${changed}; reconnect and retry`);
          log.debug({ ...context, reason: changed }, 'stream ended: caller process changed');
          return;
        }
        if (update.identities.length === 0 && update.unavailable !== undefined) {
          // Entitled, but nothing servable now (e.g. expired while the server is unreachable): retry.
          endWith(GrpcStatus.UNAVAILABLE, update.unavailable);
          log.warn(context, update.unavailable);
          return;
        }
        if (update.identities.length === 0) {
          endWith(GrpcStatus.PERMISSION_DENIED, 'no identity issued');
          log.debug(context, 'no identity issued');
          return;
        }
        let msg: Message<Res>;
        try {
          msg = messageOf(update);
        } catch (err) {
          fail(err);
          return;
        }
        send(msg);
      };

      (async () => {
        checkHeader(call.metadata);
        const peer = peerOfCall(call);
        limits.admitCall(peer, 'workload');
        life.release = limits.openStream(peer, 'workload');
        const selectors = await attest(peer, life.abort.signal);
        if (life.ended) return;
        caller = peer;
        checkedAt = performance.now(); // attest() has just checked stillSameProcess()
        let initialSent = false;
        let early: WorkloadUpdate | undefined;
        let sub: WorkloadSubscription;
        try {
          sub = life.sub = cache.subscribe(selectors, (update) => {
            if (initialSent) onUpdate(update);
            else early = update; // newer than the initial one, which has not arrived yet
          });
        } catch (err) {
          throw cacheError(err);
        }
        if (life.ended) {
          sub.close();
          return;
        }
        let initial: WorkloadUpdate;
        try {
          initial = await sub.initial;
        } catch (err) {
          throw err instanceof IdentityUnavailableError ? apiError(GrpcStatus.UNAVAILABLE, err.message, err) : cacheError(err);
        }
        initialSent = true;
        onUpdate(initial);
        if (early !== undefined) onUpdate(early);
        early = undefined;
      })().catch(fail);
    };
  }

  const implementation: SpiffeWorkloadAPIServer = {
    fetchX509Svid: subscriptionStream('FetchX509SVID', (r: X509SVIDResponse) => X509SVIDResponse.encode(r).finish(), composeX509SvidResponse),
    fetchX509Bundles: subscriptionStream('FetchX509Bundles', (r: X509BundlesResponse) => X509BundlesResponse.encode(r).finish(), composeX509BundlesResponse),
    fetchJwtBundles: subscriptionStream('FetchJWTBundles', (r: JWTBundlesResponse) => JWTBundlesResponse.encode(r).finish(), composeJwtBundlesResponse),

    fetchJwtsvid: unary<JWTSVIDRequest, JWTSVIDResponse>(
      'FetchJWTSVID',
      (req) => {
        if (req.audience.length === 0) throw apiError(GrpcStatus.INVALID_ARGUMENT, 'audience must be specified');
        if (req.audience.some((a) => a === '')) throw apiError(GrpcStatus.INVALID_ARGUMENT, 'audience must not contain empty values');
        // Checked here: the server refuses more, and its refusal would reach the caller as UNAVAILABLE (retried forever).
        const distinct = new Set(req.audience).size;
        if (distinct > MAX_JWT_SVID_AUDIENCES) {
          throw apiError(GrpcStatus.INVALID_ARGUMENT, `too many audiences: ${distinct} distinct values, at most ${MAX_JWT_SVID_AUDIENCES} per JWT-SVID request; request several JWT-SVIDs with fewer audiences each`);
        }
        if (req.spiffeId !== '') {
          try {
            parseSpiffeId(req.spiffeId);
          } catch (err) {
            throw apiError(GrpcStatus.INVALID_ARGUMENT, `invalid requested SPIFFE ID: ${(err as Error).message}`, err);
          }
        }
      },
      async (req, { selectors }) => {
        const wanted: SpiffeId | undefined = req.spiffeId === '' ? undefined : parseSpiffeId(req.spiffeId);
        let jwts;
        try {
          jwts = await cache.fetchJwt(selectors, [...new Set(req.audience)], wanted);
        } catch (err) {
          throw cacheError(err);
        }
        if (wanted !== undefined) jwts = jwts.filter((j) => j.spiffeId === wanted);
        if (jwts.length === 0) {
          throw apiError(GrpcStatus.PERMISSION_DENIED, wanted === undefined ? 'no identity issued' : `no identity issued for ${JSON.stringify(wanted)}`);
        }
        return { svids: jwts.map((j) => ({ spiffeId: j.spiffeId, svid: j.token, hint: j.hint })) };
      },
    ),

    validateJwtsvid: unary<ValidateJWTSVIDRequest, ValidateJWTSVIDResponse>(
      'ValidateJWTSVID',
      (req) => {
        if (req.audience === '') throw apiError(GrpcStatus.INVALID_ARGUMENT, 'audience must be specified');
        if (req.svid === '') throw apiError(GrpcStatus.INVALID_ARGUMENT, 'svid must be specified');
      },
      async (req) => {
        // A SpiffeError (bad or untrusted token) becomes INVALID_ARGUMENT with its reason (toStatus).
        const v = await validateJwtSvid(req.svid, { audience: req.audience, bundles: cache.bundles(), now: now() });
        return { spiffeId: v.id, claims: v.claims };
      },
    ),
  };

  return {
    implementation,
    limits,
    get openStreams() {
      return open.size;
    },
    closeStreams() {
      for (const end of [...open]) end(GrpcStatus.UNAVAILABLE, 'the agent is shutting down');
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The endpoint: listener + Workload API + health on one socket

export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024;
export const DEFAULT_MAX_SEND_MESSAGE_BYTES = 16 * 1024 * 1024;
const SHUTDOWN_GRACE_MS = 1000;

export interface WorkloadEndpointLimits extends Partial<CallerLimitSettings>, Partial<ConnectionLimitSettings> {
  /** Default 64 KiB. */
  maxReceiveMessageBytes?: number;
  /** Default 16 MiB. */
  maxSendMessageBytes?: number;
}

export interface ExtraService {
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
  /** Called first by the endpoint's close() (e.g. to end the service's open streams). */
  close?: () => void;
}

export interface WorkloadEndpointOptions {
  socketPath: string;
  cache: IdentityCache;
  attestors: readonly WorkloadAttestor[];
  logger: EndpointLogger;
  limits?: WorkloadEndpointLimits;
  /** Other services on the same socket (e.g. SDS), built with the endpoint's peerOf and per-caller limits. */
  extraServices?: (peerOf: PeerOf, limits: CallerLimits) => ExtraService[];
  /** Default /proc (peer start-time and uid checks). */
  procRoot?: string;
  /** Default: the built peercred addon. */
  native?: PeerCredNative;
  now?: () => Date;
  /** Monotonic clock in ms for the rate limits (default performance.now). */
  limitsClock?: () => number;
}

export interface WorkloadEndpoint {
  readonly socketPath: string;
  readonly peerOf: PeerOf;
  /** The per-caller limits (their stats() feed the agent's metrics). */
  readonly limits: CallerLimits;
  /** The connection limits of the socket (their stats() feed the agent's metrics too). */
  readonly connections: ConnectionLimiter;
  /** Ends open streams with UNAVAILABLE, stops the server, closes connections and removes the socket. Idempotent. */
  close(): Promise<void>;
}

/**
 * The agent's public endpoint: one Unix socket (listener.ts) serving the SPIFFE Workload API and
 * grpc.health.v1.Health (and, through `extraServices`, other local APIs such as SDS, whose
 * handlers get the same `peerOf`).
 *
 * Limits, set deliberately:
 * - receive 64 KiB per message: every Workload API request is tiny (ValidateJWTSVID's token is the
 *   largest, and JWT-SVIDs over 64 KiB are refused by the validator anyway);
 * - send 16 MiB per message: an X509SVIDResponse carries every identity of the caller with chains,
 *   keys and federated bundles; generous, yet bounded;
 * - per caller process (limits.ts), shared by the Workload API and SDS: `ratePerPid` calls and
 *   stream opens per second with a burst of `burstPerPid` (default 100/s, 200), and
 *   `maxStreamsPerPid` open streams (default 100) -> RESOURCE_EXHAUSTED; optional per-uid
 *   aggregates (off by default); health Watch has its own per-process stream budget;
 * - HTTP/2 max concurrent streams per connection = the stream budget + 64 (room for unary
 *   calls), so a flood on one connection meets RESOURCE_EXHAUSTED instead of silent client-side
 *   queueing (no per-connection cap when the stream limit is off);
 * - connections (connlimits.ts): `maxConnections` in all (default 8192), `maxConnsPerUid` per uid
 *   (2048, leaving the rest to other uids) and `maxConnsPerPid` per process (256), further ones
 *   closed at accept; a connection without an open stream for `idleTimeoutSeconds` (120) is
 *   closed with GOAWAY (grpc-js max_connection_idle_ms);
 * - channelz off (nothing serves it; it costs per connection and per call).
 *
 * Server reflection (reflection.ts) lists the Workload API and health services. The socket is not
 * TLS: SPIFFE clients speak plaintext HTTP/2 over the Unix socket, and the caller is
 * authenticated by attestation, not by a certificate.
 */
export async function startWorkloadEndpoint(options: WorkloadEndpointOptions): Promise<WorkloadEndpoint> {
  const log = options.logger;
  const limits = options.limits ?? {};
  const { maxConnections, maxConnsPerUid, maxConnsPerPid, idleTimeoutSeconds, maxReceiveMessageBytes, maxSendMessageBytes, ...callerSettings } = limits;
  const connections = new ConnectionLimiter({ maxConnections, maxConnsPerUid, maxConnsPerPid, idleTimeoutSeconds });
  const idleSeconds = connections.settings.idleTimeoutSeconds;
  const callerLimits = new CallerLimits(callerSettings, options.limitsClock ? { now: options.limitsClock } : {});
  const maxStreams = callerLimits.settings.maxStreamsPerPid;
  const server = new Server({
    'grpc.max_receive_message_length': maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    'grpc.max_send_message_length': maxSendMessageBytes ?? DEFAULT_MAX_SEND_MESSAGE_BYTES,
    ...(maxStreams > 0 ? { 'grpc.max_concurrent_streams': maxStreams + 64 } : {}),
    // Counted from accept, and again from the end of a connection's last stream: a connection
    // that never opens a stream is closed as well (GOAWAY, then the socket).
    ...(idleSeconds > 0 ? { 'grpc.max_connection_idle_ms': idleSeconds * 1000 } : {}),
    // Nothing reads channelz here (no admin service exposes it), and its per-connection and
    // per-call bookkeeping costs CPU and memory on a socket with thousands of workloads.
    'grpc.enable_channelz': 0,
  });
  let peerOf: PeerOf = () => undefined;
  const lazyPeerOf: PeerOf = (call) => peerOf(call);

  const workload = createWorkloadApiService({
    cache: options.cache,
    attestors: options.attestors,
    peerOf: lazyPeerOf,
    logger: log.child({ component: 'workload_api' }),
    limits: callerLimits,
    ...(options.now ? { now: options.now } : {}),
  });
  server.addService(WORKLOAD_API_SERVICE, workload.implementation);
  const extra = options.extraServices?.(lazyPeerOf, callerLimits) ?? [];
  for (const s of extra) server.addService(s.definition, s.implementation);
  server.addService(HealthService, createWorkloadHealthService([SpiffeWorkloadAPIClient.serviceName, ...extra.map((s) => s.name)], lazyPeerOf, new StreamLimiter(maxStreams)));
  addReflection(server);

  const listener = await listenWorkloadSocket({
    socketPath: options.socketPath,
    server,
    logger: log.child({ component: 'workload_listener' }),
    connections,
    ...(options.procRoot ? { procRoot: options.procRoot } : {}),
    ...(options.native ? { native: options.native } : {}),
  });
  peerOf = listener.peerOf;
  log.info({ socketPath: listener.socketPath }, 'Workload API listening');

  let closing: Promise<void> | undefined;
  return {
    socketPath: listener.socketPath,
    peerOf: lazyPeerOf,
    limits: callerLimits,
    connections,
    close(): Promise<void> {
      closing ??= (async () => {
        for (const s of extra) {
          try {
            s.close?.();
          } catch (err) {
            log.error({ err, service: s.name }, 'error closing service');
          }
        }
        await listener.stopAccepting();
        workload.closeStreams();
        await new Promise<void>((done) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            done();
          }, SHUTDOWN_GRACE_MS);
          timer.unref();
          server.tryShutdown(() => {
            clearTimeout(timer);
            done();
          });
        });
        await listener.close();
        log.info({ socketPath: listener.socketPath }, 'Workload API stopped');
      })();
      return closing;
    },
  };
}

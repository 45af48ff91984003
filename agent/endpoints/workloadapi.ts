/**
 * The SPIFFE Workload API over the agent's identity cache (assembled with SDS, health and
 * reflection on the agent socket by endpoint.ts).
 *
 * Every call, in this order (steps 2 and 4 to 6 are the admission path shared with SDS,
 * admission.ts):
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
import { status as GrpcStatus, type Metadata, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import type { IdentityCache, WorkloadUpdate } from '../manager/types.js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import { BundleSet } from '../../spiffe/bundle.js';
import { parseSpiffeId, type SpiffeId } from '../../spiffe/id.js';
import { MAX_JWT_SVID_AUDIENCES, validateJwtSvid } from '../../spiffe/jwtsvid.js';
import {
  JWTBundlesResponse,
  JWTSVIDResponse,
  SpiffeWorkloadAPIService,
  X509BundlesResponse,
  X509SVIDResponse,
  type JWTSVIDRequest,
  type SpiffeWorkloadAPIServer,
  type ValidateJWTSVIDRequest,
  type ValidateJWTSVIDResponse,
} from '../../proto/gen/workload/workload.js';
import { apiError } from './errors.js';
import { Admission, unaryCall, type AdmittedCaller } from './admission.js';
import { cacheError, StreamEnd, type StreamEnder } from './caller.js';
import { CallerLimits } from './limits.js';
import type { EndpointLogger, PeerContext, PeerOf } from './types.js';

export const SECURITY_HEADER = 'workload.spiffe.io';
/**
 * Fast path: a caller confirmed this recently (attestation's own same-process check) is not
 * re-checked for its first push, which saves a pidfd poll and a /proc read per stream opened.
 * It buys first-response latency when many streams open at once (docs/performance.md, row
 * "Fan-out": 1,000 FetchX509SVID streams opened at once).
 */
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
 * Fast path, pre-encoded messages: responses encoded already (by the streams, to compare with
 * the last one sent and skip repeats), so the service definition's serializer sends those bytes
 * instead of encoding the same message again. With `messageOf` below (one compose and encode per
 * cache update, shared by every stream that gets the same update) this is what keeps a rotation
 * pushed to 1,000 streams near the raw socket write floor (docs/performance.md, row "Rotation
 * push").
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

  const admission = new Admission({ peerOf, attestors, limits, cache, kind: 'workload' });

  /** Security header, then the shared admission with this method's request checks. */
  function unary<Req, Res>(method: string, check: (req: Req) => void, handle: (req: Req, admitted: AdmittedCaller) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void =>
      unaryCall(call, callback, log, method, async (signal) => {
        checkHeader(call.metadata);
        const admitted = await admission.admitCall(call, signal, () => check(call.request));
        return handle(call.request, admitted);
      });
  }

  /**
   * A stream following the cache subscription of the caller's selectors; `compose` makes the
   * message for an update with at least one identity.
   */
  function subscriptionStream<Res extends object>(method: string, encode: (res: Res) => Uint8Array, compose: (update: WorkloadUpdate) => Res) {
    // Fast path: the cache hands streams whose callers match the same entries the same update
    // object: compose and encode it once for all of them (a rotation pushed to many streams;
    // docs/performance.md, row "Rotation push"). The bytes feed `preEncoded` above.
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
        await admission.openSubscription(
          call,
          life,
          {
            admitted(peer) {
              caller = peer;
              checkedAt = performance.now(); // attestation has just checked whyNotSameProcess()
            },
            initial(initial, early) {
              onUpdate(initial);
              if (early !== undefined) onUpdate(early);
            },
            update: onUpdate,
          },
          { explainUnavailable: true },
        );
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

/**
 * The agent API (spindle.agent.v1.AgentAPI), served over TCP with mutual TLS.
 *
 * Every call except AttestAgent and GetBundle authenticates the caller by its agent X509-SVID
 * (the TLS client certificate): it must verify against our bundle, name an agent of our trust
 * domain, belong to an attested node that is neither banned nor evicted, and carry the node's
 * current serial (or the serial of the SVID issued by the last renewal, which then becomes
 * current and retires the old one). Identity in anything signed comes from the registration
 * entry the agent is authorized for, never from the request.
 */
import { status as GrpcStatus, type handleUnaryCall, type ServerUnaryCall, type ServerDuplexStream, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import { verifyX509Svid, type CertificateInfo } from '../../../spiffe/x509/index.js';
import { verifyCsrForIssuance } from '../../../spiffe/x509/csr.js';
import { isMemberOf, pathOf, type SpiffeId, type TrustDomain } from '../../../spiffe/id.js';
import { marshalBundle, type Bundle } from '../../../spiffe/bundle.js';
import { MAX_JWT_SVID_AUDIENCES } from '../../../spiffe/jwtsvid.js';
import type {
  AgentAPIServer,
  AttestAgentRequest,
  AttestAgentResponse,
  SyncAuthorizedRequest,
  SyncAuthorizedResponse,
} from '../../../proto/gen/spindle/agent/v1/agent.js';
import type { Bundle as ProtoBundle, X509SVID } from '../../../proto/gen/spindle/types/v1/types.js';
import type { AttestedNode, DataStore, RegistrationEntry } from '../../datastore/types.js';
import type { CaSigner, SignedX509Svid } from '../../ca/types.js';
import type { AuthorizationCache, AgentChange } from '../../entries/authcache.js';
import type { ChangeFeed } from '../../entries/feed.js';
import { AttestationError, AGENT_PATH_PREFIX, type ServerNodeAttestor } from '../../../attestors/node/types.js';
import { peerCertificateDer, type AuthContextCall } from './peer.js';
import { encodeSyncResponse } from './syncencode.js';
import { ApiError, statusOf, toServiceError, unary, OK_STATUS } from '../errors.js';
import type { ApiLogger } from '../logger.js';

/** What the agent API counts (implemented by server/metrics.ts); labels are bounded values only. */
export interface AgentApiMetrics {
  x509SvidSigned(kind: 'workload' | 'agent', count?: number): void;
  jwtSvidMinted(): void;
  /** `attestor`: the requested attestor type, or undefined before it is known. */
  nodeAttestation(attestor: string | undefined, result: 'ok' | 'denied' | 'error'): void;
  /** An AttestAgent stream refused with RESOURCE_EXHAUSTED by one of the attestation limits. */
  attestationRefused?(limit: AttestationLimit): void;
}

/** Which limit refused an attestation stream (a metric label). */
export type AttestationLimit = 'in_progress_total' | 'in_progress_per_address';
export const ATTESTATION_LIMITS: readonly AttestationLimit[] = ['in_progress_total', 'in_progress_per_address'];

const NO_METRICS: AgentApiMetrics = { x509SvidSigned: () => undefined, jwtSvidMinted: () => undefined, nodeAttestation: () => undefined };

export interface AgentApiDeps {
  trustDomain: TrustDomain;
  datastore: DataStore;
  ca: CaSigner;
  attestors: ReadonlyMap<string, ServerNodeAttestor>;
  cache: AuthorizationCache;
  feed: ChangeFeed;
  now: () => Date;
  /** Lifetime of agent SVIDs (config agent_ttl). */
  agentTtlSeconds: number;
  logger: ApiLogger;
  metrics?: AgentApiMetrics;
}

/** Upper bound of CSRs in one BatchNewX509SVID call. */
export const MAX_CSRS_PER_BATCH = 1000;
/** Upper bound of audiences in one JWT-SVID request. */
export const MAX_AUDIENCES = MAX_JWT_SVID_AUDIENCES;
/**
 * How long after an AttestAgent stream opens the agent may take to send what the server waits
 * for (its params, then any challenge response): the stream is refused when the deadline
 * passes. Agents send their params at once (join_token needs no further round trip, k8s_psat
 * one TokenReview by the server); the attestor's own outbound calls are bounded by their own
 * timeouts (k8s API: 10 s per request).
 */
export const ATTESTATION_TIMEOUT_MS = 10_000;
/**
 * AttestAgent streams in progress at once (unauthenticated: anyone who can reach the port may
 * open them), over all callers and per remote address. Beyond either, a new stream is refused
 * with RESOURCE_EXHAUSTED before anything is read. An attestation holds its slot until it ends
 * (at most ATTESTATION_TIMEOUT_MS waiting for the agent).
 */
export const MAX_ATTESTATIONS_IN_PROGRESS = 1024;
export const MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS = 64;
/** AttestAgent messages buffered ahead of the server reading them (params, one challenge response). */
const MAX_QUEUED_ATTESTATION_MESSAGES = 4;
/** Agent certificates whose chain verification is remembered (see #authenticate). */
export const MAX_VERIFIED_AGENT_CERTS = 4096;
/** Longest a remembered chain verification is reused before the chain is verified again. */
export const VERIFIED_AGENT_CERT_TTL_MS = 60_000;
/**
 * Open SyncAuthorized streams one agent may hold. spindle-agent keeps one (two for a moment
 * while it moves to a renewed SVID); more is a misbehaving or hostile client.
 */
export const MAX_SYNC_STREAMS_PER_AGENT = 8;
/**
 * Bounds on what a sync stream may have queued (written, not yet taken by the transport because
 * the agent does not read). Sync messages are deltas: they cannot be merged or dropped, so a
 * stream over a bound is ended with RESOURCE_EXHAUSTED instead, and the agent reconnects and
 * resumes from the entries it holds. Over SOFT with no progress for STALL_MS, or over HARD at
 * all; the first message of a stream (the snapshot) is never refused, whatever its size.
 */
export const SYNC_BACKLOG_SOFT_BYTES = 1024 * 1024;
export const SYNC_BACKLOG_HARD_BYTES = 16 * 1024 * 1024;
export const SYNC_BACKLOG_STALL_MS = 5_000;

const denied = (message: string): ApiError => new ApiError(GrpcStatus.PERMISSION_DENIED, message);
const unauthenticated = (message: string): ApiError => new ApiError(GrpcStatus.UNAUTHENTICATED, message);
const invalid = (message: string): ApiError => new ApiError(GrpcStatus.INVALID_ARGUMENT, message);

function svidToProto(id: SpiffeId, s: SignedX509Svid): X509SVID {
  return { spiffeId: id, certChain: s.chain, expiresAt: BigInt(Math.floor(s.notAfter.getTime() / 1000)), serial: s.serialHex };
}

interface Caller {
  agentId: SpiffeId;
  node: AttestedNode;
  /** End of the presented certificate chain's common validity (ms since the epoch). */
  certNotAfter: number;
}

/** A chain verification that succeeded, for one agent certificate (DER) and the current bundle. */
interface VerifiedAgentCert {
  agentId: SpiffeId;
  serialHex: string;
  /** The verified path's common validity window (ms): max notBefore, min notAfter. */
  notBefore: number;
  notAfter: number;
  verifiedAt: number;
}

/** One open SyncAuthorized stream. */
interface SyncStream {
  agentId: SpiffeId;
  call: ServerWritableStream<SyncAuthorizedRequest, SyncAuthorizedResponse>;
  /** Trust domain -> sequence of the bundles this stream has been sent. */
  bundleSequences: Map<string, bigint>;
  /** Ends the stream when the agent's certificate expires (cleared when the stream goes). */
  expiryTimer: NodeJS.Timeout | undefined;
  /** Bytes written to the call and not yet taken by the transport. */
  queued: number;
  /** When the transport last took a message (or the backlog last became non-empty). */
  lastProgress: number;
  /** Ended for its backlog: nothing more is written. */
  cut: boolean;
}

/** A grpc-js unary handler around an async function of (request, call); failures via toServiceError. */
function withCall<Req, Res>(
  log: ApiLogger,
  method: string,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toServiceError(err, log, { method })),
    );
  };
}

export class AgentApi {
  readonly #d: AgentApiDeps;
  readonly #log: ApiLogger;
  readonly #metrics: AgentApiMetrics;
  readonly #streams = new Map<SpiffeId, Set<SyncStream>>();
  #unsubscribe: (() => void) | undefined;
  #unsubscribeBundle: (() => void) | undefined;
  /**
   * Agent certificates (base64 DER) whose chain verified against the current bundle and that
   * name an agent of this trust domain. Cleared whenever the CA's bundle changes; entries expire
   * with the verified path's validity and after VERIFIED_AGENT_CERT_TTL_MS; insertion-ordered,
   * oldest dropped beyond MAX_VERIFIED_AGENT_CERTS. Only successes are kept.
   */
  readonly #verified = new Map<string, VerifiedAgentCert>();
  /** See #ownBundleNow; dropped on every bundle change. */
  #ownBundle: { bundle: Bundle; proto: ProtoBundle } | undefined;
  /** AttestAgent streams in progress: in all, and by remote address. */
  #attesting = 0;
  readonly #attestingByAddress = new Map<string, number>();

  constructor(deps: AgentApiDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ subsystem: 'agent_api' });
    this.#metrics = deps.metrics ?? NO_METRICS;
    this.#unsubscribe = deps.feed.subscribe({
      entries: (changes, revision) => this.#pushEntries(changes, revision),
      node: (agentId, revision) => void this.#checkNode(agentId, revision),
      bundle: () => void this.#pushBundles(),
    });
    this.#unsubscribeBundle = deps.ca.onBundleChange(() => {
      this.#verified.clear();
      this.#ownBundle = undefined;
    });
  }

  /** Number of open sync streams (for metrics and tests). */
  get openStreams(): number {
    let n = 0;
    for (const set of this.#streams.values()) n += set.size;
    return n;
  }

  /** AttestAgent streams in progress now (for metrics and tests). */
  get attestationsInProgress(): number {
    return this.#attesting;
  }

  /** Ends every stream (shutdown). */
  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribeBundle?.();
    this.#verified.clear();
    for (const set of this.#streams.values())
      for (const s of set) {
        clearTimeout(s.expiryTimer);
        s.call.end();
      }
    this.#streams.clear();
  }

  service(): AgentAPIServer {
    return {
      attestAgent: (call) => this.#attest(call),
      renewAgent: withCall(this.#log, 'RenewAgent', async (req, call) => {
        const caller = await this.#authenticate(call);
        const svid = this.#d.ca.signX509Svid({ id: caller.agentId, csr: req.csr, ttlSeconds: this.#d.agentTtlSeconds });
        this.#metrics.x509SvidSigned('agent');
        const node = await this.#d.datastore.getAttestedNode(caller.agentId);
        if (!node) throw denied('agent has been evicted');
        await this.#d.datastore.updateAttestedNode(
          { ...node, newCertSerial: svid.serialHex, newCertNotAfter: Math.floor(svid.notAfter.getTime() / 1000) },
          this.#nowSeconds(),
        );
        this.#log.info({ agent_id: caller.agentId, serial: svid.serialHex }, 'renewed agent SVID');
        return { svid: svidToProto(caller.agentId, svid) };
      }),
      syncAuthorized: (call) => void this.#sync(call),
      batchNewX509Svid: withCall(this.#log, 'BatchNewX509SVID', async (req, call) => {
        const caller = await this.#authenticate(call);
        if (req.params.length > MAX_CSRS_PER_BATCH) throw invalid(`too many CSRs in one batch: ${req.params.length} (at most ${MAX_CSRS_PER_BATCH})`);
        const entries = this.#authorizedMap(caller);
        type Result = { status: { code: number; message: string }; svid: X509SVID | undefined };
        const results: Result[] = new Array<Result>(req.params.length);
        // Identity (SPIFFE ID, DNS names, TTL) from the authorized entry only; the CSR gives the key.
        const toSign: Array<{ at: number; entry: RegistrationEntry; req: { id: SpiffeId; csr: Buffer; dnsNames: readonly string[]; ttlSeconds: number | undefined } }> = [];
        req.params.forEach((p, at) => {
          const entry = entries.get(p.entryId);
          if (!entry) {
            results[at] = { status: { code: GrpcStatus.PERMISSION_DENIED, message: `entry ${JSON.stringify(p.entryId)} is not authorized for this agent` }, svid: undefined };
            return;
          }
          toSign.push({ at, entry, req: { id: entry.spiffeId, csr: p.csr, dnsNames: entry.dnsNames, ttlSeconds: entry.x509SvidTtl || undefined } });
        });
        const ca = this.#d.ca;
        const signed: Array<SignedX509Svid | Error> = ca.signX509SvidBatch
          ? await ca.signX509SvidBatch(toSign.map((t) => t.req))
          : toSign.map((t) => {
              try {
                return ca.signX509Svid(t.req);
              } catch (err) {
                return err instanceof Error ? err : new Error(String(err));
              }
            });
        let ok = 0;
        toSign.forEach((t, k) => {
          const s = signed[k]!;
          if (s instanceof Error) {
            results[t.at] = { status: statusOf(s, this.#log, { method: 'BatchNewX509SVID', entry_id: t.entry.id }), svid: undefined };
          } else {
            results[t.at] = { status: OK_STATUS, svid: svidToProto(t.entry.spiffeId, s) };
            ok++;
          }
        });
        this.#metrics.x509SvidSigned('workload', ok);
        return { results };
      }),
      newJwtsvid: withCall(this.#log, 'NewJWTSVID', async (req, call) => {
        const caller = await this.#authenticate(call);
        const entry = this.#authorizedEntry(caller, req.entryId);
        if (!entry) throw denied(`entry ${JSON.stringify(req.entryId)} is not authorized for this agent`);
        if (req.audience.length === 0 || req.audience.some((a) => a === '')) throw invalid('audience is required and must not contain empty values');
        if (req.audience.length > MAX_AUDIENCES) throw invalid(`too many audiences (at most ${MAX_AUDIENCES})`);
        const jwt = await this.#d.ca.mintJwtSvid({ id: entry.spiffeId, audience: req.audience, ttlSeconds: entry.jwtSvidTtl || undefined });
        this.#metrics.jwtSvidMinted();
        const secs = (d: Date): bigint => BigInt(Math.floor(d.getTime() / 1000));
        return { svid: { token: jwt.token, spiffeId: entry.spiffeId, expiresAt: secs(jwt.expiresAt), issuedAt: secs(jwt.issuedAt) } };
      }),
      getBundle: unary(this.#log, 'GetBundle', async () => ({ bundle: this.#ownBundleProto() })),
    };
  }

  #nowSeconds(): number {
    return Math.floor(this.#d.now().getTime() / 1000);
  }

  /** The current bundle and its protobuf form, copied and marshalled once per bundle change. */
  #ownBundleNow(): { bundle: Bundle; proto: ProtoBundle } {
    if (this.#ownBundle === undefined) {
      const b = this.#d.ca.bundle();
      this.#ownBundle = { bundle: b, proto: { trustDomain: b.trustDomain, document: Buffer.from(marshalBundle(b)), sequence: b.sequence } };
    }
    return this.#ownBundle;
  }

  #ownBundleProto(): ProtoBundle {
    return this.#ownBundleNow().proto;
  }

  /**
   * The caller's agent identity from its TLS client certificate; throws a gRPC-mapped error.
   * The chain verification (and the agent-ID shape check) of a certificate is remembered in
   * #verified; the node checks (attested, not banned, serial current) run on every call.
   */
  async #authenticate(call: AuthContextCall): Promise<Caller> {
    const der = peerCertificateDer(call);
    if (der === undefined) throw unauthenticated('no valid agent X509-SVID was presented (the TLS client certificate is missing, expired, or not signed by this trust domain)');
    const { agentId, serialHex: serial, notAfter: certNotAfter } = this.#verifyAgentCert(der);
    let node = await this.#d.datastore.getAttestedNode(agentId);
    if (!node) throw denied(`agent ${agentId} is not attested (evicted?): attest again`);
    if (node.banned) throw denied(`agent ${agentId} is banned`);
    if (serial !== node.certSerial) {
      if (node.newCertSerial === '' || serial !== node.newCertSerial) {
        throw denied(`agent SVID serial ${serial} has been superseded; use the current agent SVID`);
      }
      // First use of the renewed SVID: it becomes current and the old serial is retired.
      node = await this.#d.datastore.updateAttestedNode(
        { ...node, certSerial: node.newCertSerial, certNotAfter: node.newCertNotAfter, newCertSerial: '', newCertNotAfter: 0 },
        this.#nowSeconds(),
      );
    }
    return { agentId, node, certNotAfter };
  }

  /** Chain verification against the current bundle, remembered per certificate (see #verified). */
  #verifyAgentCert(der: Buffer): VerifiedAgentCert {
    const now = this.#d.now();
    const t = now.getTime();
    const key = der.toString('base64');
    const hit = this.#verified.get(key);
    if (hit !== undefined) {
      if (t >= hit.notBefore && t <= hit.notAfter && t - hit.verifiedAt >= 0 && t - hit.verifiedAt < VERIFIED_AGENT_CERT_TTL_MS) return hit;
      this.#verified.delete(key);
    }
    let certs: CertificateInfo[];
    let agentId: SpiffeId;
    try {
      ({ id: agentId, certificates: certs } = verifyX509Svid([der, ...(this.#d.ca.intermediates?.() ?? [])], this.#ownBundleNow().bundle, { now }));
    } catch (err) {
      throw unauthenticated(`agent SVID is not valid: ${(err as Error).message}`);
    }
    if (!isMemberOf(agentId, this.#d.trustDomain) || !pathOf(agentId).startsWith(`${AGENT_PATH_PREFIX}/`)) {
      throw denied(`${agentId} is not an agent ID of this trust domain`);
    }
    const v: VerifiedAgentCert = {
      agentId,
      serialHex: certs[0]!.serialHex,
      notBefore: Math.max(...certs.map((c) => c.notBefore.getTime())),
      notAfter: Math.min(...certs.map((c) => c.notAfter.getTime())),
      verifiedAt: t,
    };
    this.#verified.set(key, v);
    if (this.#verified.size > MAX_VERIFIED_AGENT_CERTS) this.#verified.delete(this.#verified.keys().next().value!);
    return v;
  }

  /** The authorized entry `entryId` of the caller, if any. */
  #authorizedEntry(caller: Caller, entryId: string): RegistrationEntry | undefined {
    const cache = this.#d.cache;
    const tracked = cache.entryFor(caller.agentId, entryId);
    if (tracked !== null) return tracked;
    // No open sync stream: compute from the index without tracking the agent.
    return cache.index.authorizedEntries(caller.agentId, caller.node.selectors).find((e) => e.id === entryId);
  }

  #authorizedMap(caller: Caller): Map<string, RegistrationEntry> {
    const cache = this.#d.cache;
    let entries = cache.entriesFor(caller.agentId);
    if (entries === undefined) {
      // No open sync stream: compute from the index without tracking the agent.
      entries = cache.index.authorizedEntries(caller.agentId, caller.node.selectors);
    }
    return new Map(entries.map((e) => [e.id, e]));
  }

  // ---- AttestAgent

  /**
   * Admits an AttestAgent stream within the in-progress limits (total and per remote address),
   * or refuses it with RESOURCE_EXHAUSTED before reading anything. The slot is held until the
   * attestation ends.
   */
  #attest(call: ServerDuplexStream<AttestAgentRequest, AttestAgentResponse>): void {
    const address = remoteAddressOf(call.getPeer());
    const fromAddress = this.#attestingByAddress.get(address) ?? 0;
    let refusal: { limit: AttestationLimit; message: string } | undefined;
    if (this.#attesting >= MAX_ATTESTATIONS_IN_PROGRESS) {
      refusal = { limit: 'in_progress_total', message: `too many agent attestations in progress on this server (at most ${MAX_ATTESTATIONS_IN_PROGRESS} at once); try again shortly` };
    } else if (fromAddress >= MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS) {
      refusal = {
        limit: 'in_progress_per_address',
        message: `too many agent attestations in progress from ${address} (at most ${MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS} at once per remote address); try again shortly`,
      };
    }
    if (refusal !== undefined) {
      // Not logged one by one (a flood would flood the log too): counted instead.
      this.#metrics.attestationRefused?.(refusal.limit);
      call.emit('error', { code: GrpcStatus.RESOURCE_EXHAUSTED, details: refusal.message } as Partial<ServiceError>);
      return;
    }
    this.#attesting++;
    this.#attestingByAddress.set(address, fromAddress + 1);
    void this.#runAttestation(call).finally(() => {
      this.#attesting--;
      const n = (this.#attestingByAddress.get(address) ?? 1) - 1;
      if (n > 0) this.#attestingByAddress.set(address, n);
      else this.#attestingByAddress.delete(address);
    });
  }

  async #runAttestation(call: ServerDuplexStream<AttestAgentRequest, AttestAgentResponse>): Promise<void> {
    const log = this.#log;
    const deadline = Date.now() + ATTESTATION_TIMEOUT_MS;
    const queue: AttestAgentRequest[] = [];
    let waiting: ((m: AttestAgentRequest | undefined) => void) | undefined;
    let ended = false;
    /** The agent sent more than the attestation can have asked for (not kept). */
    let overflow = false;
    call.on('data', (m: AttestAgentRequest) => {
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        w(m);
      } else if (queue.length < MAX_QUEUED_ATTESTATION_MESSAGES) queue.push(m);
      else overflow = true;
    });
    const finish = (): void => {
      ended = true;
      waiting?.(undefined);
    };
    call.on('end', finish);
    call.on('error', finish);
    call.on('cancelled', finish);
    const next = (): Promise<AttestAgentRequest | undefined> => {
      if (overflow) return Promise.reject(invalid('the agent sent more AttestAgent messages than the attestation asked for'));
      const m = queue.shift();
      if (m) return Promise.resolve(m);
      if (ended) return Promise.resolve(undefined);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new AttestationError('timeout', `timed out waiting for the agent's attestation data (an attestation must complete within ${ATTESTATION_TIMEOUT_MS / 1000} s)`)),
          Math.max(0, deadline - Date.now()),
        );
        waiting = (v) => {
          clearTimeout(t);
          resolve(v);
        };
      });
    };
    let attestorType: string | undefined;
    try {
      const first = await next();
      if (first?.step?.$case !== 'params') throw invalid('the first AttestAgent message must carry params');
      const { data, csr } = first.step.value;
      if (!data || data.type === '') throw invalid('attestation data type is required');
      if (csr.length === 0) throw invalid('a CSR is required');
      attestorType = data.type;
      const attestor = this.#d.attestors.get(data.type);
      if (!attestor) throw invalid(`node attestor ${JSON.stringify(data.type)} is not enabled on this server`);
      // The CSR is checked before the attestor runs: attestors may consume their evidence (a
      // join token is single-use), which a request that cannot be signed must not burn.
      verifyCsrForIssuance(csr);
      const result = await attestor.attest(data.payload, {
        trustDomain: this.#d.trustDomain,
        datastore: this.#d.datastore,
        now: this.#d.now,
        challenge: async (challenge) => {
          call.write({ step: { $case: 'challenge', value: challenge } });
          const answer = await next();
          if (answer?.step?.$case !== 'challengeResponse') throw new AttestationError('challenge', 'expected a challenge response');
          return answer.step.value;
        },
      });
      const existing = await this.#d.datastore.getAttestedNode(result.agentId);
      if (existing?.banned) throw denied(`agent ${result.agentId} is banned`);
      if (existing && !existing.canReattest) throw denied(`agent ${result.agentId} has already attested and cannot re-attest`);
      const svid = this.#d.ca.signX509Svid({ id: result.agentId, csr, ttlSeconds: this.#d.agentTtlSeconds });
      this.#metrics.x509SvidSigned('agent');
      const record = {
        spiffeId: result.agentId,
        attestationType: attestor.name,
        certSerial: svid.serialHex,
        certNotAfter: Math.floor(svid.notAfter.getTime() / 1000),
        newCertSerial: '',
        newCertNotAfter: 0,
        selectors: result.selectors,
        banned: false,
        canReattest: result.canReattest,
      };
      const now = this.#nowSeconds();
      if (existing) await this.#d.datastore.updateAttestedNode({ ...existing, ...record }, now);
      else await this.#d.datastore.createAttestedNode(record, now);
      log.info({ agent_id: result.agentId, attestor: attestor.name, serial: svid.serialHex }, 'agent attested');
      this.#metrics.nodeAttestation(attestor.name, 'ok');
      call.write({ step: { $case: 'result', value: { svid: svidToProto(result.agentId, svid), reattestable: result.canReattest } } });
      call.end();
    } catch (err) {
      const st =
        err instanceof AttestationError
          ? (log.warn({ reason: err.reason }, 'node attestation refused'), { code: GrpcStatus.PERMISSION_DENIED, message: `attestation failed: ${err.message}` })
          : statusOf(err, log, { method: 'AttestAgent' });
      this.#metrics.nodeAttestation(attestorType, st.code === GrpcStatus.PERMISSION_DENIED || st.code === GrpcStatus.UNAUTHENTICATED ? 'denied' : 'error');
      call.emit('error', { code: st.code, details: st.message } as Partial<ServiceError>);
    }
  }

  // ---- SyncAuthorized

  async #sync(call: ServerWritableStream<SyncAuthorizedRequest, SyncAuthorizedResponse>): Promise<void> {
    let caller: Caller;
    try {
      caller = await this.#authenticate(call);
    } catch (err) {
      call.emit('error', toServiceError(err, this.#log, { method: 'SyncAuthorized' }));
      return;
    }
    if (call.cancelled) return;
    const { agentId } = caller;
    const cache = this.#d.cache;
    if ((this.#streams.get(agentId)?.size ?? 0) >= MAX_SYNC_STREAMS_PER_AGENT) {
      this.#log.warn({ agent_id: agentId, limit: MAX_SYNC_STREAMS_PER_AGENT }, 'sync stream refused: the agent has too many open');
      call.emit('error', { code: GrpcStatus.RESOURCE_EXHAUSTED, details: `agent ${agentId} already has ${MAX_SYNC_STREAMS_PER_AGENT} open sync streams (the limit); close one first` } as Partial<ServiceError>);
      return;
    }
    // A new agent's snapshot is what setAgent returns; an agent with another open stream already
    // has its set.
    const entries = (cache.hasAgent(agentId) ? cache.entriesFor(agentId) : cache.setAgent(agentId, caller.node.selectors)?.added) ?? [];
    const stream: SyncStream = { agentId, call, bundleSequences: new Map(), expiryTimer: undefined, queued: 0, lastProgress: Date.now(), cut: false };
    const req = call.request;
    const known = new Map(req.knownEntries.map((k) => [k.id, k.revisionNumber]));
    for (const [td, seq] of req.knownBundleSequences) stream.bundleSequences.set(td, seq);
    const first: SyncAuthorizedResponse = {
      revision: BigInt(this.#d.feed.revision),
      snapshot: known.size === 0,
      entries: [],
      removedEntryIds: [],
      bundles: [],
      bundlesIncluded: false,
    };
    let send: readonly RegistrationEntry[] = entries;
    if (known.size > 0) {
      const changed: RegistrationEntry[] = [];
      const current = new Set<string>();
      for (const e of entries) {
        current.add(e.id);
        if (known.get(e.id) !== BigInt(e.revisionNumber)) changed.push(e);
      }
      for (const id of known.keys()) if (!current.has(id)) first.removedEntryIds.push(id);
      send = changed;
    }
    this.#attachBundles(stream, entries, first, true);
    let set = this.#streams.get(agentId);
    if (!set) this.#streams.set(agentId, (set = new Set()));
    set.add(stream);
    const detach = (): void => {
      clearTimeout(stream.expiryTimer);
      stream.expiryTimer = undefined;
      const s = this.#streams.get(agentId);
      if (!s?.delete(stream)) return;
      if (s.size === 0) {
        this.#streams.delete(agentId);
        cache.removeAgent(agentId);
      }
    };
    call.on('cancelled', detach);
    call.on('close', detach);
    call.on('error', detach);
    call.on('finish', detach);
    this.#endAtExpiry(stream, caller.certNotAfter);
    this.#write(stream, encodeSyncResponse(first, send));
    this.#log.debug({ agent_id: agentId, entries: entries.length, snapshot: first.snapshot }, 'agent sync stream opened');
  }

  /**
   * Ends `stream` with UNAUTHENTICATED once the agent certificate it was opened with expires
   * (`notAfter`, ms; valid through that instant): a long-lived stream must not outlive the
   * credential that opened it. The agent renews at half-life and reopens its stream with the
   * renewed SVID long before, so this ends only streams of agents whose renewal failed.
   * Measured by the injected clock; the timer re-checks when it fires early (clock adjusted,
   * delays beyond setTimeout's range).
   */
  #endAtExpiry(stream: SyncStream, notAfter: number): void {
    const left = notAfter - this.#d.now().getTime();
    if (left < 0) {
      stream.expiryTimer = undefined;
      this.#log.info({ agent_id: stream.agentId, expired_at: new Date(notAfter).toISOString() }, 'ended the sync stream of an agent whose SVID expired');
      stream.call.emit('error', {
        code: GrpcStatus.UNAUTHENTICATED,
        details: `agent SVID expired at ${new Date(notAfter).toISOString()}: reconnect with the renewed agent SVID (or attest again)`,
      } as Partial<ServiceError>);
      return;
    }
    stream.expiryTimer = setTimeout(() => this.#endAtExpiry(stream, notAfter), Math.min(left + 1, 2 ** 31 - 1));
    stream.expiryTimer.unref();
  }

  /** Fills `msg.bundles` when the stream's bundle set differs from what it was last sent. */
  #attachBundles(stream: SyncStream, entries: readonly RegistrationEntry[], msg: SyncAuthorizedResponse, force: boolean): void {
    const own = this.#ownBundleProto();
    const wanted: ProtoBundle[] = [own];
    const federated = new Set<string>();
    for (const e of entries) for (const td of e.federatesWith) federated.add(td);
    for (const td of [...federated].sort()) {
      const b = this.#federated.get(td);
      if (b) wanted.push(b);
    }
    const same =
      wanted.length === stream.bundleSequences.size && wanted.every((b) => stream.bundleSequences.get(b.trustDomain) === b.sequence);
    if (same && !(force && stream.bundleSequences.size === 0)) return;
    msg.bundles = wanted;
    msg.bundlesIncluded = true;
    stream.bundleSequences = new Map(wanted.map((b) => [b.trustDomain, b.sequence]));
  }

  /** Federated bundles by trust domain (refreshed from the datastore on bundle events). */
  #federated = new Map<string, ProtoBundle>();

  /** Loads federated bundles; call once at start (the feed keeps them fresh afterwards). */
  async loadFederatedBundles(): Promise<void> {
    const all = await this.#d.datastore.listBundles();
    const next = new Map<string, ProtoBundle>();
    for (const b of all) {
      if (b.trustDomain === this.#d.trustDomain) continue;
      next.set(b.trustDomain, { trustDomain: b.trustDomain, document: Buffer.from(b.document), sequence: b.sequence });
    }
    this.#federated = next;
  }

  #pushEntries(changes: AgentChange[], revision: number): void {
    for (const ch of changes) {
      const set = this.#streams.get(ch.agentId);
      if (!set) continue;
      const entries = this.#d.cache.entriesFor(ch.agentId) ?? [];
      for (const stream of set) {
        const msg: SyncAuthorizedResponse = {
          revision: BigInt(revision),
          snapshot: false,
          entries: [],
          removedEntryIds: ch.removed.map((e) => e.id),
          bundles: [],
          bundlesIncluded: false,
        };
        this.#attachBundles(stream, entries, msg, false);
        this.#write(stream, encodeSyncResponse(msg, ch.updated.length === 0 ? ch.added : [...ch.added, ...ch.updated]));
      }
    }
  }

  /**
   * Writes one encoded sync message (the service is registered with syncencode.ts's definition,
   * whose serializer passes Buffers through), within the stream's backlog bounds; a stream over
   * them is ended with RESOURCE_EXHAUSTED and written to no more.
   */
  #write(stream: SyncStream, msg: Buffer): void {
    if (stream.cut) return;
    const now = Date.now();
    const after = stream.queued + msg.length;
    if (stream.queued > 0 && (after > SYNC_BACKLOG_HARD_BYTES || (after > SYNC_BACKLOG_SOFT_BYTES && now - stream.lastProgress > SYNC_BACKLOG_STALL_MS))) {
      stream.cut = true;
      const stalled = Math.round((now - stream.lastProgress) / 1000);
      this.#log.warn({ agent_id: stream.agentId, queued_bytes: stream.queued, stalled_s: stalled }, 'sync stream ended: the agent is not reading it');
      stream.call.emit('error', {
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        details: `sync stream ended: ${stream.queued} bytes queued for agent ${stream.agentId}, not read for ${stalled} s; reconnect to resume`,
      } as Partial<ServiceError>);
      return;
    }
    if (stream.queued === 0) stream.lastProgress = now;
    stream.queued = after;
    stream.call.write(msg as unknown as SyncAuthorizedResponse, () => {
      stream.queued -= msg.length;
      stream.lastProgress = Date.now();
    });
  }

  async #pushBundles(): Promise<void> {
    try {
      await this.loadFederatedBundles();
    } catch (err) {
      this.#log.error({ err }, 'could not reload federated bundles');
      return;
    }
    const revision = BigInt(this.#d.feed.revision);
    for (const [agentId, set] of this.#streams) {
      const entries = this.#d.cache.entriesFor(agentId) ?? [];
      for (const stream of set) {
        const msg: SyncAuthorizedResponse = { revision, snapshot: false, entries: [], removedEntryIds: [], bundles: [], bundlesIncluded: false };
        this.#attachBundles(stream, entries, msg, false);
        if (msg.bundlesIncluded) this.#write(stream, encodeSyncResponse(msg, []));
      }
    }
  }

  /**
   * A node record changed: end the streams of banned or evicted agents; for a node that
   * re-attested with other node selectors (k8s_psat: new labels, another pod), recompute its
   * node-alias memberships and push the difference to its open streams.
   */
  async #checkNode(agentId: SpiffeId, revision: number): Promise<void> {
    const set = this.#streams.get(agentId);
    if (!set) return;
    const node = await this.#d.datastore.getAttestedNode(agentId);
    if (node && !node.banned) {
      if (!this.#d.cache.hasAgent(agentId)) return;
      const change = this.#d.cache.setAgent(agentId, node.selectors);
      if (change) this.#pushEntries([change], revision);
      return;
    }
    const message = node ? `agent ${agentId} is banned` : `agent ${agentId} has been evicted: attest again`;
    for (const stream of [...set]) stream.call.emit('error', { code: GrpcStatus.PERMISSION_DENIED, details: message } as Partial<ServiceError>);
    this.#log.info({ agent_id: agentId }, node ? 'closed streams of banned agent' : 'closed streams of evicted agent');
  }
}

/**
 * The remote address of a call from grpc-js's `getPeer()` ("ip:port", IPv6 without brackets),
 * without the port; an IPv4-mapped IPv6 address (a listener on `::`) as plain IPv4.
 */
export function remoteAddressOf(peer: string): string {
  const colon = peer.lastIndexOf(':');
  let host = colon > 0 && /^\d+$/.test(peer.slice(colon + 1)) ? peer.slice(0, colon) : peer;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host.toLowerCase().startsWith('::ffff:') && host.includes('.')) host = host.slice(7);
  return host;
}


/**
 * The agent API (spindle.agent.v1.AgentAPI), served over TCP with mutual TLS (server.ts): the
 * service object grpc-js serves, with the unary handlers RenewAgent, BatchNewX509SVID,
 * NewJWTSVID and GetBundle. Its other parts: caller authentication and the caller's authorized
 * entries (auth.ts), AttestAgent (attest.ts), SyncAuthorized streams (sync.ts), and what they
 * share (deps.ts).
 *
 * Every call except AttestAgent and GetBundle authenticates the caller by its agent X509-SVID
 * (the TLS client certificate, auth.ts). Identity in anything signed comes from the
 * registration entry the agent is authorized for, never from the request.
 */
import { status as GrpcStatus, type handleUnaryCall, type ServerUnaryCall } from '@grpc/grpc-js';
import type { SpiffeId } from '../../../spiffe/id.js';
import { MAX_JWT_SVID_AUDIENCES } from '../../../spiffe/jwtsvid.js';
import type { AgentAPIServer } from '../../../proto/gen/spindle/agent/v1/agent.js';
import type { X509SVID } from '../../../proto/gen/spindle/types/v1/types.js';
import type { RegistrationEntry } from '../../datastore/types.js';
import type { SignedX509Svid } from '../../ca/types.js';
import { statusOf, toServiceError, unary, OK_STATUS } from '../errors.js';
import type { ApiLogger } from '../logger.js';
import { denied, invalid, nowSeconds, svidToProto, NO_METRICS, OwnBundle, type AgentApiDeps, type AgentApiMetrics } from './deps.js';
import { AgentAuth } from './auth.js';
import { Attestations } from './attest.js';
import { SyncStreams } from './sync.js';

/** Upper bound of CSRs in one BatchNewX509SVID call. */
export const MAX_CSRS_PER_BATCH = 1000;
/** Upper bound of audiences in one JWT-SVID request. */
export const MAX_AUDIENCES = MAX_JWT_SVID_AUDIENCES;

/** A grpc-js unary handler around an async function of (request, call); failures via toServiceError. */
function withCall<Req, Res>(
  log: ApiLogger,
  method: string,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toServiceError(err, log, { method }, 'agent')),
    );
  };
}

export class AgentApi {
  readonly #d: AgentApiDeps;
  readonly #log: ApiLogger;
  readonly #metrics: AgentApiMetrics;
  readonly #ownBundle: OwnBundle;
  readonly #auth: AgentAuth;
  readonly #attestations: Attestations;
  readonly #sync: SyncStreams;
  #unsubscribe: (() => void) | undefined;
  #unsubscribeBundle: (() => void) | undefined;

  constructor(deps: AgentApiDeps) {
    this.#d = deps;
    this.#log = deps.logger.child({ subsystem: 'agent_api' });
    this.#metrics = deps.metrics ?? NO_METRICS;
    this.#ownBundle = new OwnBundle(deps.ca);
    this.#auth = new AgentAuth(deps, this.#ownBundle);
    this.#attestations = new Attestations(deps, this.#log, this.#metrics);
    this.#sync = new SyncStreams(deps, this.#log, this.#auth, this.#ownBundle);
    this.#unsubscribe = deps.feed.subscribe({
      entries: (changes, revision) => this.#sync.pushEntries(changes, revision),
      node: (agentId, revision) => {
        this.#auth.nodeChanged(agentId);
        this.#sync.checkNode(agentId, revision);
      },
      bundle: () => void this.#sync.pushBundles(),
    });
    // The CA's bundle may change without a bundle event of this server's feed arriving after it
    // (another server sharing the datastore wrote it, and the feed's event ran first): push then
    // too. Streams already sent this sequence get nothing.
    this.#unsubscribeBundle = deps.ca.onBundleChange(() => {
      this.#auth.forget();
      this.#ownBundle.drop();
      void this.#sync.pushBundles();
    });
  }

  /** Number of open sync streams (for metrics and tests). */
  get openStreams(): number {
    return this.#sync.size;
  }

  /** AttestAgent streams in progress now (for metrics and tests). */
  get attestationsInProgress(): number {
    return this.#attestations.inProgress;
  }

  /** Ends every stream (shutdown). */
  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribeBundle?.();
    this.#auth.forget();
    this.#sync.close();
  }

  /** Loads federated bundles; call once at start (the feed keeps them fresh afterwards). */
  loadFederatedBundles(): Promise<void> {
    return this.#sync.loadFederatedBundles();
  }

  service(): AgentAPIServer {
    return {
      attestAgent: (call) => this.#attestations.attest(call),
      renewAgent: withCall(this.#log, 'RenewAgent', async (req, call) => {
        const caller = await this.#auth.authenticate(call);
        // The node record is read (and written) before the SVID counts as issued: while the
        // datastore is unavailable renewal fails with UNAVAILABLE and the agent keeps its SVID.
        const node = await this.#d.datastore.getAttestedNode(caller.agentId);
        if (!node) throw denied('agent has been evicted');
        const svid = this.#d.ca.signX509Svid({ id: caller.agentId, csr: req.csr, ttlSeconds: this.#d.agentTtlSeconds });
        await this.#d.datastore.updateAttestedNode(
          { ...node, newCertSerial: svid.serialHex, newCertNotAfter: Math.floor(svid.notAfter.getTime() / 1000) },
          nowSeconds(this.#d.now),
        );
        this.#metrics.x509SvidSigned('agent');
        this.#log.info({ agent_id: caller.agentId, serial: svid.serialHex }, 'renewed agent SVID');
        return { svid: svidToProto(caller.agentId, svid) };
      }),
      syncAuthorized: (call) => void this.#sync.open(call),
      batchNewX509Svid: withCall(this.#log, 'BatchNewX509SVID', async (req, call) => {
        const caller = await this.#auth.authenticate(call);
        if (req.params.length > MAX_CSRS_PER_BATCH) throw invalid(`too many CSRs in one batch: ${req.params.length} (at most ${MAX_CSRS_PER_BATCH})`);
        const entries = this.#auth.authorizedMap(caller);
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
            results[t.at] = { status: statusOf(s, this.#log, { method: 'BatchNewX509SVID', entry_id: t.entry.id }, 'agent'), svid: undefined };
          } else {
            results[t.at] = { status: OK_STATUS, svid: svidToProto(t.entry.spiffeId, s) };
            ok++;
          }
        });
        this.#metrics.x509SvidSigned('workload', ok);
        return { results };
      }),
      newJwtsvid: withCall(this.#log, 'NewJWTSVID', async (req, call) => {
        const caller = await this.#auth.authenticate(call);
        const entry = this.#auth.authorizedEntry(caller, req.entryId);
        if (!entry) throw denied(`entry ${JSON.stringify(req.entryId)} is not authorized for this agent`);
        if (req.audience.length === 0 || req.audience.some((a) => a === '')) throw invalid('audience is required and must not contain empty values');
        if (req.audience.length > MAX_AUDIENCES) throw invalid(`too many audiences (at most ${MAX_AUDIENCES})`);
        const jwt = await this.#d.ca.mintJwtSvid({ id: entry.spiffeId, audience: req.audience, ttlSeconds: entry.jwtSvidTtl || undefined });
        this.#metrics.jwtSvidMinted();
        const secs = (d: Date): bigint => BigInt(Math.floor(d.getTime() / 1000));
        return { svid: { token: jwt.token, spiffeId: entry.spiffeId, expiresAt: secs(jwt.expiresAt), issuedAt: secs(jwt.issuedAt) } };
      }),
      getBundle: unary(this.#log, 'GetBundle', async () => ({ bundle: this.#ownBundle.proto() })),
    };
  }
}

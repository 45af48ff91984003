/**
 * spindle-server's Prometheus metrics. One `ServerMetrics` per server instance, each with its
 * own prom-client Registry (never the global one), so several servers in one process (tests)
 * do not share or clash.
 *
 * Contract:
 * - Every agent API and admin API RPC is counted and timed by a grpc-js server interceptor
 *   (`grpcInterceptor()`), labelled by full service name, method and final status code name.
 *   Streaming RPCs are recorded when they end: with the status the server sent, or CANCELLED /
 *   DEADLINE_EXCEEDED when the stream went away first.
 * - Labels only ever take bounded values: service/method come from registered handlers,
 *   codes from the gRPC status enum, attestor from the enabled attestors (else "unknown"),
 *   kinds/results/statuses from fixed sets. Never SPIFFE IDs, entry IDs, serials or tokens.
 * - State gauges (entries, agents, sync streams, authority expiry, bundle sequence, datastore
 *   up) are read from their sources at scrape time (`observe()`). While the datastore cannot be
 *   reached the entry and agent gauges keep their last value (the scrape still succeeds) and
 *   `spindle_server_datastore_up` is 0.
 */
import { status as GrpcStatus, ServerInterceptingCall, type ServerInterceptor } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ATTESTATION_LIMITS, type AgentApiMetrics, type AttestationLimit } from './api/agent/deps.js';
import type { CaStatus } from './ca/manager.js';

export type SvidKind = 'workload' | 'agent';
export type AttestationResult = 'ok' | 'denied' | 'error';

const SVID_KINDS: readonly SvidKind[] = ['workload', 'agent'];
const ATTESTATION_RESULTS: readonly AttestationResult[] = ['ok', 'denied', 'error'];

/** Latency buckets (seconds): local RPCs take well under a millisecond, signing a few ms. */
const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** gRPC status code -> its name (`0` -> `OK`, `7` -> `PERMISSION_DENIED`). */
const CODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(GrpcStatus)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([name, code]) => [code, name]),
);

export function grpcCodeName(code: number | undefined): string {
  return (code !== undefined && CODE_NAMES.get(code)) || 'UNKNOWN';
}

/** `/pkg.Service/Method` -> ['pkg.Service', 'Method']. */
function splitPath(path: string): [string, string] {
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return m ? [m[1]!, m[2]!] : ['unknown', 'unknown'];
}

/** What the state gauges read at scrape time. */
export interface MetricsSources {
  datastore: {
    countEntries(filter?: undefined, opts?: { mayLag?: boolean }): Promise<number>;
    countAttestedNodes(filter?: undefined, opts?: { mayLag?: boolean }): Promise<number>;
    /** Whether the database answered the last statement (PostgreSQL); absent: always 1. */
    available?(): boolean;
  };
  ca: { status(): CaStatus };
  api: { readonly openStreams: number; readonly attestationsInProgress?: number };
}

export class ServerMetrics implements AgentApiMetrics {
  readonly registry = new Registry();
  readonly rpcRequests: Counter<'service' | 'method' | 'code'>;
  readonly rpcDuration: Histogram<'service' | 'method'>;
  readonly x509SvidsSigned: Counter<'kind'>;
  readonly jwtSvidsMinted: Counter;
  readonly nodeAttestations: Counter<'attestor' | 'result'>;
  readonly attestationsRefused: Counter<'limit'>;
  readonly #knownAttestors = new Set<string>();
  #observing = false;

  /** `attestors`: names of the enabled node attestors (their series start at 0). */
  constructor(opts: { attestors?: Iterable<string>; defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.rpcRequests = new Counter({
      name: 'spindle_server_rpc_requests_total',
      help: 'Agent API and admin API RPCs handled, by service, method and final gRPC status code',
      labelNames: ['service', 'method', 'code'],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: 'spindle_server_rpc_duration_seconds',
      help: 'Duration of agent API and admin API RPCs (streams: until they end)',
      labelNames: ['service', 'method'],
      buckets: RPC_BUCKETS,
      registers,
    });
    this.x509SvidsSigned = new Counter({
      name: 'spindle_server_x509_svids_signed_total',
      help: 'X509-SVIDs signed through the agent API (kind: workload entries or agent SVIDs)',
      labelNames: ['kind'],
      registers,
    });
    this.jwtSvidsMinted = new Counter({
      name: 'spindle_server_jwt_svids_minted_total',
      help: 'JWT-SVIDs minted through the agent API',
      registers,
    });
    this.nodeAttestations = new Counter({
      name: 'spindle_server_node_attestations_total',
      help: 'Node attestations by attestor and result (ok, denied, error)',
      labelNames: ['attestor', 'result'],
      registers,
    });
    this.attestationsRefused = new Counter({
      name: 'spindle_server_attestations_refused_total',
      help: 'AttestAgent streams refused with RESOURCE_EXHAUSTED by an attestation limit (limit: in_progress_total, in_progress_per_address)',
      labelNames: ['limit'],
      registers,
    });
    for (const limit of ATTESTATION_LIMITS) this.attestationsRefused.inc({ limit }, 0);
    for (const kind of SVID_KINDS) this.x509SvidsSigned.inc({ kind }, 0);
    for (const name of opts.attestors ?? []) {
      this.#knownAttestors.add(name);
      for (const result of ATTESTATION_RESULTS) this.nodeAttestations.inc({ attestor: name, result }, 0);
    }
  }

  // ---- AgentApiMetrics

  x509SvidSigned(kind: SvidKind, count = 1): void {
    if (count > 0) this.x509SvidsSigned.inc({ kind }, count);
  }

  jwtSvidMinted(): void {
    this.jwtSvidsMinted.inc();
  }

  nodeAttestation(attestor: string | undefined, result: AttestationResult): void {
    const label = attestor !== undefined && this.#knownAttestors.has(attestor) ? attestor : 'unknown';
    this.nodeAttestations.inc({ attestor: label, result });
  }

  attestationRefused(limit: AttestationLimit): void {
    this.attestationsRefused.inc({ limit });
  }

  // ---- RPCs

  /** A grpc-js server interceptor that counts and times every call of the server it is given to. */
  grpcInterceptor(): ServerInterceptor {
    return (method, call) => {
      const [service, name] = splitPath(method.path);
      const stopTimer = this.rpcDuration.startTimer({ service, method: name });
      let recorded = false;
      const record = (code: number): void => {
        if (recorded) return;
        recorded = true;
        stopTimer();
        this.rpcRequests.inc({ service, method: name, code: grpcCodeName(code) });
      };
      return new ServerInterceptingCall(call, {
        start: (next) =>
          next({
            // Also called after a normal end (then already recorded); first means the client
            // went away or the deadline passed before the server sent a status.
            onCancel: () => {
              const deadline = call.getDeadline();
              const ms = deadline instanceof Date ? deadline.getTime() : deadline;
              record(Number.isFinite(ms) && ms <= Date.now() ? GrpcStatus.DEADLINE_EXCEEDED : GrpcStatus.CANCELLED);
            },
          }),
        sendStatus: (st, next) => {
          record(st.code);
          next(st);
        },
      });
    };
  }

  // ---- state gauges

  /** Registers the gauges read from the server's state at scrape time. Once per instance. */
  observe(src: MetricsSources): void {
    if (this.#observing) throw new Error('ServerMetrics.observe() was already called');
    this.#observing = true;
    const registers = [this.registry];
    new Gauge({
      name: 'spindle_server_entries',
      help: 'Registration entries',
      registers,
      async collect() {
        // A scrape during a datastore outage keeps the last value (datastore_up says why).
        const n = await src.datastore.countEntries(undefined, { mayLag: true }).catch(() => undefined);
        if (n !== undefined) this.set(n);
      },
    });
    new Gauge({
      name: 'spindle_server_datastore_up',
      help: '1 while the datastore answers, 0 from its first failed connection until it answers again (PostgreSQL; SQLite always 1)',
      registers,
      collect() {
        this.set(src.datastore.available?.() === false ? 0 : 1);
      },
    });
    new Gauge({
      name: 'spindle_server_agents',
      help: 'Attested agents (including banned ones)',
      registers,
      async collect() {
        const n = await src.datastore.countAttestedNodes(undefined, { mayLag: true }).catch(() => undefined);
        if (n !== undefined) this.set(n);
      },
    });
    new Gauge({
      name: 'spindle_server_agent_sync_streams',
      help: 'Open agent SyncAuthorized streams',
      registers,
      collect() {
        this.set(src.api.openStreams);
      },
    });
    new Gauge({
      name: 'spindle_server_attestations_in_progress',
      help: 'AttestAgent streams in progress (admitted, not yet ended)',
      registers,
      collect() {
        this.set(src.api.attestationsInProgress ?? 0);
      },
    });
    new Gauge({
      name: 'spindle_server_ca_expiry_seconds',
      help: 'notAfter (unix seconds) of the X.509 CA and JWT signing authorities (kind: x509|jwt, status: active|prepared|old; latest per pair) and of the upstream root (kind: upstream, status: active)',
      labelNames: ['kind', 'status'],
      registers,
      collect() {
        const st = src.ca.status();
        this.reset();
        const latest = new Map<string, { kind: string; status: string; at: number }>();
        const add = (kind: string, status: string, notAfter: Date): void => {
          const at = Math.floor(notAfter.getTime() / 1000);
          const key = `${kind}/${status}`;
          if ((latest.get(key)?.at ?? -Infinity) < at) latest.set(key, { kind, status, at });
        };
        for (const a of st.x509) add('x509', a.status, a.notAfter);
        for (const a of st.jwt) add('jwt', a.status, a.notAfter);
        if (st.upstream) add('upstream', 'active', st.upstream.notAfter);
        for (const v of latest.values()) this.set({ kind: v.kind, status: v.status }, v.at);
      },
    });
    new Gauge({
      name: 'spindle_server_server_svid_expiry_seconds',
      help: "notAfter (unix seconds) of the server's own SVID",
      registers,
      collect() {
        const svid = src.ca.status().serverSvid;
        this.reset();
        if (svid) this.set(Math.floor(svid.notAfter.getTime() / 1000));
      },
    });
    new Gauge({
      name: 'spindle_server_bundle_sequence',
      help: "spiffe_sequence of the trust domain's own bundle",
      registers,
      collect() {
        this.set(Number(src.ca.status().bundleSequence));
      },
    });
  }
}

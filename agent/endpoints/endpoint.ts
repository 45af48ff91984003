/**
 * The agent's public endpoint: one Unix socket (listener.ts) serving the SPIFFE Workload API
 * (workloadapi.ts), Envoy SDS v3 (sds.ts), grpc.health.v1.Health and server reflection. This
 * module assembles them: one grpc-js server, one per-caller limiter shared by both APIs (the
 * admission path in admission.ts), one connection limiter, and the ordered shutdown.
 */
import { Server } from '@grpc/grpc-js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import { HealthService } from '../../proto/gen/grpc/health/v1/health.js';
import { SpiffeWorkloadAPIClient } from '../../proto/gen/workload/workload.js';
import type { IdentityCache } from '../manager/types.js';
import type { PeerCredNative } from '../native/peercred.js';
import { ConnectionLimiter, type ConnectionLimitSettings } from './connlimits.js';
import { createWorkloadHealthService } from './health.js';
import { CallerLimits, StreamLimiter, type CallerLimitSettings } from './limits.js';
import { listenWorkloadSocket } from './listener.js';
import { addReflection } from './reflection.js';
import { createSdsService, type SdsConfig } from './sds.js';
import type { EndpointLogger, PeerOf } from './types.js';
import { createWorkloadApiService, WORKLOAD_API_SERVICE } from './workloadapi.js';


export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024;
export const DEFAULT_MAX_SEND_MESSAGE_BYTES = 16 * 1024 * 1024;
const SHUTDOWN_GRACE_MS = 1000;

export interface AgentEndpointLimits extends Partial<CallerLimitSettings>, Partial<ConnectionLimitSettings> {
  /** Default 64 KiB. */
  maxReceiveMessageBytes?: number;
  /** Default 16 MiB. */
  maxSendMessageBytes?: number;
}

export interface AgentEndpointOptions {
  socketPath: string;
  cache: IdentityCache;
  /** Workload attestors, run on every Workload API and SDS caller. */
  attestors: readonly WorkloadAttestor[];
  logger: EndpointLogger;
  limits?: AgentEndpointLimits;
  /** SDS resource names and validation (SPIRE's agent `sds` section); default SPIRE's defaults. */
  sds?: SdsConfig;
  /** Default /proc (peer start-time and uid checks). */
  procRoot?: string;
  /** Default: the built peercred addon. */
  native?: PeerCredNative;
  now?: () => Date;
  /** Monotonic clock in ms for the rate limits (default performance.now). */
  limitsClock?: () => number;
}

export interface AgentEndpoint {
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
 * Starts the agent's public endpoint: the Workload API, SDS, health and reflection on one Unix
 * socket, every handler resolving callers through the listener's `peerOf`.
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
export async function startAgentEndpoint(options: AgentEndpointOptions): Promise<AgentEndpoint> {
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
  // Envoy SDS v3 on the same socket, sharing the per-caller limits; its streams end first at close.
  const sds = createSdsService({
    cache: options.cache,
    attestors: options.attestors,
    peerOf: lazyPeerOf,
    logger: log.child({ component: 'sds' }),
    limits: callerLimits,
    ...(options.sds ? { config: options.sds } : {}),
  });
  server.addService(sds.definition, sds.implementation);
  server.addService(HealthService, createWorkloadHealthService([SpiffeWorkloadAPIClient.serviceName, sds.name], lazyPeerOf, new StreamLimiter(maxStreams)));
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
        sds.closeStreams();
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

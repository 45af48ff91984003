/**
 * The agent API's listener: gRPC over TCP with TLS. The server presents its own SVID
 * (`spiffe://<td>/spire/server`), rotated in place through grpc-js certificate providers; it
 * requests but does not require a client certificate (AttestAgent and GetBundle come from agents
 * that have none yet), and every other call verifies the agent SVID itself (auth.ts).
 */
import { Server, ServerCredentials, experimental, type ServerInterceptor, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Bundle } from '../../../spiffe/bundle.js';
import { agentApiServiceDefinition } from './syncencode.js';
import { agentApiListenError } from '../../errors.js';
import type { AgentApi } from './service.js';

/** The server-identity part of the CA manager the listener needs. */
export interface ServerTlsSource {
  serverSvid(): { certChainPem: string; privateKeyPem: string };
  onServerSvidChange(listener: (svid: { certChainPem: string; privateKeyPem: string }) => void): () => void;
  bundle(): Bundle;
  onBundleChange(listener: (bundle: Bundle) => void): () => void;
}

/** Largest agent API message (a batch of 1,000 CSRs is about 0.5 MB). */
export const MAX_AGENT_API_MESSAGE_BYTES = 8 * 1024 * 1024;
/**
 * HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). An
 * agent uses one connection: its SyncAuthorized stream plus unary calls (RenewAgent,
 * BatchNewX509SVID, NewJWTSVID per JWT-SVID cache miss); calls beyond the limit wait on the
 * client side (grpc-js queues them) rather than fail. Bounds what one connection can hold open
 * before authentication (with node's default, about 4 billion).
 */
export const MAX_CONCURRENT_STREAMS_PER_CONNECTION = 256;

class IdentityProvider implements experimental.CertificateProvider {
  readonly #source: ServerTlsSource;
  readonly #identity = new Set<experimental.IdentityCertificateUpdateListener>();
  readonly #ca = new Set<experimental.CaCertificateUpdateListener>();
  readonly #unsubscribe: Array<() => void> = [];

  constructor(source: ServerTlsSource) {
    this.#source = source;
    this.#unsubscribe.push(
      source.onServerSvidChange((svid) => {
        const update = { certificate: Buffer.from(svid.certChainPem), privateKey: Buffer.from(svid.privateKeyPem) };
        for (const l of this.#identity) l(update);
      }),
      source.onBundleChange((bundle) => {
        const update = { caCertificate: Buffer.from(bundle.x509AuthoritiesPem()) };
        for (const l of this.#ca) l(update);
      }),
    );
  }

  close(): void {
    for (const u of this.#unsubscribe) u();
  }

  addCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.#ca.add(listener);
    // Deliver the current value after grpc-js has registered its watcher (it registers the
    // provider listeners first and would miss a synchronous first update).
    queueMicrotask(() => {
      if (this.#ca.has(listener)) listener({ caCertificate: Buffer.from(this.#source.bundle().x509AuthoritiesPem()) });
    });
  }
  removeCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.#ca.delete(listener);
  }
  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#identity.add(listener);
    queueMicrotask(() => {
      if (!this.#identity.has(listener)) return;
      const svid = this.#source.serverSvid();
      listener({ certificate: Buffer.from(svid.certChainPem), privateKey: Buffer.from(svid.privateKeyPem) });
    });
  }
  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#identity.delete(listener);
  }
}

export interface AgentApiServer {
  /** The bound port (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

export async function startAgentApiServer(opts: {
  api: AgentApi;
  tls: ServerTlsSource;
  bindAddress: string;
  port: number;
  /** Extra services on the same port (e.g. health). */
  extra?: Array<{ definition: ServiceDefinition; implementation: UntypedServiceImplementation }>;
  /** Counts and times every RPC (server/metrics.ts). */
  metrics?: { grpcInterceptor(): ServerInterceptor };
}): Promise<AgentApiServer> {
  const provider = new IdentityProvider(opts.tls);
  const creds: ServerCredentials = experimental.createCertificateProviderServerCredentials(provider, provider, false);
  const server = new Server({
    'grpc.max_receive_message_length': MAX_AGENT_API_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_AGENT_API_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS_PER_CONNECTION,
    // Nothing serves channelz; it would keep per-socket and per-call counters and traces
    // (about 4% of the server's CPU in a reconnect storm).
    'grpc.enable_channelz': 0,
    interceptors: opts.metrics ? [opts.metrics.grpcInterceptor()] : [],
  });
  server.addService(agentApiServiceDefinition, opts.api.service());
  for (const s of opts.extra ?? []) server.addService(s.definition, s.implementation);
  const host = opts.bindAddress.includes(':') ? `[${opts.bindAddress}]` : opts.bindAddress;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port}`, creds, (err, p) => (err ? reject(new Error(agentApiListenError(err, opts.bindAddress, opts.port), { cause: err })) : resolve(p)));
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        opts.api.close();
        provider.close();
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000).unref();
      }),
  };
}

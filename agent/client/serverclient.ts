/**
 * The agent's client of the server's agent API (TLS over TCP). The server is authenticated by
 * its SVID: the chain must verify against our trust bundle (the TLS stack checks signatures and
 * validity against the bundle's X.509 authorities) and the leaf must carry exactly the URI SAN
 * `spiffe://<td>/spire/server` (checked here instead of a hostname). Once attested, the agent
 * presents its own SVID as the TLS client certificate.
 */
import { ChannelCredentials, credentials, Metadata, status as GrpcStatus, type ClientDuplexStream, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import {
  AgentAPIClient,
  type AttestAgentRequest,
  type AttestAgentResponse,
  type SyncAuthorizedRequest,
  type SyncAuthorizedResponse,
} from '../../proto/gen/spindle/agent/v1/agent.js';
import type { X509SVID } from '../../proto/gen/spindle/types/v1/types.js';
import type { TrustDomain } from '../../spiffe/id.js';
import { serverIdOf } from '../../common/spireids.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { parseCertificate } from '../../spiffe/x509/index.js';
import { channelTarget, type ServerAddress } from './serveraddress.js';

export type { ServerAddress } from './serveraddress.js';

export interface AgentApiConnection {
  client: AgentAPIClient;
  close(): void;
  /**
   * The server this connection was last seen to use (`host:port`, from a call's peer), set by
   * whoever makes calls on it (the sync stream); undefined until then.
   */
  peer?: string | undefined;
}

/** Largest message the agent accepts from the server (a snapshot of thousands of entries). */
export const MAX_SERVER_MESSAGE_BYTES = 64 * 1024 * 1024;

/** checkServerIdentity replacement: the server's leaf must be `spiffe://<td>/spire/server`. */
export function serverIdentityCheck(td: TrustDomain): (host: string, cert: PeerCertificate) => Error | undefined {
  const expected = serverIdOf(td);
  return (_host, cert) => {
    try {
      const uris = parseCertificate(cert.raw).uriSans;
      if (uris.length !== 1 || uris[0] !== expected) {
        return new Error(`server presented ${uris.join(', ') || 'no SPIFFE ID'}, expected ${expected}`);
      }
      return undefined;
    } catch (err) {
      return err as Error;
    }
  };
}

/**
 * Connects to the agent API. `addresses`: the servers, in the order to try them (see
 * serveraddress.ts: one channel over all of them, `pick_first`); one server as before.
 * `bundle`: our trust domain's X.509 authorities (DER).
 * `svid`: the agent's SVID chain and PKCS#8 key PEM, once it has one.
 * `insecure`: skip verifying the server (only for `-insecureBootstrap`, to fetch the bundle).
 */
export function connectAgentApi(opts: {
  /** One server (as `addresses: [address]`). */
  address?: ServerAddress;
  addresses?: readonly ServerAddress[];
  trustDomain: TrustDomain;
  bundle?: readonly Buffer[];
  svid?: { chain: readonly Buffer[]; privateKeyPem: string };
  insecure?: boolean;
}): AgentApiConnection {
  const roots = opts.bundle && opts.bundle.length > 0 ? Buffer.from(certificatesToPem(opts.bundle)) : null;
  if (!roots && !opts.insecure) throw new Error('a trust bundle is required to connect to the server securely');
  const verify = opts.insecure
    ? { rejectUnauthorized: false, checkServerIdentity: () => undefined }
    : { checkServerIdentity: serverIdentityCheck(opts.trustDomain) };
  const creds: ChannelCredentials = credentials.createSsl(
    roots,
    opts.svid ? Buffer.from(opts.svid.privateKeyPem) : null,
    opts.svid ? Buffer.from(certificatesToPem(opts.svid.chain)) : null,
    verify,
  );
  const { target, options } = channelTarget(opts.addresses ?? (opts.address ? [opts.address] : []));
  const client = new AgentAPIClient(target, creds, {
    ...options,
    // The server is identified by its SPIFFE ID (checkServerIdentity above), not by a host name;
    // a fixed TLS server name also avoids sending an IP address as SNI.
    'grpc.ssl_target_name_override': 'spindle-server',
    'grpc.default_authority': 'spindle-server',
    'grpc.max_receive_message_length': MAX_SERVER_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_permit_without_calls': 1,
    // The channel's own reconnect backoff (grpc-js: 1 s growing to 120 s) would keep the agent
    // away from a server that is back long after its sync loop retries (0.5-5 s): match them.
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 5_000,
  });
  return { client, close: () => client.close() };
}

/** Runs node attestation over the AttestAgent stream; resolves with the agent SVID. */
export function attestAgent(
  client: AgentAPIClient,
  params: { type: string; payload: Buffer; csr: Buffer; answerChallenge?: (c: Buffer) => Promise<Buffer>; deadlineMs?: number },
): Promise<{ svid: X509SVID; reattestable: boolean }> {
  return new Promise((resolve, reject) => {
    const call: ClientDuplexStream<AttestAgentRequest, AttestAgentResponse> = client.attestAgent(new Metadata(), {
      deadline: Date.now() + (params.deadlineMs ?? 30_000),
    });
    let done = false;
    call.on('data', (msg: AttestAgentResponse) => {
      if (msg.step?.$case === 'challenge') {
        if (!params.answerChallenge) {
          call.cancel();
          reject(new Error('the server sent a challenge this attestor cannot answer'));
          return;
        }
        params.answerChallenge(msg.step.value).then(
          (answer) => call.write({ step: { $case: 'challengeResponse', value: answer } }),
          (err: unknown) => {
            call.cancel();
            reject(err);
          },
        );
      } else if (msg.step?.$case === 'result' && msg.step.value.svid) {
        done = true;
        call.end();
        resolve({ svid: msg.step.value.svid, reattestable: msg.step.value.reattestable });
      }
    });
    call.on('error', (err: ServiceError) => reject(err));
    call.on('end', () => {
      if (!done) reject(new Error('attestation stream ended without a result'));
    });
    call.write({ step: { $case: 'params', value: { data: { type: params.type, payload: params.payload }, csr: params.csr } } });
  });
}

/**
 * Runs `call` and, while it fails with UNAVAILABLE (the server went away under it), runs it again
 * up to `retries` more times, `delayMs` apart: the channel has moved to another server by then
 * (serveraddress.ts). With one server `retries` is 0 and the first failure is returned.
 */
export async function retryUnavailable<T>(call: () => Promise<T>, retries: number, delayMs = 250): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (attempt >= retries || (err as Partial<ServiceError>).code !== GrpcStatus.UNAVAILABLE) throw err;
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

export function syncAuthorized(client: AgentAPIClient, req: Partial<SyncAuthorizedRequest> = {}): ClientReadableStream<SyncAuthorizedResponse> {
  return client.syncAuthorized({ sinceRevision: 0n, knownEntries: [], knownBundleSequences: new Map(), ...req });
}

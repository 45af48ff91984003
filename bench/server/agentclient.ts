/**
 * Lightweight agent-API clients for the server benchmarks: attest with a join token (as the
 * agent does: AttestAgent stream, CSR for a fresh key), then reconnect with the agent SVID as
 * TLS client certificate for SyncAuthorized, BatchNewX509SVID and NewJWTSVID. Many of them can
 * live in one process; every client has its own channel (its own TCP+TLS connection).
 */
import { Metadata, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { attestAgent, connectAgentApi, syncAuthorized, type AgentApiConnection } from '../../agent/client/serverclient.js';
import type { AgentAPIClient, BatchNewX509SVIDResponse, SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { generateKeyPair } from '../../spiffe/keys.js';
import { parseTrustDomain } from '../../spiffe/id.js';
import { createCsr } from '../../spiffe/x509/index.js';

export interface AgentIdentity {
  agentId: string;
  chain: Buffer[];
  privateKeyPem: string;
}

export interface ServerTarget {
  port: number;
  trustDomain: string;
  /** The server's X.509 authorities (DER). */
  bundle: Buffer[];
}

/** Attests one agent with `joinToken` over its own short-lived connection. */
export async function attestWithJoinToken(server: ServerTarget, joinToken: string): Promise<AgentIdentity> {
  const conn = connectAgentApi({ address: { host: '127.0.0.1', port: server.port }, trustDomain: parseTrustDomain(server.trustDomain), bundle: server.bundle });
  try {
    const kp = await generateKeyPair('ec-p256');
    const { svid } = await attestAgent(conn.client, { type: 'join_token', payload: Buffer.from(joinToken), csr: createCsr(kp.privateKey) });
    return {
      agentId: svid.spiffeId,
      chain: svid.certChain.map((c) => Buffer.from(c)),
      privateKeyPem: kp.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    };
  } finally {
    conn.close();
  }
}

/** A connection authenticated as `id` (lazy: connects on the first call). */
export function connectAs(server: ServerTarget, id: AgentIdentity): AgentApiConnection {
  return connectAgentApi({
    address: { host: '127.0.0.1', port: server.port },
    trustDomain: parseTrustDomain(server.trustDomain),
    bundle: server.bundle,
    svid: { chain: id.chain, privateKeyPem: id.privateKeyPem },
  });
}

/** Opens SyncAuthorized and resolves with the first message (the snapshot); the stream stays open. */
export function openSync(client: AgentAPIClient, onMessage?: (m: SyncAuthorizedResponse) => void): Promise<{ first: SyncAuthorizedResponse; stream: ClientReadableStream<SyncAuthorizedResponse> }> {
  return new Promise((resolve, reject) => {
    const stream = syncAuthorized(client);
    let first = true;
    stream.on('data', (m: SyncAuthorizedResponse) => {
      if (first) {
        first = false;
        resolve({ first: m, stream });
      }
      onMessage?.(m);
    });
    stream.on('error', (err: ServiceError) => {
      if (first) reject(err);
    });
  });
}

export function batchNewX509Svid(client: AgentAPIClient, params: Array<{ entryId: string; csr: Buffer }>): Promise<BatchNewX509SVIDResponse> {
  return new Promise((resolve, reject) => {
    client.batchNewX509Svid({ params }, new Metadata(), { deadline: Date.now() + 120_000 }, (err: ServiceError | null, res: BatchNewX509SVIDResponse) => (err ? reject(err) : resolve(res)));
  });
}

export function newJwtSvid(client: AgentAPIClient, entryId: string, audience: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    client.newJwtsvid({ entryId, audience }, new Metadata(), { deadline: Date.now() + 120_000 }, (err, res) => (err ? reject(err) : resolve(res.svid?.token ?? '')));
  });
}

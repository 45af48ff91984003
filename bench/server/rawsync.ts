/**
 * A lightweight SyncAuthorized client for the reconnect storm: node:http2 over TLS with the
 * agent SVID as client certificate, one framed request, and the first response message decoded.
 * A grpc-js channel per agent costs the client process several milliseconds of CPU per
 * connection (channel, subchannel, resolver and load-balancer objects, call stack); on a 2-core
 * machine where the clients share the server's cores, that client CPU, not the server, set the
 * storm's pace. This client does only what any agent must: the TLS handshake, HTTP/2, and
 * decoding its snapshot. Its secure context (key, chain and CA parsed) is built ahead, as a
 * reconnecting agent already holds it.
 */
import http2, { type ClientHttp2Session } from 'node:http2';
import { createSecureContext, type SecureContext } from 'node:tls';
import { SyncAuthorizedRequest, SyncAuthorizedResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { frame } from '../../test/security/fuzz/wire.js';
import type { AgentIdentity, ServerTarget } from './agentclient.js';

const PATH = '/spindle.agent.v1.AgentAPI/SyncAuthorized';

export interface KnownState {
  entries: Array<{ id: string; revisionNumber: bigint }>;
  bundleSequences: Map<string, bigint>;
  revision: bigint;
}

export interface RawSyncClient {
  /** Connects (new TCP + TLS session) and resolves with the first SyncAuthorized message. */
  sync(known?: KnownState): Promise<SyncAuthorizedResponse>;
  /** Closes the stream and the connection. */
  close(): void;
}

export function secureContextFor(target: ServerTarget, id: AgentIdentity): SecureContext {
  return createSecureContext({ cert: certificatesToPem(id.chain), key: id.privateKeyPem, ca: certificatesToPem(target.bundle) });
}

export function rawSyncClient(target: ServerTarget, secureContext: SecureContext): RawSyncClient {
  let session: ClientHttp2Session | undefined;
  return {
    sync(known) {
      session?.destroy();
      const s = http2.connect(`https://127.0.0.1:${target.port}`, {
        secureContext,
        // The chain is verified against the bundle (rejectUnauthorized stays on); the server's
        // SPIFFE ID is not what the storm measures.
        checkServerIdentity: () => undefined,
      });
      session = s;
      return new Promise((resolve, reject) => {
        let settled = false;
        const fail = (why: string): void => {
          if (settled) return;
          settled = true;
          reject(new Error(why));
        };
        s.on('error', (err) => fail(`session: ${err.message}`));
        const req = s.request({ ':method': 'POST', ':path': PATH, 'content-type': 'application/grpc', te: 'trailers' });
        const body = SyncAuthorizedRequest.encode({
          sinceRevision: known?.revision ?? 0n,
          knownEntries: known?.entries ?? [],
          knownBundleSequences: known?.bundleSequences ?? new Map(),
        }).finish();
        req.end(frame(body));
        const chunks: Buffer[] = [];
        let have = 0;
        req.on('response', (h) => {
          if (h['grpc-status'] !== undefined && h['grpc-status'] !== '0') fail(`grpc-status ${String(h['grpc-status'])}: ${String(h['grpc-message'] ?? '')}`);
        });
        req.on('trailers', (h) => fail(`stream ended before the first message: grpc-status ${String(h['grpc-status'])} ${String(h['grpc-message'] ?? '')}`));
        req.on('error', (err) => fail(`stream: ${err.message}`));
        req.on('close', () => fail(`stream closed before the first message (rst ${req.rstCode})`));
        req.on('data', (chunk: Buffer) => {
          if (settled) return;
          chunks.push(chunk);
          have += chunk.length;
          if (have < 5) return;
          const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          const len = buf.readUInt32BE(1);
          if (have < 5 + len) return;
          settled = true;
          try {
            resolve(SyncAuthorizedResponse.decode(buf.subarray(5, 5 + len)));
          } catch (err) {
            reject(err as Error);
          }
        });
      });
    },
    close() {
      session?.destroy();
      session = undefined;
    },
  };
}

/**
 * The TLS client certificate of an agent API call, cheaply.
 *
 * grpc-js's `call.getAuthContext()` calls `TLSSocket.getPeerCertificate()` on every call, which
 * builds node's legacy certificate object each time (subject and issuer parsed, three
 * fingerprints hashed, extensions decoded): 19% of the server's JavaScript time per NewJWTSVID
 * call, with many calls on one connection. We only need the DER, and on TLS 1.3 the peer
 * certificate cannot change during a connection (no renegotiation; node does not use
 * post-handshake authentication), so it is read once per connection and remembered with the
 * socket. On TLS 1.2 (renegotiation could present another certificate) it is read on every
 * call. (`getPeerX509Certificate()` is no cheaper for a new connection: about 160 µs against
 * 65 µs, measured.)
 *
 * The socket is reached through grpc-js's call objects (public surface call -> interceptor
 * chain -> the base call holding the HTTP/2 stream). Those fields are not public API: when the
 * walk does not find a TLS socket (a grpc-js change), this falls back to getAuthContext(), so
 * the result is always the one grpc-js would give. Same rule as grpc-js: a certificate only
 * when the handshake verified the chain against the configured authorities (`authorized`).
 * peer.test.ts checks that the fast path is the one taken with the pinned grpc-js.
 */
import { TLSSocket } from 'node:tls';

/** What the agent API needs from a call. */
export interface AuthContextCall {
  getAuthContext(): { sslPeerCertificate?: { raw: Buffer } };
}

/** How many call objects deep the HTTP/2 stream may be (interceptors add one each). */
const MAX_DEPTH = 16;

/** The call's TLS socket through grpc-js internals, or undefined when the shape is unknown. */
export function tlsSocketOf(call: unknown): TLSSocket | undefined {
  let c = (call as { call?: unknown }).call;
  for (let i = 0; i < MAX_DEPTH && c !== null && typeof c === 'object'; i++) {
    const socket = (c as { stream?: { session?: { socket?: unknown } } }).stream?.session?.socket;
    if (socket !== undefined) return socket instanceof TLSSocket ? socket : undefined;
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/** Peer certificates of TLS 1.3 connections, read once per connection. */
const remembered = new WeakMap<TLSSocket, Buffer>();

/** The DER of the verified TLS client certificate, or undefined (none, or not verified). */
export function peerCertificateDer(call: AuthContextCall): Buffer | undefined {
  const socket = tlsSocketOf(call);
  if (socket !== undefined) {
    if (!socket.authorized) return undefined;
    const known = remembered.get(socket);
    if (known !== undefined) return known;
    const raw = (socket.getPeerCertificate() as { raw?: Buffer }).raw;
    if (raw === undefined || raw.length === 0) return undefined;
    if (socket.getProtocol() === 'TLSv1.3') remembered.set(socket, raw);
    return raw;
  }
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  return raw !== undefined && raw.length > 0 ? raw : undefined;
}

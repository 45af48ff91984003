/**
 * The TLS client certificate of an agent API call, cheaply.
 *
 * grpc-js's `call.getAuthContext()` calls `TLSSocket.getPeerCertificate()`, which builds
 * node's legacy certificate object on every call: subject and issuer parsed, three
 * fingerprints hashed, extensions decoded. We only need the DER, and that object was 19% of the
 * server's JavaScript time per NewJWTSVID call. `getPeerX509Certificate().raw` gives the same
 * bytes for a fraction of the cost.
 *
 * The socket is reached through grpc-js's call objects (public surface call -> interceptor
 * chain -> the base call holding the HTTP/2 stream). Those fields are not public API: when the
 * walk does not find a TLS socket (a grpc-js change), this falls back to getAuthContext(), so
 * the result is always the one grpc-js would give. Same rule as grpc-js: a certificate only
 * when the handshake verified the chain against the configured authorities (`authorized`).
 * service.test / peer.test check that the fast path is the one taken with the pinned grpc-js.
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

/** The DER of the verified TLS client certificate, or undefined (none, or not verified). */
export function peerCertificateDer(call: AuthContextCall): Buffer | undefined {
  const socket = tlsSocketOf(call);
  if (socket !== undefined) {
    if (!socket.authorized) return undefined;
    return socket.getPeerX509Certificate()?.raw;
  }
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  return raw !== undefined && raw.length > 0 ? raw : undefined;
}

/**
 * HTTP/2 with X509-SVIDs (`node:http2`), on top of the SPIFFE TLS helpers in tlsconfig.ts.
 *
 * Server: `createMtlsHttp2Server` is `http2.createSecureServer` with `mtlsServerOptions` and
 * `guardMtlsServer`: the client's chain is verified against the bundle of its own trust domain
 * (one URI SAN, leaf rules) and the authorizer decides, in the server's `secureConnection` emit,
 * before Node makes an HTTP/2 session of the socket. A refused client never gets a session, so no
 * `session` / `stream` / `request` listener sees it; the server emits `spiffeRejected(err, socket)`
 * with the typed error and the client sees its connection closed. Rotation: the server follows
 * its SVID source's `updated` event (`setSecureContext`), so new sessions get the current SVID and
 * live sessions keep theirs. HTTP/1.1 fallback (`allowHTTP1`) is off, as in http2's default.
 *
 * Handlers read the client's ID with `http2PeerId(stream)` (also a session, or the compat API's
 * `req`). `peerIdOf(stream.session.socket)` does not work: http2 hands out a proxy, not the socket.
 *
 * Client: `connectMtlsHttp2` dials with `tlsconfig.dialMtls` (ALPN `h2`) and resolves with a
 * `ClientHttp2Session` only once the server was verified the SPIFFE way and the authorizer
 * accepted its ID; a refusal rejects with the same typed SpiffeError `dial` gives, and no HTTP/2
 * byte (not even the connection preface) was sent. Each call presents the current SVID.
 */
import * as http2 from 'node:http2';
import type * as tls from 'node:tls';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { SpiffeId } from '../id.js';
import type { X509BundleSource } from '../source.js';
import type { Authorizer } from './authorizer.js';
import { dial, guardMtlsServer, mtlsServerOptions, peerIdOf, type DialOptions, type X509SvidSource } from './tlsconfig.js';

/** Set on each verified server-side socket; http2's socket proxy forwards property reads to it. */
const PEER_ID = Symbol('spindle.spiffe.http2PeerId');

type Tagged = { [PEER_ID]?: SpiffeId };

/**
 * An `http2.Http2SecureServer` with mTLS: our current SVID, clients verified and authorized before
 * any session exists (see the header). `opts` takes more http2 server options (settings, ...);
 * the SPIFFE ones win. Attach handlers with `server.on('stream', ...)` (or `'request'`);
 * listen for `spiffeRejected` to log refusals.
 */
export function createMtlsHttp2Server(
  svidSource: X509SvidSource,
  bundleSource: X509BundleSource,
  authorizer: Authorizer,
  opts: http2.SecureServerOptions = {},
): http2.Http2SecureServer {
  const options = mtlsServerOptions(svidSource, bundleSource, authorizer);
  const server = http2.createSecureServer({ ...opts, ...options, allowHTTP1: false });
  guardMtlsServer(server, options);
  // Only verified sockets reach `secureConnection` listeners (the guard stops the emit of a
  // refused one). Prepended, so the tag is on the socket before http2 makes the session of it.
  server.prependListener('secureConnection', (socket: tls.TLSSocket) => {
    (socket as Tagged)[PEER_ID] = peerIdOf(socket);
  });
  return server;
}

/**
 * The verified SPIFFE ID of the peer of an HTTP/2 stream, session or compat request (`req`, via
 * its `stream`): the client on a server made by `createMtlsHttp2Server`, the server on a session
 * from `connectMtlsHttp2`. Throws ERR_TLS_PEER `not_verified` otherwise.
 */
export function http2PeerId(of: http2.Http2Stream | http2.Http2Session | http2.Http2ServerRequest): SpiffeId {
  const session = of instanceof http2.Http2ServerRequest ? of.stream.session : 'session' in of ? of.session : of;
  const socket = session?.socket as (tls.TLSSocket & Tagged) | undefined;
  const id = socket?.[PEER_ID];
  if (id === undefined) throw new SpiffeError(ErrorCode.TLS_PEER, 'not_verified', 'this HTTP/2 session has no peer verified by the SPIFFE TLS helpers');
  return id;
}

export interface ConnectMtlsHttp2Options extends DialOptions {
  /** More http2.connect options (settings, ...); `createConnection` is ours. */
  http2?: http2.ClientSessionOptions;
}

function splitAuthority(authority: string | URL): { url: URL; host: string; port: number } {
  const url = typeof authority === 'string' ? new URL(authority.includes('://') ? authority : `https://${authority}`) : authority;
  if (url.protocol !== 'https:') throw new TypeError(`connectMtlsHttp2: ${url.href} is not an https authority`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { url, host, port: url.port === '' ? 443 : Number(url.port) };
}

/**
 * An HTTP/2 client session over mTLS whose server was verified the SPIFFE way (go-spiffe's
 * `spiffetls.Dial` then HTTP/2): our current SVID as client certificate, the server's chain
 * verified against its trust domain's bundle, then `authorizer` on its ID (never its hostname).
 * `authority` is `https://host:port` or `host:port`. Resolves only after the verification; a
 * refusal rejects with the typed SpiffeError (`ERR_X509_SVID_UNTRUSTED` `no_bundle`,
 * `ERR_SPIFFE_UNAUTHORIZED` `id_mismatch`, ...) before any HTTP/2 byte was sent; a server
 * that does not negotiate `h2` rejects with ERR_TLS_PEER `no_h2`.
 */
export async function connectMtlsHttp2(
  authority: string | URL,
  svidSource: X509SvidSource,
  bundleSource: X509BundleSource,
  authorizer: Authorizer,
  options: ConnectMtlsHttp2Options = {},
): Promise<http2.ClientHttp2Session> {
  const { url, host, port } = splitAuthority(authority);
  const { http2: sessionOptions, ...dialOptions } = options;
  const socket = await dial({ host, port }, svidSource, bundleSource, authorizer, { ...dialOptions, tls: { ...dialOptions.tls, ALPNProtocols: ['h2'] } });
  if (socket.alpnProtocol !== 'h2') {
    socket.destroy();
    throw new SpiffeError(ErrorCode.TLS_PEER, 'no_h2', `the server at ${host}:${port} did not negotiate HTTP/2 (ALPN h2)`);
  }
  const id = peerIdOf(socket);
  (socket as tls.TLSSocket & Tagged)[PEER_ID] = id;
  return http2.connect(url, { ...sessionOptions, createConnection: () => socket });
}

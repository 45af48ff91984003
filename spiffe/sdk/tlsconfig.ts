/**
 * TLS with X509-SVIDs (go-spiffe's `spiffetls/tlsconfig`), for `node:tls` and `node:https`.
 * Peers are verified the SPIFFE way, never by hostname: the peer's chain must lead to the bundle
 * of the trust domain in its SPIFFE ID (verifyX509Svid: exactly one URI SAN, leaf rules, path
 * rules), then the Authorizer decides on the ID.
 *
 * Clients. Every refusal of a server is a typed SpiffeError, the same code and reason a server
 * gives for the same certificate (`ERR_X509_SVID_UNTRUSTED` `no_bundle` / `unknown_authority` /
 * `expired`, `ERR_X509_SVID_INVALID` `multiple_uri_sans` / `leaf_is_ca`, the authorizer's
 * `ERR_SPIFFE_UNAUTHORIZED` `id_mismatch`, ...), and no application data reaches a refused server:
 * - `dial` / `dialMtls` / `dialTls` (go-spiffe's `spiffetls.Dial`): resolve with the socket only
 *   after the server's chain was verified against the bundle of its own trust domain and the
 *   authorizer accepted its ID (OpenSSL's verdict is not used: it knows no trust domains, and
 *   its failures are untyped); a refusal rejects, and nothing was written.
 * - `https.request` with `mtlsClientOptions` / `tlsClientOptions`: the options carry a
 *   `SpiffeHttpsAgent` whose asynchronous `createConnection` does the same before the request
 *   gets the socket, so the refusal is the request's `error` event and no request byte is sent.
 *   The agent never resumes a TLS session (a resumed session presents no chain to verify).
 * - Plain `tls.connect({ ...opts })`: OpenSSL checks the chain against every trusted authority
 *   (`ca`), then `checkServerIdentity` runs the SPIFFE checks and the authorizer, typed; but a
 *   chain OpenSSL cannot build (an authority of no trusted trust domain, an expired leaf) fails
 *   first with Node's own code (`UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `CERT_HAS_EXPIRED`): refused,
 *   not typed. Use `dial` for typed refusals on raw TLS sockets. Do not pass a `session`.
 * `key` / `cert` / `ca` are getters, so every new connection uses the current SVID and bundles
 * (spread the options per connection, not once).
 *
 * Servers: Node has no hook to verify a client certificate during a server handshake, so plain
 * options cannot refuse a client the SPIFFE way; `mtlsServerOptions` must be used through
 * `createMtlsServer` / `createMtlsHttpsServer` (or `guardMtlsServer` on a server made with
 * them). The guard verifies the client in the server's `secureConnection` emit, before any
 * listener (and so before HTTP parsing or the user's handler) sees the socket; a refused client's
 * socket is destroyed without reading a byte of its data, and the server emits
 * `spiffeRejected(err, socket)` with the typed error (`ERR_X509_SVID_INVALID` /
 * `ERR_X509_SVID_UNTRUSTED` from verification, `ERR_SPIFFE_UNAUTHORIZED` from the authorizer,
 * `ERR_TLS_PEER` reason `no_peer_certificate`). The client sees its connection closed.
 * Servers made by these helpers follow their SVID source's `updated` event with
 * `server.setSecureContext` (and answer SNI clients from the current SVID), so new connections
 * get the current SVID without a restart; live connections keep theirs.
 *
 * `peerIdOf(socket)` gives the verified peer's SPIFFE ID (server: `req.socket` in https handlers).
 */
import type { EventEmitter } from 'node:events';
import * as https from 'node:https';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { SpiffeId } from '../id.js';
import type { X509BundleSource } from '../source.js';
import { parseCertificate } from '../x509/parse.js';
import { checkX509SvidLeaf, verifyX509Svid, type X509Svid } from '../x509/verify.js';
import type { Authorizer } from './authorizer.js';
import { authorityPems, PeerVerificationCache, svidPem } from './peercache.js';

/** Where our own SVID comes from (an X509Source, or anything with the method). */
export interface X509SvidSource {
  getX509Svid(): X509Svid;
}

/** Trust material: per trust domain for SPIFFE verification, plus a way to list every authority (BundleSet and X509Source have it). */
export type TlsBundleSource = X509BundleSource & ({ allX509Authorities(): readonly Buffer[] } | { bundles(): { x509Authorities(): Buffer[] }[] });

const peerIds = new WeakMap<tls.TLSSocket, SpiffeId>();
const GUARD = Symbol('spindle.spiffe.mtlsGuard');

function tlsPeerError(reason: string, message: string): SpiffeError {
  return new SpiffeError(ErrorCode.TLS_PEER, reason, message);
}

function allAuthorities(source: TlsBundleSource): Buffer[] {
  if ('allX509Authorities' in source) return [...source.allX509Authorities()];
  return source.bundles().flatMap((b) => b.x509Authorities());
}

function keyAndCert(svid: X509Svid): { key: string; cert: string } {
  // Made once per SVID (every connection and every options spread reads it).
  return svidPem(svid);
}

/** The chain a peer presented (leaf first), from Node's linked certificate objects. */
function chainOf(cert: tls.PeerCertificate | tls.DetailedPeerCertificate | undefined): Buffer[] {
  const out: Buffer[] = [];
  let c = cert as tls.DetailedPeerCertificate | undefined;
  while (c !== undefined && c.raw !== undefined && out.length < 32) {
    if (out.some((d) => d.equals(c!.raw))) break;
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/** Verifies a presented chain and runs the authorizer; returns the peer's ID or throws the typed error. */
export function verifyPeerChain(chain: Buffer[], bundles: X509BundleSource, authorizer: Authorizer): SpiffeId {
  if (chain.length === 0) throw tlsPeerError('no_peer_certificate', 'the peer presented no certificate');
  const verified = verifyX509Svid(chain, bundles);
  authorizer(verified.id, verified.chain);
  return verified.id;
}

/**
 * The verified SPIFFE ID of the peer of `socket` (or of a request: its `.socket`). Server side:
 * set by the guard. Client side: set by `dial` and the client options' agent; for plain
 * tls.connect sockets with the client options, which stay open only when the server passed
 * the SPIFFE checks, read from the leaf. Throws `ERR_TLS_PEER` `not_verified`.
 */
export function peerIdOf(socket: tls.TLSSocket | { socket?: unknown }): SpiffeId {
  const s = (socket instanceof tls.TLSSocket ? socket : (socket as { socket?: unknown }).socket) as tls.TLSSocket | undefined;
  const known = s === undefined ? undefined : peerIds.get(s);
  if (known !== undefined) return known;
  // Client side (a socket made with the client options here): it is authorized only when
  // OpenSSL and checkServerIdentity (the SPIFFE checks and the authorizer) accepted the server.
  if (s instanceof tls.TLSSocket && s.authorized) {
    // getPeerCertificate, not getPeerX509Certificate: on a client socket Node 20 hands the
    // peer's X509Certificate to the first caller only (undefined afterwards, for both getters),
    // so reading it here would take it from the caller.
    const leaf = s.getPeerCertificate();
    if (leaf?.raw !== undefined) {
      const id = checkX509SvidLeaf(parseCertificate(leaf.raw));
      peerIds.set(s, id);
      return id;
    }
  }
  throw tlsPeerError('not_verified', 'this socket has no peer verified by the SPIFFE TLS helpers');
}

function clientCheck(bundles: X509BundleSource, authorizer: Authorizer): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    try {
      verifyPeerChain(chainOf(cert), bundles, authorizer);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  };
}

/** Default bound on a client's TCP connect + TLS handshake + verification (dial and the client options' agent). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;

/**
 * tls.connect, handing the socket over only once its server is verified the SPIFFE way
 * (go-spiffe's client config: OpenSSL's verdict is not used, the chain is verified against the
 * bundle of the server's own trust domain, then the authorizer decides). `done` gets the socket,
 * or the typed refusal (the socket then destroyed, nothing written on it), or Node's error
 * (connection refused, reset, a TLS alert), or ERR_TLS_PEER `handshake_timeout`.
 * Nothing is written to the socket here; the caller writes only after `done(null, socket)`.
 */
function connectVerified(
  options: tls.ConnectionOptions,
  bundles: X509BundleSource,
  authorizer: Authorizer,
  timeoutMs: number,
  done: (err: Error | null, socket?: tls.TLSSocket) => void,
): tls.TLSSocket {
  const connectOpts: tls.ConnectionOptions = {
    ...options,
    // The SPIFFE checks below replace OpenSSL's: it knows no trust domains, and its failures
    // (an authority of another trust domain, an expired leaf) would come untyped.
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
  };
  // A resumed session has no peer chain to verify: always a full handshake.
  delete connectOpts.session;
  const socket = tls.connect(connectOpts);
  let finished = false;
  const finish = (err: Error | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.off('secureConnect', onSecure);
    socket.off('error', onError);
    socket.off('close', onClose);
    if (err !== null) {
      socket.on('error', () => {});
      socket.destroy();
      done(err);
    } else {
      done(null, socket);
    }
  };
  const onSecure = (): void => {
    try {
      peerIds.set(socket, verifyPeerChain(chainOf(socket.getPeerCertificate(true)), bundles, authorizer));
      finish(null);
    } catch (err) {
      finish(err instanceof Error ? err : new Error(String(err)));
    }
  };
  const onError = (err: Error): void => finish(err);
  const onClose = (): void => finish(tlsPeerError('closed', 'the server closed the connection during the TLS handshake'));
  const timer = setTimeout(
    () => finish(tlsPeerError('handshake_timeout', `no verified TLS connection to ${String(options.host ?? 'localhost')}:${String(options.port)} within ${timeoutMs} ms`)),
    timeoutMs,
  );
  socket.once('secureConnect', onSecure);
  socket.on('error', onError);
  socket.once('close', onClose);
  return socket;
}

/**
 * The https.Agent of the client options: each new connection is handed to the request only after
 * its server passed the SPIFFE checks and the authorizer (`createConnection` is asynchronous, as
 * Node's Agent allows), so a refusal is the request's `error` event, typed, and the request never
 * wrote a byte. TLS sessions are never resumed (a resumed session presents no chain). Sockets
 * kept alive for later requests (`keepAlive: true`) were verified when they were made.
 */
export class SpiffeHttpsAgent extends https.Agent {
  readonly #bundles: X509BundleSource;
  readonly #authorizer: Authorizer;
  readonly #timeoutMs: number;

  constructor(bundleSource: X509BundleSource, authorizer: Authorizer, options: https.AgentOptions & { handshakeTimeoutMs?: number } = {}) {
    const { handshakeTimeoutMs, ...agentOptions } = options;
    super({ ...agentOptions, maxCachedSessions: 0 });
    this.#bundles = bundleSource;
    this.#authorizer = authorizer;
    this.#timeoutMs = handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  }

  override createConnection(options: https.RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    if (callback === undefined) throw new TypeError('SpiffeHttpsAgent.createConnection is asynchronous: pass a callback');
    connectVerified(options as tls.ConnectionOptions, this.#bundles, this.#authorizer, this.#timeoutMs, (err, socket) => {
      if (err !== null) callback(err, undefined as unknown as Duplex);
      else callback(null, socket!);
    });
    return undefined;
  }
}

/** Options for tls.connect / https.request: our SVID as client certificate, the server verified the SPIFFE way. */
export function mtlsClientOptions(svidSource: X509SvidSource, bundleSource: TlsBundleSource, authorizer: Authorizer): tls.ConnectionOptions & https.RequestOptions {
  const opts = tlsClientOptions(bundleSource, authorizer);
  Object.defineProperties(opts, {
    key: { enumerable: true, get: () => keyAndCert(svidSource.getX509Svid()).key },
    cert: { enumerable: true, get: () => keyAndCert(svidSource.getX509Svid()).cert },
  });
  return opts;
}

/** Options for tls.connect / https.request: no client certificate, the server verified the SPIFFE way. */
export function tlsClientOptions(bundleSource: TlsBundleSource, authorizer: Authorizer): tls.ConnectionOptions & https.RequestOptions {
  const opts: tls.ConnectionOptions & https.RequestOptions = {
    // What plain tls.connect uses (the agent below replaces both with its own verification).
    rejectUnauthorized: true,
    checkServerIdentity: clientCheck(bundleSource, authorizer),
    // Used by https.request, ignored by tls.connect.
    agent: new SpiffeHttpsAgent(bundleSource, authorizer),
  };
  const caPems = authorityPems();
  Object.defineProperty(opts, 'ca', { enumerable: true, get: () => caPems(allAuthorities(bundleSource)) });
  return opts;
}

/** Where to dial: `host:port` (`[::1]:8443` for IPv6) or `{ host, port }`. */
export type DialAddress = string | { host: string; port: number };

export interface DialOptions {
  /** Bound on TCP connect + handshake + verification; default DEFAULT_HANDSHAKE_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Aborts the dial (rejects with the signal's reason). */
  signal?: AbortSignal;
  /** More tls.connect options (servername, ALPNProtocols, minVersion, ...); the SPIFFE ones win. */
  tls?: tls.ConnectionOptions;
}

function parseDialAddress(address: DialAddress): { host: string; port: number } {
  if (typeof address !== 'string') return address;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port < 1 || port > 65535) throw new TypeError(`dial: address ${JSON.stringify(address)} is not host:port`);
  return { host: m[1] ?? m[2]!, port };
}

/**
 * go-spiffe's `spiffetls.DialWithMode`: a TLS connection whose server has been verified the
 * SPIFFE way (chain to its trust domain's bundle, one URI SAN, leaf rules, then `authorizer`).
 * With `svidSource` our SVID is the client certificate (mTLS), with `undefined` none (TLS).
 * Resolves with the socket only after the verification; a refusal rejects with the typed error
 * (the same SpiffeError a server-side refusal gives) and nothing has been written to the server.
 * Connection failures reject with Node's error, a slow server with ERR_TLS_PEER `handshake_timeout`.
 */
export function dial(
  address: DialAddress,
  svidSource: X509SvidSource | undefined,
  bundleSource: X509BundleSource,
  authorizer: Authorizer,
  options: DialOptions = {},
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const { signal } = options;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let target: { host: string; port: number };
    let creds: { key?: string; cert?: string };
    try {
      target = parseDialAddress(address);
      creds = svidSource === undefined ? {} : keyAndCert(svidSource.getX509Svid());
    } catch (err) {
      reject(err);
      return;
    }
    const servername = options.tls?.servername ?? (isIP(target.host) === 0 ? target.host : undefined);
    const onAbort = (): void => {
      socket.destroy();
      reject(signal!.reason);
    };
    const socket = connectVerified(
      { ...options.tls, ...creds, host: target.host, port: target.port, ...(servername === undefined ? {} : { servername }) },
      bundleSource,
      authorizer,
      options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      (err, s) => {
        signal?.removeEventListener('abort', onAbort);
        if (err !== null) reject(err);
        else resolve(s!);
      },
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** `dial` with our SVID as client certificate (spiffetls MTLSClient mode). */
export function dialMtls(address: DialAddress, svidSource: X509SvidSource, bundleSource: X509BundleSource, authorizer: Authorizer, options: DialOptions = {}): Promise<tls.TLSSocket> {
  return dial(address, svidSource, bundleSource, authorizer, options);
}

/** `dial` without a client certificate (spiffetls TLSClient mode). */
export function dialTls(address: DialAddress, bundleSource: X509BundleSource, authorizer: Authorizer, options: DialOptions = {}): Promise<tls.TLSSocket> {
  return dial(address, undefined, bundleSource, authorizer, options);
}

interface ServerSpiffe {
  svidSource: X509SvidSource;
  bundleSource?: X509BundleSource;
  authorizer?: Authorizer;
}

type SpiffeServerOptions = tls.TlsOptions & { [GUARD]: ServerSpiffe };

function serverBase(svidSource: X509SvidSource): tls.TlsOptions {
  let cached: { svid: X509Svid; ctx: tls.SecureContext } | undefined;
  const opts: tls.TlsOptions = {
    // SNI clients get a context made from the current SVID (cached while the SVID is the same).
    SNICallback: (_name, cb) => {
      try {
        const svid = svidSource.getX509Svid();
        if (cached?.svid !== svid) cached = { svid, ctx: tls.createSecureContext(keyAndCert(svid)) };
        cb(null, cached.ctx);
      } catch (err) {
        cb(err as Error);
      }
    },
  };
  Object.assign(opts, keyAndCert(svidSource.getX509Svid()));
  return opts;
}

/** Server options requiring a client X509-SVID; only for createMtlsServer / createMtlsHttpsServer (see the header). */
export function mtlsServerOptions(svidSource: X509SvidSource, bundleSource: X509BundleSource, authorizer: Authorizer): tls.TlsOptions {
  const opts = serverBase(svidSource) as SpiffeServerOptions;
  opts.requestCert = true;
  // OpenSSL's verdict is not used: the guard verifies against the peer trust domain's bundle.
  opts.rejectUnauthorized = false;
  Object.defineProperty(opts, GUARD, { value: { svidSource, bundleSource, authorizer }, enumerable: false });
  return opts;
}

/** Server options presenting our SVID, no client certificate (server-authenticated TLS). */
export function tlsServerOptions(svidSource: X509SvidSource): tls.TlsOptions {
  const opts = serverBase(svidSource) as SpiffeServerOptions;
  Object.defineProperty(opts, GUARD, { value: { svidSource }, enumerable: false });
  return opts;
}

/**
 * Installs on `server` what the options cannot do: the client check before any listener sees the
 * socket (mTLS options) and the SVID rotation. Called by the create helpers.
 */
export function guardMtlsServer<S extends tls.Server>(server: S, options: tls.TlsOptions): S {
  const spiffe = (options as Partial<SpiffeServerOptions>)[GUARD];
  if (spiffe === undefined) throw new TypeError('guardMtlsServer: options must come from mtlsServerOptions or tlsServerOptions');
  const { svidSource, bundleSource, authorizer } = spiffe;
  if (bundleSource !== undefined && authorizer !== undefined) {
    // Reuses the verification of a chain seen before (same bytes, path still valid, anchor still
    // in the bundle); the authorizer runs for every connection. See peercache.ts.
    const verified = new PeerVerificationCache();
    const emit = server.emit as (this: S, event: string | symbol, ...args: unknown[]) => boolean;
    server.emit = function (this: S, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'secureConnection') {
        const socket = args[0] as tls.TLSSocket;
        try {
          const chain = chainOf(socket.getPeerCertificate(true));
          peerIds.set(socket, chain.length === 0 ? verifyPeerChain(chain, bundleSource, authorizer) : verified.verify(chain, bundleSource, authorizer));
        } catch (err) {
          socket.destroy();
          emit.call(this, 'spiffeRejected', err, socket);
          return false;
        }
      }
      return emit.call(this, event, ...args);
    } as typeof server.emit;
  }
  const source = svidSource as Partial<EventEmitter>;
  if (typeof source.on === 'function' && typeof source.off === 'function') {
    const onUpdated = (): void => {
      try {
        server.setSecureContext(keyAndCert(svidSource.getX509Svid()));
      } catch (err) {
        server.emit('spiffeError', err);
      }
    };
    source.on('updated', onUpdated);
    server.once('close', () => source.off!('updated', onUpdated));
  }
  return server;
}

/** A tls.Server with mTLS: our current SVID, clients verified and authorized before `secureConnection` listeners run. */
export function createMtlsServer(
  svidSource: X509SvidSource,
  bundleSource: X509BundleSource,
  authorizer: Authorizer,
  listener?: (socket: tls.TLSSocket) => void,
  extra: tls.TlsOptions = {},
): tls.Server {
  const options = mtlsServerOptions(svidSource, bundleSource, authorizer);
  return guardMtlsServer(tls.createServer({ ...extra, ...options }, listener), options);
}

/** An https.Server with mTLS (same guarantees as createMtlsServer; `peerIdOf(req.socket)` in handlers). */
export function createMtlsHttpsServer(
  svidSource: X509SvidSource,
  bundleSource: X509BundleSource,
  authorizer: Authorizer,
  handler?: Parameters<typeof https.createServer>[1],
  extra: https.ServerOptions = {},
): https.Server {
  const options = mtlsServerOptions(svidSource, bundleSource, authorizer);
  return guardMtlsServer(https.createServer({ ...extra, ...options }, handler), options);
}

/** A tls.Server presenting our current SVID (no client certificates). */
export function createTlsServer(svidSource: X509SvidSource, listener?: (socket: tls.TLSSocket) => void, extra: tls.TlsOptions = {}): tls.Server {
  const options = tlsServerOptions(svidSource);
  return guardMtlsServer(tls.createServer({ ...extra, ...options }, listener), options);
}

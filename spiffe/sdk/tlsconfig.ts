/**
 * TLS with X509-SVIDs (go-spiffe's `spiffetls/tlsconfig`), for `node:tls` and `node:https`.
 * Peers are verified the SPIFFE way, never by hostname: the peer's chain must lead to the bundle
 * of the trust domain in its SPIFFE ID (verifyX509Svid: exactly one URI SAN, leaf rules, path
 * rules), then the Authorizer decides on the ID.
 *
 * Clients: `mtlsClientOptions` / `tlsClientOptions` are plain options for `tls.connect` and
 * `https.request`. OpenSSL first checks the chain against every trusted authority (`ca`, read
 * from the bundle source at connect time), then `checkServerIdentity` runs the SPIFFE checks and
 * the authorizer; a failure destroys the socket during the handshake, before the caller's first
 * byte is sent, with the SpiffeError as the socket's (request's) error. A chain OpenSSL itself
 * cannot build (an authority of no trusted trust domain, an expired certificate) fails earlier
 * with Node's own code (`UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `CERT_HAS_EXPIRED`, ...).
 * `key` / `cert` / `ca` are getters, so every new connection uses the current SVID and bundles
 * (spread the options per connection, not once). Resumed TLS sessions skip checkServerIdentity
 * in Node, so the options carry an https.Agent that never resumes one; do not pass a `session`
 * to tls.connect with them.
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
import * as tls from 'node:tls';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { SpiffeId } from '../id.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import type { X509BundleSource } from '../source.js';
import { parseCertificate } from '../x509/parse.js';
import { checkX509SvidLeaf, verifyX509Svid, type X509Svid } from '../x509/verify.js';
import type { Authorizer } from './authorizer.js';

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
  return {
    key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey)),
    cert: svid.certificates.map((c) => toPem('CERTIFICATE', c)).join(''),
  };
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
 * set by the guard. Client side: for sockets made with the client options here, which stay
 * open only when the server passed the SPIFFE checks. Throws `ERR_TLS_PEER` `not_verified`.
 */
export function peerIdOf(socket: tls.TLSSocket | { socket?: unknown }): SpiffeId {
  const s = (socket instanceof tls.TLSSocket ? socket : (socket as { socket?: unknown }).socket) as tls.TLSSocket | undefined;
  const known = s === undefined ? undefined : peerIds.get(s);
  if (known !== undefined) return known;
  // Client side (a socket made with the client options here): it is authorized only when
  // OpenSSL and checkServerIdentity (the SPIFFE checks and the authorizer) accepted the server.
  if (s instanceof tls.TLSSocket && s.authorized) {
    const leaf = s.getPeerX509Certificate();
    if (leaf !== undefined) {
      const id = checkX509SvidLeaf(parseCertificate(leaf.raw));
      peerIds.set(s, id);
      return id;
    }
  }
  throw tlsPeerError('not_verified', 'this socket has no peer verified by the SPIFFE TLS helpers');
}

function clientCheck(bundles: TlsBundleSource, authorizer: Authorizer): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    try {
      verifyPeerChain(chainOf(cert), bundles, authorizer);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  };
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
    rejectUnauthorized: true,
    checkServerIdentity: clientCheck(bundleSource, authorizer),
    // Node skips checkServerIdentity on a resumed TLS session, and https.globalAgent shares
    // sessions between requests whatever their authorizer: this agent (used by https.request,
    // ignored by tls.connect) never resumes a session.
    agent: new https.Agent({ maxCachedSessions: 0 }),
  };
  Object.defineProperty(opts, 'ca', { enumerable: true, get: () => allAuthorities(bundleSource).map((d) => toPem('CERTIFICATE', d)) });
  return opts;
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
    const emit = server.emit as (this: S, event: string | symbol, ...args: unknown[]) => boolean;
    server.emit = function (this: S, event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'secureConnection') {
        const socket = args[0] as tls.TLSSocket;
        try {
          peerIds.set(socket, verifyPeerChain(chainOf(socket.getPeerCertificate(true)), bundleSource, authorizer));
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

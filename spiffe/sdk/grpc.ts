/**
 * gRPC with X509-SVIDs for @grpc/grpc-js (go-spiffe's `spiffegrpc/grpccredentials`):
 * `mtlsServerCredentials` / `tlsServerCredentials` for `server.bindAsync`, and
 * `mtlsClientCredentials` / `tlsClientCredentials` for clients and channels. Peers are verified
 * the SPIFFE way, never by hostname: the chain must lead to the bundle of the trust domain in the
 * peer's SPIFFE ID (exactly one URI SAN, leaf rules), then the Authorizer decides on the ID.
 *
 * Server. grpc-js gives credentials no hook into the TLS handshake, so the client is judged by a
 * server interceptor the credentials install, on the first call of each connection (the verdict
 * is kept for the connection's lifetime, as a handshake's would be), before the call's metadata
 * reaches the service: no handler runs for a refused client. A refused call ends with
 * - `UNAUTHENTICATED` when the client's certificate does not verify (no certificate, no bundle
 *   for its trust domain, an unknown authority, expired, not an SVID ...),
 * - `PERMISSION_DENIED` when the authorizer refuses its ID,
 * and details `<code> <reason>: <message>` of the SpiffeError (e.g. `ERR_SPIFFE_UNAUTHORIZED
 * id_mismatch: peer spiffe://example.org/x is not the expected ...`). The TLS connection itself
 * stays up (every call on it is refused the same way). `onRejected` sees each refusal.
 * Handlers read the caller's ID with `grpcPeerId(call)` (go-spiffe's `PeerIDFromContext`);
 * `call.getAuthContext()` gives the verified leaf as `sslPeerCertificate`.
 * Rotation: the credentials follow their SVID source's `updated` event, so new connections get the
 * current SVID without a restart; live connections keep theirs. Pass the credentials to bindAsync
 * as they are: wrapping them (`experimental.createServerCredentialsWithInterceptors`) drops the
 * SPIFFE interceptor, and then nothing checks the client; add your own interceptors through the
 * Server's `interceptors` option, they run after ours.
 *
 * Client. Each new connection is made by `tlsconfig.dial` (ALPN h2) on the channel's socket: our
 * current SVID as client certificate (mTLS), the server verified and authorized before grpc-js
 * sends a byte. A refused server fails the connection attempt: calls end with `UNAVAILABLE` whose
 * details carry the SpiffeError's message; the channel keeps retrying with backoff, as for any
 * connection failure. Live connections keep the SVID they were made with. Channels to the same
 * target with the same credentials object share connections (grpc-js's subchannel pool); use the
 * channel option `grpc.use_local_subchannel_pool: 1` for a connection of the channel's own.
 */
import {
  CallCredentials,
  ChannelCredentials,
  ResponderBuilder,
  ServerCredentials,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Status,
  type ChannelOptions,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerMethodDefinition,
  type experimental,
} from '@grpc/grpc-js';
import type { EventEmitter } from 'node:events';
import type * as http2 from 'node:http2';
import { isIP, type Socket } from 'node:net';
import type * as tls from 'node:tls';
import { ErrorCode, SpiffeError } from '../errors.js';
import type { SpiffeId } from '../id.js';
import { exportPrivateKeyPkcs8 } from '../keys.js';
import { toPem } from '../pem.js';
import type { X509BundleSource } from '../source.js';
import { verifyX509Svid, type X509Svid } from '../x509/verify.js';
import type { Authorizer } from './authorizer.js';
import { dial, DEFAULT_HANDSHAKE_TIMEOUT_MS, type X509SvidSource } from './tlsconfig.js';

type SecureConnector = experimental.SecureConnector;
/** grpc-js's auth context of a call (`call.getAuthContext()`). */
export type AuthContext = ReturnType<ServerInterceptingCallInterface['getAuthContext']>;
/** The status a refused call ends with. */
export interface RefusalStatus {
  code: Status;
  details: string;
}
type GrpcUri = experimental.GrpcUri;

const pemCache = new WeakMap<X509Svid, { key: Buffer; cert: Buffer }>();

function keyAndCert(svid: X509Svid): { key: Buffer; cert: Buffer } {
  let kc = pemCache.get(svid);
  if (kc === undefined) {
    kc = {
      key: Buffer.from(toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey))),
      cert: Buffer.from(svid.certificates.map((c) => toPem('CERTIFICATE', c)).join('')),
    };
    pemCache.set(svid, kc);
  }
  return kc;
}

/** The chain a peer presented (leaf first). */
function chainOf(cert: tls.DetailedPeerCertificate | undefined): Buffer[] {
  const out: Buffer[] = [];
  let c = cert;
  while (c !== undefined && c.raw !== undefined && out.length < 32) {
    if (out.some((d) => d.equals(c!.raw))) break;
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/** What the interceptor decided for one connection. */
type Verdict = { ok: true; id: SpiffeId; auth: AuthContext } | { ok: false; status: RefusalStatus; error: Error };

/** Verified auth contexts handed out by the interceptor -> the peer's ID (grpcPeerId reads it). */
const verifiedContexts = new WeakMap<AuthContext, SpiffeId>();

function refusal(code: Status, err: unknown): Verdict {
  const error = err instanceof Error ? err : new Error(String(err));
  const details = error instanceof SpiffeError ? `${error.code} ${error.reason}: ${error.message}` : error.message;
  return { ok: false, status: { code, details }, error };
}

function judge(session: http2.Http2Session, bundles: X509BundleSource, authorizer: Authorizer): Verdict {
  const leaf = session.socket ? (session.socket as tls.TLSSocket).getPeerCertificate(true) : undefined;
  const chain = chainOf(leaf);
  if (chain.length === 0) return refusal(Status.UNAUTHENTICATED, new SpiffeError(ErrorCode.TLS_PEER, 'no_peer_certificate', 'the client presented no certificate'));
  let id: SpiffeId;
  let verifiedChain: Buffer[];
  try {
    ({ id, chain: verifiedChain } = verifyX509Svid(chain, bundles));
  } catch (err) {
    return refusal(Status.UNAUTHENTICATED, err);
  }
  try {
    authorizer(id, verifiedChain);
  } catch (err) {
    return refusal(Status.PERMISSION_DENIED, err);
  }
  const auth: AuthContext = { transportSecurityType: 'ssl', sslPeerCertificate: leaf };
  verifiedContexts.set(auth, id);
  return { ok: true, id, auth };
}

/** The call the interceptor passes on: grpc-js's, with the verified auth context. */
class VerifiedCall extends ServerInterceptingCall {
  readonly #auth: AuthContext;
  constructor(next: ServerInterceptingCallInterface, auth: AuthContext) {
    super(next);
    this.#auth = auth;
  }
  override getAuthContext(): AuthContext {
    return this.#auth;
  }
}

export interface ServerCredentialsOptions {
  /** Called for each refused call, with the typed error (for logs and metrics). */
  onRejected?: (err: Error, status: RefusalStatus, call: ServerInterceptingCallInterface) => void;
}

function spiffeInterceptor(bundles: X509BundleSource, authorizer: Authorizer, onRejected: ServerCredentialsOptions['onRejected']): ServerInterceptor {
  const verdicts = new WeakMap<http2.Http2Session, Verdict>();
  return (_method: ServerMethodDefinition<unknown, unknown>, call: ServerInterceptingCallInterface): ServerInterceptingCall => {
    // Credentials' interceptors run first, so `call` is grpc-js's own call on the HTTP/2 stream
    // (not part of its typed API). Without it no verdict is possible: refuse (fail closed).
    const session = (call as unknown as { stream?: http2.ServerHttp2Stream }).stream?.session;
    let verdict: Verdict;
    if (session === undefined) {
      verdict = refusal(Status.UNAUTHENTICATED, new SpiffeError(ErrorCode.TLS_PEER, 'peer_unavailable', 'the SPIFFE credentials cannot see the connection of this call'));
    } else {
      verdict = verdicts.get(session) ?? judge(session, bundles, authorizer);
      verdicts.set(session, verdict);
    }
    if (verdict.ok) return new VerifiedCall(call, verdict.auth);
    const refused = verdict;
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata(() => {
        onRejected?.(refused.error, refused.status, call);
        call.sendStatus(refused.status);
      })
      .withOnReceiveMessage(() => {})
      .withOnReceiveHalfClose(() => {})
      .build();
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build();
    return new ServerInterceptingCall(call, responder);
  };
}

class SpiffeServerCredentials extends ServerCredentials {
  readonly #svidSource: X509SvidSource;
  readonly #interceptors: ServerInterceptor[];
  readonly #onUpdated = (): void => {
    try {
      const { key, cert } = keyAndCert(this.#svidSource.getX509Svid());
      this.updateSecureContextOptions({ key, cert });
    } catch {
      // No SVID now: keep serving with the last one (the source reports its own errors).
    }
  };

  constructor(svidSource: X509SvidSource, verify: { bundles: X509BundleSource; authorizer: Authorizer; options: ServerCredentialsOptions } | undefined) {
    const { key, cert } = keyAndCert(svidSource.getX509Svid());
    // OpenSSL's verdict is not used: the interceptor verifies against the peer trust domain's bundle.
    super(verify === undefined ? {} : { requestCert: true, rejectUnauthorized: false }, { key, cert });
    this.#svidSource = svidSource;
    this.#interceptors = verify === undefined ? [] : [spiffeInterceptor(verify.bundles, verify.authorizer, verify.options.onRejected)];
  }

  override _addWatcher(watcher: Parameters<ServerCredentials['_addWatcher']>[0]): void {
    const source = this.#svidSource as Partial<EventEmitter>;
    if (this.getWatcherCount() === 0 && typeof source.on === 'function') source.on('updated', this.#onUpdated);
    super._addWatcher(watcher);
  }

  override _removeWatcher(watcher: Parameters<ServerCredentials['_removeWatcher']>[0]): void {
    super._removeWatcher(watcher);
    const source = this.#svidSource as Partial<EventEmitter>;
    if (this.getWatcherCount() === 0 && typeof source.off === 'function') source.off('updated', this.#onUpdated);
  }

  override _getInterceptors(): ServerInterceptor[] {
    return this.#interceptors;
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

/**
 * go-spiffe's `grpccredentials.MTLSServerCredentials`: server credentials presenting our current
 * SVID and requiring a client X509-SVID that verifies against its trust domain's bundle and that
 * `authorizer` accepts (see the header for how refusals look).
 */
export function mtlsServerCredentials(svidSource: X509SvidSource, bundleSource: X509BundleSource, authorizer: Authorizer, options: ServerCredentialsOptions = {}): ServerCredentials {
  return new SpiffeServerCredentials(svidSource, { bundles: bundleSource, authorizer, options });
}

/** go-spiffe's `grpccredentials.TLSServerCredentials`: our current SVID, no client certificate asked. */
export function tlsServerCredentials(svidSource: X509SvidSource): ServerCredentials {
  return new SpiffeServerCredentials(svidSource, undefined);
}

/**
 * go-spiffe's `grpccredentials.PeerIDFromContext`: the SPIFFE ID of the client of a call on a
 * server bound with `mtlsServerCredentials` (verified and authorized before the handler ran).
 * Takes the handler's call (or an interceptor's). Throws ERR_TLS_PEER `not_verified` otherwise.
 */
export function grpcPeerId(call: { getAuthContext(): AuthContext }): SpiffeId {
  const id = verifiedContexts.get(call.getAuthContext());
  if (id === undefined) throw new SpiffeError(ErrorCode.TLS_PEER, 'not_verified', 'this call has no client verified by the SPIFFE gRPC credentials');
  return id;
}

/** Host and port of a channel target, for the handshake's SNI and error messages. */
function targetHost(target: GrpcUri, options: ChannelOptions): { host: string; port: number; servername?: string } {
  const override = options['grpc.ssl_target_name_override'];
  const m = target.scheme === 'unix' ? null : /^(?:\[([^\]]+)\]|([^:/]+))(?::(\d+))?$/.exec(target.path);
  const host = m === null ? 'localhost' : (m[1] ?? m[2]!);
  const port = m?.[3] === undefined ? 443 : Number(m[3]);
  const servername = typeof override === 'string' ? override : isIP(host) === 0 ? host : undefined;
  return { host, port, ...(servername === undefined ? {} : { servername }) };
}

export interface ClientCredentialsOptions {
  /** Bound on the TLS handshake and verification of each connection; default DEFAULT_HANDSHAKE_TIMEOUT_MS. */
  handshakeTimeoutMs?: number;
}

class SpiffeChannelCredentials extends ChannelCredentials {
  readonly #svidSource: X509SvidSource | undefined;
  readonly #bundles: X509BundleSource;
  readonly #authorizer: Authorizer;
  readonly #timeoutMs: number;

  constructor(svidSource: X509SvidSource | undefined, bundles: X509BundleSource, authorizer: Authorizer, options: ClientCredentialsOptions) {
    super();
    this.#svidSource = svidSource;
    this.#bundles = bundles;
    this.#authorizer = authorizer;
    this.#timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  }

  override _isSecure(): boolean {
    return true;
  }

  override _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  override _createSecureConnector(channelTarget: GrpcUri, options: ChannelOptions, callCredentials?: CallCredentials): SecureConnector {
    const { host, port, servername } = targetHost(channelTarget, options);
    return {
      connect: async (socket: Socket) => {
        try {
          const tlsSocket = await dial({ host, port }, this.#svidSource, this.#bundles, this.#authorizer, {
            timeoutMs: this.#timeoutMs,
            tls: { socket, ALPNProtocols: ['h2'], ...(servername === undefined ? {} : { servername }) },
          });
          return { socket: tlsSocket, secure: true };
        } catch (err) {
          // grpc-js reports only the message (in the failed calls' details): make it name the refusal.
          if (err instanceof SpiffeError) throw new SpiffeError(err.code, err.reason, `${err.code} ${err.reason}: ${err.message}`, { cause: err });
          throw err;
        }
      },
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => callCredentials ?? CallCredentials.createEmpty(),
      destroy: () => {},
    };
  }
}

/**
 * go-spiffe's `grpccredentials.MTLSClientCredentials`: channel credentials presenting our current
 * SVID (read for each new connection) and accepting only a server whose chain verifies against
 * its trust domain's bundle and whose ID `authorizer` accepts (never its hostname).
 */
export function mtlsClientCredentials(svidSource: X509SvidSource, bundleSource: X509BundleSource, authorizer: Authorizer, options: ClientCredentialsOptions = {}): ChannelCredentials {
  return new SpiffeChannelCredentials(svidSource, bundleSource, authorizer, options);
}

/** go-spiffe's `grpccredentials.TLSClientCredentials`: the server verified the same way, no client certificate. */
export function tlsClientCredentials(bundleSource: X509BundleSource, authorizer: Authorizer, options: ClientCredentialsOptions = {}): ChannelCredentials {
  return new SpiffeChannelCredentials(undefined, bundleSource, authorizer, options);
}

/**
 * Inbound listeners: mTLS with the service's X509-SVID (from the X509Source; new connections get
 * a rotated SVID through the SDK's server, live ones keep theirs), the caller verified the SPIFFE
 * way by the SDK's guard before any of this code sees the socket (chain to the bundle of the
 * caller's trust domain, one URI SAN, leaf rules), then the listener's PolicyDecider:
 * - TCP listeners decide once per connection and relay bytes to the local service;
 * - HTTP listeners hand the verified TLS socket to a node:http server and decide per request
 *   (method, path); a refusal is a 403 naming the rule; allowed requests are forwarded with a
 *   keep-alive agent, bodies streamed both ways (never buffered), with Envoy's
 *   X-Forwarded-Client-Cert (any the caller sent is removed) and a W3C traceparent.
 * Bounds: admission in two pools (admission.ts): connections not yet verified (pending) at most
 * max_pending_handshakes, and max_pending_per_address from one remote IP; verified callers at
 * most max_connections; a socket over any of them is closed at accept, before TLS work.
 * handshake_timeout frees pending slots, header_timeout bounds the whole request head (against
 * slowloris), idle_timeout closes a connection with no byte either way.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { addressKey, Admission, ShedLog, type ShedReason } from './admission.js';
import { authorizeAny } from '../spiffe/sdk/authorizer.js';
import { createMtlsServer, peerIdOf } from '../spiffe/sdk/tlsconfig.js';
import type { X509Source } from '../spiffe/sdk/x509source.js';
import type { Decision, RequestFacts } from './decision.js';
import { bearerToken, jwtFacts, type JwtBundleWatch } from './jwt.js';
import type { ListenerConfig } from './config.js';
import type { DeciderRef } from './policyhook.js';
import { ownIdReader } from './ownid.js';
import { relay } from './relay.js';
import type { AccessLog, ProxyMetrics } from './telemetry.js';

export interface ListenerDeps {
  source: X509Source;
  metrics: ProxyMetrics;
  access: AccessLog;
  /** JWT bundles for bearer JWT-SVIDs on HTTP listeners whose policy asks for them. */
  jwtBundles?: JwtBundleWatch;
  log: { info(o: object, m: string): void; warn(o: object, m: string): void; debug(o: object, m: string): void };
}

export interface RunningListener {
  name: string;
  address(): AddressInfo;
  /** Stops accepting and closes every connection. */
  close(): Promise<void>;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

// Random bytes for new trace and span ids, drawn 4 KB at a time rather than two randomBytes calls per request.
let randomPool = Buffer.alloc(0);
let randomAt = 0;
function randomHex(bytes: number): string {
  if (randomAt + bytes > randomPool.length) {
    randomPool = randomBytes(4096);
    randomAt = 0;
  }
  randomAt += bytes;
  return randomPool.toString('hex', randomAt - bytes, randomAt);
}

/** The caller's traceparent when it is valid W3C (version 00, non-zero ids), else a new one (sampled flag off). */
export function traceparentFor(header: string | string[] | undefined): { value: string; started: boolean } {
  const h = Array.isArray(header) ? (header.length === 1 ? header[0] : undefined) : header;
  const m = h === undefined ? null : TRACEPARENT.exec(h.trim());
  if (m !== null && !/^0+$/.test(m[1]!) && !/^0+$/.test(m[2]!)) return { value: h!.trim(), started: false };
  let trace = randomHex(16);
  let span = randomHex(8);
  if (/^0+$/.test(trace)) trace = `${trace.slice(0, 31)}1`;
  if (/^0+$/.test(span)) span = `${span.slice(0, 15)}1`;
  return { value: `00-${trace}-${span}-00`, started: true };
}

/** Envoy's X-Forwarded-Client-Cert for a verified peer: `By=<own id>;Hash=<leafSha256Hex>;URI=<peer id>`. */
export function xfccValue(ownId: string, leafSha256Hex: string, peerId: string): string {
  return `By=${ownId};Hash=${leafSha256Hex};URI=${peerId}`;
}

/** Headers that belong to one hop (RFC 9110 7.6.1) and are not forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

/**
 * Headers a `Connection` list can never remove: the message's framing and target. A caller that
 * names `Content-Length` in `Connection` must not get its body forwarded without a length (the
 * service would read the body as the next request on the connection, one the policy never saw).
 */
const NEVER_NOMINATED = new Set(['content-length', 'host']);

function forwardHeaders(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== '' && !NEVER_NOMINATED.has(s)),
  );
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/**
 * The framing of a forwarded request, set explicitly: Node's parser has decoded a chunked body
 * (Transfer-Encoding is hop-by-hop and dropped), so it is re-chunked to the service; node's
 * client would otherwise send the body of a GET, HEAD, DELETE, OPTIONS or TRACE with no framing at
 * all, which the service reads as a request of its own. A Content-Length body keeps its length.
 */
function frameRequestBody(req: http.IncomingMessage, headers: http.OutgoingHttpHeaders): void {
  if (req.headers['transfer-encoding'] !== undefined) {
    delete headers['content-length'];
    headers['transfer-encoding'] = 'chunked';
  }
}

function pathOnly(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}

function remoteOf(s: net.Socket): string {
  return `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
}

export async function startInbound(l: ListenerConfig, decider: DeciderRef, deps: ListenerDeps): Promise<RunningListener> {
  const { source, metrics, access } = deps;
  const ownIdOf = ownIdReader(source);
  const sockets = new Set<net.Socket>();
  const server = createMtlsServer(source, source, authorizeAny(), undefined, {
    handshakeTimeout: l.handshakeTimeoutMs,
    // Not allowHalfOpen here: Node 20 never frees the connection slot of a half-open socket
    // whose handshake timed out (maxConnections would fill up). TCP listeners turn it on per
    // socket once the caller is verified, so a caller's half-close is relayed.
  });
  const shedLog = admit(server, l, deps);
  server.on('connection', (raw: net.Socket) => {
    // No Nagle delay on our side of a relayed exchange (Envoy, ghostunnel and Go set TCP_NODELAY too).
    raw.setNoDelay(true);
    sockets.add(raw);
    metrics.activeConnections.inc({ listener: l.name });
    raw.once('close', () => {
      sockets.delete(raw);
      metrics.activeConnections.dec({ listener: l.name });
    });
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, s: tls.TLSSocket) => {
    const reason = err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? 'timeout' : 'tls';
    metrics.handshakeErrors.inc({ listener: l.name, reason });
    deps.log.debug({ listener: l.name, remote: remoteOf(s), err: err.message }, 'TLS handshake failed');
  });
  // The SDK's guard refused the caller: no SVID, untrusted or malformed chain.
  server.on('spiffeRejected', (err: { reason?: string; message: string }, s: tls.TLSSocket) => {
    const reason = err.reason ?? 'invalid';
    metrics.handshakeErrors.inc({ listener: l.name, reason });
    const src = reason === 'no_peer_certificate' ? 'none' : 'unverified';
    metrics.connections.inc({ listener: l.name, source: src, decision: 'deny' });
    metrics.refusals.inc({ listener: l.name, source: src, rule: 'spiffe-verification' });
    const own = ownIdOf();
    access({
      kind: 'connection',
      listener: l.name,
      mode: 'inbound',
      ...(own === undefined ? {} : { own_id: own }),
      decision: 'deny',
      rule: 'spiffe-verification',
      reason: `${reason}: ${err.message}`,
      bytes_in: 0,
      bytes_out: 0,
      duration_ms: 0,
      remote: remoteOf(s),
    });
  });

  if (l.http) attachHttp(server, l, decider, deps, ownIdOf);
  else {
    server.on('secureConnection', (s: tls.TLSSocket) => {
      const start = Date.now();
      s.allowHalfOpen = true;
      const sourceId = peerIdOf(s);
      const d = decider.current.decide({ listener: l.name, sourceId });
      const src = metrics.sources.label(sourceId);
      const decision = d.allow ? 'allow' : 'deny';
      metrics.connections.inc({ listener: l.name, source: src, decision });
      const log = (bytesIn: number, bytesOut: number, error?: string): void => {
        const own = ownIdOf();
        access({
          kind: 'connection',
          listener: l.name,
          mode: 'inbound',
          source_id: sourceId,
          ...(own === undefined ? {} : { own_id: own }),
          decision,
          rule: d.rule,
          reason: error === undefined ? d.reason : `${d.reason}; ${error}`,
          ...(d.dryRun ? { dry_run: true } : {}),
          bytes_in: bytesIn,
          bytes_out: bytesOut,
          duration_ms: Date.now() - start,
          remote: remoteOf(s),
        });
        metrics.connectionDuration.observe({ listener: l.name, source: src, decision }, (Date.now() - start) / 1000);
      };
      if (!d.allow) {
        metrics.refusals.inc({ listener: l.name, source: src, rule: d.rule });
        s.destroy();
        log(0, 0);
        return;
      }
      const fwd = l.forward!;
      const upstream = fwd.kind === 'unix' ? net.connect({ path: fwd.path, allowHalfOpen: true }) : net.connect({ host: fwd.host, port: fwd.port, allowHalfOpen: true });
      relay(s, upstream, l.idleTimeoutMs, (r) => {
        metrics.bytesReceived.inc({ listener: l.name, source: src }, r.bytesIn);
        metrics.bytesSent.inc({ listener: l.name, source: src }, r.bytesOut);
        log(r.bytesIn, r.bytesOut, r.error);
      });
    });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(l.listen.port, l.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  deps.log.info({ listener: l.name, mode: 'inbound', http: l.http, address: server.address() }, 'listening');
  return {
    name: l.name,
    address: () => server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        shedLog.stop();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

/**
 * Installs the listener's admission (admission.ts) on `server`: a socket over the pending limits
 * (per address, per listener) or arriving while max_connections verified callers are open is
 * destroyed before the TLS server sees it; a finished handshake is promoted to the verified pool
 * just before the SDK's guard verifies it (refused there, its pending slot is freed on close).
 * net.Server.maxConnections stays as a backstop at the sum of both pools.
 */
function admit(server: tls.Server, l: ListenerConfig, deps: ListenerDeps): ShedLog {
  const { metrics } = deps;
  const admission = new Admission({ maxConnections: l.maxConnections, maxPendingHandshakes: l.maxPendingHandshakes, maxPendingPerAddress: l.maxPendingPerAddress });
  const shedLog = new ShedLog(l.name, (o, m) => deps.log.warn(o, m));
  // Open connections by remote `address|port` (unique among open ones on one listener): the
  // addressKey they are counted under and their pool.
  const state = new Map<string, { address: string; verified: boolean }>();
  const shed = (s: net.Socket, reason: ShedReason, address: string): void => {
    s.destroy();
    metrics.shed.inc({ listener: l.name, reason });
    if (reason === 'max_connections') metrics.overCapacity.inc({ listener: l.name });
    shedLog.record(reason, address);
  };
  server.maxConnections = l.maxConnections + l.maxPendingHandshakes;
  server.on('drop', (d?: { remoteAddress?: string }) => {
    metrics.shed.inc({ listener: l.name, reason: 'max_connections' });
    metrics.overCapacity.inc({ listener: l.name });
    shedLog.record('max_connections', d?.remoteAddress ?? '?');
  });
  const emit = server.emit as (this: tls.Server, event: string | symbol, ...args: unknown[]) => boolean;
  server.emit = function (this: tls.Server, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'connection') {
      const raw = args[0] as net.Socket;
      const address = addressKey(raw.remoteAddress ?? '?');
      const why = admission.admit(address);
      if (why !== undefined) {
        shed(raw, why, address);
        return false;
      }
      const key = `${raw.remoteAddress ?? '?'}|${raw.remotePort ?? '?'}`;
      state.set(key, { address, verified: false });
      metrics.pendingConnections.inc({ listener: l.name });
      raw.once('close', () => {
        const st = state.get(key);
        state.delete(key);
        if (st === undefined) return;
        if (st.verified) admission.releaseVerified();
        else {
          admission.releasePending(address);
          metrics.pendingConnections.dec({ listener: l.name });
        }
      });
    } else if (event === 'secureConnection') {
      const s = args[0] as tls.TLSSocket;
      const st = state.get(`${s.remoteAddress ?? '?'}|${s.remotePort ?? '?'}`);
      if (st !== undefined && !st.verified) {
        if (!admission.hasVerifiedRoom()) {
          shed(s, 'max_connections', st.address);
          return false;
        }
        // Promoted before the guard runs: one it refuses is destroyed there and frees this slot on close.
        st.verified = true;
        admission.promote(st.address);
        metrics.pendingConnections.dec({ listener: l.name });
      }
    }
    return emit.call(this, event, ...args);
  } as typeof server.emit;
  return shedLog;
}

/** The HTTP side of an inbound listener: verified TLS sockets fed to a node:http server. */
function attachHttp(server: tls.Server, l: ListenerConfig, decider: DeciderRef, deps: ListenerDeps, ownIdOf: () => string | undefined): void {
  const { metrics, access } = deps;
  const fwd = l.forward!;
  const agent = new http.Agent({ keepAlive: true, maxSockets: l.maxConnections, maxFreeSockets: 64, noDelay: true });
  // SHA-256 (hex) of each connection's verified peer leaf, for XFCC: computed once per connection.
  const leafHash = new WeakMap<net.Socket, string>();
  const httpServer = http.createServer(
    {
      headersTimeout: l.headerTimeoutMs,
      requestTimeout: 0, // bodies stream as long as bytes keep coming; idle_timeout bounds a stall
      keepAliveTimeout: Math.min(5000, l.idleTimeoutMs),
      // Node checks header timeouts on this interval; keep it well under the timeout.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(l.headerTimeoutMs / 4))),
    },
    (req, res) => {
      handle(req, res).catch((err: Error) => {
        deps.log.warn({ listener: l.name, err: err.message }, 'request failed');
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
          res.end('internal proxy error\n');
        } else res.destroy();
      });
    },
  );
  httpServer.timeout = l.idleTimeoutMs;
  httpServer.on('upgrade', (_req, s: net.Socket) => s.destroy()); // no upgrades (WebSocket) through HTTP listeners
  httpServer.on('clientError', (err: NodeJS.ErrnoException, s: net.Socket) => {
    if (s.writable && !s.destroyed) {
      const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      s.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    } else s.destroy();
    deps.log.debug({ listener: l.name, err: err.code ?? err.message }, 'bad or slow HTTP request');
  });
  // The http server never listens itself: 'listening' starts its header-timeout checks.
  httpServer.emit('listening');
  server.on('secureConnection', (s: tls.TLSSocket) => httpServer.emit('connection', s));
  server.once('close', () => httpServer.close());

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const start = Date.now();
    const s = req.socket as tls.TLSSocket;
    const sourceId = peerIdOf(s);
    const trace = traceparentFor(req.headers.traceparent);
    const method = (req.method ?? 'GET').toUpperCase();
    const path = pathOnly(req.url);
    // One decider for the whole request, even if a policy reload lands meanwhile.
    const policy = decider.current;
    const facts: RequestFacts = { listener: l.name, sourceId, method, path };
    const audiences = policy.jwtAudiences(l.name);
    if (audiences.length > 0) {
      Object.assign(facts, await jwtFacts(bearerToken(req), audiences, policy.jwtIssuer(l.name), deps.jwtBundles?.bundles()));
    }
    let d: Decision;
    try {
      d = policy.decide(facts);
    } catch (err) {
      d = { allow: false, wouldAllow: false, rule: 'policy-error', reason: `the policy failed: ${(err as Error).message}`, dryRun: false };
    }
    const src = metrics.sources.label(sourceId);
    const decision = d.allow ? 'allow' : 'deny';
    metrics.requests.inc({ listener: l.name, source: src, decision });
    let bytesIn = 0;
    let bytesOut = 0;
    let upstreamError: string | undefined;
    res.once('close', () => {
      const own = ownIdOf();
      metrics.requestDuration.observe({ listener: l.name, source: src, decision }, (Date.now() - start) / 1000);
      metrics.bytesReceived.inc({ listener: l.name, source: src }, bytesIn);
      metrics.bytesSent.inc({ listener: l.name, source: src }, bytesOut);
      access({
        kind: 'request',
        listener: l.name,
        mode: 'inbound',
        source_id: sourceId,
        ...(own === undefined ? {} : { own_id: own }),
        decision,
        rule: d.rule,
        reason: upstreamError === undefined ? d.reason : `${d.reason}; ${upstreamError}`,
        ...(d.dryRun ? { dry_run: true } : {}),
        method,
        path,
        ...(facts.jwt === undefined ? {} : { jwt_subject: facts.jwt.subject }),
        ...(facts.jwtError === undefined ? {} : { jwt_error: facts.jwtError }),
        status: res.statusCode,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        duration_ms: Date.now() - start,
        traceparent: trace.value,
        remote: remoteOf(s),
      });
    });
    if (!d.allow) {
      metrics.refusals.inc({ listener: l.name, source: src, rule: d.rule });
      const body = `forbidden by rule "${d.rule}": ${d.reason}\n`;
      res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), traceparent: trace.value });
      res.end(body);
      return;
    }
    let hash = leafHash.get(s);
    if (hash === undefined) {
      hash = createHash('sha256').update(s.getPeerCertificate().raw).digest('hex');
      leafHash.set(s, hash);
    }
    const headers = forwardHeaders(req.headers);
    delete headers['x-forwarded-client-cert'];
    headers['x-forwarded-client-cert'] = xfccValue(ownIdOf() ?? '', hash, sourceId);
    headers['x-forwarded-proto'] = 'https';
    // As Envoy does: the address this proxy saw is appended, so the last entry is the one a
    // service can trust (earlier ones are the caller's claims).
    const xff = req.headers['x-forwarded-for'];
    const peerIp = s.remoteAddress ?? 'unknown';
    headers['x-forwarded-for'] = xff === undefined || xff === '' ? peerIp : `${Array.isArray(xff) ? xff.join(', ') : xff}, ${peerIp}`;
    headers['traceparent'] = trace.value;
    if (trace.started) delete headers['tracestate'];
    frameRequestBody(req, headers);
    const up = http.request({
      ...(fwd.kind === 'unix' ? { socketPath: fwd.path } : { host: fwd.host, port: fwd.port }),
      method,
      path: req.url ?? '/',
      headers,
      agent,
    });
    req.on('data', (c: Buffer) => (bytesIn += c.length));
    req.pipe(up);
    up.on('response', (upRes) => {
      const h = forwardHeaders(upRes.headers);
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, h);
      upRes.on('data', (c: Buffer) => (bytesOut += c.length));
      upRes.pipe(res);
      upRes.on('error', () => res.destroy());
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      upstreamError = `upstream: ${err.code ?? err.message}`;
      if (!res.headersSent) {
        const body = `bad gateway: the local service did not answer (${err.code ?? 'error'})\n`;
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
    });
    // The caller went away mid-request: stop the upstream request too.
    res.once('close', () => {
      if (!res.writableFinished) up.destroy();
    });
  };
}

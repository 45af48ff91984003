/**
 * The SPIFFE bundle endpoint (SPIFFE Federation, "bundle endpoint server"): an HTTPS listener
 * that serves this trust domain's bundle document to other trust domains' servers.
 *
 * Contract:
 * - `GET /` (and HEAD) answers 200 with the SPIFFE bundle document (`application/json`): the
 *   current bundle of our trust domain (keys, `spiffe_sequence`) with `spiffe_refresh_hint` set
 *   to the configured refresh hint. The document follows every bundle change (CA rotation, a
 *   bundle written by another server) through the source's bundle listener, with no restart.
 * - Any other method: 405 (with `Allow: GET, HEAD`); any other path: 404; a GET or HEAD that
 *   announces a body (Content-Length > 0 or Transfer-Encoding): 400. A request body is never
 *   read: every refused request gets its answer and then its connection is destroyed, so a
 *   client cannot make the server read (or keep) what it sends.
 * - TLS, by profile: `https_spiffe` presents the server's own X509-SVID
 *   (spiffe://<td>/spire/server), swapped in with setSecureContext on every renewal (new
 *   connections get the new one); `https_web` presents the certificate and key of two PEM files,
 *   read again every file_sync_interval: a changed pair that loads replaces the served one, a
 *   broken one is logged once and the last good pair stays.
 * - Public-facing limits (BUNDLE_ENDPOINT_LIMITS): TLS handshake, header and request timeouts,
 *   idle keep-alive timeout and requests per connection, small header size and count, a
 *   maximum number of connections (server.maxConnections: more are closed at accept) and a cap
 *   per client IP address (more are closed at accept). Nothing a client sends is kept.
 * - Metrics (when a registry is given): requests by result, connections refused by reason.
 */
import { createServer, type Server } from 'node:https';
import { createSecureContext, type TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import { marshalBundle, type Bundle } from '../../spiffe/bundle.js';
import type { TrustDomain } from '../../spiffe/id.js';
import { serverIdOf } from '../../common/spireids.js';
import type { BundleEndpointProfile } from '../config/federationconfig.js';

export interface BundleEndpointLimits {
  /** Most connections open at once (server.maxConnections); more are closed at accept. */
  maxConnections: number;
  /** Most connections open at once from one client IP address; more are closed at accept. */
  maxConnectionsPerClient: number;
  /** Time to complete the TLS handshake. */
  handshakeTimeoutMs: number;
  /** Time to send the request headers (slow clients are cut off). */
  headersTimeoutMs: number;
  /** Time to send the whole request. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** Requests served on one connection before it is closed. */
  maxRequestsPerSocket: number;
  /** Largest request head (request line and headers), bytes. */
  maxHeaderSize: number;
  /** Most request headers read. */
  maxHeadersCount: number;
  /** How often the header and request timeouts are checked. */
  checkIntervalMs: number;
}

/** The endpoint's limits; a document of a few kilobytes needs no more. */
export const BUNDLE_ENDPOINT_LIMITS: Readonly<BundleEndpointLimits> = {
  maxConnections: 256,
  maxConnectionsPerClient: 16,
  handshakeTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  keepAliveTimeoutMs: 5_000,
  maxRequestsPerSocket: 100,
  maxHeaderSize: 4096,
  maxHeadersCount: 32,
  checkIntervalMs: 1_000,
};

export type BundleEndpointResult = 'ok' | 'not_found' | 'method_not_allowed' | 'bad_request';
const RESULTS: readonly BundleEndpointResult[] = ['ok', 'not_found', 'method_not_allowed', 'bad_request'];
const REFUSALS = ['max_connections', 'per_client'] as const;

/** Where the bundle comes from (the CaManager). */
export interface BundleSource {
  bundle(): Bundle;
  onBundleChange(listener: (bundle: Bundle) => void): () => void;
}

/** Where the server SVID comes from (the CaManager), for https_spiffe. */
export interface ServerSvidSource {
  serverSvid(): { certChainPem: string; privateKeyPem: string; serialHex: string };
  onServerSvidChange(listener: (svid: { certChainPem: string; privateKeyPem: string; serialHex: string }) => void): () => void;
}

type Logger = { info(o: object, m: string): void; warn(o: object, m: string): void; error(o: object, m: string): void };

export interface BundleEndpointOptions {
  trustDomain: TrustDomain;
  address: string;
  /** 0: any free port (the bound one is `BundleEndpoint.port`). */
  port: number;
  refreshHintSeconds: number;
  profile: BundleEndpointProfile;
  bundles: BundleSource;
  /** Required for https_spiffe. */
  serverSvid?: ServerSvidSource;
  logger: Logger;
  /** Counters are registered here when given. */
  registry?: Registry;
  limits?: Partial<BundleEndpointLimits>;
}

export interface BundleEndpoint {
  /** The bound port. */
  readonly port: number;
  /** https://<address>:<port>/ as configured (0.0.0.0 stays as is). */
  readonly url: string;
  /** Stops accepting, closes every connection, stops following changes. Idempotent. */
  close(): Promise<void>;
}

/** The document served for `bundle`: its keys and sequence, with our refresh hint. */
export function bundleDocument(bundle: Bundle, refreshHintSeconds: number): Buffer {
  const b = bundle.clone();
  b.refreshHintSeconds = refreshHintSeconds;
  return Buffer.from(marshalBundle(b), 'utf8');
}

interface KeyPair {
  cert: string;
  key: string;
}

function readPair(profile: Extract<BundleEndpointProfile, { name: 'https_web' }>): KeyPair {
  const cert = readFileSync(profile.certFilePath, 'utf8');
  const key = readFileSync(profile.keyFilePath, 'utf8');
  // Throws when either does not parse or the key is not the certificate's.
  createSecureContext({ cert, key });
  return { cert, key };
}

const hostPort = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

export async function startBundleEndpoint(opts: BundleEndpointOptions): Promise<BundleEndpoint> {
  const limits: BundleEndpointLimits = { ...BUNDLE_ENDPOINT_LIMITS, ...opts.limits };
  const { logger, profile } = opts;

  const requests = opts.registry
    ? new Counter({
        name: 'spindle_server_bundle_endpoint_requests_total',
        help: 'Requests to the SPIFFE bundle endpoint, by result (ok, not_found, method_not_allowed, bad_request).',
        labelNames: ['result'],
        registers: [opts.registry],
      })
    : undefined;
  const refused = opts.registry
    ? new Counter({
        name: 'spindle_server_bundle_endpoint_connections_refused_total',
        help: 'Connections to the SPIFFE bundle endpoint closed at accept, by reason (max_connections, per_client).',
        labelNames: ['reason'],
        registers: [opts.registry],
      })
    : undefined;
  for (const r of RESULTS) requests?.inc({ result: r }, 0);
  for (const r of REFUSALS) refused?.inc({ reason: r }, 0);

  // The document, rebuilt on every bundle change.
  let doc = bundleDocument(opts.bundles.bundle(), opts.refreshHintSeconds);
  const unsubscribe: Array<() => void> = [];
  unsubscribe.push(
    opts.bundles.onBundleChange((b) => {
      doc = bundleDocument(b, opts.refreshHintSeconds);
    }),
  );

  // The serving certificate.
  let initial: KeyPair;
  let fileTimer: NodeJS.Timeout | undefined;
  if (profile.name === 'https_spiffe') {
    if (opts.serverSvid === undefined) throw new TypeError('startBundleEndpoint: the https_spiffe profile needs the server SVID source');
    const svid = opts.serverSvid.serverSvid();
    initial = { cert: svid.certChainPem, key: svid.privateKeyPem };
  } else {
    try {
      initial = readPair(profile);
    } catch (err) {
      throw new Error(
        `cannot serve the bundle endpoint's certificate (federation.bundle_endpoint profile "https_web" serving_cert_file): ${profile.certFilePath} and ${profile.keyFilePath}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  const server: Server = createServer({
    cert: initial.cert,
    key: initial.key,
    handshakeTimeout: limits.handshakeTimeoutMs,
    maxHeaderSize: limits.maxHeaderSize,
    requestTimeout: limits.requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.checkIntervalMs,
    // Headers are parsed strictly (no lenient parsing of malformed requests).
    insecureHTTPParser: false,
  });
  server.maxConnections = limits.maxConnections;
  server.maxHeadersCount = limits.maxHeadersCount;
  server.maxRequestsPerSocket = limits.maxRequestsPerSocket;
  // Idle sockets (no request in progress, TLS stalled after the handshake) are closed too.
  server.timeout = limits.requestTimeoutMs;

  server.on('drop', () => refused?.inc({ reason: 'max_connections' }));

  // Per-client cap, counted on the TCP connection (before TLS).
  const perClient = new Map<string, number>();
  // Every accepted socket, so close() ends those still in their TLS handshake too.
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    const ip = socket.remoteAddress ?? '';
    const n = (perClient.get(ip) ?? 0) + 1;
    if (n > limits.maxConnectionsPerClient) {
      refused?.inc({ reason: 'per_client' });
      socket.destroy();
      return;
    }
    perClient.set(ip, n);
    socket.once('close', () => {
      const left = (perClient.get(ip) ?? 1) - 1;
      if (left <= 0) perClient.delete(ip);
      else perClient.set(ip, left);
    });
  });
  // TLS errors of single clients (bad handshakes, resets) are theirs: no log line per client.
  server.on('tlsClientError', (_err: Error, socket: TLSSocket) => socket.destroy());
  server.on('clientError', (_err: Error, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    socket.destroy();
  });

  const refuse = (req: IncomingMessage, res: ServerResponse, status: number, result: BundleEndpointResult, extra: Record<string, string> = {}): void => {
    requests?.inc({ result });
    res.shouldKeepAlive = false;
    res.writeHead(status, { 'content-length': 0, connection: 'close', ...extra });
    // The body (if any) is never read: the connection goes once the answer is out.
    res.end(() => req.socket.destroy());
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      refuse(req, res, 405, 'method_not_allowed', { allow: 'GET, HEAD' });
      return;
    }
    const length = req.headers['content-length'];
    if ((length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined) {
      refuse(req, res, 400, 'bad_request');
      return;
    }
    if (path !== '/') {
      refuse(req, res, 404, 'not_found');
      return;
    }
    requests?.inc({ result: 'ok' });
    const body = doc;
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': body.length,
      'x-content-type-options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });

  // Follow the serving certificate.
  if (profile.name === 'https_spiffe') {
    unsubscribe.push(
      opts.serverSvid!.onServerSvidChange((svid) => {
        try {
          server.setSecureContext({ cert: svid.certChainPem, key: svid.privateKeyPem });
        } catch (err) {
          logger.error({ err, serial: svid.serialHex }, 'bundle endpoint: could not switch to the renewed server SVID; still serving the previous one');
        }
      }),
    );
  } else {
    let current = initial;
    let lastProblem: string | undefined;
    const sync = (): void => {
      let next: KeyPair;
      try {
        next = readPair(profile);
      } catch (err) {
        const problem = (err as Error).message;
        if (problem !== lastProblem) {
          logger.warn(
            { err, cert_file_path: profile.certFilePath, key_file_path: profile.keyFilePath },
            'bundle endpoint: the serving certificate files cannot be used; still serving the last good certificate',
          );
        }
        lastProblem = problem;
        return;
      }
      lastProblem = undefined;
      if (next.cert === current.cert && next.key === current.key) return;
      server.setSecureContext({ cert: next.cert, key: next.key });
      current = next;
      logger.info({ cert_file_path: profile.certFilePath }, 'bundle endpoint: serving the new certificate from its file');
    };
    fileTimer = setInterval(sync, profile.fileSyncInterval * 1000);
    fileTimer.unref();
  }

  const stopFollowing = (): void => {
    for (const u of unsubscribe.splice(0)) u();
    if (fileTimer !== undefined) clearInterval(fileTimer);
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.address, port: opts.port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    stopFollowing();
    throw err;
  }
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : opts.port;
  const url = `https://${hostPort(opts.address, port)}/`;

  let closing: Promise<void> | undefined;
  return {
    port,
    url,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        stopFollowing();
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

/** The SPIFFE ID a https_spiffe client expects of this endpoint (its `endpoint_spiffe_id`). */
export function endpointSpiffeId(td: TrustDomain): string {
  return serverIdOf(td);
}

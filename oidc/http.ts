/**
 * The provider's HTTP side: two documents, served as a public endpoint.
 *
 * - `GET <prefix>.well-known/openid-configuration`: issuer (`jwt_issuer`, else
 *   `<scheme>://<host><prefix>`), jwks_uri (`jwks_uri`, else `<scheme>://<host><prefix>keys`),
 *   and SPIRE's fixed members (authorization_endpoint "", response_types_supported
 *   ["id_token"], subject_types_supported ["public"], id_token_signing_alg_values_supported
 *   ["RS256", "ES256", "ES384"]). The scheme is https unless allow_insecure_scheme is set and
 *   the request came over plain HTTP without `X-Forwarded-Proto: https`.
 * - `GET <prefix>keys`: the JWKS (keyset.ts), no caching; 503 until the first key set arrived.
 * - Order of checks: path (404), method (GET and HEAD only, else 405 with Allow), a request
 *   body (400: none is ever read), Host (or X-Forwarded-Host, as SPIRE) in `domains` (400).
 * - Hardening: bounded header size, header/request/idle/TLS handshake timeouts, a connection
 *   cap and a cap on requests per connection; errors are short text, never echoing the request.
 */
import { readFileSync, statSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import type { OidcConfig } from './config.js';
import type { KeySource } from './keyset.js';

/** Limits of the public listener (exported for the tests that check them). */
export const HTTP_LIMITS = {
  maxHeaderSize: 8 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  handshakeTimeoutMs: 10_000,
  maxConnections: 1024,
  maxRequestsPerSocket: 100,
} as const;

export const SIGNING_ALGS = ['RS256', 'ES256', 'ES384'] as const;

type Log = { debug(o: object, m: string): void; info(o: object, m: string): void; warn(o: object, m: string): void };

function firstHeader(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  return s?.split(',')[0]?.trim();
}

/** The host name of a Host header value (`name`, `name:port`, `[v6]:port`), lower case, without a trailing dot. */
export function hostNameOf(host: string): string {
  let name = host;
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
  if (v6) name = v6[1]!;
  else if (isIP(host) !== 6) name = host.replace(/:\d*$/, '');
  return name.toLowerCase().replace(/\.$/, '');
}

export function createHandler(config: OidcConfig, keys: KeySource, log: Log): (req: IncomingMessage, res: ServerResponse) => void {
  const prefix = config.serverPathPrefix;
  const wellKnown = `${prefix}.well-known/openid-configuration`;
  const keysPath = `${prefix}keys`;
  const domains = new Set(config.domains);

  const send = (req: IncomingMessage, res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void => {
    const type = status === 200 ? 'application/json' : 'text/plain; charset=utf-8';
    res.writeHead(status, {
      'content-type': type,
      'content-length': String(Buffer.byteLength(body)),
      'x-content-type-options': 'nosniff',
      ...headers,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    if (config.logRequests) log.debug({ method: req.method, path: (req.url ?? '').slice(0, 256), status }, 'request');
  };

  return (req, res) => {
    const url = req.url ?? '';
    const path = url.split('?')[0]!;
    if (path !== wellKnown && path !== keysPath) return send(req, res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(req, res, 405, 'method not allowed\n', { allow: 'GET, HEAD', connection: 'close' });
    }
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    if (te !== undefined || (cl !== undefined && cl !== '0')) return send(req, res, 400, 'a request body is not accepted\n', { connection: 'close' });

    const host = firstHeader(req.headers['x-forwarded-host']) ?? req.headers.host ?? '';
    if (host === '' || !domains.has(hostNameOf(host))) return send(req, res, 400, 'domain not allowed\n');

    if (path === keysPath) {
      const body = keys.state.body;
      if (body === undefined) return send(req, res, 503, 'document not available yet\n', { 'retry-after': '5' });
      return send(req, res, 200, body, { 'cache-control': 'no-cache, no-store, must-revalidate', pragma: 'no-cache', expires: '0' });
    }

    const secure = (req.socket as Socket & { encrypted?: boolean }).encrypted === true || firstHeader(req.headers['x-forwarded-proto'])?.toLowerCase() === 'https';
    const scheme = config.allowInsecureScheme && !secure ? 'http' : 'https';
    const origin = `${scheme}://${host}`;
    const doc = {
      issuer: config.jwtIssuer ?? (prefix === '/' ? origin : `${origin}${prefix.slice(0, -1)}`),
      jwks_uri: config.jwksUri ?? `${origin}${keysPath}`,
      authorization_endpoint: '',
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: [...SIGNING_ALGS],
    };
    return send(req, res, 200, `${JSON.stringify(doc, null, 2)}\n`, { 'cache-control': 'no-cache' });
  };
}

function harden(server: Server | HttpsServer): void {
  server.headersTimeout = HTTP_LIMITS.headersTimeoutMs;
  server.requestTimeout = HTTP_LIMITS.requestTimeoutMs;
  server.keepAliveTimeout = HTTP_LIMITS.keepAliveTimeoutMs;
  server.maxConnections = HTTP_LIMITS.maxConnections;
  server.maxRequestsPerSocket = HTTP_LIMITS.maxRequestsPerSocket;
  server.setTimeout(HTTP_LIMITS.idleTimeoutMs, (socket: Socket) => socket.destroy());
}

export interface ServingCert {
  certFilePath: string;
  keyFilePath: string;
}

function readCert(c: ServingCert): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(c.certFilePath), key: readFileSync(c.keyFilePath) };
}

/** A plain HTTP server with the handler and the limits. */
export function createPlainServer(handler: ReturnType<typeof createHandler>): Server {
  const server = createHttpServer({ maxHeaderSize: HTTP_LIMITS.maxHeaderSize, insecureHTTPParser: false }, handler);
  harden(server);
  return server;
}

/**
 * An HTTPS server with the certificate and key files, read again every `syncSeconds` when either
 * file changed (SPIRE's file_sync_interval); a pair that fails to load is logged and the
 * previous one kept. Returns the server and a stop function for the file watch.
 */
export function createTlsServer(handler: ReturnType<typeof createHandler>, files: ServingCert, syncSeconds: number, log: Log): { server: HttpsServer; stopSync: () => void } {
  const initial = readCert(files);
  const server = createHttpsServer(
    { ...initial, maxHeaderSize: HTTP_LIMITS.maxHeaderSize, handshakeTimeout: HTTP_LIMITS.handshakeTimeoutMs, minVersion: 'TLSv1.2' },
    handler,
  );
  harden(server);
  const stamp = (): string => {
    try {
      const a = statSync(files.certFilePath);
      const b = statSync(files.keyFilePath);
      return `${a.mtimeMs}/${a.size}/${a.ino}:${b.mtimeMs}/${b.size}/${b.ino}`;
    } catch {
      return '';
    }
  };
  let last = stamp();
  const timer = setInterval(() => {
    const now = stamp();
    if (now === last || now === '') return;
    last = now;
    try {
      server.setSecureContext({ ...readCert(files), minVersion: 'TLSv1.2' });
      log.info({ cert_file_path: files.certFilePath }, 'serving certificate reloaded');
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'serving certificate files changed but could not be loaded; keeping the previous ones');
    }
  }, syncSeconds * 1000);
  timer.unref();
  return { server, stopSync: () => clearInterval(timer) };
}

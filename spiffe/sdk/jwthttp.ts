/**
 * JWT-SVIDs over HTTP: the client sends `Authorization: Bearer <JWT-SVID>` (RFC 6750), the server
 * validates it against the bundle of the token's trust domain and, optionally, authorizes the
 * token's subject (the same Authorizers as for mTLS).
 *
 * Client:
 *   const headers = await jwtAuthHeaders(jwtSource, 'spiffe://example.org/payments');
 *   await fetch(url, { headers });                   // or http.request({ ..., headers })
 *
 * Server:
 *   const auth = { bundles, audience: 'spiffe://example.org/payments', authorizer: authorizeMemberOf('example.org') };
 *   app.use(jwtSvidMiddleware(auth));                // Express/Connect: req.spiffe = { id, claims }
 *   http.createServer(withJwtSvid(auth, (req, res, spiffe) => ...));
 *   const { id, claims } = await validateJwtFromRequest(req, auth);  // anything with headers
 *
 * Contract:
 * - The token is the `Authorization` header's value after `Bearer ` (scheme case-insensitive,
 *   RFC 6750 section 2.1). Checked before any parsing: present (`missing_token`), Bearer
 *   (`not_bearer`), one b64token (`malformed_header`), at most MAX_JWT_SVID_LENGTH characters
 *   (`token_too_large`): SpiffeError `ERR_JWT_AUTH`.
 * - Then validateJwtSvid (spiffe/jwtsvid.ts): alg, the subject's trust domain's JWT bundle from
 *   `bundles`, signature, `exp` (with `leewaySeconds`, default 30 s), `aud` containing `audience`:
 *   `ERR_JWT_SVID_INVALID` / `ERR_JWT_SVID_UNTRUSTED` with their reasons. When `issuer` is set,
 *   `iss` must equal it: `ERR_JWT_SVID_INVALID` reason `issuer`. Last the authorizer, on the
 *   subject (with an empty chain: there is none): its error as thrown when it is a SpiffeError,
 *   else wrapped as `ERR_SPIFFE_UNAUTHORIZED` reason `refused`.
 * - HTTP answers (jwtAuthFailure): a refused authorizer is 403 with
 *   `WWW-Authenticate: Bearer error="insufficient_scope", error_description="..."`; any other
 *   token problem is 401 with `Bearer error="invalid_token", error_description="<reason>: ..."`;
 *   a request with no Bearer credentials at all (`missing_token`, `not_bearer`) is 401 with a
 *   bare `Bearer` challenge (RFC 6750 section 3.1: no error code then), the reason in the body.
 *   Errors that are not about the request (a closed BundleSource, say) are not answered as 401:
 *   the Express middleware passes them to `next(err)`, the other wrappers answer 500.
 * - The middlewares call `onRejected(err, req)` (when given) before answering, so the caller
 *   sees the typed error (logs, metrics).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, SpiffeError, isSpiffeError } from '../errors.js';
import type { SpiffeId } from '../id.js';
import { MAX_JWT_SVID_LENGTH, validateJwtSvid } from '../jwtsvid.js';
import type { JwtBundleSource } from '../source.js';
import type { Authorizer } from './authorizer.js';
import type { JwtSvid, JwtSvidParams } from './jwtsource.js';

// ---------------------------------------------------------------------------------------------
// Client side

/** Anything that hands out JWT-SVIDs (a JwtSource). */
export interface JwtSvidFetcher {
  fetchJwtSvid(params: JwtSvidParams): Promise<JwtSvid>;
}

/**
 * `{ authorization: 'Bearer <JWT-SVID>' }` for `audience` (or full params): spread it into
 * node:http/https request `headers` or pass it as fetch's `headers`.
 */
export async function jwtAuthHeaders(source: JwtSvidFetcher, audience: string | JwtSvidParams): Promise<{ authorization: string }> {
  const svid = await source.fetchJwtSvid(typeof audience === 'string' ? { audience } : audience);
  return { authorization: `Bearer ${svid.token}` };
}

// ---------------------------------------------------------------------------------------------
// Server side

export interface JwtAuthOptions {
  /** JWT bundles: a BundleSource, a JwtSource, a BundleSet. */
  bundles: JwtBundleSource;
  /** This server's audience: the token's `aud` must include it. */
  audience: string;
  /** When set, the token's `iss` must equal it (the server's `jwt_issuer`). */
  issuer?: string;
  /** Runs on the token's subject after validation; throws to refuse (403). */
  authorizer?: Authorizer;
  leewaySeconds?: number;
  /** `realm` of the WWW-Authenticate challenge. */
  realm?: string;
  /** Clock, for tests. */
  now?: () => Date;
}

/** What a validated request carries (`req.spiffe`). */
export interface SpiffeJwtAuth {
  id: SpiffeId;
  claims: Record<string, unknown>;
  expiresAt: Date;
  audience: string[];
}

/** A node:http request, an Express/Koa/Fastify request, or a fetch Request. */
export type RequestWithHeaders = { headers: IncomingHttpHeaders } | { headers: { get(name: string): string | null } };

function authError(reason: 'missing_token' | 'not_bearer' | 'malformed_header' | 'token_too_large', message: string): SpiffeError {
  return new SpiffeError(ErrorCode.JWT_AUTH, reason, message);
}

function authorizationOf(req: RequestWithHeaders): string | undefined {
  const h = req.headers as { get?: unknown } & Record<string, unknown>;
  const v = typeof h.get === 'function' ? (h.get as (n: string) => string | null).call(h, 'authorization') : h['authorization'];
  if (Array.isArray(v)) return typeof v[0] === 'string' ? v[0] : undefined;
  return typeof v === 'string' ? v : undefined;
}

// RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** The bearer token of the request, or an `ERR_JWT_AUTH` error saying why there is none. */
export function bearerTokenOf(req: RequestWithHeaders): string {
  const value = authorizationOf(req);
  if (value === undefined || value.trim() === '') throw authError('missing_token', 'the request has no Authorization header with a JWT-SVID');
  // Bounded before anything else looks at it.
  if (value.length > MAX_JWT_SVID_LENGTH + 'Bearer '.length + 16) {
    throw authError('token_too_large', `the Authorization header is longer than a JWT-SVID may be (${MAX_JWT_SVID_LENGTH} characters)`);
  }
  const m = /^([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?: +(.*))?$/.exec(value.trim());
  if (m === null || m[1]!.toLowerCase() !== 'bearer') {
    throw authError('not_bearer', `the Authorization header is not Bearer (scheme ${JSON.stringify((m?.[1] ?? value).slice(0, 20))})`);
  }
  const token = (m[2] ?? '').trim();
  if (!B64TOKEN.test(token)) throw authError('malformed_header', 'the Authorization header holds no single Bearer token');
  if (token.length > MAX_JWT_SVID_LENGTH) throw authError('token_too_large', `the bearer token is longer than ${MAX_JWT_SVID_LENGTH} characters`);
  return token;
}

/**
 * Validates the request's JWT-SVID: header, signature with the bundle of the token's trust
 * domain, audience, expiry, `iss` (when `issuer` is set), then the authorizer on the subject.
 * Resolves with the subject and claims; rejects with a SpiffeError (see the module comment).
 */
export async function validateJwtFromRequest(req: RequestWithHeaders, opts: JwtAuthOptions): Promise<SpiffeJwtAuth> {
  const token = bearerTokenOf(req);
  const v = await validateJwtSvid(token, {
    audience: opts.audience,
    bundles: opts.bundles,
    ...(opts.now === undefined ? {} : { now: opts.now() }),
    ...(opts.leewaySeconds === undefined ? {} : { leewaySeconds: opts.leewaySeconds }),
  });
  if (opts.issuer !== undefined && v.claims['iss'] !== opts.issuer) {
    const got = v.claims['iss'];
    throw new SpiffeError(
      ErrorCode.JWT_SVID_INVALID,
      'issuer',
      `JWT-SVID issuer ${got === undefined ? '(none)' : JSON.stringify(String(got).slice(0, 200))} is not the expected ${JSON.stringify(opts.issuer)}`,
    );
  }
  if (opts.authorizer !== undefined) {
    try {
      opts.authorizer(v.id, []);
    } catch (err) {
      if (isSpiffeError(err)) throw err;
      throw new SpiffeError(ErrorCode.UNAUTHORIZED, 'refused', `the authorizer refused ${v.id}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
  }
  return { id: v.id, claims: v.claims, expiresAt: v.expiresAt, audience: v.audience };
}

/** How a failed validation is answered. */
export interface JwtAuthFailure {
  status: 401 | 403;
  headers: { 'www-authenticate': string; 'content-type': string; 'cache-control': string };
  /** A short text body: `<code> <reason>: <message>`. */
  body: string;
}

const TOKEN_CODES: readonly string[] = [ErrorCode.JWT_AUTH, ErrorCode.JWT_SVID_INVALID, ErrorCode.JWT_SVID_UNTRUSTED, ErrorCode.UNAUTHORIZED];

/** True when `err` is about the request's token (answered 401/403), not a server fault. */
export function isJwtAuthError(err: unknown): err is SpiffeError {
  return isSpiffeError(err) && TOKEN_CODES.includes(err.code);
}

/** RFC 7230 quoted-string content without quotes or backslashes, one line, bounded. */
function quotedValue(s: string, max = 300): string {
  const clean = s.replace(/[^\x20-\x7e]/g, ' ').replace(/["\\]/g, "'");
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean;
}

/** The RFC 6750 answer for a token error (see the module comment); undefined for other errors. */
export function jwtAuthFailure(err: unknown, realm?: string): JwtAuthFailure | undefined {
  if (!isJwtAuthError(err)) return undefined;
  const params: string[] = realm === undefined ? [] : [`realm="${quotedValue(realm)}"`];
  const description = quotedValue(`${err.reason}: ${err.message}`);
  let status: 401 | 403 = 401;
  if (err.code === ErrorCode.UNAUTHORIZED) {
    status = 403;
    params.push('error="insufficient_scope"', `error_description="${description}"`);
  } else if (!(err.code === ErrorCode.JWT_AUTH && (err.reason === 'missing_token' || err.reason === 'not_bearer'))) {
    params.push('error="invalid_token"', `error_description="${description}"`);
  }
  return {
    status,
    headers: {
      'www-authenticate': params.length === 0 ? 'Bearer' : `Bearer ${params.join(', ')}`,
      'content-type': 'text/plain; charset=utf-8',
      'cache-control': 'no-store',
    },
    body: `${err.code} ${err.reason}: ${err.message}\n`,
  };
}

function answer(res: ServerResponse, f: JwtAuthFailure): void {
  res.writeHead(f.status, f.headers);
  res.end(f.body);
}

export interface JwtMiddlewareOptions extends JwtAuthOptions {
  /** Called with every refusal (the typed error) before the answer is sent. */
  onRejected?: (err: SpiffeError, req: unknown) => void;
}

type SpiffeRequest = IncomingMessage & { spiffe?: SpiffeJwtAuth };

/**
 * Express/Connect middleware: sets `req.spiffe = { id, claims, expiresAt, audience }` and calls
 * `next()`; answers 401/403 itself; other errors go to `next(err)`.
 */
export function jwtSvidMiddleware(opts: JwtMiddlewareOptions): (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void {
  return (req, res, next) => {
    validateJwtFromRequest(req, opts).then(
      (auth) => {
        (req as SpiffeRequest).spiffe = auth;
        next();
      },
      (err: unknown) => {
        const f = jwtAuthFailure(err, opts.realm);
        if (f === undefined) return next(err);
        opts.onRejected?.(err as SpiffeError, req);
        answer(res, f);
      },
    );
  };
}

/**
 * A node:http request listener that runs `handler(req, res, spiffe)` only for requests with a
 * valid JWT-SVID (`req.spiffe` is set too); answers 401/403 otherwise, 500 for server faults.
 */
export function withJwtSvid(
  opts: JwtMiddlewareOptions,
  handler: (req: IncomingMessage & { spiffe: SpiffeJwtAuth }, res: ServerResponse, spiffe: SpiffeJwtAuth) => void | Promise<void>,
): (req: IncomingMessage, res: ServerResponse) => void {
  const middleware = jwtSvidMiddleware(opts);
  return (req, res) => {
    middleware(req, res, (err?: unknown) => {
      if (err !== undefined) {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('internal error\n');
        return;
      }
      const r = req as IncomingMessage & { spiffe: SpiffeJwtAuth };
      Promise.resolve()
        .then(() => handler(r, res, r.spiffe))
        .catch(() => {
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
          res.end();
        });
    });
  };
}

/** The part of a Koa context the middleware uses. */
export interface KoaLikeContext {
  req: IncomingMessage;
  state: Record<string, unknown>;
  status: number;
  body: unknown;
  set(field: string, value: string): void;
}

/** Koa middleware `(ctx, next)`: `ctx.state.spiffe`; answers 401/403 itself, throws other errors. */
export function koaJwtSvid(opts: JwtMiddlewareOptions): (ctx: KoaLikeContext, next: () => Promise<unknown>) => Promise<void> {
  return async (ctx, next) => {
    let auth: SpiffeJwtAuth;
    try {
      auth = await validateJwtFromRequest(ctx.req, opts);
    } catch (err) {
      const f = jwtAuthFailure(err, opts.realm);
      if (f === undefined) throw err;
      opts.onRejected?.(err as SpiffeError, ctx.req);
      for (const [k, v] of Object.entries(f.headers)) ctx.set(k, v);
      ctx.status = f.status;
      ctx.body = f.body;
      return;
    }
    ctx.state['spiffe'] = auth;
    await next();
  };
}

/** The part of a Fastify request/reply the hook uses. */
export interface FastifyLikeRequest {
  headers: IncomingHttpHeaders;
  spiffe?: SpiffeJwtAuth;
}
export interface FastifyLikeReply {
  code(status: number): FastifyLikeReply;
  headers(values: Record<string, string>): FastifyLikeReply;
  send(body: unknown): FastifyLikeReply;
}

/**
 * Fastify `preHandler` hook (async): sets `request.spiffe`; answers 401/403 with `reply` itself
 * (and returns it, which ends the request); throws other errors. Declare `spiffe` on the request
 * with `fastify.decorateRequest('spiffe', null)`.
 */
export function fastifyJwtSvid(opts: JwtMiddlewareOptions): (request: FastifyLikeRequest, reply: FastifyLikeReply) => Promise<FastifyLikeReply | undefined> {
  return async (request, reply) => {
    try {
      request.spiffe = await validateJwtFromRequest(request, opts);
      return undefined;
    } catch (err) {
      const f = jwtAuthFailure(err, opts.realm);
      if (f === undefined) throw err;
      opts.onRejected?.(err as SpiffeError, request);
      return reply.code(f.status).headers(f.headers).send(f.body);
    }
  };
}

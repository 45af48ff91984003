/**
 * An in-process fake Kubernetes API server over real HTTPS, speaking the real JSON shapes for
 * the calls Spindle makes:
 *   POST /apis/authentication.k8s.io/v1/tokenreviews   (TokenReview, authentication.k8s.io/v1)
 *   GET  /api/v1/namespaces/{ns}/pods/{name}           (Pod, v1)
 *   GET  /api/v1/nodes/{name}                           (Node, v1)
 * Anything else is a 404 Status.
 *
 * Callers authenticate like with a real API server: a bearer token from `bearerTokens`, or a
 * client certificate signed by the test CA whose CN is in `clientNames`; otherwise 401 Status.
 *
 * TokenReview behaves like the API server's service-account token authenticator: it verifies
 * the JWT with the fake's own signing key (signature, iss, exp/nbf), intersects the token's
 * `aud` with spec.audiences (or the server's own audiences when spec.audiences is empty), and
 * by default checks that the bound pod still exists with the token's pod UID. Failure is
 * `authenticated: false` with `status.error` (HTTP 201 all the same, as the real one answers).
 * Projected tokens come from `mintProjectedToken`, signed with the same key.
 *
 * Test knobs: pods and nodes (add/remove), `failNext` (answer the next N requests with an error
 * status or raw body), `tokenReviewHook` (rewrite the TokenReview status before it is sent),
 * `audienceAware: false` (ignore spec.audiences like an old or misconfigured server),
 * `validateBoundObjects: false`, and a log of requests (method, path, who) — never tokens.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import type { KubeTls } from '../kubetls.js';

export const DEFAULT_ISSUER = 'https://kubernetes.default.svc.cluster.local';
export const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
export const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';
export const NODE_UID_EXTRA = 'authentication.kubernetes.io/node-uid';
export const CREDENTIAL_ID_EXTRA = 'authentication.kubernetes.io/credential-id';

export interface FakePod {
  namespace: string;
  name: string;
  uid: string;
  nodeName: string;
  hostIP?: string;
  labels?: Record<string, string>;
  serviceAccountName?: string;
}

export interface FakeNode {
  name: string;
  uid: string;
  labels?: Record<string, string>;
  /** InternalIP, for status.addresses. */
  internalIP?: string;
}

export interface FakeApiServerOptions {
  /** Server certificate and key, and the CA that client certificates must chain to. */
  tls: KubeTls;
  /** Bearer tokens accepted from callers. */
  bearerTokens?: string[];
  /** Client certificate CNs accepted from callers (default: none; pass [tls.clientName] to allow the test client cert). */
  clientNames?: string[];
  /** `iss` of minted tokens and the only issuer accepted. Default DEFAULT_ISSUER. */
  issuer?: string;
  /** The API server's own audiences (used when a TokenReview has no spec.audiences). Default [issuer]. */
  apiAudiences?: string[];
  /** Time source for token validation; default Date.now. */
  now?: () => Date;
}

export interface MintOptions {
  namespace: string;
  serviceAccount: string;
  podName: string;
  podUid: string;
  /** Default ['spindle-server']. */
  audiences?: string[];
  serviceAccountUid?: string;
  /** Adds kubernetes.io.node (Kubernetes 1.30+). */
  nodeName?: string;
  nodeUid?: string;
  /** Default 3600. */
  ttlSeconds?: number;
  /** Default now (from the server's clock). */
  issuedAt?: Date;
  /** Default issuedAt. */
  notBefore?: Date;
  /** Default the server's issuer. */
  issuer?: string;
  /** Sign with a different key (a token the server must reject). */
  foreignKey?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** `token:<index into bearerTokens>`, `cert:<CN>`, `anonymous` (no credentials configured) or `rejected` (answered 401). */
  caller: string;
  /** For TokenReviews: the spec.audiences sent. */
  audiences?: string[];
}

export interface FailureSpec {
  /** Default 500. */
  status?: number;
  /** Raw body to send (default a Status object with `message`). */
  body?: string;
  message?: string;
  /** Only requests whose path starts with this (e.g. '/api/v1/nodes/'); default any request. */
  path?: string;
}

export type TokenReviewStatusJson = {
  authenticated?: boolean;
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
};

export interface FakeApiServer {
  /** `https://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  readonly issuer: string;
  /** Requests served (authenticated or not), oldest first. */
  readonly requests: readonly RecordedRequest[];
  /** Number of requests whose path starts with `pathPrefix` (all when omitted). */
  count(pathPrefix?: string): number;
  addPod(pod: FakePod): void;
  removePod(namespace: string, name: string): void;
  addNode(node: FakeNode): void;
  removeNode(name: string): void;
  /** Answers the next `n` requests (after caller authentication; matching `failure.path` if set) with a failure. */
  failNext(n: number, failure?: FailureSpec): void;
  /** Rewrites each TokenReview status before it is sent (set undefined to stop). */
  tokenReviewHook: ((status: TokenReviewStatusJson) => unknown) | undefined;
  /** When false, spec.audiences is ignored (authenticated against the token's own aud). Default true. */
  audienceAware: boolean;
  /** When true (default), a token whose bound pod is gone or has another UID is not authenticated. */
  validateBoundObjects: boolean;
  /** A projected service-account token, signed with the server's key. */
  mintProjectedToken(opts: MintOptions): Promise<string>;
  close(): Promise<void>;
}

const SA_PREFIX = 'system:serviceaccount:';

function status(code: number, reason: string, message: string): string {
  return JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}

class Fake implements FakeApiServer {
  url = '';
  port = 0;
  readonly issuer: string;
  readonly requests: RecordedRequest[] = [];
  tokenReviewHook: ((status: TokenReviewStatusJson) => unknown) | undefined;
  audienceAware = true;
  validateBoundObjects = true;
  readonly #server: Server;
  readonly #pods = new Map<string, FakePod>();
  readonly #nodes = new Map<string, FakeNode>();
  readonly #failures: FailureSpec[] = [];
  readonly #bearerTokens: string[];
  readonly #clientNames: Set<string>;
  readonly #apiAudiences: string[];
  readonly #now: () => Date;
  readonly #kid = randomUUID();
  #key!: { privateKey: CryptoKey; publicKey: CryptoKey };
  #foreignKey!: { privateKey: CryptoKey; publicKey: CryptoKey };

  constructor(opts: FakeApiServerOptions) {
    this.issuer = opts.issuer ?? DEFAULT_ISSUER;
    this.#bearerTokens = opts.bearerTokens ?? [];
    this.#clientNames = new Set(opts.clientNames ?? []);
    this.#apiAudiences = opts.apiAudiences ?? [this.issuer];
    this.#now = opts.now ?? (() => new Date());
    this.#server = createServer(
      { cert: opts.tls.serverCert, key: opts.tls.serverKey, ca: opts.tls.caCert, requestCert: true, rejectUnauthorized: false },
      (req, res) => {
        this.#handle(req, res).catch((err: unknown) => {
          if (!res.headersSent) this.#send(res, 500, status(500, 'InternalError', `fake apiserver: ${(err as Error).message}`));
        });
      },
    );
  }

  async start(): Promise<this> {
    this.#key = await generateKeyPair('ES256');
    this.#foreignKey = await generateKeyPair('ES256');
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.#server.address() as AddressInfo).port;
    this.url = `https://127.0.0.1:${this.port}`;
    return this;
  }

  count(pathPrefix?: string): number {
    return pathPrefix === undefined ? this.requests.length : this.requests.filter((r) => r.path.startsWith(pathPrefix)).length;
  }

  addPod(pod: FakePod): void {
    this.#pods.set(`${pod.namespace}/${pod.name}`, { ...pod });
  }

  removePod(namespace: string, name: string): void {
    this.#pods.delete(`${namespace}/${name}`);
  }

  addNode(node: FakeNode): void {
    this.#nodes.set(node.name, { ...node });
  }

  removeNode(name: string): void {
    this.#nodes.delete(name);
  }

  failNext(n: number, failure: FailureSpec = {}): void {
    for (let i = 0; i < n; i++) this.#failures.push(failure);
  }

  async mintProjectedToken(o: MintOptions): Promise<string> {
    const iat = o.issuedAt ?? this.#now();
    const nbf = o.notBefore ?? iat;
    const exp = new Date(iat.getTime() + (o.ttlSeconds ?? 3600) * 1000);
    const k8s: Record<string, unknown> = {
      namespace: o.namespace,
      pod: { name: o.podName, uid: o.podUid },
      serviceaccount: { name: o.serviceAccount, uid: o.serviceAccountUid ?? randomUUID() },
    };
    if (o.nodeName !== undefined) k8s.node = { name: o.nodeName, uid: o.nodeUid ?? '' };
    const key = o.foreignKey ? this.#foreignKey : this.#key;
    return new SignJWT({ 'kubernetes.io': k8s, jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid: this.#kid })
      .setIssuer(o.issuer ?? this.issuer)
      .setSubject(`${SA_PREFIX}${o.namespace}:${o.serviceAccount}`)
      .setAudience(o.audiences ?? ['spindle-server'])
      .setIssuedAt(Math.floor(iat.getTime() / 1000))
      .setNotBefore(Math.floor(nbf.getTime() / 1000))
      .setExpirationTime(Math.floor(exp.getTime() / 1000))
      .sign(key.privateKey);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  // ---- request handling

  #send(res: ServerResponse, code: number, body: string): void {
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** Like kube-apiserver's union authenticator: a client certificate first, then a bearer token. */
  #caller(req: IncomingMessage): string | undefined {
    const sock = req.socket as TLSSocket;
    if (sock.authorized) {
      const cn = sock.getPeerCertificate().subject?.CN;
      const name = Array.isArray(cn) ? cn[0] : cn;
      if (name !== undefined && this.#clientNames.has(name)) return `cert:${name}`;
    }
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer (.+)$/.exec(auth);
      const i = m ? this.#bearerTokens.indexOf(m[1]!) : -1;
      return i >= 0 ? `token:${i}` : undefined;
    }
    if (this.#bearerTokens.length === 0 && this.#clientNames.size === 0) return 'anonymous';
    return undefined;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://fake');
    const path = url.pathname;
    const body = await readBody(req);
    const caller = this.#caller(req);
    const rec: RecordedRequest = { method: req.method ?? '', path, caller: caller ?? 'rejected' };
    this.requests.push(rec);
    if (caller === undefined) {
      this.#send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    const fi = this.#failures.findIndex((f) => f.path === undefined || path.startsWith(f.path));
    const failure = fi >= 0 ? this.#failures.splice(fi, 1)[0] : undefined;
    if (failure !== undefined) {
      const code = failure.status ?? 500;
      this.#send(res, code, failure.body ?? status(code, 'InternalError', failure.message ?? 'injected failure'));
      return;
    }
    if (req.method === 'POST' && path === '/apis/authentication.k8s.io/v1/tokenreviews') {
      await this.#tokenReview(body, rec, res);
      return;
    }
    if (req.method === 'GET') {
      const seg = path.split('/').slice(1).map((s) => decodeURIComponent(s));
      if (seg.length === 6 && seg[0] === 'api' && seg[1] === 'v1' && seg[2] === 'namespaces' && seg[4] === 'pods') {
        const pod = this.#pods.get(`${seg[3]}/${seg[5]}`);
        if (!pod) this.#send(res, 404, status(404, 'NotFound', `pods "${seg[5]}" not found`));
        else this.#send(res, 200, JSON.stringify(podJson(pod)));
        return;
      }
      if (seg.length === 4 && seg[0] === 'api' && seg[1] === 'v1' && seg[2] === 'nodes') {
        const node = this.#nodes.get(seg[3]!);
        if (!node) this.#send(res, 404, status(404, 'NotFound', `nodes "${seg[3]}" not found`));
        else this.#send(res, 200, JSON.stringify(nodeJson(node)));
        return;
      }
    }
    this.#send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
  }

  async #tokenReview(body: string, rec: RecordedRequest, res: ServerResponse): Promise<void> {
    let review: { apiVersion?: unknown; kind?: unknown; spec?: { token?: unknown; audiences?: unknown } };
    try {
      review = JSON.parse(body) as typeof review;
    } catch {
      this.#send(res, 400, status(400, 'BadRequest', 'request body is not JSON'));
      return;
    }
    if (review.kind !== 'TokenReview' || review.apiVersion !== 'authentication.k8s.io/v1' || typeof review.spec?.token !== 'string') {
      this.#send(res, 400, status(400, 'BadRequest', 'expected an authentication.k8s.io/v1 TokenReview with spec.token'));
      return;
    }
    const specAud = Array.isArray(review.spec.audiences) ? review.spec.audiences.filter((a): a is string => typeof a === 'string') : [];
    rec.audiences = specAud;
    let st: TokenReviewStatusJson = await this.#review(review.spec.token, specAud);
    const out: unknown = this.tokenReviewHook ? this.tokenReviewHook(st) : st;
    st = out as TokenReviewStatusJson;
    const spec: Record<string, unknown> = { token: review.spec.token };
    if (specAud.length > 0) spec.audiences = specAud;
    this.#send(res, 201, JSON.stringify({ kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec, status: st }));
  }

  async #review(token: string, specAud: string[]): Promise<TokenReviewStatusJson> {
    const fail = (error: string): TokenReviewStatusJson => ({ user: {}, error });
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.#key.publicKey, { issuer: this.issuer, currentDate: this.#now(), algorithms: ['ES256'] }));
    } catch (err) {
      return fail(`[invalid bearer token, ${(err as Error).message}]`);
    }
    const tokenAud = typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []);
    const wanted = this.audienceAware ? (specAud.length > 0 ? specAud : this.#apiAudiences) : tokenAud;
    const audiences = wanted.filter((a) => tokenAud.includes(a));
    if (audiences.length === 0) {
      return fail(`[invalid bearer token, token audiences ${JSON.stringify(tokenAud)} is invalid for the target audiences ${JSON.stringify(wanted)}]`);
    }
    const k8s = payload['kubernetes.io'] as
      | { namespace?: string; pod?: { name?: string; uid?: string }; serviceaccount?: { name?: string; uid?: string }; node?: { name?: string; uid?: string } }
      | undefined;
    const ns = k8s?.namespace ?? '';
    const sa = k8s?.serviceaccount?.name ?? '';
    if (ns === '' || sa === '' || payload.sub !== `${SA_PREFIX}${ns}:${sa}`) return fail('[invalid bearer token, service account token claims are malformed]');
    const extra: Record<string, string[]> = {};
    if (k8s?.pod?.name) {
      extra[POD_NAME_EXTRA] = [k8s.pod.name];
      extra[POD_UID_EXTRA] = [k8s.pod.uid ?? ''];
      if (this.validateBoundObjects) {
        const pod = this.#pods.get(`${ns}/${k8s.pod.name}`);
        if (!pod) return fail(`[invalid bearer token, pod "${k8s.pod.name}" not found]`);
        if (pod.uid !== k8s.pod.uid) return fail(`[invalid bearer token, pod "${k8s.pod.name}" UID (${pod.uid}) does not match claim (${k8s.pod.uid ?? ''})]`);
      }
    }
    if (k8s?.node?.name) {
      extra[NODE_NAME_EXTRA] = [k8s.node.name];
      if (k8s.node.uid) extra[NODE_UID_EXTRA] = [k8s.node.uid];
    }
    if (typeof payload.jti === 'string') extra[CREDENTIAL_ID_EXTRA] = [`JTI=${payload.jti}`];
    return {
      authenticated: true,
      user: {
        username: `${SA_PREFIX}${ns}:${sa}`,
        uid: k8s?.serviceaccount?.uid ?? '',
        groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
        extra,
      },
      audiences,
    };
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 1 << 20) {
        req.destroy();
        reject(new Error('request body too large'));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function podJson(p: FakePod): unknown {
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name: p.name,
      namespace: p.namespace,
      uid: p.uid,
      resourceVersion: '1',
      creationTimestamp: '2024-01-01T00:00:00Z',
      ...(p.labels && Object.keys(p.labels).length > 0 ? { labels: p.labels } : {}),
    },
    spec: {
      containers: [{ name: 'main', image: 'example/agent:latest' }],
      serviceAccountName: p.serviceAccountName ?? 'default',
      ...(p.nodeName !== '' ? { nodeName: p.nodeName } : {}),
    },
    status: {
      phase: 'Running',
      ...(p.hostIP ? { hostIP: p.hostIP, hostIPs: [{ ip: p.hostIP }] } : {}),
      podIP: '10.0.0.10',
    },
  };
}

function nodeJson(n: FakeNode): unknown {
  return {
    kind: 'Node',
    apiVersion: 'v1',
    metadata: {
      name: n.name,
      uid: n.uid,
      resourceVersion: '1',
      creationTimestamp: '2024-01-01T00:00:00Z',
      ...(n.labels && Object.keys(n.labels).length > 0 ? { labels: n.labels } : {}),
    },
    spec: {},
    status: {
      addresses: [...(n.internalIP ? [{ type: 'InternalIP', address: n.internalIP }] : []), { type: 'Hostname', address: n.name }],
    },
  };
}

/** Starts a fake API server on 127.0.0.1 (a free port). Close it with `close()`. */
export async function startFakeApiServer(opts: FakeApiServerOptions): Promise<FakeApiServer> {
  return new Fake(opts).start();
}

/**
 * The few Kubernetes API server calls Spindle makes (k8s_psat, server side): create a
 * TokenReview (authentication.k8s.io/v1), get a Pod and get a Node (v1). Responses are checked
 * for the fields we rely on, with errors naming the field, so a proxy answering HTML or a
 * different API version fails loudly instead of producing empty selectors.
 *
 * RBAC the caller needs: `create` on `tokenreviews.authentication.k8s.io`, `get` on `pods` and
 * `nodes`.
 *
 * Errors: transport and HTTP failures are KubeHttpError (from http.ts, with the status); a 2xx
 * answer of the wrong shape is KubeApiError. Neither message contains a token.
 */
import { kubeRequest, KubeHttpError, type KubeTarget } from './http.js';

export class KubeApiError extends Error {
  readonly code = 'ERR_KUBE_API';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeApiError';
  }
}

/** The `status` of a TokenReview, with omitted (omitempty) fields filled with their zero values. */
export interface TokenReviewStatus {
  authenticated: boolean;
  user: {
    username: string;
    uid: string;
    groups: string[];
    /** e.g. `authentication.kubernetes.io/pod-name` -> [name]. */
    extra: Record<string, string[]>;
  };
  /** Audiences the token was validated for (the intersection of ours and the token's). */
  audiences: string[];
  /** Why the token was not authenticated, when the server says. */
  error: string;
}

export interface KubePod {
  namespace: string;
  name: string;
  uid: string;
  /** spec.nodeName ('' when not scheduled). */
  nodeName: string;
  /** status.hostIP ('' when unknown). */
  hostIP: string;
  labels: Record<string, string>;
}

export interface KubeNode {
  name: string;
  uid: string;
  labels: Record<string, string>;
}

/** What k8s_psat needs from an API server (an interface so tests and callers can substitute). */
export interface KubeApi {
  createTokenReview(token: string, audiences: readonly string[]): Promise<TokenReviewStatus>;
  /** Undefined when the pod does not exist (404). */
  getPod(namespace: string, name: string): Promise<KubePod | undefined>;
  /** Undefined when the node does not exist (404). */
  getNode(name: string): Promise<KubeNode | undefined>;
}

/** A fixed target, or a function giving the target to use for each request (e.g. reloading a kubeconfig). */
export type KubeTargetSource = KubeTarget | (() => KubeTarget | Promise<KubeTarget>);

export interface KubeApiClientOptions {
  /** Per request; default 10 s. */
  timeoutMs?: number;
}

/** Upper bound on any response we read; a Pod or Node object is a few KiB. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

export class KubeApiClient implements KubeApi {
  readonly #target: KubeTargetSource;
  readonly #timeoutMs: number | undefined;

  constructor(target: KubeTargetSource, opts: KubeApiClientOptions = {}) {
    this.#target = target;
    this.#timeoutMs = opts.timeoutMs;
  }

  async #request(path: string, method: 'GET' | 'POST', body?: unknown): Promise<unknown> {
    const target = typeof this.#target === 'function' ? await this.#target() : this.#target;
    return kubeRequest(target, path, {
      method,
      ...(body !== undefined ? { body } : {}),
      maxBytes: MAX_RESPONSE_BYTES,
      ...(this.#timeoutMs !== undefined ? { timeoutMs: this.#timeoutMs } : {}),
    });
  }

  async createTokenReview(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    const spec: Record<string, unknown> = { token };
    if (audiences.length > 0) spec.audiences = [...audiences];
    const res = await this.#request('apis/authentication.k8s.io/v1/tokenreviews', 'POST', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec,
    });
    return parseTokenReview(res);
  }

  async getPod(namespace: string, name: string): Promise<KubePod | undefined> {
    requireName(namespace, 'namespace');
    requireName(name, 'pod name');
    const res = await this.#getOrUndefined(`api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`);
    return res === undefined ? undefined : parsePod(res, namespace, name);
  }

  async getNode(name: string): Promise<KubeNode | undefined> {
    requireName(name, 'node name');
    const res = await this.#getOrUndefined(`api/v1/nodes/${encodeURIComponent(name)}`);
    return res === undefined ? undefined : parseNode(res, name);
  }

  async #getOrUndefined(path: string): Promise<unknown> {
    try {
      return await this.#request(path, 'GET');
    } catch (err) {
      if (err instanceof KubeHttpError && err.status === 404) return undefined;
      throw err;
    }
  }
}

function requireName(v: string, what: string): void {
  if (typeof v !== 'string' || v === '') throw new KubeApiError(`${what} must not be empty`);
}

// ---------------------------------------------------------------------------------------------
// Response shapes

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function shapeError(what: string, field: string, detail: string): KubeApiError {
  return new KubeApiError(`${what} response is malformed: ${field} ${detail}`);
}

function optString(o: Obj, key: string, what: string, field: string): string {
  const v = o[key];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw shapeError(what, field, 'is not a string');
  return v;
}

function optStringList(v: unknown, what: string, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw shapeError(what, field, 'is not a list of strings');
  return v as string[];
}

function optObj(o: Obj, key: string, what: string, field: string): Obj {
  const v = o[key];
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw shapeError(what, field, 'is not an object');
  return v;
}

function checkKind(res: unknown, kind: string, apiVersion: string): Obj {
  if (!isObj(res)) throw new KubeApiError(`${kind} response is not a JSON object`);
  // kind/apiVersion are always set by a real API server; accept their absence, refuse others.
  if (res.kind !== undefined && res.kind !== kind) throw shapeError(kind, 'kind', `is ${JSON.stringify(String(res.kind).slice(0, 50))}`);
  if (res.apiVersion !== undefined && res.apiVersion !== apiVersion) {
    throw shapeError(kind, 'apiVersion', `is ${JSON.stringify(String(res.apiVersion).slice(0, 50))}, expected ${apiVersion}`);
  }
  return res;
}

function labels(meta: Obj, what: string): Record<string, string> {
  const l = optObj(meta, 'labels', what, 'metadata.labels');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(l)) {
    if (typeof v !== 'string') throw shapeError(what, `metadata.labels[${JSON.stringify(k.slice(0, 100))}]`, 'is not a string');
    out[k] = v;
  }
  return out;
}

export function parseTokenReview(res: unknown): TokenReviewStatus {
  const W = 'TokenReview';
  const o = checkKind(res, W, 'authentication.k8s.io/v1');
  if (!isObj(o.status)) throw shapeError(W, 'status', 'is missing');
  const s = o.status;
  const auth = s.authenticated;
  if (auth !== undefined && auth !== null && typeof auth !== 'boolean') throw shapeError(W, 'status.authenticated', 'is not a boolean');
  const u = optObj(s, 'user', W, 'status.user');
  const extraRaw = optObj(u, 'extra', W, 'status.user.extra');
  const extra: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(extraRaw)) extra[k] = optStringList(v, W, `status.user.extra[${JSON.stringify(k.slice(0, 100))}]`);
  return {
    authenticated: auth === true,
    user: {
      username: optString(u, 'username', W, 'status.user.username'),
      uid: optString(u, 'uid', W, 'status.user.uid'),
      groups: optStringList(u.groups, W, 'status.user.groups'),
      extra,
    },
    audiences: optStringList(s.audiences, W, 'status.audiences'),
    error: optString(s, 'error', W, 'status.error'),
  };
}

export function parsePod(res: unknown, namespace: string, name: string): KubePod {
  const W = 'Pod';
  const { o, meta, uid } = objectMeta(res, W, name);
  const gotNs = optString(meta, 'namespace', W, 'metadata.namespace');
  if (gotNs !== '' && gotNs !== namespace) throw shapeError(W, 'metadata.namespace', `is ${JSON.stringify(gotNs.slice(0, 100))}, asked for ${JSON.stringify(namespace)}`);
  const spec = optObj(o, 'spec', W, 'spec');
  const status = optObj(o, 'status', W, 'status');
  return {
    namespace,
    name,
    uid,
    nodeName: optString(spec, 'nodeName', W, 'spec.nodeName'),
    hostIP: optString(status, 'hostIP', W, 'status.hostIP'),
    labels: labels(meta, W),
  };
}

export function parseNode(res: unknown, name: string): KubeNode {
  const W = 'Node';
  const { meta, uid } = objectMeta(res, W, name);
  return { name, uid, labels: labels(meta, W) };
}

/** A v1 object of kind `W` named `name`: its metadata and (required) UID. */
function objectMeta(res: unknown, W: string, name: string) {
  const o = checkKind(res, W, 'v1');
  if (!isObj(o.metadata)) throw shapeError(W, 'metadata', 'is missing');
  const meta = o.metadata;
  const uid = optString(meta, 'uid', W, 'metadata.uid');
  if (uid === '') throw shapeError(W, 'metadata.uid', 'is missing');
  const gotName = optString(meta, 'name', W, 'metadata.name');
  if (gotName !== '' && gotName !== name) throw shapeError(W, 'metadata.name', `is ${JSON.stringify(gotName.slice(0, 100))}, asked for ${JSON.stringify(name)}`);
  return { o, meta, uid };
}

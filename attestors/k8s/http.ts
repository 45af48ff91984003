/**
 * The one HTTPS client Spindle uses to talk to Kubernetes: the API server (k8s_psat, server
 * side) and the kubelet (k8s workload attestor, agent side). JSON in, JSON out; bearer token
 * (re-read on every request, since projected and bound service-account tokens rotate) and/or a
 * client certificate; the server verified against `ca` unless `insecureSkipVerify` (labs only).
 *
 * Errors are KubeHttpError with the HTTP status when there was one; the message never contains
 * the bearer token or the request body (a TokenReview body holds the token being reviewed).
 */
import { request } from 'node:https';

export interface KubeTarget {
  /** `https://host:port` (no trailing slash needed). */
  baseUrl: string;
  /** PEM of the CA(s) that sign the server's certificate; undefined = Node's default roots. */
  ca?: Buffer;
  /** PEM client certificate and key (kubeconfig client-certificate, kubelet client cert). */
  cert?: Buffer;
  key?: Buffer;
  /** Skip server certificate verification (kubeconfig insecure-skip-tls-verify, skip_kubelet_verification). */
  insecureSkipVerify?: boolean;
  /** Returns the bearer token to send, read fresh per request; undefined = none. */
  token?: () => Promise<string | undefined> | string | undefined;
  /** TLS server name to verify when it differs from the URL's host. */
  servername?: string;
  /**
   * Verify the server's chain against `ca` but not its name (SPIRE's kubelet-over-127.0.0.1
   * mode, where the kubelet certificate names the node, not the loopback address).
   */
  skipHostnameVerification?: boolean;
}

export class KubeHttpError extends Error {
  readonly code = 'ERR_KUBE_HTTP';
  /** HTTP status, when the server answered. */
  readonly status: number | undefined;
  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeHttpError';
    this.status = status;
  }
}

export interface KubeRequestOptions {
  method?: 'GET' | 'POST';
  /** Serialized as JSON. */
  body?: unknown;
  /** Default 10 s. */
  timeoutMs?: number;
  /** Upper bound on the response size in bytes (default 64 MiB; a kubelet pod list can be large). */
  maxBytes?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Sends one request and parses the JSON answer. Resolves only for 2xx; other statuses reject
 * with KubeHttpError carrying the status and, when the body is a Kubernetes Status object, its
 * message.
 */
export async function kubeRequest(target: KubeTarget, path: string, opts: KubeRequestOptions = {}): Promise<unknown> {
  const url = new URL(path, target.baseUrl.endsWith('/') ? target.baseUrl : `${target.baseUrl}/`);
  if (url.protocol !== 'https:') throw new KubeHttpError(`${url.origin} is not an https URL`);
  const token = await target.token?.();
  const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body), 'utf8');
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (token !== undefined && token !== '') headers.Authorization = `Bearer ${token}`;
  if (payload) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(payload.length);
  }
  const where = `${opts.method ?? 'GET'} ${url.origin}${url.pathname}`;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  return new Promise<unknown>((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? 'GET',
        headers,
        ...(target.ca ? { ca: target.ca } : {}),
        ...(target.cert ? { cert: target.cert } : {}),
        ...(target.key ? { key: target.key } : {}),
        ...(target.servername ? { servername: target.servername } : {}),
        ...(target.skipHostnameVerification ? { checkServerIdentity: () => undefined } : {}),
        rejectUnauthorized: target.insecureSkipVerify !== true,
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        ...(opts.signal ? { signal: opts.signal } : {}),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            req.destroy(new KubeHttpError(`${where}: response larger than ${maxBytes} bytes`, res.statusCode));
            return;
          }
          chunks.push(c);
        });
        res.on('error', (err) => reject(new KubeHttpError(`${where}: ${err.message}`, res.statusCode, { cause: err })));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text === '' ? undefined : JSON.parse(text);
          } catch {
            json = undefined;
          }
          if (status < 200 || status > 299) {
            const msg = statusMessage(json);
            reject(new KubeHttpError(`${where}: HTTP ${status}${msg ? `: ${msg}` : ''}`, status));
            return;
          }
          if (json === undefined) {
            reject(new KubeHttpError(`${where}: response is not JSON`, status));
            return;
          }
          resolve(json);
        });
      },
    );
    req.on('timeout', () => req.destroy(new KubeHttpError(`${where}: timed out`)));
    req.on('error', (err) => reject(err instanceof KubeHttpError ? err : new KubeHttpError(`${where}: ${err.message}`, undefined, { cause: err })));
    req.end(payload);
  });
}

/** `message` of a Kubernetes Status object (bounded), if that is what `json` is. */
function statusMessage(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const m = (json as { message?: unknown }).message;
  return typeof m === 'string' ? m.slice(0, 300) : undefined;
}

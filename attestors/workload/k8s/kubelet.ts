/**
 * The kubelet's pod list (`GET /pods` on its secure port), read through the shared Kubernetes
 * HTTPS client, and the few fields of it the k8s workload attestor uses.
 *
 * Which host, as SPIRE does: the node name when one is configured (the kubelet certificate
 * must then name it), else 127.0.0.1 (the agent runs with host networking) with the chain
 * verified against the CA but the name not checked, since kubelet certificates name the node,
 * not the loopback address. `skip_kubelet_verification` verifies nothing (labs only).
 *
 * Parsing follows Go's json.Unmarshal into corev1.Pod: a missing or mistyped field reads as
 * empty; only a body that is not a PodList at all is an error. Pods without a UID are skipped.
 */
import { kubeRequest, KubeHttpError, type KubeTarget } from '../../k8s/http.js';

export interface KubeletContainerStatus {
  name: string;
  image: string;
  imageID: string;
  /** `<runtime>://<id>`, e.g. `containerd://<64 hex>`; "" while the container is not created. */
  containerID: string;
}

export interface KubeletOwnerReference {
  kind: string;
  name: string;
  uid: string;
}

export interface KubeletPod {
  uid: string;
  name: string;
  namespace: string;
  labels: [string, string][];
  ownerReferences: KubeletOwnerReference[];
  serviceAccountName: string;
  nodeName: string;
  containerStatuses: KubeletContainerStatus[];
  initContainerStatuses: KubeletContainerStatus[];
}

export class KubeletError extends Error {
  readonly code = 'ERR_KUBELET';
  /** HTTP status when the kubelet answered. */
  readonly status: number | undefined;
  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeletError';
    this.status = status;
  }
}

/** Connection and credentials of one kubelet client; the attestor rebuilds it on reload. */
export interface KubeletClientOptions {
  /** Host to connect to; "" or undefined means 127.0.0.1 (see the module contract). */
  nodeName?: string;
  port: number;
  /** PEM CA bundle; required unless insecureSkipVerify. */
  ca?: Buffer;
  insecureSkipVerify?: boolean;
  /** PEM client certificate and key (certificate_path / private_key_path). */
  cert?: Buffer;
  key?: Buffer;
  /** Bearer token source, read per request; undefined = none. */
  token?: () => Promise<string | undefined> | string | undefined;
  /** Per request; default 10 s as in SPIRE. */
  timeoutMs?: number;
}

const KUBELET_TIMEOUT_MS = 10_000;

export class KubeletClient {
  readonly baseUrl: string;
  readonly #target: KubeTarget;
  readonly #timeoutMs: number;

  constructor(opts: KubeletClientOptions) {
    const host = opts.nodeName ? opts.nodeName : '127.0.0.1';
    this.baseUrl = `https://${host.includes(':') ? `[${host}]` : host}:${opts.port}`;
    if (!opts.insecureSkipVerify && !opts.ca) throw new TypeError('KubeletClient: a CA is required unless insecureSkipVerify');
    this.#target = {
      baseUrl: this.baseUrl,
      ...(opts.ca && !opts.insecureSkipVerify ? { ca: opts.ca } : {}),
      ...(opts.cert ? { cert: opts.cert } : {}),
      ...(opts.key ? { key: opts.key } : {}),
      ...(opts.insecureSkipVerify ? { insecureSkipVerify: true } : {}),
      ...(!opts.nodeName && !opts.insecureSkipVerify ? { skipHostnameVerification: true } : {}),
      ...(opts.token ? { token: opts.token } : {}),
    };
    this.#timeoutMs = opts.timeoutMs ?? KUBELET_TIMEOUT_MS;
  }

  /** The pods the kubelet runs. Throws KubeletError (TLS, HTTP status, bad body). */
  async listPods(signal?: AbortSignal): Promise<KubeletPod[]> {
    let body: unknown;
    try {
      body = await kubeRequest(this.#target, '/pods', { timeoutMs: this.#timeoutMs, ...(signal ? { signal } : {}) });
    } catch (err) {
      signal?.throwIfAborted();
      const status = err instanceof KubeHttpError ? err.status : undefined;
      throw new KubeletError(`kubelet pod list request failed: ${(err as Error).message}`, status, { cause: err });
    }
    return parsePodList(body);
  }
}

function obj(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function containerStatus(v: unknown): KubeletContainerStatus {
  const s = obj(v);
  return { name: str(s['name']), image: str(s['image']), imageID: str(s['imageID']), containerID: str(s['containerID']) };
}

/** One pod of a PodList item; exported for tests. */
export function parsePod(v: unknown): KubeletPod {
  const pod = obj(v);
  const meta = obj(pod['metadata']);
  const spec = obj(pod['spec']);
  const status = obj(pod['status']);
  return {
    uid: str(meta['uid']),
    name: str(meta['name']),
    namespace: str(meta['namespace']),
    labels: Object.entries(obj(meta['labels'])).filter((e): e is [string, string] => typeof e[1] === 'string'),
    ownerReferences: arr(meta['ownerReferences']).map((o) => {
      const r = obj(o);
      return { kind: str(r['kind']), name: str(r['name']), uid: str(r['uid']) };
    }),
    serviceAccountName: str(spec['serviceAccountName']),
    nodeName: str(spec['nodeName']),
    containerStatuses: arr(status['containerStatuses']).map(containerStatus),
    initContainerStatuses: arr(status['initContainerStatuses']).map(containerStatus),
  };
}

/** A kubelet /pods body (a v1 PodList) -> its pods with a UID. Throws KubeletError if it is no PodList. */
export function parsePodList(body: unknown): KubeletPod[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new KubeletError('kubelet pod list is not a JSON object');
  }
  const items = (body as Record<string, unknown>)['items'];
  if (items === null) return []; // Go marshals an empty Items slice as null
  if (!Array.isArray(items)) throw new KubeletError('kubelet pod list has no "items" array');
  return items.map(parsePod).filter((p) => p.uid !== '');
}

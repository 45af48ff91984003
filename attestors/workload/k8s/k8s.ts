/**
 * The `k8s` workload attestor (SPIRE's k8s plugin, agent side): selectors from the pod and
 * container the calling process runs in, as the node's kubelet describes them.
 *
 * 1. /proc/<pid>/cgroup (under `proc_root`) gives the pod UID and container ID (cgroup.ts).
 *    No container there: the caller is not a Kubernetes workload, and the attestor returns no
 *    selectors (not an error), as SPIRE does.
 * 2. The kubelet's `GET /pods` (kubelet.ts) is searched for that pod (every pod when the cgroup
 *    gave no pod UID) and a container status whose containerID is `<runtime>://<id>`; init
 *    containers count. A pod or container not listed yet is retried up to `max_poll_attempts`
 *    times, `poll_retry_interval` apart, each retry on a newer pod list; then attestation fails.
 *    Kubelet errors (TLS, 401, ...) fail at once. Concurrent attestations share one kubelet
 *    request, and a pod list is reused for `poll_retry_interval`.
 * 3. Selectors, as SPIRE forms them (all type `k8s`):
 *      ns:<namespace>  sa:<service account>  pod-name:<name>  pod-uid:<uid>  node-name:<node>
 *      pod-label:<key>:<value>             one per label
 *      pod-owner:<Kind>:<name>  pod-owner-uid:<Kind>:<uid>   one pair per owner reference
 *      pod-image:<v>  pod-init-image:<v>   `image` and `imageID` of every (init) container status
 *      pod-image-count:<n>  pod-init-image-count:<n>         number of (init) container statuses
 *      container-name:<name>  container-image:<image>  container-image:<imageID>
 *    The container-* ones are left out with `disable_container_selectors`, which also lets a
 *    known pod attest before its container shows up in the pod status.
 * Static pods need nothing special: the kubelet lists them under the UID their cgroups carry.
 *
 * The cgroup is read from /proc at attestation time. execve() does not move a process to another
 * cgroup, so a caller that execs after connecting stays in its container; the agent's same-process
 * check after attestation (agent/endpoints/caller.ts: pidfd, ids, executable) still applies, as to
 * every attestor, and refuses a caller that exec'd another program meanwhile.
 *
 * Kubelet credentials are read from files when configured (a missing or bad file is a config
 * error naming the key) and re-read every `reload_interval`; the bearer token on every request.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ConfigReader } from '../../../common/configfile.js';
import { compareSelectors, type Selector } from '../../../common/selector.js';
import { WorkloadAttestationError, type PeerInfo, type WorkloadAttestor } from '../types.js';
import { CgroupParseError, parseCgroupFile, type CgroupContainer } from './cgroup.js';
import { KubeletClient, KubeletError, type KubeletContainerStatus, type KubeletPod } from './kubelet.js';

export const K8S = 'k8s';

export const DEFAULT_KUBELET_SECURE_PORT = 10250;
export const DEFAULT_MAX_POLL_ATTEMPTS = 60;
export const DEFAULT_POLL_RETRY_INTERVAL_MS = 500;
export const DEFAULT_RELOAD_INTERVAL_MS = 60_000;
export const DEFAULT_KUBELET_CA_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';
export const DEFAULT_TOKEN_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/token';
export const DEFAULT_NODE_NAME_ENV = 'MY_NODE_NAME';

/** Anything that lists the node's pods (the kubelet client, or a stub in tests). */
export interface PodSource {
  listPods(signal?: AbortSignal): Promise<KubeletPod[]>;
  /** For error messages. */
  readonly description: string;
}

export interface K8sAttestorOptions {
  pods: PodSource;
  /** Default /proc. */
  procRoot?: string;
  /** Default 60. */
  maxPollAttempts?: number;
  /** Default 500. */
  pollRetryIntervalMs?: number;
  disableContainerSelectors?: boolean;
  /** Milliseconds, monotonic; default performance.now. */
  now?: () => number;
  /** Waits between polls; default a timer. Must reject when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  logger?: Pick<Logger, 'debug' | 'warn'>;
}

/** What fromConfig needs from the agent besides plugin_data (see WorkloadAttestorEnv). */
export interface K8sAttestorEnv {
  procRoot?: string;
  /** The agent's environment, for node_name_env. */
  env?: Readonly<Record<string, string | undefined>>;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  logger?: Pick<Logger, 'debug' | 'warn'>;
}

interface PodList {
  pods: KubeletPod[];
  version: number;
}

/**
 * Shares kubelet requests: callers that have already looked at pod list version `after` get a
 * newer one, from the cache while it is younger than `ttlMs`, else from the request in flight
 * (one at a time), else from a new request. A caller's abort stops its wait, not the request.
 */
class PodListFetcher {
  #cached: (PodList & { startedAt: number }) | undefined;
  #inflight: Promise<PodList> | undefined;
  #version = 0;

  constructor(
    private readonly source: PodSource,
    private readonly ttlMs: number,
    private readonly now: () => number,
  ) {}

  next(after: number, signal?: AbortSignal): Promise<PodList> {
    const c = this.#cached;
    if (c && c.version > after && this.now() - c.startedAt < this.ttlMs) return Promise.resolve(c);
    if (!this.#inflight) {
      const startedAt = this.now();
      const version = ++this.#version;
      const p = this.source.listPods().then((pods) => {
        const list = { pods, version };
        this.#cached = { ...list, startedAt };
        return list;
      });
      this.#inflight = p;
      const clear = (): void => {
        if (this.#inflight === p) this.#inflight = undefined;
      };
      p.then(clear, clear);
    }
    return abortable(this.#inflight, signal);
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

/** The id part of a container status's `<runtime>://<id>`, or undefined if it has none. */
export function containerIdOf(containerID: string): string | undefined {
  const at = containerID.indexOf('://');
  if (at <= 0) return undefined;
  const rest = containerID.slice(at + 3);
  const end = rest.search(/[/?#]/);
  const host = end < 0 ? rest : rest.slice(0, end);
  return host === '' ? undefined : host;
}

function findContainer(pod: KubeletPod, containerId: string): KubeletContainerStatus | undefined {
  for (const s of [...pod.containerStatuses, ...pod.initContainerStatuses]) {
    if (s.containerID !== '' && containerIdOf(s.containerID) === containerId) return s;
  }
  return undefined;
}

function imageValues(statuses: readonly KubeletContainerStatus[]): string[] {
  return statuses.flatMap((s) => [s.imageID, s.image]);
}

/** Pod-level selector values (without the `k8s` type), as SPIRE forms them. */
export function podSelectorValues(pod: KubeletPod): string[] {
  return [
    `sa:${pod.serviceAccountName}`,
    `ns:${pod.namespace}`,
    `node-name:${pod.nodeName}`,
    `pod-uid:${pod.uid}`,
    `pod-name:${pod.name}`,
    `pod-image-count:${pod.containerStatuses.length}`,
    `pod-init-image-count:${pod.initContainerStatuses.length}`,
    ...imageValues(pod.containerStatuses).map((v) => `pod-image:${v}`),
    ...imageValues(pod.initContainerStatuses).map((v) => `pod-init-image:${v}`),
    ...pod.labels.map(([k, v]) => `pod-label:${k}:${v}`),
    ...pod.ownerReferences.flatMap((o) => [`pod-owner:${o.kind}:${o.name}`, `pod-owner-uid:${o.kind}:${o.uid}`]),
  ];
}

/** Container-level selector values of the workload's container. */
export function containerSelectorValues(status: KubeletContainerStatus): string[] {
  return [`container-name:${status.name}`, ...imageValues([status]).map((v) => `container-image:${v}`)];
}

function describeContainer(c: CgroupContainer): string {
  return c.podUid ? `container ${c.containerId} of pod ${c.podUid}` : `container ${c.containerId}`;
}

export class K8sWorkloadAttestor implements WorkloadAttestor {
  readonly name = K8S;
  readonly maxPollAttempts: number;
  readonly pollRetryIntervalMs: number;
  readonly disableContainerSelectors: boolean;
  readonly #pods: PodSource;
  readonly #fetcher: PodListFetcher;
  readonly #procRoot: string;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly #log: Pick<Logger, 'debug' | 'warn'> | undefined;

  constructor(opts: K8sAttestorOptions) {
    this.#pods = opts.pods;
    this.maxPollAttempts = opts.maxPollAttempts ?? DEFAULT_MAX_POLL_ATTEMPTS;
    this.pollRetryIntervalMs = opts.pollRetryIntervalMs ?? DEFAULT_POLL_RETRY_INTERVAL_MS;
    if (!Number.isSafeInteger(this.maxPollAttempts) || this.maxPollAttempts < 1) throw new TypeError('maxPollAttempts must be a positive integer');
    if (!(this.pollRetryIntervalMs > 0)) throw new TypeError('pollRetryIntervalMs must be positive');
    this.disableContainerSelectors = opts.disableContainerSelectors ?? false;
    this.#procRoot = opts.procRoot ?? '/proc';
    this.#sleep = opts.sleep ?? ((ms, signal) => delay(ms, undefined, signal ? { signal } : {}));
    this.#log = opts.logger;
    this.#fetcher = new PodListFetcher(opts.pods, this.pollRetryIntervalMs, opts.now ?? (() => performance.now()));
  }

  /** From the plugin_data of `WorkloadAttestor "k8s"`; throws ConfigError naming bad keys. */
  static fromConfig(data: ConfigReader, env: K8sAttestorEnv = {}): K8sWorkloadAttestor {
    const cfg = readK8sConfig(data, env.env ?? {});
    data.throwIfInvalid();
    const now = env.now ?? (() => performance.now());
    return new K8sWorkloadAttestor({
      pods: new ReloadingKubeletClient(cfg, now, env.logger),
      ...(env.procRoot !== undefined ? { procRoot: env.procRoot } : {}),
      ...(cfg.procRoot !== undefined ? { procRoot: cfg.procRoot } : {}),
      maxPollAttempts: cfg.maxPollAttempts,
      pollRetryIntervalMs: cfg.pollRetryIntervalMs,
      disableContainerSelectors: cfg.disableContainerSelectors,
      now,
      ...(env.sleep ? { sleep: env.sleep } : {}),
      ...(env.logger ? { logger: env.logger } : {}),
    });
  }

  async attest(peer: PeerInfo, signal?: AbortSignal): Promise<Selector[]> {
    const { pid } = peer;
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new WorkloadAttestationError(`invalid caller pid ${String(pid)}`);
    const path = join(this.#procRoot, String(pid), 'cgroup');
    let text: string;
    try {
      // Synchronous on purpose, as in the unix attestor: a small kernel-generated file; the
      // promise API costs thread-pool round trips and a 64 KiB buffer per procfs read.
      signal?.throwIfAborted();
      text = readFileSync(path, 'utf8');
    } catch (err) {
      signal?.throwIfAborted();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') throw new WorkloadAttestationError(`process ${pid} is gone`, { cause: err });
      throw new WorkloadAttestationError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    let container: CgroupContainer | undefined;
    try {
      container = parseCgroupFile(text);
    } catch (err) {
      if (err instanceof CgroupParseError) throw new WorkloadAttestationError(`process ${pid}: ${err.message}`, { cause: err });
      throw err;
    }
    if (container === undefined) return []; // not in a Kubernetes container

    let seen = 0;
    for (let attempt = 1; ; attempt++) {
      let list: PodList;
      try {
        list = await this.#fetcher.next(seen, signal);
      } catch (err) {
        signal?.throwIfAborted();
        if (err instanceof KubeletError) throw new WorkloadAttestationError(`process ${pid}: ${err.message}`, { cause: err });
        throw err;
      }
      seen = list.version;
      const values = this.#match(list.pods, container, pid);
      if (values !== undefined) return toSelectors(values);
      if (attempt >= this.maxPollAttempts) {
        throw new WorkloadAttestationError(
          `process ${pid}: ${describeContainer(container)} not found in the pods of ${this.#pods.description} after ${attempt} attempt(s) ${this.pollRetryIntervalMs}ms apart`,
        );
      }
      this.#log?.debug({ pid, pod_uid: container.podUid, container_id: container.containerId, attempt }, 'container not in the kubelet pod list yet; retrying');
      try {
        await this.#sleep(this.pollRetryIntervalMs, signal);
      } catch (err) {
        signal?.throwIfAborted();
        throw err;
      }
    }
  }

  /** Selector values for the caller's container among `pods`, or undefined if it is not listed (yet). */
  #match(pods: readonly KubeletPod[], c: CgroupContainer, pid: number): string[] | undefined {
    let out: string[] | undefined;
    for (const pod of pods) {
      if (c.podUid !== undefined && pod.uid !== c.podUid) continue;
      const status = findContainer(pod, c.containerId);
      let values: string[] | undefined;
      if (status) {
        values = podSelectorValues(pod);
        if (!this.disableContainerSelectors) values.push(...containerSelectorValues(status));
      } else if (c.podUid !== undefined && this.disableContainerSelectors) {
        values = podSelectorValues(pod);
      }
      if (values === undefined) continue;
      if (out !== undefined) throw new WorkloadAttestationError(`process ${pid}: two pods list container ${c.containerId}`);
      out = values;
    }
    return out;
  }
}

function toSelectors(values: readonly string[]): Selector[] {
  return [...new Set(values)].map((value) => ({ type: K8S, value })).sort(compareSelectors);
}

// ---------------------------------------------------------------------------------------------
// Configuration

export interface K8sConfig {
  port: number;
  /** Host to contact; "" = 127.0.0.1 (chain verified, name not). */
  nodeName: string;
  maxPollAttempts: number;
  pollRetryIntervalMs: number;
  reloadIntervalMs: number;
  disableContainerSelectors: boolean;
  skipKubeletVerification: boolean;
  /** Undefined with skip_kubelet_verification. */
  caPath: string | undefined;
  certPath: string | undefined;
  keyPath: string | undefined;
  /** Undefined with a client certificate or anonymous authentication. */
  tokenPath: string | undefined;
  procRoot: string | undefined;
  /** Loaded and checked at configuration time. */
  material: KubeletMaterial;
}

interface KubeletMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Bound for the intervals (timers overflow past 2^31-1 ms anyway). */
const MAX_INTERVAL_MS = 24 * 3_600_000;
const GO_DURATION_PART = /(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/y;
const UNIT_MS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A Go duration (`500ms`, `1.5s`, `2m`) or whole seconds, in milliseconds; undefined (after
 * recording a problem) if malformed. Sub-second precision matters here, unlike ConfigReader.duration.
 */
function durationMs(data: ConfigReader, key: string): number | undefined {
  const v = data.raw(key);
  if (v === undefined || v === '') return undefined;
  const total = goDurationMs(v);
  if (total === undefined) {
    data.problem(key, `expected a duration such as "500ms", "1s" or "1m", got ${JSON.stringify(v)}`);
    return undefined;
  }
  if (total > MAX_INTERVAL_MS) {
    data.problem(key, `must be at most 24h, got ${JSON.stringify(v)}`);
    return undefined;
  }
  return total;
}

/** Milliseconds of a Go duration string or of whole seconds (number or digits); undefined if malformed. */
function goDurationMs(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v * 1000 : undefined;
  if (typeof v !== 'string') return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  let total = 0;
  let pos = 0;
  while (pos < v.length) {
    GO_DURATION_PART.lastIndex = pos;
    const m = GO_DURATION_PART.exec(v);
    if (!m || (m[1] === '' && (m[2] ?? '') === '')) return undefined;
    total += Number(`${m[1] || '0'}.${m[2] || '0'}`) * UNIT_MS[m[3]!]!;
    pos = GO_DURATION_PART.lastIndex;
  }
  return Number.isFinite(total) ? total : undefined;
}

function pemCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/** Throws Error naming `path` unless `pem` holds at least one parseable certificate. */
function checkCa(pem: Buffer, path: string): void {
  let n: number;
  try {
    n = pemCertificates(pem.toString('utf8')).length;
  } catch (err) {
    throw new Error(`${JSON.stringify(path)} holds a certificate that cannot be parsed: ${(err as Error).message}`);
  }
  if (n === 0) throw new Error(`${JSON.stringify(path)} holds no PEM certificate`);
}

/** Throws Error naming `certPath` unless cert and key are a usable pair. */
function checkKeyPair(cert: Buffer, key: Buffer, certPath: string): void {
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(`${JSON.stringify(certPath)} and the private key are not a usable pair: ${(err as Error).message}`);
  }
}

function readOrProblem(data: ConfigReader, key: string, path: string, what: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    data.problem(key, `cannot read the ${what} ${JSON.stringify(path)}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    return undefined;
  }
}

/** Validates plugin_data (SPIRE's keys and defaults) and loads the kubelet credentials. */
export function readK8sConfig(data: ConfigReader, env: Readonly<Record<string, string | undefined>>): K8sConfig {
  const readOnlyPort = data.int('kubelet_read_only_port', { default: 0 });
  if (readOnlyPort > 0) {
    data.problem('kubelet_read_only_port', 'the kubelet read-only port is not supported (use the secure port, kubelet_secure_port, default 10250)');
  }
  let port = data.int('kubelet_secure_port', { default: 0, max: 65535 });
  if (port <= 0) port = DEFAULT_KUBELET_SECURE_PORT;
  let maxPollAttempts = data.int('max_poll_attempts', { default: 0 });
  if (maxPollAttempts <= 0) maxPollAttempts = DEFAULT_MAX_POLL_ATTEMPTS;
  const poll = durationMs(data, 'poll_retry_interval');
  const pollRetryIntervalMs = poll !== undefined && poll > 0 ? poll : DEFAULT_POLL_RETRY_INTERVAL_MS;
  const reload = durationMs(data, 'reload_interval');
  const reloadIntervalMs = reload !== undefined && reload > 0 ? reload : DEFAULT_RELOAD_INTERVAL_MS;
  const skipKubeletVerification = data.bool('skip_kubelet_verification', false);
  const caKey = data.string('kubelet_ca_path');
  const tokenKey = data.string('token_path');
  const certPath = data.string('certificate_path');
  const keyPath = data.string('private_key_path');
  const anonymous = data.bool('use_anonymous_authentication', false);
  const nodeNameEnv = data.string('node_name_env', DEFAULT_NODE_NAME_ENV);
  const nodeName = data.string('node_name') ?? env[nodeNameEnv] ?? '';
  const disableContainerSelectors = data.bool('disable_container_selectors', false);
  const procRoot = data.string('proc_root');
  // SPIRE's container locator switches: Spindle always locates containers from cgroups only.
  data.bool('use_new_container_locator');
  data.bool('verbose_container_locator_logs');
  data.unsupported('experimental', 'experimental features (sigstore image verification) are not supported');

  if (certPath !== undefined && keyPath === undefined) data.problem('private_key_path', 'is required with certificate_path');
  if (certPath === undefined && keyPath !== undefined) data.problem('certificate_path', 'is required with private_key_path');
  if (anonymous) {
    for (const k of ['token_path', 'certificate_path', 'private_key_path']) {
      if (data.has(k)) data.problem(k, 'cannot be combined with use_anonymous_authentication: true');
    }
  }
  if (skipKubeletVerification && caKey !== undefined) data.problem('kubelet_ca_path', 'cannot be combined with skip_kubelet_verification: true');

  const caPath = skipKubeletVerification ? undefined : (caKey ?? DEFAULT_KUBELET_CA_PATH);
  const useCert = !anonymous && certPath !== undefined && keyPath !== undefined;
  const tokenPath = anonymous || certPath !== undefined || keyPath !== undefined ? undefined : (tokenKey ?? DEFAULT_TOKEN_PATH);
  if (tokenKey !== undefined && (certPath !== undefined || keyPath !== undefined) && !anonymous) {
    data.problem('token_path', 'cannot be combined with certificate_path/private_key_path (the client certificate authenticates)');
  }

  const material: KubeletMaterial = {};
  if (caPath !== undefined) {
    const ca = readOrProblem(data, 'kubelet_ca_path', caPath, 'kubelet CA');
    if (ca) {
      try {
        checkCa(ca, caPath);
        material.ca = ca;
      } catch (err) {
        data.problem('kubelet_ca_path', (err as Error).message);
      }
    }
  }
  if (useCert) {
    const cert = readOrProblem(data, 'certificate_path', certPath, 'client certificate');
    const key = readOrProblem(data, 'private_key_path', keyPath, 'private key');
    if (cert && key) {
      try {
        checkKeyPair(cert, key, certPath);
        material.cert = cert;
        material.key = key;
      } catch (err) {
        data.problem('certificate_path', (err as Error).message);
      }
    }
  }
  if (tokenPath !== undefined) readOrProblem(data, 'token_path', tokenPath, 'service account token');
  return {
    port,
    nodeName,
    maxPollAttempts,
    pollRetryIntervalMs,
    reloadIntervalMs,
    disableContainerSelectors,
    skipKubeletVerification,
    caPath,
    certPath: useCert ? certPath : undefined,
    keyPath: useCert ? keyPath : undefined,
    tokenPath,
    procRoot,
    material,
  };
}

/**
 * The kubelet client of a config, rebuilt from the credential files once `reload_interval` has
 * passed (certificates rotate). A failed reload keeps the previous credentials and logs a warning.
 */
export class ReloadingKubeletClient implements PodSource {
  readonly description: string;
  #client: KubeletClient;
  #loadedAt: number;

  constructor(
    private readonly cfg: K8sConfig,
    private readonly now: () => number,
    private readonly log?: Pick<Logger, 'warn'>,
  ) {
    this.#client = this.#build(cfg.material);
    this.#loadedAt = now();
    this.description = `the kubelet at ${this.#client.baseUrl}`;
  }

  #build(m: KubeletMaterial): KubeletClient {
    const tokenPath = this.cfg.tokenPath;
    return new KubeletClient({
      nodeName: this.cfg.nodeName,
      port: this.cfg.port,
      insecureSkipVerify: this.cfg.skipKubeletVerification,
      ...m,
      ...(tokenPath !== undefined ? { token: async () => (await readFile(tokenPath, 'utf8')).trim() } : {}),
    });
  }

  async #reload(): Promise<void> {
    const { caPath, certPath, keyPath } = this.cfg;
    const [ca, cert, key] = await Promise.all([caPath, certPath, keyPath].map((p) => (p === undefined ? undefined : readFile(p))));
    if (ca) checkCa(ca, caPath!);
    if (cert && key) checkKeyPair(cert, key, certPath!);
    this.#client = this.#build({ ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) });
  }

  async listPods(signal?: AbortSignal): Promise<KubeletPod[]> {
    if (this.now() - this.#loadedAt >= this.cfg.reloadIntervalMs) {
      this.#loadedAt = this.now();
      try {
        await this.#reload();
      } catch (err) {
        this.log?.warn({ err: (err as Error).message }, 'cannot reload the kubelet credentials; keeping the previous ones');
      }
    }
    return this.#client.listPods(signal);
  }
}

/**
 * k8s_psat, server half (SPIRE's k8s_psat NodeAttestor): the agent sends its projected
 * service-account token and its cluster name; the cluster's API server vouches for the token.
 *
 * Checks, in order, each with a stable AttestationError reason:
 *   malformed            payload is not {"cluster", "token"} (see payload.ts)
 *   unknown_cluster      cluster not configured
 *   token_review_failed  the TokenReview call failed (network, TLS, HTTP error, bad answer)
 *   unauthenticated      the API server did not authenticate the token
 *   wrong_audience       the token is not for our audience: the review was refused and the
 *                        token's (unverified) `aud` lacks ours, or the review succeeded but
 *                        status.audiences holds none of ours (an audience-unaware server)
 *   not_allowed          username not `system:serviceaccount:<ns>:<sa>`, or not on the allow list
 *   missing_pod_claims   pod-name / pod-uid extras absent, empty or not exactly one
 *   pod_lookup_failed / pod_not_found / pod_uid_mismatch
 *   node_mismatch        the token's node extras (Kubernetes 1.30+) disagree with the pod/node
 *   node_lookup_failed / node_not_found
 * Then: agent ID `spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node uid>` and SPIRE's
 * selectors (`cluster:<c>`, `agent_ns:`, `agent_sa:`, `agent_pod_name:`, `agent_pod_uid:`,
 * `agent_node_ip:`, `agent_node_name:`, `agent_node_uid:`, and `agent_node_label:<k>:<v>` /
 * `agent_pod_label:<k>:<v>` for allowed label keys). Re-attestation is allowed.
 *
 * The API server is contacted only at attestation time. A kubeconfig file is read (and so
 * validated) when the attestor is built, and again for each request so rotated credentials are
 * picked up; in-cluster credentials are read for each request too.
 */
import { decodeJwt } from 'jose';
import type { ConfigReader } from '../../../common/configfile.js';
import { idFromSegments, type SpiffeId } from '../../../spiffe/id.js';
import type { Selector } from '../../../common/selector.js';
import { KubeApiClient, type KubeApi, type KubeNode, type KubePod, type TokenReviewStatus } from '../../k8s/apiclient.js';
import { inClusterTarget, KubeConfigError, loadKubeconfig, type KubeFileAccess } from '../../k8s/kubeconfig.js';
import { AttestationError, type AttestationResult, type ServerAttestorContext, type ServerNodeAttestor } from '../types.js';
import { decodePsatPayload, isValidClusterName, K8S_PSAT } from './payload.js';

export { isValidClusterName, K8S_PSAT };

/** The audience used when `audience` is not set. (SPIRE's is "spire-server".) */
export const DEFAULT_AUDIENCE: readonly string[] = ['spindle-server'];

export const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
export const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';
export const NODE_UID_EXTRA = 'authentication.kubernetes.io/node-uid';

const SA_USERNAME_PREFIX = 'system:serviceaccount:';

export interface K8sPsatCluster {
  /** The name agents send; one SPIFFE ID path segment. */
  name: string;
  /** `namespace:serviceaccount` entries. */
  serviceAccountAllowList: readonly string[];
  /** Sent as spec.audiences; empty = the API server's own audience. */
  audience: readonly string[];
  allowedNodeLabelKeys: readonly string[];
  allowedPodLabelKeys: readonly string[];
  api: KubeApi;
}

/** What building from config may read besides the config: the environment and files (injectable). */
export interface K8sPsatServerEnv extends KubeFileAccess {
  /** For in-cluster credentials (KUBERNETES_SERVICE_HOST/PORT); nothing below main reads process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Default /var/run/secrets/kubernetes.io/serviceaccount. */
  serviceAccountDir?: string;
  /** Per API request; default 10 s. */
  timeoutMs?: number;
}

const SA_ENTRY = /^[^:\s]+:[^:\s]+$/;

interface ClusterState {
  cfg: K8sPsatCluster;
  allowed: Set<string>;
  nodeLabels: Set<string>;
  podLabels: Set<string>;
}

function bounded(s: string, n = 200): string {
  return s.length > n ? `${s.slice(0, n)}...` : s;
}

function q(s: string): string {
  return JSON.stringify(bounded(s));
}

export class K8sPsatServerAttestor implements ServerNodeAttestor {
  readonly name = K8S_PSAT;
  readonly #clusters = new Map<string, ClusterState>();

  constructor(clusters: readonly K8sPsatCluster[]) {
    for (const c of clusters) {
      if (!isValidClusterName(c.name)) throw new Error(`k8s_psat: cluster name ${q(c.name)} cannot be a SPIFFE ID path segment`);
      this.#clusters.set(c.name, {
        cfg: c,
        allowed: new Set(c.serviceAccountAllowList),
        nodeLabels: new Set(c.allowedNodeLabelKeys),
        podLabels: new Set(c.allowedPodLabelKeys),
      });
    }
  }

  /** The configured cluster names, in config order. */
  get clusterNames(): string[] {
    return [...this.#clusters.keys()];
  }

  /**
   * Validates plugin_data (throwing ConfigError naming every bad key) and builds the attestor.
   *
   *   clusters:
   *     <name>:
   *       service_account_allow_list: ["ns:sa", ...]   required, at least one
   *       audience: [...]                             default ["spindle-server"]; [] = API server's
   *       kube_config_file: /path                     default "" = in-cluster credentials
   *       allowed_node_label_keys: [...]
   *       allowed_pod_label_keys: [...]
   */
  static fromConfig(data: ConfigReader, env: K8sPsatServerEnv = {}): K8sPsatServerAttestor {
    const clustersReader = data.section('clusters');
    const clusters: K8sPsatCluster[] = [];
    if (!clustersReader.present || clustersReader.keys().length === 0) {
      data.problem('clusters', 'at least one cluster must be configured (without one every k8s_psat attestation is refused)');
    }
    const files: KubeFileAccess = {
      ...(env.readFileSync ? { readFileSync: env.readFileSync } : {}),
      ...(env.readFile ? { readFile: env.readFile } : {}),
    };
    for (const [name, c] of clustersReader.sections()) {
      if (!isValidClusterName(name)) {
        clustersReader.problem(
          name,
          'cluster names become one SPIFFE ID path segment: use only a-z A-Z 0-9 . - _ (at most 253 characters, not "." or "..")',
        );
      }
      c.unsupported('service_account_whitelist', 'was renamed service_account_allow_list (as in SPIRE)');
      const allowList = c.stringList('service_account_allow_list', []);
      if (allowList.length === 0) c.problem('service_account_allow_list', 'at least one service account ("namespace:name") must be allowed');
      allowList.forEach((e, i) => {
        if (!SA_ENTRY.test(e)) c.problem(`service_account_allow_list[${i}]`, `expected "namespace:serviceaccount", got ${q(e)}`);
      });
      const audience = c.stringList('audience', [...DEFAULT_AUDIENCE]);
      audience.forEach((a, i) => {
        if (a === '') c.problem(`audience[${i}]`, 'must not be empty');
      });
      const nodeKeys = c.stringList('allowed_node_label_keys', []);
      const podKeys = c.stringList('allowed_pod_label_keys', []);
      for (const [key, list] of [['allowed_node_label_keys', nodeKeys], ['allowed_pod_label_keys', podKeys]] as const) {
        list.forEach((k, i) => {
          if (k === '') c.problem(`${key}[${i}]`, 'must not be empty');
        });
      }
      const kubeConfigFile = c.string('kube_config_file');
      let api: KubeApi;
      const clientOpts = env.timeoutMs !== undefined ? { timeoutMs: env.timeoutMs } : {};
      if (kubeConfigFile !== undefined) {
        try {
          loadKubeconfig(kubeConfigFile, files);
        } catch (err) {
          if (!(err instanceof KubeConfigError)) throw err;
          c.problem('kube_config_file', err.message);
        }
        api = new KubeApiClient(() => loadKubeconfig(kubeConfigFile, files), clientOpts);
      } else {
        const envVars = env.env ?? {};
        api = new KubeApiClient(
          () => inClusterTarget({ env: envVars, ...files, ...(env.serviceAccountDir !== undefined ? { serviceAccountDir: env.serviceAccountDir } : {}) }),
          clientOpts,
        );
      }
      clusters.push({ name, serviceAccountAllowList: allowList, audience, allowedNodeLabelKeys: nodeKeys, allowedPodLabelKeys: podKeys, api });
    }
    data.throwIfInvalid();
    return new K8sPsatServerAttestor(clusters);
  }

  async attest(payload: Buffer, ctx: ServerAttestorContext): Promise<AttestationResult> {
    const { cluster: clusterName, token } = decodePsatPayload(payload);
    const cluster = this.#clusters.get(clusterName);
    if (cluster === undefined) throw new AttestationError('unknown_cluster', `not configured for cluster ${q(clusterName)}`);
    const { cfg } = cluster;
    const where = `cluster ${q(clusterName)}`;

    let review: TokenReviewStatus;
    try {
      review = await cfg.api.createTokenReview(token, cfg.audience);
    } catch (err) {
      throw new AttestationError('token_review_failed', `unable to validate the token with the TokenReview API of ${where}: ${(err as Error).message}`, { cause: err });
    }

    if (!review.authenticated) {
      const tokenAud = unverifiedAudiences(token);
      if (cfg.audience.length > 0 && tokenAud !== undefined && !tokenAud.some((a) => cfg.audience.includes(a))) {
        throw new AttestationError('wrong_audience', `token audiences ${audList(tokenAud)} include none of the configured audiences ${audList(cfg.audience)} (${where})`);
      }
      const why = review.error !== '' ? `: ${bounded(review.error, 300)}` : '';
      throw new AttestationError('unauthenticated', `token not authenticated according to the TokenReview API of ${where}${why}`);
    }
    // An API server that honours spec.audiences answers with the ones it validated; one that
    // returns none of ours (or none at all: "valid for the API server") was not checking ours.
    if (cfg.audience.length > 0 && !review.audiences.some((a) => cfg.audience.includes(a))) {
      throw new AttestationError(
        'wrong_audience',
        `the TokenReview API of ${where} validated the token for ${review.audiences.length > 0 ? audList(review.audiences) : "the API server's own audience"}, not for ${audList(cfg.audience)}`,
      );
    }

    const { namespace, serviceAccount } = serviceAccountOf(review.user.username);
    const fullName = `${namespace}:${serviceAccount}`;
    if (!cluster.allowed.has(fullName)) throw new AttestationError('not_allowed', `${q(fullName)} is not an allowed service account (${where})`);

    const podName = singleExtra(review, POD_NAME_EXTRA, 'pod name');
    const podUid = singleExtra(review, POD_UID_EXTRA, 'pod UID');

    let pod: KubePod | undefined;
    try {
      pod = await cfg.api.getPod(namespace, podName);
    } catch (err) {
      throw new AttestationError('pod_lookup_failed', `unable to get pod ${q(`${namespace}/${podName}`)} from the API server of ${where}: ${(err as Error).message}`, { cause: err });
    }
    if (pod === undefined) throw new AttestationError('pod_not_found', `pod ${q(`${namespace}/${podName}`)} named by the token does not exist (${where})`);
    if (pod.uid !== podUid) {
      throw new AttestationError('pod_uid_mismatch', `pod ${q(`${namespace}/${podName}`)} has UID ${q(pod.uid)}, the token was issued for ${q(podUid)} (${where})`);
    }
    if (pod.nodeName === '') throw new AttestationError('node_not_found', `pod ${q(`${namespace}/${podName}`)} is not scheduled on a node (${where})`);
    const tokenNode = optionalSingleExtra(review, NODE_NAME_EXTRA);
    if (tokenNode !== undefined && tokenNode !== pod.nodeName) {
      throw new AttestationError('node_mismatch', `the token is bound to node ${q(tokenNode)} but pod ${q(`${namespace}/${podName}`)} runs on ${q(pod.nodeName)} (${where})`);
    }

    let node: KubeNode | undefined;
    try {
      node = await cfg.api.getNode(pod.nodeName);
    } catch (err) {
      throw new AttestationError('node_lookup_failed', `unable to get node ${q(pod.nodeName)} from the API server of ${where}: ${(err as Error).message}`, { cause: err });
    }
    if (node === undefined) throw new AttestationError('node_not_found', `node ${q(pod.nodeName)} of pod ${q(`${namespace}/${podName}`)} does not exist (${where})`);
    const tokenNodeUid = optionalSingleExtra(review, NODE_UID_EXTRA);
    if (tokenNodeUid !== undefined && tokenNodeUid !== node.uid) {
      throw new AttestationError('node_mismatch', `the token is bound to node UID ${q(tokenNodeUid)} but node ${q(node.name)} has UID ${q(node.uid)} (${where})`);
    }

    let agentId: SpiffeId;
    try {
      agentId = idFromSegments(ctx.trustDomain, 'spire', 'agent', K8S_PSAT, clusterName, node.uid);
    } catch (err) {
      throw new AttestationError('malformed', `node UID ${q(node.uid)} cannot be a SPIFFE ID path segment (${where})`, { cause: err });
    }

    const values = [
      `cluster:${clusterName}`,
      `agent_ns:${namespace}`,
      `agent_sa:${serviceAccount}`,
      `agent_pod_name:${podName}`,
      `agent_pod_uid:${podUid}`,
      ...(pod.hostIP !== '' ? [`agent_node_ip:${pod.hostIP}`] : []),
      `agent_node_name:${pod.nodeName}`,
      `agent_node_uid:${node.uid}`,
      ...labelSelectors('agent_node_label', node.labels, cluster.nodeLabels),
      ...labelSelectors('agent_pod_label', pod.labels, cluster.podLabels),
    ];
    const selectors: Selector[] = values.map((value) => ({ type: K8S_PSAT, value }));
    return { agentId, selectors, canReattest: true };
  }
}

function audList(a: readonly string[]): string {
  return `[${a.slice(0, 10).map((x) => q(x)).join(', ')}${a.length > 10 ? ', ...' : ''}]`;
}

/** The token's `aud` claim, read WITHOUT verification: only used to explain a refusal. */
function unverifiedAudiences(token: string): string[] | undefined {
  try {
    const aud = decodeJwt(token).aud;
    if (typeof aud === 'string') return [aud];
    return Array.isArray(aud) ? aud.filter((a): a is string => typeof a === 'string') : undefined;
  } catch {
    return undefined;
  }
}

function serviceAccountOf(username: string): { namespace: string; serviceAccount: string } {
  if (!username.startsWith(SA_USERNAME_PREFIX)) {
    throw new AttestationError('not_allowed', `the token belongs to ${q(username)}, not to a service account (expected "system:serviceaccount:<namespace>:<name>")`);
  }
  const parts = username.split(':');
  if (parts.length !== 4 || parts[2] === '' || parts[3] === '') {
    throw new AttestationError('not_allowed', `unexpected service account username ${q(username)} (expected "system:serviceaccount:<namespace>:<name>")`);
  }
  return { namespace: parts[2]!, serviceAccount: parts[3]! };
}

function singleExtra(review: TokenReviewStatus, key: string, what: string): string {
  const v = review.user.extra[key];
  if (v === undefined || v.length === 0) throw new AttestationError('missing_pod_claims', `the TokenReview has no ${what} (user extra ${q(key)}): is this a projected token bound to a pod?`);
  if (v.length !== 1) throw new AttestationError('missing_pod_claims', `the TokenReview has ${v.length} values for the ${what} (user extra ${q(key)}), expected exactly one`);
  if (v[0] === '') throw new AttestationError('missing_pod_claims', `the TokenReview's ${what} (user extra ${q(key)}) is empty`);
  return v[0]!;
}

function optionalSingleExtra(review: TokenReviewStatus, key: string): string | undefined {
  const v = review.user.extra[key];
  if (v === undefined || v.length === 0 || (v.length === 1 && v[0] === '')) return undefined;
  if (v.length !== 1) throw new AttestationError('node_mismatch', `the TokenReview has ${v.length} values for user extra ${q(key)}, expected one`);
  return v[0];
}

function labelSelectors(kind: string, labels: Record<string, string>, allowed: Set<string>): string[] {
  return Object.keys(labels)
    .filter((k) => allowed.has(k))
    .sort()
    .map((k) => `${kind}:${k}:${labels[k]}`);
}

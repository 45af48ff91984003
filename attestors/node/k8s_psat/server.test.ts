import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, ConfigReader } from '../../../common/configfile.js';
import { parseTrustDomain } from '../../../spiffe/id.js';
import type { AttestorDataStore } from '../types.js';
import { makeKubeTls, type KubeTls } from '../../../test/support/kubetls.js';
import { POD_NAME_EXTRA, POD_UID_EXTRA, startFakeApiServer, type FakeApiServer, type MintOptions } from '../../../test/support/fakekube/apiserver.js';
import { buildServerNodeAttestors } from '../registry.js';
import { AttestationError, type AttestationResult, type ServerAttestorContext } from '../types.js';
import { encodePsatPayload, MAX_PSAT_PAYLOAD_BYTES } from './payload.js';
import { K8sPsatServerAttestor, type K8sPsatServerEnv } from './server.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-psat-server-'));
after(() => rmSync(root, { recursive: true, force: true }));

const ctx: ServerAttestorContext = {
  trustDomain: parseTrustDomain('example.org'),
  datastore: {} as AttestorDataStore,
  now: () => new Date(),
  challenge: () => Promise.reject(new Error('k8s_psat sends no challenge')),
};

const CALLER_TOKEN = 'server-caller-token';
let tls: KubeTls;
let api: FakeApiServer;
let kubeconfigPath: string;

function writeKubeconfig(path: string, o: { ca?: Buffer; token?: string; server?: string } = {}): string {
  writeFileSync(
    path,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: o.server ?? api.url, 'certificate-authority-data': (o.ca ?? tls.caCert).toString('base64') } }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
      users: [{ name: 'u', user: { token: o.token ?? CALLER_TOKEN } }],
    }),
  );
  return path;
}

before(async () => {
  tls = makeKubeTls();
  api = await startFakeApiServer({ tls, bearerTokens: [CALLER_TOKEN, 'second-caller-token'] });
  kubeconfigPath = writeKubeconfig(join(root, 'kubeconfig'));
});
after(() => api?.close());

const POD = { namespace: 'spire', name: 'spire-agent-x7k2p', uid: '5a1e0f4c-pod-uid', nodeName: 'worker-1', hostIP: '192.0.2.10' };
const NODE = { name: 'worker-1', uid: '0b9f3c2e-node-uid' };

beforeEach(() => {
  api.addPod({ ...POD, labels: { app: 'spire-agent', 'pod-template-hash': 'abc', tier: 'infra' } });
  api.addNode({ ...NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a', 'kubernetes.io/os': 'linux', secret: 'x' } });
  api.tokenReviewHook = undefined;
  api.audienceAware = true;
  api.validateBoundObjects = true;
});

function reader(raw: unknown): ConfigReader {
  return new ConfigReader(raw, 'plugins.NodeAttestor.k8s_psat.plugin_data');
}

function cluster(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    service_account_allow_list: ['spire:spire-agent'],
    kube_config_file: kubeconfigPath,
    allowed_node_label_keys: ['topology.kubernetes.io/zone', 'kubernetes.io/os'],
    allowed_pod_label_keys: ['app'],
    ...extra,
  };
}

function attestor(clusters: Record<string, unknown> = { prod: cluster() }, env: K8sPsatServerEnv = {}): K8sPsatServerAttestor {
  return K8sPsatServerAttestor.fromConfig(reader({ clusters }), env);
}

function mint(o: Partial<MintOptions> = {}): Promise<string> {
  return api.mintProjectedToken({ namespace: POD.namespace, serviceAccount: 'spire-agent', podName: POD.name, podUid: POD.uid, ...o });
}

async function payload(o: Partial<MintOptions> = {}, clusterName = 'prod'): Promise<Buffer> {
  return encodePsatPayload({ cluster: clusterName, token: await mint(o) });
}

/** Asserts the attestation is refused with `reason`, the message matches, and never contains the token. */
async function refused(p: Promise<AttestationResult>, reason: string, re: RegExp, token?: string): Promise<AttestationError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof AttestationError, `expected AttestationError(${reason}), got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.match(caught.message, re);
  if (token !== undefined) {
    assert.ok(!caught.message.includes(token), 'message must not contain the token');
    assert.ok(!caught.message.includes(token.split('.')[1]!), 'message must not contain the token payload');
  }
  return caught;
}

describe('k8s_psat server: attestation', () => {
  test('a valid projected token: SPIRE agent ID, selectors, re-attestable', async () => {
    const a = attestor();
    const r = await a.attest(await payload(), ctx);
    assert.equal(r.agentId, 'spiffe://example.org/spire/agent/k8s_psat/prod/0b9f3c2e-node-uid');
    assert.equal(r.canReattest, true);
    assert.deepEqual(
      r.selectors.map((s) => `${s.type}:${s.value}`),
      [
        'k8s_psat:cluster:prod',
        'k8s_psat:agent_ns:spire',
        'k8s_psat:agent_sa:spire-agent',
        'k8s_psat:agent_pod_name:spire-agent-x7k2p',
        'k8s_psat:agent_pod_uid:5a1e0f4c-pod-uid',
        'k8s_psat:agent_node_ip:192.0.2.10',
        'k8s_psat:agent_node_name:worker-1',
        'k8s_psat:agent_node_uid:0b9f3c2e-node-uid',
        'k8s_psat:agent_node_label:kubernetes.io/os:linux',
        'k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a',
        'k8s_psat:agent_pod_label:app:spire-agent',
      ],
    );
    // The TokenReview carried the default audience.
    const review = api.requests.filter((q) => q.path.endsWith('/tokenreviews')).at(-1);
    assert.deepEqual(review?.audiences, ['spindle-server']);
  });

  test('re-attestation with a new token gives the same agent ID', async () => {
    const a = attestor();
    const first = await a.attest(await payload(), ctx);
    const second = await a.attest(await payload(), ctx);
    assert.equal(second.agentId, first.agentId);
  });

  test('building contacts nothing; each attestation makes exactly TokenReview, Pod, Node', async () => {
    const before = api.count();
    const a = attestor();
    assert.equal(api.count(), before);
    await a.attest(await payload(), ctx);
    assert.deepEqual(api.requests.slice(before).map((q) => `${q.method} ${q.path}`), [
      'POST /apis/authentication.k8s.io/v1/tokenreviews',
      'GET /api/v1/namespaces/spire/pods/spire-agent-x7k2p',
      'GET /api/v1/nodes/worker-1',
    ]);
  });

  test('malformed payloads are refused before any API call', async () => {
    const a = attestor();
    const token = await mint();
    const before = api.count();
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.alloc(0), /it is empty/],
      [Buffer.from('not json'), /expected the JSON object/],
      [Buffer.from('["prod"]'), /expected a JSON object/],
      [Buffer.from(JSON.stringify({ token })), /"cluster" is missing/],
      [Buffer.from(JSON.stringify({ cluster: 7, token })), /"cluster" is not a string/],
      [Buffer.from(JSON.stringify({ cluster: 'prod' })), /"token" is missing/],
      [Buffer.from(JSON.stringify({ cluster: 'prod', token: 'abc' })), /"token" is not a JWT/],
      [Buffer.from(JSON.stringify({ cluster: 'prod', token, extra: 1 })), /unexpected field "extra"/],
      [Buffer.from(JSON.stringify({ cluster: 'prod', token: `${token}${'A'.repeat(MAX_PSAT_PAYLOAD_BYTES)}` })), /over the 65536-byte limit/],
      [Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), /expected the JSON object/],
    ];
    for (const [p, re] of cases) await refused(a.attest(p, ctx), 'malformed', re, token);
    assert.equal(api.count(), before);
  });

  test('unknown cluster', async () => {
    const before = api.count();
    await refused(attestor().attest(await payload({}, 'staging'), ctx), 'unknown_cluster', /^not configured for cluster "staging"$/);
    assert.equal(api.count(), before);
  });

  test('TokenReview API error', async () => {
    api.failNext(1, { status: 500, message: 'etcdserver: leader changed' });
    const token = await mint();
    await refused(attestor().attest(encodePsatPayload({ cluster: 'prod', token }), ctx), 'token_review_failed', /TokenReview API of cluster "prod": .*HTTP 500: etcdserver: leader changed/, token);
  });

  test('API server TLS failure (certificate from an unknown CA)', async () => {
    const wrongCa = writeKubeconfig(join(root, 'kubeconfig-wrong-ca'), { ca: makeKubeTls().caCert });
    const before = api.count();
    await refused(attestor({ prod: cluster({ kube_config_file: wrongCa }) }).attest(await payload(), ctx), 'token_review_failed', /certificate/);
    assert.equal(api.count(), before, 'nothing reached the API server');
  });

  test('the API server refuses our credentials', async () => {
    const badCreds = writeKubeconfig(join(root, 'kubeconfig-bad-token'), { token: 'not-a-caller' });
    await refused(attestor({ prod: cluster({ kube_config_file: badCreds }) }).attest(await payload(), ctx), 'token_review_failed', /HTTP 401: Unauthorized/);
  });

  test('unauthenticated tokens: foreign signature, expired, not yet valid, bound pod gone', async () => {
    const a = attestor();
    for (const [o, re] of [
      [{ foreignKey: true }, /signature verification failed/],
      [{ ttlSeconds: -10 }, /"exp" claim timestamp check failed/],
      [{ notBefore: new Date(Date.now() + 3_600_000) }, /"nbf" claim timestamp check failed/],
      [{ podUid: 'stale-uid' }, /does not match claim/],
    ] as Array<[Partial<MintOptions>, RegExp]>) {
      const token = await mint(o);
      const err = await refused(a.attest(encodePsatPayload({ cluster: 'prod', token }), ctx), 'unauthenticated', re, token);
      assert.match(err.message, /^token not authenticated according to the TokenReview API of cluster "prod": /);
    }
  });

  test('wrong audience: refused by an audience-aware API server', async () => {
    const token = await mint({ audiences: ['vault'] });
    await refused(attestor().attest(encodePsatPayload({ cluster: 'prod', token }), ctx), 'wrong_audience', /token audiences \["vault"\] include none of the configured audiences \["spindle-server"\]/, token);
  });

  test('wrong audience: an API server that ignores spec.audiences is caught by status.audiences', async () => {
    api.audienceAware = false;
    const token = await mint({ audiences: ['vault'] });
    await refused(attestor().attest(encodePsatPayload({ cluster: 'prod', token }), ctx), 'wrong_audience', /validated the token for \["vault"\], not for \["spindle-server"\]/, token);
    api.tokenReviewHook = (st) => ({ ...st, audiences: undefined });
    await refused(attestor().attest(await payload(), ctx), 'wrong_audience', /for the API server's own audience, not for \["spindle-server"\]/);
  });

  test('configured audiences are sent; audience: [] uses the API server audience', async () => {
    const custom = attestor({ prod: cluster({ audience: ['a1', 'a2'] }) });
    await custom.attest(await payload({ audiences: ['a2'] }), ctx);
    assert.deepEqual(api.requests.filter((q) => q.path.endsWith('/tokenreviews')).at(-1)?.audiences, ['a1', 'a2']);
    const apiAud = attestor({ prod: cluster({ audience: [] }) });
    const r = await apiAud.attest(await payload({ audiences: [api.issuer] }), ctx);
    assert.equal(r.agentId, 'spiffe://example.org/spire/agent/k8s_psat/prod/0b9f3c2e-node-uid');
    assert.deepEqual(api.requests.filter((q) => q.path.endsWith('/tokenreviews')).at(-1)?.audiences, []);
  });

  test('service account not on the allow list; non-service-account users', async () => {
    api.addPod({ ...POD, name: 'web-1', uid: 'web-uid' });
    const token = await mint({ serviceAccount: 'default', podName: 'web-1', podUid: 'web-uid' });
    await refused(attestor().attest(encodePsatPayload({ cluster: 'prod', token }), ctx), 'not_allowed', /^"spire:default" is not an allowed service account \(cluster "prod"\)$/, token);
    api.tokenReviewHook = (st) => ({ ...st, user: { ...st.user, username: 'kubernetes-admin' } });
    await refused(attestor().attest(await payload(), ctx), 'not_allowed', /belongs to "kubernetes-admin", not to a service account/);
    api.tokenReviewHook = (st) => ({ ...st, user: { ...st.user, username: 'system:serviceaccount:spire:a:b' } });
    await refused(attestor().attest(await payload(), ctx), 'not_allowed', /unexpected service account username/);
  });

  test('missing, empty or duplicated pod extras', async () => {
    const withExtra = (key: string, value: string[] | undefined) => {
      api.tokenReviewHook = (st) => {
        const extra = { ...st.user?.extra };
        if (value === undefined) delete extra[key];
        else extra[key] = value;
        return { ...st, user: { ...st.user, extra } };
      };
    };
    const a = attestor();
    withExtra(POD_NAME_EXTRA, undefined);
    await refused(a.attest(await payload(), ctx), 'missing_pod_claims', /has no pod name \(user extra "authentication\.kubernetes\.io\/pod-name"\)/);
    withExtra(POD_UID_EXTRA, undefined);
    await refused(a.attest(await payload(), ctx), 'missing_pod_claims', /has no pod UID/);
    withExtra(POD_NAME_EXTRA, [POD.name, 'other']);
    await refused(a.attest(await payload(), ctx), 'missing_pod_claims', /has 2 values for the pod name/);
    withExtra(POD_UID_EXTRA, [POD.uid, POD.uid]);
    await refused(a.attest(await payload(), ctx), 'missing_pod_claims', /has 2 values for the pod UID/);
    withExtra(POD_UID_EXTRA, ['']);
    await refused(a.attest(await payload(), ctx), 'missing_pod_claims', /pod UID .* is empty/);
    withExtra(POD_NAME_EXTRA, []);
    await refused(a.attest(await payload(), ctx), 'missing_pod_claims', /has no pod name/);
  });

  test('pod not found', async () => {
    api.validateBoundObjects = false; // as if the pod vanished between the review and the lookup
    api.removePod(POD.namespace, POD.name);
    await refused(attestor().attest(await payload(), ctx), 'pod_not_found', /^pod "spire\/spire-agent-x7k2p" named by the token does not exist \(cluster "prod"\)$/);
  });

  test('pod UID mismatch (same name, another pod)', async () => {
    api.validateBoundObjects = false;
    api.addPod({ ...POD, uid: 'recreated-uid' });
    await refused(attestor().attest(await payload(), ctx), 'pod_uid_mismatch', /has UID "recreated-uid", the token was issued for "5a1e0f4c-pod-uid"/);
  });

  test('pod lookup failures: HTTP error and malformed Pod', async () => {
    const a = attestor();
    api.failNext(1, { status: 503, message: 'apiserver overloaded', path: '/api/v1/namespaces/' });
    await refused(a.attest(await payload(), ctx), 'pod_lookup_failed', /unable to get pod "spire\/spire-agent-x7k2p" .*HTTP 503: apiserver overloaded/);
    api.failNext(1, { status: 200, body: JSON.stringify({ kind: 'Pod', apiVersion: 'v1', metadata: {} }), path: '/api/v1/namespaces/' });
    await refused(a.attest(await payload(), ctx), 'pod_lookup_failed', /Pod response is malformed: metadata\.uid is missing/);
  });

  test('node not found, pod not scheduled, node lookup failure', async () => {
    const a = attestor();
    api.removeNode(NODE.name);
    await refused(a.attest(await payload(), ctx), 'node_not_found', /^node "worker-1" of pod "spire\/spire-agent-x7k2p" does not exist/);
    api.addNode(NODE);
    api.validateBoundObjects = false;
    api.addPod({ ...POD, nodeName: '' });
    await refused(a.attest(await payload(), ctx), 'node_not_found', /is not scheduled on a node/);
    api.addPod(POD);
    api.failNext(1, { status: 500, message: 'boom', path: '/api/v1/nodes/' });
    await refused(a.attest(await payload(), ctx), 'node_lookup_failed', /unable to get node "worker-1" .*HTTP 500: boom/);
  });

  test('node extras (Kubernetes 1.30+) must agree with the pod and node', async () => {
    const a = attestor();
    const ok = await a.attest(await payload({ nodeName: NODE.name, nodeUid: NODE.uid }), ctx);
    assert.equal(ok.agentId, 'spiffe://example.org/spire/agent/k8s_psat/prod/0b9f3c2e-node-uid');
    await refused(a.attest(await payload({ nodeName: 'worker-2' }), ctx), 'node_mismatch', /bound to node "worker-2" but pod "spire\/spire-agent-x7k2p" runs on "worker-1"/);
    await refused(a.attest(await payload({ nodeName: NODE.name, nodeUid: 'old-node-uid' }), ctx), 'node_mismatch', /bound to node UID "old-node-uid" but node "worker-1" has UID "0b9f3c2e-node-uid"/);
  });

  test('a node UID that cannot be a path segment is refused', async () => {
    api.addNode({ name: NODE.name, uid: 'bad/uid' });
    await refused(attestor().attest(await payload(), ctx), 'malformed', /node UID "bad\/uid" cannot be a SPIFFE ID path segment/);
  });

  test('several clusters, each with its own allow list and API server credentials', async () => {
    const a = attestor({ prod: cluster(), dev: cluster({ service_account_allow_list: ['other:sa'] }) });
    assert.deepEqual(a.clusterNames, ['prod', 'dev']);
    const r = await a.attest(await payload({}, 'prod'), ctx);
    assert.match(r.agentId, /\/k8s_psat\/prod\//);
    await refused(a.attest(await payload({}, 'dev'), ctx), 'not_allowed', /"spire:spire-agent" is not an allowed service account \(cluster "dev"\)/);
  });

  test('the kubeconfig is re-read for each attestation (rotated credentials are picked up)', async () => {
    const path = writeKubeconfig(join(root, 'kubeconfig-rotating'));
    const a = attestor({ prod: cluster({ kube_config_file: path }) });
    await a.attest(await payload(), ctx);
    assert.equal(api.requests.at(-1)?.caller, 'token:0');
    writeKubeconfig(path, { token: 'second-caller-token' });
    await a.attest(await payload(), ctx);
    assert.equal(api.requests.at(-1)?.caller, 'token:1');
    rmSync(path);
    await refused(a.attest(await payload(), ctx), 'token_review_failed', /kubeconfig: cannot read .*kubeconfig-rotating: file not found/);
  });
});

describe('k8s_psat server: in-cluster credentials', () => {
  function saDir(): string {
    const dir = join(root, `sa-${Math.random().toString(36).slice(2)}`);
    mkdirSync(dir);
    writeFileSync(join(dir, 'token'), `${CALLER_TOKEN}\n`);
    writeFileSync(join(dir, 'ca.crt'), tls.caCert);
    return dir;
  }

  test('no kube_config_file: KUBERNETES_SERVICE_HOST/PORT and the service-account mount', async () => {
    const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) };
    const a = attestor({ prod: cluster({ kube_config_file: '' }) }, { env, serviceAccountDir: saDir() });
    const r = await a.attest(await payload(), ctx);
    assert.equal(r.agentId, 'spiffe://example.org/spire/agent/k8s_psat/prod/0b9f3c2e-node-uid');
    assert.equal(api.requests.at(-1)?.caller, 'token:0');
  });

  test('outside a cluster, building succeeds and attestation explains what is missing', async () => {
    const a = attestor({ prod: cluster({ kube_config_file: undefined }) }, { env: {}, serviceAccountDir: saDir() });
    await refused(a.attest(await payload(), ctx), 'token_review_failed', /needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT/);
  });

  test('buildServerNodeAttestors passes the environment through', async () => {
    const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) };
    const m = buildServerNodeAttestors(
      [{ name: 'k8s_psat', data: reader({ clusters: { prod: { service_account_allow_list: ['spire:spire-agent'] } } }) }],
      { env, serviceAccountDir: saDir() },
    );
    const a = m.get('k8s_psat');
    assert.ok(a);
    assert.equal((await a.attest(await payload(), ctx)).canReattest, true);
  });
});

describe('k8s_psat server: configuration', () => {
  function problems(raw: unknown, env: K8sPsatServerEnv = {}): string[] {
    try {
      K8sPsatServerAttestor.fromConfig(reader(raw), env);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.problems;
    }
    return [];
  }
  const P = 'config: plugins.NodeAttestor.k8s_psat.plugin_data';

  test('a valid config has no problems and applies defaults', () => {
    assert.deepEqual(problems({ clusters: { prod: { service_account_allow_list: ['spire:spire-agent'] } } }), []);
  });

  test('every problem is reported with its full key path', () => {
    const missing = join(root, 'does-not-exist');
    assert.deepEqual(
      problems({
        clusters: {
          'bad/name': { service_account_allow_list: ['spire:agent'] },
          a: { service_account_allow_list: [] },
          b: { service_account_allow_list: ['no-colon', 'a:b:c', 7], audience: [''], allowed_pod_label_keys: [''] },
          c: { service_account_allow_list: ['x:y'], kube_config_file: missing, audiance: ['x'] },
          d: { service_account_whitelist: ['x:y'] },
        },
        bogus: true,
      }),
      [
        `${P}.bogus: unknown key`,
        `${P}.clusters.c.audiance: unknown key (did you mean "audience"?)`,
        `${P}.clusters.bad/name: cluster names become one SPIFFE ID path segment: use only a-z A-Z 0-9 . - _ (at most 253 characters, not "." or "..")`,
        `${P}.clusters.a.service_account_allow_list: at least one service account ("namespace:name") must be allowed`,
        `${P}.clusters.b.service_account_allow_list[2]: expected a string, got 7`,
        `${P}.clusters.b.service_account_allow_list[0]: expected "namespace:serviceaccount", got "no-colon"`,
        `${P}.clusters.b.service_account_allow_list[1]: expected "namespace:serviceaccount", got "a:b:c"`,
        `${P}.clusters.b.audience[0]: must not be empty`,
        `${P}.clusters.b.allowed_pod_label_keys[0]: must not be empty`,
        `${P}.clusters.c.kube_config_file: kubeconfig: cannot read ${missing}: file not found`,
        `${P}.clusters.d.service_account_whitelist: was renamed service_account_allow_list (as in SPIRE)`,
        `${P}.clusters.d.service_account_allow_list: at least one service account ("namespace:name") must be allowed`,
      ],
    );
  });

  test('no clusters, or clusters of the wrong type', () => {
    assert.deepEqual(problems({}), [`${P}.clusters: at least one cluster must be configured (without one every k8s_psat attestation is refused)`]);
    assert.deepEqual(problems({ clusters: {} }), [`${P}.clusters: at least one cluster must be configured (without one every k8s_psat attestation is refused)`]);
    assert.deepEqual(problems({ clusters: { prod: 'x' } }), [
      `${P}.clusters.prod: expected a map of settings, got "x"`,
      `${P}.clusters.prod.service_account_allow_list: at least one service account ("namespace:name") must be allowed`,
    ]);
  });

  test('a kubeconfig that uses an unsupported credential plugin is reported at configuration time', () => {
    const path = join(root, 'kubeconfig-exec');
    writeFileSync(path, stringify({
      'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: 'https://k.example:6443' } }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
      users: [{ name: 'u', user: { exec: { command: 'aws-iam-authenticator' } } }],
    }));
    const ps = problems({ clusters: { eks: { service_account_allow_list: ['spire:agent'], kube_config_file: path } } });
    assert.equal(ps.length, 1);
    assert.match(ps[0]!, /^config: plugins\.NodeAttestor\.k8s_psat\.plugin_data\.clusters\.eks\.kube_config_file: kubeconfig .*kubeconfig-exec: users\[name="u"\]\.user\.exec: exec credential plugins are not supported/);
  });
});

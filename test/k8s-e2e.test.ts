// End to end on "Kubernetes" without a cluster: a real spindle-server process attests a real
// spindle-agent process with k8s_psat against an in-process fake API server (TokenReview, Pod,
// Node over HTTPS), and the agent identifies this test process as a pod container through a
// fixture /proc/<pid>/cgroup and an in-process fake kubelet, serving it an SVID chosen by k8s
// selectors. Re-attestation (half-life, and after eviction) and node-label changes are covered.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attestAgent, connectAgentApi, syncAuthorized } from '../agent/client/serverclient.js';
import { encodePsatPayload } from '../attestors/node/k8s_psat/payload.js';
import type { SyncAuthorizedResponse } from '../proto/gen/spindle/agent/v1/agent.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../spiffe/keys.js';
import { pemToCertificates, privateKeyToPem } from '../spiffe/pem.js';
import { createCsr } from '../spiffe/x509/index.js';
import { createWorkloadApiClient, type WorkloadApiClient, type X509Context } from '../spiffe/workloadapi/index.js';
import { serverCliAsync, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { startServerProcess, type ServerProcess } from './support/serverproc.js';
import { makeKubeTls, type KubeTls } from './support/kubetls.js';
import { startFakeApiServer, type FakeApiServer } from './support/fakekube/apiserver.js';
import { pod, startFakeKubelet, type FakeKubelet } from './support/fakekube/kubelet.js';

const TD = 'example.org';
const CLUSTER = 'demo';
const NODE = { name: 'localhost', uid: '5d0f1d43-6c1a-4b8e-9a57-0c1d2e3f4a5b' };
const AGENT_POD = { namespace: 'spindle', name: 'spindle-agent-x7k2p', uid: '0b9e5a44-2f61-4d0c-8f3e-7a6b5c4d3e2f', serviceAccountName: 'spindle-agent' };
const AGENT_ID = `spiffe://${TD}/spire/agent/k8s_psat/${CLUSTER}/${NODE.uid}`;
const WORKLOAD_POD_UID = '3f6c2a1e-8b7d-4e5f-a1b2-c3d4e5f60718';
const CONTAINER_ID = 'a'.repeat(8) + 'b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8';
const CLUSTER_ALIAS = `spiffe://${TD}/k8s/${CLUSTER}`;
const ZONE_ALIAS = `spiffe://${TD}/k8s/${CLUSTER}/zone-a`;
const WEB_ID = `spiffe://${TD}/ns/prod/sa/web`;
const WEB_ZONE_ID = `spiffe://${TD}/zone-a/ns/prod/sa/web`;
const API_CALLER_TOKEN = 'server-sa-token-for-the-fake-api-server';
const KUBELET_CALLER_TOKEN = 'agent-sa-token-for-the-fake-kubelet';

let dir: string;
let tls: KubeTls;
let api: FakeApiServer;
let kubelet: FakeKubelet;
let server: ServerProcess;
let agent: AgentProcess;
const clients: WorkloadApiClient[] = [];

function ok(r: { status: number | null; stdout: string; stderr: string }, what = 'CLI'): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function client(): WorkloadApiClient {
  const c = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 100, maxMs: 500 } });
  clients.push(c);
  return c;
}

const idsOf = (ctx: X509Context): string[] => ctx.svids.map((s) => s.id.toString()).sort();

/** Polls `fn` until it returns a value other than undefined. */
async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function agentToken(opts: { serviceAccount?: string; audiences?: string[] } = {}): Promise<string> {
  return api.mintProjectedToken({
    namespace: AGENT_POD.namespace,
    serviceAccount: opts.serviceAccount ?? AGENT_POD.serviceAccountName,
    podName: AGENT_POD.name,
    podUid: AGENT_POD.uid,
    audiences: opts.audiences ?? ['spindle-server'],
  });
}

function agentConfig(tokenPath: string, procRoot: string): string {
  return JSON.stringify({
    agent: { trust_domain: TD },
    plugins: {
      NodeAttestor: { k8s_psat: { plugin_data: { cluster: CLUSTER, token_path: tokenPath } } },
      WorkloadAttestor: {
        k8s: {
          plugin_data: {
            kubelet_secure_port: kubelet.port,
            kubelet_ca_path: join(dir, 'kube-ca.crt'),
            token_path: join(dir, 'kubelet-token'),
            node_name: NODE.name,
            proc_root: procRoot,
            max_poll_attempts: 5,
            poll_retry_interval: '100ms',
          },
        },
      },
    },
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-k8s-e2e-'));
  tls = makeKubeTls();
  writeFileSync(join(dir, 'kube-ca.crt'), tls.caCert);
  writeFileSync(join(dir, 'kubelet-token'), KUBELET_CALLER_TOKEN);

  api = await startFakeApiServer({ tls, bearerTokens: [API_CALLER_TOKEN] });
  api.addNode({ name: NODE.name, uid: NODE.uid, labels: { zone: 'b', 'secret-label': 'x' }, internalIP: '10.0.0.7' });
  api.addPod({ ...AGENT_POD, nodeName: NODE.name, hostIP: '10.0.0.7', labels: { app: 'spindle-agent' } });

  kubelet = await startFakeKubelet({
    tls,
    tokens: [KUBELET_CALLER_TOKEN],
    pods: [
      pod({
        uid: WORKLOAD_POD_UID,
        name: 'web-7d4b9c-abcde',
        namespace: 'prod',
        serviceAccountName: 'web',
        nodeName: NODE.name,
        labels: { app: 'web' },
        ownerReferences: [{ kind: 'ReplicaSet', name: 'web-7d4b9c', uid: '11111111-2222-3333-4444-555555555555' }],
        containers: [{ name: 'app', image: 'registry.example/web:1.2', containerID: `containerd://${CONTAINER_ID}` }],
      }),
    ],
  });

  // The server reaches the fake API server through a kubeconfig (CA data + bearer token).
  const kubeconfig = join(dir, 'kubeconfig.yaml');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'current-context: fake',
      'clusters:',
      `- name: fake`,
      `  cluster: { server: "${api.url}", certificate-authority-data: "${tls.caCert.toString('base64')}" }`,
      'users:',
      `- name: spindle-server`,
      `  user: { token: "${API_CALLER_TOKEN}" }`,
      'contexts:',
      '- name: fake',
      '  context: { cluster: fake, user: spindle-server }',
      '',
    ].join('\n'),
  );
  const serverConfig = join(dir, 'server.json');
  writeFileSync(
    serverConfig,
    JSON.stringify({
      // Agent SVIDs live 8 s: the agent re-attests (k8s_psat renews that way) about every 4 s.
      server: { trust_domain: TD, agent_ttl: '8s' },
      plugins: {
        NodeAttestor: {
          k8s_psat: {
            plugin_data: {
              clusters: {
                [CLUSTER]: {
                  service_account_allow_list: [`${AGENT_POD.namespace}:${AGENT_POD.serviceAccountName}`],
                  kube_config_file: kubeconfig,
                  allowed_node_label_keys: ['zone'],
                  allowed_pod_label_keys: ['app'],
                },
              },
            },
          },
        },
      },
    }),
  );
  server = await startServerProcess({ extraArgs: ['-config', serverConfig] });

  // This test process is the workload: its cgroup (in the fixture /proc) puts it in the web pod.
  const procRoot = join(dir, 'proc');
  mkdirSync(join(procRoot, String(process.pid)), { recursive: true });
  writeFileSync(
    join(procRoot, String(process.pid), 'cgroup'),
    `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${WORKLOAD_POD_UID.replaceAll('-', '_')}.slice/cri-containerd-${CONTAINER_ID}.scope\n`,
  );
  writeFileSync(join(dir, 'psat'), await agentToken());

  ok(await serverCliAsync(server, ['entry', 'create', '-node', '-spiffeID', CLUSTER_ALIAS, '-selector', `k8s_psat:cluster:${CLUSTER}`]));
  ok(await serverCliAsync(server, ['entry', 'create', '-node', '-spiffeID', ZONE_ALIAS, '-selector', `k8s_psat:cluster:${CLUSTER}`, '-selector', 'k8s_psat:agent_node_label:zone:a']));
  ok(await serverCliAsync(server, ['entry', 'create', '-parentID', CLUSTER_ALIAS, '-spiffeID', WEB_ID, '-selector', 'k8s:ns:prod', '-selector', 'k8s:sa:web']));
  ok(await serverCliAsync(server, ['entry', 'create', '-parentID', CLUSTER_ALIAS, '-spiffeID', `spiffe://${TD}/ns/other/sa/web`, '-selector', 'k8s:ns:other', '-selector', 'k8s:sa:web']));
  ok(await serverCliAsync(server, ['entry', 'create', '-parentID', ZONE_ALIAS, '-spiffeID', WEB_ZONE_ID, '-selector', 'k8s:ns:prod', '-selector', 'k8s:container-name:app']));

  const configPath = join(dir, 'agent.json');
  writeFileSync(configPath, agentConfig(join(dir, 'psat'), procRoot));
  mkdirSync(join(dir, 'agent'));
  agent = await startAgentProcess({ server, dir: join(dir, 'agent'), extraArgs: ['-config', configPath] });
});

after(async () => {
  for (const c of clients) c.close();
  await agent?.stop();
  await server?.stop();
  await kubelet?.close();
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('k8s_psat + k8s workload attestation with real processes', () => {
  test('the agent attested with its projected token: SPIRE-shaped agent ID and node selectors', async () => {
    const list = ok(await serverCliAsync(server, ['agent', 'list']));
    assert.match(list, new RegExp(`SPIFFE ID\\s+:\\s+${AGENT_ID.replaceAll('.', '\\.')}`));
    const show = ok(await serverCliAsync(server, ['agent', 'show', '-spiffeID', AGENT_ID]));
    for (const sel of [
      `k8s_psat:cluster:${CLUSTER}`,
      'k8s_psat:agent_ns:spindle',
      'k8s_psat:agent_sa:spindle-agent',
      `k8s_psat:agent_pod_name:${AGENT_POD.name}`,
      `k8s_psat:agent_pod_uid:${AGENT_POD.uid}`,
      `k8s_psat:agent_node_name:${NODE.name}`,
      `k8s_psat:agent_node_uid:${NODE.uid}`,
      'k8s_psat:agent_node_ip:10.0.0.7',
      'k8s_psat:agent_node_label:zone:b',
      'k8s_psat:agent_pod_label:app:spindle-agent',
    ]) {
      assert.ok(show.includes(sel), `agent show lists ${sel}:\n${show}`);
    }
    assert.ok(!show.includes('secret-label'), 'node labels not on the allow list are not selectors');
    assert.ok(api.count('/apis/authentication.k8s.io/v1/tokenreviews') >= 1, 'the token went through TokenReview');
    assert.ok(!server.log().includes(API_CALLER_TOKEN) && !agent.log().includes(API_CALLER_TOKEN), 'no credentials in logs');
  });

  test('this process is served the SVID its pod selectors (k8s:ns + k8s:sa) are registered for, and nothing else', async () => {
    const ctx = await eventually('an X.509 context', async () => {
      const c = await client().fetchX509Context({ timeoutMs: 5_000 });
      return c.svids.length > 0 ? c : undefined;
    });
    assert.deepEqual(idsOf(ctx), [WEB_ID], 'the zone-a entry needs zone=a; ns "other" is not this pod');
    assert.ok(kubelet.requests.some((r) => r.auth === 'token'), 'the agent asked the kubelet with its token');
  });

  test('a node label change reaches the open stream once the agent re-attests at half-life', async () => {
    const c = client();
    const seen: X509Context[] = [];
    let resolveZone: (ctx: X509Context) => void;
    const zone = new Promise<X509Context>((r) => (resolveZone = r));
    const stream = c.watchX509Context(
      (ctx) => {
        seen.push(ctx);
        if (idsOf(ctx).includes(WEB_ZONE_ID)) resolveZone(ctx);
      },
      () => undefined,
    );
    try {
      await eventually('the first update', async () => (seen.length > 0 ? true : undefined));
      assert.deepEqual(idsOf(seen[0]!), [WEB_ID]);
      api.addNode({ name: NODE.name, uid: NODE.uid, labels: { zone: 'a' }, internalIP: '10.0.0.7' });
      const timeout = setTimeout(() => resolveZone(seen.at(-1)!), 20_000);
      const ctx = await zone;
      clearTimeout(timeout);
      assert.deepEqual(idsOf(ctx), [WEB_ID, WEB_ZONE_ID].sort(), 'zone=a puts the agent in the zone alias');
      const show = ok(await serverCliAsync(server, ['agent', 'show', '-spiffeID', AGENT_ID]));
      assert.ok(show.includes('k8s_psat:agent_node_label:zone:a') && !show.includes('zone:b'), show);
    } finally {
      stream.close();
    }
  });

  test('an evicted agent attests again by itself and keeps serving', async () => {
    const before = api.count('/apis/authentication.k8s.io/v1/tokenreviews');
    ok(await serverCliAsync(server, ['agent', 'evict', '-spiffeID', AGENT_ID]));
    await eventually('the agent back in the agent list', async () => {
      const out = (await serverCliAsync(server, ['agent', 'list'])).stdout;
      return out.includes(AGENT_ID) && api.count('/apis/authentication.k8s.io/v1/tokenreviews') > before ? true : undefined;
    });
    // The sync stream is live again: a new entry reaches this workload.
    const newId = `spiffe://${TD}/ns/prod/sa/web/after-evict`;
    ok(await serverCliAsync(server, ['entry', 'create', '-parentID', CLUSTER_ALIAS, '-spiffeID', newId, '-selector', 'k8s:pod-label:app:web']));
    const ctx = await eventually('the new entry', async () => {
      const x = await client().fetchX509Context({ timeoutMs: 5_000 });
      return idsOf(x).includes(newId) ? x : undefined;
    });
    assert.ok(idsOf(ctx).includes(WEB_ID));
  });

  test('an agent whose service account is not on the allow list is refused and says why', async () => {
    const tokenPath = join(dir, 'psat-wrong-sa');
    writeFileSync(tokenPath, await agentToken({ serviceAccount: 'default' }));
    const configPath = join(dir, 'agent-wrong-sa.json');
    writeFileSync(configPath, agentConfig(tokenPath, join(dir, 'proc')));
    mkdirSync(join(dir, 'agent-wrong-sa'));
    await assert.rejects(
      startAgentProcess({ server, dir: join(dir, 'agent-wrong-sa'), extraArgs: ['-config', configPath], readyTimeoutMs: 15_000 }),
      (err: Error) =>
        /Error: the server at 127\.0\.0\.1:\d+ refused this agent: attestation failed: "spindle:default" is not an allowed service account \(cluster "demo"\)/.test(err.message) &&
        !/PERMISSION_DENIED/.test(err.message),
    );
  });
});

describe('re-attestation over the agent API', () => {
  test('a node that re-attests with new labels gets the alias difference pushed on its open sync stream', async () => {
    const node2 = { name: 'node-2', uid: '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d' };
    const pod2 = { namespace: 'spindle', name: 'spindle-agent-n2', uid: '7c1d2e3f-4a5b-4c6d-9e7f-8a9b0c1d2e3f', serviceAccountName: 'spindle-agent' };
    api.addNode({ name: node2.name, uid: node2.uid, labels: { zone: 'b' } });
    api.addPod({ ...pod2, nodeName: node2.name });
    const token = await api.mintProjectedToken({ namespace: pod2.namespace, serviceAccount: pod2.serviceAccountName, podName: pod2.name, podUid: pod2.uid });
    const bundle = pemToCertificates(ok(await serverCliAsync(server, ['bundle', 'show'])));
    const address = { host: '127.0.0.1', port: server.port };
    const td = parseTrustDomain(TD);
    const attestOnce = async () => {
      const keys = await generateKeyPair();
      const boot = connectAgentApi({ address, trustDomain: td, bundle });
      try {
        const res = await attestAgent(boot.client, { type: 'k8s_psat', payload: encodePsatPayload({ cluster: CLUSTER, token }), csr: createCsr(keys.privateKey) });
        return { res, keys };
      } finally {
        boot.close();
      }
    };
    const first = await attestOnce();
    assert.equal(first.res.svid.spiffeId, `spiffe://${TD}/spire/agent/k8s_psat/${CLUSTER}/${node2.uid}`);
    assert.equal(first.res.reattestable, true);
    const conn = connectAgentApi({ address, trustDomain: td, bundle, svid: { chain: first.res.svid.certChain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(first.keys.privateKey)) } });
    const messages: SyncAuthorizedResponse[] = [];
    let wake: () => void = () => undefined;
    const stream = syncAuthorized(conn.client, {});
    stream.on('data', (m: SyncAuthorizedResponse) => {
      messages.push(m);
      wake();
    });
    stream.on('error', () => undefined);
    const waitFor = (pred: (m: SyncAuthorizedResponse) => boolean, what: string) =>
      new Promise<SyncAuthorizedResponse>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no sync message with ${what}`)), 10_000);
        const check = (): void => {
          const m = messages.find(pred);
          if (m) {
            clearTimeout(t);
            resolve(m);
          }
        };
        wake = check;
        check();
      });
    try {
      const snapshot = await waitFor((m) => m.snapshot, 'the snapshot');
      const ids = snapshot.entries.map((e) => e.spiffeId);
      assert.ok(ids.includes(WEB_ID) && !ids.includes(WEB_ZONE_ID), `zone=b: only the cluster alias's entries (${ids.join(', ')})`);

      api.addNode({ name: node2.name, uid: node2.uid, labels: { zone: 'a' } });
      const again = await attestOnce();
      assert.equal(again.res.svid.spiffeId, first.res.svid.spiffeId, 'same node, same agent ID');
      const pushed = await waitFor((m) => !m.snapshot && m.entries.some((e) => e.spiffeId === WEB_ZONE_ID), 'the zone-a entries');
      assert.deepEqual(pushed.removedEntryIds, []);
    } finally {
      stream.cancel();
      conn.close();
    }
  });
});

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { ConfigError, ConfigReader } from '../../../common/configfile.js';
import { compareSelectors, type Selector } from '../../../common/selector.js';
import { makeKubeTls, type KubeTls } from '../../../test/support/kubetls.js';
import { pod, startFakeKubelet, type FakeKubelet, type FakePodSpec } from '../../../test/support/fakekube/kubelet.js';
import { buildWorkloadAttestors } from '../registry.js';
import { WorkloadAttestationError } from '../types.js';
import { K8sWorkloadAttestor, readK8sConfig } from './k8s.js';

const UID = '2c48913c-b29f-11e7-9350-020968147796';
const UID2 = 'daa5c7ee-3484-4533-af39-3591564fd03e';
const STATIC_UID = '6f4c0b3d9e8a7b6c5d4e3f2a1b0c9d8e';
const CID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const CID2 = '09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6';
const CID3 = 'aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934';
const SHA = (c: string): string => c.repeat(64);
const PLUGIN_DATA = 'plugins.WorkloadAttestor.k8s.plugin_data';

const k8s = (value: string): Selector => ({ type: 'k8s', value });
const values = (sels: Selector[]): string[] => sels.map((s) => s.value);

/** The web pod: two containers, one init container, labels and an owner. */
function webPod(over: Partial<FakePodSpec> = {}): object {
  return pod({
    uid: UID,
    name: 'web-7d9f-abcde',
    namespace: 'prod',
    serviceAccountName: 'web',
    nodeName: 'node-1',
    labels: { app: 'web', 'app.kubernetes.io/part-of': 'shop' },
    ownerReferences: [{ kind: 'ReplicaSet', name: 'web-7d9f', uid: 'c0ffee00-0000-4000-8000-000000000001' }],
    containers: [
      { name: 'web', image: 'ghcr.io/acme/web:1.2', imageID: `ghcr.io/acme/web@sha256:${SHA('a')}`, containerID: `containerd://${CID}` },
      { name: 'envoy', image: 'envoyproxy/envoy:v1.29.1', imageID: `docker.io/envoyproxy/envoy@sha256:${SHA('b')}`, containerID: `containerd://${CID2}` },
    ],
    initContainers: [{ name: 'init-db', image: 'busybox:1.36', imageID: `docker.io/library/busybox@sha256:${SHA('c')}`, containerID: `containerd://${CID3}` }],
    ...over,
  });
}

const WEB_POD_SELECTORS = [
  'ns:prod',
  'sa:web',
  'node-name:node-1',
  `pod-uid:${UID}`,
  'pod-name:web-7d9f-abcde',
  'pod-label:app:web',
  'pod-label:app.kubernetes.io/part-of:shop',
  'pod-owner:ReplicaSet:web-7d9f',
  'pod-owner-uid:ReplicaSet:c0ffee00-0000-4000-8000-000000000001',
  'pod-image-count:2',
  'pod-image:ghcr.io/acme/web:1.2',
  `pod-image:ghcr.io/acme/web@sha256:${SHA('a')}`,
  'pod-image:envoyproxy/envoy:v1.29.1',
  `pod-image:docker.io/envoyproxy/envoy@sha256:${SHA('b')}`,
  'pod-init-image-count:1',
  'pod-init-image:busybox:1.36',
  `pod-init-image:docker.io/library/busybox@sha256:${SHA('c')}`,
];
const sorted = (vals: string[]): Selector[] => vals.map(k8s).sort(compareSelectors);

/** Virtual time: sleeping advances the clock at once and is recorded. */
function fakeTime(): { now: () => number; sleep: (ms: number, signal?: AbortSignal) => Promise<void>; sleeps: number[] } {
  let t = 1_000;
  const sleeps: number[] = [];
  return {
    now: () => t,
    sleep: async (ms, signal) => {
      signal?.throwIfAborted();
      sleeps.push(ms);
      t += ms;
    },
    sleeps,
  };
}

describe('k8s workload attestor', () => {
  let dir: string;
  let tls: KubeTls;
  let otherTls: KubeTls;
  let kubelet: FakeKubelet;
  let procRoot: string;
  let nextPid = 100;
  const files = { ca: '', otherCa: '', token: '', cert: '', key: '' };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-k8s-attestor-'));
    procRoot = join(dir, 'proc');
    tls = makeKubeTls('spire-agent');
    otherTls = makeKubeTls();
    const put = (name: string, data: Buffer | string): string => {
      const p = join(dir, name);
      writeFileSync(p, data);
      return p;
    };
    files.ca = put('ca.crt', tls.caCert);
    files.otherCa = put('other-ca.crt', otherTls.caCert);
    files.token = put('token', 'sa-token-1\n');
    files.cert = put('client.crt', tls.clientCert);
    files.key = put('client.key', tls.clientKey);
    kubelet = await startFakeKubelet({ tls, tokens: ['sa-token-1'] });
  });
  after(async () => {
    await kubelet.close();
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    kubelet.setPods([webPod()]);
    kubelet.setTokens(['sa-token-1']);
    kubelet.failWith(undefined);
    writeFileSync(files.token, 'sa-token-1\n');
  });

  /** A fixture /proc/<pid> with the given cgroup (and optionally mountinfo) text; returns the pid. */
  function proc(cgroup: string, mountinfo?: string): number {
    const pid = nextPid++;
    const d = join(procRoot, String(pid));
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'cgroup'), cgroup);
    writeFileSync(join(d, 'mountinfo'), mountinfo ?? '22 1 0:21 / / rw,relatime - overlay overlay rw\n');
    return pid;
  }
  const peer = (pid: number): { pid: number; uid: number; gid: number; groups: number[] } => ({ pid, uid: 1000, gid: 1000, groups: [] });

  function attestor(data: Record<string, unknown> = {}, time = fakeTime(), env: Record<string, string> = {}): K8sWorkloadAttestor {
    return K8sWorkloadAttestor.fromConfig(
      new ConfigReader({ kubelet_secure_port: kubelet.port, kubelet_ca_path: files.ca, token_path: files.token, proc_root: procRoot, ...data }, PLUGIN_DATA),
      { env, now: time.now, sleep: time.sleep },
    );
  }
  const served = (fn: () => Promise<unknown>): Promise<number> => {
    const before = kubelet.podListsServed;
    return fn().then(
      () => kubelet.podListsServed - before,
      () => kubelet.podListsServed - before,
    );
  };

  describe('selectors', () => {
    test('containerd pod (cgroup v2, systemd): every SPIRE selector, sorted', async () => {
      const pid = proc(`0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replaceAll('-', '_')}.slice/cri-containerd-${CID}.scope\n`);
      const got = await attestor().attest(peer(pid));
      assert.deepEqual(got, sorted([...WEB_POD_SELECTORS, 'container-name:web', 'container-image:ghcr.io/acme/web:1.2', `container-image:ghcr.io/acme/web@sha256:${SHA('a')}`]));
    });

    test('an init container is found too', async () => {
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID3}\n`);
      const got = values(await attestor().attest(peer(pid)));
      assert.ok(got.includes('container-name:init-db'));
      assert.ok(got.includes('container-image:busybox:1.36'));
      assert.ok(!got.includes('container-name:web'));
    });

    test('CRI-O pod (cgroup v1, systemd driver, cri-o:// IDs)', async () => {
      kubelet.setPods([pod({ uid: UID, name: 'api', namespace: 'ns1', containers: [{ name: 'api', image: 'quay.io/x/api:2', containerID: `cri-o://${CID}` }] })]);
      const path = `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID.replaceAll('-', '_')}.slice/crio-${CID}.scope`;
      const pid = proc(`2:memory:${path}\n1:name=systemd:${path}\n0::/\n`);
      const got = values(await attestor().attest(peer(pid)));
      assert.ok(got.includes('ns:ns1') && got.includes('container-name:api') && got.includes('container-image:quay.io/x/api:2'));
    });

    test('docker pod (cgroup v1, cgroupfs driver, docker:// IDs)', async () => {
      kubelet.setPods([pod({ uid: UID, name: 'legacy', containers: [{ name: 'app', image: 'app:1', containerID: `docker://${CID}` }] })]);
      const pid = proc(`4:pids:/kubepods/burstable/pod${UID}/${CID}\n3:memory:/kubepods/burstable/pod${UID}/${CID}\n`);
      const got = values(await attestor().attest(peer(pid)));
      assert.ok(got.includes('pod-name:legacy') && got.includes('container-name:app'));
    });

    test('CRI-O without a pod UID in the cgroup (KubeEdge): the container is searched in every pod', async () => {
      kubelet.setPods([
        pod({ uid: UID2, name: 'other', containers: [{ name: 'x', image: 'x:1', containerID: `cri-o://${CID2}` }] }),
        pod({ uid: UID, name: 'edge', containers: [{ name: 'e', image: 'e:1', containerID: `cri-o://${CID}` }] }),
      ]);
      const pid = proc(`0::/../crio-${CID}.scope\n`);
      const got = values(await attestor().attest(peer(pid)));
      assert.ok(got.includes('pod-name:edge') && got.includes(`pod-uid:${UID}`) && got.includes('container-name:e'));
    });

    test('two pods listing the same container is an error', async () => {
      kubelet.setPods([
        pod({ uid: UID2, name: 'a', containers: [{ name: 'x', image: 'x:1', containerID: `cri-o://${CID}` }] }),
        pod({ uid: UID, name: 'b', containers: [{ name: 'x', image: 'x:1', containerID: `cri-o://${CID}` }] }),
      ]);
      const pid = proc(`0::/../crio-${CID}.scope\n`);
      await assert.rejects(attestor().attest(peer(pid)), (e: unknown) => e instanceof WorkloadAttestationError && /two pods list container/.test(e.message));
    });

    test('static pod (32-hex UID, mirror annotations): nothing special, as in SPIRE', async () => {
      kubelet.setPods([
        pod({
          uid: STATIC_UID,
          name: 'kube-apiserver-node-1',
          namespace: 'kube-system',
          annotations: { 'kubernetes.io/config.source': 'file', 'kubernetes.io/config.mirror': STATIC_UID, 'kubernetes.io/config.hash': STATIC_UID },
          ownerReferences: [{ kind: 'Node', name: 'node-1', uid: 'node-uid', apiVersion: 'v1' }],
          containers: [{ name: 'kube-apiserver', image: 'registry.k8s.io/kube-apiserver:v1.30.0', containerID: `containerd://${CID}` }],
        }),
      ]);
      const pid = proc(`0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${STATIC_UID}.slice/cri-containerd-${CID}.scope\n`);
      const got = values(await attestor().attest(peer(pid)));
      assert.ok(got.includes(`pod-uid:${STATIC_UID}`) && got.includes('pod-owner:Node:node-1') && got.includes('container-name:kube-apiserver'));
    });

    test('disable_container_selectors: pod selectors only, even before the container is in the status', async () => {
      kubelet.setPods([webPod({ containers: [{ name: 'web', image: 'ghcr.io/acme/web:1.2' }, { name: 'envoy', image: 'envoyproxy/envoy:v1.29.1' }], initContainers: [] })]);
      const time = fakeTime();
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);
      const got = values(await attestor({ disable_container_selectors: true }, time).attest(peer(pid)));
      assert.ok(got.includes(`pod-uid:${UID}`) && got.includes('ns:prod'));
      assert.ok(!got.some((v) => v.startsWith('container-')));
      assert.ok(got.includes('pod-image:'), 'SPIRE forms pod-image from imageID too, empty while not pulled');
      assert.deepEqual(time.sleeps, []);
    });

    test('through the registry, with proc root and environment injected', async () => {
      const pid = proc(`0::/kubepods/besteffort/pod${UID}/${CID2}\n`);
      const time = fakeTime();
      const [a] = buildWorkloadAttestors(
        [{ name: 'k8s', data: new ConfigReader({ kubelet_secure_port: kubelet.port, kubelet_ca_path: files.ca, token_path: files.token }, PLUGIN_DATA) }],
        { procRoot, env: {}, now: time.now, sleep: time.sleep },
      );
      assert.equal(a!.name, 'k8s');
      assert.ok(values(await a!.attest(peer(pid))).includes('container-name:envoy'));
    });
  });

  describe('processes that are not Kubernetes workloads', () => {
    test('a host process gets no k8s selectors and no error; the kubelet is not asked', async () => {
      const pid = proc('0::/user.slice/user-1000.slice/session-2.scope\n');
      assert.equal(await served(async () => assert.deepEqual(await attestor().attest(peer(pid)), [])), 0);
    });

    test('a plain docker container is not a pod', async () => {
      const pid = proc(`0::/system.slice/docker-${CID}.scope\n`);
      assert.deepEqual(await attestor().attest(peer(pid)), []);
    });

    test('forgery: a mountinfo naming a pod does not make the process that pod', async () => {
      const forged = `1500 1400 0:25 /kubepods/burstable/pod${UID}/${CID} /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n` +
        `1501 1400 253:1 /var/lib/kubelet/pods/${UID}/etc-hosts /etc/hosts rw - ext4 /dev/vda1 rw\n`;
      const pid = proc('0::/system.slice/evil.service\n', forged);
      assert.equal(await served(async () => assert.deepEqual(await attestor().attest(peer(pid)), [])), 0);
    });

    test('forgery: two container IDs in one cgroup file is an error', async () => {
      const pid = proc(`2:memory:/kubepods/burstable/pod${UID}/${CID}\n1:cpu:/kubepods/burstable/pod${UID}/${CID2}\n`);
      await assert.rejects(attestor().attest(peer(pid)), (e: unknown) => e instanceof WorkloadAttestationError && /more than one container ID/.test(e.message) && e.message.includes(`process ${pid}`));
    });

    test('forgery: two pod UIDs in one cgroup file is an error', async () => {
      const pid = proc(`2:memory:/kubepods/burstable/pod${UID}/${CID}\n1:cpu:/kubepods/burstable/pod${UID2}/${CID}\n`);
      await assert.rejects(attestor().attest(peer(pid)), (e: unknown) => e instanceof WorkloadAttestationError && /more than one pod UID/.test(e.message));
    });

    test('a process that is gone is an attestation error', async () => {
      await assert.rejects(attestor().attest(peer(999_999)), (e: unknown) => e instanceof WorkloadAttestationError && /process 999999 is gone/.test(e.message));
    });

    test('an invalid pid is an attestation error', async () => {
      await assert.rejects(attestor().attest(peer(0)), WorkloadAttestationError);
    });
  });

  describe('polling the kubelet', () => {
    test('pod not found after the retries: max_poll_attempts lists, poll_retry_interval apart', async () => {
      kubelet.setPods([]);
      const time = fakeTime();
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);
      const a = attestor({ max_poll_attempts: 3, poll_retry_interval: '250ms' }, time);
      const n = await served(() =>
        assert.rejects(a.attest(peer(pid)), (e: unknown) =>
          e instanceof WorkloadAttestationError && e.message.includes(`container ${CID} of pod ${UID}`) && /after 3 attempt\(s\) 250ms apart/.test(e.message)),
      );
      assert.equal(n, 3);
      assert.deepEqual(time.sleeps, [250, 250]);
    });

    test('container not yet in the pod status, then appearing: a retry succeeds', async () => {
      const pending = webPod({ containers: [{ name: 'web', image: 'ghcr.io/acme/web:1.2' }, { name: 'envoy', image: 'envoyproxy/envoy:v1.29.1' }] });
      kubelet.setPods((n) => (n < 3 ? [pending] : [webPod()]));
      const time = fakeTime();
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);
      let got: Selector[] = [];
      const n = await served(async () => {
        got = await attestor({}, time).attest(peer(pid));
      });
      assert.ok(values(got).includes('container-name:web'));
      assert.equal(n, 3);
      assert.deepEqual(time.sleeps, [500, 500], 'default poll_retry_interval is 500ms');
    });

    test('a pod that appears after two lists is found', async () => {
      kubelet.setPods([]);
      kubelet.addPodAfter(2, webPod());
      const time = fakeTime();
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);
      assert.ok(values(await attestor({}, time).attest(peer(pid))).includes(`pod-uid:${UID}`));
      assert.equal(time.sleeps.length, 2);
    });

    test('concurrent attestations share one kubelet request', async () => {
      const pids = [CID, CID2, CID3].map((c) => proc(`0::/kubepods/burstable/pod${UID}/${c}\n`));
      const a = attestor();
      const n = await served(async () => {
        const results = await Promise.all(pids.map((p) => a.attest(peer(p))));
        assert.deepEqual(results.map((r) => values(r).find((v) => v.startsWith('container-name:'))), ['container-name:web', 'container-name:envoy', 'container-name:init-db']);
      });
      assert.equal(n, 1);
    });

    test('the abort signal ends the wait between polls', async () => {
      kubelet.setPods([]);
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);
      const ac = new AbortController();
      let sleeping!: () => void;
      const asleep = new Promise<void>((r) => (sleeping = r));
      const a = K8sWorkloadAttestor.fromConfig(
        new ConfigReader({ kubelet_secure_port: kubelet.port, kubelet_ca_path: files.ca, token_path: files.token, proc_root: procRoot }, PLUGIN_DATA),
        {
          sleep: (_ms, signal) =>
            new Promise<void>((_resolve, reject) => {
              signal?.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
              sleeping();
            }),
        },
      );
      const p = a.attest(peer(pid), ac.signal);
      await Promise.race([asleep, p.then(() => assert.fail('attestation ended before waiting'))]);
      ac.abort(new Error('client went away'));
      await assert.rejects(p, /client went away/);
    });

    test('the default timer honours the abort signal too', async () => {
      kubelet.setPods([]);
      const pid = proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);
      const a = K8sWorkloadAttestor.fromConfig(
        new ConfigReader({ kubelet_secure_port: kubelet.port, kubelet_ca_path: files.ca, token_path: files.token, proc_root: procRoot, poll_retry_interval: '1h' }, PLUGIN_DATA),
      );
      const started = Date.now();
      await assert.rejects(a.attest(peer(pid), AbortSignal.timeout(50)), (e: unknown) => (e as Error).name === 'TimeoutError');
      assert.ok(Date.now() - started < 5_000);
    });
  });

  describe('kubelet connection and authentication', () => {
    const webPid = (): number => proc(`0::/kubepods/burstable/pod${UID}/${CID}\n`);

    test('bearer token from token_path, re-read on every request', async () => {
      const a = attestor();
      await a.attest(peer(webPid()));
      assert.deepEqual(kubelet.requests.at(-1), { path: '/pods', auth: 'token' });
      writeFileSync(files.token, 'sa-token-2\n');
      kubelet.setTokens(['sa-token-2']);
      const time = fakeTime();
      assert.ok(values(await attestor({}, time).attest(peer(webPid()))).includes('container-name:web'));
    });

    test('client certificate from certificate_path/private_key_path, no token', async () => {
      kubelet.setTokens([]);
      const got = await attestor({ token_path: undefined, certificate_path: files.cert, private_key_path: files.key }).attest(peer(webPid()));
      assert.ok(values(got).includes('container-name:web'));
      assert.deepEqual(kubelet.requests.at(-1), { path: '/pods', auth: 'client-cert', clientCn: 'spire-agent' });
    });

    test('kubelet 401: attestation fails at once (no retries)', async () => {
      kubelet.setTokens(['someone-else']);
      const time = fakeTime();
      const before = kubelet.requests.length;
      await assert.rejects(attestor({}, time).attest(peer(webPid())), (e: unknown) =>
        e instanceof WorkloadAttestationError && /HTTP 401/.test(e.message) && !e.message.includes('sa-token-1'));
      assert.equal(kubelet.requests.length - before, 1);
      assert.deepEqual(time.sleeps, []);
    });

    test('kubelet TLS failure (wrong CA): attestation fails at once', async () => {
      const time = fakeTime();
      const before = kubelet.requests.length;
      await assert.rejects(attestor({ kubelet_ca_path: files.otherCa }, time).attest(peer(webPid())), (e: unknown) =>
        e instanceof WorkloadAttestationError && /certificate/.test(e.message) && e.message.includes(`https://127.0.0.1:${kubelet.port}/pods`));
      assert.equal(kubelet.requests.length, before);
      assert.deepEqual(time.sleeps, []);
    });

    test('kubelet 500: attestation fails with the status', async () => {
      kubelet.failWith(500);
      await assert.rejects(attestor().attest(peer(webPid())), /HTTP 500: fake kubelet failing with 500/);
    });

    test('skip_kubelet_verification: the kubelet certificate is not checked', async () => {
      const got = await attestor({ kubelet_ca_path: undefined, skip_kubelet_verification: true }).attest(peer(webPid()));
      assert.ok(values(got).includes('container-name:web'));
    });

    test('use_anonymous_authentication sends no credentials', async () => {
      const anon = await startFakeKubelet({ tls, allowAnonymous: true, pods: [webPod()] });
      try {
        const got = await attestor({ token_path: undefined, use_anonymous_authentication: true, kubelet_secure_port: anon.port }).attest(peer(webPid()));
        assert.ok(values(got).includes('container-name:web'));
        assert.deepEqual(anon.requests, [{ path: '/pods', auth: 'anonymous' }]);
      } finally {
        await anon.close();
      }
    });

    test('node name from the env var of node_name_env: the kubelet is reached by that name, verified', async () => {
      const got = await attestor({}, fakeTime(), { MY_NODE_NAME: 'localhost' }).attest(peer(webPid()));
      assert.ok(values(got).includes('container-name:web'));
    });

    test('credentials are reloaded after reload_interval; a failed reload keeps the old ones', async () => {
      const caFile = join(dir, 'rotating-ca.crt');
      writeFileSync(caFile, tls.caCert);
      const time = fakeTime();
      const a = attestor({ kubelet_ca_path: caFile, reload_interval: '1m' }, time);
      await a.attest(peer(webPid()));
      unlinkSync(caFile);
      await time.sleep(61_000);
      assert.ok(values(await a.attest(peer(webPid()))).includes('container-name:web'), 'missing file: previous CA kept');
      writeFileSync(caFile, otherTls.caCert);
      await time.sleep(30_000);
      assert.ok(values(await a.attest(peer(webPid()))).includes('container-name:web'), 'not yet reloaded');
      await time.sleep(31_000);
      await assert.rejects(a.attest(peer(webPid())), /certificate/, 'the new (wrong) CA is in use');
    });
  });
});

describe('k8s attestor configuration', () => {
  let dir: string;
  const f = { ca: '', token: '', cert: '', key: '', junk: '' };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-k8s-config-'));
    const tls = makeKubeTls();
    const other = makeKubeTls();
    f.ca = join(dir, 'ca.crt');
    f.token = join(dir, 'token');
    f.cert = join(dir, 'c.crt');
    f.key = join(dir, 'c.key');
    f.junk = join(dir, 'junk');
    writeFileSync(f.ca, tls.caCert);
    writeFileSync(f.token, 't');
    writeFileSync(f.cert, tls.clientCert);
    writeFileSync(f.key, other.clientKey); // does not match the certificate
    writeFileSync(f.junk, 'not a certificate');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const problems = (data: Record<string, unknown>, env: Record<string, string> = {}): string[] => {
    try {
      K8sWorkloadAttestor.fromConfig(new ConfigReader(data, PLUGIN_DATA), { env });
      return [];
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.problems;
    }
  };

  test('SPIRE defaults', () => {
    const cfg = readK8sConfig(new ConfigReader({ kubelet_ca_path: f.ca, token_path: f.token }), {});
    assert.equal(cfg.port, 10250);
    assert.equal(cfg.maxPollAttempts, 60);
    assert.equal(cfg.pollRetryIntervalMs, 500);
    assert.equal(cfg.reloadIntervalMs, 60_000);
    assert.equal(cfg.nodeName, '');
    assert.equal(cfg.disableContainerSelectors, false);
    assert.equal(cfg.procRoot, undefined);
  });

  test('the default CA and token paths are the service account ones', () => {
    const p = problems({});
    assert.ok(p.some((l) => l.startsWith(`config: ${PLUGIN_DATA}.kubelet_ca_path: cannot read the kubelet CA "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"`)), p.join('\n'));
    assert.ok(p.some((l) => l.startsWith(`config: ${PLUGIN_DATA}.token_path: cannot read the service account token "/var/run/secrets/kubernetes.io/serviceaccount/token"`)), p.join('\n'));
  });

  test('node name: node_name, else the node_name_env variable (default MY_NODE_NAME)', () => {
    const base = { kubelet_ca_path: f.ca, token_path: f.token };
    assert.equal(readK8sConfig(new ConfigReader(base), { MY_NODE_NAME: 'node-a' }).nodeName, 'node-a');
    assert.equal(readK8sConfig(new ConfigReader({ ...base, node_name_env: 'NODE' }), { MY_NODE_NAME: 'node-a', NODE: 'node-b' }).nodeName, 'node-b');
    assert.equal(readK8sConfig(new ConfigReader({ ...base, node_name_env: 'NODE' }), { MY_NODE_NAME: 'node-a' }).nodeName, '');
    assert.equal(readK8sConfig(new ConfigReader({ ...base, node_name: 'node-c' }), { MY_NODE_NAME: 'node-a' }).nodeName, 'node-c');
  });

  test('durations: Go syntax with sub-second values; zero or unset means the default', () => {
    const read = (v: unknown): number => readK8sConfig(new ConfigReader({ kubelet_ca_path: f.ca, token_path: f.token, poll_retry_interval: v }), {}).pollRetryIntervalMs;
    assert.equal(read('250ms'), 250);
    assert.equal(read('1.5s'), 1500);
    assert.equal(read('1m30s'), 90_000);
    assert.equal(read(2), 2000);
    assert.equal(read('0s'), 500);
    assert.equal(readK8sConfig(new ConfigReader({ kubelet_ca_path: f.ca, token_path: f.token, max_poll_attempts: 0 }), {}).maxPollAttempts, 60);
    assert.deepEqual(problems({ kubelet_ca_path: f.ca, token_path: f.token, poll_retry_interval: 'fast' }), [
      `config: ${PLUGIN_DATA}.poll_retry_interval: expected a duration such as "500ms", "1s" or "1m", got "fast"`,
    ]);
    assert.deepEqual(problems({ kubelet_ca_path: f.ca, token_path: f.token, reload_interval: '25h' }), [`config: ${PLUGIN_DATA}.reload_interval: must be at most 24h, got "25h"`]);
    assert.equal(problems({ kubelet_ca_path: f.ca, token_path: f.token, poll_retry_interval: '-1s' }).length, 1);
  });

  test('the read-only port is rejected as not supported', () => {
    const p = problems({ kubelet_ca_path: f.ca, token_path: f.token, kubelet_read_only_port: 10255 });
    assert.equal(p.length, 1);
    assert.match(p[0]!, /kubelet_read_only_port: the kubelet read-only port is not supported/);
  });

  test('client certificate and key go together, and must match', () => {
    assert.deepEqual(problems({ kubelet_ca_path: f.ca, certificate_path: f.cert }), [`config: ${PLUGIN_DATA}.private_key_path: is required with certificate_path`]);
    assert.deepEqual(problems({ kubelet_ca_path: f.ca, private_key_path: f.key }), [`config: ${PLUGIN_DATA}.certificate_path: is required with private_key_path`]);
    const p = problems({ kubelet_ca_path: f.ca, certificate_path: f.cert, private_key_path: f.key });
    assert.equal(p.length, 1);
    assert.match(p[0]!, /certificate_path: .* and the private key are not a usable pair/);
  });

  test('contradictions are errors', () => {
    assert.equal(problems({ kubelet_ca_path: f.ca, use_anonymous_authentication: true, token_path: f.token }).length, 1);
    assert.equal(problems({ skip_kubelet_verification: true, kubelet_ca_path: f.ca, token_path: f.token }).length, 1);
  });

  test('a CA file without a certificate names the key', () => {
    const p = problems({ kubelet_ca_path: f.junk, token_path: f.token });
    assert.deepEqual(p, [`config: ${PLUGIN_DATA}.kubelet_ca_path: ${JSON.stringify(f.junk)} holds no PEM certificate`]);
  });

  test('unknown keys and unsupported SPIRE features', () => {
    const p = problems({ kubelet_ca_path: f.ca, token_path: f.token, kubelet_secure_prot: 1, experimental: { sigstore: {} } });
    assert.ok(p.some((l) => l.includes('kubelet_secure_prot')), p.join('\n'));
    assert.ok(p.some((l) => /experimental: .*not supported/.test(l)), p.join('\n'));
    assert.deepEqual(problems({ kubelet_ca_path: f.ca, token_path: f.token, use_new_container_locator: true, verbose_container_locator_logs: false }), []);
  });
});

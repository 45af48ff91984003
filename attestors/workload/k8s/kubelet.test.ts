import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeKubeTls, type KubeTls } from '../../../test/support/kubetls.js';
import { openssl } from '../../../test/support/testca.js';
import { pod, startFakeKubelet, type FakeKubelet } from '../../../test/support/fakekube/kubelet.js';
import { KubeletClient, KubeletError, parsePod, parsePodList } from './kubelet.js';

const UID = '2c48913c-b29f-11e7-9350-020968147796';
const CID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';

/** A CA and a kubelet serving certificate that names only the node (DNS:node-1), as kubelets' do. */
function nodeOnlyTls(): { caCert: Buffer; serverCert: Buffer; serverKey: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-kubelet-tls-'));
  const p = (f: string): string => join(dir, f);
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', '/CN=node-1-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    openssl(['req', '-new', ...ec, '-keyout', p('s.key'), '-out', p('s.csr'), '-subj', '/CN=node-1']);
    writeFileSync(p('s.ext'), 'subjectAltName=DNS:node-1\nextendedKeyUsage=serverAuth\n');
    openssl(['x509', '-req', '-in', p('s.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2', '-out', p('s.crt'), '-extfile', p('s.ext')]);
    return { caCert: readFileSync(p('ca.crt')), serverCert: readFileSync(p('s.crt')), serverKey: readFileSync(p('s.key')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('KubeletClient against the fake kubelet', () => {
  let tls: KubeTls;
  let other: KubeTls;
  let kubelet: FakeKubelet;
  before(async () => {
    tls = makeKubeTls('spire-agent');
    other = makeKubeTls();
    kubelet = await startFakeKubelet({
      tls,
      tokens: ['good-token'],
      pods: [pod({ uid: UID, name: 'web-0', namespace: 'prod', containers: [{ name: 'web', image: 'nginx:1.25', containerID: `containerd://${CID}` }] })],
    });
  });
  after(() => kubelet.close());

  test('bearer token: lists the pods', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: tls.caCert, token: () => 'good-token' });
    assert.equal(c.baseUrl, `https://127.0.0.1:${kubelet.port}`);
    const pods = await c.listPods();
    assert.equal(pods.length, 1);
    assert.equal(pods[0]!.uid, UID);
    assert.equal(pods[0]!.containerStatuses[0]!.containerID, `containerd://${CID}`);
    assert.deepEqual(kubelet.requests.at(-1), { path: '/pods', auth: 'token' });
  });

  test('client certificate: authenticates without a token', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: tls.caCert, cert: tls.clientCert, key: tls.clientKey });
    assert.equal((await c.listPods()).length, 1);
    assert.deepEqual(kubelet.requests.at(-1), { path: '/pods', auth: 'client-cert', clientCn: 'spire-agent' });
  });

  test('a wrong token is a 401 KubeletError that does not show the token', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: tls.caCert, token: () => 'stolen-or-stale' });
    await assert.rejects(c.listPods(), (e: unknown) => e instanceof KubeletError && e.status === 401 && /HTTP 401/.test(e.message) && !e.message.includes('stolen-or-stale'));
    assert.equal(kubelet.requests.at(-1)!.auth, 'rejected');
  });

  test('no credentials at all is a 401', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: tls.caCert });
    await assert.rejects(c.listPods(), (e: unknown) => e instanceof KubeletError && e.status === 401);
  });

  test('a kubelet certificate from another CA fails TLS', async () => {
    const before = kubelet.requests.length;
    const c = new KubeletClient({ port: kubelet.port, ca: other.caCert, token: () => 'good-token' });
    await assert.rejects(c.listPods(), (e: unknown) => e instanceof KubeletError && e.status === undefined && /certificate/i.test(e.message));
    assert.equal(kubelet.requests.length, before, 'no request reached the kubelet');
  });

  test('insecureSkipVerify accepts any kubelet certificate', async () => {
    const c = new KubeletClient({ port: kubelet.port, insecureSkipVerify: true, token: () => 'good-token' });
    assert.equal((await c.listPods()).length, 1);
  });

  test('a node name is verified against the kubelet certificate', async () => {
    const ok = new KubeletClient({ nodeName: 'localhost', port: kubelet.port, ca: tls.caCert, token: () => 'good-token' });
    assert.equal(ok.baseUrl, `https://localhost:${kubelet.port}`);
    assert.equal((await ok.listPods()).length, 1);
  });

  test('a CA is required unless verification is skipped', () => {
    assert.throws(() => new KubeletClient({ port: 10250 }), /CA is required/);
  });

  test('the abort signal stops the request', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: tls.caCert, token: () => 'good-token' });
    const ac = new AbortController();
    ac.abort(new Error('caller went away'));
    await assert.rejects(c.listPods(ac.signal), /caller went away/);
  });
});

describe('KubeletClient host and name verification (SPIRE behaviour)', () => {
  let tls: ReturnType<typeof nodeOnlyTls>;
  let kubelet: FakeKubelet;
  before(async () => {
    tls = nodeOnlyTls();
    kubelet = await startFakeKubelet({ tls, tokens: ['t'] });
  });
  after(() => kubelet.close());

  test('without a node name it connects to 127.0.0.1 and verifies the chain but not the name', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: tls.caCert, token: () => 't' });
    assert.deepEqual(await c.listPods(), []);
  });

  test('...but still rejects a chain from another CA', async () => {
    const c = new KubeletClient({ port: kubelet.port, ca: makeKubeTls().caCert, token: () => 't' });
    await assert.rejects(c.listPods(), KubeletError);
  });

  test('with a node name the certificate must name it', async () => {
    const c = new KubeletClient({ nodeName: 'localhost', port: kubelet.port, ca: tls.caCert, token: () => 't' });
    await assert.rejects(c.listPods(), (e: unknown) => e instanceof KubeletError && /is not in the cert.s altnames: DNS:node-1/.test(e.message));
  });
});

describe('parsePodList', () => {
  test('a PodList with items', () => {
    const list = parsePodList({ kind: 'PodList', items: [pod({ uid: UID, name: 'a', labels: { app: 'a' }, ownerReferences: [{ kind: 'ReplicaSet', name: 'a-1', uid: 'rs-uid' }] })] });
    assert.equal(list.length, 1);
    assert.deepEqual(list[0]!.labels, [['app', 'a']]);
    assert.deepEqual(list[0]!.ownerReferences, [{ kind: 'ReplicaSet', name: 'a-1', uid: 'rs-uid' }]);
    assert.equal(list[0]!.serviceAccountName, 'default');
    assert.equal(list[0]!.nodeName, 'node-1');
  });
  test('null items (Go nil slice) is an empty list', () => {
    assert.deepEqual(parsePodList({ kind: 'PodList', items: null }), []);
  });
  test('not a PodList', () => {
    assert.throws(() => parsePodList([]), /not a JSON object/);
    assert.throws(() => parsePodList({ kind: 'PodList' }), /no "items" array/);
    assert.throws(() => parsePodList({ items: {} }), /no "items" array/);
  });
  test('pods without a UID are skipped', () => {
    assert.deepEqual(parsePodList({ items: [{ metadata: { name: 'x' } }, 'junk'] }), []);
  });
  test('missing or mistyped fields read as empty', () => {
    const p = parsePod({ metadata: { uid: UID, name: 7, labels: { a: 'b', n: 1 }, ownerReferences: 'x' }, status: { containerStatuses: [{ name: 'c' }] } });
    assert.deepEqual(p, {
      uid: UID, name: '', namespace: '', labels: [['a', 'b']], ownerReferences: [], serviceAccountName: '', nodeName: '',
      containerStatuses: [{ name: 'c', image: '', imageID: '', containerID: '' }], initContainerStatuses: [],
    });
  });
});

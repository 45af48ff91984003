import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { inClusterTarget, KubeConfigError, loadKubeconfig, parseKubeconfig } from './kubeconfig.js';
import { KubeApiClient } from './apiclient.js';
import { makeKubeTls, type KubeTls } from '../../test/support/kubetls.js';
import { startFakeApiServer, type FakeApiServer } from '../../test/support/fakekube/apiserver.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-kubeconfig-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const newDir = (): string => {
  const d = join(root, `d${n++}`);
  mkdirSync(d);
  return d;
};

let tls: KubeTls;
let api: FakeApiServer;
before(async () => {
  tls = makeKubeTls('spindle-server');
  api = await startFakeApiServer({ tls, bearerTokens: ['caller-token-1', 'caller-token-2'], clientNames: ['spindle-server'] });
  api.addNode({ name: 'node-1', uid: 'node-uid-1' });
});
after(() => api?.close());

const b64 = (b: Buffer | string): string => Buffer.from(b).toString('base64');

interface KcOpts {
  server?: string;
  cluster?: Record<string, unknown>;
  user?: Record<string, unknown> | null;
  currentContext?: string | null;
}

function kubeconfig(o: KcOpts = {}): string {
  const doc: Record<string, unknown> = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      { name: 'other', cluster: { server: 'https://other.example:6443' } },
      { name: 'kind', cluster: { server: o.server ?? api.url, ...(o.cluster ?? { 'certificate-authority-data': b64(tls.caCert) }) } },
    ],
    contexts: [{ name: 'ctx', context: { cluster: 'kind', user: o.user === null ? undefined : 'admin', namespace: 'spire' } }],
    users: [{ name: 'admin', user: o.user ?? { token: 'caller-token-1' } }],
  };
  if (o.currentContext !== null) doc['current-context'] = o.currentContext ?? 'ctx';
  return stringify(doc);
}

function writeKc(dir: string, o: KcOpts = {}): string {
  const p = join(dir, 'kubeconfig');
  writeFileSync(p, kubeconfig(o));
  return p;
}

function throwsKc(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KubeConfigError, `expected KubeConfigError, got ${String(err)}`);
    assert.match(err.message, re);
    return true;
  });
}

describe('kubeconfig', () => {
  test('token + certificate-authority-data: a target that reaches the API server', async () => {
    const t = parseKubeconfig(kubeconfig(), '/x/kubeconfig');
    assert.equal(t.baseUrl, api.url);
    assert.deepEqual(t.ca, tls.caCert);
    assert.equal(await t.token?.(), 'caller-token-1');
    assert.equal(t.cert, undefined);
    const node = await new KubeApiClient(t).getNode('node-1');
    assert.equal(node?.uid, 'node-uid-1');
    assert.equal(api.requests.at(-1)?.caller, 'token:0');
  });

  test('client certificate + key and CA as files, relative to the kubeconfig directory', async () => {
    const dir = newDir();
    mkdirSync(join(dir, 'pki'));
    writeFileSync(join(dir, 'pki', 'ca.crt'), tls.caCert);
    writeFileSync(join(dir, 'pki', 'client.crt'), tls.clientCert);
    writeFileSync(join(dir, 'pki', 'client.key'), tls.clientKey);
    const p = writeKc(dir, {
      cluster: { 'certificate-authority': 'pki/ca.crt' },
      user: { 'client-certificate': 'pki/client.crt', 'client-key': './pki/client.key' },
    });
    const t = loadKubeconfig(p);
    assert.deepEqual(t.cert, tls.clientCert);
    assert.deepEqual(t.key, tls.clientKey);
    assert.equal(t.token, undefined);
    assert.equal((await new KubeApiClient(t).getNode('node-1'))?.uid, 'node-uid-1');
    assert.equal(api.requests.at(-1)?.caller, 'cert:spindle-server');
  });

  test('client-certificate-data / client-key-data', async () => {
    const t = parseKubeconfig(kubeconfig({ user: { 'client-certificate-data': b64(tls.clientCert), 'client-key-data': b64(tls.clientKey) } }), '/x/kc');
    assert.equal((await new KubeApiClient(t).getNode('node-1'))?.name, 'node-1');
    assert.equal(api.requests.at(-1)?.caller, 'cert:spindle-server');
  });

  test('tokenFile: relative to the kubeconfig, re-read on every request, preferred over token', async () => {
    const dir = newDir();
    writeFileSync(join(dir, 'tok'), 'caller-token-1\n');
    const t = loadKubeconfig(writeKc(dir, { user: { token: 'ignored', tokenFile: 'tok' } }));
    const client = new KubeApiClient(t);
    await client.getNode('node-1');
    assert.equal(api.requests.at(-1)?.caller, 'token:0');
    writeFileSync(join(dir, 'tok'), 'caller-token-2');
    await client.getNode('node-1');
    assert.equal(api.requests.at(-1)?.caller, 'token:1');
  });

  test('absolute paths are kept; the server path prefix is kept; tls-server-name and insecure-skip-tls-verify', () => {
    const dir = newDir();
    writeFileSync(join(dir, 'ca.pem'), tls.caCert);
    const t = loadKubeconfig(writeKc(newDir(), { server: 'https://rancher.example/k8s/clusters/c-1/', cluster: { 'certificate-authority': join(dir, 'ca.pem'), 'tls-server-name': 'kubernetes' } }));
    assert.equal(t.baseUrl, 'https://rancher.example/k8s/clusters/c-1');
    assert.deepEqual(t.ca, tls.caCert);
    assert.equal(t.servername, 'kubernetes');
    const insecure = parseKubeconfig(kubeconfig({ cluster: { 'insecure-skip-tls-verify': true } }), '/x/kc');
    assert.equal(insecure.insecureSkipVerify, true);
    assert.equal(insecure.ca, undefined);
  });

  test('a context without a user gives a target without credentials', () => {
    const t = parseKubeconfig(kubeconfig({ user: null }), '/x/kc');
    assert.equal(t.token, undefined);
    assert.equal(t.cert, undefined);
  });

  test('credential plugins, basic auth and impersonation are refused by name', () => {
    throwsKc(() => parseKubeconfig(kubeconfig({ user: { exec: { command: 'aws', apiVersion: 'client.authentication.k8s.io/v1' } } }), '/x/kc'), /^kubeconfig \/x\/kc: users\[name="admin"\]\.user\.exec: exec credential plugins are not supported/);
    throwsKc(() => parseKubeconfig(kubeconfig({ user: { 'auth-provider': { name: 'gcp' } } }), '/x/kc'), /user\.auth-provider: auth provider plugins are not supported/);
    throwsKc(() => parseKubeconfig(kubeconfig({ user: { username: 'admin', password: 'secret-pw' } }), '/x/kc'), /basic auth\) is not supported/);
    throwsKc(() => parseKubeconfig(kubeconfig({ user: { token: 't', as: 'someone' } }), '/x/kc'), /user\.as: impersonation is not supported/);
  });

  test('structural errors name the file and the setting', () => {
    const kc = '/etc/kc';
    throwsKc(() => parseKubeconfig(kubeconfig({ currentContext: null }), kc), /^kubeconfig \/etc\/kc: current-context is not set$/);
    throwsKc(() => parseKubeconfig(kubeconfig({ currentContext: 'nope' }), kc), /contexts has no entry named "nope"/);
    throwsKc(() => parseKubeconfig(kubeconfig({ server: 'http://127.0.0.1:8080' }), kc), /clusters\[name="kind"\]\.cluster\.server must be an https URL, got "http:\/\/127\.0\.0\.1:8080"/);
    throwsKc(() => parseKubeconfig(kubeconfig({ server: 'not a url' }), kc), /server is not a URL/);
    throwsKc(() => parseKubeconfig(kubeconfig({ cluster: { 'certificate-authority': 'a', 'certificate-authority-data': b64(tls.caCert) } }), kc), /certificate-authority and certificate-authority-data are both set/);
    throwsKc(() => parseKubeconfig(kubeconfig({ cluster: { 'certificate-authority-data': '%%%' } }), kc), /certificate-authority-data is not base64/);
    throwsKc(() => parseKubeconfig(kubeconfig({ cluster: { 'certificate-authority-data': b64('hello') } }), kc), /certificate-authority-data holds no PEM certificate/);
    throwsKc(() => parseKubeconfig(kubeconfig({ cluster: { 'certificate-authority-data': b64(tls.caCert), 'insecure-skip-tls-verify': true } }), kc), /cannot both be set/);
    throwsKc(() => parseKubeconfig(kubeconfig({ user: { 'client-certificate-data': b64(tls.clientCert) } }), kc), /client-certificate and client-key must be given together/);
    throwsKc(() => parseKubeconfig(kubeconfig({ user: { 'client-certificate-data': b64(tls.clientCert), 'client-key-data': b64(tls.clientCert) } }), kc), /client-key holds no PEM private key/);
    throwsKc(() => parseKubeconfig('a: [', kc), /^kubeconfig \/etc\/kc: invalid YAML/);
    throwsKc(() => parseKubeconfig('- 1', kc), /expected a map/);
  });

  test('missing files are named, and secrets never appear in errors', () => {
    const dir = newDir();
    throwsKc(() => loadKubeconfig(join(dir, 'absent')), new RegExp(`^kubeconfig: cannot read ${join(dir, 'absent')}: file not found$`));
    const p = writeKc(dir, { user: { tokenFile: 'missing-token' } });
    throwsKc(() => loadKubeconfig(p), new RegExp(`^kubeconfig ${p}: users\\[name="admin"\\]\\.user\\.tokenFile: cannot read ${join(dir, 'missing-token')}: file not found$`));
    const p2 = writeKc(newDir(), { cluster: { 'certificate-authority': 'nope/ca.crt' } });
    throwsKc(() => loadKubeconfig(p2), /certificate-authority: cannot read .*nope\/ca\.crt: file not found/);
    try {
      parseKubeconfig(kubeconfig({ user: { token: 'super-secret-token', exec: { command: 'x' } } }), '/x/kc');
      assert.fail('should throw');
    } catch (err) {
      assert.doesNotMatch((err as Error).message, /super-secret-token/);
    }
  });
});

describe('in-cluster', () => {
  function saDir(token = 'caller-token-1'): string {
    const dir = newDir();
    writeFileSync(join(dir, 'token'), token);
    writeFileSync(join(dir, 'ca.crt'), tls.caCert);
    writeFileSync(join(dir, 'namespace'), 'spire');
    return dir;
  }

  test('host and port from the environment, CA and token from the mount; the token is re-read per request', async () => {
    const dir = saDir();
    const t = inClusterTarget({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, serviceAccountDir: dir });
    assert.equal(t.baseUrl, api.url);
    assert.deepEqual(t.ca, tls.caCert);
    const client = new KubeApiClient(t);
    assert.equal((await client.getNode('node-1'))?.uid, 'node-uid-1');
    assert.equal(api.requests.at(-1)?.caller, 'token:0');
    writeFileSync(join(dir, 'token'), 'caller-token-2\n');
    await client.getNode('node-1');
    assert.equal(api.requests.at(-1)?.caller, 'token:1');
  });

  test('an IPv6 service host is put in brackets', () => {
    const t = inClusterTarget({ env: { KUBERNETES_SERVICE_HOST: 'fd00:10:96::1', KUBERNETES_SERVICE_PORT: '443' }, serviceAccountDir: saDir() });
    assert.equal(t.baseUrl, 'https://[fd00:10:96::1]:443');
  });

  test('missing environment, bad port, missing CA or token are clear errors', () => {
    const dir = saDir();
    throwsKc(() => inClusterTarget({ env: {}, serviceAccountDir: dir }), /needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT/);
    throwsKc(() => inClusterTarget({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, serviceAccountDir: dir }), /needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT/);
    throwsKc(() => inClusterTarget({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: 'https' }, serviceAccountDir: dir }), /KUBERNETES_SERVICE_PORT is not a port number: "https"/);
    const empty = newDir();
    const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
    throwsKc(() => inClusterTarget({ env, serviceAccountDir: empty }), new RegExp(`in-cluster CA certificate: cannot read ${join(empty, 'ca.crt')}: file not found`));
    writeFileSync(join(empty, 'ca.crt'), tls.caCert);
    throwsKc(() => inClusterTarget({ env, serviceAccountDir: empty }), new RegExp(`in-cluster service-account token: cannot read ${join(empty, 'token')}: file not found`));
  });

  test('a token that disappears after configuration fails the request, naming the file', async () => {
    const dir = saDir();
    const t = inClusterTarget({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, serviceAccountDir: dir });
    rmSync(join(dir, 'token'));
    await assert.rejects(new KubeApiClient(t).getNode('node-1'), new RegExp(`cannot read bearer token file ${join(dir, 'token')}: file not found`));
  });
});

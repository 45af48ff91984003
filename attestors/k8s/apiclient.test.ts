import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { KubeApiClient, KubeApiError } from './apiclient.js';
import { KubeHttpError, type KubeTarget } from './http.js';
import { makeKubeTls, type KubeTls } from '../../test/support/kubetls.js';
import { startFakeApiServer, type FakeApiServer } from '../../test/support/fakekube/apiserver.js';

let tls: KubeTls;
let api: FakeApiServer;
let target: KubeTarget;
before(async () => {
  tls = makeKubeTls();
  api = await startFakeApiServer({ tls, bearerTokens: ['caller'] });
  target = { baseUrl: api.url, ca: tls.caCert, token: () => 'caller' };
  api.addNode({ name: 'node-1', uid: 'nuid-1', labels: { zone: 'a' } });
  api.addPod({ namespace: 'spire', name: 'agent-1', uid: 'puid-1', nodeName: 'node-1', hostIP: '192.0.2.7', labels: { app: 'agent' } });
});
after(() => api?.close());

const mint = (o: { audiences?: string[]; ttlSeconds?: number; foreignKey?: boolean } = {}): Promise<string> =>
  api.mintProjectedToken({ namespace: 'spire', serviceAccount: 'agent', podName: 'agent-1', podUid: 'puid-1', ...o });

async function rejectsWith(p: Promise<unknown>, cls: new (...a: never[]) => Error, re: RegExp, status?: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
    assert.match(err.message, re);
    if (status !== undefined) assert.equal((err as KubeHttpError).status, status);
    return true;
  });
}

describe('KubeApiClient', () => {
  test('createTokenReview: sends our audiences and returns the status with user, extras and audiences', async () => {
    const client = new KubeApiClient(target);
    const st = await client.createTokenReview(await mint(), ['spindle-server', 'other']);
    assert.equal(st.authenticated, true);
    assert.equal(st.user.username, 'system:serviceaccount:spire:agent');
    assert.deepEqual(st.user.extra['authentication.kubernetes.io/pod-name'], ['agent-1']);
    assert.deepEqual(st.user.extra['authentication.kubernetes.io/pod-uid'], ['puid-1']);
    assert.ok(st.user.groups.includes('system:serviceaccounts:spire'));
    assert.deepEqual(st.audiences, ['spindle-server']);
    assert.equal(st.error, '');
    assert.deepEqual(api.requests.at(-1)?.audiences, ['spindle-server', 'other']);
  });

  test('createTokenReview without audiences omits spec.audiences (the API server audience applies)', async () => {
    const client = new KubeApiClient(target);
    const st = await client.createTokenReview(await mint({ audiences: [api.issuer] }), []);
    assert.equal(st.authenticated, true);
    assert.deepEqual(st.audiences, [api.issuer]);
    assert.deepEqual(api.requests.at(-1)?.audiences, []);
  });

  test('an invalid token: authenticated false with the server error (omitted fields read as zero values)', async () => {
    const client = new KubeApiClient(target);
    const foreign = await client.createTokenReview(await mint({ foreignKey: true }), ['spindle-server']);
    assert.equal(foreign.authenticated, false);
    assert.match(foreign.error, /invalid bearer token/);
    assert.equal(foreign.user.username, '');
    assert.deepEqual(foreign.audiences, []);
    const expired = await client.createTokenReview(await mint({ ttlSeconds: -60 }), ['spindle-server']);
    assert.equal(expired.authenticated, false);
    assert.match(expired.error, /"exp" claim timestamp check failed/);
  });

  test('getPod / getNode return the fields k8s_psat uses; 404 is undefined', async () => {
    const client = new KubeApiClient(target);
    assert.deepEqual(await client.getPod('spire', 'agent-1'), {
      namespace: 'spire', name: 'agent-1', uid: 'puid-1', nodeName: 'node-1', hostIP: '192.0.2.7', labels: { app: 'agent' },
    });
    assert.deepEqual(await client.getNode('node-1'), { name: 'node-1', uid: 'nuid-1', labels: { zone: 'a' } });
    assert.equal(await client.getPod('spire', 'gone'), undefined);
    assert.equal(await client.getPod('other-ns', 'agent-1'), undefined);
    assert.equal(await client.getNode('gone'), undefined);
  });

  test('path segments are URL-encoded', async () => {
    api.addPod({ namespace: 'we ird', name: 'a?b#c/d', uid: 'u-odd', nodeName: 'node-1' });
    const client = new KubeApiClient(target);
    assert.equal((await client.getPod('we ird', 'a?b#c/d'))?.uid, 'u-odd');
    assert.equal(api.requests.at(-1)?.path, '/api/v1/namespaces/we%20ird/pods/a%3Fb%23c%2Fd');
    await rejectsWith(client.getPod('', 'x'), KubeApiError, /namespace must not be empty/);
    await rejectsWith(client.getNode(''), KubeApiError, /node name must not be empty/);
  });

  test('HTTP errors carry the status and the Status message; 401 without credentials', async () => {
    const client = new KubeApiClient(target);
    api.failNext(1, { status: 500, message: 'etcdserver: request timed out' });
    await rejectsWith(client.getNode('node-1'), KubeHttpError, /GET https:\/\/127\.0\.0\.1:\d+\/api\/v1\/nodes\/node-1: HTTP 500: etcdserver: request timed out/, 500);
    api.failNext(1, { status: 403, message: 'nodes "node-1" is forbidden' });
    await rejectsWith(client.getNode('node-1'), KubeHttpError, /HTTP 403: nodes "node-1" is forbidden/, 403);
    const anon = new KubeApiClient({ baseUrl: api.url, ca: tls.caCert });
    await rejectsWith(anon.getNode('node-1'), KubeHttpError, /HTTP 401: Unauthorized/, 401);
    const badToken = new KubeApiClient({ ...target, token: () => 'wrong' });
    await rejectsWith(badToken.createTokenReview('a.b.c', []), KubeHttpError, /HTTP 401/, 401);
  });

  test('TLS: a server certificate from another CA is refused', async () => {
    const otherCa = makeKubeTls().caCert;
    const before = api.count();
    await rejectsWith(new KubeApiClient({ ...target, ca: otherCa }).getNode('node-1'), KubeHttpError, /self-signed certificate|unable to verify|certificate/);
    assert.equal(api.count(), before, 'no request reached the handler');
  });

  test('answers of the wrong shape are KubeApiError naming the field', async () => {
    const client = new KubeApiClient(target);
    const ok = { status: 200 };
    api.failNext(1, { ...ok, body: '<html>proxy</html>' });
    await rejectsWith(client.getNode('node-1'), KubeHttpError, /response is not JSON/);
    api.failNext(1, { ...ok, body: '[1,2]' });
    await rejectsWith(client.getNode('node-1'), KubeApiError, /^Node response is not a JSON object$/);
    api.failNext(1, { ...ok, body: JSON.stringify({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'node-1' } }) });
    await rejectsWith(client.getNode('node-1'), KubeApiError, /^Node response is malformed: metadata\.uid is missing$/);
    api.failNext(1, { ...ok, body: JSON.stringify({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'node-2', uid: 'x' } }) });
    await rejectsWith(client.getNode('node-1'), KubeApiError, /metadata\.name is "node-2", asked for "node-1"/);
    api.failNext(1, { ...ok, body: JSON.stringify({ kind: 'Pod', apiVersion: 'v1', metadata: { uid: 'u', labels: { a: 1 } } }) });
    await rejectsWith(client.getPod('spire', 'agent-1'), KubeApiError, /metadata\.labels\["a"\] is not a string/);
    api.failNext(1, { ...ok, body: JSON.stringify({ kind: 'Pod', apiVersion: 'v1', metadata: { uid: 'u' }, spec: { nodeName: 7 } }) });
    await rejectsWith(client.getPod('spire', 'agent-1'), KubeApiError, /spec\.nodeName is not a string/);
    api.failNext(1, { ...ok, body: JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {} }) });
    await rejectsWith(client.getPod('spire', 'agent-1'), KubeApiError, /kind is "Status"/);
    api.failNext(1, { status: 201, body: JSON.stringify({ kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1beta1', status: {} }) });
    await rejectsWith(client.createTokenReview('a.b.c', []), KubeApiError, /apiVersion is "authentication\.k8s\.io\/v1beta1", expected authentication\.k8s\.io\/v1/);
    api.failNext(1, { status: 201, body: JSON.stringify({ kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1' }) });
    await rejectsWith(client.createTokenReview('a.b.c', []), KubeApiError, /status is missing/);
    api.failNext(1, { status: 201, body: JSON.stringify({ kind: 'TokenReview', status: { authenticated: 'yes' } }) });
    await rejectsWith(client.createTokenReview('a.b.c', []), KubeApiError, /status\.authenticated is not a boolean/);
    api.failNext(1, { status: 201, body: JSON.stringify({ status: { authenticated: true, user: { extra: { k: 'v' } } } }) });
    await rejectsWith(client.createTokenReview('a.b.c', []), KubeApiError, /status\.user\.extra\["k"\] is not a list of strings/);
  });

  test('a server URL with a path prefix keeps it (Rancher-style proxies)', async () => {
    const client = new KubeApiClient({ ...target, baseUrl: `${api.url}/k8s/clusters/c-1` });
    assert.equal(await client.getNode('node-1'), undefined); // the fake serves no prefix: 404
    assert.equal(api.requests.at(-1)?.path, '/k8s/clusters/c-1/api/v1/nodes/node-1');
  });

  test('the target source is consulted for every request', async () => {
    let calls = 0;
    const client = new KubeApiClient(() => {
      calls++;
      return target;
    });
    await client.getNode('node-1');
    await client.getPod('spire', 'agent-1');
    assert.equal(calls, 2);
  });
});

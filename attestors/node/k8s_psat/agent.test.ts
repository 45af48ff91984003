import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, ConfigReader } from '../../../common/configfile.js';
import { parseTrustDomain } from '../../../spiffe/id.js';
import type { AttestorDataStore } from '../types.js';
import { makeKubeTls } from '../../../test/support/kubetls.js';
import { startFakeApiServer } from '../../../test/support/fakekube/apiserver.js';
import { AttestationError } from '../types.js';
import { DEFAULT_TOKEN_PATH, K8sPsatAgentAttestor } from './agent.js';
import { decodePsatPayload } from './payload.js';
import { K8sPsatServerAttestor } from './server.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-psat-agent-'));
after(() => rmSync(root, { recursive: true, force: true }));

const PATH = 'plugins.NodeAttestor.k8s_psat.plugin_data';
const JWT = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';

function problems(raw: unknown): string[] {
  try {
    K8sPsatAgentAttestor.fromConfig(new ConfigReader(raw, PATH));
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  return [];
}

describe('k8s_psat agent', () => {
  test('config: cluster is required, token_path defaults to the projected token path', () => {
    const a = K8sPsatAgentAttestor.fromConfig(new ConfigReader({ cluster: 'prod' }, PATH));
    assert.equal(a.name, 'k8s_psat');
    assert.equal(a.cluster, 'prod');
    assert.equal(a.tokenPath, DEFAULT_TOKEN_PATH);
    assert.equal(DEFAULT_TOKEN_PATH, '/var/run/secrets/tokens/spindle-agent');
    assert.equal(K8sPsatAgentAttestor.fromConfig(new ConfigReader({ cluster: 'prod', token_path: '/t' }, PATH)).tokenPath, '/t');
    assert.deepEqual(problems({}), [`config: ${PATH}.cluster: is required: the name of this cluster as configured on the server`]);
    assert.deepEqual(problems({ cluster: 'a/b', tokn_path: '/x' }), [
      `config: ${PATH}.tokn_path: unknown key (did you mean "token_path"?)`,
      `config: ${PATH}.cluster: must be usable as one SPIFFE ID path segment (a-z A-Z 0-9 . - _), got "a/b"`,
    ]);
    assert.deepEqual(problems({ cluster: 'prod', token_path: 5 }), [`config: ${PATH}.token_path: expected a string, got 5`]);
  });

  test('payload: SPIRE JSON {"cluster","token"}, token trimmed and read fresh every time', async () => {
    const tokenPath = join(root, 'token');
    writeFileSync(tokenPath, `${JWT}\n`);
    const a = K8sPsatAgentAttestor.fromConfig(new ConfigReader({ cluster: 'prod', token_path: tokenPath }, PATH));
    const first = await a.payload();
    assert.equal(first.toString('utf8'), JSON.stringify({ cluster: 'prod', token: JWT }));
    assert.deepEqual(decodePsatPayload(first), { cluster: 'prod', token: JWT });
    const rotated = `${JWT}x`;
    writeFileSync(tokenPath, rotated);
    assert.equal(decodePsatPayload(await a.payload()).token, rotated);
  });

  test('payload: a missing or empty token file is an error naming the path', async () => {
    const missing = join(root, 'no-such-token');
    const a = new K8sPsatAgentAttestor({ cluster: 'prod', tokenPath: missing });
    await assert.rejects(a.payload(), (err: unknown) => {
      assert.ok(err instanceof AttestationError);
      assert.equal(err.reason, 'token_unreadable');
      assert.equal(err.message, `k8s_psat: cannot read the service account token ${missing}: file not found (is the projected token volume mounted?)`);
      return true;
    });
    const empty = join(root, 'empty-token');
    writeFileSync(empty, ' \n');
    await assert.rejects(new K8sPsatAgentAttestor({ cluster: 'prod', tokenPath: empty }).payload(), new RegExp(`service account token ${empty} is empty$`));
    await assert.rejects(new K8sPsatAgentAttestor({ cluster: 'prod', tokenPath: root }).payload(), /cannot read the service account token .*: EISDIR/);
  });

  test('readFile is injectable', async () => {
    const seen: string[] = [];
    const a = K8sPsatAgentAttestor.fromConfig(new ConfigReader({ cluster: 'c1' }, PATH), {
      readFile: async (p) => {
        seen.push(p);
        return Buffer.from(JWT);
      },
    });
    assert.equal(decodePsatPayload(await a.payload()).cluster, 'c1');
    assert.deepEqual(seen, [DEFAULT_TOKEN_PATH]);
  });

  test('agent payload -> server attestation against the fake API server', async () => {
    const tls = makeKubeTls();
    const api = await startFakeApiServer({ tls, bearerTokens: ['srv'] });
    try {
      api.addPod({ namespace: 'spire', name: 'agent-abc', uid: 'pod-1', nodeName: 'n1', hostIP: '198.51.100.3' });
      api.addNode({ name: 'n1', uid: 'node-1' });
      const tokenPath = join(root, 'projected');
      writeFileSync(tokenPath, await api.mintProjectedToken({ namespace: 'spire', serviceAccount: 'spire-agent', podName: 'agent-abc', podUid: 'pod-1' }));
      const kc = join(root, 'kc');
      writeFileSync(kc, stringify({
        'current-context': 'c',
        clusters: [{ name: 'k', cluster: { server: api.url, 'certificate-authority-data': tls.caCert.toString('base64') } }],
        contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
        users: [{ name: 'u', user: { token: 'srv' } }],
      }));
      const server = K8sPsatServerAttestor.fromConfig(new ConfigReader({ clusters: { 'demo-cluster': { service_account_allow_list: ['spire:spire-agent'], kube_config_file: kc } } }));
      const agent = new K8sPsatAgentAttestor({ cluster: 'demo-cluster', tokenPath });
      const r = await server.attest(await agent.payload(), {
        trustDomain: parseTrustDomain('example.org'),
        datastore: {} as AttestorDataStore,
        now: () => new Date(),
        challenge: () => Promise.reject(new Error('no challenge')),
      });
      assert.equal(r.agentId, 'spiffe://example.org/spire/agent/k8s_psat/demo-cluster/node-1');
      assert.ok(r.selectors.some((s) => s.value === 'agent_node_ip:198.51.100.3'));
    } finally {
      await api.close();
    }
  });
});

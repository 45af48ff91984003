// Adding a node attestor is one folder plus one list entry: the test-only `shared_secret`
// attestor (test/fixtures/node_attestor/shared_secret/) is appended to this build's list, and a
// real in-process server and agent parse their config, build both halves and attest with it
// (payload, server challenge, answer, agent SVID) over the real agent API. The same for a
// test-only workload attestor (test/fixtures/workload_attestor/fixed/) and the agent's config
// and plugin builder.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { NODE_ATTESTOR_PLUGINS } from '../attestors/node/registry.js';
import { ConfigError } from '../common/configfile.js';
import { parseAgentConfig } from '../agent/config/config.js';
import { buildAgentPlugins } from '../agent/plugins.js';
import { startAgent } from '../agent/run.js';
import { parseServerConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/run.js';
import { parseSpiffeId } from '../spiffe/id.js';
import { WORKLOAD_ATTESTOR_PLUGINS } from '../attestors/workload/registry.js';
import { SHARED_SECRET, sharedSecretPlugin } from './fixtures/node_attestor/shared_secret/plugin.js';
import { FIXED, fixedPlugin } from './fixtures/workload_attestor/fixed/plugin.js';
import { freePort } from './support/serverproc.js';

const TD = 'example.org';
const SECRET = 'correct horse battery staple';
/** This build's node attestors plus the test one: the single entry the test adds. */
const PLUGINS = [...NODE_ATTESTOR_PLUGINS, sharedSecretPlugin];
const silent = pino({ level: 'silent' });

function serverRaw(pluginData: Record<string, unknown>): unknown {
  return { plugins: { NodeAttestor: { [SHARED_SECRET]: { plugin_data: pluginData } }, KeyManager: { memory: { plugin_data: {} } } } };
}

describe('a node attestor added by one folder plus one list entry', () => {
  let dir: string;
  let server: RunningServer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-attestor-plugin-'));
    const config = parseServerConfig(
      serverRaw({ secret: SECRET }),
      { trustDomain: TD, dataDir: join(dir, 'server'), socketPath: join(dir, 'admin.sock'), bindAddress: '127.0.0.1', serverPort: await freePort() },
      { cwd: dir, nodeAttestors: PLUGINS },
    );
    server = await startServer(config, { logger: silent, nodeAttestors: PLUGINS });
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function agentConfig(name: string, pluginData: Record<string, unknown>, plugins = PLUGINS) {
    return parseAgentConfig(
      {
        agent: { trust_domain: TD, server_address: '127.0.0.1', server_port: server.agentApiPort, insecure_bootstrap: true },
        plugins: { NodeAttestor: { [SHARED_SECRET]: { plugin_data: pluginData } } },
      },
      { dataDir: join(dir, name, 'data'), socketPath: join(dir, name, 'api.sock') },
      { cwd: dir, nodeAttestors: plugins },
    );
  }

  test('config modules know the name only when the list has it', () => {
    const agentWithout = () => agentConfig('unlisted', { secret: SECRET, node: 'n0' }, [...NODE_ATTESTOR_PLUGINS]);
    assert.throws(agentWithout, (err: unknown) => err instanceof ConfigError && err.message.includes(SHARED_SECRET));
    const serverWithout = () => parseServerConfig(serverRaw({ secret: SECRET }), { trustDomain: TD, dataDir: join(dir, 'x') }, { cwd: dir });
    assert.throws(serverWithout, (err: unknown) => err instanceof ConfigError && err.message.includes(SHARED_SECRET));
  });

  test('each half validates its own plugin_data and names the key', async () => {
    const noNode = agentConfig('bad', { secret: SECRET });
    assert.throws(
      () => buildAgentPlugins(noNode, {}, { nodeAttestors: PLUGINS }),
      (err: unknown) => err instanceof ConfigError && err.message.includes(`plugins.NodeAttestor.${SHARED_SECRET}.plugin_data.node: is required`),
    );
    const shortSecret = parseServerConfig(serverRaw({ secret: 'short' }), { trustDomain: TD, dataDir: join(dir, 'x') }, { cwd: dir, nodeAttestors: PLUGINS });
    await assert.rejects(
      startServer(shortSecret, { logger: silent, nodeAttestors: PLUGINS }),
      (err: unknown) => err instanceof ConfigError && err.message.includes(`plugins.NodeAttestor.${SHARED_SECRET}.plugin_data.secret: must be at least 16 characters`),
    );
  });

  test('a real agent attests with it: challenge answered, agent ID and node selectors from the attestor', async () => {
    const agent = await startAgent(agentConfig('good', { secret: SECRET, node: 'node-1' }), { logger: silent, attestors: { nodeAttestors: PLUGINS } });
    try {
      const want = parseSpiffeId(`spiffe://${TD}/spire/agent/${SHARED_SECRET}/node-1`);
      assert.equal(agent.identity.agentId, want);
      const node = await server.datastore.getAttestedNode(want);
      assert.ok(node, 'the server recorded the attested node');
      assert.equal(node.attestationType, SHARED_SECRET);
      assert.deepEqual(node.selectors, [{ type: SHARED_SECRET, value: 'node:node-1' }]);
    } finally {
      await agent.stop();
    }
  });

  test('a wrong answer to the challenge is refused', async () => {
    await assert.rejects(
      startAgent(agentConfig('wrong', { secret: 'not the shared secret at all', node: 'node-2' }), { logger: silent, attestors: { nodeAttestors: PLUGINS } }),
      /wrong challenge answer|PERMISSION_DENIED|permission/i,
    );
    assert.equal(await server.datastore.getAttestedNode(parseSpiffeId(`spiffe://${TD}/spire/agent/${SHARED_SECRET}/node-2`)), undefined);
  });
});

describe('a workload attestor added by one folder plus one list entry', () => {
  const WORKLOAD_PLUGINS = [...WORKLOAD_ATTESTOR_PLUGINS, fixedPlugin];
  const raw = (pluginData: Record<string, unknown>) => ({
    agent: { trust_domain: TD },
    plugins: { WorkloadAttestor: [{ unix: { plugin_data: {} } }, { [FIXED]: { plugin_data: pluginData } }] },
  });

  test('the agent config knows the name only when the list has it', () => {
    assert.throws(
      () => parseAgentConfig(raw({ label: 'a' }), {}, { cwd: '/' }),
      (err: unknown) => err instanceof ConfigError && err.message.includes(FIXED),
    );
  });

  test('built from the extended list, validating its own plugin_data', async () => {
    const config = parseAgentConfig(raw({ label: 'blue' }), {}, { cwd: '/', workloadAttestors: WORKLOAD_PLUGINS });
    const { workloadAttestors } = buildAgentPlugins(config, {}, { workloadAttestors: WORKLOAD_PLUGINS });
    assert.deepEqual(
      workloadAttestors.map((a) => a.name),
      ['unix', FIXED],
    );
    assert.deepEqual(await workloadAttestors[1]!.attest({ pid: process.pid, uid: 0, gid: 0, groups: [] }), [{ type: FIXED, value: 'label:blue' }]);
    const missing = parseAgentConfig(raw({}), {}, { cwd: '/', workloadAttestors: WORKLOAD_PLUGINS });
    assert.throws(
      () => buildAgentPlugins(missing, {}, { workloadAttestors: WORKLOAD_PLUGINS }),
      (err: unknown) => err instanceof ConfigError && err.message.includes(`plugins.WorkloadAttestor.${FIXED}.plugin_data.label: is required`),
    );
  });
});

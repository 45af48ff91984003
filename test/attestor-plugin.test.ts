// Adding a node attestor is one folder plus one list entry: the test-only `shared_secret`
// attestor (test/fixtures/node_attestor/shared_secret/) is appended to this build's list, and a
// real in-process server and agent parse their config, build both halves and attest with it
// (payload, server challenge, answer, agent SVID) over the real agent API.
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
import { SHARED_SECRET, sharedSecretPlugin } from './fixtures/node_attestor/shared_secret/plugin.js';
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

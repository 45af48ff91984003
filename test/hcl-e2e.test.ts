// End to end with SPIRE-shaped HCL config files: a real spindle-server started with
// `-config server.conf` and a real spindle-agent with `-config agent.conf`, both in SPIRE's own
// syntax; a workload then gets its X509-SVID from the agent.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { trustDomainOf } from '../spiffe/id.js';
import { createWorkloadApiClient } from '../spiffe/workloadapi/index.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { serverBin, startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';

const TD = 'example.org';
const ALIAS = `spiffe://${TD}/hcl/node`;
const MY_ID = `spiffe://${TD}/hcl/workload`;
/** Set only in server.conf: seeing it in the CA certificate shows the server read the file. */
const CA_ORG = 'Spindle HCL e2e';

let server: ServerProcess;
let agent: AgentProcess;
let serverConf: string;

before(async () => {
  const serverDir = tempDir('spindle-hcl-e2e-');
  serverConf = join(serverDir, 'server.conf');
  // SPIRE's quickstart shape. startServerProcess also passes -dataDir, -socketPath, -bindAddress
  // and -serverPort (flags win over the file, as in SPIRE); the rest comes from this file only.
  writeFileSync(
    serverConf,
    `server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "${join(serverDir, 'admin', 'api.sock')}"
    trust_domain = "${TD}"
    data_dir = "./data"
    log_level = "DEBUG"
    log_format = "json"
    ca_ttl = "168h"
    default_x509_svid_ttl = "1h"
    ca_subject {
        country = ["US"]
        organization = ["${CA_ORG}"]
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./data/datastore.sqlite3"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data = {}
    }
}
`,
  );
  server = await startServerProcess({ dir: serverDir, trustDomain: TD, extraArgs: ['-config', serverConf] });
  const token = generateJoinToken(server, ALIAS);
  const created = server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', MY_ID, '-selector', `unix:uid:${process.getuid!()}`]);
  assert.equal(created.status, 0, `entry create: ${created.stderr}${created.stdout}`);

  const agentDir = tempDir('spindle-hcl-agent-e2e-');
  const agentConf = join(agentDir, 'agent.conf');
  writeFileSync(
    agentConf,
    `agent {
    data_dir = "./data"
    log_level = "DEBUG"
    log_format = "json"
    trust_domain = "${TD}"
    trust_bundle_path = "./bundle.pem"
    server_address = "127.0.0.1"
    server_port = "${server.port}"
    socket_path = "./public/api.sock"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`,
  );
  agent = await startAgentProcess({ server, dir: agentDir, joinToken: token, extraArgs: ['-config', agentConf] });
});

after(async () => {
  await agent?.stop();
  await server?.stop();
});

test('spindle-server validate accepts the HCL server.conf', () => {
  const r = spawnSync(serverBin, ['validate', '-config', serverConf], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `${r.stderr}${r.stdout}`);
  assert.match(r.stdout, /Configuration is valid\./);
});

test('server and agent run from HCL config files, and a workload gets its X509-SVID', async () => {
  // Settings only the files give: JSON logs on both sides and the CA's organization.
  for (const [who, log] of [['server', server.log()], ['agent', agent.log()]] as const) {
    const first = log.split('\n').find((l) => l.trim() !== '');
    assert.ok(first !== undefined, `${who} logged nothing`);
    assert.doesNotThrow(() => JSON.parse(first), `${who} logs JSON (log_format from its .conf): ${first}`);
  }
  const c = createWorkloadApiClient({ address: agent.address, backoff: { initialMs: 200, maxMs: 1000 } });
  try {
    const ctx = await c.fetchX509Context({ timeoutMs: 15_000 });
    assert.equal(ctx.defaultSvid.id.toString(), MY_ID);
    const roots = ctx.bundles.get(trustDomainOf(ctx.defaultSvid.id))!.x509Authorities().map((der) => new X509Certificate(der));
    assert.ok(roots.length > 0);
    assert.ok(roots.some((r) => r.subject.includes(`O=${CA_ORG}`)), `the CA subject comes from server.conf's ca_subject: ${roots.map((r) => r.subject).join(' | ')}`);
  } finally {
    c.close();
  }
});

// Several spindle-server processes of one trust domain on ONE PostgreSQL database, end to end:
// real binaries, each with its own data dir (keys, server_id) and ports. Every server's X.509
// authority reaches every server's `bundle show` (the servers hear of each other's bundle writes
// through the datastore's NOTIFY), an X509-SVID minted by one server verifies with openssl
// against the bundle served by another, and an agent attested to one server is pushed the
// authority of a server started after it, and is accepted by another server when restarted
// against it.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { parseJournal } from '../../server/ca/journal.js';
import { certificatesToPem, pemToCertificates } from '../../spiffe/pem.js';
import { parseCertificate } from '../../spiffe/x509/index.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { postgresCluster } from '../support/postgres.js';
import { startServerProcess, tempDir, type ServerProcess } from '../support/serverproc.js';

const running: Array<ServerProcess | AgentProcess> = [];
after(async () => {
  for (const p of running.reverse()) await p.stop();
});

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  assert.equal(r.status, 0, `${what} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const serials = (pem: string): string[] => pemToCertificates(pem).map((d) => parseCertificate(d).serialHex).sort();

/** Polls `probe` every 250 ms until it returns true, for at most `ms`; returns its last answer. */
async function eventually(probe: () => boolean, ms: number): Promise<boolean> {
  for (let waited = 0; waited <= ms; waited += 250) {
    if (probe()) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return probe();
}

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('several spindle-server processes on one PostgreSQL database serve one bundle with every server\'s authorities', async () => {
  const cluster = await postgresCluster();
  const uri = cluster.uri(await cluster.createDatabase());
  const start = async (): Promise<ServerProcess> => {
    const dir = tempDir('spindle-multica-');
    const config = join(dir, 'server.yaml');
    writeFileSync(config, `plugins:\n  DataStore:\n    sql:\n      plugin_data:\n        database_type: postgres\n        connection_string: ${JSON.stringify(uri)}\n        max_open_conns: 4\n`);
    const s = await startServerProcess({ dir, extraArgs: ['-config', config] });
    running.push(s);
    return s;
  };
  /** Each server's own X.509 CA serials, from its journal in the database (keyed by its data_dir/server_id). */
  const ownCas = async (s: ServerProcess): Promise<string[]> => {
    const id = readFileSync(join(s.dataDir, 'server_id'), 'utf8').trim();
    const c = new pg.Client({ connectionString: uri });
    await c.connect();
    try {
      const r = await c.query<{ document: string }>('SELECT document FROM ca_journal WHERE server_id = $1', [id]);
      assert.equal(r.rows.length, 1, `one journal for server ${id}`);
      return parseJournal(r.rows[0]!.document).x509.map((x) => x.id).sort();
    } finally {
      await c.end();
    }
  };

  // Two servers starting at once on an empty database: one migrates, both publish.
  const [a, b] = await Promise.all([start(), start()]);
  const casA = await ownCas(a);
  const casB = await ownCas(b);
  assert.equal(casA.length, 1);
  assert.equal(casB.length, 1);
  assert.notDeepEqual(casA, casB, 'each server has its own CA');
  assert.notEqual(readFileSync(join(a.dataDir, 'server_id'), 'utf8'), readFileSync(join(b.dataDir, 'server_id'), 'utf8'));

  const both = [...casA, ...casB].sort();
  const shows = (s: ServerProcess, want: string[]): boolean => {
    const r = s.cli(['bundle', 'show']);
    return r.status === 0 && want.every((id) => serials(r.stdout).includes(id));
  };
  assert.ok(await eventually(() => shows(a, both), 15_000), `server A's bundle show lists both CAs ${both.join(', ')}:\n${a.cli(['bundle', 'show']).stdout}\n${a.log().slice(-3000)}`);
  assert.ok(await eventually(() => shows(b, both), 15_000), `server B's bundle show lists both CAs:\n${b.cli(['bundle', 'show']).stdout}`);

  // An X509-SVID minted by A verifies against the bundle served by B (and not against B's CA alone).
  const work = tempDir('spindle-multica-svid-');
  ok(a.cli(['x509', 'mint', '-spiffeID', 'spiffe://example.org/minted-by-a', '-write', work]), 'x509 mint on A');
  const bundleB = join(work, 'bundle-from-b.pem');
  writeFileSync(bundleB, ok(b.cli(['bundle', 'show']), 'bundle show on B'));
  const svid = join(work, 'svid.pem');
  const verified = openssl(['verify', '-CAfile', bundleB, '-purpose', 'any', svid]);
  assert.equal(verified.status, 0, `openssl verify of A's SVID against B's bundle:\n${verified.out}`);
  const onlyB = join(work, 'only-b.pem');
  writeFileSync(onlyB, certificatesToPem(pemToCertificates(readFileSync(bundleB, 'utf8')).filter((d) => casB.includes(parseCertificate(d).serialHex))));
  assert.notEqual(openssl(['verify', '-CAfile', onlyB, '-purpose', 'any', svid]).status, 0, 'the SVID needs A\'s CA: B\'s own CA does not verify it');

  // An agent attested to A; a server C started afterwards: the agent is pushed C's authority by A.
  const agent = await startAgentProcess({ server: a, joinToken: generateJoinToken(a) });
  running.push(agent);
  const c = await start();
  const casC = await ownCas(c);
  const agentBundle = join(agent.dataDir, 'bundle.pem');
  const agentHas = (): boolean => existsSync(agentBundle) && [...both, ...casC].every((id) => serials(readFileSync(agentBundle, 'utf8')).includes(id));
  assert.ok(await eventually(agentHas, 20_000), `the agent of server A holds C's CA ${casC.join(', ')}:\n${existsSync(agentBundle) ? serials(readFileSync(agentBundle, 'utf8')).join(', ') : '(no bundle file)'}\n${agent.log().slice(-3000)}`);

  // The same agent, restarted against server B (its SVID from A, no new join token): B accepts it.
  assert.equal(await agent.stop(), 0);
  const moved = await startAgentProcess({ server: b, dir: agent.dir });
  running.push(moved);
  assert.ok(await eventually(() => moved.log().includes('synchronized with the server'), 20_000), `the agent synchronizes with server B:\n${moved.log().slice(-3000)}`);
  assert.doesNotMatch(moved.log(), /initial sync with the server failed/);
});

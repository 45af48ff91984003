// spindle-server on the PostgreSQL datastore, end to end: the real binary started with a config
// file naming `database_type: postgres` (a database of the test cluster), an entry written
// through the admin CLI, and a second server process started on the same database afterwards
// reading it back (the schema is already there: the second start migrates nothing).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { postgresCluster } from '../support/postgres.js';
import { startServerProcess, tempDir, type ServerProcess } from '../support/serverproc.js';

const running: ServerProcess[] = [];
after(async () => {
  for (const s of running) await s.stop();
});

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  assert.equal(r.status, 0, `${what} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('spindle-server runs on PostgreSQL: entries written by one server process are read by the next', async () => {
  const cluster = await postgresCluster();
  const uri = cluster.uri(await cluster.createDatabase());
  const start = async (): Promise<ServerProcess> => {
    const dir = tempDir('spindle-pgsrv-');
    const config = join(dir, 'server.yaml');
    writeFileSync(config, `plugins:\n  DataStore:\n    sql:\n      plugin_data:\n        database_type: postgres\n        connection_string: ${JSON.stringify(uri)}\n        max_open_conns: 4\n`);
    const s = await startServerProcess({ dir, extraArgs: ['-config', config] });
    running.push(s);
    return s;
  };
  const first = await start();
  const out = ok(first.cli(['entry', 'create', '-parentID', 'spiffe://example.org/agent', '-spiffeID', 'spiffe://example.org/web', '-selector', 'unix:uid:1000']), 'entry create');
  const id = /Entry ID\s*:\s*(\S+)/.exec(out)?.[1];
  assert.ok(id, out);
  assert.equal(await first.stop(), 0);
  const second = await start();
  const shown = ok(second.cli(['entry', 'show', '-entryID', id]), 'entry show');
  assert.match(shown, /spiffe:\/\/example\.org\/web/);
  assert.match(shown, /unix:uid:1000/);
});

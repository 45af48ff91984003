// `npm start` (scripts/start.ts) end to end: real server, agent and demo workload processes in a
// temp working directory, so the quickstart's state lives there. One directory, runs in order:
// first run (first identity, a pasted entry create shows as "identity added", Ctrl-C stops
// cleanly), a resume, a restart after the agent was evicted, and a restart after the stored agent
// SVID really expired (a short agent SVID lifetime through SPINDLE_QUICKSTART_AGENT_TTL, then
// waiting past its notAfter). Plus: a server that cannot start is reported with its cause.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseCertificate } from '../spiffe/x509/index.js';
import { pemToCertificates } from '../spiffe/pem.js';
import { freePort, repoRoot, serverBin, tempDir } from './support/serverproc.js';
import { runScript, type ScriptRun } from './support/scriptrun.js';

const startJs = join(repoRoot, 'dist', 'scripts', 'start.js');
const WORKLOAD = 'spiffe://example.org/quickstart/workload';
const MY_SERVICE = 'spiffe://example.org/my/service';

function quickstart(cwd: string, port: number, env: Record<string, string> = {}): ScriptRun {
  return runScript('quickstart', startJs, [], { cwd, env: { SPINDLE_QUICKSTART_PORT: String(port), ...env } });
}

/** The lines printed after the Ctrl-C notice. */
const afterStop = (out: string): string => out.slice(out.indexOf('Stopping the demo workload'));

describe('npm start (the quickstart)', { timeout: 240_000 }, () => {
  const cwd = tempDir('spindle-quickstart-');
  const state = join(cwd, '.spindle', 'quickstart');
  const adminSocket = join(state, 'server', 'admin', 'api.sock');
  let port = 0;

  test('first run: prints the first identity; a pasted entry create shows as "identity added", not a rotation; Ctrl-C stops the demo first and exits 0', async () => {
    port = await freePort();
    const run = quickstart(cwd, port);
    await run.waitFor(/\[2\/4\] generated a join token/);
    await run.waitFor(new RegExp(`first identity +${WORKLOAD}  serial`));
    const [line] = await run.waitFor(/^ +(\S*spindle-server entry create .*)$/m);
    const command = line.trim();
    assert.match(command, new RegExp(`-selector unix:uid:${process.getuid!()}(\\s|$)`), 'the real uid, not a placeholder');
    assert.ok(command.includes(`-socketPath ${adminSocket}`), command);
    // Pasted into a shell as printed, from another directory.
    const pasted = spawnSync('sh', ['-c', command], { cwd: '/', encoding: 'utf8' });
    assert.equal(pasted.status, 0, pasted.stderr + pasted.stdout);
    await run.waitFor(new RegExp(`identity added +${MY_SERVICE}  serial`));
    assert.doesNotMatch(run.out(), new RegExp(`rotated +${MY_SERVICE}`));

    assert.equal(await run.interrupt(), 0);
    const tailOut = afterStop(run.out());
    assert.doesNotMatch(tailOut, /workload API:|error|UNAVAILABLE/i, 'the demo was stopped before the agent');
    assert.equal(run.err(), '', 'nothing on stderr');
  });

  test('second run resumes with the stored agent SVID, no new join token', async () => {
    const run = quickstart(cwd, port);
    await run.waitFor(/\[2\/4\] the agent resumes with its stored SVID/);
    await run.waitFor(new RegExp(`first identity +${WORKLOAD}  serial`));
    await run.waitFor(new RegExp(`first identity +${MY_SERVICE}  serial`));
    assert.doesNotMatch(run.out(), /join token \(node alias/);

    // The admin evicts the agent. A join-token agent cannot attest again by itself: it learns of
    // the eviction from the server, discards its stored SVID and exits; the quickstart says so
    // and stops. The next start has to cope with that.
    const agentId = (JSON.parse(readFileSync(join(state, 'agent', 'data', 'agent_data.json'), 'utf8')) as { agentId: string }).agentId;
    const evict = spawnSync(serverBin, ['agent', 'evict', '-spiffeID', agentId, '-socketPath', adminSocket], { encoding: 'utf8' });
    assert.equal(evict.status, 0, evict.stderr);
    await run.waitFor(/spindle-agent stopped on its own \(exit code 3\); the last error in \S+agent\.log:\n {2}.* ERROR .*evicted/);
    await run.waitFor(/Run npm start again/);
    assert.equal(await run.exited, 1);
    assert.equal(existsSync(join(state, 'agent', 'data', 'agent_svid.pem')), false, 'the agent discarded its SVID');
  });

  test('after an eviction, the next start attests again with a new join token and the entries still apply', async () => {
    // A short agent SVID lifetime from here on, for the expiry test that follows.
    const run = quickstart(cwd, port, { SPINDLE_QUICKSTART_AGENT_TTL: '4' });
    await run.waitFor(/\[2\/4\] the server no longer knows the agent \S+ \(it was evicted\); attesting again with a new join token/);
    await run.waitFor(new RegExp(`first identity +${WORKLOAD}  serial`));
    await run.waitFor(new RegExp(`first identity +${MY_SERVICE}  serial`));
    assert.equal(await run.interrupt(), 0);
    assert.equal(run.err(), '');
  });

  test('after the stored agent SVID expired while stopped, the next start attests again by itself', async () => {
    const svid = parseCertificate(pemToCertificates(readFileSync(join(state, 'agent', 'data', 'agent_svid.pem'), 'utf8'))[0]!);
    const wait = svid.notAfter.getTime() - Date.now() + 1_000;
    assert.ok(wait < 10_000, `the agent SVID has the short lifetime (expires ${svid.notAfter.toISOString()})`);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    assert.ok(svid.notAfter.getTime() < Date.now(), 'the stored SVID has expired');

    const run = quickstart(cwd, port, { SPINDLE_QUICKSTART_AGENT_TTL: '4' });
    await run.waitFor(/\[2\/4\] the agent's stored identity expired while the quickstart was stopped \(at [^)]+\); attesting again with a new join token/);
    await run.waitFor(new RegExp(`first identity +${WORKLOAD}  serial`));
    // The stale agents and their alias entries were removed: one agent, one alias entry.
    const admin = (args: string[]): unknown => JSON.parse(spawnSync(serverBin, [...args, '-socketPath', adminSocket, '-output', 'json'], { encoding: 'utf8' }).stdout);
    const agents = admin(['agent', 'list']) as { agents?: unknown[] };
    assert.equal(agents.agents?.length, 1, JSON.stringify(agents));
    const aliases = admin(['entry', 'show', '-spiffeID', 'spiffe://example.org/quickstart/node']) as { entries?: unknown[] };
    assert.equal(aliases.entries?.length, 1, JSON.stringify(aliases));
    assert.equal(await run.interrupt(), 0);
    assert.equal(run.err(), '');
  });

  test('a server that cannot start is reported with its cause, not an empty log tail', async () => {
    const busy = createServer();
    const busyPort = await freePort();
    await new Promise<void>((res) => busy.listen(busyPort, '127.0.0.1', res));
    try {
      const run = quickstart(tempDir('spindle-quickstart-busy-'), busyPort);
      assert.equal(await run.exited, 1);
      // The cause is in the failure message itself (fatal start errors go to the server's
      // stderr, not its log file, so a log tail alone would be empty).
      const message = run.err().slice(run.err().indexOf('quickstart failed: server did not start'));
      assert.ok(message.startsWith('quickstart failed'), run.err());
      assert.match(message, new RegExp(`EADDRINUSE|${busyPort}.*(in use|already)`, 'i'), run.err());
    } finally {
      busy.close();
    }
  });
});

// SIGTERM ends spindle-server and spindle-agent promptly while they have live connections (an
// attested agent with its sync stream, a workload watching the Workload API, an idle admin
// client that just made a call), exit 0, and the last log lines reach the -logFile.
// The exit time is logged; the bound (1.5 s) is generous on purpose: the work itself takes
// milliseconds, and a graceful-shutdown fallback timer (2 s or more) would exceed it.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentBin, serverBin } from './support/paths.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { freePort, startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';

const EXIT_BOUND_MS = 1500;

let server: ServerProcess | undefined;
let agent: AgentProcess | undefined;
let watcher: ChildProcess | undefined;
after(async () => {
  watcher?.kill('SIGKILL');
  await agent?.stop('SIGKILL');
  await server?.stop('SIGKILL');
});

async function timedStop(p: { stop(signal?: NodeJS.Signals): Promise<number | null> }): Promise<{ code: number | null; ms: number }> {
  const t0 = performance.now();
  const code = await p.stop('SIGTERM');
  return { code, ms: Math.round(performance.now() - t0) };
}

test('SIGTERM: agent and server exit promptly with live connections', async (t) => {
  server = await startServerProcess();
  const token = generateJoinToken(server);
  agent = await startAgentProcess({ server, joinToken: token });
  // An idle admin connection: the CLI call above (token generate) has closed; this one is the
  // test's own, left open during the shutdown.
  const idle = server.cli(['entry', 'count']);
  assert.equal(idle.status, 0, idle.stderr);
  const entry = server.cli(['entry', 'create', '-parentID', `spiffe://${server.trustDomain}/spire/agent/join_token/${token}`, '-spiffeID', `spiffe://${server.trustDomain}/w`, '-selector', `unix:uid:${process.getuid!()}`]);
  assert.equal(entry.status, 0, entry.stderr);

  // A workload stream that stays open (api watch prints each update).
  watcher = spawn(agentBin, ['api', 'watch', '-socketPath', agent.socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let watched = '';
  watcher.stdout!.on('data', (d: Buffer) => (watched += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`api watch received nothing:\n${watched}`)), 20_000);
    watcher!.stdout!.on('data', () => {
      if (watched.includes(`spiffe://${server!.trustDomain}/w`)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });

  const a = await timedStop(agent);
  t.diagnostic(`agent SIGTERM -> exit: ${a.ms} ms`);
  assert.equal(a.code, 0, agent.log().slice(-1500));
  assert.ok(a.ms < EXIT_BOUND_MS, `agent took ${a.ms} ms to exit after SIGTERM`);
  assert.match(agent.log(), /Workload API stopped/);

  const s = await timedStop(server);
  t.diagnostic(`server SIGTERM -> exit: ${s.ms} ms`);
  assert.equal(s.code, 0, server.log().slice(-1500));
  assert.ok(s.ms < EXIT_BOUND_MS, `server took ${s.ms} ms to exit after SIGTERM`);
  assert.match(server.log(), /admin API stopped/);
});

test('SIGTERM with -logFile: the lines logged while stopping are in the file', async (t) => {
  const dir = tempDir('spindle-shutdown-log-');
  const logFile = join(dir, 'server.log');
  const port = await freePort();
  const proc = spawn(serverBin, ['run', '-trustDomain', 'example.org', '-dataDir', join(dir, 'data'), '-socketPath', join(dir, 'admin', 'api.sock'), '-bindAddress', '127.0.0.1', '-serverPort', String(port), '-logFile', logFile], { stdio: 'ignore' });
  const read = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  for (let i = 0; i < 400 && !read().includes('spindle-server is ready'); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(read(), /spindle-server is ready/);
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve) => {
    proc.once('exit', resolve);
    proc.kill('SIGTERM');
  });
  t.diagnostic(`server (-logFile) SIGTERM -> exit: ${Math.round(performance.now() - t0)} ms`);
  assert.equal(code, 0);
  const lines = read().trimEnd().split('\n');
  assert.match(lines.at(-1)!, /admin API stopped/, `last lines of the log file:\n${lines.slice(-3).join('\n')}`);
});

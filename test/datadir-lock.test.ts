// One process per data directory: a second spindle-server or spindle-agent on a data directory
// in use is refused (naming the directory and the pid holding it) and the first keeps serving;
// a lock left by a dead process is taken over with a log line; the lock goes away on exit.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateJoinToken, startAgentProcess, type AgentProcess } from './support/agentproc.js';
import { startServerProcess, tempDir, type ServerProcess } from './support/serverproc.js';

const LOCK = 'spindle.lock';

/** A pid that belonged to a process which has exited (its own, just reaped). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail('expected the second process to exit before it was ready');
}

describe('data directory lock', () => {
  let server: ServerProcess | undefined;
  let agent: AgentProcess | undefined;
  after(async () => {
    await agent?.stop('SIGKILL');
    await server?.stop('SIGKILL');
  });

  test('a second spindle-server on the same data directory is refused; the first keeps serving', async () => {
    server = await startServerProcess();
    const lockPath = join(server.dataDir, LOCK);
    assert.equal(readFileSync(lockPath, 'utf8').trim(), String(server.proc.pid), 'the lock holds the server pid');
    const message = await rejection(startServerProcess({ extraArgs: ['-dataDir', server.dataDir] }));
    assert.match(message, /exited with 1 before it was ready/);
    assert.ok(
      message.includes(`Error: server data directory ${server.dataDir} is in use by process ${server.proc.pid}`),
      message,
    );
    assert.match(server.cli(['entry', 'count']).stdout, /0 registration entries/, 'the first server still serves');
    assert.equal(readFileSync(lockPath, 'utf8').trim(), String(server.proc.pid), 'the refused server left the lock alone');
  });

  test('a second spindle-agent on the same data directory is refused; the first keeps running', async () => {
    assert.ok(server);
    agent = await startAgentProcess({ server, joinToken: generateJoinToken(server) });
    assert.equal(readFileSync(join(agent.dataDir, LOCK), 'utf8').trim(), String(agent.proc.pid));
    const message = await rejection(startAgentProcess({ server, dir: agent.dir, readyTimeoutMs: 20_000 }));
    assert.ok(message.includes(`Error: agent data directory ${agent.dataDir} is in use by process ${agent.proc.pid}`), message);
    assert.equal(agent.proc.exitCode, null, 'the first agent is still running');
    assert.ok(existsSync(agent.socketPath), 'its Workload API socket is still there');
  });

  test('SIGTERM removes the lock, so the same data directory starts again', async () => {
    assert.ok(server && agent);
    assert.equal(await agent.stop('SIGTERM'), 0);
    assert.ok(!existsSync(join(agent.dataDir, LOCK)), 'agent lock removed on exit');
    assert.equal(await server.stop('SIGTERM'), 0);
    assert.ok(!existsSync(join(server.dataDir, LOCK)), 'server lock removed on exit');
    server = await startServerProcess({ dir: server.dir });
    assert.doesNotMatch(server.log(), /stale data directory lock/);
  });

  test('a lock left by a process that is gone is taken over, with a log line', async () => {
    assert.ok(server);
    await server.stop('SIGTERM');
    const dir = tempDir('spindle-stale-lock-');
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const pid = deadPid();
    writeFileSync(join(dataDir, LOCK), `${pid}\n`, { mode: 0o600 });
    server = await startServerProcess({ dir });
    assert.match(server.log(), new RegExp(`took over a stale data directory lock.*stale_pid=${pid}`));
    assert.equal(readFileSync(join(dataDir, LOCK), 'utf8').trim(), String(server.proc.pid));
  });
});

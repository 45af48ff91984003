/**
 * Server failover (`--only failover`): two spindle-server processes of one trust domain on one
 * PostgreSQL database (127.0.0.1:P and 127.0.0.2:P, a private cluster from
 * test/support/postgres.ts), N real spindle-agent processes configured with both
 * (`-serverAddress 127.0.0.1,127.0.0.2`). The agents start while only server A runs, so all of
 * them sync through A; then B starts (its authority reaches the agents in the shared bundle) and
 * A is killed with SIGKILL. Figure: for each agent, the time from the kill to the agent's log line
 * saying it synced again (`reconnected to the server`, naming B), p50 and p99 over the N agents,
 * all failing over at once. Same-run baseline: the same agents' time from spawn to their first
 * sync at startup (node start, attestation with a join token, first SyncAuthorized).
 *
 * The fault test (test/faults/failover.test.ts) asserts what workloads see during a failover
 * (no error, valid SVIDs, entries pushed through the survivor); how fast it is is a target, so
 * it lives here.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pemToCertificates } from '../../spiffe/pem.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../../test/support/agentproc.js';
import { postgresCluster } from '../../test/support/postgres.js';
import { startServerProcess, tempDir, type ServerProcess } from '../../test/support/serverproc.js';
import type { Row } from '../table.js';

const TD = 'example.org';
const TARGET_P99_MS = 5000;
/** Agents started at once (each is a node process; two cores). */
const START_CONCURRENCY = 4;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const wallOf = (line: string): number => Date.parse(line.slice(0, 24));
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

async function until(probe: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

export async function benchFailover(opts: { agents: number }): Promise<Row[]> {
  const servers: ServerProcess[] = [];
  const agents: AgentProcess[] = [];
  try {
    const cluster = await postgresCluster();
    const uri = cluster.uri(await cluster.createDatabase());
    const start = async (bindAddress: string, port?: number): Promise<ServerProcess> => {
      const dir = tempDir('spindle-bench-failover-');
      const config = join(dir, 'server.yaml');
      writeFileSync(config, `plugins:\n  DataStore:\n    sql:\n      plugin_data:\n        database_type: postgres\n        connection_string: ${JSON.stringify(uri)}\n        max_open_conns: 8\n`);
      const s = await startServerProcess({ dir, trustDomain: TD, bindAddress, ...(port !== undefined ? { port } : {}), extraArgs: ['-config', config, '-logLevel', 'INFO'] });
      servers.push(s);
      return s;
    };
    const a = await start('127.0.0.1');
    const list = `127.0.0.1,127.0.0.2`;
    const firstSync: number[] = [];
    const startOne = async (): Promise<void> => {
      const token = generateJoinToken(a);
      const spawned = Date.now();
      const agent = await startAgentProcess({ server: a, joinToken: token, serverAddress: list, extraArgs: ['-logLevel', 'INFO'] });
      agents.push(agent);
      await until(() => agent.log().includes('synchronized with the server'), 20_000, 'first sync');
      const line = agent.log().split('\n').find((l) => l.includes('synchronized with the server'))!;
      firstSync.push(wallOf(line) - spawned);
    };
    for (let i = 0; i < opts.agents; i += START_CONCURRENCY) {
      await Promise.all(Array.from({ length: Math.min(START_CONCURRENCY, opts.agents - i) }, () => startOne()));
    }
    const b = await start('127.0.0.2', a.port);
    // Every agent trusts B (its authority pushed in the shared bundle) before A goes.
    const bundleOf = (x: AgentProcess): number => {
      const p = join(x.dataDir, 'bundle.pem');
      return existsSync(p) ? pemToCertificates(readFileSync(p, 'utf8')).length : 0;
    };
    await until(() => agents.every((x) => bundleOf(x) >= 2), 30_000, "B's authority reaching every agent");
    const marks = agents.map((x) => x.log().length);

    await a.stop('SIGKILL');
    const killed = Date.now();
    const bAddr = `${b.host}:${b.port}`;
    const resynced = (x: AgentProcess, k: number): string | undefined =>
      x.log().slice(marks[k]).split('\n').find((l) => l.includes('reconnected to the server') && l.includes(`server=${bAddr}`));
    await until(() => agents.every((x, k) => resynced(x, k) !== undefined), 30_000, 'every agent synced through B');
    const delays = agents.map((x, k) => wallOf(resynced(x, k)!) - killed);
    const p50 = pct(delays, 50);
    const p99 = pct(delays, 99);
    return [
      {
        figure: `failover: server killed -> all its agents synced elsewhere, ${delays.length} agents (p50 / p99)`,
        measured: `${p50} / ${p99} ms (max ${Math.max(...delays)} ms)`,
        target: `p99 <= ${TARGET_P99_MS} ms`,
        baseline: `${pct(firstSync, 50)} / ${pct(firstSync, 99)} ms (the same agents' first sync at startup, from spawn)`,
        pass: p99 <= TARGET_P99_MS,
      },
    ];
  } finally {
    for (const x of agents) await x.stop('SIGKILL');
    for (const s of servers) await s.stop('SIGKILL');
  }
}

// End to end: the per-caller limits as configured in a real spindle-agent process (config file
// keys under `agent`), refusing a flood with RESOURCE_EXHAUSTED and counting it in /metrics.
import { credentials, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { SpiffeWorkloadAPIClient } from '../../proto/gen/workload/workload.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../../test/support/agentproc.js';
import { freePort, startServerProcess, type ServerProcess } from '../../test/support/serverproc.js';
import { headerMetadata } from './testkit.js';
import { scrapeMetrics } from '../../test/support/metrics.js';

let server: ServerProcess;
let agent: AgentProcess;
let metricsPort: number;

before(async () => {
  server = await startServerProcess();
  metricsPort = await freePort();
  const config = join(server.dir, 'agent-limits.yaml');
  writeFileSync(
    config,
    [
      'agent:',
      '  workload_api_rate_limit_per_pid: 1',
      '  workload_api_rate_burst_per_pid: 3',
      'telemetry:',
      '  Prometheus:',
      '    host: 127.0.0.1',
      `    port: ${metricsPort}`,
      '',
    ].join('\n'),
  );
  agent = await startAgentProcess({ server, joinToken: generateJoinToken(server), extraArgs: ['-config', config] });
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  if (agent) rmSync(agent.dir, { recursive: true, force: true });
  if (server) rmSync(server.dir, { recursive: true, force: true });
});

const metrics = (): Promise<string> => scrapeMetrics(metricsPort);

test('a configured rate limit refuses a flood with RESOURCE_EXHAUSTED naming the key, counted in /metrics', async () => {
  const client = new SpiffeWorkloadAPIClient(`unix:${agent.socketPath}`, credentials.createInsecure());
  try {
    const results = await Promise.all(
      Array.from({ length: 30 }, () => new Promise<ServiceError | null>((resolve) => client.fetchJwtsvid({ audience: ['a'], spiffeId: '' }, headerMetadata(), (err) => resolve(err)))),
    );
    // No entry for this process: admitted calls end PERMISSION_DENIED (or UNAVAILABLE before the first sync).
    const refused = results.filter((r) => r?.code === GrpcStatus.RESOURCE_EXHAUSTED);
    const admitted = results.length - refused.length;
    assert.ok(admitted >= 3 && admitted <= 5, `the burst of 3 (plus at most a refill or two) is admitted, got ${admitted}`);
    assert.match(refused[0]!.details, /at most 1 calls per second, burst 3 \(agent\.workload_api_rate_limit_per_pid\)/);
    const text = await metrics();
    const line = text.split('\n').find((l) => l.startsWith('spindle_agent_workload_api_refused_total{') && l.includes('api="workload"') && l.includes('reason="rate"') && l.includes('scope="process"'));
    assert.ok(line, `refused counter in /metrics:\n${text.split('\n').filter((l) => l.includes('workload_api')).join('\n')}`);
    assert.equal(Number(line.slice(line.lastIndexOf(' ') + 1)), refused.length);
    assert.match(text, /spindle_agent_workload_api_open_streams\{api="sds"\} 0/);
  } finally {
    client.close();
  }
});

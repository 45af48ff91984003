/**
 * `npm run bench`: runs the benchmarks and prints each figure next to its target and a baseline
 * measured in the same run: one table per scenario, then a summary of every row with a target.
 * Options: --only a,b (issuance, issuance-api, propagation, scale, admin, admin-postgres, cli, fanout, rotation,
 * memory, agent-restart, failover, sdk-handshake, sdk-keepalive, coldstart-postgres, storm-postgres,
 * propagation-cross, proxy-throughput, proxy-requests, proxy-latency), --quick (small sizes), --seconds N (per in-process figure, default 3), --csrs N,
 * sizes (--entries, --agents, --burst, --workloads, --client-procs, --rotations, --sdk-rounds) and profiling
 * (--server-cpu-prof DIR, --agent-cpu-prof DIR, --proxy-cpu-prof DIR, --sdk-cpu-prof DIR: the SDK bench's server and client processes).
 * Benchmarks never run inside `npm test`.
 */
import { parseArgs } from 'node:util';
import { benchIssuance } from './issuance.js';
import { printTable, type Row } from './table.js';
import { isSelected, runServerScenarios, SERVER_BENCH_OPTIONS } from './server/scenarios.js';
import { AGENT_BENCH_OPTIONS, runAgentScenarios } from './scenarios/fanout.js';
import { benchAgentRestart } from './scenarios/agentrestart.js';
import { runMultiServerScenarios } from './server/multiserver.js';
import { benchFailover } from './scenarios/failover.js';
import { PROXY_BENCH_OPTIONS, runProxyScenarios } from './scenarios/proxy.js';
import { benchSdk, SDK_DEFAULTS, SDK_QUICK } from './scenarios/sdk.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    csrs: { type: 'string', default: '200' },
    'sdk-rounds': { type: 'string' },
    'sdk-cpu-prof': { type: 'string' },
    ...SERVER_BENCH_OPTIONS,
    ...AGENT_BENCH_OPTIONS,
    ...PROXY_BENCH_OPTIONS,
  },
});
const seconds = Number(values.seconds);
const csrs = Number(values.csrs);
if (!(seconds > 0) || !(csrs > 0)) {
  console.error('usage: npm run bench -- [--seconds N] [--csrs N]');
  process.exit(2);
}

const started = performance.now();
console.log(`Spindle benchmarks (node ${process.version}, ${seconds}s per figure)\n`);
const rows: Row[] = [];
if (isSelected(values, 'issuance')) {
  console.log('Issuance (spiffe/ signing path, one thread):');
  const issuance = await benchIssuance({ seconds, csrs });
  printTable(issuance);
  rows.push(...issuance);
}
// Server-side scenarios (--only issuance-api,propagation,scale,admin,admin-postgres,cli; --quick; --entries; --agents).
rows.push(...(await runServerScenarios(values, seconds)));
// Agent-side scenarios (--only fanout,rotation,memory; --quick; --workloads; --client-procs; --rotations; --agent-cpu-prof DIR).
rows.push(...(await runAgentScenarios(values)));
if (isSelected(values, 'agent-restart')) {
  console.log('\nAgent restart (SIGKILL, then resumed from its data dir, watches open):');
  let restart: Row[];
  try {
    restart = await benchAgentRestart({ watches: values.quick === true ? 30 : 120 });
  } catch (err) {
    restart = [{ figure: 'agent-restart: scenario failed', measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
  }
  printTable(restart);
  rows.push(...restart);
}
if (isSelected(values, 'failover')) {
  console.log('\nServer failover (two servers on one PostgreSQL database, SIGKILL of the one every agent uses):');
  let failover: Row[];
  try {
    failover = await benchFailover({ agents: values.quick === true ? 10 : 30 });
  } catch (err) {
    failover = [{ figure: 'failover: scenario failed', measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
  }
  printTable(failover);
  rows.push(...failover);
}

const sdkHandshake = isSelected(values, 'sdk-handshake');
const sdkKeepalive = isSelected(values, 'sdk-keepalive');
if (sdkHandshake || sdkKeepalive) {
  console.log('\nNode SDK mTLS (spiffe/sdk/tlsconfig.ts) vs plain node mutual TLS, same certificates, alternating rounds:');
  const size = values.quick === true ? SDK_QUICK : SDK_DEFAULTS;
  const rounds = values['sdk-rounds'] !== undefined ? Number(values['sdk-rounds']) : size.rounds;
  let sdk: Row[];
  try {
    sdk = await benchSdk({
      ...size,
      rounds: Number.isInteger(rounds) && rounds > 0 ? rounds : size.rounds,
      handshake: sdkHandshake,
      keepalive: sdkKeepalive,
      ...(values['sdk-cpu-prof'] !== undefined ? { cpuProfDir: values['sdk-cpu-prof'] } : {}),
    });
  } catch (err) {
    sdk = [{ figure: 'sdk: scenario failed', measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
  }
  printTable(sdk);
  rows.push(...sdk);
}

// Several servers on one PostgreSQL (--only coldstart-postgres,storm-postgres,propagation-cross).
rows.push(...(await runMultiServerScenarios(values)));
// spindle-proxy's data path (--only proxy-throughput,proxy-requests,proxy-latency; --proxy-cpu-prof DIR).
rows.push(...(await runProxyScenarios(values, seconds)));

const targeted = rows.filter((r) => r.pass !== undefined);
console.log(`\nSummary: ${targeted.filter((r) => r.pass).length} of ${targeted.length} targets met in ${((performance.now() - started) / 1000).toFixed(0)} s`);
printTable(targeted);

/**
 * `npm run bench`: runs the benchmarks and prints each figure next to its target and a baseline
 * measured in the same run. Options: --seconds N (per figure, default 3), --csrs N (default 200).
 * Benchmarks never run inside `npm test`.
 */
import { parseArgs } from 'node:util';
import { benchIssuance } from './issuance.js';
import { printTable } from './table.js';
import { isSelected, runServerScenarios, SERVER_BENCH_OPTIONS } from './server/scenarios.js';
import { AGENT_BENCH_OPTIONS, runAgentScenarios } from './scenarios/fanout.js';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '3' }, csrs: { type: 'string', default: '200' }, ...SERVER_BENCH_OPTIONS, ...AGENT_BENCH_OPTIONS },
});
const seconds = Number(values.seconds);
const csrs = Number(values.csrs);
if (!(seconds > 0) || !(csrs > 0)) {
  console.error('usage: npm run bench -- [--seconds N] [--csrs N]');
  process.exit(2);
}

console.log(`Spindle benchmarks (node ${process.version}, ${seconds}s per figure)\n`);
if (isSelected(values, 'issuance')) {
  console.log('Issuance (spiffe/ signing path, one thread):');
  printTable(await benchIssuance({ seconds, csrs }));
}
// Server-side scenarios (--only issuance-api,propagation,scale,admin; --quick; --entries; --agents).
await runServerScenarios(values, seconds);
// Agent-side scenarios (--only fanout,rotation,memory; --quick; --workloads; --client-procs; --rotations; --agent-cpu-prof DIR).
await runAgentScenarios(values);

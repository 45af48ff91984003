/**
 * `npm run bench`: runs the benchmarks and prints each figure next to its target and a baseline
 * measured in the same run. Options: --seconds N (per figure, default 3), --csrs N (default 200).
 * Benchmarks never run inside `npm test`.
 */
import { parseArgs } from 'node:util';
import { benchIssuance } from './issuance.js';
import { printTable } from './table.js';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '3' }, csrs: { type: 'string', default: '200' } },
});
const seconds = Number(values.seconds);
const csrs = Number(values.csrs);
if (!(seconds > 0) || !(csrs > 0)) {
  console.error('usage: npm run bench -- [--seconds N] [--csrs N]');
  process.exit(2);
}

console.log(`Spindle benchmarks (node ${process.version}, ${seconds}s per figure)\n`);
console.log('Issuance (spiffe/ signing path, one thread):');
printTable(await benchIssuance({ seconds, csrs }));

/**
 * Rotation push: with every workload stream open (fanout.ts sets them up), the workloads' entry
 * is updated over the admin API; the server pushes the change to the agent, the agent makes a
 * key, has the CSR signed and pushes the new SVID on every stream. Per stream and round: ms
 * from the update call (the trigger) to the new message's arrival, so the figure includes the
 * server round trip and the signing as well as the fan-out itself.
 * Baseline: the raw Unix-socket fan-out floor (bench/baselines/netfanout.ts), ms from the first
 * write to each client's complete 1.5 KB buffer, with the same number of connections and rounds.
 */
import { ms, percentile } from '../stats.js';
import type { Row } from '../table.js';

export interface RotationSamples {
  /** ms per stream and round, trigger -> delivery. */
  agent: number[];
  /** ms per connection and round, first write -> delivery. */
  floor: number[];
  rounds: number;
}

export function rotationRows(s: RotationSamples, n: number): Row[] {
  const a99 = percentile(s.agent, 99);
  const f99 = percentile(s.floor, 99);
  return [
    { figure: `rotation delivery p50 (${n} streams x ${s.rounds})`, measured: ms(percentile(s.agent, 50)), target: '-', baseline: `net floor: ${ms(percentile(s.floor, 50))}` },
    { figure: `rotation delivery p99 (${n} streams x ${s.rounds})`, measured: ms(a99), target: `<= 3x floor (${ms(3 * f99)})`, baseline: `net floor: ${ms(f99)}`, pass: a99 <= 3 * f99 },
    { figure: 'rotation: last stream delivered', measured: ms(Math.max(...s.agent)), target: '-', baseline: `net floor: ${ms(Math.max(...s.floor))}` },
  ];
}

/**
 * Agent memory: the agent process's resident set size (VmRSS) with its SVID cached and no
 * workload connected, then with every workload stream open (fanout.ts sets them up), each read a
 * second after the burst. Growth is scaled to 1,000 streams. Baseline: the bare grpc-js server's
 * growth with the same streams and the same client code.
 */
import type { Row } from '../table.js';

export interface MemorySample {
  /** RSS bytes before any workload connection. */
  before: number;
  /** RSS bytes with `streams` streams open. */
  after: number;
  streams: number;
}

const MB = 1024 * 1024;
const mb = (b: number): string => `${(b / MB).toFixed(1)} MB`;
/** Growth per 1,000 streams, bytes. */
const growthPer1000 = (s: MemorySample): number => ((s.after - s.before) * 1000) / s.streams;

export function memoryRows(agent: MemorySample, bare: MemorySample): Row[] {
  const g = growthPer1000(agent);
  const b = growthPer1000(bare);
  return [
    {
      figure: 'agent RSS growth per 1,000 streams',
      measured: mb(g),
      target: `<= 100 MB and <= 1.5x bare (${mb(1.5 * b)})`,
      baseline: `bare grpc-js: ${mb(b)}`,
      pass: g <= 100 * MB && g <= 1.5 * b,
    },
    {
      figure: `agent RSS before / with ${agent.streams} streams`,
      measured: `${mb(agent.before)} / ${mb(agent.after)}`,
      target: '-',
      baseline: `bare: ${mb(bare.before)} / ${mb(bare.after)}`,
    },
  ];
}

/**
 * Admin CLI round trip: wall time of whole `spindle-server entry show` and `entry create`
 * processes (spawn to exit, each a call over the admin socket of a real server) against the
 * same run's `node -e 0`, the floor any Node CLI pays. Runs alternate (node -e 0, show, create)
 * so load on the machine hits all three alike; medians of `runs` each. Target: the slower of
 * the two medians at most 1.6x node -e 0.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverBin } from '../../test/support/paths.js';
import { startBenchServer, TRUST_DOMAIN, type BenchServer } from '../server/proc.js';
import type { Row } from '../table.js';

export interface CliBenchOptions {
  /** Runs of each command. */
  runs: number;
}

export const CLI_DEFAULTS: CliBenchOptions = { runs: 15 };
export const CLI_QUICK: CliBenchOptions = { runs: 7 };
export const CLI_TARGET_RATIO = 1.6;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** Wall milliseconds of one process run; throws when it fails. */
function timed(cmd: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${[cmd, ...args].join(' ')} exited ${r.status ?? r.signal}: ${r.stderr.split('\n')[0]}`);
  return ms;
}

export async function benchCli(opts: CliBenchOptions): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-cli-'));
  let server: BenchServer | undefined;
  try {
    server = await startBenchServer({ dir });
    const socket = ['-socketPath', server.socketPath];
    const parent = `spiffe://${TRUST_DOMAIN}/spire/agent/bench/cli`;
    const create = (i: number): string[] => ['entry', 'create', '-parentID', parent, '-spiffeID', `spiffe://${TRUST_DOMAIN}/cli/w${i}`, '-selector', `unix:uid:${i}`, ...socket];
    const show = ['entry', 'show', '-parentID', parent, ...socket];
    // Warm-up: disk cache for node, the checkout and the server's first calls.
    timed(process.execPath, ['-e', '0']);
    timed(serverBin, create(-1));
    timed(serverBin, show);
    const base: number[] = [];
    const shows: number[] = [];
    const creates: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      base.push(timed(process.execPath, ['-e', '0']));
      shows.push(timed(serverBin, show));
      creates.push(timed(serverBin, create(i)));
    }
    const b = median(base);
    const s = median(shows);
    const c = median(creates);
    const ratio = Math.max(s, c) / b;
    return [
      {
        figure: `admin CLI round trip (entry show / entry create) median vs node -e 0, ${opts.runs} runs each`,
        measured: `${s.toFixed(0)} / ${c.toFixed(0)} ms = ${(s / b).toFixed(2)}x / ${(c / b).toFixed(2)}x`,
        target: `<= ${CLI_TARGET_RATIO}x`,
        baseline: `node -e 0: ${b.toFixed(0)} ms`,
        pass: ratio <= CLI_TARGET_RATIO,
      },
    ];
  } finally {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The server-side scenarios as bench/run.ts runs them: their command-line options, selection
 * with --only, --quick sizes, and one table per scenario. A scenario that throws prints a row
 * with the error instead of aborting the run.
 */
import { ADMIN_DEFAULTS, ADMIN_QUICK, benchAdminWrites, benchAdminWritesPostgres } from '../scenarios/admin.js';
import { benchCli, CLI_DEFAULTS, CLI_QUICK } from '../scenarios/cli.js';
import { benchIssuanceApi, ISSUANCE_API_DEFAULTS, ISSUANCE_API_QUICK } from '../scenarios/issuance-api.js';
import { benchPropagation, PROPAGATION_DEFAULTS, PROPAGATION_QUICK } from '../scenarios/propagation.js';
import { benchScale, SCALE_DEFAULTS, SCALE_QUICK } from '../scenarios/scale.js';
import { printTable, type Row } from '../table.js';
import { setServerNodeArgs } from './proc.js';

/** parseArgs options the server scenarios read (all strings/booleans, no defaults: sizes default per scenario). */
export const SERVER_BENCH_OPTIONS = {
  only: { type: 'string' },
  quick: { type: 'boolean' },
  entries: { type: 'string' },
  agents: { type: 'string' },
  burst: { type: 'string' },
  'server-cpu-prof': { type: 'string' },
} as const;

export interface ServerBenchValues {
  only?: string;
  quick?: boolean;
  entries?: string;
  agents?: string;
  burst?: string;
  'server-cpu-prof'?: string;
}

export const SERVER_SCENARIOS = ['issuance-api', 'propagation', 'scale', 'admin', 'admin-postgres', 'cli'] as const;

/** Whether `name` runs under --only (no --only: everything runs). */
export function isSelected(values: { only?: string }, name: string): boolean {
  if (values.only === undefined || values.only === '') return true;
  return values.only.split(',').map((s) => s.trim()).includes(name);
}

/** A positive integer option's value, or `fallback` when it is not given. */
export function int(v: string | undefined, fallback: number, flag: string): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${flag} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

/** Runs the selected server scenarios in order, printing one table each; returns every row. */
export async function runServerScenarios(values: ServerBenchValues, seconds: number): Promise<Row[]> {
  if (values['server-cpu-prof']) setServerNodeArgs(['--cpu-prof', `--cpu-prof-dir=${values['server-cpu-prof']}`]);
  const q = values.quick === true;
  const scale = q ? SCALE_QUICK : SCALE_DEFAULTS;
  const prop = q ? PROPAGATION_QUICK : PROPAGATION_DEFAULTS;
  const issue = q ? ISSUANCE_API_QUICK : { ...ISSUANCE_API_DEFAULTS, seconds };
  const scenarios: Array<{ name: string; title: string; run: () => Promise<Row[]> }> = [
    { name: 'issuance-api', title: 'Issuance through the agent API (real server process):', run: () => benchIssuanceApi(issue) },
    {
      name: 'propagation',
      title: 'Propagation (admin API -> server -> agent process -> workload stream):',
      run: () => benchPropagation({ ...prop, burst: int(values.burst, prop.burst, 'burst') }),
    },
    {
      name: 'scale',
      title: 'Server scale:',
      run: () => benchScale({ ...scale, entries: int(values.entries, scale.entries, 'entries'), agents: int(values.agents, scale.agents, 'agents') }),
    },
    { name: 'admin', title: 'Admin writes (admin API on the Unix socket, durable SQLite):', run: () => benchAdminWrites(q ? ADMIN_QUICK : ADMIN_DEFAULTS) },
    {
      name: 'admin-postgres',
      title: 'Admin writes with the server on PostgreSQL (a private local cluster, fsync on), beside SQLite in the same run:',
      run: () => benchAdminWritesPostgres(q ? ADMIN_QUICK : ADMIN_DEFAULTS),
    },
    { name: 'cli', title: 'Admin CLI (whole spindle-server processes against a real server):', run: () => benchCli(q ? CLI_QUICK : CLI_DEFAULTS) },
  ];
  const all: Row[] = [];
  for (const s of scenarios) {
    if (!isSelected(values, s.name)) continue;
    console.log(`\n${s.title}`);
    let rows: Row[];
    try {
      rows = await s.run();
    } catch (err) {
      rows = [{ figure: `${s.name}: scenario failed`, measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
    }
    printTable(rows);
    all.push(...rows);
  }
  return all;
}

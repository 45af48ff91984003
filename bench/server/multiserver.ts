/**
 * The scenarios of several servers on one PostgreSQL database, as bench/run.ts runs them
 * (each beside a same-run baseline): --only coldstart-postgres, storm-postgres,
 * propagation-cross; --quick sizes; --entries and --agents size the PostgreSQL fleet as they
 * size the scale scenario. A scenario that throws prints a row with the error instead of
 * aborting the run.
 */
import { benchCrossPropagation, CROSS_PROPAGATION_DEFAULTS, CROSS_PROPAGATION_QUICK } from '../scenarios/propagation-cross.js';
import { benchPostgresScale, POSTGRES_SCALE_DEFAULTS, POSTGRES_SCALE_QUICK } from '../scenarios/postgres-scale.js';
import { printTable, type Row } from '../table.js';
import { int, isSelected, type ServerBenchValues } from './scenarios.js';

export const MULTISERVER_SCENARIOS = ['coldstart-postgres', 'storm-postgres', 'propagation-cross'] as const;

async function table(name: string, title: string, run: () => Promise<Row[]>): Promise<Row[]> {
  console.log(`\n${title}`);
  let rows: Row[];
  try {
    rows = await run();
  } catch (err) {
    console.error(`${name} failed: ${(err as Error).stack ?? String(err)}`);
    rows = [{ figure: `${name}: scenario failed`, measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
  }
  printTable(rows);
  return rows;
}

export async function runMultiServerScenarios(values: ServerBenchValues): Promise<Row[]> {
  const q = values.quick === true;
  const all: Row[] = [];
  const coldStart = isSelected(values, 'coldstart-postgres');
  const storm = isSelected(values, 'storm-postgres');
  if (coldStart || storm) {
    const base = q ? POSTGRES_SCALE_QUICK : POSTGRES_SCALE_DEFAULTS;
    const opts = { ...base, entries: int(values.entries, base.entries, 'entries'), agents: int(values.agents, base.agents, 'agents') };
    const what = [coldStart ? 'cold start' : '', storm ? 'reconnect storm over 2 servers' : ''].filter((s) => s !== '').join(', ');
    all.push(...(await table(coldStart ? 'coldstart-postgres' : 'storm-postgres', `Server scale on PostgreSQL (${what}), beside SQLite in the same run:`, () => benchPostgresScale(opts, { coldStart, storm }))));
  }
  if (isSelected(values, 'propagation-cross')) {
    all.push(
      ...(await table('propagation-cross', 'Cross-server propagation (2 servers on one PostgreSQL: entry created on A -> agent on B -> workload stream):', () =>
        benchCrossPropagation(q ? CROSS_PROPAGATION_QUICK : CROSS_PROPAGATION_DEFAULTS),
      )),
    );
  }
  return all;
}

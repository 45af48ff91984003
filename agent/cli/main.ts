/** spindle-agent command line. Commands arrive with the agent issue; for now: help and version. */
import { createProgram, runProgram } from '../../common/cli.js';

export async function main(argv: string[]): Promise<void> {
  const program = createProgram(
    'spindle-agent',
    'Spindle agent: attests this host and serves the SPIFFE Workload API to local workloads',
    'This build ships the SPIFFE core library only; the run, api and healthcheck commands\nare not implemented yet (see README.md).',
  );
  await runProgram(program, argv);
}

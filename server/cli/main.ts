/** spindle-server command line. Commands arrive with the server issue; for now: help and version. */
import { createProgram, runProgram } from '../../common/cli.js';

export async function main(argv: string[]): Promise<void> {
  const program = createProgram(
    'spindle-server',
    "Spindle server: the trust domain's certificate authority and registration registry",
    'This build ships the SPIFFE core library only; the run, entry, token, agent and bundle\ncommands are not implemented yet (see README.md).',
  );
  await runProgram(program, argv);
}

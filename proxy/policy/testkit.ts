/**
 * Test kit for the policy command: runs `spindle-proxy <args>` in-process with policyCommand, as
 * bin/spindle-proxy adds it, capturing its output and exit status.
 */
import { Command, CommanderError } from 'commander';
import { policyCommand } from './cli.js';

export interface CliRun {
  status: number;
  out: string;
  err: string;
  /** stdout and stderr in the order they were written. */
  both: string;
}

/** Runs `spindle-proxy <args>` in-process with the policy command, as bin/spindle-proxy adds it. */
export async function runPolicyCli(args: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  let both = '';
  let status = 0;
  const cmd = policyCommand({
    out: { write: (t) => ((out += t), (both += t)) },
    err: { write: (t) => ((err += t), (both += t)) },
    setExitCode: (c) => (status = c),
  });
  const program = new Command('spindle-proxy').addCommand(cmd);
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) c.exitOverride();
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    status = e.exitCode;
  }
  return { status, out, err, both };
}


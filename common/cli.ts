/** Pieces shared by the spindle-server and spindle-agent command lines. */
import { Command } from 'commander';
import { packageVersion } from './version.js';

/** A top-level program with SPIRE-like help; with no arguments it prints help and exits 0. */
export function createProgram(name: string, description: string, epilogue?: string): Command {
  const program = new Command(name).description(description).version(packageVersion(), '-v, --version').showHelpAfterError();
  if (epilogue) program.addHelpText('after', `\n${epilogue}`);
  return program;
}

export async function runProgram(program: Command, argv: string[]): Promise<void> {
  if (argv.length === 0) {
    program.outputHelp();
    return;
  }
  await program.parseAsync(argv, { from: 'user' });
}

/**
 * spindle-server command line (loaded by bin/spindle-server for `run`, `validate`, `datastore`,
 * help and anything that is not an admin command; admin commands run from the admin bundle,
 * admin.ts).
 *
 * Commands live in their own modules (commands.ts), each exporting `register(program)`. Flags
 * are SPIRE's single-dash camelCase (`-spiffeID`), also accepted as `--spiffeID`, `--spiffe-id`
 * and `-flag=value` (common/argv.ts rewrites argv before commander parses it).
 *
 * Only the module of the command being run is loaded. Help, `help <command>` and anything not
 * naming a known command load them all (so help lists every command and a typo gets a
 * suggestion).
 */
import type { Command } from 'commander';
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { runProgram } from '../../common/cli.js';
import { ADMIN_COMMAND_MODULES, buildProgramOf, type CommandModule, type Registrar } from './commands.js';

export type { Registrar } from './commands.js';

/** Every command module, in help order. */
const COMMAND_MODULES: readonly CommandModule[] = [
  { names: ['run', 'validate'], load: async () => (await import('./run.js')).register },
  // Opens datastores itself (not over the admin socket): never part of the admin bundle.
  { names: ['datastore'], load: async () => (await import('./datastore.js')).register },
  ...ADMIN_COMMAND_MODULES,
];

/**
 * The program with the commands `argv` needs (all of them when `argv` is undefined or names no
 * known command first); `extra` registrars run after the built-in ones (tests, embedding).
 */
export async function buildProgram(extra: readonly Registrar[] = [], argv?: readonly string[]): Promise<Command> {
  return buildProgramOf(COMMAND_MODULES, extra, argv);
}

export async function main(argv: string[]): Promise<void> {
  const program = await buildProgram([], argv);
  await runProgram(program, normalizeArgv(argv, commandSpecOf(program)));
}

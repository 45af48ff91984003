/**
 * Entry point of the admin command bundle (dist/bundle/spindle-server-admin.js, built by
 * scripts/bundle-cli.js): the admin commands only (entry, agent, token, bundle, x509, jwt,
 * healthcheck), without `run`/`validate`, so nothing of the server, the datastore or native
 * code is reachable from it. bin/load.js runs it when the first argument names an admin command
 * and the bundle is at least as new as the tsc output; everything else runs main.ts.
 */
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { runProgram } from '../../common/cli.js';
import { ADMIN_COMMAND_MODULES, buildProgramOf } from './commands.js';

export async function main(argv: string[]): Promise<void> {
  const program = await buildProgramOf(ADMIN_COMMAND_MODULES, [], argv);
  await runProgram(program, normalizeArgv(argv, commandSpecOf(program)));
}

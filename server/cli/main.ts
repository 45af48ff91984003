/**
 * spindle-server command line (loaded by bin/spindle-server).
 *
 * Commands live in their own modules, each exporting `register(program)`. Flags are SPIRE's
 * single-dash camelCase (`-spiffeID`), also accepted as `--spiffeID`, `--spiffe-id` and
 * `-flag=value` (common/argv.ts rewrites argv before commander parses it).
 */
import type { Command } from 'commander';
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { createProgram, runProgram } from '../../common/cli.js';
import { register as registerAgent } from './agent.js';
import { register as registerBundle } from './bundle.js';
import { register as registerEntry } from './entry.js';
import { register as registerHealth } from './health.js';
import { register as registerSvid } from './svid.js';
import { register as registerToken } from './token.js';
import { register as registerRun } from './run.js';

export type Registrar = (program: Command) => void;

/** Every command module, in help order. */
export const REGISTRARS: readonly Registrar[] = [
  registerRun,
  registerEntry,
  registerAgent,
  registerToken,
  registerBundle,
  registerSvid,
  registerHealth,
];

const EPILOGUE =
  'Flags are written as in SPIRE (-spiffeID value, -ttl=600); --spiffeID and --spiffe-id work too.\n' +
  'Every admin command talks to the server over -socketPath (default /tmp/spindle-server/private/api.sock).';

/** The full program; `extra` registrars run after the built-in ones (tests, embedding). */
export function buildProgram(extra: readonly Registrar[] = []): Command {
  const program = createProgram('spindle-server', "Spindle server: the trust domain's certificate authority and registration registry", EPILOGUE);
  for (const register of [...REGISTRARS, ...extra]) register(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  await runProgram(program, normalizeArgv(argv, commandSpecOf(program)));
}

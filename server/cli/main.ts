/**
 * spindle-server command line (loaded by bin/spindle-server).
 *
 * Commands live in their own modules, each exporting `register(program)`. Flags are SPIRE's
 * single-dash camelCase (`-spiffeID`), also accepted as `--spiffeID`, `--spiffe-id` and
 * `-flag=value` (common/argv.ts rewrites argv before commander parses it).
 *
 * Only the module of the command being run is loaded (`entry show` loads entry.ts, not the
 * server, the CA or the SVID minting code): every admin command is a short-lived process, and
 * module loading is most of its run time. Help, `help <command>` and anything not naming a
 * known command load them all (so help lists every command and a typo gets a suggestion).
 */
import type { Command } from 'commander';
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { createProgram, runProgram } from '../../common/cli.js';

export type Registrar = (program: Command) => void;

/** Every command module, in help order, with the top-level command names it registers. */
const COMMAND_MODULES: ReadonlyArray<{ names: readonly string[]; load: () => Promise<Registrar> }> = [
  { names: ['run', 'validate'], load: async () => (await import('./run.js')).register },
  { names: ['entry'], load: async () => (await import('./entry.js')).register },
  { names: ['agent'], load: async () => (await import('./agent.js')).register },
  { names: ['token'], load: async () => (await import('./token.js')).register },
  { names: ['bundle'], load: async () => (await import('./bundle.js')).register },
  { names: ['x509', 'jwt'], load: async () => (await import('./svid.js')).register },
  { names: ['healthcheck'], load: async () => (await import('./health.js')).register },
];

const EPILOGUE =
  'Flags are written as in SPIRE (-spiffeID value, -ttl=600); --spiffeID and --spiffe-id work too.\n' +
  'Every admin command talks to the server over -socketPath (default /tmp/spindle-server/private/api.sock).';

/**
 * The program with the commands `argv` needs (all of them when `argv` is undefined or names no
 * known command first); `extra` registrars run after the built-in ones (tests, embedding).
 */
export async function buildProgram(extra: readonly Registrar[] = [], argv?: readonly string[]): Promise<Command> {
  const program = createProgram('spindle-server', "Spindle server: the trust domain's certificate authority and registration registry", EPILOGUE);
  const first = argv?.[0];
  const only = COMMAND_MODULES.find((m) => first !== undefined && m.names.includes(first));
  const modules = only !== undefined && extra.length === 0 ? [only] : COMMAND_MODULES;
  const registrars = await Promise.all(modules.map((m) => m.load()));
  for (const register of [...registrars, ...extra]) register(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = await buildProgram([], argv);
  await runProgram(program, normalizeArgv(argv, commandSpecOf(program)));
}

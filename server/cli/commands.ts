/**
 * The spindle-server command modules and the program builder shared by the full CLI (main.ts)
 * and the admin-only entry (admin.ts, bundled into one file by scripts/bundle-cli.js).
 *
 * Each module exports `register(program)` and is loaded with a dynamic import, so only the
 * module of the command being run is evaluated (`entry show` loads entry.ts, not the server,
 * the CA or the SVID minting code): every admin command is a short-lived process, and module
 * loading is most of its run time.
 */
import type { Command } from 'commander';
import { createProgram } from '../../common/cli.js';

export type Registrar = (program: Command) => void;

export interface CommandModule {
  /** The top-level command names the module registers. */
  readonly names: readonly string[];
  readonly load: () => Promise<Registrar>;
}

/**
 * The commands that only talk to a running server over its admin socket, in help order. They
 * never load the server, the datastore or native code (the admin bundle relies on it).
 */
export const ADMIN_COMMAND_MODULES: readonly CommandModule[] = [
  { names: ['entry'], load: async () => (await import('./entry.js')).register },
  { names: ['agent'], load: async () => (await import('./agent.js')).register },
  { names: ['token'], load: async () => (await import('./token.js')).register },
  { names: ['bundle'], load: async () => (await import('./bundle.js')).register },
  { names: ['federation'], load: async () => (await import('./federation.js')).register },
  { names: ['x509', 'jwt'], load: async () => (await import('./svid.js')).register },
  { names: ['healthcheck'], load: async () => (await import('./health.js')).register },
];

/** The top-level names of the admin commands (bin/load.js keeps the same list; a test checks). */
export const ADMIN_COMMAND_NAMES: readonly string[] = ADMIN_COMMAND_MODULES.flatMap((m) => m.names);

const EPILOGUE =
  'Flags are written as in SPIRE (-spiffeID value, -ttl=600); --spiffeID and --spiffe-id work too.\n' +
  'Every admin command talks to the server over -socketPath (default /tmp/spindle-server/private/api.sock).';

/**
 * The program with the commands of `modules` that `argv` needs: only the module naming
 * `argv[0]`, or all of them when `argv` is undefined, names no known command first, or `extra`
 * registrars (run after the built-in ones: tests, embedding) are given.
 */
export async function buildProgramOf(modules: readonly CommandModule[], extra: readonly Registrar[] = [], argv?: readonly string[]): Promise<Command> {
  const program = createProgram('spindle-server', "Spindle server: the trust domain's certificate authority and registration registry", EPILOGUE);
  const first = argv?.[0];
  const only = modules.find((m) => first !== undefined && m.names.includes(first));
  const chosen = only !== undefined && extra.length === 0 ? [only] : modules;
  const registrars = await Promise.all(chosen.map((m) => m.load()));
  for (const register of [...registrars, ...extra]) register(program);
  return program;
}

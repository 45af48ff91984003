/**
 * spindle-agent command line (loaded by bin/spindle-agent); `main(argv)` is its entry point.
 *
 * Commands live in their own modules, each exporting `register(program)`. Flags are SPIRE's
 * single-dash camelCase (`-socketPath`), also accepted as `--socketPath`, `--socket-path` and
 * `-flag=value` (common/argv.ts rewrites argv before commander parses it).
 */
import type { Command } from 'commander';
import { fileURLToPath } from 'node:url';
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { createProgram, runProgram } from '../../common/cli.js';
import { expandFetchAlias, register as registerApi } from './api.js';
import { register as registerHealthcheck } from './healthcheck.js';

export type Registrar = (program: Command) => void;

/** The client commands, in help order (after `run`/`validate`, see loadRunRegistrar). */
export const REGISTRARS: readonly Registrar[] = [registerApi, registerHealthcheck];

const EPILOGUE =
  'Flags are written as in SPIRE (-socketPath value, -timeout=5s); --socketPath and --socket-path work too.\n' +
  'The api and healthcheck commands reach the agent at -socketPath, else $SPIFFE_ENDPOINT_SOCKET\n' +
  '(unix:///path or tcp://IP:port), else /tmp/spindle-agent/public/api.sock.';

/**
 * ---- SLOT(run) ----
 * `run` and `validate` come from agent/cli/run.ts, which is owned elsewhere. It is loaded here
 * when its module exists, so the client commands never depend on it; when it is stable, replace
 * this loader with `import { register as registerRun } from './run.js';` and put `registerRun`
 * first in REGISTRARS. A run module that exists but fails to load registers a `run` command that
 * reports the failure, so `api` and `healthcheck` keep working.
 */
async function loadRunRegistrar(): Promise<Registrar | undefined> {
  const url = new URL('./run.js', import.meta.url);
  try {
    const mod = (await import(url.href)) as { register?: Registrar };
    return mod.register;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MODULE_NOT_FOUND' && e.message.startsWith(`Cannot find module '${fileURLToPath(url)}'`)) return undefined;
    return (program) => {
      program
        .command('run')
        .description('Runs the agent (failed to load in this build)')
        .allowUnknownOption()
        .allowExcessArguments()
        .action(() => {
          process.stderr.write(`Error: the run command failed to load: ${e.message}\n`);
          process.exitCode = 1;
        });
    };
  }
}

/**
 * The full program; `extra` registrars run after the built-in ones (tests, embedding). With
 * `withRun: false` the run module is not loaded (it pulls in the config parser: ~40 ms that the
 * client commands do not need).
 */
export async function buildProgram(extra: readonly Registrar[] = [], opts: { withRun?: boolean } = {}): Promise<Command> {
  const program = createProgram(
    'spindle-agent',
    'Spindle agent: attests this host and serves the SPIFFE Workload API to local workloads',
    EPILOGUE,
  );
  const registerRun = opts.withRun === false ? undefined : await loadRunRegistrar();
  for (const register of [...(registerRun ? [registerRun] : []), ...REGISTRARS, ...extra]) register(program);
  return program;
}

const CLIENT_COMMANDS = new Set(['api', 'healthcheck']);

export async function main(argv: string[]): Promise<void> {
  const program = await buildProgram([], { withRun: !CLIENT_COMMANDS.has(argv[0] ?? '') });
  await runProgram(program, normalizeArgv(expandFetchAlias(argv), commandSpecOf(program)));
}

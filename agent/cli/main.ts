/**
 * spindle-agent command line (loaded by bin/spindle-agent); `main(argv)` is its entry point.
 *
 * Commands live in their own modules, each exporting `register(program)`. Flags are SPIRE's
 * single-dash camelCase (`-socketPath`), also accepted as `--socketPath`, `--socket-path` and
 * `-flag=value` (common/argv.ts rewrites argv before commander parses it).
 */
import type { Command } from 'commander';
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { createProgram, runProgram } from '../../common/cli.js';
import { expandFetchAlias, register as registerApi } from './api.js';
import { register as registerHealthcheck } from './healthcheck.js';

type Registrar = (program: Command) => void;

/** The client commands, in help order (after `run` and `validate`). */
const CLIENT_REGISTRARS: readonly Registrar[] = [registerApi, registerHealthcheck];
const CLIENT_COMMANDS = new Set(['api', 'healthcheck']);

const EPILOGUE =
  'Flags are written as in SPIRE (-socketPath value, -timeout=5s); --socketPath and --socket-path work too.\n' +
  'The api and healthcheck commands reach the agent at -socketPath, else $SPIFFE_ENDPOINT_SOCKET\n' +
  '(unix:///path or tcp://IP:port), else /tmp/spindle-agent/public/api.sock.';

/**
 * The full program. `run` and `validate` (agent/cli/run.ts) are imported only when `withRun` is
 * not false: that module pulls in the config parser and the agent itself, ~40 ms that the client
 * commands do not need. With `withRun: false` the program knows only the client commands.
 */
async function buildProgram(opts: { withRun?: boolean } = {}): Promise<Command> {
  const program = createProgram(
    'spindle-agent',
    'Spindle agent: attests this host and serves the SPIFFE Workload API to local workloads',
    EPILOGUE,
  );
  const registrars = opts.withRun === false ? CLIENT_REGISTRARS : [(await import('./run.js')).register, ...CLIENT_REGISTRARS];
  for (const register of registrars) register(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = await buildProgram({ withRun: !CLIENT_COMMANDS.has(argv[0] ?? '') });
  await runProgram(program, normalizeArgv(expandFetchAlias(argv), commandSpecOf(program)));
}

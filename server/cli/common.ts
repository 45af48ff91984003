/**
 * Pieces every admin command shares: `-socketPath` and `-output`, repeatable flags, strict
 * integer flags, reading a file or stdin (`-`), and the action wrapper that turns any failure
 * into `Error: <what to fix>` on stderr with exit code 1 (SPIRE's convention).
 */
import { Option, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { commandAction } from '../../common/cli.js';
import { parseOutputFormat, type OutputFormat, type OutputStreams } from '../../common/output.js';
import { withAdminClient, type AdminClient } from './client.js';
import { CliError } from './errors.js';

/**
 * SERVER_DEFAULTS.server.socket_path of server/config/config.ts (a test keeps them equal); not
 * imported from there because loading the config module (YAML parser) costs every CLI call ~50 ms.
 */
export const DEFAULT_SOCKET_PATH = '/tmp/spindle-server/private/api.sock';

export interface CommonOptions {
  socketPath: string;
  output: string;
}

/** Adds `-socketPath` and `-output` to an admin command. */
export function addCommonOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--socketPath <path>', 'Path to the spindle-server admin API socket').default(DEFAULT_SOCKET_PATH))
    .addOption(new Option('--output <format>', 'Desired output format (pretty, json)').default('pretty'));
}

/** Accumulator for repeatable flags (`-selector a -selector b`). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Parses a Go `IntVar`-style flag value strictly (no units, no fractions). */
export function parseIntFlag(flag: string, value: string | undefined, fallback = 0): number {
  if (value === undefined) return fallback;
  if (!/^[+-]?\d+$/.test(value.trim())) throw new CliError(`invalid value ${JSON.stringify(value)} for -${flag}: expected an integer`);
  const n = Number(value.trim());
  if (!Number.isSafeInteger(n)) throw new CliError(`invalid value ${JSON.stringify(value)} for -${flag}: out of range`);
  return n;
}

/** Parses a Go `-flag true|false` value. */
export function parseBoolFlag(flag: string, value: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(value)) return false;
  throw new CliError(`invalid value ${JSON.stringify(value)} for -${flag}: expected true or false`);
}

/** Reads a file, or stdin for `-`. */
export function readInput(path: string, what: string): string {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new CliError(`cannot read ${what} from ${path === '-' ? 'stdin' : path}: ${why}`);
  }
}

export interface ActionContext {
  io: OutputStreams;
  format: OutputFormat;
  socketPath: string;
  /** Runs `fn` with a connected admin client (closed afterwards). */
  withClient<T>(fn: (client: AdminClient) => Promise<T>, options?: { timeoutMs?: number }): Promise<T>;
}

/**
 * Wraps an admin command action (common/cli.ts commandAction): parses the common options, runs
 * `fn`, and on failure prints `Error: <message>` to stderr and sets exit code 1.
 */
export function action<O extends CommonOptions>(fn: (opts: O, ctx: ActionContext) => Promise<void>): (opts: O) => Promise<void> {
  return commandAction<O, ActionContext>(
    (opts, io) => ({
      ctx: {
        io,
        format: parseOutputFormat(opts.output),
        socketPath: opts.socketPath,
        withClient: (f, options) => withAdminClient(opts.socketPath, f, options),
      },
    }),
    fn,
  );
}

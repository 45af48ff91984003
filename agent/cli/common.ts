/**
 * Pieces the agent's client commands share (`api ...`, `healthcheck`):
 * - the Workload API address: `-socketPath` when given (a filesystem path, resolved against the
 *   working directory; a `unix:`/`tcp:` URI is taken as is), else SPIFFE_ENDPOINT_SOCKET, else
 *   the default socket. This module is the one place below bin/ where these commands read
 *   `process.env`; the SDK receives the resolved address.
 * - `-timeout` (Go duration: `5s`, `500ms`, `1m`; bare digits are seconds), `-output pretty|json`;
 * - the action wrapper: any failure prints `Error: <message>` on stderr and exits 1.
 */
import { Option, type Command } from 'commander';
import { resolve } from 'node:path';
import { commandAction } from '../../common/cli.js';
import { parseGoDuration } from '../../common/duration.js';
import { parseOutputFormat, type OutputFormat, type OutputStreams } from '../../common/output.js';
import { createWorkloadApiClient, ENDPOINT_SOCKET_ENV, type WorkloadApiClient } from '../../spiffe/workloadapi/index.js';

/** The agent's default Workload API socket (the `-socketPath` default of the agent's CLI commands). */
export const DEFAULT_SOCKET_PATH = '/tmp/spindle-agent/public/api.sock';
export const DEFAULT_TIMEOUT = '5s';

/** The environment, read here only. */
export function cliEnv(): Readonly<Record<string, string | undefined>> {
  return process.env;
}

/** The Workload API address for a `-socketPath` value (or its absence) and the environment. */
export function endpointAddressFor(socketPath: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  if (socketPath !== undefined && socketPath !== '') {
    if (/^(unix|tcp):/.test(socketPath)) return socketPath;
    return `unix://${resolve(socketPath)}`;
  }
  const fromEnv = env[ENDPOINT_SOCKET_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return `unix://${DEFAULT_SOCKET_PATH}`;
}

export function socketOption(): Option {
  return new Option(
    '--socketPath <path>',
    `Path to the Workload API socket (default: $${ENDPOINT_SOCKET_ENV} when set, else ${DEFAULT_SOCKET_PATH})`,
  );
}

export function timeoutOption(): Option {
  return new Option('--timeout <duration>', 'Time to wait for a response').default(DEFAULT_TIMEOUT);
}

export function outputOption(): Option {
  return new Option('--output <format>', 'Desired output format (pretty, json)').default('pretty');
}

/** Accumulator for repeatable flags that also take comma separated lists (`-audience a,b -audience c`). */
export function collectCommaList(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').filter((v) => v !== '')];
}

const NS_PER_MS = 1_000_000n;

/**
 * A positive Go duration (`5s`, `1.5s`, `500ms`, `1m30s`; the syntax of common/duration.ts) or
 * whole seconds (`5`), surrounding spaces ignored, in milliseconds rounded to the nearest; under
 * one millisecond is an error.
 */
export function parseTimeout(value: string, flag = 'timeout'): number {
  const v = value.trim();
  const notPositive = (): Error =>
    new Error(`invalid value ${JSON.stringify(value)} for -${flag}: expected a positive duration such as 5s, 500ms or 1m`);
  if (v === '') throw notPositive();
  let ns: bigint;
  if (/^\d+$/.test(v)) {
    ns = BigInt(v) * 1000n * NS_PER_MS;
  } else {
    const parsed = parseGoDuration(v);
    if ('problem' in parsed) {
      const why = parsed.problem === 'too_long' ? 'longer than the maximum duration' : 'expected a duration such as 5s, 500ms or 1m';
      throw new Error(`invalid value ${JSON.stringify(value)} for -${flag}: ${why}`);
    }
    ns = parsed.ns;
  }
  if (ns < NS_PER_MS) throw notPositive();
  return Number((ns + NS_PER_MS / 2n) / NS_PER_MS);
}

export interface ApiOptions {
  socketPath?: string;
  timeout?: string;
  output?: string;
}

export interface ApiContext {
  io: OutputStreams;
  format: OutputFormat;
  timeoutMs: number | undefined;
  /** The resolved Workload API address. */
  address: string;
  /** A client for `address` (closed after the action). */
  client(): WorkloadApiClient;
}

/**
 * Wraps an api command action (common/cli.ts commandAction): resolves the address, output format
 * and timeout, runs `fn`, closes the client, and on failure prints `Error: <message>` to stderr
 * with exit code 1.
 */
export function apiAction<O extends ApiOptions>(fn: (opts: O, ctx: ApiContext) => Promise<void>): (opts: O) => Promise<void> {
  return commandAction<O, ApiContext>((opts, io) => {
    let client: WorkloadApiClient | undefined;
    const format = parseOutputFormat(opts.output ?? 'pretty');
    const timeoutMs = opts.timeout === undefined ? undefined : parseTimeout(opts.timeout);
    const address = endpointAddressFor(opts.socketPath, cliEnv());
    return {
      ctx: {
        io,
        format,
        timeoutMs,
        address,
        client: () => (client ??= createWorkloadApiClient({ address, ...(timeoutMs === undefined ? {} : { timeoutMs }) })),
      },
      close: () => client?.close(),
    };
  }, fn);
}

/** Adds the flags every api command has. */
export function addApiOptions(cmd: Command, opts: { timeout?: boolean; output?: boolean } = {}): Command {
  cmd.addOption(socketOption());
  if (opts.timeout !== false) cmd.addOption(timeoutOption());
  if (opts.output !== false) cmd.addOption(outputOption());
  return cmd;
}

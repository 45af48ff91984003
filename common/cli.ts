/** Pieces shared by the spindle-server and spindle-agent command lines. */
import { Command } from 'commander';
import { processStreams, type OutputStreams } from './output.js';
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

/** How every command reports a failure (SPIRE's convention): `Error: <message>` on stderr, exit code 1. */
export function reportCommandError(io: OutputStreams, err: unknown): void {
  io.err.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}

/**
 * Wraps a command action: `setup` turns the parsed options into the action's context (and an
 * optional `close` for what it opened), `fn` runs with it; a failure in either is reported with
 * reportCommandError, and `close` runs afterwards either way.
 */
export function commandAction<O, C>(
  setup: (opts: O, io: OutputStreams) => { ctx: C; close?: () => void },
  fn: (opts: O, ctx: C) => Promise<void>,
): (opts: O) => Promise<void> {
  return async (opts: O) => {
    const io = processStreams;
    let close: (() => void) | undefined;
    try {
      const made = setup(opts, io);
      close = made.close;
      await fn(opts, made.ctx);
    } catch (err) {
      reportCommandError(io, err);
    } finally {
      close?.();
    }
  };
}

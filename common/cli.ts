/**
 * Pieces shared by the spindle-server and spindle-agent command lines.
 *
 * SPIRE's look and feel on top of commander (options are declared `--camelCase`; common/argv.ts
 * maps the typed spellings onto them):
 * - help shows every flag single-dash (`-spiffeID <id>`, `-h, -help`), and flags marked with
 *   `requiredFlag` say so in their description;
 * - a usage error (unknown flag or command, missing value) is ONE line on stderr: what was wrong,
 *   a "did you mean" suggestion when a declared flag or command is close, and the help command;
 *   exit code 1;
 * - a program run with no arguments prints its help on stderr and exits 1 (as SPIRE does).
 */
import { Command, Help, type Option } from 'commander';
import { processStreams, type OutputStreams } from './output.js';
import { packageVersion } from './version.js';

/** Help-only notes for required flags (`required`, `required unless -node`). */
const REQUIRED_NOTES = new WeakMap<Option, string>();

/**
 * Marks a flag as required in help. The command itself still checks (with a message naming the
 * flag): commander's own mandatory options cannot express "required unless -data".
 */
export function requiredFlag(option: Option, unless?: string): Option {
  REQUIRED_NOTES.set(option, unless === undefined ? 'required' : `required unless ${unless}`);
  return option;
}

/** `--spiffeID <id>` -> `-spiffeID <id>` (every double-dash flag in a help or error text). */
export function singleDash(text: string): string {
  return text.replace(/(^|[\s'"(,])--(?=[A-Za-z])/g, '$1-');
}

/** The help command line of `cmd` (`spindle-server entry create -h`). */
function helpCommandOf(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return `${names.join(' ')} -h`;
}

class SpireHelp extends Help {
  override optionTerm(option: Option): string {
    return singleDash(super.optionTerm(option));
  }

  override optionDescription(option: Option): string {
    const base = super.optionDescription(option);
    const note = REQUIRED_NOTES.get(option);
    return note === undefined ? base : `${base} (${note})`;
  }
}

/** A commander Command with SPIRE-style help and one-line usage errors (module contract). */
export class SpireCommand extends Command {
  override createCommand(name?: string): Command {
    return new SpireCommand(name);
  }

  override createHelp(): Help {
    return Object.assign(new SpireHelp(), this.configureHelp());
  }

  /**
   * Replaces commander's (undeclared in its typings) handler: commander suggests only for
   * `--flag` tokens, so it is asked with the double-dash spelling of what was typed (without any
   * `=value`); `error` turns the text back to single-dash.
   */
  unknownOption(flag: string): never {
    const name = flag.replace(/^-+/, '').split('=')[0]!;
    const base = Command.prototype as unknown as { unknownOption(this: Command, flag: string): never };
    return base.unknownOption.call(this, `--${name}`);
  }

  override error(message: string, errorOptions?: { code?: string; exitCode?: number }): never {
    const [first = '', ...rest] = message.split('\n');
    let line = singleDash(first.replace(/^error: /, ''))
      .replace(/^unknown option '([^']*)'/, 'unknown flag $1')
      .replace(/^unknown command '([^']*)'/, 'unknown command $1');
    const hint = /\(Did you mean (.*)\?\)/.exec(rest.join(' '));
    if (hint !== null) line += `: did you mean ${singleDash(hint[1]!)}?`;
    this.showHelpAfterError(false);
    return super.error(`Error: ${line} (run '${helpCommandOf(this)}' for usage)`, errorOptions) as never;
  }
}

/** A top-level program with SPIRE-like help (see the module comment). */
export function createProgram(name: string, description: string, epilogue?: string): Command {
  const program = new SpireCommand(name).description(description).version(packageVersion(), '-v, --version').showSuggestionAfterError();
  if (epilogue) program.addHelpText('after', `\n${epilogue}`);
  return program;
}

/** With no arguments: usage on stderr, exit code 1 (SPIRE's behaviour). */
export async function runProgram(program: Command, argv: string[]): Promise<void> {
  if (argv.length === 0) {
    program.outputHelp({ error: true });
    process.exitCode = 1;
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

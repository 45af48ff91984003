/**
 * Flag spellings for the command lines (SPIRE compatibility).
 *
 * SPIRE's CLIs use Go's `flag` package: single-dash camelCase flags (`-spiffeID`, `-parentID`,
 * `-selector x`, `-ttl=600`). commander parses GNU style (`--spiffeID`). `normalizeArgv`
 * rewrites argv before commander sees it, so all of these mean the same declared option:
 *
 *   -spiffeID X   --spiffeID X   --spiffe-id X   --spiffe_id X   -spiffeID=X   --spiffe-id=X
 *
 * Contract:
 * - Only tokens in FLAG position are rewritten, and only when they name an option declared on the
 *   command being run (or one of its parents): `-name` / `--name` / `-name=value` /
 *   `--name=value`. Names match the declared long name exactly, else case-insensitively with `-`
 *   and `_` ignored (`--spiffe-id` -> `--spiffeID`); a name that would match two options is left
 *   alone. A one-letter single-dash token matches a declared short flag (`-h`).
 * - The token after an option that takes a value is that value and is copied verbatim, whatever
 *   it looks like (`-data -`, `-ttl -5`, `-selector -x`).
 * - Values are never touched: a lone `-`, negative numbers (`-5`, `-.5`), positional arguments,
 *   anything after `--`, and flags that match no declared option (commander then reports them
 *   as unknown, naming them as typed).
 * - Subcommands are followed: a positional token naming a subcommand of the current command
 *   (before any other positional argument) moves the scope to that subcommand.
 * - Boolean flags accept Go's `-flag=true|false` forms (`1 0 t f T F true false TRUE FALSE
 *   True False`): true becomes `--flag`, false drops the token (booleans default to false).
 *   Any other `=value` on a boolean is passed on for commander to reject.
 */
import type { Command } from 'commander';

export interface OptionSpec {
  /** Long name without dashes, exactly as declared (`spiffeID`). */
  long: string;
  /** Short flag letter without the dash (`h`), if any. */
  short?: string;
  /** Whether the option consumes a value (`<value>`). */
  takesValue: boolean;
}

export interface CommandSpec {
  options: OptionSpec[];
  subcommands: Map<string, CommandSpec>;
}

const GO_TRUE = new Set(['1', 't', 'T', 'true', 'TRUE', 'True']);
const GO_FALSE = new Set(['0', 'f', 'F', 'false', 'FALSE', 'False']);

/** Lowercased, with `-` and `_` removed: the key for forgiving matches. */
function fold(name: string): string {
  return name.replace(/[-_]/g, '').toLowerCase();
}

/** Whether a token is in flag form (not a lone `-`, not a negative number, not `---x`). */
function isFlagToken(tok: string): boolean {
  if (tok.length < 2 || tok[0] !== '-') return false;
  if (tok.startsWith('---')) return false;
  if (/^-\.?\d/.test(tok)) return false;
  if (tok === '--') return false;
  return true;
}

function lookup(name: string, singleDash: boolean, scopes: readonly OptionSpec[][]): OptionSpec | undefined {
  if (name === '') return undefined;
  // Innermost scope first: a subcommand's option shadows a parent's of the same name.
  for (let s = scopes.length - 1; s >= 0; s--) {
    const options = scopes[s]!;
    if (singleDash && name.length === 1) {
      const short = options.find((o) => o.short === name);
      if (short !== undefined) return short;
    }
    const exact = options.find((o) => o.long === name);
    if (exact !== undefined) return exact;
    const key = fold(name);
    if (key === '') continue;
    const folded = options.filter((o) => fold(o.long) === key);
    if (folded.length === 1) return folded[0];
    if (folded.length > 1) return undefined; // ambiguous: leave it for commander to reject
  }
  return undefined;
}

/** Rewrites SPIRE-style and kebab-case flags to the declared `--camelCase` options (module contract). */
export function normalizeArgv(argv: readonly string[], root: CommandSpec): string[] {
  const out: string[] = [];
  const scopes: OptionSpec[][] = [root.options];
  let spec = root;
  let positionalSeen = false;
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (isFlagToken(tok)) {
      const singleDash = !tok.startsWith('--');
      const body = tok.slice(singleDash ? 1 : 2);
      const eq = body.indexOf('=');
      const name = eq === -1 ? body : body.slice(0, eq);
      const value = eq === -1 ? undefined : body.slice(eq + 1);
      const opt = lookup(name, singleDash, scopes);
      if (opt === undefined) {
        out.push(tok);
        continue;
      }
      const flag = singleDash && name.length === 1 && opt.short === name ? `-${name}` : `--${opt.long}`;
      if (value !== undefined) {
        if (opt.takesValue) out.push(`${flag}=${value}`);
        else if (GO_TRUE.has(value)) out.push(flag);
        else if (GO_FALSE.has(value)) continue;
        else out.push(`--${opt.long}=${value}`);
        continue;
      }
      out.push(flag);
      if (opt.takesValue && i + 1 < argv.length) out.push(argv[++i]!);
      continue;
    }
    if (!positionalSeen) {
      const sub = spec.subcommands.get(tok);
      if (sub !== undefined) {
        spec = sub;
        scopes.push(sub.options);
        out.push(tok);
        continue;
      }
    }
    positionalSeen = true;
    out.push(tok);
  }
  return out;
}

const HELP_OPTION: OptionSpec = { long: 'help', short: 'h', takesValue: false };

/** The option/subcommand tree of a commander program, for `normalizeArgv`. */
export function commandSpecOf(cmd: Command): CommandSpec {
  const options: OptionSpec[] = [HELP_OPTION];
  for (const o of cmd.options) {
    if (o.long === undefined) continue;
    const spec: OptionSpec = { long: o.long.replace(/^--/, ''), takesValue: o.required || o.optional };
    if (o.short !== undefined) spec.short = o.short.replace(/^-/, '');
    options.push(spec);
  }
  const subcommands = new Map<string, CommandSpec>();
  for (const sub of cmd.commands) {
    const subSpec = commandSpecOf(sub);
    subcommands.set(sub.name(), subSpec);
    for (const alias of sub.aliases()) subcommands.set(alias, subSpec);
  }
  return { options, subcommands };
}

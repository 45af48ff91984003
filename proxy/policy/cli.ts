/**
 * `spindle-proxy policy`: the access policy's commands, as a commander Command the program adds
 * (`program.addCommand(policyCommand())`):
 *
 *   policy test -policy FILE -cases FILE   runs the cases against the policy, prints a table;
 *                                          exit status 1 when a case does not get its expected decision
 *   policy lint -policy FILE               prints the findings; exit status 1 on an error finding
 *
 * Flags are SPIRE's single-dash spelling (`-policy f`, `-policy=f`); `--policy` works too. An
 * invalid policy or cases file prints `Error: ` and every problem (file:line:col), exit status 1.
 */
import { readFileSync } from 'node:fs';
import { Command, type Option } from 'commander';
import { lintPolicy, type LintFinding } from './lint.js';
import { loadPolicyFile, type Policy } from './policy.js';
import { runPolicyTests, type CaseResult } from './policytest.js';
import { PolicyError, suggestKey } from './source.js';

export interface PolicyCliIo {
  out: { write(text: string): void };
  err: { write(text: string): void };
  /** Sets the command's exit status (default: process.exitCode). */
  setExitCode(code: number): void;
}

const processIo: PolicyCliIo = {
  out: { write: (t) => void process.stdout.write(t) },
  err: { write: (t) => void process.stderr.write(t) },
  setExitCode: (code) => {
    process.exitCode = code;
  },
};

/** `--policy` -> `-policy` in help texts. */
function singleDash(text: string): string {
  return text.replace(/(^|[\s,'"(])--(?=[A-Za-z])/g, '$1-');
}

/**
 * A Command that also accepts its long flags with one dash (`-policy FILE`, `-policy=FILE`,
 * `-help`), as SPIRE's Go flags are written. Tokens that name no declared flag are left alone.
 */
class FlagCommand extends Command {
  override createCommand(name?: string): Command {
    return new FlagCommand(name);
  }

  override parseOptions(argv: string[]): ReturnType<Command['parseOptions']> {
    const longs = (this.options as readonly Option[]).map((o) => o.long?.slice(2)).filter((l): l is string => l !== undefined);
    const out: string[] = [];
    for (let i = 0; i < argv.length; i++) {
      const tok = argv[i]!;
      if (tok === '--') {
        out.push(...argv.slice(i));
        break;
      }
      const m = /^-([A-Za-z][A-Za-z0-9_-]+)(=.*)?$/.exec(tok);
      const name = m?.[1];
      const long = name === undefined ? undefined : name.toLowerCase() === 'help' ? 'help' : longs.find((l) => l.toLowerCase() === name.toLowerCase());
      out.push(long === undefined ? tok : `--${long}${m![2] ?? ''}`);
    }
    return super.parseOptions(out);
  }

  /** Usage errors in SPIRE's one-line form, flags single-dash, with a suggestion when one is close. */
  override error(message: string, errorOptions?: { code?: string; exitCode?: number }): never {
    let line = singleDash(message.split('\n')[0]!.replace(/^error: /, ''));
    const unknown = /^unknown option '-{1,2}([^'=]*)/.exec(line);
    if (unknown !== null) {
      const longs = (this.options as readonly Option[]).map((o) => o.long?.slice(2)).filter((l): l is string => l !== undefined);
      const hint = suggestKey(unknown[1]!, longs);
      line = `unknown flag -${unknown[1]}${hint !== undefined ? `: did you mean -${hint}?` : ''}`;
    }
    const names: string[] = [];
    for (let c: Command | null = this; c !== null; c = c.parent) names.unshift(c.name());
    return super.error(`Error: ${line} (run '${names.join(' ')} -h' for usage)`, errorOptions);
  }
}

function pad(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function requestOf(r: CaseResult): string {
  const f = r.facts;
  let s = f.method === undefined ? '(connection)' : `${f.method} ${f.path ?? ''}`;
  if (f.jwt !== undefined) s += ' +jwt';
  if (f.jwtError !== undefined) s += ' +bad-jwt';
  return s;
}

function testTable(results: readonly CaseResult[]): string {
  const rows = [['RESULT', 'CASE', 'LISTENER', 'SOURCE', 'REQUEST', 'EXPECTED', 'DECIDED']];
  for (const r of results) {
    rows.push([
      r.pass ? 'PASS' : 'FAIL',
      r.name,
      r.facts.listener,
      r.facts.sourceId ?? '(no SVID)',
      requestOf(r),
      r.expectRule === undefined ? r.expect : `${r.expect} ${r.expectRule}`,
      `${r.decision.wouldAllow ? 'ALLOW' : 'DENY'} ${r.decision.rule}`,
    ]);
  }
  return pad(rows);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function formatFinding(file: string, f: LintFinding): string {
  return `${file}:${f.line}:${f.col}: ${f.severity}: ${f.rule !== undefined ? `rule ${f.rule}: ` : ''}${f.message} [${f.check}]\n`;
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new Error(`-${flag} is required`);
  return value;
}

function readCases(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new PolicyError([{ file: path, line: 1, col: 1, message: `cannot read the cases file: ${why}` }], { cause: err });
  }
}

/** The `policy` command with `test` and `lint` (module comment). */
export function policyCommand(io: PolicyCliIo = processIo): Command {
  const run = (fn: () => number): void => {
    try {
      io.setExitCode(fn());
    } catch (err) {
      io.err.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
      io.setExitCode(1);
    }
  };
  const cmd = new FlagCommand('policy')
    .description('check an access policy file: run its test cases (test), find what is too permissive or dead (lint); see docs/proxy-policy.md')
    .configureHelp({ optionTerm: (o) => singleDash(o.flags) })
    .configureOutput({ writeOut: (t) => io.out.write(t), writeErr: (t) => io.err.write(singleDash(t)) });
  cmd
    .command('test')
    .description('run a table of requests (-cases) against the policy and compare each decision with the expected one; exit status 1 on any mismatch')
    .option('--policy <file>', 'the policy file (required)')
    .option('--cases <file>', 'the test cases file (required)')
    .action((opts: { policy?: string; cases?: string }) =>
      run(() => {
        const policyFile = required(opts.policy, 'policy');
        const casesFile = required(opts.cases, 'cases');
        const policy: Policy = loadPolicyFile(policyFile);
        const report = runPolicyTests(policy, readCases(casesFile), casesFile);
        io.out.write(testTable(report.results));
        for (const r of report.results.filter((x) => !x.pass)) {
          io.out.write(`FAIL ${r.name} (${casesFile}:${r.line}:${r.col}): ${r.mismatch}: ${r.decision.reason}\n`);
        }
        io.out.write(`${plural(report.results.length, 'case')}: ${report.passed} passed, ${report.failed} failed\n`);
        return report.failed > 0 ? 1 : 0;
      }),
    );
  cmd
    .command('lint')
    .description('report what in the policy is overly permissive or can never match; exit status 1 on an error finding')
    .option('--policy <file>', 'the policy file (required)')
    .action((opts: { policy?: string }) =>
      run(() => {
        const policyFile = required(opts.policy, 'policy');
        const findings = lintPolicy(loadPolicyFile(policyFile));
        for (const f of findings) io.out.write(formatFinding(policyFile, f));
        const count = (s: LintFinding['severity']): number => findings.filter((f) => f.severity === s).length;
        const errors = count('error');
        io.out.write(findings.length === 0 ? 'no findings\n' : `${plural(findings.length, 'finding')}: ${plural(errors, 'error')}, ${plural(count('warning'), 'warning')}, ${count('info')} info\n`);
        return errors > 0 ? 1 : 0;
      }),
    );
  return cmd;
}

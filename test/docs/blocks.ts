/**
 * The command blocks of a Markdown file, as test/docs/commands.test.ts runs them.
 *
 * A command block is a fenced block whose info string is `sh`, `bash` or `shell`: text a reader
 * pastes into a shell. Blocks fenced as `text` (transcripts with `$ ` prompts and output), `yaml`,
 * `json` and so on are not commands and are not run.
 *
 * The line just before a command block (blank lines between are allowed) may be a marker:
 * - `<!-- docs-test: background until "TEXT" -->`: the block is what a reader starts in a terminal
 *   of its own and leaves running (a server, an agent). The test starts it, waits until its
 *   output contains TEXT, carries on with the next blocks, and stops it (SIGTERM) once the file
 *   is done; it must still be running then.
 * - `<!-- docs-test: background until "TEXT" then ctrl-c -->`: the same, but once TEXT appears the
 *   reader presses Ctrl-C: the test sends SIGINT and the block must exit with status 0.
 * - `<!-- docs-test: skip REASON -->`: the block cannot run in the test (it needs a Kubernetes
 *   cluster, the npm registry, minutes of benchmarks). The reason is printed, and the number of
 *   skipped blocks per file is pinned by the test, so a new skip is a visible change.
 * Any other `docs-test:` comment is an error, so a typo cannot silently change how a block runs.
 */

export type BlockMode =
  | { kind: 'run' }
  | { kind: 'background'; until: string; ctrlC: boolean }
  | { kind: 'skip'; reason: string };

export interface CommandBlock {
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  /** The block's text, ending with a newline. */
  text: string;
  mode: BlockMode;
}

const COMMAND_LANGS = new Set(['sh', 'bash', 'shell']);

function parseMarker(comment: string, where: string): BlockMode {
  const body = comment.trim();
  const bg = /^background until "([^"]+)"( then ctrl-c)?$/.exec(body);
  if (bg) return { kind: 'background', until: bg[1]!, ctrlC: bg[2] !== undefined };
  const skip = /^skip (\S.*)$/.exec(body);
  if (skip) return { kind: 'skip', reason: skip[1]!.trim() };
  throw new Error(`${where}: unknown docs-test marker "${body}" (expected: background until "TEXT" [then ctrl-c], or skip REASON)`);
}

/** The command blocks of `markdown` (named `file` in errors), in order. */
export function commandBlocks(markdown: string, file: string): CommandBlock[] {
  const lines = markdown.split('\n');
  const out: CommandBlock[] = [];
  let pending: { mode: BlockMode; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const marker = /^<!--\s*docs-test:(.*?)-->\s*$/.exec(line);
    if (marker) {
      pending = { mode: parseMarker(marker[1]!, `${file}:${i + 1}`), line: i + 1 };
      continue;
    }
    if (/^\s*<!--.*docs-test/.test(line)) throw new Error(`${file}:${i + 1}: a docs-test marker must be a whole line <!-- docs-test: ... -->`);
    const fence = /^(```+|~~~+)\s*([A-Za-z0-9_+-]*)/.exec(line);
    if (!fence) {
      if (line.trim() !== '' && pending) throw new Error(`${file}:${pending.line}: the docs-test marker is not followed by a command block`);
      continue;
    }
    const close = fence[1]!;
    const lang = fence[2]!.toLowerCase();
    let j = i + 1;
    while (j < lines.length && !lines[j]!.startsWith(close)) j++;
    if (j >= lines.length) throw new Error(`${file}:${i + 1}: unclosed code fence`);
    if (COMMAND_LANGS.has(lang)) {
      out.push({ line: i + 1, lang, text: `${lines.slice(i + 1, j).join('\n')}\n`, mode: pending?.mode ?? { kind: 'run' } });
    } else if (pending) {
      throw new Error(`${file}:${pending.line}: the docs-test marker is followed by a \`${lang || 'plain'}\` block, not a command block`);
    }
    pending = undefined;
    i = j;
  }
  if (pending) throw new Error(`${file}:${pending.line}: the docs-test marker is not followed by a command block`);
  return out;
}

/**
 * The HCL reader of config files: SPIRE's own `server.conf` / `agent.conf` text to the plain
 * object the YAML and JSON readers give for the same settings, with syntax errors reported as
 * `config: <source>:<line>:<col>: invalid HCL: <what>`. Empty text is `{}`.
 *
 * The parsing itself (HashiCorp's hcl2 as WebAssembly) runs in a short-lived child process,
 * common/hclparser.ts, so the ~70 MB its Go runtime holds never stays in a server or agent; the
 * call is synchronous, as config loading is (the child takes a few hundred ms: one HCL file per
 * start).
 *
 * Mapping to the YAML/JSON shape. hcl2json writes every block as a list of bodies, one per
 * occurrence (`server { ... }` is `server: [{...}]`, `DataStore "sql" { ... }` is
 * `DataStore: { sql: [{...}] }`). A list whose items are all maps is therefore read as a block:
 * one item becomes that map, two or more (the same block written twice) are an error naming the
 * block, as a duplicate key is in YAML. No Spindle setting is a list of maps, so an attribute
 * written as one (`x = [{ ... }]`) is not a case to keep apart. `plugin_data { ... }` and
 * `plugin_data = { ... }` give the same map. Keys come out in name order, not file order (only
 * the order of several plugins of one kind can differ from the file's).
 * Expressions other than literals (function calls,
 * references) are not evaluated, as in SPIRE: hcl2json gives their text as `"${...}"`.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ConfigError } from './configmessages.js';
import { isPlainMap } from './configreader.js';

const PARSER = fileURLToPath(new URL('./hclparser.js', import.meta.url));
/** Far above a parse's few hundred ms, so only a stuck parser hits it. */
const PARSER_TIMEOUT_MS = 30_000;

/** hcl2's JSON rendering of `text`, or its diagnostics text, from the parser's child process. */
function hclToJson(text: string, source: string): { json: string } | { error: string } {
  const r = spawnSync(process.execPath, [PARSER], { input: JSON.stringify({ text, source }), encoding: 'utf8', timeout: PARSER_TIMEOUT_MS, maxBuffer: 64 << 20 });
  if (r.error !== undefined || r.status !== 0) {
    const why = r.error?.message ?? (r.signal !== null ? `killed by ${r.signal}` : `exit code ${r.status}: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
    throw new Error(`HCL parser (${PARSER}) failed on ${source}: ${why}`);
  }
  return JSON.parse(r.stdout) as { json: string } | { error: string };
}

/** Parses HCL config text; throws `ConfigError` naming `source` and the error's position. */
export function parseHclConfig(text: string, source: string): unknown {
  if (text.trim() === '') return {};
  const out = hclToJson(text, source);
  if ('error' in out) throw new ConfigError([hclSyntaxMessage(out.error, source)]);
  const problems: string[] = [];
  const value = normalize(JSON.parse(out.json) as unknown, '', source, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return value;
}

/**
 * `config: <source>:<line>:<col>: invalid HCL: <summary>; <detail>` from hcl2's diagnostics
 * text (`parse config: [<file>:<line>,<col>-<line>,<col>: <summary>; <detail>, and N other
 * diagnostic(s)]`). Positions inside the text are rewritten as `<file>:<line>:<col>` too.
 */
function hclSyntaxMessage(error: string, source: string): string {
  const body = /^parse config: \[(.*)\]$/s.exec(error)?.[1] ?? error;
  const escaped = source.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const positions = new RegExp(`${escaped}:(\\d+),(\\d+)(?:-(?:\\d+,)?\\d+)?`, 'g');
  const first = new RegExp(`^${escaped}:(\\d+),(\\d+)(?:-(?:\\d+,)?\\d+)?: `).exec(body);
  const where = first ? `${source}:${first[1]}:${first[2]}` : source;
  const what = (first ? body.slice(first[0].length) : body).replace(positions, `${source}:$1:$2`);
  return `config: ${where}: invalid HCL: ${what}`;
}

/** Blocks (lists of maps) become maps; see the file header. */
function normalize(v: unknown, path: string, source: string, problems: string[]): unknown {
  if (Array.isArray(v)) {
    if (v.length > 0 && v.every(isPlainMap)) {
      if (v.length === 1) return normalize(v[0], path, source, problems);
      problems.push(
        `config: ${source}: invalid HCL: the block ${path === '' ? '(top level)' : path} is written ${v.length} times; write it once, with all its settings`,
      );
      return undefined;
    }
    return v.map((item, i) => normalize(item, `${path}[${i}]`, source, problems));
  }
  if (isPlainMap(v)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(v)) out[key] = normalize(item, path === '' ? key : `${path}.${key}`, source, problems);
    return out;
  }
  return v;
}

/**
 * The HCL reader of config files: SPIRE's own `server.conf` / `agent.conf` text to the plain
 * object the YAML and JSON readers give for the same settings, with syntax errors reported as
 * `config: <source>:<line>:<col>: invalid HCL: <what>`. Empty text is `{}`.
 *
 * The parser is HashiCorp's hcl2 Go library compiled to WebAssembly, as shipped by the npm
 * package `@cdktf/hcl2json`. That package's JavaScript API is async only; config loading here is
 * synchronous, so this file drives the package's WebAssembly module itself: it compiles the
 * module synchronously (once per process), and for every parse starts a fresh Go instance, calls
 * its `parse` export (which answers through its callback before returning) and drops the
 * instance, so the Go heap (tens of MB) does not outlive the parse. This relies on the
 * package's file layout (`main.wasm.gz`, `wasm/wasm_exec.js`) and the name of its export
 * object, which is why package.json pins the exact version; the tests parse real configs, so an
 * upgrade that changes them fails there.
 *
 * Side effects of the first HCL parse: Go's `wasm_exec.js` defines `globalThis.Go` and, when
 * there is no `globalThis.fs` (there is none in Node's ES modules), a console-only stand-in for
 * it. The Go code therefore cannot reach the file system; it sees only the text passed in.
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
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ConfigError } from './configmessages.js';
import { isPlainMap } from './configreader.js';

/** The global object the Go program fills with its exported functions. */
const EXPORTS_GLOBAL = '__parse_terraform_config_wasm__';

type ParseCallback = (err: string | null, result: string | null) => void;
/** The part of the WebAssembly global used here (this project's TypeScript libs do not declare it). */
interface WasmModule {
  readonly wasmModule: unique symbol;
}
interface WasmInstance {
  readonly wasmInstance: unique symbol;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: object) => WasmInstance;
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
interface GoRuntime {
  importObject: object;
  run(instance: WasmInstance): Promise<void>;
}
type GoConstructor = new () => GoRuntime;

let compiled: { module: WasmModule; Go: GoConstructor } | undefined;

/** Compiles the parser's WebAssembly module (once) and loads Go's runtime glue. */
function parserModule(): { module: WasmModule; Go: GoConstructor } {
  if (compiled !== undefined) return compiled;
  const require = createRequire(import.meta.url);
  const pkgDir = dirname(require.resolve('@cdktf/hcl2json/package.json'));
  require(join(pkgDir, 'wasm', 'wasm_exec.js'));
  const Go = (globalThis as { Go?: GoConstructor }).Go;
  if (typeof Go !== 'function') throw new Error(`HCL parser: ${pkgDir}/wasm/wasm_exec.js did not define Go's runtime`);
  const module = new Wasm.Module(gunzipSync(readFileSync(join(pkgDir, 'main.wasm.gz'))));
  compiled = { module, Go };
  return compiled;
}

/** hcl2's JSON rendering of `text`, or its diagnostics text; a fresh Go instance per call. */
function hclToJson(text: string, source: string): { json: string } | { error: string } {
  const { module, Go } = parserModule();
  const go = new Go();
  const instance = new Wasm.Instance(module, go.importObject);
  const exports: { parse?: (filename: string, contents: string, cb: ParseCallback) => void } = {};
  const g = globalThis as Record<string, unknown>;
  g[EXPORTS_GLOBAL] = exports;
  let answer: { json: string } | { error: string } | undefined;
  try {
    // Runs Go's main until it blocks, having registered its functions on `exports`.
    void go.run(instance);
    if (typeof exports.parse !== 'function') throw new Error('HCL parser: the WebAssembly module did not register parse()');
    exports.parse(source, text, (err, result) => {
      answer = err !== null && err !== undefined ? { error: String(err) } : { json: String(result) };
    });
  } finally {
    delete g[EXPORTS_GLOBAL];
  }
  if (answer === undefined) throw new Error('HCL parser: parse() did not answer synchronously');
  return answer;
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

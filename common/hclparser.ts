/**
 * The HCL parser's process: run by common/confighcl.ts as `node hclparser.js`, it reads
 * `{"text", "source"}` as JSON on stdin and writes `{"json"}` (hcl2's JSON rendering of the
 * text) or `{"error"}` (its diagnostics) on stdout, then exits. The parser is HashiCorp's hcl2 Go
 * library compiled to WebAssembly, as shipped by the npm package `@cdktf/hcl2json`; its Go heap
 * and compiled code take about 70 MB that a process never gives back, which is why a
 * long-running server or agent parses its HCL config in this short-lived child instead.
 *
 * The package's JavaScript API gives the Go code Node's real `fs`; this file drives the
 * package's WebAssembly module itself instead: it compiles the module, starts one Go instance and
 * calls its `parse` export (which answers through its callback before returning). This relies on
 * the package's file layout (`main.wasm.gz`, `wasm/wasm_exec.js`) and the name of its export
 * object, which is why package.json pins the exact version; the tests parse real configs, so an
 * upgrade that changes them fails there. Go's `wasm_exec.js` defines `globalThis.Go` and, when
 * there is no `globalThis.fs` (there is none in Node's ES modules), a console-only stand-in for
 * it: the Go code cannot reach the file system, it sees only the text passed in.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

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

/** Compiles the parser's WebAssembly module and loads Go's runtime glue. */
function parserModule(): { module: WasmModule; Go: GoConstructor } {
  const require = createRequire(import.meta.url);
  const pkgDir = dirname(require.resolve('@cdktf/hcl2json/package.json'));
  require(join(pkgDir, 'wasm', 'wasm_exec.js'));
  const Go = (globalThis as { Go?: GoConstructor }).Go;
  if (typeof Go !== 'function') throw new Error(`HCL parser: ${pkgDir}/wasm/wasm_exec.js did not define Go's runtime`);
  const module = new Wasm.Module(gunzipSync(readFileSync(join(pkgDir, 'main.wasm.gz'))));
  return { module, Go };
}

/** hcl2's JSON rendering of `text`, or its diagnostics text. */
export function hclToJsonInProcess(text: string, source: string): { json: string } | { error: string } {
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

/** Whether this file is the process's main module (run by confighcl.ts), not imported. */
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { text, source } = JSON.parse(readFileSync(0, 'utf8')) as { text: string; source: string };
  process.stdout.write(JSON.stringify(hclToJsonInProcess(text, source)));
}

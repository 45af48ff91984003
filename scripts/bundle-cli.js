#!/usr/bin/env node
// Bundles the spindle-server admin commands (dist/server/cli/admin.js, the tsc output) into one
// minified ESM file, dist/cli/spindle-server-admin.js, with their npm dependencies (grpc-js,
// commander, the protobuf runtime) inlined. Run by `npm run build` after tsc.
//
// Why: every admin command is a short-lived process, and resolving and loading a few hundred
// separate module files (most of them grpc-js) was most of its run time. bin/load.js runs the
// bundle for admin commands only; the server itself (`run`, `validate`) keeps running from dist/
// unbundled.
//
// The build fails when the bundle would contain a native addon, better-sqlite3 or the server's
// own code outside server/cli/: the admin commands never need them, and their presence means a
// command module started importing something it should not.
//
// Works from any cwd: the repo root is resolved from this file's location.

import { build } from "esbuild";
import { existsSync, mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const entry = join(repoRoot, "dist", "server", "cli", "admin.js");
const outfile = join(repoRoot, "dist", "cli", "spindle-server-admin.js");

/** Inputs that must never be part of the admin bundle (paths as esbuild reports them, relative to the repo root). */
const FORBIDDEN = [
  { re: /\.node$/, why: "a native addon" },
  { re: /(^|\/)node_modules\/better-sqlite3\//, why: "better-sqlite3" },
  { re: /^dist\/agent\//, why: "agent code" },
  { re: /(^|\/)node_modules\/@grpc\//, why: "grpc-js (server/cli/unary.ts is the admin commands' gRPC client)" },
  { re: /^dist\/server\/(?!cli\/|entries\/validate\.js$)/, why: "server code outside server/cli/" },
];

/**
 * The generated proto/gen modules define their grpc-js client classes at the top level
 * (`makeGenericClientConstructor(...)`), which would pull all of grpc-js into the bundle although
 * the admin commands use only the service definitions (paths and message codecs) next to them.
 * Marking those calls pure and grpc-js free of side effects lets tree shaking drop both.
 */
const dropGeneratedGrpcClients = {
  name: "drop-generated-grpc-clients",
  setup(b) {
    b.onResolve({ filter: /^@grpc\/grpc-js$/ }, async (args) => {
      if (args.pluginData === "resolving") return undefined;
      const r = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: "resolving" });
      return { ...r, sideEffects: false };
    });
    b.onLoad({ filter: /[\\/]dist[\\/]proto[\\/]gen[\\/].*\.js$/ }, async (args) => {
      const src = await readFile(args.path, "utf8");
      return { contents: src.replaceAll("makeGenericClientConstructor(", "/* @__PURE__ */ makeGenericClientConstructor("), loader: "js" };
    });
  },
};

if (!existsSync(entry)) {
  process.stderr.write(`bundle-cli: ${entry} is missing: run tsc first (npm run build does both)\n`);
  process.exit(1);
}
mkdirSync(dirname(outfile), { recursive: true });

const result = await build({
  absWorkingDir: repoRoot,
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  minify: true,
  treeShaking: true,
  metafile: true,
  logLevel: "warning",
  // CommonJS dependencies (grpc-js) call require() for node builtins; an ESM file has no
  // require of its own.
  plugins: [dropGeneratedGrpcClients],
  banner: { js: 'import { createRequire as __spindleCreateRequire } from "node:module"; const require = __spindleCreateRequire(import.meta.url);' },
});

// Inputs esbuild read but tree shaking dropped entirely have no bytes in the output.
const [output] = Object.values(result.metafile.outputs);
const inBundle = Object.entries(output.inputs).filter(([, v]) => v.bytesInOutput > 0).map(([k]) => k);
const bad = [];
for (const input of inBundle) {
  for (const { re, why } of FORBIDDEN) if (re.test(input)) bad.push(`${input} (${why})`);
}
if (bad.length > 0) {
  process.stderr.write(`bundle-cli: the admin bundle must not contain:\n  ${bad.join("\n  ")}\nan admin command module imports more than it needs; move the shared part below server/ or import it lazily\n`);
  process.exit(1);
}
process.stdout.write(`bundle-cli: ${outfile} (${Math.round(output.bytes / 1024)} KiB, ${inBundle.length} modules)\n`);

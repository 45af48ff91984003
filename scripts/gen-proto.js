#!/usr/bin/env node
// Regenerates proto/gen/ from proto/**/*.proto, offline, with the repo-local
// buf binary and ts-proto plugin (both pinned by package-lock.json).
//
//   node scripts/gen-proto.js          regenerate proto/gen (writes only changed files,
//                                      removes files that are no longer generated)
//   node scripts/gen-proto.js --check  generate into a temporary directory and compare
//                                      byte-for-byte with the committed proto/gen; exit 1
//                                      listing stale/missing/extra files if they differ
//
// Works from any cwd: the repo root is resolved from this file's location.
// Generation settings (plugin options) live in buf.gen.yaml at the repo root.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const GEN_REL = join("proto", "gen");
const genDir = join(repoRoot, GEN_REL);
const bufJs = join(repoRoot, "node_modules", "@bufbuild", "buf", "bin", "buf");
const pluginJs = join(repoRoot, "node_modules", "ts-proto", "protoc-gen-ts_proto");
const template = join(repoRoot, "buf.gen.yaml");

function usage(code) {
  (code === 0 ? process.stdout : process.stderr).write("usage: node scripts/gen-proto.js [--check]\n");
  process.exit(code);
}

/** Sorted list of file paths (relative to dir, "/"-separated) under dir; [] if dir is absent. */
function listFiles(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  const walk = (d) => {
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else out.push(relative(dir, p).split(sep).join("/"));
    }
  };
  walk(dir);
  return out.sort();
}

/** Runs buf generate with outputs placed under baseOut (buf.gen.yaml's out: proto/gen is relative to it). */
function generate(baseOut) {
  for (const [what, p] of [["buf", bufJs], ["ts-proto plugin", pluginJs], ["buf.gen.yaml", template]]) {
    if (!existsSync(p)) {
      process.stderr.write(`gen-proto: ${what} not found at ${p} (run npm ci)\n`);
      process.exit(1);
    }
  }
  // The plugin is a `#!/usr/bin/env node` script: put the node running us first on PATH
  // so generation uses the same interpreter regardless of the caller's environment.
  // buf's module cache goes into the temporary directory: nothing is fetched (no remote
  // deps or plugins), and generation must not depend on a writable $HOME.
  const env = {
    ...process.env,
    PATH: [dirname(process.execPath), process.env.PATH ?? ""].join(delimiter),
    BUF_CACHE_DIR: join(baseOut, ".buf-cache"),
  };
  const res = spawnSync(process.execPath, [bufJs, "generate", "--template", template, "--output", baseOut], {
    cwd: repoRoot,
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (res.error) {
    process.stderr.write(`gen-proto: failed to run buf: ${res.error.message}\n`);
    process.exit(1);
  }
  if (res.status !== 0) {
    process.stderr.write(res.stdout + res.stderr);
    process.stderr.write(`gen-proto: buf generate exited with status ${res.status}\n`);
    process.exit(1);
  }
  const produced = join(baseOut, GEN_REL);
  if (listFiles(produced).length === 0) {
    process.stderr.write(`gen-proto: buf generate produced no files in ${produced}\n`);
    process.exit(1);
  }
  return produced;
}

/** Compares two trees byte-for-byte. */
function diffTrees(wantDir, haveDir) {
  const want = listFiles(wantDir);
  const have = listFiles(haveDir);
  const haveSet = new Set(have);
  const wantSet = new Set(want);
  const missing = want.filter((f) => !haveSet.has(f));
  const extra = have.filter((f) => !wantSet.has(f));
  const stale = want.filter((f) => haveSet.has(f) && !readFileSync(join(wantDir, f)).equals(readFileSync(join(haveDir, f))));
  return { missing, extra, stale };
}

function removeEmptyDirs(dir) {
  if (!existsSync(dir)) return;
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    if (ent.isDirectory()) removeEmptyDirs(join(dir, ent.name));
  }
  if (dir !== genDir && readdirSync(dir).length === 0) rmdirSync(dir);
}

function main() {
  const args = process.argv.slice(2);
  if (args.includes("-h") || args.includes("--help")) usage(0);
  if (args.some((a) => a !== "--check")) usage(2);
  const check = args.includes("--check");

  const tmp = mkdtempSync(join(tmpdir(), "spindle-gen-proto-"));
  try {
    const fresh = generate(tmp);
    const { missing, extra, stale } = diffTrees(fresh, genDir);

    if (check) {
      if (missing.length + extra.length + stale.length === 0) {
        process.stdout.write(`gen-proto: ${GEN_REL} is up to date (${listFiles(fresh).length} files)\n`);
        return 0;
      }
      const lines = [`gen-proto: ${GEN_REL} does not match proto/ (run: node scripts/gen-proto.js)`];
      for (const f of stale) lines.push(`  stale:   ${GEN_REL}/${f}`);
      for (const f of missing) lines.push(`  missing: ${GEN_REL}/${f}`);
      for (const f of extra) lines.push(`  extra:   ${GEN_REL}/${f}`);
      process.stderr.write(lines.join("\n") + "\n");
      return 1;
    }

    for (const f of [...missing, ...stale]) {
      const dst = join(genDir, f);
      mkdirSync(dirname(dst), { recursive: true });
      writeFileSync(dst, readFileSync(join(fresh, f)));
    }
    for (const f of extra) rmSync(join(genDir, f));
    removeEmptyDirs(genDir);
    process.stdout.write(
      `gen-proto: ${GEN_REL} regenerated (${listFiles(genDir).length} files; ` +
        `${missing.length} added, ${stale.length} updated, ${extra.length} removed)\n`,
    );
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

process.exitCode = main();

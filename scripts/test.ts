/**
 * Runs every compiled test file (`dist/**\/*.test.js`) with node's test runner. Explicit file
 * lists keep helper modules (test/support/...) from being run as tests, which node's own
 * directory discovery would do. Extra arguments filter by substring: `npm test -- x509`.
 *
 * - Tests act as another local user (uid 65534) and need root; as another user they fail with
 *   a message saying so (never skipped). When other users cannot enter this checkout (cloned
 *   under /root, or in a 0700 directory), the code they run is copied once into a readable
 *   temp directory for the whole run (test/support/otheruid.ts).
 * - It prints how many test files and tests ran, and closes with "N passed, N failed". A
 *   skipped or todo test fails the run: a test that did not run is not a passing test.
 * - Two files run at a time (CONCURRENCY below).
 * - A hang fails instead of stalling the run: each file (and each test in it) has
 *   FILE_TIMEOUT_MS. A file whose tests are done but whose process does not exit (a server or
 *   timer it left behind) is cancelled at that limit, which counts as a failure. (Not
 *   `--test-force-exit`: that would hide such leaks, and it cuts the TAP report's closing counts.)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeOtherUidCopy, OTHER_ROOT_ENV, readableByOtherUid } from '../test/support/otheruid.js';
import { repoRoot } from '../test/support/paths.js';

const dist = dirname(dirname(fileURLToPath(import.meta.url)));

function findTests(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...findTests(full));
    else if (entry.name.endsWith('.test.js')) out.push(full);
  }
  return out;
}

/** The longest a test file may run (the slowest take about a minute and a half on 2 cores). */
const FILE_TIMEOUT_MS = 10 * 60_000;

/**
 * Test files run two at a time (node's default is one fewer than the cores: one, on the 2-core
 * machines CI uses). Most files spend their time waiting on the processes, sockets and
 * PostgreSQL clusters they start, so two at a time keeps the run near 10 minutes without
 * timing-sensitive assertions (there are none: targets live in `npm run bench`).
 */
const CONCURRENCY = 2;

const filters = process.argv.slice(2);
const files = findTests(dist)
  .filter((f) => !f.includes(`${join('dist', 'node_modules')}`))
  .filter((f) => filters.length === 0 || filters.some((flt) => relative(dist, f).includes(flt)))
  .sort();
if (files.length === 0) {
  console.error(`no test files found under ${dist}${filters.length ? ` matching ${filters.join(', ')}` : ''}`);
  process.exit(1);
}

const env = { ...process.env };
let copy: string | undefined;
if (process.getuid?.() === 0) {
  if (!readableByOtherUid(repoRoot)) {
    copy = makeOtherUidCopy({ keep: true });
    env[OTHER_ROOT_ENV] = copy;
    console.log(`# other users cannot read ${repoRoot}: tests run uid 65534's processes from a copy in ${copy}`);
  }
} else {
  console.log(`# not running as root (uid ${process.getuid?.()}): the tests that act as another uid will FAIL, saying so; run npm test as root`);
}

console.log(`# ${files.length} test files`);
const tapDir = mkdtempSync(join(tmpdir(), 'spindle-test-report-'));
const tap = join(tapDir, 'report.tap');
let status: number;
try {
  const result = spawnSync(
    process.execPath,
    ['--test', `--test-concurrency=${CONCURRENCY}`, `--test-timeout=${FILE_TIMEOUT_MS}`, '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
    { stdio: 'inherit', env },
  );
  status = result.status ?? 1;
  // The TAP report's closing counts (the top-level "# tests N" ... lines).
  const counts: Record<string, number> = {};
  for (const m of readFileSync(tap, 'utf8').matchAll(/^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/gm)) counts[m[1]!] = Number(m[2]);
  const notRun = (counts['skipped'] ?? 0) + (counts['todo'] ?? 0);
  console.log(`# ${files.length} test files, ${counts['tests'] ?? 0} tests`);
  if (notRun > 0) {
    console.log(`# ${notRun} tests skipped or todo: that fails the run (see "# SKIP" / "# TODO" above)`);
    status = status || 1;
  }
  console.log(`${counts['pass'] ?? 0} passed, ${(counts['fail'] ?? 0) + (counts['cancelled'] ?? 0)} failed`);
} finally {
  rmSync(tapDir, { recursive: true, force: true });
  if (copy !== undefined) rmSync(copy, { recursive: true, force: true });
}
process.exit(status);

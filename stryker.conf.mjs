/**
 * Mutation testing (StrykerJS + the tap runner) of the code that decides who gets which identity.
 * Run through `npm run mutate` (scripts/mutate.ts), which builds dist/ and runs this config once
 * per module group; `npm run mutate -- jwtsvid verify` runs only those groups.
 *
 * What is mutated is the compiled JavaScript in dist/ (tsc keeps the code's shape, so a mutant
 * maps to its TypeScript line through the source maps next to it); the tests run are the compiled
 * node:test files, each one a `node file.js` process that prints TAP. Stryker copies the checkout
 * (dist/, bin/, proto/, the native addon) into .stryker-tmp/ and links node_modules; nothing in
 * the checkout is modified. Where only part of a file decides authorization (the manager's
 * matching and fetches, the agent API's authentication and signing, the listener's tracked peer,
 * the datastore's join-token claim), only those functions are mutated: their line ranges are
 * found here in the compiled file by name.
 *
 * The group comes from MUTATE_GROUP (one name of GROUPS below).
 */
import { readFileSync } from 'node:fs';

/** `file:start-end` for each named function, method, getter or class of a compiled file. */
function ranges(file, names) {
  const lines = readFileSync(file, 'utf8').split('\n');
  return names.map((name) => {
    const esc = name.replace(/[#$]/g, (c) => `\\${c}`);
    const head = new RegExp(`^(\\s*)(?:export\\s+)?(?:async\\s+)?(?:function\\s+|class\\s+|get\\s+|static\\s+)?${esc}\\b\\s*[({<]|^(\\s*)(?:export\\s+)?class\\s+${esc}\\b`);
    const start = lines.findIndex((l) => head.test(l));
    if (start < 0) throw new Error(`stryker.conf.mjs: ${name} not found in ${file}; update the group's function list after renaming it`);
    const indent = /^\s*/.exec(lines[start])[0];
    const end = lines.findIndex((l, i) => i > start && l === `${indent}}`);
    if (end < 0) throw new Error(`stryker.conf.mjs: the end of ${name} in ${file} was not found`);
    return `${file}:${start + 1}-${end + 1}`;
  });
}

/** Module groups: what is mutated, and the (in-process) test files that exercise it. */
export const GROUPS = {
  authorized: {
    mutate: () => ['dist/server/entries/entryindex.js', 'dist/server/entries/closures.js', 'dist/server/entries/authcache.js', 'dist/server/entries/sameentry.js'],
    tests: ['dist/server/entries/authorized.test.js', 'dist/server/entries/closures.test.js'],
  },
  manager: {
    // The decisions only: which entries a caller's selectors match (SelectorIndex.match), what
    // fetchX509 and fetchJwt hand out, and until when an SVID is served (svid.ts). The file's tests start a real server per test and take minutes under
    // mutation, so only the tests of these decisions run (node's --test-name-pattern).
    mutate: () => [
      ...ranges('dist/agent/manager/selectorindex.js', ['match']),
      ...ranges('dist/agent/manager/manager.js', ['fetchX509', 'fetchJwt']),
      ...ranges('dist/agent/manager/svid.js', ['servedUntil', 'usable']),
    ],
    tests: ['dist/agent/manager/manager.test.js'],
    nodeArgs: ['--test-name-pattern=^(fetchX509|fetchJwt|authorization|an entry that cannot be signed|an SVID past its serving time)'],
    timeoutMS: 30_000,
    // A test process killed at its first failure would leave its spindle-server running.
    forceBail: false,
  },
  agentapi: {
    // The unary handlers (service.ts) and caller authentication with the caller's authorized
    // entries (auth.ts); AttestAgent and the sync streams are tested end to end.
    mutate: () => [
      ...ranges('dist/server/api/agent/service.js', ['service']),
      ...ranges('dist/server/api/agent/auth.js', ['authenticate', '#verifyAgentCert', 'authorizedEntry', 'authorizedMap']),
    ],
    tests: ['dist/server/api/agent/service.test.js'],
  },
  caller: {
    mutate: () => ['dist/agent/endpoints/caller.js', 'dist/agent/endpoints/procfs.js', ...ranges('dist/agent/endpoints/listener.js', ['TrackedPeer'])],
    tests: ['dist/agent/endpoints/caller.test.js', 'dist/agent/endpoints/listener.test.js', 'dist/agent/endpoints/procfs.test.js', 'dist/agent/endpoints/workloadapi.test.js'],
  },
  jointoken: {
    mutate: () => ['dist/attestors/node/join_token/server.js', ...ranges('dist/server/datastore/sqlite/jointokens.js', ['consumeJoinToken'])],
    // The datastore contract run against SQLite (single use, expiry left to the caller) and
    // SQLite's own tests (eight processes racing for one token).
    tests: ['dist/test/join-token-attestor.test.js', 'dist/test/datastore/sqlite.test.js', 'dist/server/datastore/sqlite/sqlite.test.js'],
  },
  jwtsvid: {
    mutate: () => ['dist/spiffe/jwtsvid.js'],
    tests: ['dist/spiffe/jwtsvid.test.js'],
  },
  verify: {
    mutate: () => ['dist/spiffe/x509/verify.js'],
    tests: ['dist/spiffe/x509/verify.test.js'],
  },
};

const name = process.env.MUTATE_GROUP ?? '';
const group = GROUPS[name];
if (group === undefined) {
  throw new Error(`stryker.conf.mjs: MUTATE_GROUP must be one of ${Object.keys(GROUPS).join(', ')}, got ${JSON.stringify(name)}; run it through \`npm run mutate\``);
}

// Tests that start a process as uid 65534 (the caller group's workloadapi.test.js) need code that
// user can read. The sandbox is a 0700 directory without node_modules of its own (it resolves the
// checkout's), so the readable copy test/support/otheruid.ts would make of it fails: such
// processes run the checkout's own build instead (they are clients of the code under test; only
// code in the test process counts as covered anyway). The test processes inherit this variable.
process.env.SPINDLE_TEST_OTHER_UID_ROOT ??= process.cwd();

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'tap',
  plugins: ['@stryker-mutator/tap-runner'],
  tap: {
    testFiles: group.tests,
    // node:test prints TAP when its output is not a terminal; say so anyway.
    nodeArgs: ['--test-reporter=tap', ...(group.nodeArgs ?? []), '-r', '{{hookFile}}', '{{testFile}}'],
    forceBail: group.forceBail ?? true,
  },
  mutate: group.mutate(),
  // Which test files reach which mutant, so each mutant runs only the files that can kill it.
  coverageAnalysis: 'perTest',
  concurrency: 2,
  // Added to (dry-run time x timeoutFactor) before a mutant counts as timed out (an endless
  // loop, say). The tests start real servers and sockets; a slow, shared machine needs room.
  timeoutMS: group.timeoutMS ?? 15_000,
  timeoutFactor: 3,
  dryRunTimeoutMinutes: 10,
  reporters: ['clear-text', 'progress-append-only', 'json'],
  jsonReporter: { fileName: `reports/mutation/${name}.json` },
  clearTextReporter: { allowColor: false, logTests: false, reportScoreTable: true },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
  // The checkout's own node_modules is linked into the sandbox, not copied.
  symlinkNodeModules: true,
  ignorePatterns: ['/.git', '/reports', '/.stryker-tmp', '/.spindle', '/deploy', '/docs', '/bench', '/dist/bench'],
};

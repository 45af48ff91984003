/*
 * The layering of the source tree, checked by dependency-cruiser in `npm test`
 * (`npm run lint:layers`). Layers, lowest first:
 *
 *   proto/gen -> spiffe -> common -> attestors -> server | agent | oidc | proxy -> scripts, bench, test
 *
 * A file may import from its own layer and from the layers below it, never from above.
 * The layer rules hold for test files too, except that any test file may use the shared test
 * helpers under test/support/ and the test kits.
 * server/, agent/ and oidc/ (the OIDC Discovery Provider, bin/spindle-oidc) sit side by side and
 * never import each other. proxy/ (spindle-proxy, the mTLS sidecar, bin/spindle-proxy) is a
 * workload of the SDK: it imports only spiffe/ (the SDK in spiffe/sdk/ included) and common/,
 * and nothing imports it. Test kits (files named
 * testkit.ts, everything under test/support/) and test files are for tests only: no
 * production module imports them, so nothing the binaries load pulls them in. Only
 * server/datastore/factory.ts imports a datastore backend (server/datastore/sqlite/, postgres/); everything
 * else holds the DataStore interface.
 * docs/ARCHITECTURE.md ("Layers and the check") explains how to read a failure.
 */
'use strict';

const PRODUCTION = '^(proto/gen|spiffe|common|attestors|server|agent|oidc|proxy)/';
/* Test files, test kits, test/ and child-process fixtures that tests spawn (fixtures/ folders). */
const TESTS_AND_KITS = '(^|/)testkit\\.ts$|^test/|\\.test\\.ts$|/fixtures/';

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import cycles are not allowed anywhere (bench and tests included): break the cycle by moving the shared part into a module both sides import.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'proto-gen-standalone',
      severity: 'error',
      comment: 'proto/gen is generated code and imports nothing else of ours.',
      from: { path: '^proto/gen/' },
      to: { path: '^(spiffe|common|attestors|server|agent|oidc|proxy|scripts|bench)/' },
    },
    {
      name: 'spiffe-standalone',
      severity: 'error',
      comment: 'spiffe/ is a standalone library: it imports only node builtins, npm packages, proto/gen and itself.',
      from: { path: '^spiffe/' },
      to: { path: '^(common|attestors|server|agent|oidc|proxy|scripts|bench)/' },
    },
    {
      name: 'common-only-spiffe',
      severity: 'error',
      comment: 'common/ imports only spiffe/ (and proto/gen, npm packages, node builtins).',
      from: { path: '^common/' },
      to: { path: '^(attestors|server|agent|oidc|proxy|scripts|bench)/' },
    },
    {
      name: 'attestors-below-server-and-agent',
      severity: 'error',
      comment: 'attestors/ import only spiffe/, common/ and their own interfaces (attestors/**): shared types they need live in spiffe/ or common/, not in server/ or agent/.',
      from: { path: '^attestors/' },
      to: { path: '^(server|agent|oidc|proxy|scripts|bench)/' },
    },
    {
      name: 'agent-not-server',
      severity: 'error',
      comment: 'agent/ never imports server/: what both need lives in spiffe/, common/ or attestors/.',
      from: { path: '^agent/' },
      to: { path: '^server/' },
    },
    {
      name: 'server-not-agent',
      severity: 'error',
      comment: 'server/ never imports agent/: what both need lives in spiffe/, common/ or attestors/.',
      from: { path: '^server/' },
      to: { path: '^agent/' },
    },
    {
      name: 'agent-not-oidc',
      severity: 'error',
      comment: 'agent/ never imports oidc/ (the OIDC Discovery Provider): what both need lives in spiffe/ or common/.',
      from: { path: '^agent/' },
      to: { path: '^oidc/' },
    },
    {
      name: 'server-not-oidc',
      severity: 'error',
      comment: 'server/ never imports oidc/ (the OIDC Discovery Provider): what both need lives in spiffe/ or common/.',
      from: { path: '^server/' },
      to: { path: '^oidc/' },
    },
    {
      name: 'oidc-not-server-or-agent',
      severity: 'error',
      comment: 'oidc/ (the OIDC Discovery Provider) is a separate program beside server/ and agent/: it talks to them over their sockets (admin API, Workload API) through proto/gen and spiffe/, never by importing their code.',
      from: { path: '^oidc/' },
      to: { path: '^(server|agent)/' },
    },
    {
      name: 'proxy-only-spiffe-and-common',
      severity: 'error',
      comment: 'proxy/ (spindle-proxy, the mTLS sidecar) is built on the workload SDK: it imports spiffe/ (spiffe/sdk/ included) and common/ only, never proto/gen directly, attestors/, server/, agent/ or oidc/; it talks to the agent through the Workload API like any workload.',
      from: { path: '^proxy/' },
      to: { path: '^(proto/gen|attestors|server|agent|oidc)/' },
    },
    {
      name: 'nothing-imports-proxy',
      severity: 'error',
      comment: 'server/, agent/ and oidc/ never import proxy/ (spindle-proxy): it is a separate program on top of the SDK; what they would share lives in spiffe/ or common/.',
      from: { path: '^(server|agent|oidc)/' },
      to: { path: '^proxy/' },
    },
    {
      name: 'production-not-tools',
      severity: 'error',
      comment: 'Production code never imports scripts/, bench/ or test/: those sit on top of everything.',
      from: { path: PRODUCTION, pathNot: TESTS_AND_KITS },
      to: { path: '^(scripts|bench|test)/' },
    },
    {
      name: 'production-not-testkits',
      severity: 'error',
      comment: 'Test kits (testkit.ts, test/support/**) and test files are for tests only; production code never imports them, so the binaries never load them.',
      from: { path: PRODUCTION, pathNot: TESTS_AND_KITS },
      to: { path: TESTS_AND_KITS },
    },
    {
      name: 'datastore-backend-via-factory',
      severity: 'error',
      comment: 'A datastore backend (server/datastore/sqlite/, server/datastore/postgres/) is opened only by server/datastore/factory.ts: everything else, tests and bench included, holds a DataStore (server/datastore/types.ts) and opens it through the factory, so a second backend drops in. The backend folder itself (with its own tests) may import its files.',
      from: { pathNot: '^server/datastore/(factory\\.ts$|sqlite/)' },
      to: { path: '^server/datastore/sqlite/' },
    },
    {
      name: 'datastore-backend-via-factory',
      severity: 'error',
      comment: 'The PostgreSQL backend (server/datastore/postgres/) likewise: only server/datastore/factory.ts and the folder itself import it.',
      from: { pathNot: '^server/datastore/(factory\\.ts$|postgres/)' },
      to: { path: '^server/datastore/postgres/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that cannot be resolved (a typo, or a .js specifier with no matching .ts file).',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.json'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};

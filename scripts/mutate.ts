/**
 * Mutation testing of the security core: runs StrykerJS (stryker.conf.mjs) once per module
 * group, then prints one table of the mutation score per mutated file. `npm run mutate` builds
 * first and runs every group; `npm run mutate -- agentapi caller` runs only those groups.
 * Slow (tens of minutes), so not part of `npm test`; see docs/security.md for the figures.
 *
 * Score = (killed + timed out) / (killed + timed out + survived + no coverage), Stryker's own
 * definition. Each group's full report is left in reports/mutation/<group>.json.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../test/support/paths.js';

/** In the order they run; the names stryker.conf.mjs knows. */
const GROUPS = ['authorized', 'manager', 'agentapi', 'caller', 'jointoken', 'jwtsvid', 'verify'] as const;

const asked = process.argv.slice(2);
const unknown = asked.filter((g) => !(GROUPS as readonly string[]).includes(g));
if (unknown.length > 0) {
  console.error(`unknown mutation group(s) ${unknown.join(', ')}: choose among ${GROUPS.join(', ')}`);
  process.exit(2);
}
const groups = asked.length > 0 ? GROUPS.filter((g) => asked.includes(g)) : [...GROUPS];

interface Counts {
  mutants: number;
  killed: number;
  survived: number;
  timeout: number;
  noCoverage: number;
  other: number;
}

/** Per mutated file, from a Stryker JSON report (mutation-testing-report-schema). */
function countsOf(reportPath: string): Map<string, Counts> {
  const report = JSON.parse(readFileSync(reportPath, 'utf8')) as { files: Record<string, { mutants: Array<{ status: string }> }> };
  const out = new Map<string, Counts>();
  for (const [file, { mutants }] of Object.entries(report.files)) {
    const c: Counts = { mutants: 0, killed: 0, survived: 0, timeout: 0, noCoverage: 0, other: 0 };
    for (const m of mutants) {
      if (m.status === 'Ignored') continue;
      c.mutants++;
      if (m.status === 'Killed') c.killed++;
      else if (m.status === 'Survived') c.survived++;
      else if (m.status === 'Timeout') c.timeout++;
      else if (m.status === 'NoCoverage') c.noCoverage++;
      else c.other++;
    }
    out.set(file, c);
  }
  return out;
}

const stryker = join(repoRoot, 'node_modules', '.bin', 'stryker');
const rows: string[] = [];
let failed = 0;
for (const group of groups) {
  const started = Date.now();
  console.log(`\n# mutation group ${group}`);
  const r = spawnSync(stryker, ['run', 'stryker.conf.mjs'], { cwd: repoRoot, stdio: 'inherit', env: { ...process.env, MUTATE_GROUP: group } });
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  const report = join(repoRoot, 'reports', 'mutation', `${group}.json`);
  if (r.status !== 0 || !existsSync(report)) {
    failed++;
    rows.push(`| ${group} | (Stryker failed: exit ${r.status ?? r.signal}) | | | | | | | ${minutes} min |`);
    continue;
  }
  for (const [file, c] of countsOf(report)) {
    const detected = c.killed + c.timeout;
    const valid = detected + c.survived + c.noCoverage;
    const score = valid === 0 ? 'n/a' : `${((100 * detected) / valid).toFixed(1)}%`;
    rows.push(`| ${group} | ${file} | ${c.mutants} | ${c.killed} | ${c.survived} | ${c.timeout} | ${c.noCoverage} | ${score} | ${minutes} min |`);
  }
}

console.log('\n| group | file | mutants | killed | survived | timed out | no coverage | score | run time |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
process.exit(failed > 0 ? 1 : 0);

/**
 * The soak command: `npm run soak -- [--duration 600] [--workloads 300] [--processes 4]
 * [--fuzz-cases 5000] [--no-ca-rotation] [--no-fuzz]`.
 *
 * 1. CA rotation with two workloads doing mTLS continuously (ca-rotation.ts, ~2 min): zero
 *    failed verifications.
 * 2. Churn: a server and an agent; `workloads` SDK watches across `processes` processes (half
 *    as this uid, half as uid 65534 when root) on entries with 10 s SVIDs; constant entry churn
 *    (create, update, delete; some entries match the watching workloads, so their streams are
 *    pushed to); for `duration` seconds. Every 10 s the RSS and open FD count of server and agent
 *    are sampled (/proc/<pid>/status VmRSS, /proc/<pid>/fd).
 *    "Flat" means: the average RSS of the last third of the samples is at most 15% (and 20 MiB)
 *    above the average of the middle third, for each process; the FD count after the
 *    workloads disconnect is back within 10 of the count before they connected; no watch was
 *    ever sent an expired SVID, none ended for good, and all hold an identity at the end.
 * 3. The fuzz harness (test/security/fuzz, when built) at `fuzz-cases` cases against the same
 *    server and agent.
 * Exit status 1 if any check fails; the table and the verdicts are printed either way.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { startServerProcess, type ServerProcess } from '../support/serverproc.js';
import { adminClient, keepOrClean, ok, procStats, sleep, workloadEntry } from '../faults/support/common.js';
import { startWatchers, type SummaryEvent, type UpdateEvent, type WatcherProcess } from '../faults/support/workloads.js';
import { runCaRotation } from './ca-rotation.js';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} needs a non-negative number, got ${JSON.stringify(process.argv[i + 1])}`);
  return v;
}
const has = (name: string): boolean => process.argv.includes(`--${name}`);

const DURATION_S = flag('duration', 600);
const WORKLOADS = flag('workloads', 300);
const PROCESSES = Math.max(1, flag('processes', Math.ceil(WORKLOADS / 90)));
const FUZZ_CASES = flag('fuzz-cases', 5000);
const SAMPLE_MS = 10_000;
const RSS_GROWTH = 0.15;
const RSS_SLACK_KB = 20 * 1024;
const FD_SLACK = 10;
const TD = 'example.org';
const ALIAS = `spiffe://${TD}/soak/node`;
const isRoot = process.getuid?.() === 0;

const verdicts: Array<{ check: string; pass: boolean; detail: string }> = [];
const verdict = (check: string, pass: boolean, detail: string): void => {
  verdicts.push({ check, pass, detail });
  console.log(`${pass ? 'PASS' : 'FAIL'}  ${check}: ${detail}`);
};

interface Sample {
  t: number;
  server: { rssKb: number; fds: number };
  agent: { rssKb: number; fds: number };
  withIdentity: number;
}

function table(samples: Sample[]): string {
  const rows = ['   t(s) | server RSS MiB | server FDs | agent RSS MiB | agent FDs | watches with identity'];
  for (const s of samples) {
    rows.push(`${String(Math.round(s.t / 1000)).padStart(7)} | ${(s.server.rssKb / 1024).toFixed(1).padStart(13)} | ${String(s.server.fds).padStart(10)} | ${(s.agent.rssKb / 1024).toFixed(1).padStart(13)} | ${String(s.agent.fds).padStart(9)} | ${s.withIdentity}`);
  }
  return rows.join('\n');
}

const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function churnPhase(): Promise<{ server: ServerProcess; agent: AgentProcess }> {
  const server = await startServerProcess({ trustDomain: TD, extraArgs: ['-logLevel', 'INFO'] });
  const token = generateJoinToken(server, ALIAS);
  const uids = isRoot ? [process.getuid!(), 65534] : [process.getuid!()];
  for (const uid of uids) ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', `spiffe://${TD}/soak/uid-${uid}`, '-selector', `unix:uid:${uid}`, '-x509SVIDTTL', '10']));
  // The per-process stream limit (default 100) must allow the watches of one process.
  const perProcess = Math.ceil(WORKLOADS / PROCESSES);
  const agent = await startAgentProcess({ server, joinToken: token, extraArgs: ['-logLevel', 'INFO'] });
  const serverPid = server.proc.pid!;
  const agentPid = agent.proc.pid!;
  await sleep(2000);
  const baseline = { server: procStats(serverPid), agent: procStats(agentPid) };
  console.log(`soak: ${WORKLOADS} watches in ${PROCESSES} processes (${perProcess} each) for ${DURATION_S} s; baseline server ${JSON.stringify(baseline.server)}, agent ${JSON.stringify(baseline.agent)}`);

  const watchers: WatcherProcess[] = [];
  for (let p = 0; p < PROCESSES; p++) watchers.push(startWatchers({ address: agent.address, uid: uids[p % uids.length], count: perProcess, backoffMs: 500, summary: true }));
  const lastSummary = (w: WatcherProcess): SummaryEvent | undefined => w.events.findLast((e): e is SummaryEvent => e.t === 'summary');

  // Churn: create / update / delete, ~20 operations a second; every 10th entry matches the workloads.
  const admin = adminClient(server);
  let stop = false;
  let ops = 0;
  let opErrors = 0;
  const live: string[] = [];
  const churn = (async () => {
    for (let n = 0; !stop; n++) {
      try {
        const r = n % 3;
        if (r === 0 || live.length < 20) {
          const uid = n % 10 === 0 ? uids[n % uids.length]! : 100_000 + (n % 5000);
          const res = await admin.call(admin.entry.batchCreateEntry, { entries: [workloadEntry({ spiffeId: `spiffe://${TD}/soak/churn/${n}`, parentId: ALIAS, selectors: [`unix:uid:${uid}`], x509SvidTtl: 10 })] });
          if (res.results[0]?.status?.code === 0) live.push(res.results[0].entry!.id);
          else opErrors++;
        } else if (r === 1) {
          const id = live[n % live.length]!;
          const got = await admin.call(admin.entry.getEntry, { id });
          const res = await admin.call(admin.entry.batchUpdateEntry, { entries: [{ ...got, x509SvidTtl: 10 + (n % 20) }] });
          if (res.results[0]?.status?.code !== 0) opErrors++;
        } else {
          const id = live.splice(n % live.length, 1)[0]!;
          const res = await admin.call(admin.entry.batchDeleteEntry, { ids: [id] });
          if (res.results[0]?.status?.code !== 0) opErrors++;
        }
        ops++;
      } catch (err) {
        opErrors++;
        if (opErrors < 5) console.error(`churn: ${(err as Error).message}`);
      }
      await sleep(50);
    }
  })();

  const samples: Sample[] = [];
  const t0 = Date.now();
  while (Date.now() - t0 < DURATION_S * 1000) {
    await sleep(Math.min(SAMPLE_MS, DURATION_S * 1000 - (Date.now() - t0)));
    samples.push({ t: Date.now() - t0, server: procStats(serverPid), agent: procStats(agentPid), withIdentity: watchers.reduce((n, w) => n + (lastSummary(w)?.withIdentity ?? 0), 0) });
    if (samples.length % 6 === 0) console.log(table(samples.slice(-6)).split('\n').slice(1).join('\n'));
  }
  stop = true;
  await churn;
  admin.close();

  const summaries = watchers.map(lastSummary);
  const expired = summaries.reduce((n, s) => n + (s?.expired ?? 0), 0);
  const finals = watchers.flatMap((w) => w.events.filter((e) => e.t === 'error' && e.final));
  const withIdentity = summaries.reduce((n, s) => n + (s?.withIdentity ?? 0), 0);
  const updates = summaries.reduce((n, s) => n + (s?.updates ?? 0), 0);
  for (const w of watchers) await w.stop();
  await sleep(5000);
  const after = { server: procStats(serverPid), agent: procStats(agentPid) };

  console.log(`\n${table(samples)}\nafter the workloads disconnected: server ${JSON.stringify(after.server)}, agent ${JSON.stringify(after.agent)}`);
  verdict('churn ran', ops > DURATION_S * 5 && opErrors < ops / 100, `${ops} entry operations, ${opErrors} errors`);
  const expiredExamples = watchers
    .flatMap((w) => w.events)
    .filter((e): e is UpdateEvent => e.t === 'update' && e.notAfter.some((n) => n <= e.wall))
    .slice(0, 3)
    .map((e) => e.ids.map((id, k) => `${id} (expired ${e.wall - e.notAfter[k]!} ms before it was sent)`).filter((_, k) => e.notAfter[k]! <= e.wall).join(', '));
  verdict('no expired SVID served', expired === 0, `${expired} expired SVIDs in ${updates} updates${expiredExamples.length ? `; e.g. ${expiredExamples.join(' | ')}` : ''}`);
  verdict('no watch ended for good', finals.length === 0, finals.slice(0, 3).map((e) => JSON.stringify(e)).join('; ') || 'none');
  verdict('every watch holds an identity at the end', withIdentity === perProcess * PROCESSES, `${withIdentity} of ${perProcess * PROCESSES}`);
  if (samples.length >= 6) {
    const third = Math.floor(samples.length / 3);
    for (const who of ['server', 'agent'] as const) {
      const mid = avg(samples.slice(third, 2 * third).map((s) => s[who].rssKb));
      const last = avg(samples.slice(2 * third).map((s) => s[who].rssKb));
      const bound = Math.max(mid * (1 + RSS_GROWTH), mid + RSS_SLACK_KB);
      verdict(`${who} RSS flat`, last <= bound, `last third ${(last / 1024).toFixed(1)} MiB vs middle third ${(mid / 1024).toFixed(1)} MiB (bound ${(bound / 1024).toFixed(1)} MiB)`);
    }
  } else verdict('RSS flat', false, `only ${samples.length} samples: run at least ${(6 * SAMPLE_MS) / 1000} s`);
  for (const who of ['server', 'agent'] as const) {
    verdict(`${who} FDs back to baseline`, after[who].fds <= baseline[who].fds + FD_SLACK, `${after[who].fds} after vs ${baseline[who].fds} before (slack ${FD_SLACK}); peak ${Math.max(...samples.map((s) => s[who].fds))}`);
  }
  return { server, agent };
}

async function fuzzPhase(server: ServerProcess, agent: AgentProcess): Promise<void> {
  // Coordination with test/security/fuzz (another engineer's): loaded by path at run time so this
  // file builds without it; the contract used is runFuzz({ cases, seed, targets, probe }) ->
  // { cases, failures, outcomes, ms }.
  const fuzzJs = fileURLToPath(new URL('../security/fuzz/index.js', import.meta.url));
  if (!existsSync(fuzzJs)) {
    console.log(`fuzz: ${fuzzJs} not built: skipped`);
    return;
  }
  type RunFuzz = (o: { cases: number; seed: number; targets: object; probe?: () => Promise<void> }) => Promise<{ cases: number; failures: unknown[]; outcomes: Record<string, number>; ms: number }>;
  const mod = (await import(pathToFileURL(fuzzJs).href)) as { runFuzz?: RunFuzz };
  if (typeof mod.runFuzz !== 'function') {
    verdict('fuzz', false, `${fuzzJs} exports no runFuzz`);
    return;
  }
  const seed = Number(process.env['SPINDLE_FUZZ_SEED'] ?? Date.now() % 1_000_000);
  const report = await mod.runFuzz({
    cases: FUZZ_CASES,
    seed,
    targets: {
      workload: { socketPath: agent.socketPath },
      admin: { socketPath: server.socketPath },
      agent: { host: '127.0.0.1', port: server.port, caPem: readFileSync(agent.bundlePath, 'utf8') },
    },
    probe: async () => {
      ok(server.cli(['healthcheck']), 'server healthcheck');
      if (agent.proc.exitCode !== null || agent.proc.signalCode !== null) throw new Error('the agent exited');
    },
  });
  verdict('fuzz', report.failures.length === 0, `${report.cases} cases (seed ${seed}) in ${(report.ms / 1000).toFixed(0)} s, outcomes ${JSON.stringify(report.outcomes)}, failures ${JSON.stringify(report.failures.slice(0, 3))}`);
}

async function main(): Promise<void> {
  if (!isRoot) console.log('soak: not root: every workload runs as this uid');
  if (!has('no-ca-rotation')) {
    console.log('ca-rotation: a server with ca_ttl 2m, two workloads in mTLS every 250 ms across the CA activation (~2 min)');
    const r = await runCaRotation((l) => console.log(l));
    verdict('CA rotation: zero failed verifications', r.failed === 0 && r.failures.length === 0 && r.ok > 100, `${r.ok} handshakes ok, ${r.failed} failed in ${(r.ms / 1000).toFixed(0)} s; CA pairs (client server) ${r.issuerPairs.join(' | ')}; bundle sizes ${r.bundleSizes.join('/')}; ${r.failures.slice(0, 5).join(' / ')}`);
  }
  let procs: { server: ServerProcess; agent: AgentProcess } | undefined;
  try {
    procs = await churnPhase();
    if (!has('no-fuzz') && FUZZ_CASES > 0) await fuzzPhase(procs.server, procs.agent);
  } finally {
    await procs?.agent.stop();
    await procs?.server.stop();
    keepOrClean(!!process.env['SPINDLE_E2E_KEEP'], [procs?.server, procs?.agent]);
  }
  const failed = verdicts.filter((v) => !v.pass);
  console.log(`\nsoak: ${verdicts.length - failed.length} of ${verdicts.length} checks passed`);
  process.exit(failed.length === 0 ? 0 : 1);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

/**
 * spindle-proxy's data path (`--only proxy-throughput,proxy-requests,proxy-latency`): a real
 * outbound + inbound pair of `bin/spindle-proxy` processes (identities from two Workload API
 * test-kit agents, `web` dialling `db`), measured against a same-run baseline: a plain node:tls
 * relay pair (bench/proxy/worker.ts: plain TCP -> node:tls mTLS with the same certificates ->
 * plain TCP) in front of the same services. Load generators are separate processes
 * (worker.ts `load`), one per round; paths alternate round by round so drift on this shared
 * machine hits both alike. Everything runs on 127.0.0.1 and is bounded in count and time.
 *
 * - proxy-throughput: one bulk TCP upload (64 MB, `--quick` 16 MB) through the pair into a sink,
 *   MB/s from connect to the sink's byte count; median over the rounds.
 * - proxy-requests: HTTP/1.1 keep-alive GETs, 16 connections one request at a time each, for
 *   `--seconds` per round: through TCP listeners, through an `http: true` inbound listener, and
 *   through the relay.
 * - proxy-latency: open loop at 1,000 req/s over 16 keep-alive connections opened beforehand
 *   (latency from each request's scheduled start),
 *   direct to the service, through the pair (TCP listeners; `http: true` inbound as a second
 *   figure) and through the relay; the added latency is each path's p50 / p99 minus direct's.
 *
 * `--proxy-cpu-prof DIR` runs both proxies under `node --cpu-prof` (profiles written on exit).
 * With SPINDLE_BENCH_DEBUG set, proxy-throughput prints each process's CPU seconds and
 * proxy-latency each path's connection count and slowest requests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toPem } from '../../spiffe/pem.js';
import { createTestTrust, FakeAgent, type FakeIdentity } from '../../spiffe/workloadapi/testkit.js';
import { freePort, repoRoot } from '../../test/support/serverproc.js';
import { isSelected } from '../server/scenarios.js';
import { percentile } from '../stats.js';
import { printTable, type Row } from '../table.js';

export const PROXY_SCENARIOS = ['proxy-throughput', 'proxy-requests', 'proxy-latency'] as const;
export const PROXY_BENCH_OPTIONS = { 'proxy-cpu-prof': { type: 'string' } } as const;

export interface ProxyBenchValues {
  only?: string;
  quick?: boolean;
  'proxy-cpu-prof'?: string;
}

const WORKER = join(repoRoot, 'dist', 'bench', 'proxy', 'worker.js');
const PROXY_BIN = join(repoRoot, 'bin', 'spindle-proxy');
const DB = 'spiffe://example.org/db';
const WEB = 'spiffe://example.org/web';

interface Child {
  proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

function stopper(proc: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      proc.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      proc.kill('SIGTERM');
    });
}

/** A worker.ts role that prints one JSON line once ready (bounded). */
async function startWorker(role: string, arg: object): Promise<{ child: Child; info: Record<string, unknown> }> {
  const proc = spawn(process.execPath, [WORKER, role, JSON.stringify(arg)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8192)));
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${role} not ready in 20 s: ${err}`)), 20_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const i = out.indexOf('\n');
      if (i >= 0) {
        clearTimeout(timer);
        resolve(JSON.parse(out.slice(0, i)) as Record<string, unknown>);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${role} exited ${code}: ${err}`));
    });
  });
  proc.removeAllListeners('exit');
  proc.stdout!.resume();
  return { child: { proc, log: () => err, stop: stopper(proc) }, info };
}

/** One load run in its own process; resolves with its JSON result (bounded by `timeoutMs`). */
function runLoad(job: object, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [WORKER, 'load', JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4096)));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`load ${JSON.stringify(job).slice(0, 80)} exited ${code}: ${err.trim().split('\n')[0] ?? ''}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>);
    });
  });
}

async function waitReady(adminPort: number, what: () => string, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`spindle-proxy exited ${proc.exitCode}: ${what()}`);
    const code = await new Promise<number>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/ready' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(0));
    });
    if (code === 200) return;
    if (Date.now() > deadline) throw new Error(`spindle-proxy not ready in 30 s: ${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** bin/spindle-proxy run -config <file>: access log and operational log to files (as a container runtime would). */
async function startProxy(dir: string, name: string, yaml: string, agent: FakeAgent, adminPort: number, profDir: string | undefined): Promise<Child> {
  const cfg = join(dir, `${name}.yaml`);
  writeFileSync(cfg, yaml);
  const logFile = join(dir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const nodeArgs = profDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `spindle-proxy-${name}.${Date.now()}.cpuprofile`];
  const proc = spawn(process.execPath, [...nodeArgs, PROXY_BIN, 'run', '-config', cfg], { env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: agent.address }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const log = (): string => readFileSync(logFile, 'utf8').slice(-4096);
  await waitReady(adminPort, log, proc);
  return { proc, log, stop: stopper(proc) };
}

/** CPU seconds (user + system) the processes have used so far, from /proc (NaN where it is missing). */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch {
      return NaN;
    }
  }
  return ticks / 100; // USER_HZ
}

const median = (xs: number[]): number => percentile(xs, 50);
const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;
const f1 = (x: number): string => x.toFixed(1);
const rps = (x: number): string => `${Math.round(x).toLocaleString('en-US')}/s`;
const msd = (x: number): string => `${x >= 0 ? '' : '-'}${Math.abs(x).toFixed(2)} ms`;
const span = (xs: number[], fmt: (x: number) => string): string => `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}`;

interface Setup {
  /** Through the proxy pair: outbound listener ports. */
  proxySink: number;
  proxyHttpTcp: number;
  proxyHttp: number;
  /** Through the relay pair. */
  relaySink: number;
  relayHttp: number;
  /** The service directly. */
  directHttp: number;
  /** The pids of the proxy pair and of the relay pair, for CPU accounting. */
  proxyPids: number[];
  relayPids: number[];
  children: Child[];
  agents: FakeAgent[];
  dir: string;
}

async function setUp(profDir: string | undefined): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-proxybench-'));
  const children: Child[] = [];
  const agents: FakeAgent[] = [];
  const s: Partial<Setup> = { children, agents, dir };
  try {
    const trust = await createTestTrust();
    agents.push(await FakeAgent.start({ identities: [trust.db], ...trust.material }));
    agents.push(await FakeAgent.start({ identities: [trust.web], ...trust.material }));
    const [agentDb, agentWeb] = agents as [FakeAgent, FakeAgent];

    const svc = await startWorker('service', {});
    children.push(svc.child);
    const sink = svc.info.sink as number;
    const web = svc.info.http as number;
    s.directHttp = web;

    // The proxy pair: db's inbound listeners (TCP to the sink, TCP to the HTTP service, http: true), web's outbound ones.
    const [inSink, inHttpTcp, inHttp, outSink, outHttpTcp, outHttp, adminIn, adminOut] = await Promise.all(Array.from({ length: 8 }, () => freePort()));
    const inbound = (name: string, port: number, fwd: number, httpMode: boolean): string =>
      `  - name: ${name}\n    mode: inbound\n    listen: 127.0.0.1:${port}\n    forward: 127.0.0.1:${fwd}\n    allow: [${WEB}]\n${httpMode ? '    http: true\n' : ''}`;
    const outbound = (name: string, port: number, to: number): string => `  - name: ${name}\n    mode: outbound\n    listen: 127.0.0.1:${port}\n    connect: 127.0.0.1:${to}\n    expect: [${DB}]\n`;
    children.push(
      await startProxy(
        dir,
        'inbound',
        `admin: 127.0.0.1:${adminIn}\nlisteners:\n${inbound('sink', inSink!, sink, false)}${inbound('web-tcp', inHttpTcp!, web, false)}${inbound('web-http', inHttp!, web, true)}`,
        agentDb,
        adminIn!,
        profDir,
      ),
    );
    children.push(
      await startProxy(
        dir,
        'outbound',
        `admin: 127.0.0.1:${adminOut}\nlisteners:\n${outbound('sink', outSink!, inSink!)}${outbound('web-tcp', outHttpTcp!, inHttpTcp!)}${outbound('web-http', outHttp!, inHttp!)}`,
        agentWeb,
        adminOut!,
        profDir,
      ),
    );
    Object.assign(s, { proxySink: outSink, proxyHttpTcp: outHttpTcp, proxyHttp: outHttp, proxyPids: children.slice(-2).map((c) => c.proc.pid!) });

    // The relay pair with the same certificates (db serves, web dials).
    const pem = (name: string, id: FakeIdentity): { key: string; cert: string } => {
      const key = join(dir, `${name}.key`);
      const cert = join(dir, `${name}.crt`);
      writeFileSync(key, toPem('PRIVATE KEY', id.keyPkcs8));
      writeFileSync(cert, id.chain.map((c) => toPem('CERTIFICATE', c)).join(''));
      return { key, cert };
    };
    const ca = join(dir, 'ca.crt');
    writeFileSync(ca, toPem('CERTIFICATE', trust.ca.rootDer));
    const rin = await startWorker('relay-in', { ...pem('db', trust.db), ca, targets: [sink, web] });
    children.push(rin.child);
    const rout = await startWorker('relay-out', { ...pem('web', trust.web), ca, targets: rin.info.ports });
    children.push(rout.child);
    [s.relaySink, s.relayHttp] = rout.info.ports as [number, number];
    s.relayPids = [rin.child.proc.pid!, rout.child.proc.pid!];
    return s as Setup;
  } catch (err) {
    await tearDown(s as Setup);
    throw err;
  }
}

async function tearDown(s: Setup): Promise<void> {
  await Promise.all(s.children.map((c) => c.stop()));
  await Promise.all(s.agents.map((a) => a.stop()));
  rmSync(s.dir, { recursive: true, force: true });
}

/**
 * Rounds of `paths`, the order rotated every round; returns each path's results in round order,
 * and the CPU seconds `pidsOf(path)` used during that path's rounds, summed.
 */
async function alternate<T>(rounds: number, paths: string[], run: (path: string) => Promise<T>, pidsOf: (path: string) => number[] = () => []): Promise<{ res: Map<string, T[]>; cpu: Map<string, number> }> {
  const res = new Map<string, T[]>(paths.map((p) => [p, []]));
  const cpu = new Map<string, number>(paths.map((p) => [p, 0]));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < paths.length; i++) {
      const p = paths[(i + r) % paths.length]!;
      const c0 = cpuSeconds(pidsOf(p));
      res.get(p)!.push(await run(p));
      cpu.set(p, cpu.get(p)! + cpuSeconds(pidsOf(p)) - c0);
    }
  }
  return { res, cpu };
}

async function throughput(s: Setup, quick: boolean): Promise<Row[]> {
  const bytes = (quick ? 16 : 64) * 1024 * 1024;
  const rounds = quick ? 2 : 5;
  const port: Record<string, number> = { proxy: s.proxySink, relay: s.relaySink };
  const { res, cpu } = await alternate(
    rounds,
    ['proxy', 'relay'],
    async (p) => (await runLoad({ kind: 'bulk', port: port[p], bytes, timeoutMs: 60_000 }, 90_000)).mbps as number,
    (p) => (p === 'proxy' ? s.proxyPids : s.relayPids),
  );
  if (process.env.SPINDLE_BENCH_DEBUG !== undefined) {
    console.log('CPU s so far per process (inbound, outbound / relay-in, relay-out):', s.proxyPids.map((p) => cpuSeconds([p])), s.relayPids.map((p) => cpuSeconds([p])));
  }
  const proxy = res.get('proxy')!;
  const relay = res.get('relay')!;
  const ratio = median(proxy) / median(relay);
  const perGb = (p: string): number => (cpu.get(p)! * 1e9) / (rounds * bytes);
  return [
    {
      figure: `bulk TCP upload through the outbound + inbound pair (${bytes / 1024 / 1024} MB, median of ${rounds})`,
      measured: `${f1(median(proxy))} MB/s (rounds ${span(proxy, f1)})`,
      target: '>= 80% of the plain relay',
      baseline: `node:tls relay pair: ${f1(median(relay))} MB/s (rounds ${span(relay, f1)}); ${pct(ratio)}`,
      pass: ratio >= 0.8,
    },
    {
      figure: 'CPU of the pair (both processes) per GB moved',
      measured: `${f1(perGb('proxy'))} s`,
      target: '-',
      baseline: `node:tls relay pair: ${f1(perGb('relay'))} s (${pct(perGb('proxy') / perGb('relay'))})`,
    },
  ];
}

async function requests(s: Setup, quick: boolean, seconds: number): Promise<Row[]> {
  const rounds = quick ? 2 : 3;
  const conns = 16;
  const port: Record<string, number> = { tcp: s.proxyHttpTcp, http: s.proxyHttp, relay: s.relayHttp };
  const done = new Map<string, number>([['tcp', 0], ['http', 0], ['relay', 0]]);
  const { res, cpu } = await alternate(
    rounds,
    ['tcp', 'http', 'relay'],
    async (p) => {
      const r = await runLoad({ kind: 'rps', port: port[p], conns, seconds, max: 2_000_000 }, (seconds + 30) * 1000);
      done.set(p, done.get(p)! + (r.requests as number));
      return r.rps as number;
    },
    (p) => (p === 'relay' ? s.relayPids : s.proxyPids),
  );
  // CPU per 1,000 requests (the warm-up's requests are not counted: a slight overestimate, alike for every path).
  const cpuPer1000 = (p: string): string => `${((cpu.get(p)! * 1e6) / done.get(p)!).toFixed(0)} ms`;
  const relay = median(res.get('relay')!);
  const row = (key: string, what: string, target: number | undefined): Row => {
    const v = median(res.get(key)!);
    return {
      figure: `HTTP keep-alive requests through the pair, ${what} (${conns} connections, median of ${rounds} x ${seconds} s)`,
      measured: `${rps(v)} (rounds ${span(res.get(key)!, rps)})`,
      target: target === undefined ? '-' : `>= ${pct(target)} of the plain relay`,
      baseline: `node:tls relay pair: ${rps(relay)} (rounds ${span(res.get('relay')!, rps)}); ${pct(v / relay)}`,
      ...(target === undefined ? {} : { pass: v / relay >= target }),
    };
  };
  return [
    row('tcp', 'TCP listeners', 0.8),
    row('http', 'inbound http: true (per-request policy, XFCC, access log line)', undefined),
    {
      figure: 'CPU of the pair (both processes) per 1,000 requests: TCP listeners / http: true',
      measured: `${cpuPer1000('tcp')} / ${cpuPer1000('http')}`,
      target: '-',
      baseline: `node:tls relay pair: ${cpuPer1000('relay')}`,
    },
  ];
}

async function latency(s: Setup, quick: boolean): Promise<Row[]> {
  const rounds = quick ? 2 : 4;
  const count = quick ? 1000 : 3000;
  const rate = 1000;
  const port: Record<string, number> = { direct: s.directHttp, tcp: s.proxyHttpTcp, http: s.proxyHttp, relay: s.relayHttp };
  let errors = 0;
  const conns = new Map<string, number[]>();
  const { res } = await alternate(rounds, ['direct', 'tcp', 'relay', 'http'], async (p) => {
    const r = await runLoad({ kind: 'paced', port: port[p], rate, count, pool: 16, maxSeconds: count / rate + 10 }, (count / rate + 30) * 1000);
    errors += r.errors as number;
    conns.set(p, [...(conns.get(p) ?? []), r.connections as number]);
    return r.latencies as number[];
  });
  if (process.env.SPINDLE_BENCH_DEBUG !== undefined) {
    for (const [p, l] of res) console.log(p, 'connections', conns.get(p), 'slowest', l.map((x) => [...x].map((v, i) => [i, Math.round(v)]).sort((a, b) => b[1]! - a[1]!).slice(0, 8)));
  }
  const all = (p: string): number[] => res.get(p)!.flat();
  const q = (p: string): { p50: number; p99: number; n: number } => ({ p50: percentile(all(p), 50), p99: percentile(all(p), 99), n: all(p).length });
  const d = q('direct');
  const added = (p: string): { p50: number; p99: number } => ({ p50: q(p).p50 - d.p50, p99: q(p).p99 - d.p99 });
  const relay = added('relay');
  const row = (key: string, what: string, withTarget: boolean): Row => {
    const a = added(key);
    return {
      figure: `added latency at ${rate.toLocaleString('en-US')} req/s (open loop), ${what}: p50 / p99 (${rounds} x ${count} requests per path)`,
      measured: `${msd(a.p50)} / ${msd(a.p99)}`,
      target: withTarget ? 'added p99 <= 1 ms' : '-',
      baseline: `node:tls relay pair: ${msd(relay.p50)} / ${msd(relay.p99)} (direct: ${msd(d.p50)} / ${msd(d.p99)})`,
      ...(withTarget ? { pass: a.p99 <= 1 } : {}),
    };
  };
  const rows = [row('tcp', 'TCP listeners', true), row('http', 'inbound http: true', false)];
  if (errors > 0) rows.push({ figure: 'proxy-latency: failed requests', measured: String(errors), target: '0', baseline: '-', pass: false });
  return rows;
}

/** The proxy scenarios selected with --only (none selected: nothing is set up). */
export async function runProxyScenarios(values: ProxyBenchValues, seconds: number): Promise<Row[]> {
  const wanted = PROXY_SCENARIOS.filter((n) => isSelected(values, n));
  if (wanted.length === 0) return [];
  const quick = values.quick === true;
  const rows: Row[] = [];
  let s: Setup;
  try {
    s = await setUp(values['proxy-cpu-prof']);
  } catch (err) {
    const r: Row[] = [{ figure: 'proxy: set-up failed', measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
    printTable(r);
    return r;
  }
  const scenarios: Record<(typeof PROXY_SCENARIOS)[number], [string, () => Promise<Row[]>]> = {
    'proxy-throughput': ['spindle-proxy throughput (bulk TCP through an outbound + inbound pair of real processes):', () => throughput(s, quick)],
    'proxy-requests': ['spindle-proxy HTTP requests/s (keep-alive, closed loop):', () => requests(s, quick, seconds)],
    'proxy-latency': ['spindle-proxy added latency (paced open loop):', () => latency(s, quick)],
  };
  try {
    for (const name of wanted) {
      const [title, run] = scenarios[name];
      console.log(`\n${title}`);
      let r: Row[];
      try {
        r = await run();
      } catch (err) {
        r = [{ figure: `${name}: scenario failed`, measured: `error: ${(err as Error).message.split('\n')[0]}`, target: '-', baseline: '-', pass: false }];
      }
      printTable(r);
      rows.push(...r);
    }
  } finally {
    await tearDown(s);
  }
  return rows;
}

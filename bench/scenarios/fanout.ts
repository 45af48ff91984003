/**
 * The agent-side scenarios share one setup: a real spindle-server process, a real spindle-agent
 * process joined to it, one entry `unix:uid:<our uid>` (so every client connection of ours is a
 * workload with that identity), and `workloads` connections from a few client processes
 * (bench/clients), each a distinct peer the agent attests on its own. On that setup:
 *
 * - Fan-out (this file): every connection opens FetchX509SVID at the same moment; per stream,
 *   the time from opening it to its first complete response message. Baseline: the same client
 *   code against a bare grpc-js server on a Unix socket answering with a cached 1.5 KB message
 *   (bench/baselines/grpc.ts). The agent holds the SVID already (one workload fetched it
 *   before), as on a host where workloads come and go; signing is the issuance benchmark's.
 * - Rotation push (rotation.ts): with every stream open, the entry is updated over the admin API
 *   (a new X.509-SVID TTL), which the server pushes to the agent, which makes a key, gets it
 *   signed and pushes the new SVID on every stream.
 * - Agent memory (memory.ts): the agent's RSS before the connections and with every stream open.
 *
 * `benchAgentSide` runs the selected ones over one setup (starting processes once).
 * rotation.ts and memory.ts only turn samples into table rows and import nothing from here, so
 * the scenario modules form no import cycle.
 */
import { credentials, Metadata, type ClientReadableStream } from '@grpc/grpc-js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeWorkloadAPIClient, X509SVIDResponse } from '../../proto/gen/workload/workload.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { BARE_MESSAGE_BYTES, startBareGrpcServer, type BareGrpcServer } from '../baselines/grpc.js';
import { startNetFanoutServer, type NetFanoutServer } from '../baselines/netfanout.js';
import { ClientPool } from '../clients/pool.js';
import { BenchAdmin, toProtoEntry, type BenchEntry } from '../server/admin.js';
import { rssBytes, startBenchAgent, startBenchServer, type BenchAgent, type BenchServer } from '../server/proc.js';
import { ms, percentile } from '../stats.js';
import { printTable, type Row } from '../table.js';
import { memoryRows, type MemorySample } from './memory.js';
import { rotationRows, type RotationSamples } from './rotation.js';

export interface AgentSideOptions {
  /** Workload connections (and streams). */
  workloads: number;
  /** Client processes the connections are spread over. */
  clientProcs: number;
  /** Rotations pushed (each to every stream). */
  rotations: number;
  /** When set: the agent runs with --cpu-prof into this directory. */
  agentCpuProf?: string;
  /** Extra node flags for the agent process (diagnostics, e.g. --trace-gc). */
  agentNodeArgs?: string[];
}

export const AGENT_SIDE_DEFAULTS: AgentSideOptions = { workloads: 1000, clientProcs: 4, rotations: 3 };
export const AGENT_SIDE_QUICK: AgentSideOptions = { workloads: 100, clientProcs: 2, rotations: 2 };
export const AGENT_SCENARIOS = ['fanout', 'rotation', 'memory'] as const;
export type AgentScenario = (typeof AGENT_SCENARIOS)[number];

const FETCH_X509 = '/SpiffeWorkloadAPI/FetchX509SVID';
const STEP_TIMEOUT_MS = 60_000;
/** Time given to a process after a burst before its RSS is read (lazy frees, GC). */
const SETTLE_MS = 1000;

const sleep = (msec: number): Promise<void> => new Promise((r) => setTimeout(r, msec));
const now = (): number => performance.timeOrigin + performance.now();

function check(what: string, r: { errors: string[]; missing?: number }, got: number, want: number): void {
  if (got < want || (r.missing ?? 0) > 0) {
    throw new Error(`${what}: ${got} of ${want} streams answered${r.errors.length > 0 ? ` (${r.errors.slice(0, 3).join('; ')})` : ''}`);
  }
}

export interface FanoutSamples {
  /** ms, per stream. */
  agent: number[];
  bare: number[];
  /** Size of the agent's first X509SVIDResponse (bytes). */
  agentMessageBytes: number;
  /** ms to connect every client session to the agent (before the streams open). */
  agentConnectMs: number;
}

export function fanoutRows(s: FanoutSamples, n: number): Row[] {
  const a99 = percentile(s.agent, 99);
  const b99 = percentile(s.bare, 99);
  return [
    { figure: `first response p50 (${n} streams opened at once)`, measured: ms(percentile(s.agent, 50)), target: '-', baseline: `bare grpc-js: ${ms(percentile(s.bare, 50))}` },
    { figure: `first response p99 (${n} streams opened at once)`, measured: ms(a99), target: `<= 2x bare (${ms(2 * b99)})`, baseline: `bare grpc-js: ${ms(b99)}`, pass: a99 <= 2 * b99 },
    {
      figure: `connect ${n} sessions; response size`,
      measured: `${ms(s.agentConnectMs)}; ${s.agentMessageBytes.toLocaleString('en-US')} B`,
      target: '-',
      baseline: `bare message: ${BARE_MESSAGE_BYTES.toLocaleString('en-US')} B`,
    },
  ];
}

/** The bare grpc-js baseline: first-response latencies and RSS growth with `n` streams. */
async function measureBare(dir: string, opts: AgentSideOptions): Promise<{ latencies: number[]; memory: MemorySample }> {
  let bare: BareGrpcServer | undefined;
  let pool: ClientPool | undefined;
  try {
    bare = await startBareGrpcServer(join(dir, 'bare.sock'));
    await sleep(SETTLE_MS);
    const before = rssBytes(bare.pid);
    pool = await ClientPool.start(opts.workloads, opts.clientProcs);
    await pool.connect(bare.socketPath, 'grpc', STEP_TIMEOUT_MS);
    const opened = await pool.open(FETCH_X509, STEP_TIMEOUT_MS);
    check('bare grpc-js server', opened, opened.latencies.length, opts.workloads);
    await sleep(SETTLE_MS);
    const after = rssBytes(bare.pid);
    return { latencies: opened.latencies, memory: { before, after, streams: opts.workloads } };
  } finally {
    await pool?.close();
    await bare?.stop();
  }
}

/** The raw Unix-socket fan-out floor: ms from the first write to each client's full buffer, every round. */
async function measureNetFloor(dir: string, opts: AgentSideOptions): Promise<number[]> {
  let srv: NetFanoutServer | undefined;
  let pool: ClientPool | undefined;
  try {
    const socketPath = join(dir, 'net.sock');
    srv = await startNetFanoutServer(socketPath);
    pool = await ClientPool.start(opts.workloads, opts.clientProcs);
    await pool.connect(socketPath, 'raw', STEP_TIMEOUT_MS, BARE_MESSAGE_BYTES);
    const out: number[] = [];
    for (let r = 1; r <= opts.rotations; r++) {
      const wait = pool.awaitMessage(r, STEP_TIMEOUT_MS);
      const { t0 } = await srv.push(BARE_MESSAGE_BYTES, opts.workloads);
      const got = await wait;
      check('net fan-out floor', got, got.times.length, opts.workloads);
      out.push(...got.times.map((t) => t - t0));
      await sleep(200);
    }
    return out;
  } finally {
    await pool?.close();
    await srv?.stop();
  }
}

/** One FetchX509SVID response from the agent (the SVID gets signed); resolves with its size. */
async function warmUp(socketPath: string): Promise<number> {
  const client = new SpiffeWorkloadAPIClient(`unix:${socketPath}`, credentials.createInsecure());
  let stream: ClientReadableStream<X509SVIDResponse> | undefined;
  try {
    const md = new Metadata();
    md.set('workload.spiffe.io', 'true');
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no FetchX509SVID response from the agent in ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
      stream = client.fetchX509Svid({}, md) as ClientReadableStream<X509SVIDResponse>;
      stream.on('data', (r: X509SVIDResponse) => {
        clearTimeout(timer);
        resolve(X509SVIDResponse.encode(r).finish().length);
      });
      stream.on('error', (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`warm-up FetchX509SVID failed: ${err.message}`));
      });
    });
  } finally {
    stream?.cancel();
    client.close();
  }
}

/** Runs the selected agent-side scenarios over one setup; rows per scenario. */
export async function benchAgentSide(opts: AgentSideOptions, which: readonly AgentScenario[]): Promise<Partial<Record<AgentScenario, Row[]>>> {
  const want = new Set(which);
  const dir = mkdtempSync(join(tmpdir(), 'spindle-bench-agent-'));
  let server: BenchServer | undefined;
  let agent: BenchAgent | undefined;
  let admin: BenchAdmin | undefined;
  let pool: ClientPool | undefined;
  try {
    // Baselines first, while nothing else runs.
    const bare = want.has('fanout') || want.has('memory') ? await measureBare(dir, opts) : undefined;
    const floor = want.has('rotation') ? await measureNetFloor(dir, opts) : undefined;

    server = await startBenchServer({ dir: join(dir, 'server') });
    admin = new BenchAdmin(server.socketPath);
    const a = admin;
    const td = server.trustDomain;
    const token = await a.joinToken();
    const entry: BenchEntry = {
      spiffeId: `spiffe://${td}/bench/workload`,
      parentId: `spiffe://${td}/spire/agent/join_token/${token}`,
      selectors: [{ type: 'unix', value: `uid:${process.getuid?.() ?? 0}` }],
      x509SvidTtl: 3600,
    };
    const [entryId] = await a.createEntries([entry]);
    const agentDir = join(dir, 'agent');
    mkdirSync(agentDir);
    const perPid = Math.ceil(opts.workloads / Math.max(1, Math.min(opts.clientProcs, opts.workloads))) + 10;
    // --cpu-prof is refused in NODE_OPTIONS and bin/spindle-agent starts through `env node`:
    // profiling puts a `node` shim adding the flag first on PATH while the agent starts.
    const savedPath = process.env.PATH;
    const nodeArgs = [...(opts.agentCpuProf ? ['--cpu-prof', `--cpu-prof-dir=${opts.agentCpuProf}`] : []), ...(opts.agentNodeArgs ?? [])];
    if (nodeArgs.length > 0) {
      const shimDir = join(dir, 'node-shim');
      mkdirSync(shimDir);
      writeFileSync(join(shimDir, 'node'), `#!/bin/sh\nexec '${process.execPath}' ${nodeArgs.map((a) => `'${a}'`).join(' ')} "$@"\n`, { mode: 0o755 });
      process.env.PATH = `${shimDir}:${savedPath ?? ''}`;
    }
    try {
      agent = await startBenchAgent({
        dir: agentDir,
        server,
        joinToken: token,
        bundlePem: certificatesToPem(await a.x509Authorities(td)),
        // Every client process is root: lift the per-process and per-uid connection limits too.
        config: `agent:\n  workload_api_max_streams_per_pid: ${perPid}\n  workload_api_max_conns_per_pid: ${perPid}\n  workload_api_max_conns_per_uid: 0\n`,
      });
    } finally {
      process.env.PATH = savedPath;
    }
    const agentMessageBytes = await warmUp(agent.socketPath);
    await sleep(SETTLE_MS);
    const rssBefore = rssBytes(agent.pid);

    pool = await ClientPool.start(opts.workloads, opts.clientProcs);
    const connected = await pool.connect(agent.socketPath, 'grpc', STEP_TIMEOUT_MS);
    const opened = await pool.open(FETCH_X509, STEP_TIMEOUT_MS);
    check('agent', opened, opened.latencies.length, opts.workloads);
    await sleep(SETTLE_MS);
    const rssAfter = rssBytes(agent.pid);

    let rotation: RotationSamples | undefined;
    if (want.has('rotation')) {
      rotation = { agent: [], floor: floor!, rounds: opts.rotations };
      for (let r = 1; r <= opts.rotations; r++) {
        // A new TTL: the entry's revision changes, the agent must re-sign and push the new SVID.
        const update = toProtoEntry({ ...entry, x509SvidTtl: 3600 + r * 60 });
        const wait = pool.awaitMessage(r + 1, STEP_TIMEOUT_MS);
        const t0 = now();
        await new Promise<void>((resolve, reject) =>
          a.entry.batchUpdateEntry({ entries: [{ ...update, id: entryId! }] }, new Metadata(), { deadline: Date.now() + STEP_TIMEOUT_MS }, (err, res) => {
            if (err) return reject(err);
            const st = res.results[0]?.status;
            if (st && st.code !== 0) return reject(new Error(`entry update failed: ${st.code} ${st.message}`));
            resolve();
          }),
        );
        const got = await wait;
        check(`rotation ${r}`, got, got.times.length, opts.workloads);
        rotation.agent.push(...got.times.map((t) => t - t0));
        await sleep(300);
      }
    }

    const out: Partial<Record<AgentScenario, Row[]>> = {};
    if (want.has('fanout')) out.fanout = fanoutRows({ agent: opened.latencies, bare: bare!.latencies, agentMessageBytes, agentConnectMs: connected.ms }, opts.workloads);
    if (rotation) out.rotation = rotationRows(rotation, opts.workloads);
    if (want.has('memory')) out.memory = memoryRows({ before: rssBefore, after: rssAfter, streams: opts.workloads }, bare!.memory);
    return out;
  } finally {
    await pool?.close();
    admin?.close();
    await agent?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// bench/run.ts wiring

/** parseArgs options the agent-side scenarios read (besides --only and --quick). */
export const AGENT_BENCH_OPTIONS = {
  workloads: { type: 'string' },
  'client-procs': { type: 'string' },
  rotations: { type: 'string' },
  'agent-cpu-prof': { type: 'string' },
} as const;

export interface AgentBenchValues {
  only?: string;
  quick?: boolean;
  workloads?: string;
  'client-procs'?: string;
  rotations?: string;
  'agent-cpu-prof'?: string;
}

const TITLES: Record<AgentScenario, string> = {
  fanout: 'Fan-out (Workload API streams opened at once on one agent process):',
  rotation: 'Rotation push (entry update -> new SVID on every open stream):',
  memory: 'Agent memory (RSS with every workload stream open):',
};

function positiveInt(v: string | undefined, fallback: number, flag: string): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${flag} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * Runs the agent-side scenarios selected by --only (all without it) over one setup and prints
 * one table each; a failure prints an error row per scenario instead of aborting the run.
 */
export async function runAgentScenarios(values: AgentBenchValues): Promise<Row[]> {
  const only = values.only === undefined || values.only === '' ? undefined : new Set(values.only.split(',').map((s) => s.trim()));
  const selected = AGENT_SCENARIOS.filter((s) => only === undefined || only.has(s));
  if (selected.length === 0) return [];
  const base = values.quick === true ? AGENT_SIDE_QUICK : AGENT_SIDE_DEFAULTS;
  let results: Partial<Record<AgentScenario, Row[]>>;
  try {
    const opts: AgentSideOptions = {
      workloads: positiveInt(values.workloads, base.workloads, 'workloads'),
      clientProcs: positiveInt(values['client-procs'], base.clientProcs, 'client-procs'),
      rotations: positiveInt(values.rotations, base.rotations, 'rotations'),
      ...(values['agent-cpu-prof'] ? { agentCpuProf: values['agent-cpu-prof'] } : {}),
    };
    results = await benchAgentSide(opts, selected);
  } catch (err) {
    const message = `error: ${(err as Error).message.split('\n')[0]}`;
    results = Object.fromEntries(selected.map((s) => [s, [{ figure: `${s}: scenario failed`, measured: message, target: '-', baseline: '-', pass: false }]]));
  }
  const all: Row[] = [];
  for (const s of selected) {
    console.log(`\n${TITLES[s]}`);
    const rows = results[s] ?? [];
    printTable(rows);
    all.push(...rows);
  }
  return all;
}

/**
 * The fuzz harness over every API's request messages (Workload API, SDS, agent API, admin API).
 *
 *   const report = await runFuzz({ cases: 5000, seed: 42, targets: { workload, agent, admin } });
 *   assert.deepEqual(report.failures, []);
 *
 * Each case draws (from a PRNG seeded by `seed` and the case number, so one case replays alone
 * with `only: [n]`) a method of an enabled API, a hostile request (generators.ts), a mutation of
 * its encoding, and a framing (normal, split across DATA frames, lying length prefix, compressed
 * flag without an encoding, two messages to a unary method, no message, missing or wrong
 * Workload API security header). It sends the bytes raw over HTTP/2 and records the status.
 *
 * A case FAILS when:
 * - no gRPC status arrives (timeout, stream reset, session lost): the server hung or dropped the
 *   connection over one bad request;
 * - the status is UNKNOWN (a handler threw something nobody mapped) or INTERNAL "internal error"
 *   (our own error helpers' answer to an unexpected exception: a bug this input reached);
 *   grpc-js's own INTERNAL answers to undecodable input ("Error deserializing request",
 *   "Received no request message ...") are the expected outcome of malformed bytes;
 * - the `probe` (a well-behaved client, given by the caller) fails after a batch: the process
 *   died or stopped answering.
 * Successful server streams (e.g. FetchX509SVID for an entitled caller) count as answered at the
 * first response message and are cancelled.
 */
import type { ClientHttp2Session } from 'node:http2';
import { METHODS, MUTATIONS, Rng, mutate, type ApiName, type FuzzMethod, type MutationName } from './generators.js';
import { codeName, connectRaw, frame, rawCall, type RawResult, type RawTarget } from './wire.js';

export { METHODS, Rng, type ApiName } from './generators.js';

export interface FuzzTargets {
  /** The agent's public socket: Workload API and SDS. */
  workload?: { socketPath: string };
  /** The server's agent API (TLS). With certPem/keyPem (an agent SVID) the authenticated paths are reached too. */
  agent?: { host: string; port: number; caPem: string; certPem?: string; keyPem?: string };
  /** The server's admin socket. */
  admin?: { socketPath: string };
}

export interface FuzzOptions {
  cases: number;
  seed: number;
  targets: FuzzTargets;
  /** Limit to these APIs (default: every API with a target). */
  apis?: readonly ApiName[];
  /** Calls in flight at once (default 16). */
  concurrency?: number;
  /** Per-call limit (default 10 s). */
  timeoutMs?: number;
  /** Run between batches of `probeEvery` cases (default 100): must resolve while the processes are healthy. */
  probe?: () => Promise<void>;
  probeEvery?: number;
  /** Replay only these case numbers. */
  only?: readonly number[];
}

export type Framing = 'normal' | 'split' | 'lying_prefix' | 'compressed_flag' | 'two_messages' | 'no_message' | 'no_header' | 'bad_header';

export interface FuzzFailure {
  case: number;
  seed: number;
  path: string;
  mutation: MutationName;
  framing: Framing;
  reason: string;
  /** The first 256 bytes of the request message, hex. */
  requestHex: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  /** Count per `api:CODE`. */
  outcomes: Record<string, number>;
  failures: FuzzFailure[];
  probes: number;
  ms: number;
}

const FRAMINGS: readonly Framing[] = ['normal', 'normal', 'normal', 'split', 'lying_prefix', 'compressed_flag', 'two_messages', 'no_message', 'no_header', 'bad_header'];

/** The seed of case `n` of a run seeded `seed`. */
export function caseSeed(seed: number, n: number): number {
  return (seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0;
}

interface PlannedCase {
  n: number;
  method: FuzzMethod;
  mutation: MutationName;
  framing: Framing;
  message: Buffer;
}

export function planCase(seed: number, n: number, methods: readonly FuzzMethod[]): PlannedCase {
  const r = new Rng(caseSeed(seed, n));
  const method = r.pick(methods);
  const mutation = r.bool(0.4) ? 'none' : r.pick(MUTATIONS);
  const framing = r.pick(FRAMINGS);
  const message = mutate(r, method.generate(r), mutation);
  return { n, method, mutation, framing, message };
}

function bodyOf(c: PlannedCase, r: Rng): Buffer[] {
  const f = frame(c.message);
  switch (c.framing) {
    case 'split': {
      const parts: Buffer[] = [];
      let off = 0;
      while (off < f.length) {
        const n = 1 + r.int(Math.max(1, Math.min(64, f.length - off)));
        parts.push(f.subarray(off, off + n));
        off += n;
      }
      return parts;
    }
    case 'lying_prefix':
      return [frame(c.message, { declaredLength: c.message.length + 1 + r.int(1000) })];
    case 'compressed_flag':
      return [frame(c.message, { compressed: true })];
    case 'two_messages':
      return [f, f];
    case 'no_message':
      return [];
    default:
      return [f];
  }
}

/** INTERNAL answers that grpc-js itself gives to undecodable input (not a bug in our handlers). */
const GRPC_JS_INPUT_ERRORS = /^(Error deserializing request|Received no request message|Received a second request message|Failed to decompress message|Stream closed before sending status)/;

function judge(res: RawResult): string | undefined {
  if (res.code === undefined) {
    // A success stream answered with a message and was cancelled by us: fine.
    if (res.failure === undefined && res.messages.length > 0) return undefined;
    return `no gRPC status (${res.failure ?? 'unknown'}) after ${res.ms.toFixed(0)} ms`;
  }
  if (res.code === 2) return `UNKNOWN status: ${res.details}`;
  if (res.code === 13 && !GRPC_JS_INPUT_ERRORS.test(res.details)) return `INTERNAL status from a handler: ${res.details}`;
  return undefined;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  const { targets } = opts;
  const rawTargets: Partial<Record<ApiName, RawTarget>> = {};
  if (targets.workload) rawTargets.workload = rawTargets.sds = { kind: 'unix', socketPath: targets.workload.socketPath };
  if (targets.admin) rawTargets.admin = { kind: 'unix', socketPath: targets.admin.socketPath };
  if (targets.agent) rawTargets.agent = { kind: 'tls', ...targets.agent };
  const apis = (opts.apis ?? (Object.keys(rawTargets) as ApiName[])).filter((a) => rawTargets[a] !== undefined);
  if (apis.length === 0) throw new Error('runFuzz: no target for any requested API');
  const methods = METHODS.filter((m) => apis.includes(m.api));

  // One session per API, replaced when it goes away (which a bad request must not cause, but a
  // replaced session keeps the run going so every such case is reported).
  const sessions = new Map<ApiName, ClientHttp2Session>();
  const sessionFor = (api: ApiName): ClientHttp2Session => {
    let s = sessions.get(api);
    if (s === undefined || s.closed || s.destroyed) {
      s = connectRaw(rawTargets[api]!);
      sessions.set(api, s);
    }
    return s;
  };

  const report: FuzzReport = { seed: opts.seed, cases: 0, outcomes: {}, failures: [], probes: 0, ms: 0 };
  const numbers = opts.only ?? Array.from({ length: opts.cases }, (_, i) => i);
  const concurrency = opts.concurrency ?? 16;
  const probeEvery = opts.probeEvery ?? 100;

  const runOne = async (n: number): Promise<void> => {
    const c = planCase(opts.seed, n, methods);
    const r = new Rng(caseSeed(opts.seed, n) ^ 0x5bd1e995);
    const headers: Record<string, string> = {};
    if (c.method.api === 'workload') {
      if (c.framing === 'bad_header') headers['workload.spiffe.io'] = r.pick(['false', 'TRUE', ' true', 'true, true', '']);
      else if (c.framing !== 'no_header') headers['workload.spiffe.io'] = 'true';
    }
    const res = await rawCall(sessionFor(c.method.api), {
      path: c.method.path,
      body: bodyOf(c, r),
      headers,
      timeoutMs: opts.timeoutMs ?? 10_000,
      stopAfterMessages: 1,
    });
    report.cases++;
    const key = `${c.method.api}:${res.code === undefined ? (res.messages.length > 0 ? 'MESSAGE' : 'NO_STATUS') : codeName(res.code)}`;
    report.outcomes[key] = (report.outcomes[key] ?? 0) + 1;
    const reason = judge(res);
    if (reason !== undefined) {
      report.failures.push({ case: n, seed: opts.seed, path: c.method.path, mutation: c.mutation, framing: c.framing, reason, requestHex: c.message.subarray(0, 256).toString('hex') });
    }
  };

  try {
    for (let start = 0; start < numbers.length; start += probeEvery) {
      const batch = numbers.slice(start, start + probeEvery);
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(concurrency, batch.length) }, async () => {
          while (next < batch.length) await runOne(batch[next++]!);
        }),
      );
      if (opts.probe) {
        try {
          await opts.probe();
          report.probes++;
        } catch (err) {
          report.failures.push({ case: batch[batch.length - 1]!, seed: opts.seed, path: '(probe)', mutation: 'none', framing: 'normal', reason: `probe failed after case ${batch[batch.length - 1]}: ${(err as Error).message}`, requestHex: '' });
          break;
        }
      }
    }
  } finally {
    for (const s of sessions.values()) s.destroy();
  }
  report.ms = performance.now() - t0;
  return report;
}

/** One line per failure, for assertion messages (with the seed to replay). */
export function describeFailures(report: FuzzReport, max = 20): string {
  return report.failures
    .slice(0, max)
    .map((f) => `seed ${f.seed} case ${f.case} ${f.path} mutation=${f.mutation} framing=${f.framing}: ${f.reason} [${f.requestHex.slice(0, 80)}]`)
    .join('\n');
}

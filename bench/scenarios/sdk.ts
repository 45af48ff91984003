/**
 * The Node SDK's mTLS cost (`--only sdk-handshake,sdk-keepalive`), against plain node mutual TLS
 * with the same certificates (EC P-256 X509-SVIDs from test/support/testca.ts), measured in the
 * same run. One server process (bench/clients/sdkpeer.ts) holds four servers side by side; the
 * load comes from separate client processes, each bounded in time (and count). Every process
 * takes its SVID and bundle from an X509Source on the Workload API test kit's agent
 * (spiffe/workloadapi/testkit.ts) run here, as a workload would. Rounds alternate
 * plain and SDK (and which of them goes first), so drift of this shared machine hits both.
 *
 * - sdk-handshake: full TLS 1.3 handshakes per second (connect, the server's one byte written
 *   after its checks, close; no session resumption) to `createMtlsServer` (the client verified
 *   the SPIFFE way and authorized by `authorizeID`) vs `tls.createServer` with `requestCert`,
 *   `rejectUnauthorized` and `ca` = the bundle. The clients are the same plain node:tls client
 *   for both, so the figure is the server's. Target: >= 85% of plain.
 * - sdk-keepalive: HTTPS requests per second over N keep-alive connections, the SDK on both
 *   sides (`createMtlsHttpsServer`, requests with `mtlsClientOptions` and a keep-alive
 *   `SpiffeHttpsAgent`) vs node:https mutual TLS on both sides. Target: >= 95% of plain.
 *
 * The figure is the median over the rounds of (SDK rate / plain rate of the same round), with
 * the range of those ratios and the median rates of each side.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createTestTrust, FakeAgent } from '../../spiffe/workloadapi/testkit.js';
import type { PeerMsg, PeerReply } from '../clients/sdkpeer.js';
import { percentile } from '../stats.js';
import { perSecond, type Row } from '../table.js';

const peerScript = fileURLToPath(new URL('../clients/sdkpeer.js', import.meta.url));
const TD = 'example.org';
const SERVER_ID = `spiffe://${TD}/bench/server`;
const CLIENT_ID = `spiffe://${TD}/bench/client`;

export interface SdkBenchOptions {
  handshake: boolean;
  keepalive: boolean;
  rounds: number;
  /** Seconds per side and round. */
  seconds: number;
  clientProcs: number;
  /** Handshake loops per client process. */
  handshakeConcurrency: number;
  /** Keep-alive connections in all. */
  connections: number;
  /** V8 CPU profiles of the server and client processes into this directory (the server's is the largest file). */
  cpuProfDir?: string;
}

export const SDK_DEFAULTS = { rounds: 10, seconds: 2, clientProcs: 2, handshakeConcurrency: 8, connections: 16 };
export const SDK_QUICK = { rounds: 2, seconds: 1, clientProcs: 2, handshakeConcurrency: 4, connections: 8 };

class Peer {
  readonly #child: ChildProcess;
  constructor(role: string, execArgv: string[] = []) {
    this.#child = fork(peerScript, [role], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  }

  ask<T extends PeerReply['op']>(msg: PeerMsg, expect: T, timeoutMs: number): Promise<Extract<PeerReply, { op: T }>> {
    const c = this.#child;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`sdk bench peer ${c.pid} did not answer ${expect} in ${timeoutMs} ms`)), timeoutMs);
      const onMsg = (m: PeerReply): void => {
        if (m.op === 'fatal') done(new Error(`sdk bench peer ${c.pid}: ${m.error}`));
        else if (m.op === expect) done(undefined, m as Extract<PeerReply, { op: T }>);
      };
      const onExit = (code: number | null): void => done(new Error(`sdk bench peer ${c.pid} exited with ${code}`));
      function done(err?: Error, r?: Extract<PeerReply, { op: T }>): void {
        clearTimeout(timer);
        c.off('message', onMsg);
        c.off('exit', onExit);
        if (err) reject(err);
        else resolve(r!);
      }
      c.on('message', onMsg);
      c.once('exit', onExit);
      c.send(msg);
    });
  }

  /** Ends the process (SIGTERM lets --cpu-prof write its profile) and waits for it. */
  async stop(): Promise<void> {
    const c = this.#child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.disconnect();
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

interface Side {
  rates: number[];
  errors: string[];
}

function median(xs: number[]): number {
  return percentile(xs, 50);
}

function row(name: string, what: string, targetPct: number, plain: Side, lib: Side, rounds: number): Row {
  const p = median(plain.rates);
  const l = median(lib.rates);
  // Each round's SDK rate over the plain rate measured next to it; the median of those ratios
  // is the figure (drift of a shared machine between rounds cancels out).
  const ratios = lib.rates.map((r, i) => r / plain.rates[i]!);
  const ratio = median(ratios);
  const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;
  const errors = [...lib.errors, ...plain.errors];
  return {
    figure: `${name}: ${what}, SDK / plain, median of ${rounds} rounds`,
    measured: `${pct(ratio)} (rounds ${pct(Math.min(...ratios))}-${pct(Math.max(...ratios))}; SDK ${perSecond(l)})${errors.length > 0 ? `, ${errors.length} errors: ${errors[0]}` : ''}`,
    target: `>= ${targetPct}% of plain`,
    baseline: `plain node mutual TLS: ${perSecond(p)}`,
    pass: errors.length === 0 && ratio >= targetPct / 100,
  };
}

export async function benchSdk(o: SdkBenchOptions): Promise<Row[]> {
  const trust = await createTestTrust();
  const [serverSvid, clientSvid] = await Promise.all([trust.ca.issueSvid(SERVER_ID, { ttlSeconds: 24 * 3600 }), trust.ca.issueSvid(CLIENT_ID, { ttlSeconds: 24 * 3600 })]);
  const asIdentity = (s: typeof serverSvid): { id: typeof s.id; chain: Buffer[]; keyPkcs8: Buffer } => ({ id: s.id, chain: s.chain, keyPkcs8: s.keyPkcs8 });
  const agent = await FakeAgent.start({ identities: [asIdentity(serverSvid), asIdentity(clientSvid)], ...trust.material });
  const prof = o.cpuProfDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
  const server = new Peer('--sdk-server', prof);
  const clients = Array.from({ length: o.clientProcs }, () => new Peer('--sdk-client', prof));
  try {
    const { ports } = await server.ask({ op: 'serve', agentAddress: agent.address, ownId: SERVER_ID, peerId: CLIENT_ID }, 'serving', 30_000);
    const measure = async (kind: 'handshake' | 'keepalive', lib: boolean, concurrency: number): Promise<{ rate: number; errors: string[] }> => {
      const port = kind === 'handshake' ? (lib ? ports.libTls : ports.plainTls) : lib ? ports.libHttps : ports.plainHttps;
      const rs = await Promise.all(
        clients.map((c) =>
          c.ask(
            { op: 'run', kind, lib, port, seconds: o.seconds, concurrency, agentAddress: agent.address, ownId: CLIENT_ID, peerId: SERVER_ID },
            'done',
            o.seconds * 1000 + 30_000,
          ),
        ),
      );
      return { rate: rs.reduce((a, r) => a + r.completed / r.seconds, 0), errors: rs.flatMap((r) => r.errors) };
    };
    const rows: Row[] = [];
    const scenario = async (kind: 'handshake' | 'keepalive', concurrency: number): Promise<{ plain: Side; lib: Side }> => {
      const plain: Side = { rates: [], errors: [] };
      const lib: Side = { rates: [], errors: [] };
      await measure(kind, false, concurrency); // warm-up of both paths, not counted
      await measure(kind, true, concurrency);
      for (let r = 0; r < o.rounds; r++) {
        for (const useLib of r % 2 === 0 ? [false, true] : [true, false]) {
          const m = await measure(kind, useLib, concurrency);
          const side = useLib ? lib : plain;
          side.rates.push(m.rate);
          side.errors.push(...m.errors);
        }
      }
      return { plain, lib };
    };
    if (o.handshake) {
      const { plain, lib } = await scenario('handshake', o.handshakeConcurrency);
      rows.push(row('sdk-handshake', `full mTLS handshakes/s, createMtlsServer (${o.clientProcs} client procs x ${o.handshakeConcurrency})`, 85, plain, lib, o.rounds));
    }
    if (o.keepalive) {
      const per = Math.max(1, Math.round(o.connections / o.clientProcs));
      const { plain, lib } = await scenario('keepalive', per);
      rows.push(row('sdk-keepalive', `HTTPS requests/s, ${per * o.clientProcs} keep-alive connections, SDK server + client`, 95, plain, lib, o.rounds));
    }
    return rows;
  } finally {
    await Promise.all([server, ...clients].map((p) => p.stop()));
    await agent.close();
  }
}


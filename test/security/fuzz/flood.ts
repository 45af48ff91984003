/**
 * A hostile client as a separate process (its own pid, so the Workload API's per-process limits
 * apply to it and not to the test's well-behaved client, and so its event loop load does not
 * slow the well-behaved client down):
 *
 *   node dist/test/security/fuzz/flood.js '<FloodSpec JSON>'
 *
 * Modes:
 * - `streams`: `streams` calls spread over `connections` HTTP/2 connections, all opened at once,
 *   each sending `bodyHex` (framed) and ending its side; with `noRead`, response data is never
 *   read (the streams are paused: the server's writes back up against flow control). Streams
 *   are held for `holdMs`, then everything is closed.
 * - `slowloris`: `streams` calls (default: one per connection) spread over `connections`
 *   connections, each with a request body that is a frame prefix never completed; held for
 *   `holdMs`.
 * With `localAddresses` (TLS targets), connection i uses source address i mod their number.
 * Prints one JSON line: { outcomes: { CODE|STREAMING|OPEN|NO_STATUS: n }, sessionErrors: n,
 * bytesRead: n, ... } (bytesRead: response bytes read, over all streams; 0 with `noRead`).
 */
import { spawn } from 'node:child_process';
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { fileURLToPath } from 'node:url';
import { codeName, connectRaw, type RawTarget } from './wire.js';

export interface FloodSpec {
  mode: 'streams' | 'slowloris';
  target: RawTarget;
  path: string;
  headers?: Record<string, string>;
  /** The request message bytes (hex), framed by the flooder. */
  bodyHex?: string;
  /** End the request side after the body (default true). */
  endRequest?: boolean;
  connections: number;
  streams?: number;
  noRead?: boolean;
  holdMs: number;
  /** Loopback source addresses the connections are spread over (TLS targets only). */
  localAddresses?: string[];
  /**
   * With `noRead`: after the hold, resume reading every stream for this long and report what
   * the server still had queued for them (maxResumedBytes) and how they end.
   */
  drainMs?: number;
}

export interface FloodResult {
  outcomes: Record<string, number>;
  sessionErrors: number;
  /** Response bytes read over all streams (what a reader of every message receives). */
  bytesRead: number;
  /** Sizes of the gRPC messages read (reading streams only, at most 1000 listed). */
  messageSizes: number[];
  /** With `drainMs`: the most bytes one unread stream delivered once resumed. */
  maxResumedBytes: number;
  /** Distinct grpc-message texts seen (at most 10). */
  details: string[];
}

/** The path of the compiled flooder, for spawning. */
export const FLOOD_SCRIPT = fileURLToPath(import.meta.url);

/** Runs `flood(spec)` in a child process (its own pid and event loop) and resolves with its result. */
export function runFloodProcess(spec: FloodSpec): Promise<FloodResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FLOOD_SCRIPT, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('close', (code) => {
      if (code !== 0) return reject(new Error(`flooder exited ${code}: ${err}`));
      resolve(JSON.parse(out) as FloodResult);
    });
  });
}

export async function flood(spec: FloodSpec): Promise<FloodResult> {
  const sessions: ClientHttp2Session[] = [];
  let sessionErrors = 0;
  let bytesRead = 0;
  const messageSizes: number[] = [];
  const details = new Set<string>();
  for (let i = 0; i < spec.connections; i++) {
    const from = spec.localAddresses?.[i % spec.localAddresses.length];
    const s = connectRaw(from !== undefined && spec.target.kind === 'tls' ? { ...spec.target, localAddress: from } : spec.target);
    s.on('error', () => sessionErrors++);
    sessions.push(s);
  }
  const body = Buffer.from(spec.bodyHex ?? '', 'hex');
  const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
  framed.writeUInt32BE(body.length, 1);
  const state: Array<{ code?: number; data: boolean; closed: boolean; resumed: number }> = [];
  const streams: ClientHttp2Stream[] = [];
  const stateOf = new Map<ClientHttp2Stream, { resumed: number; data: boolean }>();
  const n = spec.streams ?? spec.connections;
  for (let i = 0; i < n; i++) {
    const st: { code?: number; data: boolean; closed: boolean; resumed: number } = { data: false, closed: false, resumed: 0 };
    state.push(st);
    let stream: ClientHttp2Stream;
    try {
      stream = sessions[i % sessions.length]!.request({ ':method': 'POST', ':path': spec.path, 'content-type': 'application/grpc', te: 'trailers', ...spec.headers });
    } catch {
      st.closed = true;
      continue;
    }
    streams.push(stream);
    stateOf.set(stream, st);
    stream.on('error', () => {});
    const onStatus = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) st.code = Number(h['grpc-status']);
      const m = h['grpc-message'];
      if (typeof m === 'string' && details.size < 10) details.add(decodeURIComponent(m));
    };
    stream.on('response', onStatus);
    stream.on('trailers', onStatus);
    stream.on('close', () => (st.closed = true));
    if (spec.noRead) {
      stream.once('response', () => stream.pause());
      stream.pause();
    } else {
      // Message sizes from the length prefixes (5-byte gRPC frame headers).
      let pending = Buffer.alloc(0);
      stream.on('data', (d: Buffer) => {
        st.data = true;
        bytesRead += d.length;
        pending = Buffer.concat([pending, d]);
        while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
          const len = pending.readUInt32BE(1);
          if (messageSizes.length < 1000) messageSizes.push(len);
          pending = pending.subarray(5 + len);
        }
      });
    }
    if (spec.mode === 'slowloris') {
      // A prefix announcing 1000 bytes, and 3 of them: the message never completes.
      stream.write(Buffer.from([0, 0, 0, 0x03, 0xe8, 1, 2, 3]));
    } else {
      stream.write(framed);
      if (spec.endRequest ?? true) stream.end();
    }
  }
  await new Promise((r) => setTimeout(r, spec.holdMs));
  let bufferedAtHold = 0;
  if (spec.noRead) bufferedAtHold = streams.filter((s) => s.readableLength > 0).length;
  if (spec.noRead && spec.drainMs) {
    streams.forEach((s) => {
      const st = stateOf.get(s)!;
      s.on('data', (d: Buffer) => {
        st.data = true;
        st.resumed += d.length;
      });
      s.resume();
    });
    await new Promise((r) => setTimeout(r, spec.drainMs));
  }
  const outcomes: Record<string, number> = {};
  for (const st of state) {
    // A paused stream's data is never read; readableLength tells whether any arrived.
    const k = st.code !== undefined ? codeName(st.code) : st.data ? 'STREAMING' : st.closed ? 'NO_STATUS' : 'OPEN';
    outcomes[k] = (outcomes[k] ?? 0) + 1;
  }
  if (bufferedAtHold > 0) outcomes.BUFFERED_UNREAD = bufferedAtHold;
  for (const s of sessions) s.destroy();
  const maxResumedBytes = state.reduce((m, st) => Math.max(m, st.resumed), 0);
  return { outcomes, sessionErrors, bytesRead, messageSizes, maxResumedBytes, details: [...details] };
}

if (process.argv[1] === FLOOD_SCRIPT) {
  const spec = JSON.parse(process.argv[2] ?? '{}') as FloodSpec;
  flood(spec).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`flood failed: ${(err as Error).stack}\n`);
      process.exit(1);
    },
  );
}

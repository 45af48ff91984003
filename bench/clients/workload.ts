/**
 * A lightweight workload client process for the agent-side benchmarks, driven by its parent over
 * the IPC channel (`fork`). It holds many connections to one Unix socket, each its own peer for
 * the server (one socket, one HTTP/2 session), in one of two modes:
 *
 * - `grpc`: plain HTTP/2 (node:http2, no grpc-js channel machinery) speaking gRPC's wire format:
 *   one server-streaming call per connection (FetchX509SVID with the security header), the gRPC
 *   length-prefixed frames counted as they complete. The same code measures the agent and the
 *   bare grpc-js baseline, so client-side costs cancel out.
 * - `raw`: plain sockets that count bytes (the node:net fan-out floor).
 *
 * Times sent to the parent are absolute (`performance.timeOrigin + performance.now()`, ms since
 * the epoch with sub-ms resolution), comparable across processes; latencies are per-call
 * differences measured here.
 *
 * Protocol (parent -> child, child -> parent):
 *   {op:'connect', socketPath, count, mode}   -> {op:'connected', ms, errors}
 *   {op:'open', path}          (grpc)         -> {op:'opened', latencies, errors}  first message of every call
 *   {op:'await', n, timeoutMs}                -> {op:'arrived', times, missing}     time of each connection's n-th message
 *                                                (raw: the n-th `frameBytes` chunk)
 *   {op:'close'}                              -> exits
 */
import { connect as h2connect, constants as h2, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';

export type ClientMode = 'grpc' | 'raw';

export type ToClient =
  | { op: 'connect'; socketPath: string; count: number; mode: ClientMode; frameBytes?: number }
  | { op: 'open'; path: string; timeoutMs: number }
  | { op: 'await'; n: number; timeoutMs: number }
  | { op: 'close' };

export type FromClient =
  | { op: 'connected'; ms: number; errors: string[] }
  | { op: 'opened'; latencies: number[]; errors: string[] }
  | { op: 'arrived'; times: number[]; missing: number; errors: string[] }
  | { op: 'fatal'; error: string };

export const now = (): number => performance.timeOrigin + performance.now();

/** Connections being set up at once per process: stays well under the server's listen backlog. */
const CONNECT_CONCURRENCY = 32;

interface Conn {
  session?: ClientHttp2Session;
  socket?: Socket;
  stream?: ClientHttp2Stream;
  /** Messages (grpc) or frames (raw) received. */
  count: number;
  /** Absolute arrival time of each message. */
  arrivals: number[];
  error?: string;
}

const conns: Conn[] = [];
let waiter: { n: number; done: () => void } | undefined;

function send(msg: FromClient): void {
  process.send!(msg);
}

function checkWaiter(): void {
  if (waiter && conns.every((c) => c.count >= waiter!.n || c.error !== undefined)) {
    const w = waiter;
    waiter = undefined;
    w.done();
  }
}

function arrived(c: Conn): void {
  c.count++;
  c.arrivals.push(now());
  if (c.arrivals.length > 16) c.arrivals.splice(0, c.arrivals.length - 16);
  checkWaiter();
}

/** The arrival time of message `n` (1-based) of `c`, if it still is in the window kept. */
function arrivalOf(c: Conn, n: number): number | undefined {
  const idx = c.arrivals.length - (c.count - n) - 1;
  return c.count >= n ? c.arrivals[idx] : undefined;
}

function fail(c: Conn, why: string): void {
  if (c.error === undefined) c.error = why;
  checkWaiter();
}

async function connectOne(socketPath: string, mode: ClientMode, frameBytes: number): Promise<Conn> {
  const c: Conn = { count: 0, arrivals: [] };
  for (let attempt = 0; ; attempt++) {
    try {
      if (mode === 'raw') {
        const s = await new Promise<Socket>((ok, bad) => {
          const s = netConnect(socketPath);
          s.once('connect', () => {
            s.off('error', bad);
            ok(s);
          });
          s.once('error', bad);
        });
        let bytes = 0;
        s.on('data', (d: Buffer) => {
          bytes += d.length;
          while (bytes >= frameBytes * (c.count + 1)) arrived(c);
        });
        s.on('error', (e) => fail(c, e.message));
        c.socket = s;
      } else {
        const session = await new Promise<ClientHttp2Session>((ok, bad) => {
          const session = h2connect('http://localhost', { createConnection: () => netConnect(socketPath), settings: { enablePush: false } });
          session.once('remoteSettings', () => {
            session.off('error', bad);
            ok(session);
          });
          session.once('error', bad);
        });
        session.on('error', (e) => fail(c, `session: ${e.message}`));
        c.session = session;
      }
      return c;
    } catch (err) {
      // A full accept queue (EAGAIN) or a server not accepting yet: retry a few times.
      if (attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
    }
  }
}

function open(c: Conn, path: string, onFirst: (ms: number) => void): void {
  const session = c.session!;
  const t0 = performance.now();
  const req = session.request({
    [h2.HTTP2_HEADER_METHOD]: 'POST',
    [h2.HTTP2_HEADER_PATH]: path,
    [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
    te: 'trailers',
    'workload.spiffe.io': 'true',
  });
  c.stream = req;
  let buf: Buffer = Buffer.alloc(0);
  req.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      buf = buf.subarray(5 + len);
      if (c.count === 0) onFirst(performance.now() - t0);
      arrived(c);
    }
  });
  req.on('trailers', (t) => {
    const st = t['grpc-status'];
    if (st !== undefined && st !== '0') fail(c, `grpc-status ${String(st)}: ${String(t['grpc-message'] ?? '')}`);
  });
  req.on('response', (h) => {
    // Trailers-only response: the status is in the headers.
    const st = h['grpc-status'];
    if (st !== undefined && st !== '0') fail(c, `grpc-status ${String(st)}: ${String(h['grpc-message'] ?? '')}`);
  });
  req.on('error', (e) => fail(c, `stream: ${e.message}`));
  req.on('close', () => fail(c, 'stream closed'));
  // One empty request message (5-byte gRPC frame header), then half-close.
  req.end(Buffer.alloc(5));
}

function waitFor(n: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiter = undefined;
      resolve();
    }, timeoutMs);
    waiter = {
      n,
      done: () => {
        clearTimeout(timer);
        resolve();
      },
    };
    checkWaiter();
  });
}

function errorsOf(): string[] {
  const seen = new Map<string, number>();
  for (const c of conns) if (c.error !== undefined) seen.set(c.error, (seen.get(c.error) ?? 0) + 1);
  return [...seen].map(([e, n]) => `${n}x ${e}`);
}

async function handle(msg: ToClient): Promise<void> {
  switch (msg.op) {
    case 'connect': {
      const t0 = performance.now();
      const errors: string[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(CONNECT_CONCURRENCY, msg.count) }, async () => {
          while (next < msg.count) {
            next++;
            try {
              conns.push(await connectOne(msg.socketPath, msg.mode, msg.frameBytes ?? 1));
            } catch (err) {
              errors.push((err as Error).message);
            }
          }
        }),
      );
      send({ op: 'connected', ms: performance.now() - t0, errors });
      return;
    }
    case 'open': {
      const latencies: number[] = [];
      for (const c of conns) open(c, msg.path, (ms) => latencies.push(ms));
      await waitFor(1, msg.timeoutMs);
      send({ op: 'opened', latencies, errors: errorsOf() });
      return;
    }
    case 'await': {
      await waitFor(msg.n, msg.timeoutMs);
      const times: number[] = [];
      let missing = 0;
      for (const c of conns) {
        const t = arrivalOf(c, msg.n);
        if (t === undefined) missing++;
        else times.push(t);
      }
      send({ op: 'arrived', times, missing, errors: errorsOf() });
      return;
    }
    case 'close': {
      for (const c of conns) {
        c.error ??= 'closed';
        c.stream?.close(h2.NGHTTP2_CANCEL);
        c.session?.destroy();
        c.socket?.destroy();
      }
      process.disconnect?.();
      setTimeout(() => process.exit(0), 50).unref();
      return;
    }
  }
}

if (process.send !== undefined && process.argv[2] === '--bench-client') {
  process.on('message', (msg: ToClient) => {
    handle(msg).catch((err: unknown) => send({ op: 'fatal', error: (err as Error).stack ?? String(err) }));
  });
  process.on('disconnect', () => process.exit(0));
}

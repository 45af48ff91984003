/**
 * Raw gRPC over node:http2, below any gRPC library: the hostile-input tests and the fuzz harness
 * send exactly the bytes they want (malformed protobuf, truncated or oversized length prefixes,
 * bad compression flags) and read the status the server answers with.
 *
 * A gRPC message on the wire is a 5-byte prefix (1 byte compressed flag, 4 bytes big-endian
 * length) followed by the message bytes, in HTTP/2 DATA frames of a POST with
 * `content-type: application/grpc`. The status comes in trailers (`grpc-status`,
 * `grpc-message`), or in the response headers for a trailers-only answer.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as netConnect } from 'node:net';

/** Where a raw session connects: a Unix socket (plaintext h2c) or TCP with TLS (the agent API). */
export type RawTarget =
  | { kind: 'unix'; socketPath: string }
  | { kind: 'tls'; host: string; port: number; caPem: string; certPem?: string; keyPem?: string; localAddress?: string };

export function connectRaw(target: RawTarget): ClientHttp2Session {
  const session =
    target.kind === 'unix'
      ? http2.connect('http://localhost', { createConnection: () => netConnect(target.socketPath) })
      : http2.connect(`https://${target.host}:${target.port}`, {
          ca: target.caPem,
          ...(target.certPem !== undefined ? { cert: target.certPem, key: target.keyPem } : {}),
          // Another loopback source address (127.0.0.2, ...): a distinct remote address to the server.
          ...(target.localAddress !== undefined ? { localAddress: target.localAddress } : {}),
          // The server presents spiffe://<td>/spire/server (a URI SAN, no DNS name): the chain
          // is checked against the bundle; the name check is not what these tests are about.
          checkServerIdentity: () => undefined,
        });
  // A session error is reported through the streams; never let it crash the test process.
  session.on('error', () => {});
  return session;
}

/** One length-prefixed gRPC message. */
export function frame(message: Uint8Array, opts: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = opts.compressed ? 1 : 0;
  head.writeUInt32BE(opts.declaredLength ?? message.length, 1);
  return Buffer.concat([head, message]);
}

export interface RawResult {
  /** grpc-status, or undefined when the call ended without one (reset, session gone, timeout). */
  code: number | undefined;
  details: string;
  /** Response messages received (length-prefixed frames split). */
  messages: Buffer[];
  /** Why there is no status: 'timeout', 'reset:<code>', 'error:<message>'. */
  failure?: string;
  ms: number;
}

export interface RawCallOptions {
  path: string;
  /** Bytes written as the request body (already framed), in this order. */
  body: Buffer[];
  /** End the request stream after the body (default true). False keeps it open (bidi streams). */
  end?: boolean;
  headers?: OutgoingHttpHeaders;
  /** Give up after this long (default 5000 ms); the stream is then cancelled. */
  timeoutMs?: number;
  /**
   * For server streams that stay open on success: resolve after this many response messages
   * (the stream is then cancelled; code stays undefined, failure undefined).
   */
  stopAfterMessages?: number;
}

function splitMessages(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off + 5 <= buf.length) {
    const len = buf.readUInt32BE(off + 1);
    if (off + 5 + len > buf.length) break;
    out.push(buf.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  return out;
}

function statusOf(h: IncomingHttpHeaders): { code: number; details: string } | undefined {
  const s = h['grpc-status'];
  if (s === undefined) return undefined;
  const m = h['grpc-message'];
  let details = typeof m === 'string' ? m : '';
  try {
    details = decodeURIComponent(details);
  } catch {
    // keep it raw
  }
  return { code: Number(s), details };
}

export function rawCall(session: ClientHttp2Session, opts: RawCallOptions): Promise<RawResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let stream: ClientHttp2Stream;
    let done = false;
    let data = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    // Cancel (RST_STREAM) only a call that has no status yet: resetting streams the server has
    // already finished counts as invalid frames, and node's HTTP/2 server closes a session
    // after 1000 of those (maxSessionInvalidFrames).
    const finish = (r: Omit<RawResult, 'ms' | 'messages'>, cancel = false): void => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      if (cancel && stream && !stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve({ ...r, messages: splitMessages(data), ms: performance.now() - t0 });
    };
    try {
      stream = session.request({
        ':method': 'POST',
        ':path': opts.path,
        'content-type': 'application/grpc',
        te: 'trailers',
        ...opts.headers,
      });
    } catch (err) {
      resolve({ code: undefined, details: '', messages: [], failure: `error:${(err as Error).message}`, ms: performance.now() - t0 });
      return;
    }
    timer = setTimeout(() => finish({ code: undefined, details: '', failure: 'timeout' }, true), opts.timeoutMs ?? 5000);
    stream.on('response', (h) => {
      const st = statusOf(h);
      if (st) finish(st);
    });
    stream.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (opts.stopAfterMessages !== undefined && splitMessages(data).length >= opts.stopAfterMessages) {
        finish({ code: undefined, details: '' }, true);
      }
    });
    stream.on('trailers', (h) => {
      const st = statusOf(h);
      finish(st ?? { code: undefined, details: '', failure: 'trailers without grpc-status' });
    });
    stream.on('error', (err) => finish({ code: undefined, details: '', failure: `error:${err.message}` }));
    stream.on('close', () => finish({ code: undefined, details: '', failure: `reset:${stream.rstCode}` }));
    for (const b of opts.body) stream.write(b);
    if (opts.end ?? true) stream.end();
  });
}

/** Unary-style call with one framed message. */
export function rawUnary(session: ClientHttp2Session, path: string, message: Uint8Array, headers: OutgoingHttpHeaders = {}, timeoutMs = 5000): Promise<RawResult> {
  return rawCall(session, { path, body: [frame(message)], headers, timeoutMs });
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format, enough to take a valid encoding apart and put it back wrong.

export interface WireField {
  field: number;
  wireType: number;
  /** Raw value bytes: the varint, 4/8 fixed bytes, or the length-delimited payload (no length). */
  value: Buffer;
}

export function encodeVarint(n: bigint | number): Buffer {
  let v = BigInt(n);
  if (v < 0n) v &= (1n << 64n) - 1n;
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return Buffer.from(out);
}

function readVarint(buf: Buffer, off: number): [bigint, number] | undefined {
  let v = 0n;
  let shift = 0n;
  for (let i = off; i < buf.length && i < off + 10; i++) {
    const b = buf[i]!;
    v |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [v, i + 1];
    shift += 7n;
  }
  return undefined;
}

/** Splits a message into its top-level fields; undefined when it is not well-formed. */
export function parseWire(buf: Buffer): WireField[] | undefined {
  const out: WireField[] = [];
  let off = 0;
  while (off < buf.length) {
    const tag = readVarint(buf, off);
    if (!tag) return undefined;
    const field = Number(tag[0] >> 3n);
    const wireType = Number(tag[0] & 7n);
    off = tag[1];
    if (wireType === 0) {
      const v = readVarint(buf, off);
      if (!v) return undefined;
      out.push({ field, wireType, value: buf.subarray(off, v[1]) });
      off = v[1];
    } else if (wireType === 1 || wireType === 5) {
      const n = wireType === 1 ? 8 : 4;
      if (off + n > buf.length) return undefined;
      out.push({ field, wireType, value: buf.subarray(off, off + n) });
      off += n;
    } else if (wireType === 2) {
      const len = readVarint(buf, off);
      if (!len || len[1] + Number(len[0]) > buf.length) return undefined;
      off = len[1];
      out.push({ field, wireType, value: buf.subarray(off, off + Number(len[0])) });
      off += Number(len[0]);
    } else return undefined;
  }
  return out;
}

export function encodeWireField(f: WireField, opts: { declaredLength?: number } = {}): Buffer {
  const tag = encodeVarint((BigInt(f.field) << 3n) | BigInt(f.wireType & 7));
  if (f.wireType === 2) return Buffer.concat([tag, encodeVarint(opts.declaredLength ?? f.value.length), f.value]);
  return Buffer.concat([tag, f.value]);
}

export function encodeWire(fields: readonly WireField[]): Buffer {
  return Buffer.concat(fields.map((f) => encodeWireField(f)));
}

/** gRPC status code names, for messages. */
export const CODE_NAMES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED',
] as const;

export function codeName(code: number | undefined): string {
  return code === undefined ? 'none' : (CODE_NAMES[code] ?? String(code));
}

/**
 * A minimal gRPC client for unary calls over HTTP/2 on a Unix socket (node:http2), for the admin
 * CLI. It exists so an admin command does not load @grpc/grpc-js: every command is a short-lived
 * process and loading grpc-js was most of its run time. It speaks only what the CLI needs:
 * - unary calls, no compression, no metadata, one HTTP/2 session per `UnaryChannel`;
 * - a deadline per call, sent as `grpc-timeout` so the server stops too; when it passes the call
 *   fails with DEADLINE_EXCEEDED;
 * - failures are `UnaryCallError`s with grpc-js's codes and comparable details (the status and
 *   percent-decoded message from the server's `grpc-status`/`grpc-message`, "No connection
 *   established. Last error: connect ENOENT <path>" when the socket cannot be reached, HTTP
 *   status and RST_STREAM codes mapped as grpc-js maps them), so client.ts reports them alike.
 * - Responses are capped at MAX_RESPONSE_BYTES (grpc-js's default receive limit).
 */
import { connect as h2connect, constants as h2, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { connect as netConnect } from 'node:net';

/** grpc-js's default maximum received message size. */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** gRPC status codes used here (the numbering every gRPC implementation shares). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** A unary method as the generated service definitions describe it (proto/gen `...Service`). */
export interface UnaryMethod<Req, Res> {
  readonly path: string;
  readonly requestSerialize: (value: Req) => Buffer;
  readonly responseDeserialize: (value: Buffer) => Res;
}

/** A failed call: `code` is the gRPC status, `details` the server's (or our) message. */
export class UnaryCallError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, details: string) {
    super(`${code}: ${details}`);
    this.name = 'UnaryCallError';
    this.code = code;
    this.details = details;
  }
}

/** HTTP status -> gRPC code when a response is not a gRPC one (the gRPC HTTP/2 mapping). */
function codeForHttpStatus(status: number): number {
  switch (status) {
    case 400:
      return Code.INTERNAL;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.UNAVAILABLE;
    default:
      return Code.UNKNOWN;
  }
}

/** RST_STREAM error code -> gRPC code (as grpc-js maps them). */
function codeForRstStream(rst: number): { code: number; details: string } {
  switch (rst) {
    case h2.NGHTTP2_REFUSED_STREAM:
      return { code: Code.UNAVAILABLE, details: 'Stream refused by server' };
    case h2.NGHTTP2_CANCEL:
      return { code: Code.CANCELLED, details: 'Call cancelled' };
    case h2.NGHTTP2_ENHANCE_YOUR_CALM:
      return { code: Code.RESOURCE_EXHAUSTED, details: 'Bandwidth exhausted or memory limit exceeded' };
    case h2.NGHTTP2_INADEQUATE_SECURITY:
      return { code: Code.PERMISSION_DENIED, details: 'Protocol not secure enough' };
    default:
      return { code: Code.INTERNAL, details: `Received RST_STREAM with code ${rst}` };
  }
}

/** `grpc-message` is percent-encoded; a malformed encoding is shown as sent. */
function decodeGrpcMessage(raw: string | string[] | undefined): string {
  const s = Array.isArray(raw) ? raw.join(',') : (raw ?? '');
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** `grpc-timeout` value for `ms` (at most 8 digits, as the protocol requires). */
function grpcTimeout(ms: number): string {
  const m = Math.max(0, Math.ceil(ms));
  return m < 1e8 ? `${m}m` : `${Math.min(Math.ceil(m / 1000), 99_999_999)}S`;
}

/** 5-byte gRPC frame prefix (uncompressed) followed by the message. */
function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

/** One HTTP/2 session to a Unix socket, opened on the first call; `close()` ends it. */
export class UnaryChannel {
  readonly socketPath: string;
  #session: ClientHttp2Session | undefined;
  #connectError: Error | undefined;
  #connected = false;
  #pending = 0;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  #open(): ClientHttp2Session {
    if (this.#session !== undefined && !this.#session.closed && !this.#session.destroyed) return this.#session;
    this.#connectError = undefined;
    this.#connected = false;
    const session = h2connect('http://localhost', { createConnection: () => netConnect(this.socketPath) });
    session.on('connect', () => {
      this.#connected = true;
    });
    // Errors reach the pending streams (they fail with UNAVAILABLE); remember why for them.
    session.on('error', (err) => {
      this.#connectError = err;
    });
    this.#session = session;
    return session;
  }

  /** The details grpc-js gives when the connection fails or drops. */
  #unavailable(streamError: Error | undefined): UnaryCallError {
    if (this.#connected) return new UnaryCallError(Code.UNAVAILABLE, 'Connection dropped');
    const err = this.#connectError ?? streamError;
    return new UnaryCallError(Code.UNAVAILABLE, `No connection established. Last error: ${err?.message ?? 'the connection closed'}`);
  }

  /** Calls `method` with `req`; rejects with a `UnaryCallError` after `timeoutMs`. */
  call<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, timeoutMs: number): Promise<Res> {
    const body = frame(method.requestSerialize(req));
    const session = this.#open();
    session.ref();
    this.#pending++;
    return new Promise<Res>((resolve, reject) => {
      let settled = false;
      const chunks: Buffer[] = [];
      let received = 0;
      let headers: IncomingHttpHeaders | undefined;
      let trailers: IncomingHttpHeaders | undefined;
      let failure: UnaryCallError | undefined;
      const finish = (err: UnaryCallError | undefined, res?: Res): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (--this.#pending === 0 && !session.destroyed) session.unref();
        if (err !== undefined) reject(err);
        else resolve(res as Res);
      };
      const stream = session.request({
        [h2.HTTP2_HEADER_METHOD]: 'POST',
        [h2.HTTP2_HEADER_PATH]: method.path,
        [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
        [h2.HTTP2_HEADER_TE]: 'trailers',
        'grpc-accept-encoding': 'identity',
        'grpc-timeout': grpcTimeout(timeoutMs),
      });
      const timer = setTimeout(() => {
        finish(new UnaryCallError(Code.DEADLINE_EXCEEDED, 'Deadline exceeded'));
        stream.close(h2.NGHTTP2_CANCEL);
      }, timeoutMs);
      stream.on('response', (h) => {
        headers = h;
      });
      stream.on('trailers', (t) => {
        trailers = t;
      });
      stream.on('data', (chunk: Buffer) => {
        if (failure !== undefined) return;
        received += chunk.length;
        if (received > MAX_RESPONSE_BYTES + 5) {
          failure = new UnaryCallError(Code.RESOURCE_EXHAUSTED, `Received message larger than max (${received - 5} vs. ${MAX_RESPONSE_BYTES})`);
          stream.close(h2.NGHTTP2_CANCEL);
          return;
        }
        chunks.push(chunk);
      });
      let streamError: Error | undefined;
      stream.on('error', (err) => {
        // Reported from 'close' below.
        streamError = err;
      });
      stream.on('close', () => {
        if (failure !== undefined) return finish(failure);
        if (headers === undefined) {
          // Never connected: the socket could not be reached (or is not an HTTP/2 server).
          if (!this.#connected) return finish(this.#unavailable(streamError));
          if (stream.rstCode !== undefined && stream.rstCode !== h2.NGHTTP2_NO_ERROR) {
            const { code, details } = codeForRstStream(stream.rstCode);
            return finish(new UnaryCallError(code, details));
          }
          return finish(this.#unavailable(streamError));
        }
        const httpStatus = Number(headers[h2.HTTP2_HEADER_STATUS]);
        // A trailers-only response carries the status in the headers.
        const statusFrom = trailers ?? headers;
        const rawStatus = statusFrom['grpc-status'];
        if (rawStatus === undefined) {
          if (httpStatus !== 200) return finish(new UnaryCallError(codeForHttpStatus(httpStatus), `Received HTTP status code ${httpStatus}`));
          if (stream.rstCode !== undefined && stream.rstCode !== h2.NGHTTP2_NO_ERROR) {
            const { code, details } = codeForRstStream(stream.rstCode);
            return finish(new UnaryCallError(code, details));
          }
          return finish(new UnaryCallError(Code.UNKNOWN, 'No status received'));
        }
        const code = Number(rawStatus);
        if (!Number.isInteger(code) || code < 0 || code > 16) return finish(new UnaryCallError(Code.UNKNOWN, `Invalid grpc-status ${String(rawStatus)}`));
        if (code !== Code.OK) return finish(new UnaryCallError(code, decodeGrpcMessage(statusFrom['grpc-message'])));
        const data = Buffer.concat(chunks);
        if (data.length < 5) return finish(new UnaryCallError(Code.UNIMPLEMENTED, 'Received no response message'));
        if (data.readUInt8(0) !== 0) return finish(new UnaryCallError(Code.INTERNAL, 'Received a compressed message, which was not asked for'));
        const len = data.readUInt32BE(1);
        if (data.length !== 5 + len) return finish(new UnaryCallError(Code.INTERNAL, `Response framing error: ${data.length - 5} bytes for a ${len}-byte message`));
        let res: Res;
        try {
          res = method.responseDeserialize(data.subarray(5));
        } catch (err) {
          return finish(new UnaryCallError(Code.INTERNAL, `Response message parsing error: ${(err as Error).message}`));
        }
        return finish(undefined, res);
      });
      stream.end(body);
    });
  }

  /** Ends the session (calls still running fail). */
  close(): void {
    const s = this.#session;
    this.#session = undefined;
    if (s !== undefined && !s.destroyed) s.destroy();
  }
}

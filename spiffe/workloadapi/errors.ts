/**
 * Errors of the Workload API client. Every failure of a call is a `WorkloadApiError` whose
 * `code` is the gRPC status code (`@grpc/grpc-js` `status`): the agent's own code for RPC
 * failures (PERMISSION_DENIED "no identity issued", INVALID_ARGUMENT, UNAVAILABLE, ...), and for
 * failures found on this side:
 *   reason `unreachable`   UNAVAILABLE: the socket is missing or refuses connections
 *   reason `timeout`       DEADLINE_EXCEEDED: no answer before the call's deadline
 *   reason `bad_request`   INVALID_ARGUMENT: the caller's arguments were refused before sending
 *   reason `bad_response`  INTERNAL: the agent answered with something that is not a valid
 *                          response (cause: the SpiffeError that says what was wrong)
 *   reason `closed`        CANCELLED: the client (or the watch) was closed
 *   reason `rpc`           any other status sent by the agent; `details` is its message
 * Messages name the RPC and say what happened; they never contain key material or tokens.
 */
import { status as Status, type ServiceError } from '@grpc/grpc-js';

export type WorkloadApiErrorReason = 'rpc' | 'unreachable' | 'timeout' | 'bad_request' | 'bad_response' | 'closed';

/** The gRPC status code's name as the spec writes it (`PERMISSION_DENIED`). */
export function statusName(code: number): string {
  const name = (Status as unknown as Record<number, string | undefined>)[code];
  return name ?? `CODE_${code}`;
}

export class WorkloadApiError extends Error {
  /** gRPC status code (see `@grpc/grpc-js` `status`). */
  readonly code: number;
  readonly reason: WorkloadApiErrorReason;
  /** The RPC, e.g. `FetchX509SVID`. */
  readonly rpc: string;
  /** The status message sent by the agent ('' for local failures). */
  readonly details: string;

  constructor(
    rpc: string,
    code: number,
    reason: WorkloadApiErrorReason,
    message: string,
    options?: { details?: string; cause?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WorkloadApiError';
    this.rpc = rpc;
    this.code = code;
    this.reason = reason;
    this.details = options?.details ?? '';
  }
}

export function isWorkloadApiError(err: unknown, code?: number): err is WorkloadApiError {
  return err instanceof WorkloadApiError && (code === undefined || err.code === code);
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number';
}

const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such socket',
  ECONNREFUSED: 'connection refused',
  ENOTDIR: 'not a directory in the path',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
};

const UNREACHABLE_RE = /ENOENT|ECONNREFUSED|ENOTDIR|EACCES|EPERM|No connection established|Failed to connect|connect/;

/** Converts a grpc-js error of `rpc` on `target` (shown as the SPIFFE_ENDPOINT_SOCKET form). */
export function fromServiceError(rpc: string, target: string, err: unknown, timeoutMs?: number): WorkloadApiError {
  if (err instanceof WorkloadApiError) return err;
  if (!isServiceError(err)) {
    const message = err instanceof Error ? err.message : String(err);
    return new WorkloadApiError(rpc, Status.UNKNOWN, 'rpc', `${rpc}: ${message}`, { cause: err });
  }
  const details = err.details ?? '';
  if (err.code === Status.UNAVAILABLE && UNREACHABLE_RE.test(details)) {
    const errno = /\b(E[A-Z]{3,})\b/.exec(details)?.[1];
    const why = errno === undefined ? details : (ERRNO_TEXT[errno] ?? errno);
    const hint = errno === 'EACCES' || errno === 'EPERM'
      ? 'run as a user allowed to connect to the socket'
      : 'is the agent running, and is the socket address right?';
    return new WorkloadApiError(rpc, err.code, 'unreachable', `${rpc}: cannot reach the Workload API at ${target} (${why}): ${hint}`, {
      details,
      cause: err,
    });
  }
  if (err.code === Status.DEADLINE_EXCEEDED) {
    const after = timeoutMs === undefined ? '' : ` after ${formatMs(timeoutMs)}`;
    return new WorkloadApiError(rpc, err.code, 'timeout', `${rpc}: timed out${after} waiting for the Workload API at ${target}`, {
      details,
      cause: err,
    });
  }
  return new WorkloadApiError(rpc, err.code, 'rpc', `${rpc} failed: ${statusName(err.code)}: ${details || '(no message)'}`, {
    details,
    cause: err,
  });
}

/** The agent answered, but not with a valid response. */
export function badResponse(rpc: string, what: string, cause?: unknown): WorkloadApiError {
  const why = cause instanceof Error ? `: ${cause.message}` : '';
  return new WorkloadApiError(rpc, Status.INTERNAL, 'bad_response', `${rpc}: invalid response from the Workload API: ${what}${why}`, {
    cause,
  });
}

export function badRequest(rpc: string, what: string): WorkloadApiError {
  return new WorkloadApiError(rpc, Status.INVALID_ARGUMENT, 'bad_request', `${rpc}: ${what}`);
}

export function closedError(rpc: string): WorkloadApiError {
  return new WorkloadApiError(rpc, Status.CANCELLED, 'closed', `${rpc}: the Workload API client is closed`);
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

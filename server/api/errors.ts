/**
 * The one place where server API errors (admin API and agent API alike) become gRPC statuses,
 * so every handler maps them, logs them and hides internals the same way.
 *
 * - `ApiError` carries an explicit gRPC code and a message meant for the caller.
 * - Caller mistakes (SpiffeError, EntryValidationError, ConfigError, DurationError, datastore
 *   'invalid') become INVALID_ARGUMENT with their message, which names the field and value.
 * - DataStoreError not_found -> NOT_FOUND, already_exists / duplicate_entry -> ALREADY_EXISTS
 *   (their messages name only what the caller sent).
 * - DataStoreError io -> RESOURCE_EXHAUSTED when the disk is full (SQLITE_FULL), UNAVAILABLE
 *   saying so when the database is read-only, else UNAVAILABLE "datastore unavailable";
 *   anything else -> INTERNAL "internal error". The detail (and cause) is logged, never sent.
 * - DataStoreError unavailable (PostgreSQL cannot be reached) -> UNAVAILABLE with its message,
 *   which is written for operators: `datastore unavailable: cannot reach PostgreSQL at
 *   127.0.0.1:5432 (connection refused); nothing was written` (host and port, never credentials).
 *   Not logged per call: the datastore logs the outage once when it starts and once when it ends.
 */
import { status as GrpcStatus, Metadata, type handleUnaryCall, type StatusObject } from '@grpc/grpc-js';
import { isConfigError } from '../../common/configfile.js';
import { DurationError } from '../../common/duration.js';
import { isSpiffeError } from '../../spiffe/errors.js';
import { DataStoreError } from '../datastore/types.js';
import { isEntryValidationError } from '../entries/validate.js';
import type { Status } from '../../proto/gen/spindle/types/v1/types.js';
import type { ApiLogger } from './logger.js';

export { GrpcStatus };

export class ApiError extends Error {
  readonly grpcCode: GrpcStatus;
  constructor(grpcCode: GrpcStatus, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApiError';
    this.grpcCode = grpcCode;
  }
}

export const invalidArgument = (message: string, cause?: unknown): ApiError =>
  new ApiError(GrpcStatus.INVALID_ARGUMENT, message, cause === undefined ? undefined : { cause });
export const notFound = (message: string): ApiError => new ApiError(GrpcStatus.NOT_FOUND, message);

/**
 * Who reads the message: 'operator' (the admin API: its socket is the operator's) or 'agent'
 * (the agent API, reachable over the network: no deployment details such as the database's host).
 */
export type Audience = 'operator' | 'agent';

/** Code and caller-facing message for `err`; logs what is hidden. */
export function statusOf(err: unknown, log: ApiLogger, context: Record<string, unknown> = {}, audience: Audience = 'operator'): Status {
  if (err instanceof ApiError) return { code: err.grpcCode, message: err.message };
  if (isEntryValidationError(err) || isSpiffeError(err) || isConfigError(err) || err instanceof DurationError) {
    return { code: GrpcStatus.INVALID_ARGUMENT, message: err.message };
  }
  if (err instanceof DataStoreError) {
    switch (err.reason) {
      case 'not_found':
        return { code: GrpcStatus.NOT_FOUND, message: err.message };
      case 'already_exists':
      case 'duplicate_entry':
        return { code: GrpcStatus.ALREADY_EXISTS, message: err.message };
      case 'invalid':
        return { code: GrpcStatus.INVALID_ARGUMENT, message: err.message };
      case 'unavailable':
        log.debug({ ...context, err }, 'datastore unavailable');
        return { code: GrpcStatus.UNAVAILABLE, message: audience === 'agent' ? (err.redacted ?? 'datastore unavailable; retry later') : err.message };
      case 'io': {
        log.error({ ...context, err }, 'datastore failure');
        const code = sqliteCodeOf(err);
        if (code === 'SQLITE_FULL') {
          return { code: GrpcStatus.RESOURCE_EXHAUSTED, message: 'the disk holding the datastore is full: nothing was written; free space where data_dir lives and retry' };
        }
        if (code?.startsWith('SQLITE_READONLY')) {
          return { code: GrpcStatus.UNAVAILABLE, message: 'the datastore is read-only (is the filesystem holding data_dir mounted read-only?): nothing was written' };
        }
        return { code: GrpcStatus.UNAVAILABLE, message: 'datastore unavailable; see the server log' };
      }
    }
  }
  log.error({ ...context, err }, 'internal error in a server API');
  return { code: GrpcStatus.INTERNAL, message: 'internal error' };
}

/** The SQLite result code (`SQLITE_FULL`, ...) somewhere in `err`'s cause chain. */
function sqliteCodeOf(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('SQLITE_')) return code;
  }
  return undefined;
}

/** The status a unary callback fails with. */
export function toServiceError(err: unknown, log: ApiLogger, context: Record<string, unknown> = {}, audience: Audience = 'operator'): Partial<StatusObject> {
  const st = statusOf(err, log, context, audience);
  return { code: st.code, details: st.message, metadata: new Metadata() };
}

export const OK_STATUS: Status = { code: GrpcStatus.OK, message: '' };

/** A grpc-js unary handler around an async function; every failure goes through `toServiceError`. */
export function unary<Req, Res>(log: ApiLogger, method: string, fn: (req: Req) => Promise<Res>): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toServiceError(err, log, { method })),
    );
  };
}

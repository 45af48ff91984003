/**
 * The one place where Workload API failures become gRPC statuses, so every handler maps them,
 * logs them and hides internals the same way.
 *
 * - WorkloadApiError: an explicit code and a message meant for the caller.
 * - WorkloadAttestationError: UNAVAILABLE "workload attestation failed" (the detail, which may
 *   name host paths, is logged, not sent).
 * - SpiffeError (a bad SPIFFE ID or JWT-SVID the caller sent): INVALID_ARGUMENT with its message.
 * - Anything else: INTERNAL "internal error", logged.
 */
import { Metadata, status as GrpcStatus, type StatusObject } from '@grpc/grpc-js';
import { WorkloadAttestationError } from '../../attestors/workload/types.js';
import { isSpiffeError } from '../../spiffe/errors.js';
import type { EndpointLogger } from './types.js';

export { GrpcStatus };

export class WorkloadApiError extends Error {
  readonly grpcCode: GrpcStatus;
  constructor(grpcCode: GrpcStatus, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WorkloadApiError';
    this.grpcCode = grpcCode;
  }
}

export const apiError = (code: GrpcStatus, message: string, cause?: unknown): WorkloadApiError =>
  new WorkloadApiError(code, message, cause === undefined ? undefined : { cause });

/** The status for `err` (code + caller-facing details); logs what is hidden or worth an operator's eye. */
export function toStatus(err: unknown, log: EndpointLogger, context: Record<string, unknown> = {}): StatusObject {
  let code: GrpcStatus;
  let details: string;
  if (err instanceof WorkloadApiError) {
    code = err.grpcCode;
    details = err.message;
    const cause = err.cause;
    if (code === GrpcStatus.UNAVAILABLE || code === GrpcStatus.INTERNAL) log.warn({ ...context, err: cause ?? err }, details);
    else log.debug({ ...context, code: GrpcStatus[code] }, details);
  } else if (err instanceof WorkloadAttestationError) {
    code = GrpcStatus.UNAVAILABLE;
    details = 'workload attestation failed';
    log.warn({ ...context, err }, 'workload attestation failed');
  } else if (isSpiffeError(err)) {
    code = GrpcStatus.INVALID_ARGUMENT;
    details = err.message;
    log.debug({ ...context, reason: err.reason }, details);
  } else {
    code = GrpcStatus.INTERNAL;
    details = 'internal error';
    log.error({ ...context, err }, 'internal error in the Workload API');
  }
  return { code, details, metadata: new Metadata() };
}

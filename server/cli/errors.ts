/** The CLI's error type: its message is printed as `Error: <message>` and the exit code is 1. */
export class CliError extends Error {
  /** The gRPC status code when the error came from the server. */
  readonly grpcCode: number | undefined;
  readonly details: string | undefined;

  constructor(message: string, options?: { grpcCode?: number; details?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.grpcCode = options?.grpcCode;
    this.details = options?.details;
  }
}

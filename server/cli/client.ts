/**
 * The CLI's client for the admin API on the local Unix socket. Calls go through unary.ts (a
 * small gRPC-over-HTTP/2 client) with the generated service definitions' paths and message
 * codecs, not through @grpc/grpc-js, which would cost every admin command most of its run time.
 * - Every call has a deadline (default 30 s; health checks pass a shorter one) and does not wait
 *   for the server to come up: an unreachable server fails fast.
 * - Errors become `CliError`s whose message says what to fix: the socket missing or refusing
 *   ("is spindle-server running?"), permission denied (run as the server's user or group),
 *   timeouts, or the server's own status message.
 * - Before the first connection the socket's directory is checked like the server checks it
 *   (common/safedir.ts): when another local user owns it or an ancestor, or may write into one
 *   without the sticky bit, they could have put their own server there, so the CLI refuses to
 *   talk to it (no request is sent, nothing the socket says is printed).
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { checkSafeDirectory, UnsafeDirectoryError } from '../../common/safedir.js';
import { HealthService } from '../../proto/gen/grpc/health/v1/health.js';
import { AgentServiceService, BundleServiceService, EntryServiceService, SVIDServiceService, TrustDomainServiceService } from '../../proto/gen/spindle/admin/v1/admin.js';
import { grpcCodeName } from '../../common/output.js';
import { CliError } from './errors.js';
import { Code, UnaryCallError, UnaryChannel, type UnaryMethod } from './unary.js';

export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

export class AdminClient {
  readonly socketPath: string;
  readonly timeoutMs: number;
  #channel: UnaryChannel | undefined;

  constructor(socketPath: string, options: { timeoutMs?: number } = {}) {
    this.socketPath = resolve(socketPath);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** The service's methods; the first use checks the socket (checkSocket). */
  #service<S>(definition: S): S {
    if (this.#channel === undefined) {
      this.checkSocket();
      this.#channel = new UnaryChannel(this.socketPath);
    }
    return definition;
  }

  get entry(): typeof EntryServiceService {
    return this.#service(EntryServiceService);
  }
  get agent(): typeof AgentServiceService {
    return this.#service(AgentServiceService);
  }
  get bundle(): typeof BundleServiceService {
    return this.#service(BundleServiceService);
  }
  get svid(): typeof SVIDServiceService {
    return this.#service(SVIDServiceService);
  }
  get trustDomain(): typeof TrustDomainServiceService {
    return this.#service(TrustDomainServiceService);
  }
  get health(): typeof HealthService {
    return this.#service(HealthService);
  }

  /** Fails early, with a precise message, when the socket cannot be used at all. */
  checkSocket(): void {
    try {
      checkSafeDirectory(dirname(this.socketPath), 'admin socket directory');
    } catch (err) {
      // An fs error (a directory we may not enter) is reported below like any unusable socket.
      if (err instanceof UnsafeDirectoryError) throw new CliError(`refusing to connect to the admin socket ${this.socketPath}: ${err.message}`);
    }
    let isSocket: boolean;
    try {
      isSocket = statSync(this.socketPath).isSocket();
      accessSync(this.socketPath, fsConstants.R_OK | fsConstants.W_OK);
    } catch (err) {
      throw this.#fsError(err as NodeJS.ErrnoException);
    }
    if (!isSocket) throw new CliError(`connection error: ${this.socketPath} is not a Unix socket: check -socketPath`);
  }

  #unreachable(): CliError {
    return new CliError(`connection error: cannot reach the server at ${this.socketPath}: is spindle-server running? (set -socketPath if it listens elsewhere)`);
  }

  #fsError(err: NodeJS.ErrnoException): CliError {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'ECONNREFUSED') return this.#unreachable();
    if (err.code === 'EACCES' || err.code === 'EPERM') {
      return new CliError(
        `permission denied on the admin socket ${this.socketPath}: run this command as the user or group that runs spindle-server`,
      );
    }
    return new CliError(`connection error: ${this.socketPath}: ${err.message}`);
  }

  /** Turns a gRPC error into a message that says what happened and what to fix. */
  describe(err: unknown): Error {
    if (!(err instanceof UnaryCallError)) return err instanceof Error ? err : new Error(String(err));
    const details = err.details ?? '';
    // UNAVAILABLE from the server itself (its datastore is down) says so; only the channel's own
    // UNAVAILABLE means the admin socket could not be reached.
    if (err.code === Code.UNAVAILABLE && !/^datastore unavailable/.test(details) && /ENOENT|ECONNREFUSED|No connection established|connect|ENOTDIR/.test(details)) {
      if (/EACCES|EPERM/.test(details)) return this.#fsError(Object.assign(new Error(details), { code: 'EACCES' }));
      return this.#unreachable();
    }
    if (err.code === Code.DEADLINE_EXCEEDED) {
      return new CliError(`timed out after ${Math.round(this.timeoutMs / 1000)}s waiting for the server at ${this.socketPath}`);
    }
    return new CliError(`rpc error: code = ${grpcCodeName(err.code)} desc = ${details}`, { grpcCode: err.code, details });
  }

  /** Calls a unary method (`client.entry.getEntry`) with the deadline; rejects with `describe(err)`. */
  async call<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, timeoutMs = this.timeoutMs): Promise<Res> {
    const channel = this.#channel ?? new UnaryChannel(this.socketPath);
    this.#channel = channel;
    try {
      return await channel.call(method, req, timeoutMs);
    } catch (err) {
      throw this.describe(err);
    }
  }

  close(): void {
    this.#channel?.close();
    this.#channel = undefined;
  }
}

/** Runs `fn` with a client for `socketPath`, closing it afterwards. */
export async function withAdminClient<T>(socketPath: string, fn: (client: AdminClient) => Promise<T>, options: { timeoutMs?: number } = {}): Promise<T> {
  const client = new AdminClient(socketPath, options);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

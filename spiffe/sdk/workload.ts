/**
 * What the SDK's sources (X509Source, JwtSource, BundleSource) share: finding the Workload API
 * (the same address rules and the same one error naming SPIFFE_ENDPOINT_SOCKET for all of them),
 * and starting a watch that the source's create() waits on until the first message arrives.
 *
 * Each source reports with its own error code (ERR_X509_SOURCE, ERR_JWT_SOURCE,
 * ERR_BUNDLE_SOURCE); the reasons are the same: `no_endpoint`, `socket_missing`, `timeout`,
 * `watch_ended`.
 */
import { existsSync } from 'node:fs';
import { SpiffeError, type ErrorCode } from '../errors.js';
import { parseEndpointAddress } from '../endpoint.js';
import { createWorkloadApiClient, ENDPOINT_SOCKET_ENV, type Watch, type WatchErrorHandler, type WorkloadApiClient } from '../workloadapi/client.js';
import type { WorkloadApiError } from '../workloadapi/errors.js';

/** Where a source finds the Workload API (the options every source takes). */
export interface SourceEndpointOptions {
  /** Workload API socket: a path (`/run/spire/agent.sock`) or an address (`unix:///...`, `tcp://ip:port`). */
  socketPath?: string;
  /** A client to use (not closed by close()); overrides socketPath. */
  client?: WorkloadApiClient;
  /** Where SPIFFE_ENDPOINT_SOCKET is read from; default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Makes the source's SpiffeError for a reason. */
export type SourceErrorFactory = (reason: string, message: string, cause?: unknown) => SpiffeError;

export function sourceErrorFactory(code: ErrorCode): SourceErrorFactory {
  return (reason, message, cause) => new SpiffeError(code, reason, message, cause === undefined ? undefined : { cause });
}

/**
 * The Workload API address from `socketPath`, else `env.SPIFFE_ENDPOINT_SOCKET`: a bare absolute
 * path is taken as `unix://<path>`. Neither set: `no_endpoint`; a Unix socket that does not
 * exist: `socket_missing`; both messages name SPIFFE_ENDPOINT_SOCKET.
 */
export function resolveSourceAddress(opts: Pick<SourceEndpointOptions, 'socketPath' | 'env'>, fail: SourceErrorFactory): string {
  const raw = opts.socketPath ?? (opts.env ?? process.env)[ENDPOINT_SOCKET_ENV];
  if (raw === undefined || raw === '') {
    throw fail('no_endpoint', `no Workload API socket: pass socketPath or set ${ENDPOINT_SOCKET_ENV} (e.g. unix:///tmp/spire-agent/public/api.sock)`);
  }
  const address = raw.startsWith('/') ? `unix://${raw}` : raw;
  const parsed = parseEndpointAddress(address);
  if (parsed.kind === 'unix' && !existsSync(parsed.path)) {
    throw fail(
      'socket_missing',
      `the Workload API socket ${parsed.path} does not exist (from ${opts.socketPath !== undefined ? 'socketPath' : ENDPOINT_SOCKET_ENV}); is the agent running, and is ${ENDPOINT_SOCKET_ENV} right?`,
    );
  }
  return address;
}

/** The caller's client (not owned), or a new one for the resolved address (owned: the source closes it). */
export function sourceClient(opts: SourceEndpointOptions, fail: SourceErrorFactory): { client: WorkloadApiClient; owned: boolean } {
  if (opts.client !== undefined) return { client: opts.client, owned: false };
  return { client: createWorkloadApiClient({ address: resolveSourceAddress(opts, fail) }), owned: true };
}

export interface FirstWatchOptions<T> {
  /** Starts the watch with these callbacks (e.g. `(u, e) => client.watchJwtBundles(u, e)`). */
  start: (onUpdate: (value: T) => void, onError: WatchErrorHandler) => Watch;
  /** Every message, the first included. */
  onUpdate: (value: T) => void;
  /** Errors once the first message has arrived (final or not). */
  onErrorAfterFirst: (err: WorkloadApiError, final: boolean) => void;
  timeoutMs: number;
  fail: SourceErrorFactory;
  /** What the first message is, for messages: `an X509 context`, `JWT bundles`. */
  what: string;
  address: string;
}

/**
 * Starts a watch; `first` resolves when its first message has been passed to `onUpdate`, and
 * rejects with `timeout` (after `timeoutMs`) or `watch_ended` (a fatal status before it). The
 * watch is returned at once so the caller can close it on rejection.
 */
export function watchUntilFirst<T>(opts: FirstWatchOptions<T>): { watch: Watch; first: Promise<void> } {
  let received = false;
  let watch!: Watch;
  const first = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(opts.fail('timeout', `no ${opts.what} from the Workload API at ${opts.address} within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    watch = opts.start(
      (value) => {
        const wasFirst = !received;
        received = true;
        if (wasFirst) clearTimeout(timer);
        opts.onUpdate(value);
        if (wasFirst) resolve();
      },
      (err, info) => {
        if (!received) {
          if (info.final) {
            clearTimeout(timer);
            reject(opts.fail('watch_ended', `the Workload API watch ended: ${err.message}`, err));
          }
          return;
        }
        opts.onErrorAfterFirst(err, info.final);
      },
    );
  });
  return { watch, first };
}

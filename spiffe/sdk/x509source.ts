/**
 * X509Source (go-spiffe's `workloadapi.X509Source`): the workload's X509-SVIDs and X.509 bundles
 * (own and federated), kept current from a Workload API watch.
 *
 *   const source = await X509Source.create();            // SPIFFE_ENDPOINT_SOCKET
 *   const svid = source.getX509Svid();                    // default SVID, never expired
 *   source.on('updated', () => ...);                       // every new X509 context
 *   source.close();
 *
 * Contract:
 * - Address: `socketPath` (a path, or a `unix:` / `tcp:` address), else `env.SPIFFE_ENDPOINT_SOCKET`
 *   (default `process.env`), or a ready `client`. Neither set, or a Unix socket path that does
 *   not exist: one SpiffeError `ERR_X509_SOURCE` (reason `no_endpoint` / `socket_missing`)
 *   naming SPIFFE_ENDPOINT_SOCKET.
 * - `create()` resolves when the first X509 context arrives; rejects when the watch ends on a
 *   fatal status (e.g. PERMISSION_DENIED: no identity) or after `timeoutMs` (default 30 s).
 * - Afterwards every message replaces the context and emits `updated`; transient failures are
 *   the client's business (reconnect with backoff) and are emitted as `error` only when there is
 *   an `error` listener.
 * - `getX509Svid()`: `picker(svids)` when given, else the first SVID. An SVID whose leaf has
 *   expired is never handed out: SpiffeError `ERR_X509_SOURCE` reason `svid_expired`.
 * - Implements X509BundleSource, so it can be passed wherever validators take bundles.
 * - `close()` ends the watch and, when the source made the client, the client. Later calls
 *   throw reason `closed`.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import type { Bundle } from '../bundle.js';
import { ErrorCode, SpiffeError } from '../errors.js';
import { parseEndpointAddress } from '../endpoint.js';
import type { TrustDomain } from '../id.js';
import type { X509BundleSource } from '../source.js';
import { parseCertificate } from '../x509/parse.js';
import { createWorkloadApiClient, ENDPOINT_SOCKET_ENV, type Watch, type WorkloadApiClient } from '../workloadapi/client.js';
import type { WorkloadX509Svid, X509Context } from '../workloadapi/parse.js';

export interface X509SourceOptions {
  /** Workload API socket: a path (`/run/spire/agent.sock`) or an address (`unix:///...`, `tcp://ip:port`). */
  socketPath?: string;
  /** Chooses the SVID getX509Svid returns; default the first (the agent's default identity). */
  picker?: (svids: readonly WorkloadX509Svid[]) => WorkloadX509Svid;
  /** A client to use (not closed by close()); overrides socketPath. */
  client?: WorkloadApiClient;
  /** Where SPIFFE_ENDPOINT_SOCKET is read from; default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
  /** How long create() waits for the first X509 context; default 30 s. */
  timeoutMs?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

export interface SvidSource {
  getX509Svid(): WorkloadX509Svid;
}

function sourceError(reason: string, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.X509_SOURCE, reason, message, cause === undefined ? undefined : { cause });
}

function resolveAddress(opts: X509SourceOptions): string {
  const raw = opts.socketPath ?? (opts.env ?? process.env)[ENDPOINT_SOCKET_ENV];
  if (raw === undefined || raw === '') {
    throw sourceError('no_endpoint', `no Workload API socket: pass socketPath or set ${ENDPOINT_SOCKET_ENV} (e.g. unix:///tmp/spire-agent/public/api.sock)`);
  }
  const address = raw.startsWith('/') ? `unix://${raw}` : raw;
  const parsed = parseEndpointAddress(address);
  if (parsed.kind === 'unix' && !existsSync(parsed.path)) {
    throw sourceError('socket_missing', `the Workload API socket ${parsed.path} does not exist (from ${opts.socketPath !== undefined ? 'socketPath' : ENDPOINT_SOCKET_ENV}); is the agent running, and is ${ENDPOINT_SOCKET_ENV} right?`);
  }
  return address;
}

export class X509Source extends EventEmitter implements X509BundleSource, SvidSource {
  #ctx: X509Context | undefined;
  #watch: Watch | undefined;
  #client: WorkloadApiClient | undefined;
  #ownsClient = false;
  #closed = false;
  readonly #picker: X509SourceOptions['picker'];
  readonly #now: () => Date;

  private constructor(opts: X509SourceOptions) {
    super();
    this.#picker = opts.picker;
    this.#now = opts.now ?? (() => new Date());
  }

  /** Connects, and resolves once the first X509 context has arrived. */
  static async create(opts: X509SourceOptions = {}): Promise<X509Source> {
    const source = new X509Source(opts);
    if (opts.client !== undefined) {
      source.#client = opts.client;
    } else {
      source.#client = createWorkloadApiClient({ address: resolveAddress(opts) });
      source.#ownsClient = true;
    }
    const timeoutMs = opts.timeoutMs ?? 30_000;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(sourceError('timeout', `no X509 context from the Workload API at ${source.#client!.address} within ${timeoutMs} ms`)),
          timeoutMs,
        );
        source.#watch = source.#client!.watchX509Context(
          (ctx) => {
            source.#ctx = ctx;
            clearTimeout(timer);
            resolve();
            source.emit('updated', ctx);
          },
          (err, info) => {
            if (info.final) {
              clearTimeout(timer);
              reject(sourceError('watch_ended', `the Workload API watch ended: ${err.message}`, err));
            }
            if (source.#ctx !== undefined && source.listenerCount('error') > 0) source.emit('error', err);
          },
        );
      });
    } catch (err) {
      source.close();
      throw err;
    }
    return source;
  }

  /** The current X509 context (every SVID and the bundles). */
  get context(): X509Context {
    this.#check();
    return this.#ctx!;
  }

  /** The default SVID (or the picker's choice); throws `svid_expired` rather than hand out an expired one. */
  getX509Svid(): WorkloadX509Svid {
    const ctx = this.context;
    const svid = this.#picker ? this.#picker(ctx.svids) : ctx.defaultSvid;
    if (svid === undefined) throw sourceError('no_svid', 'the picker chose no SVID');
    const leaf = svid.certificates[0];
    const notAfter = leaf === undefined ? new Date(0) : parseCertificate(leaf).notAfter;
    const now = this.#now();
    if (notAfter.getTime() <= now.getTime()) {
      throw sourceError('svid_expired', `the X509-SVID ${svid.id} expired at ${notAfter.toISOString()} and the agent has sent no newer one`);
    }
    return svid;
  }

  /** The X.509 bundle of `td` (own or federated), or an error `no_bundle`. */
  getX509BundleForTrustDomain(td: TrustDomain): Bundle {
    const b = this.context.bundles.get(td);
    if (b === undefined) throw sourceError('no_bundle', `no X.509 bundle for trust domain ${td}`);
    return b;
  }

  getX509Authorities(td: TrustDomain): readonly Buffer[] | undefined {
    return this.context.bundles.getX509Authorities(td);
  }

  /** Every X.509 authority of every trust domain (for TLS stacks that take one CA list). */
  allX509Authorities(): Buffer[] {
    return this.context.bundles.bundles().flatMap((b) => b.x509Authorities());
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.close();
    if (this.#ownsClient) this.#client?.close();
  }

  #check(): void {
    if (this.#closed) throw sourceError('closed', 'the X509Source is closed');
    if (this.#ctx === undefined) throw sourceError('not_ready', 'the X509Source has no X509 context yet');
  }
}

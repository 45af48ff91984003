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
 *   naming SPIFFE_ENDPOINT_SOCKET (workload.ts: the same rules for every source).
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
import type { Bundle } from '../bundle.js';
import { ErrorCode } from '../errors.js';
import type { TrustDomain } from '../id.js';
import type { X509BundleSource } from '../source.js';
import { parseCertificate } from '../x509/parse.js';
import type { Watch, WorkloadApiClient } from '../workloadapi/client.js';
import type { WorkloadX509Svid, X509Context } from '../workloadapi/parse.js';
import { sourceClient, sourceErrorFactory, watchUntilFirst, type SourceEndpointOptions } from './workload.js';

export interface X509SourceOptions extends SourceEndpointOptions {
  /** Chooses the SVID getX509Svid returns; default the first (the agent's default identity). */
  picker?: (svids: readonly WorkloadX509Svid[]) => WorkloadX509Svid;
  /** How long create() waits for the first X509 context; default 30 s. */
  timeoutMs?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

export interface SvidSource {
  getX509Svid(): WorkloadX509Svid;
}

const sourceError = sourceErrorFactory(ErrorCode.X509_SOURCE);

export class X509Source extends EventEmitter implements X509BundleSource, SvidSource {
  #ctx: X509Context | undefined;
  #watch: Watch | undefined;
  #client: WorkloadApiClient | undefined;
  #ownsClient = false;
  #closed = false;
  readonly #picker: X509SourceOptions['picker'];
  readonly #now: () => Date;
  readonly #notAfter = new WeakMap<WorkloadX509Svid, { leaf: Buffer; notAfter: Date }>();

  private constructor(opts: X509SourceOptions) {
    super();
    this.#picker = opts.picker;
    this.#now = opts.now ?? (() => new Date());
  }

  /** Connects, and resolves once the first X509 context has arrived. */
  static async create(opts: X509SourceOptions = {}): Promise<X509Source> {
    const source = new X509Source(opts);
    const { client, owned } = sourceClient(opts, sourceError);
    source.#client = client;
    source.#ownsClient = owned;
    const { watch, first } = watchUntilFirst<X509Context>({
      start: (onUpdate, onError) => client.watchX509Context(onUpdate, onError),
      onUpdate: (ctx) => {
        source.#ctx = ctx;
        source.emit('updated', ctx);
      },
      onErrorAfterFirst: (err) => {
        if (source.listenerCount('error') > 0) source.emit('error', err);
      },
      timeoutMs: opts.timeoutMs ?? 30_000,
      fail: sourceError,
      what: 'X509 context',
      address: client.address,
    });
    source.#watch = watch;
    try {
      await first;
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
    const notAfter = this.#notAfterOf(svid);
    const now = this.#now();
    if (notAfter.getTime() <= now.getTime()) {
      throw sourceError('svid_expired', `the X509-SVID ${svid.id} expired at ${notAfter.toISOString()} and the agent has sent no newer one`);
    }
    return svid;
  }

  /** The leaf's notAfter, parsed once per SVID (getX509Svid runs for every TLS connection or request). */
  #notAfterOf(svid: WorkloadX509Svid): Date {
    const leaf = svid.certificates[0];
    if (leaf === undefined) return new Date(0);
    const known = this.#notAfter.get(svid);
    if (known !== undefined && known.leaf === leaf) return known.notAfter;
    const notAfter = parseCertificate(leaf).notAfter;
    this.#notAfter.set(svid, { leaf, notAfter });
    return notAfter;
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

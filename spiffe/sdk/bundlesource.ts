/**
 * BundleSource (go-spiffe's `workloadapi.BundleSource`): the X.509 and JWT bundles of every
 * trust domain the workload trusts (own and federated), kept current from two Workload API
 * watches (FetchX509Bundles and FetchJWTBundles). For a service that validates peers or tokens
 * but needs no SVID of its own for that, e.g. a server checking JWT-SVIDs:
 *
 *   const bundles = await BundleSource.create();      // SPIFFE_ENDPOINT_SOCKET
 *   await validateJwtSvid(token, { audience, bundles });
 *   bundles.on('updated', ({ kind }) => ...);          // 'x509' or 'jwt'
 *   bundles.close();
 *
 * Contract:
 * - Address: as X509Source and JwtSource (workload.ts); errors are `ERR_BUNDLE_SOURCE` with the
 *   same reasons (`no_endpoint`, `socket_missing` naming SPIFFE_ENDPOINT_SOCKET, `timeout`,
 *   `watch_ended`).
 * - `create()` resolves once both watches have delivered their first message (`timeoutMs`,
 *   default 30 s, for both together). Each later message replaces that kind's bundles and emits
 *   `updated` with `{ kind: 'x509' | 'jwt', bundles }`. Reconnecting is the client's; errors
 *   after the start are emitted as `error` only when there is an `error` listener.
 * - Implements X509BundleSource and JwtBundleSource: `getX509Authorities(td)` /
 *   `getJwtAuthorities(td)` are undefined for a trust domain without such a bundle (untrusted).
 *   `get*BundleForTrustDomain(td)` throw `no_bundle` instead. `getBundleForTrustDomain(td)` is
 *   both kinds of authority in one Bundle.
 * - `close()` ends both watches and, when the source made the client, the client; later calls
 *   throw `closed`.
 */
import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import { Bundle, type BundleSet } from '../bundle.js';
import { ErrorCode } from '../errors.js';
import { parseTrustDomain, type TrustDomain } from '../id.js';
import type { JwtBundleSource, X509BundleSource } from '../source.js';
import type { Watch, WorkloadApiClient } from '../workloadapi/client.js';
import { sourceClient, sourceErrorFactory, watchUntilFirst, type SourceEndpointOptions } from './workload.js';

export interface BundleSourceOptions extends SourceEndpointOptions {
  /** How long create() waits for the first X.509 and JWT bundles; default 30 s. */
  timeoutMs?: number;
}

export interface BundleUpdate {
  kind: 'x509' | 'jwt';
  bundles: BundleSet;
}

const sourceError = sourceErrorFactory(ErrorCode.BUNDLE_SOURCE);

export class BundleSource extends EventEmitter implements X509BundleSource, JwtBundleSource {
  #x509: BundleSet | undefined;
  #jwt: BundleSet | undefined;
  readonly #watches: Watch[] = [];
  #client!: WorkloadApiClient;
  #ownsClient = false;
  #closed = false;

  private constructor() {
    super();
  }

  /** Connects, and resolves once the first X.509 bundles and the first JWT bundles have arrived. */
  static async create(opts: BundleSourceOptions = {}): Promise<BundleSource> {
    const source = new BundleSource();
    const { client, owned } = sourceClient(opts, sourceError);
    source.#client = client;
    source.#ownsClient = owned;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const onErrorAfterFirst = (err: Error): void => {
      if (source.listenerCount('error') > 0) source.emit('error', err);
    };
    const x509 = watchUntilFirst<BundleSet>({
      start: (u, e) => client.watchX509Bundles(u, e),
      onUpdate: (bundles) => {
        source.#x509 = bundles;
        source.#emitUpdate('x509', bundles);
      },
      onErrorAfterFirst,
      timeoutMs,
      fail: sourceError,
      what: 'X.509 bundles',
      address: client.address,
    });
    source.#watches.push(x509.watch);
    const jwt = watchUntilFirst<BundleSet>({
      start: (u, e) => client.watchJwtBundles(u, e),
      onUpdate: (bundles) => {
        source.#jwt = bundles;
        source.#emitUpdate('jwt', bundles);
      },
      onErrorAfterFirst,
      timeoutMs,
      fail: sourceError,
      what: 'JWT bundles',
      address: client.address,
    });
    source.#watches.push(jwt.watch);
    try {
      await Promise.all([x509.first, jwt.first]);
    } catch (err) {
      source.close();
      throw err;
    }
    return source;
  }

  /** The Workload API address this source talks to. */
  get address(): string {
    return this.#client.address;
  }

  /** The current X.509 bundles, one per trust domain. */
  get x509Bundles(): BundleSet {
    this.#check();
    return this.#x509!;
  }

  /** The current JWT bundles, one per trust domain. */
  get jwtBundles(): BundleSet {
    this.#check();
    return this.#jwt!;
  }

  /** Every trust domain with an X.509 or a JWT bundle, sorted. */
  trustDomains(): TrustDomain[] {
    return [...new Set([...this.x509Bundles.trustDomains(), ...this.jwtBundles.trustDomains()])].sort();
  }

  getX509Authorities(td: TrustDomain): readonly Buffer[] | undefined {
    return this.x509Bundles.getX509Authorities(td);
  }

  getJwtAuthorities(td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined {
    return this.jwtBundles.getJwtAuthorities(td);
  }

  /** The X.509 bundle of `td` (`example.org` or `spiffe://example.org`), or `no_bundle`. */
  getX509BundleForTrustDomain(td: TrustDomain | string): Bundle {
    const t = parseTrustDomain(td);
    const b = this.x509Bundles.get(t);
    if (b === undefined) throw sourceError('no_bundle', `no X.509 bundle for trust domain ${t}`);
    return b;
  }

  /** The JWT bundle of `td`, or `no_bundle`. */
  getJwtBundleForTrustDomain(td: TrustDomain | string): Bundle {
    const t = parseTrustDomain(td);
    const b = this.jwtBundles.get(t);
    if (b === undefined) throw sourceError('no_bundle', `no JWT bundle for trust domain ${t}`);
    return b;
  }

  /** Both kinds of authority of `td` in one Bundle (go-spiffe's spiffebundle), or `no_bundle`. */
  getBundleForTrustDomain(td: TrustDomain | string): Bundle {
    const t = parseTrustDomain(td);
    const x = this.x509Bundles.get(t);
    const j = this.jwtBundles.get(t);
    if (x === undefined && j === undefined) throw sourceError('no_bundle', `no bundle for trust domain ${t}`);
    return new Bundle(t, { x509Authorities: x?.x509Authorities() ?? [], jwtAuthorities: j?.jwtAuthorities() ?? new Map() });
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#watches) w.close();
    if (this.#ownsClient) this.#client?.close();
  }

  #emitUpdate(kind: BundleUpdate['kind'], bundles: BundleSet): void {
    // Before both have arrived, create() has not resolved: nobody can be listening yet.
    if (this.#x509 !== undefined && this.#jwt !== undefined) this.emit('updated', { kind, bundles } satisfies BundleUpdate);
  }

  #check(): void {
    if (this.#closed) throw sourceError('closed', 'the BundleSource is closed');
    if (this.#x509 === undefined || this.#jwt === undefined) throw sourceError('not_ready', 'the BundleSource has not received its first bundles yet');
  }
}

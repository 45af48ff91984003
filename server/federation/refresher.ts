/**
 * The bundle refresher: for every federation relationship (static ones from the config's
 * `federation.federates_with`, dynamic ones from the datastore), fetches the foreign trust
 * domain's bundle from its bundle endpoint (fetch.ts) and stores it as that trust domain's
 * federated bundle through `DataStore.updateBundle`, the write `bundle set` also ends in, so it
 * reaches agents and workloads by the change feed's push.
 *
 * When:
 * - at start, then after each success at the bundle's `spiffe_refresh_hint`, bounded to
 *   [MIN_REFRESH_SECONDS, MAX_REFRESH_SECONDS]; DEFAULT_REFRESH_SECONDS (SPIRE's 5 minutes) when
 *   the document has none;
 * - after a failure, again after a backoff: RETRY_FIRST_MS doubling up to RETRY_MAX_MS (never
 *   later than the next regular refresh would be), with +-10% jitter so servers sharing a
 *   database spread out;
 * - at once on `refreshNow` (`spindle-server federation refresh`); a refresh already running is
 *   joined rather than started twice.
 * Relationships created, changed or deleted through this server's admin API are picked up at
 * once (`reload`); those written by other servers sharing the database within RELOAD_MS.
 *
 * What is kept: the bundle stored is only ever replaced by a newer one. The sequence comparison
 * runs inside updateBundle's write transaction (serialized across servers), so of several servers
 * refreshing the same trust domain none can write an older sequence over a newer one. A served
 * sequence below the stored one is refused (logged, recorded as the last error); the same sequence
 * with the same keys is a success that writes nothing; the same sequence with other keys is refused
 * (the far side must bump the sequence when the bundle changes). A document without a sequence
 * (or with 0) carries no order: other keys than those held are stored under the held sequence + 1.
 * On any failure the last good bundle stays as it is.
 *
 * Refresh state (last attempt, last success, last error, last sequence) is kept in memory for every
 * relationship, written to the datastore for dynamic ones, and exported as metrics.
 */
import { MAX_SEQUENCE, parseBundle, marshalBundle, type Bundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, trustDomainOf, type TrustDomain } from '../../spiffe/id.js';
import type { X509BundleSource } from '../../spiffe/source.js';
import { NO_REFRESH, type DataStore, type FederationRefreshState, type FederationRelationship, type StoredBundle } from '../datastore/types.js';
import { BundleFetchError, fetchBundle, type FetchBundleOptions } from './fetch.js';
import type { FederationMetrics } from './metrics.js';

export const DEFAULT_REFRESH_SECONDS = 300;
export const MIN_REFRESH_SECONDS = 30;
export const MAX_REFRESH_SECONDS = 3600;
export const RETRY_FIRST_MS = 5_000;
export const RETRY_MAX_MS = 300_000;
export const RELOAD_MS = 30_000;

export type RelationshipSpec = Omit<FederationRelationship, 'createdAt' | 'updatedAt'>;

export interface RefresherLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

export interface BundleRefresherOptions {
  datastore: DataStore;
  /** The server's own trust domain: never a relationship. */
  trustDomain: TrustDomain;
  /** From the config (`federation.federates_with`): refreshed, listed, not editable. */
  staticRelationships?: readonly RelationshipSpec[];
  logger: RefresherLogger;
  metrics?: FederationMetrics;
  now?: () => Date;
  /** Fetch settings (timeouts, size cap; tests: extra web roots, connect address). */
  fetch?: Pick<FetchBundleOptions, 'webRoots' | 'maxBytes' | 'connectTimeoutMs' | 'totalTimeoutMs' | 'connectAddress'>;
  /** Overrides of the timing constants above (tests). */
  timing?: { minRefreshSeconds?: number; retryFirstMs?: number; retryMaxMs?: number; reloadMs?: number };
}

export interface RefreshOutcome {
  trustDomain: TrustDomain;
  ok: boolean;
  /** Whether a new bundle was stored. */
  updated: boolean;
  /** The sequence served (successes) . */
  sequence?: bigint;
  error?: string;
  /** Seconds until the next scheduled refresh. */
  nextInSeconds: number;
}

interface Tracked {
  spec: RelationshipSpec;
  isStatic: boolean;
  state: FederationRefreshState;
  failures: number;
  timer: NodeJS.Timeout | undefined;
  inFlight: Promise<RefreshOutcome> | undefined;
}

class Refused extends Error {}

function sameSpec(a: RelationshipSpec, b: RelationshipSpec): boolean {
  return a.bundleEndpointUrl === b.bundleEndpointUrl && a.bundleEndpointProfile === b.bundleEndpointProfile && a.endpointSpiffeId === b.endpointSpiffeId;
}

export class BundleRefresher {
  private readonly tracked = new Map<TrustDomain, Tracked>();
  private readonly ds: DataStore;
  private readonly log: RefresherLogger;
  private readonly now: () => Date;
  private readonly minRefresh: number;
  private readonly retryFirstMs: number;
  private readonly retryMaxMs: number;
  private readonly reloadMs: number;
  private reloadTimer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly stopping = new AbortController();

  constructor(private readonly o: BundleRefresherOptions) {
    this.ds = o.datastore;
    this.log = o.logger;
    this.now = o.now ?? (() => new Date());
    this.minRefresh = o.timing?.minRefreshSeconds ?? MIN_REFRESH_SECONDS;
    this.retryFirstMs = o.timing?.retryFirstMs ?? RETRY_FIRST_MS;
    this.retryMaxMs = o.timing?.retryMaxMs ?? RETRY_MAX_MS;
    this.reloadMs = o.timing?.reloadMs ?? RELOAD_MS;
    for (const spec of o.staticRelationships ?? []) {
      this.tracked.set(spec.trustDomain, { spec, isStatic: true, state: { ...NO_REFRESH }, failures: 0, timer: undefined, inFlight: undefined });
    }
  }

  /** Loads the dynamic relationships and schedules a first refresh of every relationship now. */
  async start(): Promise<void> {
    this.running = true;
    try {
      await this.reload();
    } catch (err) {
      this.log.warn({ err }, 'federation: loading the federation relationships failed; retrying later');
    }
    for (const t of this.tracked.values()) if (t.timer === undefined && t.inFlight === undefined) this.schedule(t, 0);
    this.reloadTimer = setInterval(() => {
      this.reload().catch((err: unknown) => this.log.warn({ err }, 'federation: reloading the federation relationships failed'));
    }, this.reloadMs);
    this.reloadTimer.unref();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.stopping.abort();
    if (this.reloadTimer !== undefined) clearInterval(this.reloadTimer);
    for (const t of this.tracked.values()) {
      if (t.timer !== undefined) clearTimeout(t.timer);
      t.timer = undefined;
    }
    await Promise.allSettled([...this.tracked.values()].map((t) => t.inFlight));
  }

  /** Whether the trust domain's relationship comes from the config. */
  isStatic(td: TrustDomain): boolean {
    return this.tracked.get(td)?.isStatic === true;
  }

  /** The static relationships (config), sorted by trust domain. */
  staticRelationships(): RelationshipSpec[] {
    return [...this.tracked.values()]
      .filter((t) => t.isStatic)
      .map((t) => t.spec)
      .sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : a.trustDomain > b.trustDomain ? 1 : 0));
  }

  /** What this server's refresher last did for the trust domain (undefined: not a relationship). */
  refreshState(td: TrustDomain): FederationRefreshState | undefined {
    const t = this.tracked.get(td);
    return t === undefined ? undefined : { ...t.state };
  }

  /** Re-reads the dynamic relationships: new ones are refreshed now, changed ones now, deleted ones forgotten. */
  async reload(): Promise<void> {
    const stored = await this.ds.listFederationRelationships();
    const seen = new Set<TrustDomain>();
    for (const r of stored) {
      seen.add(r.trustDomain);
      const spec: RelationshipSpec = { trustDomain: r.trustDomain, bundleEndpointUrl: r.bundleEndpointUrl, bundleEndpointProfile: r.bundleEndpointProfile, endpointSpiffeId: r.endpointSpiffeId };
      const t = this.tracked.get(r.trustDomain);
      if (t?.isStatic === true) continue; // the config's wins
      if (t === undefined) {
        const nt: Tracked = { spec, isStatic: false, state: { ...r.refresh }, failures: 0, timer: undefined, inFlight: undefined };
        this.tracked.set(r.trustDomain, nt);
        if (this.running) this.schedule(nt, 0);
      } else if (!sameSpec(t.spec, spec)) {
        t.spec = spec;
        t.failures = 0;
        if (this.running) this.schedule(t, 0);
      }
    }
    for (const [td, t] of this.tracked) {
      if (t.isStatic || seen.has(td)) continue;
      if (t.timer !== undefined) clearTimeout(t.timer);
      this.tracked.delete(td);
      this.o.metrics?.forget(td);
    }
  }

  /** Refreshes now (joining a refresh already running). Throws when the trust domain has no relationship. */
  async refreshNow(td: TrustDomain): Promise<RefreshOutcome> {
    let t = this.tracked.get(td);
    if (t === undefined) {
      await this.reload();
      t = this.tracked.get(td);
    }
    if (t === undefined) throw new Error(`no federation relationship with trust domain "${td}"`);
    return this.run(t);
  }

  private schedule(t: Tracked, delayMs: number): void {
    if (t.timer !== undefined) clearTimeout(t.timer);
    t.timer = setTimeout(() => {
      t.timer = undefined;
      void this.run(t);
    }, delayMs);
    t.timer.unref();
  }

  private run(t: Tracked): Promise<RefreshOutcome> {
    if (t.inFlight !== undefined) return t.inFlight;
    const p = this.refreshOnce(t).finally(() => {
      t.inFlight = undefined;
    });
    t.inFlight = p;
    return p;
  }

  private seconds(): number {
    return Math.floor(this.now().getTime() / 1000);
  }

  /** The held X.509 authorities of the endpoint SPIFFE ID's trust domain, from the datastore. */
  private async heldBundles(spec: RelationshipSpec): Promise<X509BundleSource | undefined> {
    if (spec.bundleEndpointProfile !== 'https_spiffe') return undefined;
    const td = trustDomainOf(parseSpiffeId(spec.endpointSpiffeId));
    const stored = await this.ds.getBundle(td);
    if (stored === undefined) return { getX509Authorities: () => undefined };
    const held = parseBundle(td, stored.document);
    const roots = held.x509Authorities();
    return { getX509Authorities: (x) => (x === td ? roots : undefined) };
  }

  private async refreshOnce(t: Tracked): Promise<RefreshOutcome> {
    const { spec } = t;
    const td = spec.trustDomain;
    const attemptAt = this.seconds();
    let outcome: RefreshOutcome;
    try {
      const fetched = await fetchBundle({
        ...this.o.fetch,
        signal: this.stopping.signal,
        trustDomain: td,
        url: spec.bundleEndpointUrl,
        profile: spec.bundleEndpointProfile,
        endpointSpiffeId: spec.endpointSpiffeId,
        ...(spec.bundleEndpointProfile === 'https_spiffe' ? { heldBundles: await this.heldBundles(spec) } : {}),
      });
      const updated = await this.store(td, fetched);
      t.failures = 0;
      t.state = { lastAttemptAt: attemptAt, lastSuccessAt: this.seconds(), lastError: '', lastSequence: fetched.sequence };
      const hint = fetched.refreshHintSeconds ?? DEFAULT_REFRESH_SECONDS;
      const next = Math.min(MAX_REFRESH_SECONDS, Math.max(this.minRefresh, hint));
      outcome = { trustDomain: td, ok: true, updated, sequence: fetched.sequence, nextInSeconds: next };
      if (updated) this.log.info({ trust_domain: td, sequence: fetched.sequence.toString(10) }, 'federation: stored a new bundle');
      else this.log.debug?.({ trust_domain: td, sequence: fetched.sequence.toString(10) }, 'federation: bundle unchanged');
    } catch (err) {
      const message = err instanceof BundleFetchError || err instanceof Refused ? err.message : `refresh failed: ${(err as Error)?.message ?? String(err)}`;
      t.failures++;
      t.state = { ...t.state, lastAttemptAt: attemptAt, lastError: message };
      const backoff = Math.min(this.retryMaxMs, this.retryFirstMs * 2 ** Math.min(t.failures - 1, 20));
      outcome = { trustDomain: td, ok: false, updated: false, error: message, nextInSeconds: Math.ceil(backoff / 1000) };
      this.log.warn({ trust_domain: td, url: spec.bundleEndpointUrl, failures: t.failures }, `federation: bundle refresh failed, keeping the bundle held: ${message}`);
    }
    this.o.metrics?.record(td, t.state, outcome.ok);
    if (!t.isStatic) {
      await this.ds.setFederationRefreshState(td, t.state).catch((err: unknown) => this.log.warn({ err, trust_domain: td }, 'federation: recording the refresh state failed'));
    }
    if (this.running && this.tracked.get(td) === t) {
      const jitter = 0.9 + Math.random() * 0.2;
      this.schedule(t, Math.round(outcome.nextInSeconds * 1000 * jitter));
    }
    return outcome;
  }

  /** Stores the fetched bundle unless the stored one is as new or newer; returns whether it wrote. */
  private async store(td: TrustDomain, fetched: Bundle): Promise<boolean> {
    const document = marshalBundle(fetched);
    const seq = fetched.sequence;
    let wrote = false;
    let refused: Refused | undefined;
    const refuse = (message: string): never => {
      refused = new Refused(message);
      throw refused;
    };
    try {
      await this.ds.updateBundle(
      td,
        (current: StoredBundle | undefined) => {
          wrote = false;
          refused = undefined;
          if (current !== undefined && seq === 0n) {
            // No spiffe_sequence (or 0): the document carries no order. Same keys: nothing to do;
            // other keys: stored under the next local sequence, so agents see a change.
            fetched.sequence = current.sequence;
            if (marshalBundle(fetched) === current.document) return {};
            fetched.sequence = current.sequence < MAX_SEQUENCE ? current.sequence + 1n : MAX_SEQUENCE;
            if (fetched.sequence === current.sequence) refuse(`the held sequence of ${td} is at its maximum: cannot store a bundle without a sequence`);
            wrote = true;
            return { bundle: { trustDomain: td, document: marshalBundle(fetched), sequence: fetched.sequence } };
          }
          if (current !== undefined) {
            if (seq < current.sequence) refuse(`the bundle endpoint served sequence ${seq}, older than the held sequence ${current.sequence}: refused, keeping the held bundle`);
            if (seq === current.sequence) {
              if (current.document === document || sameKeys(td, current.document, fetched)) return {};
              refuse(`the bundle endpoint served other keys under the held sequence ${seq}: refused, keeping the held bundle (the sequence must grow when the bundle changes)`);
            }
          }
          wrote = true;
          return { bundle: { trustDomain: td, document, sequence: seq } };
        },
        this.seconds(),
      );
    } catch (err) {
      // The store wraps what the callback throws; the refusal is ours to report as it is.
      if (refused !== undefined) throw refused;
      throw err;
    }
    return wrote;
  }
}

/**
 * Whether the stored document holds the same authorities as `fetched` (X.509 CAs and JWT keys),
 * whatever its refresh hint: a bundle bootstrapped with `bundle set` from `bundle show -format
 * spiffe` carries no refresh hint while the endpoint serves one, and is the same bundle.
 */
function sameKeys(td: TrustDomain, storedDocument: string, fetched: Bundle): boolean {
  let held: Bundle;
  try {
    held = parseBundle(td, storedDocument);
  } catch {
    return false;
  }
  held.refreshHintSeconds = fetched.refreshHintSeconds;
  return held.equals(fetched);
}

/**
 * The change feed: turns committed datastore events into pushes. It keeps the in-memory
 * authorization cache in step with the datastore and tells listeners which agents' authorized
 * sets changed (entries), which agents changed (node records: banned, evicted, renewed) and
 * which bundles changed. Events are processed strictly in order, one batch at a time.
 *
 * Push path: a write commits -> datastore.onChange (same process, right after commit) -> this
 * feed reads the new events -> AuthorizationCache.applyChange -> listeners -> agent streams.
 * A slow poll (pollIntervalMs) backs this up for writers in other processes.
 */
import type { SpiffeId } from '../../spiffe/id.js';
import type { ChangeEvent, DataStore, RegistrationEntry } from '../datastore/types.js';
import type { AgentChange, AuthorizationCache } from './authorized.js';

export interface FeedListener {
  /** Agents whose authorized entry sets changed, as of `revision`. */
  entries?(changes: AgentChange[], revision: number): void;
  /** An attested node record changed or was deleted. */
  node?(agentId: SpiffeId, revision: number): void;
  /** A bundle (own or federated) changed or was deleted. */
  bundle?(trustDomain: string, revision: number): void;
}

export interface FeedLogger {
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

const BATCH = 1000;

export class ChangeFeed {
  readonly #datastore: DataStore;
  readonly #cache: AuthorizationCache;
  readonly #log: FeedLogger;
  readonly #listeners = new Set<FeedListener>();
  #revision = 0;
  #running: Promise<void> | undefined;
  #again = false;
  #unsubscribe: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: { datastore: DataStore; cache: AuthorizationCache; logger: FeedLogger }) {
    this.#datastore = opts.datastore;
    this.#cache = opts.cache;
    this.#log = opts.logger;
  }

  /** The last processed event id: what every push so far reflects. */
  get revision(): number {
    return this.#revision;
  }

  /**
   * Loads every entry into the cache and starts following the datastore. The event position is
   * read before the entries, so events that race with the load are applied again afterwards
   * (applying an event whose result is already loaded changes nothing).
   */
  async start(opts: { pollIntervalMs?: number } = {}): Promise<{ entries: number }> {
    this.#revision = await this.#datastore.latestEventId();
    const entries: RegistrationEntry[] = [];
    let token = '';
    do {
      const page = await this.#datastore.listEntries(undefined, { token, size: 10000 });
      entries.push(...page.items);
      token = page.nextToken;
    } while (token !== '');
    this.#cache.reload(entries);
    this.#unsubscribe = this.#datastore.onChange(() => void this.poke());
    const every = opts.pollIntervalMs ?? 5000;
    if (every > 0) {
      this.#timer = setInterval(() => void this.poke(), every);
      this.#timer.unref();
    }
    await this.poke();
    return { entries: entries.length };
  }

  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  subscribe(listener: FeedListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Processes every event committed so far; resolves when caught up. Safe to call any time. */
  poke(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.#drain();
        } while (this.#again);
      } catch (err) {
        this.#log.error({ err }, 'change feed processing failed; will retry on the next change or poll');
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Entries whose expiry passed leave the agents' sets (call periodically). */
  pruneExpired(): void {
    const changes = this.#cache.pruneExpired();
    if (changes.length > 0) this.#emitEntries(changes, this.#revision);
  }

  async #drain(): Promise<void> {
    for (;;) {
      const events = await this.#datastore.listEventsSince(this.#revision, BATCH);
      if (events.length === 0) return;
      for (const ev of events) await this.#apply(ev);
    }
  }

  async #apply(ev: ChangeEvent): Promise<void> {
    switch (ev.kind) {
      case 'entry_created':
      case 'entry_updated':
      case 'entry_deleted': {
        const before = this.#cache.index.get(ev.key);
        const after = ev.kind === 'entry_deleted' ? undefined : await this.#datastore.getEntry(ev.key);
        const changes = this.#cache.applyChange(before, after);
        this.#revision = ev.id;
        if (changes.length > 0) this.#emitEntries(changes, ev.id);
        break;
      }
      case 'node_created':
      case 'node_updated':
      case 'node_deleted':
        this.#revision = ev.id;
        for (const l of this.#listeners) this.#guard(() => l.node?.(ev.key as SpiffeId, ev.id));
        break;
      case 'bundle_updated':
      case 'bundle_deleted':
        this.#revision = ev.id;
        for (const l of this.#listeners) this.#guard(() => l.bundle?.(ev.key, ev.id));
        break;
      default:
        this.#revision = ev.id;
    }
  }

  #emitEntries(changes: AgentChange[], revision: number): void {
    for (const l of this.#listeners) this.#guard(() => l.entries?.(changes, revision));
  }

  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err }, 'change feed listener failed');
    }
  }
}

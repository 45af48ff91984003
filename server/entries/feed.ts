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
import { isDataStoreUnavailable, type ChangeEvent, type DataStore, type RegistrationEntry } from '../datastore/types.js';
import type { AgentChange, AuthorizationCache } from './authcache.js';

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
    const entries = await this.#datastore.listAllEntries();
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
        // A datastore outage is logged once by the datastore; the feed resumes from its position
        // when it is back (the events committed meanwhile are read then, none twice).
        if (isDataStoreUnavailable(err)) this.#log.debug({ err }, 'change feed paused: the datastore is unavailable');
        else this.#log.error({ err }, 'change feed processing failed; will retry on the next change or poll');
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
      // The current version of every entry the batch created or updated, in one read.
      const ids: string[] = [];
      for (const ev of events) if (ev.kind === 'entry_created' || ev.kind === 'entry_updated') ids.push(ev.key);
      const current = ids.length > 0 ? await this.#datastore.getEntries(ids) : new Map<string, RegistrationEntry>();
      try {
        for (const ev of events) this.#apply(ev, current);
      } finally {
        this.#flushPending();
      }
    }
  }

  /**
   * Entry changes of the events read in one batch, merged per agent and entry, so a burst of
   * writes reaches each agent as one change (one push) instead of one per event. Flushed at the
   * end of every batch and before any node or bundle event, so listeners still see changes in
   * commit order. A flush reports the last event processed before it as its revision.
   */
  #pending = new Map<SpiffeId, Map<string, { kind: 'added' | 'updated' | 'removed'; entry: RegistrationEntry }>>();

  #addPending(changes: AgentChange[]): void {
    for (const ch of changes) {
      let m = this.#pending.get(ch.agentId);
      if (!m) this.#pending.set(ch.agentId, (m = new Map()));
      const put = (kind: 'added' | 'updated' | 'removed', entry: RegistrationEntry): void => {
        const prev = m.get(entry.id)?.kind;
        if (prev === undefined) m.set(entry.id, { kind, entry });
        else if (kind === 'removed') {
          // Added and removed within the batch: the agent never needs to hear of it.
          if (prev === 'added') m.delete(entry.id);
          else m.set(entry.id, { kind, entry });
        } else if (prev === 'added') m.set(entry.id, { kind: 'added', entry });
        // Removed then back (or updated twice): the agent keeps it with the new content.
        else m.set(entry.id, { kind: 'updated', entry });
      };
      for (const e of ch.removed) put('removed', e);
      for (const e of ch.added) put('added', e);
      for (const e of ch.updated) put('updated', e);
    }
  }

  #flushPending(): void {
    if (this.#pending.size === 0) return;
    const changes: AgentChange[] = [];
    for (const [agentId, m] of this.#pending) {
      const ch: AgentChange = { agentId, added: [], updated: [], removed: [] };
      for (const { kind, entry } of m.values()) ch[kind].push(entry);
      if (ch.added.length + ch.updated.length + ch.removed.length > 0) changes.push(ch);
    }
    this.#pending = new Map();
    if (changes.length > 0) this.#emitEntries(changes, this.#revision);
  }

  /**
   * `current`: the entries' versions read after the events were listed. An entry event applies
   * the entry's current version (absent: deleted since), as reading it per event would: later
   * events for the same entry then change nothing, and the cache ends at the current state.
   */
  #apply(ev: ChangeEvent, current: ReadonlyMap<string, RegistrationEntry>): void {
    switch (ev.kind) {
      case 'entry_created':
      case 'entry_updated':
      case 'entry_deleted': {
        const before = this.#cache.index.get(ev.key);
        const after = ev.kind === 'entry_deleted' ? undefined : current.get(ev.key);
        const changes = this.#cache.applyChange(before, after);
        this.#revision = ev.id;
        if (changes.length > 0) this.#addPending(changes);
        break;
      }
      case 'node_created':
      case 'node_updated':
      case 'node_deleted':
        this.#flushPending();
        this.#revision = ev.id;
        for (const l of this.#listeners) this.#guard(() => l.node?.(ev.key as SpiffeId, ev.id));
        break;
      case 'bundle_updated':
      case 'bundle_deleted':
        this.#flushPending();
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

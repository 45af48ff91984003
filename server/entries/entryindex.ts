/**
 * EntryIndex: every registration entry in memory, indexed by ID, parent ID and selector, and
 * the answer to "which entries may this agent receive" with SPIRE's semantics
 * (pkg/server/authorizedentries). The agent API serves from it through AuthorizationCache
 * (authcache.ts), which keeps each connected agent's answer up to date.
 *
 * Authorization rules (`EntryIndex.authorizedEntries`):
 * 1. Direct: entries whose parentId is the agent's SPIFFE ID.
 * 2. Node aliases: an entry whose parentId is the server ID `spiffe://<td>/spire/server` is a
 *    node alias. The agent belongs to alias A when ALL of A's selectors are among the agent's
 *    node selectors (subset match; an alias without selectors matches nobody). Entries parented
 *    by A's spiffeId are then the agent's. The alias entry itself is never served (SPIRE: it
 *    names a group of nodes, not a workload).
 * 3. Chains: an entry whose parentId is the spiffeId of an entry already authorized to the agent
 *    is authorized too, to any depth (downstream / nested parents). The walk remembers every ID
 *    it has expanded, so cycles terminate and each entry appears once.
 * 4. Expired entries (entryExpiry != 0 and entryExpiry < now) count as absent: not served, not
 *    a link in a chain, not a matching alias.
 * Entries are matched by exact SPIFFE ID string; IDs are parsed values (spiffe/id.ts).
 * `spiffe://<td>/spire/server` is never expanded as a parent except to find aliases, so nothing
 * is served "under the server".
 *
 * Entries handed to the index are kept by reference and returned as is: treat them as
 * immutable (replace them with `upsert`, never edit in place). Everything here is synchronous.
 *
 * Also here: the expiry rule (`isExpired`) and the small map-of-sets helpers the cache shares.
 */
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { RegistrationEntry } from '../datastore/types.js';
import { selectorMapKey as selKey, type Selector } from '../../common/selector.js';
import { serverIdOf } from '../../common/spireids.js';

/** Unix seconds. */
export type Clock = () => number;

const systemClock: Clock = () => Math.floor(Date.now() / 1000);

/** The server's own SPIFFE ID; entries parented by it are node aliases. */
export { serverIdOf };

/** True when the entry has expired at `now` (entryExpiry set and in the past). */
export function isExpired(entry: RegistrationEntry, now: number): boolean {
  return entry.entryExpiry !== 0 && entry.entryExpiry < now;
}

/** What was indexed for an entry, captured at insertion so removal never depends on the object. */
interface Rec {
  entry: RegistrationEntry;
  parentId: string;
  alias: boolean;
  selKeys: string[];
}

/** Adds `value` to the set at `key`, creating the set. */
export function addTo<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}

/** Removes `value` from the set at `key`, dropping the set once empty. */
export function deleteFrom<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

export interface EntryIndexOptions {
  /** The server's trust domain: node aliases are entries parented by its `/spire/server` ID. */
  trustDomain: TrustDomain;
  /** Unix seconds; decides expiry. Default: the system clock. */
  now?: Clock;
}

/** All registration entries, indexed by ID, parent ID and selector. */
export class EntryIndex {
  readonly trustDomain: TrustDomain;
  /** `spiffe://<td>/spire/server`. */
  readonly serverId: SpiffeId;
  readonly now: Clock;
  private readonly byId = new Map<string, Rec>();
  /** parentId -> entries (aliases sit under serverId). */
  private readonly byParent = new Map<string, Set<Rec>>();
  /**
   * selector -> entries having it (aliases included). Built on the first bySelectorOf call and
   * maintained from then on: nothing on the serving path needs it, and building it for every
   * entry at startup cost ~15% of loading 100k entries.
   */
  private bySelector: Map<string, Set<Rec>> | undefined;
  /** selector -> node alias entries having it. */
  private readonly aliasesBySelector = new Map<string, Set<Rec>>();
  /** Entries with an expiry set. */
  private readonly expiring = new Map<string, Rec>();

  constructor(options: EntryIndexOptions) {
    this.trustDomain = options.trustDomain;
    this.serverId = serverIdOf(options.trustDomain);
    this.now = options.now ?? systemClock;
  }

  /** Replaces the whole content. Later duplicates of an ID win. */
  load(entries: Iterable<RegistrationEntry>): void {
    this.byId.clear();
    this.byParent.clear();
    this.bySelector = undefined;
    this.aliasesBySelector.clear();
    this.expiring.clear();
    for (const e of entries) this.upsert(e);
  }

  /** Inserts or replaces the entry with this ID; returns the previous version. */
  upsert(entry: RegistrationEntry): RegistrationEntry | undefined {
    const previous = this.remove(entry.id);
    const rec: Rec = {
      entry,
      parentId: entry.parentId,
      alias: entry.parentId === this.serverId,
      selKeys: entry.selectors.map(selKey),
    };
    this.byId.set(entry.id, rec);
    addTo(this.byParent, rec.parentId, rec);
    if (this.bySelector !== undefined) for (const k of rec.selKeys) addTo(this.bySelector, k, rec);
    if (rec.alias) for (const k of rec.selKeys) addTo(this.aliasesBySelector, k, rec);
    if (entry.entryExpiry !== 0) this.expiring.set(entry.id, rec);
    return previous;
  }

  /** Removes the entry; returns it, or undefined when unknown. */
  remove(id: string): RegistrationEntry | undefined {
    const rec = this.byId.get(id);
    if (rec === undefined) return undefined;
    this.byId.delete(id);
    deleteFrom(this.byParent, rec.parentId, rec);
    if (this.bySelector !== undefined) for (const k of rec.selKeys) deleteFrom(this.bySelector, k, rec);
    if (rec.alias) for (const k of rec.selKeys) deleteFrom(this.aliasesBySelector, k, rec);
    this.expiring.delete(id);
    return rec.entry;
  }

  get(id: string): RegistrationEntry | undefined {
    return this.byId.get(id)?.entry;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get size(): number {
    return this.byId.size;
  }

  *values(): IterableIterator<RegistrationEntry> {
    for (const rec of this.byId.values()) yield rec.entry;
  }

  /** Whether the entry is a node alias (parented by this trust domain's server ID). */
  isNodeAlias(entry: RegistrationEntry): boolean {
    return entry.parentId === this.serverId;
  }

  /** Every entry (expired ones included) whose parentId is `parentId`. */
  byParentId(parentId: SpiffeId): RegistrationEntry[] {
    const set = this.byParent.get(parentId);
    return set === undefined ? [] : Array.from(set, (r) => r.entry);
  }

  /** Every entry (expired ones included) that has this selector among its selectors. */
  bySelectorOf(selector: Selector): RegistrationEntry[] {
    if (this.bySelector === undefined) {
      this.bySelector = new Map();
      for (const rec of this.byId.values()) for (const k of rec.selKeys) addTo(this.bySelector, k, rec);
    }
    const set = this.bySelector.get(selKey(selector));
    return set === undefined ? [] : Array.from(set, (r) => r.entry);
  }

  /**
   * The entries an agent would receive straight from this parent ID: non-alias, unexpired
   * children. Empty for the server ID (aliases are never served).
   */
  childrenOf(parentId: string, now: number = this.now()): RegistrationEntry[] {
    if (parentId === this.serverId) return [];
    const set = this.byParent.get(parentId);
    if (set === undefined) return [];
    const out: RegistrationEntry[] = [];
    for (const rec of set) if (!isExpired(rec.entry, now)) out.push(rec.entry);
    return out;
  }

  /** Calls `fn` for each of childrenOf(parentId, now), without building the array. */
  forEachChild(parentId: string, now: number, fn: (entry: RegistrationEntry) => void): void {
    if (parentId === this.serverId) return;
    const set = this.byParent.get(parentId);
    if (set === undefined) return;
    for (const rec of set) if (!isExpired(rec.entry, now)) fn(rec.entry);
  }

  /** Unexpired node aliases whose selectors are all among `nodeSelectors`. */
  matchingAliases(nodeSelectors: readonly Selector[], now: number = this.now()): RegistrationEntry[] {
    const keys = keySet(nodeSelectors);
    const evaluated = new Set<Rec>();
    const out: RegistrationEntry[] = [];
    for (const k of keys) {
      const set = this.aliasesBySelector.get(k);
      if (set === undefined) continue;
      for (const rec of set) {
        if (evaluated.has(rec)) continue;
        evaluated.add(rec);
        if (isExpired(rec.entry, now)) continue;
        if (rec.selKeys.every((s) => keys.has(s))) out.push(rec.entry);
      }
    }
    return out;
  }

  /**
   * The entries the agent may receive (rules in the file comment), each once, in walk order
   * (direct entries first, then alias descendants, breadth first).
   */
  authorizedEntries(agentId: SpiffeId, nodeSelectors: readonly Selector[]): RegistrationEntry[] {
    const now = this.now();
    const roots: string[] = [agentId];
    for (const alias of this.matchingAliases(nodeSelectors, now)) roots.push(alias.spiffeId);
    const out: RegistrationEntry[] = [];
    this.walk(roots, new Set<string>(), now, (e) => out.push(e));
    return out;
  }

  /**
   * Breadth-first walk from `roots` over parent -> child links, skipping IDs already in
   * `expanded` (and adding the ones it expands). Calls `visit` once per reached entry.
   */
  walk(roots: Iterable<string>, expanded: Set<string>, now: number, visit: (entry: RegistrationEntry) => void): void {
    const queue: string[] = [];
    for (const r of roots) {
      if (expanded.has(r)) continue;
      expanded.add(r);
      queue.push(r);
    }
    for (let i = 0; i < queue.length; i++) {
      const parent = queue[i]!;
      if (parent === this.serverId) continue;
      const set = this.byParent.get(parent);
      if (set === undefined) continue;
      for (const rec of set) {
        const e = rec.entry;
        if (isExpired(e, now)) continue;
        visit(e);
        if (!expanded.has(e.spiffeId)) {
          expanded.add(e.spiffeId);
          queue.push(e.spiffeId);
        }
      }
    }
  }

  /** Entries that have expired at `now` (still held until removed). */
  expiredEntries(now: number = this.now()): RegistrationEntry[] {
    const out: RegistrationEntry[] = [];
    for (const rec of this.expiring.values()) if (isExpired(rec.entry, now)) out.push(rec.entry);
    return out;
  }
}

/** The selectors' index keys (common/selector.ts selectorMapKey), as a set. */
export function keySet(selectors: readonly Selector[]): Set<string> {
  const s = new Set<string>();
  for (const sel of selectors) s.add(selKey(sel));
  return s;
}

/**
 * The in-memory authorization index the agent API serves from: which registration entries each
 * agent may receive, with SPIRE's semantics (pkg/server/authorizedentries).
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
 * `AuthorizationCache` keeps, per connected agent, its authorized set up to date as entries
 * change and reports exactly which agents gained, lost or saw an update of which entries, so the
 * agent API pushes only to those agents. Internally an agent's set is the union of shared
 * "closures": the entries reachable from one root ID (the agent's ID, or an alias's spiffeId).
 * Alias closures are computed once and shared by every agent in the alias, so 1,000 agents in
 * one cluster alias with 10,000 workload entries cost 10,000 entries, not 10 million.
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

function addTo<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}

function deleteFrom<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
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

function keySet(selectors: readonly Selector[]): Set<string> {
  const s = new Set<string>();
  for (const sel of selectors) s.add(selKey(sel));
  return s;
}

/** Field-by-field equality of two entry versions (so a no-op re-delivery is not an "update"). */
export function sameEntry(a: RegistrationEntry, b: RegistrationEntry): boolean {
  if (a === b) return true;
  if (
    a.id !== b.id ||
    a.spiffeId !== b.spiffeId ||
    a.parentId !== b.parentId ||
    a.x509SvidTtl !== b.x509SvidTtl ||
    a.jwtSvidTtl !== b.jwtSvidTtl ||
    a.admin !== b.admin ||
    a.downstream !== b.downstream ||
    a.hint !== b.hint ||
    a.entryExpiry !== b.entryExpiry ||
    a.revisionNumber !== b.revisionNumber ||
    a.createdAt !== b.createdAt ||
    a.updatedAt !== b.updatedAt ||
    a.selectors.length !== b.selectors.length ||
    a.dnsNames.length !== b.dnsNames.length ||
    a.federatesWith.length !== b.federatesWith.length
  ) {
    return false;
  }
  for (let i = 0; i < a.selectors.length; i++) {
    const x = a.selectors[i]!;
    const y = b.selectors[i]!;
    if (x.type !== y.type || x.value !== y.value) return false;
  }
  for (let i = 0; i < a.dnsNames.length; i++) if (a.dnsNames[i] !== b.dnsNames[i]) return false;
  for (let i = 0; i < a.federatesWith.length; i++) if (a.federatesWith[i] !== b.federatesWith[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// AuthorizationCache

/**
 * How one agent's authorized set changed. The lists are never all empty, except in the snapshot
 * `setAgent` returns for a new agent (an agent with nothing to serve still gets its snapshot).
 */
export interface AgentChange {
  agentId: SpiffeId;
  /** Entries the agent may now receive (current versions). */
  added: RegistrationEntry[];
  /** Entries the agent keeps whose content changed (current versions). */
  updated: RegistrationEntry[];
  /** Entries the agent may no longer receive (last known versions). */
  removed: RegistrationEntry[];
}

/** Entries reachable from one root ID; shared by every agent that has this root. */
interface Closure {
  root: string;
  entries: Map<string, RegistrationEntry>;
  /** Reached IDs -> how many of (root, entries) have that ID: the parents whose children belong here. */
  reached: Map<string, number>;
  agents: Set<AgentState>;
}

interface AgentState {
  id: SpiffeId;
  selectors: readonly Selector[];
  selKeys: Set<string>;
  /** Matching node alias entry IDs. */
  aliasIds: Set<string>;
  /** Closure roots: the agent ID and the spiffeIds of its aliases. */
  roots: Set<string>;
}

interface Delta {
  added: Set<string>;
  removed: Set<string>;
}

/** The mutation being applied: entry E from version `before` to version `after`. */
interface Mutation {
  id: string;
  before: RegistrationEntry | undefined;
  after: RegistrationEntry | undefined;
}

/**
 * Per connected agent, its current authorized entry set, kept up to date incrementally.
 *
 * All entry changes must go through `applyChange` (or `upsertEntry` / `removeEntry` /
 * `pruneExpired` / `reload`), which also updates the underlying EntryIndex; mutating the index
 * directly leaves the cache stale. Time only acts through `pruneExpired()`: call it
 * periodically (e.g. every few seconds) so entries that reach their expiry leave agents' sets.
 *
 * Cost: a change to an entry touches only the closures whose reached IDs include its old or new
 * parentId. Adding an entry, or removing / updating a leaf entry (no children), is O(1) per
 * closure plus a walk of whatever the new entry newly makes reachable. Removing or re-parenting
 * a "middle" link (an entry other entries hang from) recomputes the affected closures. Alias
 * changes recompute the alias memberships of the agents whose node selectors match the old or
 * new alias selectors. Reporting costs O(changed entries x the agent's roots) per affected
 * agent (an agent's roots: its own ID plus one per matching alias).
 */
export class AuthorizationCache {
  readonly index: EntryIndex;
  private readonly agents = new Map<string, AgentState>();
  private readonly agentsBySelector = new Map<string, Set<AgentState>>();
  private readonly closures = new Map<string, Closure>();
  /**
   * Reached ID -> the closures reaching it. Most IDs are reached by one closure (a workload
   * entry's spiffeId under one agent), so a single closure is stored as is and a Set only once
   * a second one arrives: a reconnect storm of 1,000 agents x 100 entries then allocates no
   * 100,000 one-element Sets.
   */
  private readonly closuresByReached = new Map<string, Closure | Set<Closure>>();

  constructor(index: EntryIndex) {
    this.index = index;
  }

  // ---- agents

  /** Connected agents' IDs. */
  agentIds(): SpiffeId[] {
    return Array.from(this.agents.values(), (a) => a.id);
  }

  hasAgent(agentId: SpiffeId): boolean {
    return this.agents.has(agentId);
  }

  /**
   * Starts tracking an agent (or changes its node selectors, e.g. after re-attestation).
   * Returns what changed: for a new agent, `added` is its whole set (the snapshot to send);
   * undefined when an existing agent's set did not change.
   */
  setAgent(agentId: SpiffeId, nodeSelectors: readonly Selector[]): AgentChange | undefined {
    const now = this.index.now();
    const selKeys = keySet(nodeSelectors);
    let agent = this.agents.get(agentId);
    if (agent === undefined) {
      agent = { id: agentId, selectors: nodeSelectors.slice(), selKeys, aliasIds: new Set(), roots: new Set() };
      this.agents.set(agentId, agent);
      for (const k of selKeys) addTo(this.agentsBySelector, k, agent);
      for (const alias of this.index.matchingAliases(nodeSelectors, now)) agent.aliasIds.add(alias.id);
      agent.roots = this.rootsOf(agent);
      for (const r of agent.roots) this.acquire(r, agent, now);
      const added = this.entriesOfAgent(agent);
      return { agentId, added, updated: [], removed: [] };
    }
    for (const k of agent.selKeys) deleteFrom(this.agentsBySelector, k, agent);
    agent.selectors = nodeSelectors.slice();
    agent.selKeys = selKeys;
    for (const k of selKeys) addTo(this.agentsBySelector, k, agent);
    agent.aliasIds = new Set(this.index.matchingAliases(nodeSelectors, now).map((a) => a.id));
    const oldRoots = agent.roots;
    const newRoots = this.rootsOf(agent);
    if (sameSet(oldRoots, newRoots)) return undefined;
    const released = this.swapRoots(agent, newRoots, now);
    const change = this.diffAgent(agent, oldRoots, newRoots, new Map(), undefined);
    this.releaseUnused(released);
    return change;
  }

  /** Stops tracking an agent (disconnected, evicted, banned). Returns whether it was tracked. */
  removeAgent(agentId: SpiffeId): boolean {
    const agent = this.agents.get(agentId);
    if (agent === undefined) return false;
    this.agents.delete(agentId);
    for (const k of agent.selKeys) deleteFrom(this.agentsBySelector, k, agent);
    const released: Closure[] = [];
    for (const r of agent.roots) {
      const c = this.closures.get(r);
      if (c === undefined) continue;
      c.agents.delete(agent);
      released.push(c);
    }
    this.releaseUnused(released);
    return true;
  }

  /** The agent's current authorized entries (undefined when the agent is not tracked). */
  entriesFor(agentId: SpiffeId): RegistrationEntry[] | undefined {
    const agent = this.agents.get(agentId);
    return agent === undefined ? undefined : this.entriesOfAgent(agent);
  }

  /**
   * Entry `entryId` if it is in the set of tracked agent `agentId` (as entriesFor(agentId)
   * would list it), without building the set; `null` when the agent is not tracked.
   */
  entryFor(agentId: SpiffeId, entryId: string): RegistrationEntry | undefined | null {
    const agent = this.agents.get(agentId);
    if (agent === undefined) return null;
    for (const r of agent.roots) {
      const e = this.closures.get(r)?.entries.get(entryId);
      if (e !== undefined) return e;
    }
    return undefined;
  }

  // ---- entries

  /** Creates or updates an entry. See applyChange. */
  upsertEntry(entry: RegistrationEntry): AgentChange[] {
    return this.applyChange(this.index.get(entry.id), entry);
  }

  /** Deletes an entry by ID. See applyChange. */
  removeEntry(id: string): AgentChange[] {
    const before = this.index.get(id);
    return before === undefined ? [] : this.applyChange(before, undefined);
  }

  /**
   * Applies one entry change (create: before undefined; delete: after undefined; update: both,
   * same ID) to the index and to every tracked agent's set, and returns the agents whose sets
   * changed with exactly what changed. The index's current version of the entry is taken as
   * the "before" state (`before` is only used for its ID when `after` is absent).
   */
  applyChange(before: RegistrationEntry | undefined, after: RegistrationEntry | undefined): AgentChange[] {
    const id = after?.id ?? before?.id;
    if (id === undefined) return [];
    if (before !== undefined && after !== undefined && before.id !== after.id) {
      throw new TypeError(`applyChange: before and after are different entries ("${before.id}" vs "${after.id}")`);
    }
    const stored = this.index.get(id);
    if (after !== undefined) this.index.upsert(after);
    else this.index.remove(id);
    if (stored === undefined && after === undefined) return [];
    return this.propagate({ id, before: stored, after }, this.index.now());
  }

  /**
   * Removes entries that have expired (entryExpiry set and in the past) from the index and from
   * every agent's set; returns the agents affected. Removal never adds entries anywhere, so the
   * per-agent lists are simply concatenated.
   */
  pruneExpired(): AgentChange[] {
    const now = this.index.now();
    const merged = new Map<string, AgentChange>();
    for (const e of this.index.expiredEntries(now)) {
      this.index.remove(e.id);
      for (const ch of this.propagate({ id: e.id, before: e, after: undefined }, now)) {
        const m = merged.get(ch.agentId);
        if (m === undefined) merged.set(ch.agentId, ch);
        else {
          m.added.push(...ch.added);
          m.updated.push(...ch.updated);
          m.removed.push(...ch.removed);
        }
      }
    }
    return [...merged.values()];
  }

  /**
   * Replaces all entries (e.g. after the change feed lost events) and recomputes every tracked
   * agent; returns each agent whose set differs from before.
   */
  reload(entries: Iterable<RegistrationEntry>): AgentChange[] {
    const before = new Map<AgentState, Map<string, RegistrationEntry>>();
    for (const agent of this.agents.values()) {
      const m = new Map<string, RegistrationEntry>();
      for (const e of this.entriesOfAgent(agent)) m.set(e.id, e);
      before.set(agent, m);
    }
    this.index.load(entries);
    this.closures.clear();
    this.closuresByReached.clear();
    const now = this.index.now();
    const changes: AgentChange[] = [];
    for (const agent of this.agents.values()) {
      agent.aliasIds = new Set(this.index.matchingAliases(agent.selectors, now).map((a) => a.id));
      agent.roots = this.rootsOf(agent);
      for (const r of agent.roots) this.acquire(r, agent, now);
    }
    for (const agent of this.agents.values()) {
      const old = before.get(agent)!;
      const change: AgentChange = { agentId: agent.id, added: [], updated: [], removed: [] };
      const seen = new Set<string>();
      for (const e of this.entriesOfAgent(agent)) {
        seen.add(e.id);
        const prev = old.get(e.id);
        if (prev === undefined) change.added.push(e);
        else if (!sameEntry(prev, e)) change.updated.push(e);
      }
      for (const [eid, e] of old) if (!seen.has(eid)) change.removed.push(e);
      if (change.added.length + change.updated.length + change.removed.length > 0) changes.push(change);
    }
    return changes;
  }

  /**
   * The tracked agents whose sets a change from `before` to `after` may touch, without applying
   * it (a superset of the agents applyChange would report): agents whose closures reach the old
   * or new parentId, plus, for node aliases, agents whose node selectors match the old or new
   * alias selectors.
   */
  affectedAgents(before: RegistrationEntry | undefined, after: RegistrationEntry | undefined): SpiffeId[] {
    const out = new Set<AgentState>();
    for (const e of [before, after]) {
      if (e === undefined) continue;
      if (this.index.isNodeAlias(e)) {
        for (const a of this.agentsMatchingAlias(e)) out.add(a);
      } else {
        for (const c of this.reachedBy(e.parentId)) for (const a of c.agents) out.add(a);
      }
    }
    return Array.from(out, (a) => a.id);
  }

  // ---- internals

  private propagate(m: Mutation, now: number): AgentChange[] {
    const { before, after } = m;
    const beforeIsAlias = before !== undefined && this.index.isNodeAlias(before);
    const afterIsAlias = after !== undefined && this.index.isNodeAlias(after);

    // 1. Closures whose content may change: those reaching the old or new parent.
    const candidates = new Set<Closure>();
    if (before !== undefined && !beforeIsAlias) {
      for (const c of this.reachedBy(before.parentId)) candidates.add(c);
    }
    if (after !== undefined && !afterIsAlias) {
      for (const c of this.reachedBy(after.parentId)) candidates.add(c);
    }
    const deltas = new Map<Closure, Delta>();
    const touched = new Set<Closure>();
    for (const c of candidates) {
      const wasIn = c.entries.has(m.id);
      const d = this.updateClosure(c, m, now);
      if (d.added.size + d.removed.size > 0) deltas.set(c, d);
      if (d.added.size + d.removed.size > 0 || (wasIn && c.entries.has(m.id))) touched.add(c);
    }

    // 2. Alias membership: agents matching the old or the new alias selectors.
    const rootChanged = new Map<AgentState, Set<string>>();
    const released: Closure[] = [];
    if (beforeIsAlias || afterIsAlias) {
      const agents = new Set<AgentState>();
      if (beforeIsAlias) for (const a of this.agentsMatchingAlias(before)) agents.add(a);
      if (afterIsAlias) for (const a of this.agentsMatchingAlias(after)) agents.add(a);
      for (const agent of agents) {
        agent.aliasIds.delete(m.id);
        if (afterIsAlias && !isExpired(after, now) && this.aliasMatches(after, agent)) agent.aliasIds.add(m.id);
        const newRoots = this.rootsOf(agent);
        if (sameSet(agent.roots, newRoots)) continue;
        const oldRoots = agent.roots;
        released.push(...this.swapRoots(agent, newRoots, now));
        rootChanged.set(agent, oldRoots);
      }
    }

    // 3. Per-agent diffs.
    const agents = new Set<AgentState>(rootChanged.keys());
    for (const c of touched) for (const a of c.agents) agents.add(a);
    const changes: AgentChange[] = [];
    for (const agent of agents) {
      const oldRoots = rootChanged.get(agent) ?? agent.roots;
      const change = this.diffAgent(agent, oldRoots, agent.roots, deltas, m);
      if (change !== undefined) changes.push(change);
    }
    this.releaseUnused(released);
    return changes;
  }

  /**
   * Brings closure `c` from the state before mutation `m` to the state after it (the index
   * already holds the after state) and returns which entry IDs entered or left it.
   */
  private updateClosure(c: Closure, m: Mutation, now: number): Delta {
    const delta: Delta = { added: new Set(), removed: new Set() };
    const old = c.entries.get(m.id);
    if (old !== undefined) {
      // Cheap removal when nothing else in the closure hangs from this entry's spiffeId.
      const sid = old.spiffeId;
      if (sid !== c.root && this.hangsFrom(c, sid, m.id)) return this.recompute(c, now);
      c.entries.delete(m.id);
      this.decReached(c, sid);
      delta.removed.add(m.id);
    }
    const a = m.after;
    if (a !== undefined && !this.index.isNodeAlias(a) && !isExpired(a, now) && c.reached.has(a.parentId)) {
      c.entries.set(a.id, a);
      if (!delta.removed.delete(a.id)) delta.added.add(a.id);
      if (this.incReached(c, a.spiffeId)) {
        // Newly reached ID: everything hanging from it joins, breadth first; IDs already
        // reached had their children in the closure already.
        const queue: string[] = [a.spiffeId];
        for (let i = 0; i < queue.length; i++) {
          for (const e of this.index.childrenOf(queue[i]!, now)) {
            if (c.entries.has(e.id)) continue;
            c.entries.set(e.id, e);
            if (!delta.removed.delete(e.id)) delta.added.add(e.id);
            if (this.incReached(c, e.spiffeId)) queue.push(e.spiffeId);
          }
        }
      }
    }
    return delta;
  }

  /** Whether some entry of `c` other than `exceptId` has `parentId` as its parent. */
  private hangsFrom(c: Closure, parentId: string, exceptId: string): boolean {
    for (const e of this.index.byParentId(parentId as SpiffeId)) if (e.id !== exceptId && c.entries.has(e.id)) return true;
    return false;
  }

  /** Recomputes `c` from scratch and returns the difference. */
  private recompute(c: Closure, now: number): Delta {
    const oldEntries = c.entries;
    const oldReached = c.reached;
    const fresh = this.computeClosure(c.root, now);
    c.entries = fresh.entries;
    c.reached = fresh.reached;
    for (const k of oldReached.keys()) if (!c.reached.has(k)) this.unreach(k, c);
    for (const k of c.reached.keys()) if (!oldReached.has(k)) this.reach(k, c);
    const delta: Delta = { added: new Set(), removed: new Set() };
    for (const id of oldEntries.keys()) if (!c.entries.has(id)) delta.removed.add(id);
    for (const id of c.entries.keys()) if (!oldEntries.has(id)) delta.added.add(id);
    return delta;
  }

  /** The closure of `root`: EntryIndex.walk's entries, with `reached` doubling as its "expanded" set. */
  private computeClosure(root: string, now: number): { entries: Map<string, RegistrationEntry>; reached: Map<string, number> } {
    const entries = new Map<string, RegistrationEntry>();
    const reached = new Map<string, number>([[root, 1]]);
    const queue: string[] = [root];
    for (let i = 0; i < queue.length; i++) {
      this.index.forEachChild(queue[i]!, now, (e) => {
        entries.set(e.id, e);
        const n = reached.get(e.spiffeId);
        if (n === undefined) {
          reached.set(e.spiffeId, 1);
          queue.push(e.spiffeId);
        } else {
          reached.set(e.spiffeId, n + 1);
        }
      });
    }
    return { entries, reached };
  }

  private reachedBy(id: string): Iterable<Closure> {
    const v = this.closuresByReached.get(id);
    return v === undefined ? [] : v instanceof Set ? v : [v];
  }

  private reach(id: string, c: Closure): void {
    const v = this.closuresByReached.get(id);
    if (v === undefined) this.closuresByReached.set(id, c);
    else if (v instanceof Set) v.add(c);
    else if (v !== c) this.closuresByReached.set(id, new Set([v, c]));
  }

  private unreach(id: string, c: Closure): void {
    const v = this.closuresByReached.get(id);
    if (v === c) this.closuresByReached.delete(id);
    else if (v instanceof Set) {
      v.delete(c);
      if (v.size === 1) this.closuresByReached.set(id, v.values().next().value!);
    }
  }

  /** Counts one more holder of `id` in `c`; true when `id` was not reached before. */
  private incReached(c: Closure, id: string): boolean {
    const n = c.reached.get(id) ?? 0;
    c.reached.set(id, n + 1);
    if (n === 0) {
      this.reach(id, c);
      return true;
    }
    return false;
  }

  private decReached(c: Closure, id: string): void {
    const n = c.reached.get(id) ?? 0;
    if (n <= 1) {
      c.reached.delete(id);
      this.unreach(id, c);
    } else {
      c.reached.set(id, n - 1);
    }
  }

  private acquire(root: string, agent: AgentState, now: number): void {
    let c = this.closures.get(root);
    if (c === undefined) {
      const fresh = this.computeClosure(root, now);
      c = { root, entries: fresh.entries, reached: fresh.reached, agents: new Set() };
      this.closures.set(root, c);
      for (const k of c.reached.keys()) this.reach(k, c);
    }
    c.agents.add(agent);
  }

  /** Moves the agent to `newRoots`; returns the closures it left (release them once diffed). */
  private swapRoots(agent: AgentState, newRoots: Set<string>, now: number): Closure[] {
    const left: Closure[] = [];
    for (const r of newRoots) if (!agent.roots.has(r)) this.acquire(r, agent, now);
    for (const r of agent.roots) {
      if (newRoots.has(r)) continue;
      const c = this.closures.get(r);
      if (c === undefined) continue;
      c.agents.delete(agent);
      left.push(c);
    }
    agent.roots = newRoots;
    return left;
  }

  private releaseUnused(closures: Iterable<Closure>): void {
    for (const c of closures) {
      if (c.agents.size > 0 || this.closures.get(c.root) !== c) continue;
      this.closures.delete(c.root);
      for (const k of c.reached.keys()) this.unreach(k, c);
    }
  }

  private rootsOf(agent: AgentState): Set<string> {
    const roots = new Set<string>([agent.id]);
    for (const aid of agent.aliasIds) {
      const alias = this.index.get(aid);
      if (alias !== undefined) roots.add(alias.spiffeId);
    }
    return roots;
  }

  private aliasMatches(alias: RegistrationEntry, agent: AgentState): boolean {
    if (alias.selectors.length === 0) return false;
    for (const s of alias.selectors) if (!agent.selKeys.has(selKey(s))) return false;
    return true;
  }

  /** Tracked agents whose node selectors include all of the alias's selectors (expiry ignored). */
  private agentsMatchingAlias(alias: RegistrationEntry): AgentState[] {
    let smallest: Set<AgentState> | undefined;
    for (const s of alias.selectors) {
      const set = this.agentsBySelector.get(selKey(s));
      if (set === undefined) return [];
      if (smallest === undefined || set.size < smallest.size) smallest = set;
    }
    if (smallest === undefined) return [];
    const out: AgentState[] = [];
    for (const a of smallest) if (this.aliasMatches(alias, a)) out.push(a);
    return out;
  }

  /** The union of the agent's closures: the largest copied whole, the others deduplicated. */
  private entriesOfAgent(agent: AgentState): RegistrationEntry[] {
    const cs: Closure[] = [];
    for (const r of agent.roots) {
      const c = this.closures.get(r);
      if (c !== undefined) cs.push(c);
    }
    if (cs.length === 0) return [];
    cs.sort((x, y) => y.entries.size - x.entries.size);
    const largest = cs[0]!.entries;
    const out = [...largest.values()];
    const extra = new Set<string>();
    for (let i = 1; i < cs.length; i++) {
      for (const [id, e] of cs[i]!.entries) {
        if (largest.has(id) || extra.has(id)) continue;
        extra.add(id);
        out.push(e);
      }
    }
    return out;
  }

  /**
   * What changed for one agent, given its roots before and after and each changed closure's
   * delta. A closure's before state is (after - added) + removed.
   */
  private diffAgent(
    agent: AgentState,
    oldRoots: Set<string>,
    newRoots: Set<string>,
    deltas: Map<Closure, Delta>,
    m: Mutation | undefined,
  ): AgentChange | undefined {
    const candidates = new Set<string>();
    if (m !== undefined) candidates.add(m.id);
    for (const r of oldRoots) {
      const c = this.closures.get(r);
      if (c === undefined) continue;
      const d = deltas.get(c);
      if (newRoots.has(r)) {
        if (d !== undefined) {
          for (const id of d.added) candidates.add(id);
          for (const id of d.removed) candidates.add(id);
        }
      } else {
        for (const id of c.entries.keys()) candidates.add(id);
        if (d !== undefined) for (const id of d.removed) candidates.add(id);
      }
    }
    for (const r of newRoots) {
      if (oldRoots.has(r)) continue;
      const c = this.closures.get(r);
      if (c !== undefined) for (const id of c.entries.keys()) candidates.add(id);
    }

    const change: AgentChange = { agentId: agent.id, added: [], updated: [], removed: [] };
    for (const id of candidates) {
      let inBefore = false;
      for (const r of oldRoots) {
        const c = this.closures.get(r);
        if (c === undefined) continue;
        const d = deltas.get(c);
        const had = d === undefined ? c.entries.has(id) : d.removed.has(id) || (c.entries.has(id) && !d.added.has(id));
        if (had) {
          inBefore = true;
          break;
        }
      }
      let inAfter = false;
      for (const r of newRoots) {
        if (this.closures.get(r)?.entries.has(id) === true) {
          inAfter = true;
          break;
        }
      }
      const isMutated = m !== undefined && id === m.id;
      if (inAfter && !inBefore) {
        change.added.push(isMutated ? m.after! : this.index.get(id)!);
      } else if (inBefore && !inAfter) {
        change.removed.push(isMutated ? m.before! : this.index.get(id)!);
      } else if (inBefore && inAfter && isMutated && !sameEntry(m.before!, m.after!)) {
        change.updated.push(m.after!);
      }
    }
    if (change.added.length + change.updated.length + change.removed.length === 0) return undefined;
    return change;
  }
}

function sameSet<T>(a: ReadonlySet<T>, b: ReadonlySet<T>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

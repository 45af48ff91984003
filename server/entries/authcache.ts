/**
 * AuthorizationCache: per connected agent, the set of registration entries it may receive (the
 * rules of EntryIndex, entryindex.ts), kept up to date as entries change, with exactly which
 * agents gained, lost or saw an update of which entries, so the agent API pushes only to those
 * agents. Internally an agent's set is the union of shared closures (closures.ts): the entries
 * reachable from one root ID (the agent's ID, or an alias's spiffeId). Alias closures are
 * computed once and shared by every agent in the alias, so 1,000 agents in one cluster alias
 * with 10,000 workload entries cost 10,000 entries, not 10 million. Everything here is
 * synchronous.
 */
import type { SpiffeId } from '../../spiffe/id.js';
import type { RegistrationEntry } from '../datastore/types.js';
import { selectorMapKey as selKey, type Selector } from '../../common/selector.js';
import { addTo, deleteFrom, isExpired, keySet, type EntryIndex } from './entryindex.js';
import { ClosureStore, type Closure, type Delta, type Mutation } from './closures.js';
import { sameEntry } from './sameentry.js';

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

interface AgentState {
  id: SpiffeId;
  selectors: readonly Selector[];
  selKeys: Set<string>;
  /** Matching node alias entry IDs. */
  aliasIds: Set<string>;
  /** Closure roots: the agent ID and the spiffeIds of its aliases. */
  roots: Set<string>;
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
  private readonly closures: ClosureStore<AgentState>;

  constructor(index: EntryIndex) {
    this.index = index;
    this.closures = new ClosureStore(index);
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
      for (const r of agent.roots) this.closures.acquire(r, agent, now);
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
    this.closures.releaseUnused(released);
    return change;
  }

  /** Stops tracking an agent (disconnected, evicted, banned). Returns whether it was tracked. */
  removeAgent(agentId: SpiffeId): boolean {
    const agent = this.agents.get(agentId);
    if (agent === undefined) return false;
    this.agents.delete(agentId);
    for (const k of agent.selKeys) deleteFrom(this.agentsBySelector, k, agent);
    const released: Closure<AgentState>[] = [];
    for (const r of agent.roots) {
      const c = this.closures.get(r);
      if (c === undefined) continue;
      c.agents.delete(agent);
      released.push(c);
    }
    this.closures.releaseUnused(released);
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
    const now = this.index.now();
    const changes: AgentChange[] = [];
    for (const agent of this.agents.values()) {
      agent.aliasIds = new Set(this.index.matchingAliases(agent.selectors, now).map((a) => a.id));
      agent.roots = this.rootsOf(agent);
      for (const r of agent.roots) this.closures.acquire(r, agent, now);
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
        for (const c of this.closures.reachedBy(e.parentId)) for (const a of c.agents) out.add(a);
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
    const candidates = new Set<Closure<AgentState>>();
    if (before !== undefined && !beforeIsAlias) {
      for (const c of this.closures.reachedBy(before.parentId)) candidates.add(c);
    }
    if (after !== undefined && !afterIsAlias) {
      for (const c of this.closures.reachedBy(after.parentId)) candidates.add(c);
    }
    const deltas = new Map<Closure<AgentState>, Delta>();
    const touched = new Set<Closure<AgentState>>();
    for (const c of candidates) {
      const wasIn = c.entries.has(m.id);
      const d = this.closures.update(c, m, now);
      if (d.added.size + d.removed.size > 0) deltas.set(c, d);
      if (d.added.size + d.removed.size > 0 || (wasIn && c.entries.has(m.id))) touched.add(c);
    }

    // 2. Alias membership: agents matching the old or the new alias selectors.
    const rootChanged = new Map<AgentState, Set<string>>();
    const released: Closure<AgentState>[] = [];
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
    this.closures.releaseUnused(released);
    return changes;
  }

  /** Moves the agent to `newRoots`; returns the closures it left (release them once diffed). */
  private swapRoots(agent: AgentState, newRoots: Set<string>, now: number): Closure<AgentState>[] {
    const left: Closure<AgentState>[] = [];
    for (const r of newRoots) if (!agent.roots.has(r)) this.closures.acquire(r, agent, now);
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
    const cs: Closure<AgentState>[] = [];
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
    deltas: Map<Closure<AgentState>, Delta>,
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

/**
 * The closures AuthorizationCache (authcache.ts) builds agents' authorized sets from. A closure
 * is every entry reachable from one root ID (an agent's own SPIFFE ID, or a node alias's
 * spiffeId) by EntryIndex's rules (entryindex.ts): unexpired, non-alias children, to any depth.
 * Each closure is shared by every agent that has its root, and is brought up to date entry
 * change by entry change (`update`) rather than recomputed.
 *
 * `reached` counts, per ID, how many of (root, entries) have that ID as spiffeId: the parent IDs
 * whose children belong to the closure. The store also maps each reached ID back to the
 * closures reaching it (`reachedBy`), which is how a change to an entry finds the closures
 * it may touch (those reaching its old or new parentId).
 */
import type { SpiffeId } from '../../spiffe/id.js';
import type { RegistrationEntry } from '../datastore/types.js';
import { isExpired, type EntryIndex } from './entryindex.js';

/** Entries reachable from one root ID; shared by every agent (`A`) that has this root. */
export interface Closure<A> {
  root: string;
  entries: Map<string, RegistrationEntry>;
  /** Reached IDs -> how many of (root, entries) have that ID: the parents whose children belong here. */
  reached: Map<string, number>;
  agents: Set<A>;
}

/** Which entry IDs entered or left a closure. */
export interface Delta {
  added: Set<string>;
  removed: Set<string>;
}

/** The mutation being applied: entry E from version `before` to version `after`. */
export interface Mutation {
  id: string;
  before: RegistrationEntry | undefined;
  after: RegistrationEntry | undefined;
}

/** The live closures by root, and the reverse index from reached IDs to closures. */
export class ClosureStore<A> {
  readonly index: EntryIndex;
  private readonly byRoot = new Map<string, Closure<A>>();
  /**
   * Reached ID -> the closures reaching it. Most IDs are reached by one closure (a workload
   * entry's spiffeId under one agent), so a single closure is stored as is and a Set only once
   * a second one arrives: a reconnect storm of 1,000 agents x 100 entries then allocates no
   * 100,000 one-element Sets.
   */
  private readonly closuresByReached = new Map<string, Closure<A> | Set<Closure<A>>>();

  constructor(index: EntryIndex) {
    this.index = index;
  }

  /** The live closure of `root`, if some agent holds it. */
  get(root: string): Closure<A> | undefined {
    return this.byRoot.get(root);
  }

  /** Forgets every closure (the index was reloaded; agents acquire their roots again). */
  clear(): void {
    this.byRoot.clear();
    this.closuresByReached.clear();
  }

  /** Adds `agent` to the closure of `root`, computing the closure when nobody held it. */
  acquire(root: string, agent: A, now: number): void {
    let c = this.byRoot.get(root);
    if (c === undefined) {
      const fresh = this.computeClosure(root, now);
      c = { root, entries: fresh.entries, reached: fresh.reached, agents: new Set() };
      this.byRoot.set(root, c);
      for (const k of c.reached.keys()) this.reach(k, c);
    }
    c.agents.add(agent);
  }

  /** Drops the closures of `closures` that no agent holds any more. */
  releaseUnused(closures: Iterable<Closure<A>>): void {
    for (const c of closures) {
      if (c.agents.size > 0 || this.byRoot.get(c.root) !== c) continue;
      this.byRoot.delete(c.root);
      for (const k of c.reached.keys()) this.unreach(k, c);
    }
  }

  /**
   * Brings closure `c` from the state before mutation `m` to the state after it (the index
   * already holds the after state) and returns which entry IDs entered or left it.
   */
  update(c: Closure<A>, m: Mutation, now: number): Delta {
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
  private hangsFrom(c: Closure<A>, parentId: string, exceptId: string): boolean {
    for (const e of this.index.byParentId(parentId as SpiffeId)) if (e.id !== exceptId && c.entries.has(e.id)) return true;
    return false;
  }

  /** Recomputes `c` from scratch and returns the difference. */
  private recompute(c: Closure<A>, now: number): Delta {
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

  /** The closures whose reached IDs include `id`. */
  reachedBy(id: string): Iterable<Closure<A>> {
    const v = this.closuresByReached.get(id);
    return v === undefined ? [] : v instanceof Set ? v : [v];
  }

  private reach(id: string, c: Closure<A>): void {
    const v = this.closuresByReached.get(id);
    if (v === undefined) this.closuresByReached.set(id, c);
    else if (v instanceof Set) v.add(c);
    else if (v !== c) this.closuresByReached.set(id, new Set([v, c]));
  }

  private unreach(id: string, c: Closure<A>): void {
    const v = this.closuresByReached.get(id);
    if (v === c) this.closuresByReached.delete(id);
    else if (v instanceof Set) {
      v.delete(c);
      if (v.size === 1) this.closuresByReached.set(id, v.values().next().value!);
    }
  }

  /** Counts one more holder of `id` in `c`; true when `id` was not reached before. */
  private incReached(c: Closure<A>, id: string): boolean {
    const n = c.reached.get(id) ?? 0;
    c.reached.set(id, n + 1);
    if (n === 0) {
      this.reach(id, c);
      return true;
    }
    return false;
  }

  private decReached(c: Closure<A>, id: string): void {
    const n = c.reached.get(id) ?? 0;
    if (n <= 1) {
      c.reached.delete(id);
      this.unreach(id, c);
    } else {
      c.reached.set(id, n - 1);
    }
  }
}

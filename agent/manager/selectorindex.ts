/**
 * The entries the agent holds, indexed by selector: which entries a caller with a given set of
 * selectors is entitled to (those all of whose selectors it has), in a stable order.
 */
import type { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import { selectorMapKey as selKey } from '../../common/selector.js';

export class SelectorIndex {
  readonly #entries = new Map<string, Entry>();
  readonly #bySelector = new Map<string, Set<string>>();

  get size(): number {
    return this.#entries.size;
  }

  get(id: string): Entry | undefined {
    return this.#entries.get(id);
  }

  has(id: string): boolean {
    return this.#entries.has(id);
  }

  values(): IterableIterator<Entry> {
    return this.#entries.values();
  }

  keys(): IterableIterator<string> {
    return this.#entries.keys();
  }

  /** Adds or replaces `e`; returns the version it replaced. */
  upsert(e: Entry): Entry | undefined {
    const old = this.#entries.get(e.id);
    if (old) this.#unindex(old);
    this.#entries.set(e.id, e);
    for (const s of e.selectors) {
      const k = selKey(s);
      let set = this.#bySelector.get(k);
      if (!set) this.#bySelector.set(k, (set = new Set()));
      set.add(e.id);
    }
    return old;
  }

  remove(id: string): void {
    const e = this.#entries.get(id);
    if (e) this.#unindex(e);
    this.#entries.delete(id);
  }

  #unindex(e: Entry): void {
    for (const s of e.selectors) {
      const k = selKey(s);
      const set = this.#bySelector.get(k);
      // Drop emptied sets: selectors churn (pod UIDs...) and the index must not keep them all.
      if (set?.delete(e.id) && set.size === 0) this.#bySelector.delete(k);
    }
  }

  /** Entries whose selectors are all among `selectors` (selector map keys), in a stable order. */
  match(selectors: ReadonlySet<string>): Entry[] {
    const candidates = new Set<string>();
    for (const s of selectors) for (const id of this.#bySelector.get(s) ?? []) candidates.add(id);
    const out: Entry[] = [];
    for (const id of candidates) {
      const e = this.#entries.get(id)!;
      if (e.selectors.length > 0 && e.selectors.every((s) => selectors.has(selKey(s)))) out.push(e);
    }
    // Deterministic default identity: oldest entry first, then by ID.
    out.sort((a, b) => (a.createdAt === b.createdAt ? (a.id < b.id ? -1 : 1) : a.createdAt < b.createdAt ? -1 : 1));
    return out;
  }
}

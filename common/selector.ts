/**
 * The selector: a (type, value) pair describing a workload or node, shared by the server
 * (registration entries, node selectors), the agent (entry matching) and the attestors that
 * produce selectors. This module owns the type, the `type:value` text form, the canonical
 * order and the in-memory keys; user-facing validation (lengths, allowed characters) stays in
 * server/entries/validate.ts, and the datastore keeps its own persisted encoding.
 */
import { compareCodePoints } from './strings.js';

export interface Selector {
  type: string;
  value: string;
}

/** The canonical selector order: by type, then value, in Unicode code point order. */
export function compareSelectors(a: Selector, b: Selector): number {
  return compareCodePoints(a.type, b.type) || compareCodePoints(a.value, b.value);
}

/** `type:value` (the inverse of splitSelector for selectors whose type has no `:`). */
export function formatSelector(sel: Selector): string {
  return `${sel.type}:${sel.value}`;
}

/**
 * Splits `type:value` at the FIRST colon (`unix:uid:1000` is type `unix`, value `uid:1000`);
 * undefined when there is no colon. Does not check the parts: callers that take selectors from
 * users validate them (server/entries/validate.ts parseSelector).
 */
export function splitSelector(s: string): Selector | undefined {
  const colon = s.indexOf(':');
  if (colon === -1) return undefined;
  return { type: s.slice(0, colon), value: s.slice(colon + 1) };
}

/**
 * The map key of ONE selector, for selector indexes (the server's authorized-entries cache, the
 * agent's entry matcher): the `type:value` text, a plain string concatenation because it runs
 * on every match (a length-prefixed key measured ~10-30% slower per lookup). Unambiguous
 * because selector types never contain `:` (validate.ts allows only `A-Z a-z 0-9 _ -` in
 * entries; attestor types are constants of that form); a type with `:` must not be let in.
 * In-memory only: never stored or sent.
 */
export function selectorMapKey(s: Selector): string {
  return `${s.type}:${s.value}`;
}

/**
 * Canonical string of a selector SET: sorted by (type, value), duplicates dropped, `type:value`
 * joined by newlines. Unambiguous for valid selectors (types have no `:`, values no newline).
 * Two selector lists have the same key exactly when they hold the same set.
 */
export function selectorSetKey(selectors: readonly Selector[]): string {
  const parts = selectors.slice().sort(compareSelectors).map(formatSelector);
  let out = '';
  let prev: string | undefined;
  for (const p of parts) {
    if (p === prev) continue;
    out = prev === undefined ? p : `${out}\n${p}`;
    prev = p;
  }
  return out;
}

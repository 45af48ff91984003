/**
 * SQLite: the PERSISTED text forms the store writes and reads back (selector sets as JSON). What
 * existing databases hold: never change without a migration that rewrites every row.
 */
import type { Selector } from '../types.js';

/**
 * The PERSISTED text of a normalised selector set (JSON `[[type, value], ...]`): stored in the
 * selectors_key columns, part of the entries' unique identity index, the exact-match filter key
 * and where reads take selectors from (selectorsFromKey, json() in SQL). Deliberately not the
 * in-memory keys of common/selector.ts: changing this text changes what existing databases
 * hold, so it must stay byte-identical unless a migration rewrites every row.
 */
export function selectorsStorageKey(selectors: Selector[]): string {
  return JSON.stringify(selectors.map((s) => [s.type, s.value]));
}

const NO_ITEMS = '[]';

export function parseJsonArray<T>(json: string): T[] {
  return json === NO_ITEMS ? [] : (JSON.parse(json) as T[]);
}

/** Selectors from a selectors_key. */
export function selectorsFromKey(key: string): Selector[] {
  return parseJsonArray<[string, string]>(key).map(([type, value]) => ({ type, value }));
}

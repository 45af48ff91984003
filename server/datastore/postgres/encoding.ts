/**
 * PostgreSQL: the PERSISTED text forms (selector sets as JSON `[[type, value], ...]`, the same
 * text as the SQLite backend's) and the entry identity hash. What existing databases hold: never
 * change without a migration that rewrites every row.
 */
import { createHash } from 'node:crypto';
import type { Selector } from '../types.js';

export function selectorsStorageKey(selectors: Selector[]): string {
  return JSON.stringify(selectors.map((s) => [s.type, s.value]));
}

export function parseJsonArray<T>(json: string): T[] {
  return json === '[]' ? [] : (JSON.parse(json) as T[]);
}

export function selectorsFromKey(key: string): Selector[] {
  return parseJsonArray<[string, string]>(key).map(([type, value]) => ({ type, value }));
}

/** entries.identity_hash: SHA-256 of the identity (spiffe_id, parent_id, selectors_key), unambiguous as JSON. */
export function identityHash(spiffeId: string, parentId: string, selectorsKey: string): Buffer {
  return createHash('sha256').update(JSON.stringify([spiffeId, parentId, selectorsKey])).digest();
}

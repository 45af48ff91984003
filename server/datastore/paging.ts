/**
 * Page tokens, shared by every backend: a listing sorted by one unique key (entries by id,
 * attested nodes by SPIFFE ID) hands out the last key of a page as an opaque token, and the
 * next page starts after it. The token is `kind:key` in base64url, so a token from one listing
 * is refused by the other, and anything that does not re-encode to itself is refused as
 * DataStoreError('invalid'). Keys compare by Unicode code point (SQLite's BINARY order on
 * UTF-8; another backend must sort with the same order, e.g. PostgreSQL's "C" collation).
 */
import { checkNonNegativeInt, describe, invalid } from './checks.js';
import type { Page } from './types.js';

/** Which listing a token belongs to: 'e' entries, 'n' attested nodes. */
export type PageKind = 'e' | 'n';

export function encodeToken(kind: PageKind, key: string): string {
  return Buffer.from(`${kind}:${key}`, 'utf8').toString('base64url');
}

/** The key after which the page starts, or undefined for the first page. */
export function decodeToken(kind: PageKind, token: unknown): string | undefined {
  if (token === undefined || token === '') return undefined;
  if (typeof token !== 'string') throw invalid(`page token must be a string, got ${describe(token)}`);
  const text = Buffer.from(token, 'base64url').toString('utf8');
  if (!text.startsWith(`${kind}:`) || Buffer.from(text, 'utf8').toString('base64url') !== token) {
    throw invalid(`page token ${describe(token)} is not a token this listing returned`);
  }
  return text.slice(2);
}

export function pageSize(page: Page | undefined): number {
  const size = page?.size ?? 0;
  return checkNonNegativeInt(size, 'page size');
}

/** The page of `rows` (read with limit size + 1 when size > 0) and the token of the next one. */
export function pageOf<T>(kind: PageKind, rows: T[], size: number, keyOf: (item: T) => string): { items: T[]; nextToken: string } {
  const more = size > 0 && rows.length > size;
  if (more) rows.length = size;
  const last = rows[rows.length - 1];
  return { items: rows, nextToken: more && last !== undefined ? encodeToken(kind, keyOf(last)) : '' };
}

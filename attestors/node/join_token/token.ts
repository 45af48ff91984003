/**
 * Join tokens: single-use secrets an admin hands to an agent. The server stores only their
 * SHA-256; the value is a random UUID v4, as SPIRE generates. A presented token must have
 * exactly that shape: case, spaces, NUL and other variants are refused before any lookup.
 */
import { createHash, randomUUID } from 'node:crypto';

const TOKEN_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export const DEFAULT_JOIN_TOKEN_TTL_SECONDS = 600;

export function generateJoinToken(): string {
  return randomUUID();
}

export function isWellFormedJoinToken(value: string): boolean {
  return TOKEN_RE.test(value);
}

/** The stored form of a token. */
export function hashJoinToken(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

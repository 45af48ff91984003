/**
 * Entry IDs, shared by every backend: a new entry's ID when the caller gives none.
 */
import { randomFillSync } from 'node:crypto';

/**
 * Random bytes for IDs, drawn 16 at a time from a pool refilled 4 KiB at once (as node's
 * randomUUID does): one call into the CSPRNG per 256 IDs instead of one per ID, which showed
 * in the profile of batched creates.
 */
const POOL = Buffer.alloc(4096);
let poolOffset = POOL.length;

function randomChunk(): Buffer {
  if (poolOffset + 16 > POOL.length) {
    randomFillSync(POOL);
    poolOffset = 0;
  }
  // A copy: the caller writes into it, and the pool is refilled later.
  const b = Buffer.from(POOL.subarray(poolOffset, poolOffset + 16));
  poolOffset += 16;
  return b;
}

/**
 * A new entry ID: a UUID version 7 (RFC 9562: 48-bit unix milliseconds, then 74 random bits).
 * Time-ordered IDs are appended at the right edge of the entries.id index instead of landing
 * on random pages, so a batch of inserts dirties (and commits) a few pages rather than one per
 * entry: batched creates measured 1.5-2x faster on a table of 50k entries than with UUID v4.
 * Still a random, unguessable-enough, globally unique UUID; callers treat IDs as opaque.
 */
export function newEntryId(nowMs: number = Date.now()): string {
  const b = randomChunk();
  const ms = Math.max(0, Math.floor(nowMs));
  b.writeUIntBE(ms % 2 ** 48, 0, 6);
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

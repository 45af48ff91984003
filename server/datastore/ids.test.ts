// Entry IDs (ids.ts): UUID v7, time-ordered, unique within a millisecond.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { newEntryId } from './ids.js';

describe('entry IDs', () => {
  it('are UUID v7: the millisecond time first (so IDs sort by creation time), random below it', () => {
    const a = newEntryId(Date.UTC(2026, 0, 1));
    const b = newEntryId(Date.UTC(2026, 0, 1) + 1);
    for (const x of [a, b]) assert.match(x, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(a.slice(0, 13).replace('-', ''), Date.UTC(2026, 0, 1).toString(16).padStart(12, '0'));
    assert.ok(a < b, `${a} sorts before ${b}`);
    const same = new Set(Array.from({ length: 1000 }, () => newEntryId(5)));
    assert.equal(same.size, 1000, 'IDs of the same millisecond differ');
  });
});

/**
 * Recording an SDK X509-context watch in tests: every update (with monotonic and wall-clock
 * arrival times) and error, `waitFor(pred)` resolving on the first past or future match, and the
 * SVIDs that were already expired when they arrived.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { WorkloadApiClient, WorkloadApiError, X509Context } from '../../spiffe/workloadapi/index.js';

export interface WatchRecord {
  at: number;
  wall: number;
  ctx: X509Context;
}

/**
 * Records every update of an SDK X509-context watch. Each update's SVIDs are checked against the
 * wall clock when they arrive: `expiredServed` lists any that were already expired.
 */
export function recordWatch(c: WorkloadApiClient, label = 'watch') {
  const updates: WatchRecord[] = [];
  const errors: Array<{ at: number; err: WorkloadApiError; final: boolean }> = [];
  const expiredServed: string[] = [];
  const waiters: Array<() => void> = [];
  const w = c.watchX509Context(
    (ctx) => {
      const wall = Date.now();
      for (const s of ctx.svids) {
        const notAfter = Date.parse(new X509Certificate(s.certificates[0]!).validTo);
        if (notAfter <= wall) expiredServed.push(`${label}: ${s.id.toString()} expired ${wall - notAfter} ms before it was served`);
      }
      updates.push({ at: performance.now(), wall, ctx });
      for (const f of waiters.splice(0)) f();
    },
    (err, info) => {
      errors.push({ at: performance.now(), err, final: info.final });
      for (const f of waiters.splice(0)) f();
    },
  );
  const waitFor = (pred: (ctx: X509Context) => boolean, timeoutMs: number, from = 0, what = 'update'): Promise<WatchRecord & { index: number }> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${label}: no ${what} within ${timeoutMs} ms (updates: ${updates.length}, errors: ${errors.map((e) => e.err.message).join('; ')})`)), timeoutMs);
      const check = (): void => {
        for (let i = from; i < updates.length; i++) {
          if (pred(updates[i]!.ctx)) {
            clearTimeout(timer);
            resolve({ ...updates[i]!, index: i });
            return;
          }
        }
        waiters.push(check);
      };
      check();
    });
  return { updates, errors, expiredServed, waitFor, done: w.done, close: () => w.close() };
}

/** The leaf serial of the default SVID (or of `id`). */
export function serialOf(ctx: X509Context, id?: string): string {
  const svid = id === undefined ? ctx.defaultSvid : ctx.svids.find((s) => s.id.toString() === id);
  assert.ok(svid, `no SVID ${id} in ${ctx.svids.map((s) => s.id.toString()).join(', ')}`);
  return new X509Certificate(svid.certificates[0]!).serialNumber;
}

export function notAfterOf(ctx: X509Context): number {
  return Date.parse(new X509Certificate(ctx.defaultSvid.certificates[0]!).validTo);
}

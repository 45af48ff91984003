/**
 * An X509-SVID as the agent manager holds it, and when it may be served: until a margin before
 * its notAfter, so that it cannot expire on its way to the workload.
 */
import type { X509Identity } from './types.js';

export interface CachedSvid {
  identity: X509Identity;
  /** When to renew next (half-life with jitter; later after a failed attempt). */
  renewAt: number;
  /** The half-life renewal time itself (what is overdue once the server is back). */
  dueAt: number;
  /** Served only while now < notAfter - margin (so it cannot expire on its way to the workload). */
  marginMs: number;
  /** Its expiry without renewal has been logged. */
  expiryLogged: boolean;
  /** Entry revision the SVID was signed for. */
  revision: bigint;
}

/**
 * An SVID is no longer served this long before its notAfter (at most a tenth of its lifetime):
 * an update is pushed, encoded and read after it is built, and must not arrive expired.
 */
export const EXPIRY_MARGIN_MS = 1_000;

/** The last moment an SVID is served (a margin before its notAfter). */
export function servedUntil(s: CachedSvid): number {
  return s.identity.notAfter.getTime() - s.marginMs;
}

export function usable(s: CachedSvid, now: number): boolean {
  return now < servedUntil(s);
}

/** A millisecond timestamp as ISO 8601, for logs and the reasons sent to workloads. */
export const iso = (ms: number): string => new Date(ms).toISOString();

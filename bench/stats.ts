/** Small statistics helpers shared by the benchmark scenarios. */

/**
 * The p-th percentile (0..100) of `samples` by the nearest-rank method, computed from all
 * samples (no sampling, no interpolation). NaN for no samples.
 */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((Math.min(100, Math.max(0, p)) / 100) * sorted.length);
  return sorted[Math.max(0, rank - 1)]!;
}

/** Milliseconds with a precision that suits the magnitude: "0.42 ms", "12.3 ms", "1,234 ms". */
export function ms(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 100) return `${v.toFixed(1)} ms`;
  return `${Math.round(v).toLocaleString('en-US')} ms`;
}

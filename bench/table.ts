/** The benchmark report: one row per figure with its target and the same-run baseline. */
export interface Row {
  figure: string;
  measured: string;
  target: string;
  baseline: string;
  /** undefined: informational row with no target. */
  pass?: boolean;
}

export function printTable(rows: Row[]): void {
  const headers = ['figure', 'measured', 'target', 'baseline (same run)', 'result'];
  const cells = rows.map((r) => [r.figure, r.measured, r.target, r.baseline, r.pass === undefined ? '-' : r.pass ? 'pass' : 'MISS']);
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => `| ${c.map((v, i) => v.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(line(headers));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const c of cells) console.log(line(c));
}

export const perSecond = (n: number): string => `${Math.round(n).toLocaleString('en-US')}/s`;

/** Runs `fn` repeatedly for about `seconds` (after a short warm-up) and returns calls per second. */
export async function rate(seconds: number, fn: () => unknown | Promise<unknown>): Promise<number> {
  const warmUntil = performance.now() + Math.min(300, seconds * 200);
  const call = async (): Promise<void> => {
    const r = fn();
    if (r instanceof Promise) await r;
  };
  while (performance.now() < warmUntil) await call();
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 50; i++) await call();
    n += 50;
  }
  return (n * 1000) / (performance.now() - start);
}

/**
 * Shared helpers of the fault tests (test/faults) and the soak command (test/soak): CLI result
 * checks, a direct admin API client, SQLite integrity checks, /proc process stats, and an SDK
 * watch recorder that checks every SVID it receives was unexpired when it arrived.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { AdminClient } from '../../../server/cli/client.js';
import { Entry } from '../../../proto/gen/spindle/types/v1/types.js';
import type { AgentProcess } from '../../support/agentproc.js';
import type { ServerProcess } from '../../support/serverproc.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function ok(r: { status: number | null; stdout: string; stderr: string }, what = 'CLI'): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function entryIdOf(out: string): string {
  const m = /^Entry ID\s+:\s+(\S+)$/m.exec(out);
  assert.ok(m, `entry create prints "Entry ID : <id>":\n${out}`);
  return m[1]!;
}

/** A workload entry (for the admin API) with the fields the tests vary. */
export function workloadEntry(e: { spiffeId: string; parentId: string; selectors: string[]; x509SvidTtl?: number; id?: string }): Entry {
  return Entry.fromPartial({
    id: e.id ?? '',
    spiffeId: e.spiffeId,
    parentId: e.parentId,
    selectors: e.selectors.map((s) => {
      const i = s.indexOf(':');
      return { type: s.slice(0, i), value: s.slice(i + 1) };
    }),
    x509SvidTtl: e.x509SvidTtl ?? 0,
  });
}

/** A direct client of the server's admin API socket (the CLI's client, without a process per call). */
export function adminClient(server: ServerProcess, timeoutMs = 10_000): AdminClient {
  return new AdminClient(server.socketPath, { timeoutMs });
}

/** Every entry the server holds, paged. */
export async function listAllEntries(admin: AdminClient): Promise<Entry[]> {
  const out: Entry[] = [];
  let pageToken = '';
  do {
    const res = await admin.call(admin.entry.listEntries, { filter: undefined, pageSize: 500, pageToken });
    out.push(...res.entries);
    pageToken = res.nextPageToken;
  } while (pageToken !== '');
  return out;
}

/** The SQLite file(s) in a server data dir. */
export function sqliteFiles(dataDir: string): string[] {
  return readdirSync(dataDir)
    .filter((f) => /\.(sqlite3?|db)$/.test(f))
    .map((f) => join(dataDir, f));
}

/**
 * `PRAGMA integrity_check` and `foreign_key_check` of the server's database (opened read-write so
 * a hot WAL left by a killed process is recovered, as the server itself would on start).
 */
export function integrityCheck(dataDir: string): { file: string; integrity: string; foreignKeyViolations: number } {
  const files = sqliteFiles(dataDir);
  assert.equal(files.length, 1, `one SQLite database in ${dataDir}: ${readdirSync(dataDir).join(', ')}`);
  const db = new Database(files[0]!);
  try {
    const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    const fk = db.pragma('foreign_key_check') as unknown[];
    return { file: files[0]!, integrity: rows.map((r) => r.integrity_check).join('; '), foreignKeyViolations: fk.length };
  } finally {
    db.close();
  }
}

/** Resident set size (kB, VmRSS) and open file descriptors of a live process. */
export function procStats(pid: number): { rssKb: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  assert.ok(m, `VmRSS in /proc/${pid}/status`);
  return { rssKb: Number(m[1]), fds: readdirSync(`/proc/${pid}/fd`).length };
}

export { notAfterOf, recordWatch, serialOf, type WatchRecord } from '../../support/watch.js';

/** Keeps (SPINDLE_E2E_KEEP set: writes the logs there) or removes the processes' directories. */
export function keepOrClean(keep: boolean, procs: Array<ServerProcess | AgentProcess | undefined>, extraDirs: string[] = []): void {
  if (keep) {
    for (const p of procs) if (p) writeFileSync(join(p.dir, 'process.log'), p.log());
    console.log(`# kept ${procs.map((p) => p?.dir).filter(Boolean).join(' ')} ${extraDirs.join(' ')}`);
    return;
  }
  for (const d of [...procs.map((p) => p?.dir), ...extraDirs]) if (d) rmSync(d, { recursive: true, force: true });
}

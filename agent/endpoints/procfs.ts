/**
 * The two /proc facts the peer tracker re-reads to decide "still the same process": its start
 * time and its effective uid. Synchronous on purpose (tiny kernel-generated files, read once per
 * call check); `undefined` means the process is gone or the file could not be read or parsed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Field 22 of /proc/<pid>/stat (`starttime`, clock ticks after boot), as a string. The comm field
 * (2) is in parentheses and may contain spaces and ')', so fields are counted after the LAST ')'.
 */
export function readStartTime(procRoot: string, pid: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(procRoot, String(pid), 'stat'), 'utf8');
  } catch {
    return undefined;
  }
  return parseStartTime(text);
}

export function parseStartTime(statText: string): string | undefined {
  const close = statText.lastIndexOf(')');
  if (close < 0) return undefined;
  // After ") " come fields 3 (state), 4, ...: field 22 is index 22 - 3.
  const field = statText.slice(close + 1).trim().split(/\s+/)[22 - 3];
  return field !== undefined && /^\d+$/.test(field) ? field : undefined;
}

/** The effective uid (second column of "Uid:") from /proc/<pid>/status. */
export function readEffectiveUid(procRoot: string, pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(procRoot, String(pid), 'status'), 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Uid:\s+\d+\s+(\d+)\s/m.exec(text);
  return m === null ? undefined : Number(m[1]);
}

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

/**
 * Effective uids read in the current synchronous run of JavaScript, by status path; dropped at
 * the next microtask checkpoint. A push to many streams checks each stream's caller in one
 * synchronous chunk, and many streams often share a process (Envoy's SDS streams, SDK watches):
 * one /proc read per process per chunk instead of one per stream. Sound for the "still the same
 * process" check: the caller's pidfd (or start time) is confirmed alive after this read, and
 * its process existed before the read (it was tracked since accept), so the pid was still that
 * process when the value was read.
 */
let uidsThisTurn: Map<string, number | undefined> | undefined;

/** The effective uid (second column of "Uid:") from /proc/<pid>/status (see uidsThisTurn). */
export function readEffectiveUid(procRoot: string, pid: number): number | undefined {
  const path = join(procRoot, String(pid), 'status');
  if (uidsThisTurn === undefined) {
    uidsThisTurn = new Map();
    queueMicrotask(() => {
      uidsThisTurn = undefined;
    });
  } else if (uidsThisTurn.has(path)) {
    return uidsThisTurn.get(path);
  }
  let uid: number | undefined;
  try {
    const m = /^Uid:\s+\d+\s+(\d+)\s/m.exec(readFileSync(path, 'utf8'));
    uid = m === null ? undefined : Number(m[1]);
  } catch {
    uid = undefined;
  }
  uidsThisTurn.set(path, uid);
  return uid;
}

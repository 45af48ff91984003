/**
 * The /proc facts the peer tracker reads to decide "still the same process": its start time,
 * its effective uid and gid, and the identity of the executable it runs. Synchronous on purpose
 * (tiny kernel-generated files and one stat, read once per check); `undefined` means the process
 * is gone or the file could not be read or parsed.
 */
import { readFileSync, statSync } from 'node:fs';
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

/** What the same-process check re-reads about a caller: its effective ids and executable. */
export interface CallerFacts {
  /** Effective uid and gid ("Uid:" / "Gid:" second column of /proc/<pid>/status); undefined when unreadable. */
  euid: number | undefined;
  egid: number | undefined;
  /** The executable's identity (see readExeId); undefined when it cannot be stat'ed. */
  exe: string | undefined;
}

/**
 * Facts read in the current synchronous run of JavaScript, by /proc/<pid> path; dropped at the
 * next microtask checkpoint. A push to many streams checks each stream's caller in one
 * synchronous chunk, and many streams often share a process (Envoy's SDS streams, SDK watches):
 * one status read and one exe stat per process per chunk instead of one per stream. Sound for
 * the "still the same process" check: the caller's pidfd (or start time) is confirmed alive
 * after this read, and its process existed before the read (it was tracked since accept), so
 * the pid was still that process when the values were read.
 */
let factsThisTurn: Map<string, CallerFacts> | undefined;

/**
 * The identity of the program a process runs: `<dev>:<ino>` of the file behind
 * /proc/<pid>/exe (stat follows the magic link to the inode the process executes, whatever
 * its path is now). execve() of another program changes it. Needs the right to inspect the
 * process (ptrace read access: root, or the same uid), else undefined.
 */
export function readExeId(procRoot: string, pid: number): string | undefined {
  try {
    const st = statSync(join(procRoot, String(pid), 'exe'), { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** Effective uid/gid and executable identity of `pid` (see factsThisTurn for the caching). */
export function readCallerFacts(procRoot: string, pid: number): CallerFacts {
  const dir = join(procRoot, String(pid));
  if (factsThisTurn === undefined) {
    factsThisTurn = new Map();
    queueMicrotask(() => {
      factsThisTurn = undefined;
    });
  } else {
    const cached = factsThisTurn.get(dir);
    if (cached !== undefined) return cached;
  }
  let euid: number | undefined;
  let egid: number | undefined;
  try {
    const text = readFileSync(join(dir, 'status'), 'utf8');
    const u = /^Uid:\s+\d+\s+(\d+)\s/m.exec(text);
    const g = /^Gid:\s+\d+\s+(\d+)\s/m.exec(text);
    euid = u === null ? undefined : Number(u[1]);
    egid = g === null ? undefined : Number(g[1]);
  } catch {
    // gone or unreadable: undefined ids never match
  }
  const facts = { euid, egid, exe: readExeId(procRoot, pid) };
  factsThisTurn.set(dir, facts);
  return facts;
}

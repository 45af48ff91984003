/**
 * The `unix` workload attestor (SPIRE's unix plugin): selectors from the caller's credentials
 * and, optionally, the program it runs.
 *
 *   unix:uid:<n>                   effective uid at connect()   (SO_PEERCRED)
 *   unix:user:<name>               its name in <etc>/passwd (omitted when not listed)
 *   unix:gid:<n>                   effective gid at connect()   (SO_PEERCRED)
 *   unix:group:<name>              its name in <etc>/group (omitted when not listed)
 *   unix:supplementary_gid:<n>     each supplementary group at connect() (SO_PEERGROUPS)
 *   unix:supplementary_group:<name>
 * With `discover_workload_path: true`:
 *   unix:path:<path>               readlink /proc/<pid>/exe
 *   unix:sha256:<hex>              SHA-256 of the executable, read through /proc/<pid>/exe (the
 *                                  inode the process runs, in its own mount namespace, even if
 *                                  the path was replaced since). `workload_size_limit` (bytes)
 *                                  bounds it: 0 = no limit, negative = no sha256 selector, a
 *                                  larger binary fails attestation (as in SPIRE).
 *
 * The ids are the kernel's record of the process that connected (PeerInfo), never /proc's view
 * at attestation time: a caller that connects, forks and execs a setuid/setgid program keeps the
 * ids it connected with, whatever the exec'd program runs as. SPIRE reads them from
 * /proc/<pid>/status when it attests. path and sha256 can only come from /proc: they describe
 * the process at attestation time, and the agent's same-process check (agent/endpoints/caller.ts)
 * refuses the call when the executable changed since accept.
 *
 * Names come from parsing passwd/group files, not libc: users only known to NSS (LDAP, sssd)
 * get no name selectors. Every failure (process gone, /proc unreadable, binary too large) is a
 * WorkloadAttestationError, which the Workload API turns into UNAVAILABLE. The /proc and /etc
 * roots are injectable so tests can use a fake tree.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { open, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConfigReader } from '../../../common/configfile.js';
import type { Selector } from '../../../common/selector.js';
import { WorkloadAttestationError, type PeerInfo, type WorkloadAttestor } from '../types.js';

export const UNIX = 'unix';

export interface UnixAttestorOptions {
  /** Add unix:path and unix:sha256. Default false. */
  discoverWorkloadPath?: boolean;
  /** Bytes; 0 = no limit (default), negative = never hash. */
  workloadSizeLimit?: number;
  /** Default /proc. */
  procRoot?: string;
  /** Directory holding passwd and group. Default /etc. */
  etcRoot?: string;
}

const ID = /^\d+$/;

/**
 * id -> name from a passwd- or group-format file (`name:x:id:...`): the first line naming an id
 * wins, as getpwuid/getgrgid do with files. Comments, blank lines and NIS `+`/`-` lines are skipped.
 */
export function parseIdNames(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const f = line.split(':');
    const name = f[0];
    const id = f[2];
    if (f.length < 3 || name === undefined || name === '' || id === undefined || !ID.test(id)) continue;
    const n = Number(id);
    if (!out.has(n)) out.set(n, name);
  }
  return out;
}

/**
 * passwd/group parsed once and reused while the file is unchanged (same inode, size, mtime and
 * ctime): a stat per attestation instead of reading and parsing both files every time.
 */
const idNameCache = new Map<string, { stamp: string; names: Map<number, string> }>();
function readIdNames(path: string): Map<number, string> {
  try {
    const st = statSync(path, { bigint: true });
    const stamp = `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    const cached = idNameCache.get(path);
    if (cached?.stamp === stamp) return cached.names;
    const names = parseIdNames(readFileSync(path, 'utf8'));
    idNameCache.set(path, { stamp, names });
    return names;
  } catch {
    idNameCache.delete(path);
    return new Map(); // no file, no names: the numeric selectors still stand
  }
}

function gone(pid: number, err: unknown): WorkloadAttestationError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ESRCH') return new WorkloadAttestationError(`process ${pid} is gone`, { cause: err });
  return new WorkloadAttestationError(`cannot inspect process ${pid}: ${(err as Error).message}`, { cause: err });
}

const HASH_CHUNK = 1 << 20;

export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly name = UNIX;
  readonly discoverWorkloadPath: boolean;
  readonly workloadSizeLimit: number;
  readonly #procRoot: string;
  readonly #etcRoot: string;

  constructor(opts: UnixAttestorOptions = {}) {
    this.discoverWorkloadPath = opts.discoverWorkloadPath ?? false;
    this.workloadSizeLimit = opts.workloadSizeLimit ?? 0;
    if (!Number.isSafeInteger(this.workloadSizeLimit)) throw new TypeError('workloadSizeLimit must be an integer');
    this.#procRoot = opts.procRoot ?? '/proc';
    this.#etcRoot = opts.etcRoot ?? '/etc';
  }

  /** From the plugin_data of `WorkloadAttestor "unix"`; throws ConfigError naming bad keys. */
  static fromConfig(data: ConfigReader, roots: Pick<UnixAttestorOptions, 'procRoot' | 'etcRoot'> = {}): UnixWorkloadAttestor {
    const discoverWorkloadPath = data.bool('discover_workload_path', false);
    const workloadSizeLimit = data.int('workload_size_limit', { default: 0 });
    data.throwIfInvalid();
    return new UnixWorkloadAttestor({ discoverWorkloadPath, workloadSizeLimit, ...roots });
  }

  async attest(peer: PeerInfo, signal?: AbortSignal): Promise<Selector[]> {
    const { pid } = peer;
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new WorkloadAttestationError(`invalid caller pid ${String(pid)}`);
    const procDir = join(this.#procRoot, String(pid));
    const users = readIdNames(join(this.#etcRoot, 'passwd'));
    const groups = readIdNames(join(this.#etcRoot, 'group'));
    signal?.throwIfAborted();

    const out: Selector[] = [];
    const seen = new Set<string>();
    const add = (value: string): void => {
      if (seen.has(value)) return;
      seen.add(value);
      out.push({ type: UNIX, value });
    };
    const { uid, gid } = peer;
    add(`uid:${uid}`);
    const user = users.get(uid);
    if (user !== undefined) add(`user:${user}`);
    add(`gid:${gid}`);
    const group = groups.get(gid);
    if (group !== undefined) add(`group:${group}`);
    for (const g of peer.groups) {
      add(`supplementary_gid:${g}`);
      const name = groups.get(g);
      if (name !== undefined) add(`supplementary_group:${name}`);
    }

    if (this.discoverWorkloadPath) {
      const exe = join(procDir, 'exe');
      let path: string;
      try {
        path = await readlink(exe);
      } catch (err) {
        signal?.throwIfAborted();
        throw gone(pid, err);
      }
      add(`path:${path}`);
      if (this.workloadSizeLimit >= 0) add(`sha256:${await this.#hash(pid, exe, path, signal)}`);
    }
    return out;
  }

  /** SHA-256 of the file behind `exe`, refusing more than workloadSizeLimit bytes (when > 0). */
  async #hash(pid: number, exe: string, path: string, signal: AbortSignal | undefined): Promise<string> {
    const limit = this.workloadSizeLimit;
    const tooLarge = (size: number): WorkloadAttestationError =>
      new WorkloadAttestationError(`workload ${path} (pid ${pid}) exceeds workload_size_limit (${size} > ${limit} bytes)`);
    let fh;
    try {
      fh = await open(exe, 'r');
    } catch (err) {
      throw gone(pid, err);
    }
    try {
      const { size } = await fh.stat();
      if (limit > 0 && size > limit) throw tooLarge(size);
      const hash = createHash('sha256');
      const buf = Buffer.allocUnsafe(HASH_CHUNK);
      let total = 0;
      for (;;) {
        signal?.throwIfAborted();
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        total += bytesRead;
        if (limit > 0 && total > limit) throw tooLarge(total); // grew while we read
        hash.update(buf.subarray(0, bytesRead));
      }
      return hash.digest('hex');
    } catch (err) {
      if (err instanceof WorkloadAttestationError) throw err;
      signal?.throwIfAborted();
      throw new WorkloadAttestationError(`cannot hash workload ${path} (pid ${pid}): ${(err as Error).message}`, { cause: err });
    } finally {
      await fh.close();
    }
  }
}

/**
 * Writing a file that must have its final mode from the first instant (keys 0600, public PEMs
 * 0644), whatever the umask and whatever was at the path before: the data goes to a fresh temp
 * file next to `path`, created O_EXCL|O_NOFOLLOW with `mode` (the umask can only take bits away)
 * and fchmod'ed to exactly `mode` BEFORE any byte is written; it is then renamed over `path`.
 * An existing file or symlink at `path` is replaced, never written through, so a file owned by
 * someone else (who could chmod it back and read it) never receives our data.
 */
import { closeSync, constants, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

/** Replaces `path` with `data` at exactly `mode` (see above). Errors are the fs errors, unwrapped. */
export function writeFileReplacingSync(path: string, data: string | Uint8Array, mode: number): void {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      fchmodSync(fd, mode);
      const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // not there
    }
    throw err;
  }
}

/** File-system errors in plain words, for operator-facing messages that already name the path. */

/**
 * A file-system error in plain words, for a message that already names the path: "does not
 * exist", "is on a read-only file system", ... Unknown codes keep Node's text.
 */
export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return 'it (or a directory above it) does not exist';
    case 'EEXIST':
      return 'it already exists';
    case 'EROFS':
      return 'it is on a read-only file system';
    case 'EACCES':
    case 'EPERM':
      return `permission denied for this user (uid ${process.geteuid?.() ?? '?'})`;
    case 'EISDIR':
      return 'it is a directory, not a file';
    case 'ENOTDIR':
      return 'a component of the path is not a directory';
    case 'ENOSPC':
      return 'no space left on the device';
    case 'EDQUOT':
      return 'the disk quota is exhausted';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    case 'ENAMETOOLONG':
      return 'the path is too long';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}


/**
 * SQLite: the database file and its directory: created with safe modes (0700 directory, 0600
 * file) BEFORE SQLite opens the file (SQLite gives -wal/-shm the main file's mode), modes set with
 * chmod so the process umask does not matter; an existing directory open to group/other is logged.
 */
import { chmodSync, closeSync, constants as fsConstants, fchmodSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { ensureSafeDirectory } from '../../../common/safedir.js';
import type { DataStoreLogger } from '../types.js';

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8)}`;
}

/**
 * Creates the directory (0700) and the database file (0600) if missing; tightens the file's mode.
 * The directory (and its ancestors) must not be controlled by another local user
 * (common/safedir.ts): else this throws, naming the directory, its owner and mode.
 */
export function prepareFiles(file: string, logger: DataStoreLogger | undefined): void {
  const dir = dirname(file);
  const existing = ensureSafeDirectory(dir, 0o700, 'datastore directory');
  if (existing !== undefined && (existing.mode & 0o077) !== 0) {
    logger?.warn({ dir, mode: octal(existing.mode) }, 'datastore directory is accessible to group or others; 0700 is expected');
  }
  const fd = openSync(file, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}

export function tightenModes(file: string): void {
  for (const suffix of ['', '-wal', '-shm']) {
    try {
      chmodSync(file + suffix, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

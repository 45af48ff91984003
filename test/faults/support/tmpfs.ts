/**
 * A small tmpfs mounted at a directory (root only), for disk-full and read-only faults.
 * `unmount()` is idempotent and lazy (-l) so a test that fails midway still cleans up.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';

export interface TmpfsMount {
  path: string;
  remount(mode: 'ro' | 'rw'): void;
  /** Writes zeros to `file` until the filesystem is full; returns the bytes written. */
  fill(file: string): number;
  unmount(): void;
}

export function mountTmpfs(path: string, sizeBytes: number): TmpfsMount {
  if (process.getuid?.() !== 0) throw new Error(`mounting a tmpfs at ${path} needs root (uid ${process.getuid?.()})`);
  mkdirSync(path, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'tmpfs', path], { stdio: 'pipe' });
  let mounted = true;
  return {
    path,
    remount: (mode) => void execFileSync('mount', ['-o', `remount,${mode}`, path], { stdio: 'pipe' }),
    fill: (file) => {
      const fd = openSync(file, 'w');
      const chunk = Buffer.alloc(64 * 1024);
      let total = 0;
      try {
        for (;;) {
          try {
            total += writeSync(fd, chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
            // Top up the last partial block.
            for (const n of [4096, 512, 1]) {
              try {
                for (;;) total += writeSync(fd, chunk.subarray(0, n));
              } catch {
                /* next smaller size */
              }
            }
            return total;
          }
        }
      } finally {
        closeSync(fd);
      }
    },
    unmount: () => {
      if (!mounted) return;
      mounted = false;
      try {
        execFileSync('umount', ['-l', path], { stdio: 'pipe' });
      } catch {
        /* already gone */
      }
      rmSync(path, { recursive: true, force: true });
    },
  };
}

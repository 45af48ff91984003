/**
 * The server's ID: which CA journal in a shared datastore is this server's. Several servers of
 * one trust domain may share a datastore (PostgreSQL); each has its own data_dir (and keys), so
 * the ID lives there: `<data_dir>/server_id`, a random UUID written (0600, never overwritten) on
 * the first start and read on every later one. Copying a data_dir copies the ID: two servers
 * with the same ID would share one journal, which is refused nowhere, so never start a second
 * server from a copy of another's data_dir.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CaError } from './errors.js';

export const SERVER_ID_FILE = 'server_id';
const ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** Reads `<dataDir>/server_id`, creating it with a new random ID when it does not exist. */
export function loadServerId(dataDir: string): string {
  const file = join(dataDir, SERVER_ID_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CaError('config', `cannot read the server ID file ${file}: ${(err as Error).message}`, { cause: err });
    }
    const id = randomUUID();
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    try {
      writeFileSync(file, `${id}\n`, { mode: 0o600, flag: 'wx' });
      return id;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new CaError('config', `cannot write the server ID file ${file}: ${(e as Error).message}`, { cause: e });
      }
      text = readFileSync(file, 'utf8');
    }
  }
  const id = text.trim();
  if (!ID_RE.test(id)) {
    throw new CaError('config', `server ID file ${file} must hold 1-128 characters of A-Z a-z 0-9 . _ -, got ${JSON.stringify(id.slice(0, 40))}: restore it (a new ID would start a new CA journal and leave the old one's authorities in the bundle)`);
  }
  return id;
}

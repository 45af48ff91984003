/**
 * Where the CA's private keys live (SPIRE's KeyManager "disk" and "memory").
 *
 * Keys are addressed by slot ID (`x509-CA-A`, `JWT-Signer-B`, ...): `generate` makes a new key
 * and REPLACES whatever the slot held; `load` returns the slot's key or undefined; `delete`
 * forgets it. Slot IDs are 1-64 characters of `A-Z a-z 0-9 _ -` (they become file names).
 *
 * DiskKeyManager: one PKCS#8 PEM file per slot, `<keysPath>/<slotId>.key`.
 * - The directory is created 0700 and tightened to 0700 if it is more open; it must be a
 *   directory owned by this user.
 * - A key file is written to a fresh temp file in the same directory, created O_EXCL with mode
 *   0600 and fchmod'ed to 0600 (so the umask cannot loosen or break it), fsync'ed, renamed over
 *   the slot file, then the directory is fsync'ed: a crash leaves the old key or the new one,
 *   never a torn file. A failed write removes its temp file.
 * - `load` refuses (CaError key_manager) a slot file that is a symlink, not a regular file, not
 *   owned by this user, or accessible to group/others (mode & 0077): a key others could read
 *   must be treated as compromised, so the operator has to look at it (and chmod 0600 it).
 * - Errors name the file; key material is never logged nor put into a message.
 *
 * MemoryKeyManager: a Map; nothing survives the process (a restarted server makes new keys).
 */
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, open, rename, stat, unlink } from 'node:fs/promises';
import { ensureSafeDirectory } from '../../common/safedir.js';
import { join } from 'node:path';
import { exportPrivateKeyPkcs8, generateKeyPair, importPrivateKeyPkcs8, type KeyType } from '../../spiffe/keys.js';
import { pemToPrivateKey, privateKeyToPem } from '../../spiffe/pem.js';
import type { KeyManagerConfig } from '../config/config.js';
import { CaError } from './errors.js';

export interface KeyManager {
  /** 'disk' keys survive a restart, 'memory' keys do not. */
  readonly kind: 'disk' | 'memory';
  /** Makes a new private key of `keyType` for the slot, replacing any key it held. */
  generate(slotId: string, keyType: KeyType): Promise<KeyObject>;
  /** The slot's private key, or undefined when the slot is empty. */
  load(slotId: string): Promise<KeyObject | undefined>;
  /** Forgets the slot's key (no error when it is already empty). */
  delete(slotId: string): Promise<void>;
}

export interface KeyManagerLogger {
  warn(obj: object, msg: string): void;
}

const SLOT_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

function checkSlotId(slotId: string): string {
  if (typeof slotId !== 'string' || !SLOT_ID_RE.test(slotId)) {
    throw new CaError('slot_id', `invalid key slot ID ${JSON.stringify(String(slotId)).slice(0, 80)}: expected 1-64 characters of A-Z a-z 0-9 _ -`);
  }
  return slotId;
}

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8)}`;

function ownUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

export class MemoryKeyManager implements KeyManager {
  readonly kind = 'memory' as const;
  readonly #keys = new Map<string, KeyObject>();

  async generate(slotId: string, keyType: KeyType): Promise<KeyObject> {
    checkSlotId(slotId);
    const { privateKey } = await generateKeyPair(keyType);
    this.#keys.set(slotId, privateKey);
    return privateKey;
  }

  async load(slotId: string): Promise<KeyObject | undefined> {
    return this.#keys.get(checkSlotId(slotId));
  }

  async delete(slotId: string): Promise<void> {
    this.#keys.delete(checkSlotId(slotId));
  }

  /** Never print keys. */
  toJSON(): object {
    return { kind: this.kind, slots: [...this.#keys.keys()] };
  }
}

export class DiskKeyManager implements KeyManager {
  readonly kind = 'disk' as const;
  readonly keysPath: string;
  readonly #logger: KeyManagerLogger | undefined;

  constructor(keysPath: string, options: { logger?: KeyManagerLogger } = {}) {
    if (typeof keysPath !== 'string' || keysPath === '') throw new CaError('config', 'DiskKeyManager needs a keys directory path');
    this.keysPath = keysPath;
    this.#logger = options.logger;
  }

  /** The file holding a slot's key. */
  fileOf(slotId: string): string {
    return join(this.keysPath, `${checkSlotId(slotId)}.key`);
  }

  async generate(slotId: string, keyType: KeyType): Promise<KeyObject> {
    const file = this.fileOf(slotId);
    const { privateKey } = await generateKeyPair(keyType);
    await this.#ensureDir();
    const pem = privateKeyToPem(exportPrivateKeyPkcs8(privateKey));
    const tmp = join(this.keysPath, `.${slotId}.key.${randomBytes(8).toString('hex')}.tmp`);
    try {
      const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        await fh.chmod(0o600);
        await fh.writeFile(pem, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, file);
    } catch (cause) {
      await unlink(tmp).catch(() => undefined);
      throw new CaError('key_manager', `cannot write key file ${file}: ${(cause as Error).message}`, { cause });
    }
    await this.#syncDir();
    return privateKey;
  }

  async load(slotId: string): Promise<KeyObject | undefined> {
    const file = this.fileOf(slotId);
    let fh;
    try {
      fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (cause) {
      const code = errno(cause);
      if (code === 'ENOENT') return undefined;
      if (code === 'ELOOP') throw new CaError('key_manager', `key file ${file} is a symbolic link: refusing to use it`, { cause });
      throw new CaError('key_manager', `cannot open key file ${file}: ${(cause as Error).message}`, { cause });
    }
    let text: string;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new CaError('key_manager', `key file ${file} is not a regular file`);
      const uid = ownUid();
      if (uid !== undefined && st.uid !== uid) {
        throw new CaError('key_manager', `key file ${file} is owned by uid ${st.uid}, not by this server's uid ${uid}`);
      }
      if ((st.mode & 0o077) !== 0) {
        throw new CaError(
          'key_manager',
          `key file ${file} has mode ${octal(st.mode)}: it is accessible to group or others; treat the key as exposed, or chmod 0600 it if it was not`,
        );
      }
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
    try {
      return importPrivateKeyPkcs8(pemToPrivateKey(text));
    } catch (cause) {
      throw new CaError('key_manager', `key file ${file} does not hold one PKCS#8 PEM private key`, { cause });
    }
  }

  async delete(slotId: string): Promise<void> {
    const file = this.fileOf(slotId);
    try {
      await unlink(file);
    } catch (cause) {
      if (errno(cause) === 'ENOENT') return;
      throw new CaError('key_manager', `cannot delete key file ${file}: ${(cause as Error).message}`, { cause });
    }
    await this.#syncDir();
  }

  async #ensureDir(): Promise<void> {
    const dir = this.keysPath;
    try {
      // Refuses a path another local user controls; creates missing components 0700.
      ensureSafeDirectory(dir, 0o700, 'keys directory');
      const st = await stat(dir);
      if (!st.isDirectory()) throw new CaError('key_manager', `keys path ${dir} is not a directory`);
      const uid = ownUid();
      if (uid !== undefined && st.uid !== uid) {
        throw new CaError('key_manager', `keys directory ${dir} is owned by uid ${st.uid}, not by this server's uid ${uid}`);
      }
      if ((st.mode & 0o777) !== 0o700) {
        if ((st.mode & 0o077) !== 0) {
          this.#logger?.warn({ dir, mode: octal(st.mode) }, 'keys directory was accessible to group or others; setting it to 0700');
        }
        await chmod(dir, 0o700);
      }
    } catch (cause) {
      if (cause instanceof CaError) throw cause;
      throw new CaError('key_manager', `cannot prepare keys directory ${dir}: ${(cause as Error).message}`, { cause });
    }
  }

  async #syncDir(): Promise<void> {
    try {
      const dh = await open(this.keysPath, constants.O_RDONLY | constants.O_DIRECTORY);
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (cause) {
      throw new CaError('key_manager', `cannot sync keys directory ${this.keysPath}: ${(cause as Error).message}`, { cause });
    }
  }

  toJSON(): object {
    return { kind: this.kind, keysPath: this.keysPath };
  }
}

/** The key manager a server config asks for. */
export function keyManagerFromConfig(config: KeyManagerConfig, options: { logger?: KeyManagerLogger } = {}): KeyManager {
  return config.name === 'disk' ? new DiskKeyManager(config.keysPath, options) : new MemoryKeyManager();
}

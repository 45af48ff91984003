/**
 * Test helpers for the CA suites: temp dirs, a real SQLite datastore per test, an injectable
 * clock, CSRs, a capturing logger and openssl. Test-only.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import { generateKeyPair } from '../../spiffe/keys.js';
import { createCsr, type CreateCsrOptions } from '../../spiffe/x509/index.js';
import type { DataStore } from '../datastore/types.js';
import { openTestDataStore } from '../../test/support/datastore.js';
import { CaError, type CaErrorReason } from './errors.js';
import type { KeyManager } from './keymanager.js';
import { CaManager, type CaLogger, type CaManagerOptions } from './manager.js';

export const TD: TrustDomain = parseTrustDomain('example.org');

/** A mutable clock: `clock.now` is what CaManager gets; tests move it with advance(). */
export class Clock {
  #t: number;
  constructor(start: Date | number = Date.UTC(2030, 0, 1, 0, 0, 0)) {
    this.#t = typeof start === 'number' ? start : start.getTime();
  }
  readonly now = (): Date => new Date(this.#t);
  advance(seconds: number): Date {
    this.#t += seconds * 1000;
    return this.now();
  }
  set(t: Date): void {
    this.#t = t.getTime();
  }
}

/** A deterministic PRNG (mulberry32) for clock steps, so failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class TempDirs {
  readonly #dirs: string[] = [];
  readonly #stores: DataStore[] = [];
  make(prefix = 'spindle-ca-'): string {
    const d = mkdtempSync(join(tmpdir(), prefix));
    this.#dirs.push(d);
    return d;
  }
  async store(dir: string): Promise<DataStore> {
    const s = await openTestDataStore(join(dir, 'datastore.sqlite3'));
    this.#stores.push(s);
    return s;
  }
  async cleanup(): Promise<void> {
    for (const s of this.#stores.splice(0)) await s.close().catch(() => undefined);
    for (const d of this.#dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

export interface LogLine {
  level: string;
  obj: object;
  msg: string;
}

export function captureLogger(lines: LogLine[] = []): CaLogger & { lines: LogLine[] } {
  const at = (level: string) => (obj: object, msg: string) => {
    lines.push({ level, obj, msg });
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export function baseOptions(
  over: Partial<CaManagerOptions> & { datastore: CaManagerOptions['datastore']; keyManager: KeyManager; now: () => Date },
): CaManagerOptions {
  return {
    trustDomain: TD,
    caTtlSeconds: 3600,
    defaultX509SvidTtlSeconds: 600,
    defaultJwtSvidTtlSeconds: 300,
    ...over,
  };
}

export function startCa(
  over: Partial<CaManagerOptions> & { datastore: CaManagerOptions['datastore']; keyManager: KeyManager; now: () => Date },
): Promise<CaManager> {
  return CaManager.start(baseOptions(over));
}

/** A fresh P-256 key and its CSR. */
export async function freshCsr(opts: CreateCsrOptions = {}): Promise<Buffer> {
  const { privateKey } = await generateKeyPair('ec-p256');
  return createCsr(privateKey, opts);
}

/** Runs openssl; returns stdout+stderr; throws with the output on failure. */
export function openssl(args: string[], cwd?: string): string {
  const r = spawnSync('openssl', args, { encoding: 'utf8', cwd });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${out}`);
  return out;
}

/** Whether `err` is a CaError, with `reason` when one is given (for assert.rejects predicates). */
export function isCaError(err: unknown, reason?: CaErrorReason): err is CaError {
  return err instanceof CaError && (reason === undefined || err.reason === reason);
}

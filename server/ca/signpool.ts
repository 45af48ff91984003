/**
 * A pool of worker threads that verify CSRs and sign leaf X509-SVIDs for the batch path
 * (BatchNewX509SVID), so issuance uses more than the main thread's core. Each CSR's signature is
 * still verified (in signworker.ts, by the same issueX509SvidFromCsr the inline path uses), and
 * identity still comes only from the caller (the registration entry), never from the CSR.
 *
 * Key handling: the CA private key is handed to the workers as a KeyObject through postMessage
 * (worker threads are threads of this process; the key is cloned in memory, never serialized to
 * a file or log). A worker keeps only the issuer it received last (MAX_ISSUERS_PER_WORKER), so
 * after a CA activation the previous CA's key leaves the workers with the first batch signed by
 * the new one; the pool mirrors that and sends an issuer again when a worker no longer has it
 * (messages to a worker are processed in order, so queued chunks still find their issuer). Workers are unref'd: an idle
 * pool never keeps the process alive; close() terminates them (dropping their key copies).
 *
 * Failure: a worker that errors or exits rejects its pending chunks and is replaced on the next
 * call; callers (CaManager) fall back to signing inline.
 */
import { Worker } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import type { SpiffeId } from '../../spiffe/id.js';

/** A worker holds only the issuer it last received: an older CA's key copy is dropped at once. */
export const MAX_ISSUERS_PER_WORKER = 1;
/** Fewer CSRs than this per chunk are not worth a thread hop. */
export const MIN_CHUNK = 8;

export interface PoolIssuer {
  /** Distinct per Issuer object (a new CA, or the same CA reloaded, gets a new one). */
  issuerId: number;
  chain: readonly Buffer[];
  privateKey: KeyObject;
}

export interface PoolJob {
  id: SpiffeId;
  csr: Buffer;
  dnsNames: readonly string[];
  ttlSeconds: number;
}

export interface PoolSigned {
  der: Buffer;
  notAfter: Date;
  serialHex: string;
}

/** A failed item: `spiffe` errors are rebuilt as SpiffeError by the caller (statusOf maps them). */
export interface PoolFailure {
  spiffe: boolean;
  code?: string;
  reason?: string;
  message: string;
}

// ---- messages (shared with signworker.ts)

export type ToWorker =
  | { t: 'issuer'; issuerId: number; chain: Uint8Array[]; privateKey: KeyObject }
  | { t: 'sign'; seq: number; issuerId: number; now: number; jobs: Array<{ id: string; csr: Uint8Array; dnsNames: string[]; ttlSeconds: number }> };
export type WorkerResult = { der: Uint8Array; notAfter: number; serialHex: string } | { error: PoolFailure };
export interface FromWorker {
  seq: number;
  results: WorkerResult[];
}

interface Pending {
  resolve: (r: WorkerResult[]) => void;
  reject: (e: Error) => void;
}

class PoolWorker {
  readonly worker: Worker;
  /** Issuer ids this worker holds, oldest first (mirrors the worker's map). */
  readonly issuers: number[] = [];
  readonly pending = new Map<number, Pending>();
  dead = false;

  constructor(onDead: (w: PoolWorker) => void) {
    this.worker = new Worker(new URL('./signworker.js', import.meta.url));
    this.worker.unref();
    this.worker.on('message', (m: FromWorker) => {
      const p = this.pending.get(m.seq);
      if (p === undefined) return;
      this.pending.delete(m.seq);
      p.resolve(m.results);
      if (this.pending.size === 0) this.worker.unref();
    });
    const fail = (err: Error): void => {
      if (this.dead) return;
      this.dead = true;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      onDead(this);
    };
    this.worker.on('error', (err) => fail(err));
    this.worker.on('exit', (code) => fail(new Error(`signing worker exited with code ${code}`)));
  }

  ensureIssuer(issuer: PoolIssuer): void {
    if (this.issuers.includes(issuer.issuerId)) return;
    const msg: ToWorker = { t: 'issuer', issuerId: issuer.issuerId, chain: issuer.chain.map((d) => d), privateKey: issuer.privateKey };
    this.worker.postMessage(msg);
    this.issuers.push(issuer.issuerId);
    while (this.issuers.length > MAX_ISSUERS_PER_WORKER) this.issuers.shift();
  }

  run(seq: number, msg: ToWorker & { t: 'sign' }): Promise<WorkerResult[]> {
    return new Promise((resolve, reject) => {
      if (this.dead) return reject(new Error('signing worker is gone'));
      this.pending.set(seq, { resolve, reject });
      // Referenced while work is pending, so a process waiting on a batch does not exit under it.
      this.worker.ref();
      this.worker.postMessage(msg);
    });
  }
}

export class SignPool {
  readonly size: number;
  #workers: Array<PoolWorker | undefined> = [];
  #seq = 0;
  #closed = false;

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`signing pool size must be a positive whole number, got ${String(size)}`);
    this.size = size;
  }

  #worker(i: number): PoolWorker {
    let w = this.#workers[i];
    if (w === undefined || w.dead) {
      w = new PoolWorker((dead) => {
        const k = this.#workers.indexOf(dead);
        if (k >= 0) this.#workers[k] = undefined;
      });
      this.#workers[i] = w;
    }
    return w;
  }

  /**
   * Verifies and signs `jobs` with `issuer` at time `now`, spread over the workers in contiguous
   * chunks. Resolves with one outcome per job, in order; rejects when a worker fails.
   */
  async sign(issuer: PoolIssuer, jobs: readonly PoolJob[], now: Date): Promise<Array<PoolSigned | PoolFailure>> {
    if (this.#closed) throw new Error('signing pool is closed');
    const chunks = Math.max(1, Math.min(this.size, Math.floor(jobs.length / MIN_CHUNK)));
    const per = Math.ceil(jobs.length / chunks);
    const parts: Array<Promise<WorkerResult[]>> = [];
    for (let c = 0; c < chunks; c++) {
      const slice = jobs.slice(c * per, (c + 1) * per);
      if (slice.length === 0) break;
      const w = this.#pick();
      w.ensureIssuer(issuer);
      const seq = ++this.#seq;
      parts.push(
        w.run(seq, {
          t: 'sign',
          seq,
          issuerId: issuer.issuerId,
          now: now.getTime(),
          jobs: slice.map((j) => ({ id: j.id, csr: j.csr, dnsNames: [...j.dnsNames], ttlSeconds: j.ttlSeconds })),
        }),
      );
    }
    const out: Array<PoolSigned | PoolFailure> = [];
    for (const results of await Promise.all(parts)) {
      for (const r of results) {
        if ('error' in r) out.push(r.error);
        else out.push({ der: Buffer.from(r.der.buffer, r.der.byteOffset, r.der.byteLength), notAfter: new Date(r.notAfter), serialHex: r.serialHex });
      }
    }
    return out;
  }

  /** The worker with the fewest pending chunks (new workers are started up to `size`). */
  #pick(): PoolWorker {
    let best: PoolWorker | undefined;
    for (let i = 0; i < this.size; i++) {
      const w = this.#workers[i];
      if (w === undefined || w.dead) return this.#worker(i);
      if (best === undefined || w.pending.size < best.pending.size) best = w;
    }
    return best!;
  }

  /** Terminates the workers (their copies of CA keys go with them). */
  async close(): Promise<void> {
    this.#closed = true;
    const ws = this.#workers.filter((w): w is PoolWorker => w !== undefined);
    this.#workers = [];
    await Promise.all(ws.map((w) => w.worker.terminate()));
  }
}

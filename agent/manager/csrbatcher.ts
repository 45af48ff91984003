/**
 * Lazy, batched X509-SVID signing for the agent manager: a key and CSR per entry, one
 * BatchNewX509SVID call per burst (at most `batchSize` CSRs), an entry never signed twice at
 * once (later requests join the call queued or in flight), and an SVID signed for an entry that
 * changed or vanished meanwhile dropped (the entry as it now is is signed for the same waiters).
 */
import { randomInt } from 'node:crypto';
import { Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { parseSpiffeId, parseTrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { createCsr } from '../../spiffe/x509/index.js';
import type { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import type { BatchNewX509SVIDResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { retryUnavailable, type AgentApiConnection } from '../client/serverclient.js';
import { RENEW_RETRY_MS } from './backoff.js';
import type { SelectorIndex } from './selectorindex.js';
import { EXPIRY_MARGIN_MS, usable, type CachedSvid } from './svid.js';
import type { SyncClient } from './syncclient.js';
import { NotReadyError, type ManagerLogger } from './types.js';

export interface CsrBatcherHost {
  connection: () => AgentApiConnection;
  logger: ManagerLogger;
  now: () => Date;
  /** Max CSRs per BatchNewX509SVID call; default 500. */
  batchSize: number | undefined;
  /** How soon a failed renewal is tried again; default RENEW_RETRY_MS. */
  retryMs: number | undefined;
  /** How often a call that failed with UNAVAILABLE is made again (several servers; 0 with one). */
  failoverRetries: number;
  entries: SelectorIndex;
  /** Where signed SVIDs go, by entry ID. */
  svids: Map<string, CachedSvid>;
  sync: SyncClient;
  stopped: () => boolean;
  /** An SVID was stored: updates built before are stale. */
  changed: () => void;
  /** A batch has been dealt with (signed, refused or failed): renewal times may have moved. */
  settled: () => void;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class CsrBatcher {
  readonly #h: CsrBatcherHost;
  /** Entries waiting to be signed (not sent yet), with the promises of whoever waits for them. */
  #pending = new Map<string, Waiter[]>();
  /** Entries whose CSR is in a BatchNewX509SVID call now: later requests wait for that call. */
  #inflight = new Map<string, Waiter[]>();
  #flushScheduled = false;

  constructor(host: CsrBatcherHost) {
    this.#h = host;
  }

  /** The entry is queued or in a signing call now. */
  busy(id: string): boolean {
    return this.#inflight.has(id) || this.#pending.has(id);
  }

  /** Rejects whoever waits for an entry not sent yet. */
  stop(): void {
    const stopped = new NotReadyError('the agent manager has stopped');
    for (const list of this.#pending.values()) for (const w of list) w.reject(stopped);
    this.#pending.clear();
  }

  /**
   * Gets SVIDs signed for these entries (those without one, or all of them with `renew`),
   * joining a batch already queued or in flight for the same entry. Resolves, once every
   * entry has been dealt with, with the errors of those that could not be signed.
   */
  ensureSigned(entries: readonly Entry[], renew = false): Promise<unknown[]> {
    const waits: Promise<void>[] = [];
    const now = this.#h.now().getTime();
    for (const e of entries) {
      // A held SVID is served while its renewal is under way; one past its serving time is
      // as good as missing (it is signed again now, not when its renewal retry comes).
      const held = this.#h.svids.get(e.id);
      if (!renew && held && usable(held, now)) continue;
      const joined = this.#inflight.get(e.id) ?? this.#pending.get(e.id);
      waits.push(
        new Promise((resolve, reject) => {
          if (joined) joined.push({ resolve, reject });
          else this.#pending.set(e.id, [{ resolve, reject }]);
        }),
      );
    }
    if (this.#pending.size > 0) this.#scheduleFlush();
    return Promise.allSettled(waits).then((rs) => rs.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])));
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    const h = this.#h;
    if (h.stopped()) {
      this.stop();
      return;
    }
    const batchSize = h.batchSize ?? 500;
    const ids = [...this.#pending.keys()].slice(0, batchSize);
    if (ids.length === 0) return;
    for (const id of ids) {
      this.#inflight.set(id, this.#pending.get(id)!);
      this.#pending.delete(id);
    }
    if (this.#pending.size > 0) this.#scheduleFlush();
    /** Ends the wait for one entry: its SVID is stored (or it cannot be, `err`). */
    const settle = (id: string, err?: unknown): void => {
      const w = this.#inflight.get(id) ?? [];
      this.#inflight.delete(id);
      const held = h.svids.get(id);
      // A failed renewal: keep the current SVID and try again soon (not in a tight loop).
      if (err && held) held.renewAt = Math.max(held.renewAt, h.now().getTime() + (h.retryMs ?? RENEW_RETRY_MS));
      for (const x of w) (err ? x.reject(err) : x.resolve());
    };
    /** The entry changed while it was being signed: sign its current version for the same waiters. */
    const requeue = (id: string): void => {
      const w = this.#inflight.get(id) ?? [];
      this.#inflight.delete(id);
      const list = this.#pending.get(id);
      if (list) list.push(...w);
      else this.#pending.set(id, w);
      this.#scheduleFlush();
    };
    let todo: Array<{ entry: Entry; keys: Awaited<ReturnType<typeof generateKeyPair>>; csr: Buffer }> = [];
    try {
      const work = await Promise.all(
        ids.map(async (id) => {
          const entry = h.entries.get(id);
          if (!entry) return undefined;
          const keys = await generateKeyPair('ec-p256');
          return { entry, keys, csr: createCsr(keys.privateKey) };
        }),
      );
      todo = work.filter((w): w is NonNullable<typeof w> => w !== undefined);
      // Removed before we got to it: nothing to sign, nothing to wait for.
      for (const id of ids) if (!todo.some((t) => t.entry.id === id)) settle(id);
      if (todo.length === 0) return;
      const params = todo.map((t) => ({ entryId: t.entry.id, csr: t.csr }));
      // A server that goes away under the call: made again once the channel has moved to another.
      const res = await retryUnavailable(
        () =>
          new Promise<BatchNewX509SVIDResponse>((resolve, reject) =>
            h.connection().client.batchNewX509Svid({ params }, new Metadata(), { deadline: Date.now() + 30_000 }, (err, r) => (err ? reject(err) : resolve(r!))),
          ),
        h.failoverRetries,
      );
      const now = h.now().getTime();
      // The server answers: reachable again (or, while the stream waits out its backoff, reconnect now).
      h.sync.answered();
      todo.forEach((t, i) => {
        const r = res.results[i];
        const current = h.entries.get(t.entry.id);
        if (!current) {
          // Removed while it was being signed: do not keep an SVID for it.
          settle(t.entry.id);
          return;
        }
        if (current.revisionNumber !== t.entry.revisionNumber || current.spiffeId !== t.entry.spiffeId) {
          // Changed while it was being signed (new SPIFFE ID, DNS names, TTL...): that SVID is stale.
          requeue(t.entry.id);
          return;
        }
        if (!r?.svid || (r.status && r.status.code !== 0)) {
          settle(t.entry.id, new Error(`server refused to sign ${t.entry.spiffeId}: ${r?.status?.message ?? 'no result'}`));
          return;
        }
        const notAfter = new Date(Number(r.svid.expiresAt) * 1000);
        const life = notAfter.getTime() - now;
        // Renew at half the remaining life, minus up to 10% jitter so a fleet does not stampede.
        const renewAt = now + life / 2 - randomInt(0, Math.max(1, Math.floor(life / 10)));
        h.changed();
        h.svids.set(t.entry.id, {
          revision: t.entry.revisionNumber,
          renewAt,
          dueAt: renewAt,
          marginMs: Math.min(EXPIRY_MARGIN_MS, Math.max(0, life / 10)),
          expiryLogged: false,
          identity: {
            entryId: t.entry.id,
            spiffeId: parseSpiffeId(r.svid.spiffeId),
            hint: t.entry.hint,
            chain: r.svid.certChain,
            privateKey: t.keys.privateKey,
            privateKeyPkcs8: exportPrivateKeyPkcs8(t.keys.privateKey),
            notAfter,
            federatesWith: t.entry.federatesWith.map((td) => parseTrustDomain(td)),
          },
        });
        settle(t.entry.id);
      });
      h.logger.debug({ count: todo.length }, 'X509-SVIDs signed');
    } catch (err) {
      const code = (err as Partial<ServiceError>).code;
      if (code === GrpcStatus.UNAVAILABLE || code === GrpcStatus.DEADLINE_EXCEEDED) h.sync.unreachable(h.now().getTime());
      h.logger.warn({ err: (err as Error).message, count: ids.length }, 'signing X509-SVIDs failed');
      for (const id of ids) if (this.#inflight.has(id)) settle(id, err);
    } finally {
      h.settled();
    }
  }
}

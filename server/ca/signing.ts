/**
 * Signing with the active authorities: X509-SVIDs from CSRs (one at a time, or in batches on the
 * signing pool's worker threads), JWT-SVIDs, and the server's own SVID.
 *
 * The identity and DNS names always come from the caller (a registration entry), never from the
 * CSR, whose own signature is verified on every path. A TTL of 0 or undefined means the
 * configured default; every SVID is capped at its authority's notAfter. With no active
 * authority, calls fail with CaError `not_ready`.
 */
import { availableParallelism } from 'node:os';
import type { KeyObject } from 'node:crypto';
import { SpiffeError, type ErrorCode } from '../../spiffe/errors.js';
import { assertLeafId, parseSpiffeId, trustDomainOf, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { mintJwtSvid } from '../../spiffe/jwtsvid.js';
import { issueX509Svid, issueX509SvidFromCsr } from '../../spiffe/x509/index.js';
import type { LiveJwt, LiveX509 } from './authorities.js';
import { CaError } from './errors.js';
import type { CaLogger } from './options.js';
import type { ServerSvidSigner } from './serveridentity.js';
import { SignPool } from './signpool.js';
import type { SignedJwtSvid, SignedX509Svid } from './types.js';

/** Default signing worker threads: one per core, at most 4 (0 on a single-core machine). */
export const DEFAULT_SIGNING_WORKERS = availableParallelism() > 1 ? Math.min(4, availableParallelism()) : 0;
/** Batches smaller than this are signed inline (a thread hop costs more than it saves). */
export const MIN_POOLED_BATCH = 16;

export interface X509SvidRequest {
  id: SpiffeId;
  csr: Buffer;
  dnsNames?: readonly string[];
  ttlSeconds?: number;
}

export interface SvidSignerOptions {
  trustDomain: TrustDomain;
  now: () => Date;
  log: CaLogger;
  defaultX509SvidTtlSeconds: number;
  defaultJwtSvidTtlSeconds: number;
  /** The `iss` of every JWT-SVID (server.jwt_issuer); undefined: none. */
  jwtIssuer?: string | undefined;
  serverSvidTtlSeconds: number;
  /** Worker threads for batches (0: always inline). */
  signingWorkers: number;
  /** The active X.509 CA; throws CaError `not_ready` when there is none. */
  activeX509: () => LiveX509;
  /** The active JWT key, if any. */
  activeJwt: () => LiveJwt | undefined;
}

export class SvidSigner {
  readonly #o: SvidSignerOptions;
  #pool: SignPool | undefined;

  constructor(o: SvidSignerOptions) {
    this.#o = o;
  }

  signX509Svid(req: X509SvidRequest): SignedX509Svid {
    const active = this.#o.activeX509();
    const issued = issueX509SvidFromCsr({
      csr: req.csr,
      id: req.id,
      dnsNames: req.dnsNames ?? [],
      ttlSeconds: req.ttlSeconds || this.#o.defaultX509SvidTtlSeconds,
      issuer: active.issuer,
      now: this.#o.now(),
    });
    return { chain: [issued.der, ...active.chainTail], notAfter: issued.notAfter, serialHex: issued.serialHex };
  }

  /**
   * One result per request, in order. Small batches (or no workers) are signed inline; a pool
   * failure is logged and the batch is signed inline instead.
   */
  async signX509SvidBatch(reqs: ReadonlyArray<X509SvidRequest>): Promise<Array<SignedX509Svid | Error>> {
    const inline = (): Array<SignedX509Svid | Error> =>
      reqs.map((r) => {
        try {
          return this.signX509Svid(r);
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err));
        }
      });
    if (this.#o.signingWorkers === 0 || reqs.length < MIN_POOLED_BATCH) return inline();
    let active: LiveX509;
    try {
      active = this.#o.activeX509();
    } catch (err) {
      return reqs.map(() => err as Error);
    }
    this.#pool ??= new SignPool(this.#o.signingWorkers);
    let outcomes: Awaited<ReturnType<SignPool['sign']>>;
    try {
      outcomes = await this.#pool.sign(
        { issuerId: active.poolId, chain: active.issuer.chain, privateKey: active.privateKey },
        reqs.map((r) => ({ id: r.id, csr: r.csr, dnsNames: r.dnsNames ?? [], ttlSeconds: r.ttlSeconds || this.#o.defaultX509SvidTtlSeconds })),
        this.#o.now(),
      );
    } catch (err) {
      this.#o.log.warn({ err }, 'signing worker failed; signing this batch inline');
      return inline();
    }
    return outcomes.map((o) => {
      if ('der' in o) return { chain: [o.der, ...active.chainTail], notAfter: o.notAfter, serialHex: o.serialHex };
      return o.spiffe ? new SpiffeError(o.code as ErrorCode, o.reason ?? 'unknown', o.message) : new Error(o.message);
    });
  }

  async mintJwtSvid(req: { id: SpiffeId; audience: readonly string[]; ttlSeconds?: number }): Promise<SignedJwtSvid> {
    const id = parseSpiffeId(req.id);
    assertLeafId(id);
    const td = this.#o.trustDomain;
    if (trustDomainOf(id) !== td) {
      throw new CaError('trust_domain', `cannot mint a JWT-SVID for ${JSON.stringify(id)}: not in trust domain ${JSON.stringify(td)}`);
    }
    const active = this.#o.activeJwt();
    if (active === undefined) throw new CaError('not_ready', 'no active JWT signing key');
    const minted = await mintJwtSvid({
      id,
      audience: req.audience,
      ttlSeconds: req.ttlSeconds || this.#o.defaultJwtSvidTtlSeconds,
      signer: active.signer,
      now: this.#o.now(),
      expiresAtMost: active.notAfter,
      ...(this.#o.jwtIssuer !== undefined ? { issuer: this.#o.jwtIssuer } : {}),
    });
    return { token: minted.token, expiresAt: minted.expiresAt, issuedAt: minted.issuedAt };
  }

  /** Signs the server's SVID with the active X.509 CA (for ServerIdentity.renew). */
  readonly signServerSvid: ServerSvidSigner = (id: SpiffeId, publicKey: KeyObject, at: Date) => {
    const a = this.#o.activeX509();
    const issued = issueX509Svid({ id, publicKey, ttlSeconds: this.#o.serverSvidTtlSeconds, issuer: a.issuer, now: at });
    return { chain: [issued.der, ...a.chainTail], notAfter: issued.notAfter, serialHex: issued.serialHex, caId: a.record.id };
  };

  /** Terminates the signing pool's workers (dropping their key copies); a later batch starts a new pool. */
  async close(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.close();
  }
}

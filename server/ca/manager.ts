/**
 * The server CA: X.509 CAs and JWT signing keys with SPIRE's rotation model, the trust bundle of
 * our own trust domain, and the server's own SVID.
 *
 * Slots and states (per kind: X.509 CA, JWT key; two key slots A and B each):
 *   prepared  key + certificate/kid exist and the authority is PUBLISHED in the bundle
 *   active    signs everything (exactly one per kind once started)
 *   old       signs nothing; its key is deleted; it stays in the bundle until pruned
 *   (pruned)  dropped from the journal and the bundle
 * Timing, for the active authority with lifetime L = notAfter - issuedAt:
 *   - at issuedAt + L/2, when nothing is prepared: prepare the next one (new key in the other
 *     slot, CA valid from now for caTtl, capped by the upstream CA) and publish it;
 *   - at issuedAt + 5L/6 (checked on a later rotate() than the one that prepared it): activate
 *     the prepared one, the active one becomes old;
 *   - no usable active (none, expired, key missing or not matching, made for another upstream
 *     mode): activate the prepared one if usable, else make one and activate it at once.
 *   - prune: old authorities whose notAfter is more than `pruneGraceSeconds` (default 60, a JWT
 *     validator's leeway) in the past. Everything they signed was capped at their notAfter, so
 *     nothing they signed can still be valid.
 * A prepared authority that turns out unusable (its key is gone) is dropped at once: it never
 * signed anything.
 *
 * Bundle: X.509 authorities = upstream roots (upstream mode) + every self-signed CA in the
 * journal (prepared, active, old); JWT authorities = every JWT key in the journal. A rotate()
 * step that changes it bumps spiffe_sequence by exactly 1; the journal (which records the new
 * sequence) is written first, then DataStore.setBundle, then the in-memory state switches and
 * onBundleChange listeners run. A step whose writes fail changes nothing in memory; start()
 * reconciles a journal written without its bundle (sequence = max(stored, journal) + 1).
 * Upstream roots that are no longer configured stay published while an intermediate not signed
 * by the current upstream CA remains, and never past their own notAfter.
 *
 * Keys never leave the KeyManager except into the Issuer / JWT signer; nothing here logs keys.
 */
import { X509Certificate, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { SpiffeError, type ErrorCode } from '../../spiffe/errors.js';
import { SignPool } from './signpool.js';
import { LogField } from '../../common/logging.js';
import { Bundle, marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { assertLeafId, parseSpiffeId, parseTrustDomain, trustDomainOf, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { DEFAULT_KEY_TYPE, exportPublicKeySpki, importPublicKeySpki, type KeyType } from '../../spiffe/keys.js';
import { mintJwtSvid, type JwtSigner } from '../../spiffe/jwtsvid.js';
import {
  DEFAULT_CA_SUBJECT,
  createIssuer,
  createSelfSignedCa,
  issueIntermediateCa,
  issueX509Svid,
  issueX509SvidFromCsr,
  parseCertificate,
  type Issuer,
  type X509Subject,
} from '../../spiffe/x509/index.js';
import type { ServerConfig } from '../config/config.js';
import type { DataStore } from '../datastore/types.js';
import { CaError } from './errors.js';
import {
  JWT_KEY_IDS,
  X509_KEY_IDS,
  emptyJournal,
  parseJournal,
  serializeJournal,
  type Journal,
  type JwtRecord,
  type RecordBase,
  type RootRecord,
  type SlotName,
  type SlotStatus,
  type X509Record,
} from './journal.js';
import { keyManagerFromConfig, type KeyManager } from './keymanager.js';
import { ServerIdentity, type ServerSvid } from './serveridentity.js';
import type { CaSigner, SignedJwtSvid, SignedX509Svid } from './types.js';
import { loadUpstreamDisk, type UpstreamAuthority, type UpstreamDiskOptions } from './upstream.js';

/** The pino methods the CA uses; a pino Logger satisfies it. */
export interface CaLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What the CA needs from the datastore. */
export type CaDataStore = Pick<DataStore, 'getCaJournal' | 'setCaJournal' | 'getBundle' | 'setBundle'>;

export interface CaManagerOptions {
  trustDomain: TrustDomain;
  datastore: CaDataStore;
  keyManager: KeyManager;
  /** The clock (injected in tests). Default: the system clock. */
  now?: () => Date;
  /** Lifetime of each X.509 CA and JWT key (SPIRE ca_ttl). */
  caTtlSeconds: number;
  caKeyType?: KeyType;
  jwtKeyType?: KeyType;
  /** Subject of our CA certificates (a serialNumber attribute is added per CA). Default C=US, O=SPIFFE. */
  caSubject?: X509Subject;
  defaultX509SvidTtlSeconds: number;
  defaultJwtSvidTtlSeconds: number;
  /** UpstreamAuthority "disk"; absent: self-signed CAs. */
  upstream?: UpstreamDiskOptions;
  logger?: CaLogger;
  /** startTimers() period. Default 10 s. */
  rotateIntervalMs?: number;
  /** How long past its notAfter an old authority stays in the bundle. Default 60 s. */
  pruneGraceSeconds?: number;
  /** spiffe_refresh_hint of the published bundle (seconds); default: none. */
  refreshHintSeconds?: number;
  /** Lifetime of the server's own SVID. Default: defaultX509SvidTtlSeconds. */
  serverSvidTtlSeconds?: number;
  /**
   * Worker threads that verify CSRs and sign for signX509SvidBatch (0: sign inline on the
   * calling thread). Default: DEFAULT_SIGNING_WORKERS (the machine's parallelism, at most 4).
   */
  signingWorkers?: number;
}

/** Default signing worker threads: one per core, at most 4 (0 on a single-core machine). */
export const DEFAULT_SIGNING_WORKERS = availableParallelism() > 1 ? Math.min(4, availableParallelism()) : 0;
/** Batches smaller than this are signed inline (a thread hop costs more than it saves). */
export const MIN_POOLED_BATCH = 16;

export type RotationEventAction = 'prepared' | 'activated' | 'demoted' | 'pruned' | 'dropped' | 'published';

export interface RotationEvent {
  kind: 'x509' | 'jwt' | 'upstream_root';
  action: RotationEventAction;
  /** X.509 CA serial hex, JWT kid, or root serial hex. */
  id: string;
  notAfter: Date;
}

export interface RotationResult {
  /** The step changed the bundle (its sequence was bumped and listeners were called). */
  bundleChanged: boolean;
  events: RotationEvent[];
  serverSvidRenewed: boolean;
}

export interface AuthorityStatus {
  /** X.509: CA certificate serial hex; JWT: kid. */
  id: string;
  slot: SlotName;
  status: SlotStatus;
  issuedAt: Date;
  notAfter: Date;
  activatedAt?: Date;
  /** X.509 only: self-signed (true) or an intermediate under the upstream authority. */
  selfSigned?: boolean;
}

export interface CaStatus {
  trustDomain: TrustDomain;
  upstream: { certFilePath: string; notAfter: Date } | undefined;
  bundleSequence: bigint;
  x509: AuthorityStatus[];
  jwt: AuthorityStatus[];
  serverSvid: { serialHex: string; notAfter: Date } | undefined;
  lastRotation: { at: Date; error?: string } | undefined;
}

export const DEFAULT_ROTATE_INTERVAL_MS = 10_000;
export const DEFAULT_PRUNE_GRACE_SECONDS = 60;
/** Prepare the next authority at this fraction of the active one's lifetime. */
export const PREPARE_AT = 1 / 2;
/** Activate the prepared authority at this fraction of the active one's lifetime. */
export const ACTIVATE_AT = 5 / 6;

const KID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const KID_LENGTH = 32;

/** 32 random base62 characters (as SPIRE's JWT key IDs), without modulo bias. */
export function randomKid(): string {
  let out = '';
  while (out.length < KID_LENGTH) {
    for (const b of randomBytes(48)) {
      if (b >= 248) continue; // 248 = 4 * 62
      out += KID_ALPHABET[b % 62];
      if (out.length === KID_LENGTH) break;
    }
  }
  return out;
}

/** Our CA subject from the config's ca_subject (first country / organization, common name if set). */
export function caSubjectFromConfig(s: ServerConfig['caSubject']): X509Subject {
  const out: X509Subject = {};
  if (s.country[0]) out.country = s.country[0];
  if (s.organization[0]) out.organization = s.organization[0];
  if (s.commonName) out.commonName = s.commonName;
  return out;
}

/** CaManager.start options from a validated server config. */
export function caOptionsFromConfig(
  config: ServerConfig,
  deps: { datastore: CaDataStore; logger?: CaLogger; now?: () => Date; keyManager?: KeyManager },
): CaManagerOptions {
  const ua = config.plugins.upstreamAuthority;
  const opts: CaManagerOptions = {
    trustDomain: config.trustDomain,
    datastore: deps.datastore,
    keyManager: deps.keyManager ?? keyManagerFromConfig(config.plugins.keyManager, deps.logger ? { logger: deps.logger } : {}),
    caTtlSeconds: config.caTtl,
    caKeyType: config.caKeyType,
    jwtKeyType: config.jwtKeyType,
    caSubject: caSubjectFromConfig(config.caSubject),
    defaultX509SvidTtlSeconds: config.defaultX509SvidTtl,
    defaultJwtSvidTtlSeconds: config.defaultJwtSvidTtl,
  };
  if (deps.now) opts.now = deps.now;
  if (deps.logger) opts.logger = deps.logger;
  if (ua) {
    opts.upstream = { keyFilePath: ua.keyFilePath, certFilePath: ua.certFilePath };
    if (ua.bundleFilePath) opts.upstream.bundleFilePath = ua.bundleFilePath;
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Internal state

interface LiveX509 {
  record: X509Record;
  issuer: Issuer;
  /** The CA key, for the signing pool's workers only (never logged or written by this module). */
  privateKey: KeyObject;
  /** Identifies this issuer to the signing pool. */
  poolId: number;
  /** What follows the leaf in an SVID chain: [] (self-signed) or [our CA, ...upstream intermediates]. */
  chainTail: Buffer[];
}

interface LiveJwt {
  record: JwtRecord;
  signer: JwtSigner;
  notAfter: Date;
}

interface State {
  journal: Journal;
  /** Exactly what was last written (or read) as the journal document. */
  journalText: string;
  /** Usable prepared/active X.509 CAs by record id. */
  liveX509: Map<string, LiveX509>;
  /** Usable prepared/active JWT keys by kid. */
  liveJwt: Map<string, LiveJwt>;
  /** The published bundle (with its sequence). */
  bundle: Bundle;
}

/** A mutable copy of the state that one step works on. */
interface Draft {
  x509: X509Record[];
  jwt: JwtRecord[];
  upstreamRoots: RootRecord[];
  liveX509: Map<string, LiveX509>;
  liveJwt: Map<string, LiveJwt>;
  events: RotationEvent[];
}

let poolIds = 0;

const NOOP_LOGGER: CaLogger = { debug() {}, info() {}, warn() {}, error() {} };

const ms = (iso: string): number => Date.parse(iso);
const b64 = (s: string): Buffer => Buffer.from(s, 'base64');
const otherSlot = (s: SlotName): SlotName => (s === 'A' ? 'B' : 'A');

function lifetimePoint(r: RecordBase, fraction: number): number {
  const start = ms(r.issuedAt);
  return start + (ms(r.notAfter) - start) * fraction;
}

function issuedBy(childDer: Buffer, parent: X509Certificate): boolean {
  try {
    const child = new X509Certificate(childDer);
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

function serialOf(der: Buffer): string {
  try {
    return parseCertificate(der).serialHex;
  } catch {
    return '';
  }
}

function positive(name: string, v: number | undefined, integer: boolean): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isSafeInteger(v))) {
    throw new CaError('config', `${name} must be a positive ${integer ? 'whole ' : ''}number, got ${String(v)}`);
  }
}

/** A slot kind (X.509 CA or JWT key): how the generic planner reads and makes its records. */
interface Kind<R extends RecordBase, L extends { record: R }> {
  name: 'x509' | 'jwt';
  label: string;
  idOf(r: R): string;
  records(d: Draft): R[];
  setRecords(d: Draft, rs: R[]): void;
  live(d: Draft): Map<string, L>;
  /** Makes a new prepared authority in `slot`. */
  create(now: Date, slot: SlotName): Promise<L>;
  /** notAfter an authority made now would get. */
  projectedNotAfter(now: Date): number;
}

// ---------------------------------------------------------------------------------------------

export class CaManager implements CaSigner {
  readonly trustDomain: TrustDomain;
  readonly #ds: CaDataStore;
  readonly #km: KeyManager;
  readonly #now: () => Date;
  readonly #log: CaLogger;
  readonly #caTtl: number;
  readonly #caKeyType: KeyType;
  readonly #jwtKeyType: KeyType;
  readonly #caSubject: X509Subject;
  readonly #x509Ttl: number;
  readonly #jwtTtl: number;
  readonly #serverSvidTtl: number;
  readonly #graceMs: number;
  readonly #refreshHint: number | undefined;
  readonly #rotateIntervalMs: number;
  readonly #upstreamOptions: UpstreamDiskOptions | undefined;
  #upstream: UpstreamAuthority | undefined;
  readonly #issuedByUpstream = new Map<string, boolean>();
  #state!: State;
  #activeX509: LiveX509 | undefined;
  #activeJwt: LiveJwt | undefined;
  readonly #bundleListeners = new Set<(bundle: Bundle) => void>();
  readonly #server: ServerIdentity;
  #inflight: Promise<RotationResult> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastRotation: { at: Date; error?: string } | undefined;
  #warnedNoOutlive = false;
  readonly #signingWorkers: number;
  #pool: SignPool | undefined;

  private constructor(o: CaManagerOptions) {
    this.trustDomain = parseTrustDomain(o.trustDomain);
    if (!o.datastore) throw new CaError('config', 'datastore is required');
    if (!o.keyManager) throw new CaError('config', 'keyManager is required');
    positive('caTtlSeconds', o.caTtlSeconds, true);
    positive('defaultX509SvidTtlSeconds', o.defaultX509SvidTtlSeconds, true);
    positive('defaultJwtSvidTtlSeconds', o.defaultJwtSvidTtlSeconds, true);
    positive('serverSvidTtlSeconds', o.serverSvidTtlSeconds, true);
    positive('rotateIntervalMs', o.rotateIntervalMs, false);
    if (o.pruneGraceSeconds !== undefined && (!Number.isFinite(o.pruneGraceSeconds) || o.pruneGraceSeconds < 0)) {
      throw new CaError('config', `pruneGraceSeconds must be a non-negative number, got ${String(o.pruneGraceSeconds)}`);
    }
    this.#ds = o.datastore;
    this.#km = o.keyManager;
    this.#now = o.now ?? (() => new Date());
    this.#log = o.logger ?? NOOP_LOGGER;
    this.#caTtl = o.caTtlSeconds;
    this.#caKeyType = o.caKeyType ?? DEFAULT_KEY_TYPE;
    this.#jwtKeyType = o.jwtKeyType ?? this.#caKeyType;
    this.#caSubject = o.caSubject ?? DEFAULT_CA_SUBJECT;
    this.#x509Ttl = o.defaultX509SvidTtlSeconds;
    this.#jwtTtl = o.defaultJwtSvidTtlSeconds;
    this.#serverSvidTtl = o.serverSvidTtlSeconds ?? o.defaultX509SvidTtlSeconds;
    this.#graceMs = (o.pruneGraceSeconds ?? DEFAULT_PRUNE_GRACE_SECONDS) * 1000;
    this.#refreshHint = o.refreshHintSeconds;
    this.#rotateIntervalMs = o.rotateIntervalMs ?? DEFAULT_ROTATE_INTERVAL_MS;
    this.#upstreamOptions = o.upstream;
    if (o.signingWorkers !== undefined && (!Number.isSafeInteger(o.signingWorkers) || o.signingWorkers < 0)) {
      throw new CaError('config', `signingWorkers must be a non-negative whole number, got ${String(o.signingWorkers)}`);
    }
    this.#signingWorkers = o.signingWorkers ?? DEFAULT_SIGNING_WORKERS;
    this.#server = new ServerIdentity(this.trustDomain, (err) => this.#log.error({ err }, 'server SVID listener failed'));
    if (this.#caTtl < 6 * this.#x509Ttl) {
      this.#log.warn(
        { ca_ttl: this.#caTtl, default_x509_svid_ttl: this.#x509Ttl },
        'ca_ttl is less than 6 times default_x509_svid_ttl: SVIDs signed late in a CA\'s active period will be cut short at its expiry',
      );
    }
  }

  /**
   * Loads the journal and keys, makes and activates an X.509 CA and a JWT key when there is no
   * usable active one, publishes the bundle, and issues the server SVID.
   */
  static async start(options: CaManagerOptions): Promise<CaManager> {
    const m = new CaManager(options);
    await m.#init();
    return m;
  }

  // ---- CaSigner ----

  signX509Svid(req: { id: SpiffeId; csr: Buffer; dnsNames?: readonly string[]; ttlSeconds?: number }): SignedX509Svid {
    const active = this.#requireActiveX509();
    const issued = issueX509SvidFromCsr({
      csr: req.csr,
      id: req.id,
      dnsNames: req.dnsNames ?? [],
      ttlSeconds: req.ttlSeconds || this.#x509Ttl,
      issuer: active.issuer,
      now: this.#now(),
    });
    return { chain: [issued.der, ...active.chainTail], notAfter: issued.notAfter, serialHex: issued.serialHex };
  }

  async signX509SvidBatch(
    reqs: ReadonlyArray<{ id: SpiffeId; csr: Buffer; dnsNames?: readonly string[]; ttlSeconds?: number }>,
  ): Promise<Array<SignedX509Svid | Error>> {
    const inline = (): Array<SignedX509Svid | Error> =>
      reqs.map((r) => {
        try {
          return this.signX509Svid(r);
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err));
        }
      });
    if (this.#signingWorkers === 0 || reqs.length < MIN_POOLED_BATCH) return inline();
    let active: LiveX509;
    try {
      active = this.#requireActiveX509();
    } catch (err) {
      return reqs.map(() => err as Error);
    }
    this.#pool ??= new SignPool(this.#signingWorkers);
    let outcomes: Awaited<ReturnType<SignPool['sign']>>;
    try {
      outcomes = await this.#pool.sign(
        { issuerId: active.poolId, chain: active.issuer.chain, privateKey: active.privateKey },
        reqs.map((r) => ({ id: r.id, csr: r.csr, dnsNames: r.dnsNames ?? [], ttlSeconds: r.ttlSeconds || this.#x509Ttl })),
        this.#now(),
      );
    } catch (err) {
      this.#log.warn({ err }, 'signing worker failed; signing this batch inline');
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
    if (trustDomainOf(id) !== this.trustDomain) {
      throw new CaError('trust_domain', `cannot mint a JWT-SVID for ${JSON.stringify(id)}: not in trust domain ${JSON.stringify(this.trustDomain)}`);
    }
    const active = this.#activeJwt;
    if (active === undefined) throw new CaError('not_ready', 'no active JWT signing key');
    const minted = await mintJwtSvid({
      id,
      audience: req.audience,
      ttlSeconds: req.ttlSeconds || this.#jwtTtl,
      signer: active.signer,
      now: this.#now(),
      expiresAtMost: active.notAfter,
    });
    return { token: minted.token, expiresAt: minted.expiresAt, issuedAt: minted.issuedAt };
  }

  bundle(): Bundle {
    return this.#state.bundle.clone();
  }

  /**
   * Upstream mode: our intermediates that are not expired (active, prepared and old ones: agents
   * may still present SVIDs of an old one) followed by the upstream intermediates (cert_file_path
   * certificates that are not roots). Self-signed mode: [] (our CAs are the roots), except for
   * unexpired intermediates left from an earlier upstream configuration.
   */
  intermediates(): readonly Buffer[] {
    const t = this.#now().getTime();
    const ours = this.#state.journal.x509.filter((r) => !r.selfSigned && t <= ms(r.notAfter)).map((r) => b64(r.certDer));
    return this.#upstream === undefined ? ours : [...ours, ...this.#upstream.intermediates.map((d) => Buffer.from(d))];
  }

  onBundleChange(listener: (bundle: Bundle) => void): () => void {
    this.#bundleListeners.add(listener);
    return () => {
      this.#bundleListeners.delete(listener);
    };
  }

  // ---- server SVID ----

  /** The server's current SVID (`spiffe://<td>/spire/server`) and key, for the agent API's TLS. */
  serverSvid(): ServerSvid {
    const svid = this.#server.current();
    if (svid === undefined) throw new CaError('not_ready', 'the server SVID has not been issued');
    return svid;
  }

  /** Called with every new server SVID (renewal at half-life or after a CA activation). */
  onServerSvidChange(listener: (svid: ServerSvid) => void): () => void {
    return this.#server.onChange(listener);
  }

  // ---- rotation ----

  /**
   * One rotation step at the injected clock's time: prune, prepare, activate, publish, renew
   * the server SVID. If a step is already running, returns that step's promise instead of
   * starting another. Rejects when the step could not be persisted (nothing changed then).
   */
  rotate(): Promise<RotationResult> {
    if (this.#inflight !== undefined) return this.#inflight;
    const run = this.#rotateOnce().finally(() => {
      this.#inflight = undefined;
    });
    this.#inflight = run;
    return run;
  }

  /** Calls rotate() every rotateIntervalMs (default 10 s); errors are logged. */
  startTimers(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      this.rotate().catch(() => undefined); // logged in #rotateOnce
    }, this.#rotateIntervalMs);
    this.#timer.unref();
  }

  /** Stops the timer and waits for a running step. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#inflight?.catch(() => undefined);
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.close();
  }

  status(): CaStatus {
    const toStatus = (r: RecordBase, id: string, selfSigned?: boolean): AuthorityStatus => {
      const s: AuthorityStatus = { id, slot: r.slot, status: r.status, issuedAt: new Date(r.issuedAt), notAfter: new Date(r.notAfter) };
      if (r.activatedAt !== undefined) s.activatedAt = new Date(r.activatedAt);
      if (selfSigned !== undefined) s.selfSigned = selfSigned;
      return s;
    };
    const svid = this.#server.current();
    const j = this.#state.journal;
    return {
      trustDomain: this.trustDomain,
      upstream: this.#upstream ? { certFilePath: this.#upstream.certFilePath, notAfter: this.#upstream.notAfter } : undefined,
      bundleSequence: this.#state.bundle.sequence,
      x509: j.x509.map((r) => toStatus(r, r.id, r.selfSigned)),
      jwt: j.jwt.map((r) => toStatus(r, r.kid)),
      serverSvid: svid ? { serialHex: svid.serialHex, notAfter: svid.notAfter } : undefined,
      lastRotation: this.#lastRotation ? { ...this.#lastRotation } : undefined,
    };
  }

  toJSON(): object {
    return { trustDomain: this.trustDomain, upstream: this.#upstream !== undefined, bundleSequence: String(this.#state?.bundle.sequence) };
  }

  // ---------------------------------------------------------------------------------------------

  #requireActiveX509(): LiveX509 {
    const a = this.#activeX509;
    if (a === undefined) throw new CaError('not_ready', 'no active X.509 CA');
    return a;
  }

  async #init(): Promise<void> {
    const now = this.#now();
    if (this.#upstreamOptions) this.#upstream = await loadUpstreamDisk(this.#upstreamOptions, this.trustDomain, now);

    const journalText = await this.#ds.getCaJournal();
    const journal = journalText === undefined ? emptyJournal(this.trustDomain) : parseJournal(journalText);
    if (journal.trustDomain !== this.trustDomain) {
      throw new CaError(
        'journal',
        `the CA journal in the datastore belongs to trust domain ${JSON.stringify(journal.trustDomain)}, not ${JSON.stringify(this.trustDomain)}: use another data_dir or the old trust domain`,
      );
    }

    // What is published now: the stored bundle, if it parses.
    const stored = await this.#ds.getBundle(this.trustDomain);
    let published: Bundle | undefined;
    if (stored !== undefined) {
      try {
        published = parseBundle(this.trustDomain, stored.document);
      } catch (err) {
        this.#log.warn({ err }, 'stored bundle of our trust domain does not parse; it will be republished');
      }
    }
    const journalSeq = BigInt(journal.sequence);
    const storedSeq = stored?.sequence ?? 0n;
    const baseSeq = journalSeq > storedSeq ? journalSeq : storedSeq;
    if (published !== undefined) published.sequence = storedSeq;

    // Keys of prepared/active authorities; an unusable one is logged and left out of `live`.
    const liveX509 = new Map<string, LiveX509>();
    for (const r of journal.x509) {
      if (r.status === 'old') continue;
      const live = await this.#loadX509(r);
      if (live !== undefined) liveX509.set(r.id, live);
    }
    const liveJwt = new Map<string, LiveJwt>();
    for (const r of journal.jwt) {
      if (r.status === 'old') continue;
      const live = await this.#loadJwt(r);
      if (live !== undefined) liveJwt.set(r.kid, live);
    }
    this.#state = {
      journal,
      journalText: journalText ?? '',
      liveX509,
      liveJwt,
      bundle: published ?? new Bundle(this.trustDomain, { sequence: storedSeq }),
    };

    const result = await this.#step(now, { published, baseSeq, initial: true });
    if (this.#activeX509 === undefined || this.#activeJwt === undefined) throw new CaError('not_ready', 'CA start left no active authority');
    this.#lastRotation = { at: now };
    this.#log.info(
      {
        [LogField.trustDomain]: this.trustDomain,
        x509_ca_serial: this.#activeX509.record.id,
        x509_ca_not_after: this.#activeX509.record.notAfter,
        jwt_kid: this.#activeJwt.record.kid,
        jwt_key_not_after: this.#activeJwt.record.notAfter,
        bundle_sequence: this.#state.bundle.sequence.toString(),
        upstream: this.#upstream !== undefined,
        key_manager: this.#km.kind,
        changes: result.events.length,
      },
      'CA started',
    );
  }

  async #loadX509(r: X509Record): Promise<LiveX509 | undefined> {
    const key = await this.#km.load(r.keyId); // throws for untrustworthy key files: the operator must look
    const what = { x509_ca_serial: r.id, slot: r.slot, status: r.status, key_id: r.keyId };
    if (key === undefined) {
      this.#log.warn(what, `X.509 CA key is missing (${this.#km.kind} key manager); the CA will be replaced`);
      return undefined;
    }
    try {
      return this.#liveX509(r, key);
    } catch (err) {
      this.#log.warn({ ...what, err }, 'X.509 CA from the journal is not usable; it will be replaced');
      return undefined;
    }
  }

  #liveX509(record: X509Record, key: KeyObject): LiveX509 {
    const der = b64(record.certDer);
    const up = this.#upstream;
    let chain: Buffer[];
    let chainTail: Buffer[];
    if (record.selfSigned) {
      if (up !== undefined) throw new CaError('upstream', 'self-signed CA, but an upstream authority is now configured');
      chain = [der];
      chainTail = [];
    } else {
      if (up === undefined) throw new CaError('upstream', 'intermediate CA, but no upstream authority is configured any more');
      if (!this.#isFromCurrentUpstream(record)) throw new CaError('upstream', 'intermediate CA was not signed by the configured upstream CA');
      chain = [der, ...up.issuer.chain];
      chainTail = [der, ...up.intermediates];
    }
    const issuer = createIssuer(chain, key); // checks CA flags and that the key is the certificate's
    if (issuer.trustDomain !== this.trustDomain) throw new CaError('journal', `CA certificate is not a CA of trust domain ${this.trustDomain}`);
    return { record, issuer, chainTail, privateKey: key, poolId: ++poolIds };
  }

  #isFromCurrentUpstream(r: X509Record): boolean {
    const up = this.#upstream;
    if (up === undefined || r.selfSigned) return false;
    let v = this.#issuedByUpstream.get(r.id);
    if (v === undefined) {
      v = issuedBy(b64(r.certDer), up.certificate);
      this.#issuedByUpstream.set(r.id, v);
    }
    return v;
  }

  async #loadJwt(r: JwtRecord): Promise<LiveJwt | undefined> {
    const key = await this.#km.load(r.keyId);
    const what = { jwt_kid: r.kid, slot: r.slot, status: r.status, key_id: r.keyId };
    if (key === undefined) {
      this.#log.warn(what, `JWT signing key is missing (${this.#km.kind} key manager); the key will be replaced`);
      return undefined;
    }
    if (!exportPublicKeySpki(key).equals(b64(r.publicKeySpki))) {
      this.#log.warn(what, 'JWT signing key in the key manager does not match the journal; the key will be replaced');
      return undefined;
    }
    return { record: r, signer: { kid: r.kid, privateKey: key }, notAfter: new Date(r.notAfter) };
  }

  async #rotateOnce(): Promise<RotationResult> {
    const now = this.#now();
    try {
      const result = await this.#step(now, { published: this.#state.bundle, baseSeq: this.#state.bundle.sequence, initial: false });
      this.#lastRotation = { at: now };
      return result;
    } catch (err) {
      this.#lastRotation = { at: now, error: err instanceof Error ? err.message : String(err) };
      this.#log.error({ err }, 'CA rotation failed; will retry');
      throw err;
    }
  }

  // ---- one step: prune, plan, commit, clean up keys, notify, server SVID ----

  async #step(now: Date, ctx: { published: Bundle | undefined; baseSeq: bigint; initial: boolean }): Promise<RotationResult> {
    const before = this.#state;
    const d: Draft = {
      x509: [...before.journal.x509],
      jwt: [...before.journal.jwt],
      upstreamRoots: [...before.journal.upstreamRoots],
      liveX509: new Map(before.liveX509),
      liveJwt: new Map(before.liveJwt),
      events: [],
    };
    this.#prune(d, now);
    await this.#plan(this.#x509Kind(), d, now);
    await this.#plan(this.#jwtKind(), d, now);
    this.#reconcileRoots(d, now);

    if (d.events.length === 0 && !ctx.initial) {
      // Nothing changed (every change above records an event): only the server SVID may be due.
      return { bundleChanged: false, events: [], serverSvidRenewed: await this.#renewServerSvidIfDue(now) };
    }

    // Commit: journal first (it records the new sequence), then the bundle, then memory.
    const candidate = this.#buildBundle(d, ctx.published?.sequence ?? ctx.baseSeq);
    const bundleChanged = ctx.published === undefined || !candidate.equals(ctx.published);
    if (bundleChanged) candidate.sequence = ctx.baseSeq + 1n;
    const journal: Journal = { ...emptyJournal(this.trustDomain), sequence: candidate.sequence.toString(), x509: d.x509, jwt: d.jwt, upstreamRoots: d.upstreamRoots };
    const journalText = serializeJournal(journal);
    if (journalText !== before.journalText) await this.#ds.setCaJournal(journalText);
    if (bundleChanged) {
      await this.#ds.setBundle(
        { trustDomain: this.trustDomain, document: marshalBundle(candidate), sequence: candidate.sequence },
        Math.floor(now.getTime() / 1000),
      );
    }
    this.#state = { journal, journalText, liveX509: d.liveX509, liveJwt: d.liveJwt, bundle: candidate };
    const ax = d.x509.find((r) => r.status === 'active');
    const aj = d.jwt.find((r) => r.status === 'active');
    this.#activeX509 = ax ? d.liveX509.get(ax.id) : undefined;
    this.#activeJwt = aj ? d.liveJwt.get(aj.kid) : undefined;

    for (const e of d.events) {
      this.#log.info({ kind: e.kind, id: e.id, not_after: e.notAfter.toISOString() }, `CA authority ${e.action}`);
    }
    await this.#deleteUnusedKeys(before.journal, journal, ctx.initial);

    if (bundleChanged) {
      this.#log.info(
        { bundle_sequence: candidate.sequence.toString(), x509_authorities: candidate.x509Authorities().length, jwt_authorities: candidate.jwtAuthorities().size },
        'trust bundle updated',
      );
      for (const l of [...this.#bundleListeners]) {
        try {
          l(candidate.clone());
        } catch (err) {
          this.#log.error({ err }, 'bundle change listener failed');
        }
      }
    }

    return { bundleChanged, events: d.events, serverSvidRenewed: await this.#renewServerSvidIfDue(now) };
  }

  async #renewServerSvidIfDue(now: Date): Promise<boolean> {
    const active = this.#activeX509;
    if (active === undefined || !this.#server.needsRenewal(now, active.record.id)) return false;
    const svid = await this.#server.renew((id, publicKey, at) => {
      const a = this.#requireActiveX509();
      const issued = issueX509Svid({ id, publicKey, ttlSeconds: this.#serverSvidTtl, issuer: a.issuer, now: at });
      return { chain: [issued.der, ...a.chainTail], notAfter: issued.notAfter, serialHex: issued.serialHex, caId: a.record.id };
    }, now);
    this.#log.info({ [LogField.spiffeId]: svid.id, [LogField.serial]: svid.serialHex, not_after: svid.notAfter.toISOString() }, 'server SVID renewed');
    return true;
  }

  #prune(d: Draft, now: Date): void {
    const t = now.getTime();
    const expired = (r: RecordBase): boolean => r.status === 'old' && t > ms(r.notAfter) + this.#graceMs;
    for (const r of d.x509.filter(expired)) d.events.push({ kind: 'x509', action: 'pruned', id: r.id, notAfter: new Date(r.notAfter) });
    for (const r of d.jwt.filter(expired)) d.events.push({ kind: 'jwt', action: 'pruned', id: r.kid, notAfter: new Date(r.notAfter) });
    d.x509 = d.x509.filter((r) => !expired(r));
    d.jwt = d.jwt.filter((r) => !expired(r));
  }

  /** Adds configured upstream roots; drops unconfigured ones once expired or no longer needed. */
  #reconcileRoots(d: Draft, now: Date): void {
    const t = now.getTime();
    const current = this.#upstream?.roots ?? [];
    const isCurrent = (r: RootRecord): boolean => current.some((c) => c.equals(b64(r.certDer)));
    const foreignIntermediates = d.x509.some((r) => !r.selfSigned && !this.#isFromCurrentUpstream(r));
    d.upstreamRoots = d.upstreamRoots.filter((r) => {
      if (isCurrent(r)) return true;
      const keep = foreignIntermediates && t <= ms(r.notAfter) + this.#graceMs;
      if (!keep) d.events.push({ kind: 'upstream_root', action: 'pruned', id: serialOf(b64(r.certDer)), notAfter: new Date(r.notAfter) });
      return keep;
    });
    for (const c of current) {
      if (d.upstreamRoots.some((r) => b64(r.certDer).equals(c))) continue;
      const info = parseCertificate(c);
      d.upstreamRoots.push({ certDer: c.toString('base64'), notAfter: info.notAfter.toISOString() });
      d.events.push({ kind: 'upstream_root', action: 'published', id: info.serialHex, notAfter: info.notAfter });
    }
  }

  #buildBundle(d: Draft, sequence: bigint): Bundle {
    const b = new Bundle(this.trustDomain, { sequence, refreshHintSeconds: this.#refreshHint });
    for (const r of d.upstreamRoots) b.addX509Authority(b64(r.certDer));
    for (const r of d.x509) if (r.selfSigned) b.addX509Authority(b64(r.certDer));
    for (const r of d.jwt) b.addJwtAuthority(r.kid, importPublicKeySpki(b64(r.publicKeySpki)));
    return b;
  }

  /** Deletes keys of slots that no prepared/active authority uses any more. */
  async #deleteUnusedKeys(before: Journal, after: Journal, all: boolean): Promise<void> {
    const liveSlots = (rs: readonly RecordBase[]): Set<SlotName> => new Set(rs.filter((r) => r.status !== 'old').map((r) => r.slot));
    const kinds = [
      { ids: X509_KEY_IDS, was: liveSlots(before.x509), is: liveSlots(after.x509) },
      { ids: JWT_KEY_IDS, was: liveSlots(before.jwt), is: liveSlots(after.jwt) },
    ];
    for (const k of kinds) {
      for (const slot of ['A', 'B'] as const) {
        if (k.is.has(slot) || (!all && !k.was.has(slot))) continue;
        try {
          await this.#km.delete(k.ids[slot]);
        } catch (err) {
          this.#log.warn({ err, key_id: k.ids[slot] }, 'could not delete an unused CA key');
        }
      }
    }
  }

  /** The generic slot state machine for one kind (see the module comment). */
  async #plan<R extends RecordBase, L extends { record: R }>(k: Kind<R, L>, d: Draft, now: Date): Promise<void> {
    const t = now.getTime();
    const live = k.live(d);
    const find = (s: SlotStatus): R | undefined => k.records(d).find((r) => r.status === s);
    const usable = (r: R | undefined): boolean => r !== undefined && live.has(k.idOf(r)) && t < ms(r.notAfter);
    const replace = (r: R, next: R | undefined): void => {
      const rs = k.records(d);
      const i = rs.indexOf(r);
      if (next === undefined) rs.splice(i, 1);
      else rs[i] = next;
      k.setRecords(d, rs);
    };
    const event = (action: RotationEventAction, r: R): void => {
      d.events.push({ kind: k.name, action, id: k.idOf(r), notAfter: new Date(r.notAfter) });
    };
    const demote = (r: R): void => {
      replace(r, { ...r, status: 'old' });
      live.delete(k.idOf(r));
      event('demoted', r);
    };
    const activate = (r: R): void => {
      const next: R = { ...r, status: 'active', activatedAt: now.toISOString() };
      replace(r, next);
      const l = live.get(k.idOf(r));
      if (l !== undefined) live.set(k.idOf(r), { ...l, record: next });
      event('activated', next);
    };
    const prepare = async (slot: SlotName): Promise<R> => {
      const l = await k.create(now, slot);
      k.records(d).push(l.record);
      live.set(k.idOf(l.record), l);
      event('prepared', l.record);
      return l.record;
    };

    let prepared = find('prepared');
    if (prepared !== undefined && !usable(prepared)) {
      // Never signed anything: drop it (and its bundle entry) at once.
      replace(prepared, undefined);
      live.delete(k.idOf(prepared));
      event('dropped', prepared);
      prepared = undefined;
    }
    const active = find('active');
    if (active === undefined || !usable(active)) {
      if (active !== undefined) demote(active);
      activate(prepared ?? (await prepare(active ? otherSlot(active.slot) : 'A')));
      return;
    }
    if (prepared === undefined) {
      if (t < lifetimePoint(active, PREPARE_AT)) return;
      if (k.projectedNotAfter(now) <= ms(active.notAfter)) {
        if (!this.#warnedNoOutlive) {
          this.#warnedNoOutlive = true;
          this.#log.warn(
            { active_not_after: active.notAfter, upstream_not_after: this.#upstream?.notAfter.toISOString() },
            `cannot prepare a ${k.label} that outlives the active one (the upstream CA certificate expires first): renew the upstream CA`,
          );
        }
        return;
      }
      await prepare(otherSlot(active.slot));
      return; // published now, activated on a later step
    }
    if (t >= lifetimePoint(active, ACTIVATE_AT)) {
      demote(active);
      activate(prepared);
    }
  }

  #x509Kind(): Kind<X509Record, LiveX509> {
    return {
      name: 'x509',
      label: 'X.509 CA',
      idOf: (r) => r.id,
      records: (d) => d.x509,
      setRecords: (d, rs) => {
        d.x509 = rs;
      },
      live: (d) => d.liveX509,
      projectedNotAfter: (now) => {
        let na = Math.floor((now.getTime() + this.#caTtl * 1000) / 1000) * 1000;
        if (this.#upstream !== undefined) na = Math.min(na, this.#upstream.notAfter.getTime());
        return na;
      },
      create: async (now, slot) => {
        const keyId = X509_KEY_IDS[slot];
        const privateKey = await this.#km.generate(keyId, this.#caKeyType);
        const publicKey = createPublicKey(privateKey);
        const up = this.#upstream;
        const der = up
          ? issueIntermediateCa({ trustDomain: this.trustDomain, publicKey, issuer: up.issuer, ttlSeconds: this.#caTtl, now, subject: this.#caSubject })
          : createSelfSignedCa({ trustDomain: this.trustDomain, keyPair: { privateKey, publicKey }, ttlSeconds: this.#caTtl, now, subject: this.#caSubject });
        const record: X509Record = {
          id: parseCertificate(der).serialHex,
          slot,
          keyId,
          status: 'prepared',
          selfSigned: up === undefined,
          certDer: der.toString('base64'),
          issuedAt: now.toISOString(),
          notAfter: '',
        };
        if (up !== undefined) this.#issuedByUpstream.set(record.id, true);
        const live = this.#liveX509(record, privateKey);
        record.notAfter = live.issuer.notAfter.toISOString();
        return live;
      },
    };
  }

  #jwtKind(): Kind<JwtRecord, LiveJwt> {
    return {
      name: 'jwt',
      label: 'JWT signing key',
      idOf: (r) => r.kid,
      records: (d) => d.jwt,
      setRecords: (d, rs) => {
        d.jwt = rs;
      },
      live: (d) => d.liveJwt,
      projectedNotAfter: (now) => now.getTime() + this.#caTtl * 1000,
      create: async (now, slot) => {
        const keyId = JWT_KEY_IDS[slot];
        const privateKey = await this.#km.generate(keyId, this.#jwtKeyType);
        const notAfter = new Date(Math.floor((now.getTime() + this.#caTtl * 1000) / 1000) * 1000);
        const record: JwtRecord = {
          kid: randomKid(),
          slot,
          keyId,
          status: 'prepared',
          publicKeySpki: exportPublicKeySpki(privateKey).toString('base64'),
          issuedAt: now.toISOString(),
          notAfter: notAfter.toISOString(),
        };
        return { record, signer: { kid: record.kid, privateKey }, notAfter };
      },
    };
  }
}

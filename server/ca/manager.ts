/**
 * The server CA: X.509 CAs and JWT signing keys with SPIRE's rotation model, the trust bundle of
 * our own trust domain, and the server's own SVID. CaManager orchestrates; the parts live beside
 * it:
 *   options.ts        what start() takes, defaults and option checks
 *   config.ts         server config -> options
 *   authorities.ts    key slots: journal records -> live authorities with their keys, new ones, key cleanup
 *   rotation.ts       the planner: the slot state machine one rotation step runs (timing documented there)
 *   trustbundle.ts    bundle contents, sequence and upstream roots
 *   signing.ts        X.509 (inline and on the signing pool) and JWT signing, the server SVID's signature
 *   serveridentity.ts the server SVID and its listeners
 *   journal.ts        the persisted CA state document
 *
 * One rotation step: prune, plan each kind, reconcile upstream roots on a draft; then commit.
 * The commit is ONE datastore transaction (DataStore.updateBundle): it reads the stored bundle,
 * merges this server's authorities into it (trustbundle.ts mergeShared), writes it with the
 * next sequence when that changed it, and writes this server's journal (which records the
 * sequence). Then the in-memory state switches, unused keys are deleted and onBundleChange
 * listeners run; last, the server SVID is renewed when due. A step whose commit fails changes
 * nothing in memory. Nothing signs with an authority before the commit that publishes it has
 * returned. Steps never overlap: rotate() during a step returns that step's promise.
 *
 * Datastore outage: a step that must commit fails (DataStoreError 'unavailable'), so it is
 * deferred: the active authorities keep signing, the prepared one stays unpublished-and-unused,
 * and the timer's next step (every rotateIntervalMs) plans it again from the committed state.
 * The first deferral of an outage is logged as a warning, the rest at debug level.
 *
 * Several servers on one datastore (`serverId`): each has its own keys and journal and shares the
 * trust domain's bundle. The server calls bundleEvent() on every change-feed event of that
 * bundle: a bundle written by another server is adopted (listeners run, so agents get it), and if
 * it lacks one of this server's unexpired authorities they are published again. Every step also
 * prunes the other servers' authorities that expired more than the prune grace ago (X.509: by
 * the certificate; JWT: by the notAfter the other server's journal records, read before the
 * commit with listCaJournals), so those of a retired server, or of one that lost its data_dir,
 * leave the bundle once they expire; a step commits for that alone when one is due.
 *
 * Keys never leave the KeyManager except into the Issuer / JWT signer; nothing here logs keys.
 */
import { LogField } from '../../common/logging.js';
import { Bundle, marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { DEFAULT_CA_SERVER_ID, isDataStoreUnavailable, type StoredBundle } from '../datastore/types.js';
import { parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { DEFAULT_KEY_TYPE } from '../../spiffe/keys.js';
import { DEFAULT_CA_SUBJECT } from '../../spiffe/x509/index.js';
import { AuthoritySlots, type LiveJwt, type LiveX509 } from './authorities.js';
import { CaError } from './errors.js';
import { emptyJournal, parseJournal, serializeJournal, type Journal, type RecordBase, type SlotName, type SlotStatus } from './journal.js';
import { loadUpstreamDisk, type UpstreamAuthority, type UpstreamDiskOptions } from './upstream.js';
import {
  DEFAULT_PRUNE_GRACE_SECONDS,
  DEFAULT_ROTATE_INTERVAL_MS,
  NOOP_LOGGER,
  checkCaOptions,
  type CaDataStore,
  type CaLogger,
  type CaManagerOptions,
} from './options.js';
import { jwtKind, newDraft, plan, prune, x509Kind, type RotationEvent } from './rotation.js';
import { DEFAULT_SIGNING_WORKERS, SvidSigner, type X509SvidRequest } from './signing.js';
import { ServerIdentity, type ServerSvid } from './serveridentity.js';
import {
  buildBundle,
  containsAuthorities,
  intermediatesOf,
  journalBundle,
  journalJwtKeys,
  mergeShared,
  publishedAtStart,
  reconcileRoots,
  unexpiredAuthorities,
  withdrawnAuthorities,
  type ForeignExpiry,
  type PrunedAuthority,
  type RecordedJwtKey,
} from './trustbundle.js';
import type { CaSigner, SignedJwtSvid, SignedX509Svid } from './types.js';

export { randomKid } from './authorities.js';
export { caOptionsFromConfig, caSubjectFromConfig } from './config.js';
export { DEFAULT_PRUNE_GRACE_SECONDS, DEFAULT_ROTATE_INTERVAL_MS, type CaDataStore, type CaLogger, type CaManagerOptions } from './options.js';
export { ACTIVATE_AT, PREPARE_AT, type RotationEvent, type RotationEventAction } from './rotation.js';
export { DEFAULT_SIGNING_WORKERS, MIN_POOLED_BATCH } from './signing.js';
export type { PrunedAuthority } from './trustbundle.js';

export interface RotationResult {
  /** The step changed the bundle (its sequence was bumped and listeners were called). */
  bundleChanged: boolean;
  events: RotationEvent[];
  /** Authorities of other servers this step pruned from the shared bundle (expired past the grace). */
  foreignPruned: PrunedAuthority[];
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

export class CaManager implements CaSigner {
  readonly trustDomain: TrustDomain;
  readonly #options: CaManagerOptions;
  readonly #ds: CaDataStore;
  readonly #now: () => Date;
  readonly #log: CaLogger;
  readonly #graceMs: number;
  readonly #refreshHint: number | undefined;
  readonly #rotateIntervalMs: number;
  readonly #upstreamOptions: UpstreamDiskOptions | undefined;
  #upstream: UpstreamAuthority | undefined;
  /** Set by #init once the upstream authority (if any) is loaded. */
  #slots!: AuthoritySlots;
  readonly #signer: SvidSigner;
  #state!: State;
  #activeX509: LiveX509 | undefined;
  #activeJwt: LiveJwt | undefined;
  readonly #bundleListeners = new Set<(bundle: Bundle) => void>();
  readonly #server: ServerIdentity;
  #inflight: Promise<RotationResult> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastRotation: { at: Date; error?: string } | undefined;
  #warnedNoOutlive = false;
  /** A step was deferred by a datastore outage and logged; reset by the next committed step. */
  #deferredLogged = false;
  readonly #serverId: string;
  #stopped = false;
  #refreshing: Promise<void> | undefined;
  #refreshAgain = false;
  /**
   * What the other servers' journals record of the JWT keys in the bundle that are not ours, by
   * kid, as last read (listCaJournals); null: no journal recorded it then. A kid's record never
   * changes, so the journals are read again only when the bundle holds a kid not in here.
   */
  #foreignJwt = new Map<string, RecordedJwtKey | null>();

  private constructor(o: CaManagerOptions) {
    this.trustDomain = parseTrustDomain(o.trustDomain);
    checkCaOptions(o);
    this.#options = o;
    this.#ds = o.datastore;
    this.#now = o.now ?? (() => new Date());
    this.#log = o.logger ?? NOOP_LOGGER;
    this.#graceMs = (o.pruneGraceSeconds ?? DEFAULT_PRUNE_GRACE_SECONDS) * 1000;
    this.#refreshHint = o.refreshHintSeconds;
    this.#rotateIntervalMs = o.rotateIntervalMs ?? DEFAULT_ROTATE_INTERVAL_MS;
    this.#upstreamOptions = o.upstream;
    this.#serverId = o.serverId ?? DEFAULT_CA_SERVER_ID;
    this.#signer = new SvidSigner({
      trustDomain: this.trustDomain,
      now: this.#now,
      log: this.#log,
      defaultX509SvidTtlSeconds: o.defaultX509SvidTtlSeconds,
      defaultJwtSvidTtlSeconds: o.defaultJwtSvidTtlSeconds,
      jwtIssuer: o.jwtIssuer,
      serverSvidTtlSeconds: o.serverSvidTtlSeconds ?? o.defaultX509SvidTtlSeconds,
      signingWorkers: o.signingWorkers ?? DEFAULT_SIGNING_WORKERS,
      activeX509: () => this.#requireActiveX509(),
      activeJwt: () => this.#activeJwt,
    });
    this.#server = new ServerIdentity(this.trustDomain, (err) => this.#log.error({ err }, 'server SVID listener failed'));
    if (o.caTtlSeconds < 6 * o.defaultX509SvidTtlSeconds) {
      this.#log.warn(
        { ca_ttl: o.caTtlSeconds, default_x509_svid_ttl: o.defaultX509SvidTtlSeconds },
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

  signX509Svid(req: X509SvidRequest): SignedX509Svid {
    return this.#signer.signX509Svid(req);
  }

  signX509SvidBatch(reqs: ReadonlyArray<X509SvidRequest>): Promise<Array<SignedX509Svid | Error>> {
    return this.#signer.signX509SvidBatch(reqs);
  }

  mintJwtSvid(req: { id: SpiffeId; audience: readonly string[]; ttlSeconds?: number }): Promise<SignedJwtSvid> {
    return this.#signer.mintJwtSvid(req);
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
    return intermediatesOf(this.#state.journal, this.#now(), this.#upstream?.intermediates);
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
    return this.#runStep(false);
  }

  /** Waits until no step runs. */
  async #idle(): Promise<void> {
    for (let run = this.#inflight; run !== undefined; run = this.#inflight) await run.catch(() => undefined);
  }

  #runStep(republish: boolean): Promise<RotationResult> {
    const run = this.#rotateOnce(republish).finally(() => {
      this.#inflight = undefined;
    });
    this.#inflight = run;
    return run;
  }

  /**
   * Reads the shared bundle of our trust domain (other servers on the datastore write it too).
   * A bundle with a higher sequence than ours is adopted: bundle() returns it and the
   * onBundleChange listeners get it. When the stored bundle lacks one of this server's
   * authorities (or is gone, or does not parse), a step publishes them again. Returns whether
   * the bundle this server serves changed. bundleEvent() calls it.
   */
  async refreshBundle(): Promise<boolean> {
    await this.#idle();
    const stored = await this.#ds.getBundle(this.trustDomain);
    let parsed: Bundle | undefined;
    if (stored !== undefined) {
      try {
        parsed = parseBundle(this.trustDomain, stored.document);
        parsed.sequence = stored.sequence;
      } catch (err) {
        this.#log.warn({ err, bundle_sequence: stored.sequence.toString() }, 'stored bundle of our trust domain does not parse; publishing ours again');
      }
    }
    // Ours that another server may have pruned already (expired past the grace) are not missed:
    // publishing them again would only have them pruned again.
    const journal = this.#state.journal;
    const ours = unexpiredAuthorities(
      this.trustDomain,
      journalBundle(this.trustDomain, journal, this.#refreshHint),
      this.#now(),
      this.#graceMs,
      new Map(journal.jwt.map((r) => [r.kid, Date.parse(r.notAfter)])),
    );
    if (parsed === undefined || !containsAuthorities(parsed, ours)) {
      if (parsed !== undefined) this.#log.warn({ bundle_sequence: parsed.sequence.toString() }, 'stored bundle lacks authorities of this server; publishing them again');
      await this.#idle();
      const before = this.#state.bundle;
      await this.#runStep(true);
      return !this.#state.bundle.equals(before);
    }
    if (parsed.sequence <= this.#state.bundle.sequence) return false;
    this.#state = { ...this.#state, bundle: parsed };
    this.#log.info(
      { bundle_sequence: parsed.sequence.toString(), x509_authorities: parsed.x509Authorities().length, jwt_authorities: parsed.jwtAuthorities().size },
      'trust bundle updated by another server',
    );
    this.#notifyBundle(parsed);
    return true;
  }

  /**
   * Call on every change-feed event of our trust domain's bundle (the server wires its
   * ChangeFeed here): runs refreshBundle, one at a time, once more if events came meanwhile.
   * Errors are logged; nothing runs after stop().
   */
  bundleEvent(): void {
    if (this.#stopped) return;
    if (this.#refreshing !== undefined) {
      this.#refreshAgain = true;
      return;
    }
    this.#refreshing = (async () => {
      try {
        do {
          this.#refreshAgain = false;
          await this.refreshBundle();
        } while (this.#refreshAgain && !this.#stopped);
      } catch (err) {
        this.#log.error({ err }, 'could not refresh the shared trust bundle; will retry on the next change or rotation');
      } finally {
        this.#refreshing = undefined;
      }
    })();
  }

  /** Calls rotate() every rotateIntervalMs (default 10 s); errors are logged. */
  startTimers(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      this.rotate().catch(() => undefined); // logged in #rotateOnce
    }, this.#rotateIntervalMs);
    this.#timer.unref();
  }

  /** Stops the timer and bundle refreshes, and waits for a running step. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#stopped = true;
    await this.#refreshing;
    await this.#inflight?.catch(() => undefined);
    await this.#signer.close();
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
    const o = this.#options;
    const caKeyType = o.caKeyType ?? DEFAULT_KEY_TYPE;
    this.#slots = new AuthoritySlots({
      trustDomain: this.trustDomain,
      keyManager: o.keyManager,
      log: this.#log,
      caTtlSeconds: o.caTtlSeconds,
      caKeyType,
      jwtKeyType: o.jwtKeyType ?? caKeyType,
      caSubject: o.caSubject ?? DEFAULT_CA_SUBJECT,
      upstream: this.#upstream,
    });

    let journalText = await this.#ds.getCaJournal(this.#serverId);
    if (journalText === undefined && this.#serverId !== DEFAULT_CA_SERVER_ID && (await this.#ds.adoptCaJournal(DEFAULT_CA_SERVER_ID, this.#serverId))) {
      this.#log.info({ server_id: this.#serverId }, 'adopted the CA journal written without a server ID');
      journalText = await this.#ds.getCaJournal(this.#serverId);
    }
    const journal = journalText === undefined ? emptyJournal(this.trustDomain) : parseJournal(journalText);
    if (journal.trustDomain !== this.trustDomain) {
      throw new CaError(
        'journal',
        `the CA journal in the datastore belongs to trust domain ${JSON.stringify(journal.trustDomain)}, not ${JSON.stringify(this.trustDomain)}: use another data_dir or the old trust domain`,
      );
    }

    // What is published now: the stored bundle, if it parses.
    const { published, storedSeq } = publishedAtStart(this.trustDomain, await this.#ds.getBundle(this.trustDomain), journal, this.#log);

    // Keys of prepared/active authorities; an unusable one is logged and left out of `live`.
    const liveX509 = new Map<string, LiveX509>();
    for (const r of journal.x509) {
      if (r.status === 'old') continue;
      const live = await this.#slots.loadX509(r);
      if (live !== undefined) liveX509.set(r.id, live);
    }
    const liveJwt = new Map<string, LiveJwt>();
    for (const r of journal.jwt) {
      if (r.status === 'old') continue;
      const live = await this.#slots.loadJwt(r);
      if (live !== undefined) liveJwt.set(r.kid, live);
    }
    this.#state = {
      journal,
      journalText: journalText ?? '',
      liveX509,
      liveJwt,
      bundle: published ?? new Bundle(this.trustDomain, { sequence: storedSeq }),
    };

    const result = await this.#step(now, { initial: true, republish: false });
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
        key_manager: o.keyManager.kind,
        server_id: this.#serverId,
        changes: result.events.length,
      },
      'CA started',
    );
  }

  async #rotateOnce(republish: boolean): Promise<RotationResult> {
    const now = this.#now();
    try {
      const result = await this.#step(now, { initial: false, republish });
      this.#lastRotation = { at: now };
      if (this.#deferredLogged && result.events.length > 0) this.#log.info({ changes: result.events.length }, 'deferred CA rotation step committed');
      if (result.events.length > 0 || result.foreignPruned.length > 0 || republish) this.#deferredLogged = false;
      return result;
    } catch (err) {
      this.#lastRotation = { at: now, error: err instanceof Error ? err.message : String(err) };
      if (!isDataStoreUnavailable(err)) this.#log.error({ err }, 'CA rotation failed; will retry');
      else if (this.#deferredLogged) this.#log.debug({ err }, 'CA rotation step deferred: the datastore is unavailable');
      else {
        this.#deferredLogged = true;
        this.#log.warn({ err }, 'CA rotation step deferred: the datastore is unavailable; the current authorities keep signing, the step is retried until it commits');
      }
      throw err;
    }
  }

  // ---- one step: prune, plan, commit, clean up keys, notify, server SVID ----

  async #step(now: Date, ctx: { initial: boolean; republish: boolean }): Promise<RotationResult> {
    const before = this.#state;
    const d = newDraft(before.journal, before.liveX509, before.liveJwt);
    const slots = this.#slots;
    const cannotOutlive = (label: string, active: RecordBase): void => {
      if (this.#warnedNoOutlive) return;
      this.#warnedNoOutlive = true;
      this.#log.warn(
        { active_not_after: active.notAfter, upstream_not_after: this.#upstream?.notAfter.toISOString() },
        `cannot prepare a ${label} that outlives the active one (the upstream CA certificate expires first): renew the upstream CA`,
      );
    };
    prune(d, now, this.#graceMs);
    await plan(x509Kind({ create: (t, s) => slots.createX509(t, s), projectedNotAfter: (t) => slots.projectedX509NotAfter(t) }), d, now, cannotOutlive);
    await plan(jwtKind({ create: (t, s) => slots.createJwt(t, s), projectedNotAfter: (t) => slots.projectedJwtNotAfter(t) }), d, now, cannotOutlive);
    reconcileRoots(d, now, { current: this.#upstream?.roots ?? [], graceMs: this.#graceMs, isFromCurrentUpstream: (r) => slots.isFromCurrentUpstream(r) });

    const td = this.trustDomain;
    const ours = buildBundle(td, d, 0n, this.#refreshHint);
    const expiry = await this.#foreignExpiry(now, before.bundle, ours);
    if (d.events.length === 0 && !ctx.initial && !ctx.republish && mergeShared(td, before.bundle, ours, new Bundle(td), expiry).pruned.length === 0) {
      // Nothing changed (every change above records an event) and no authority of another
      // server in the bundle we serve is due to be pruned: only the server SVID may be due.
      return { bundleChanged: false, events: [], foreignPruned: [], serverSvidRenewed: await this.#renewServerSvidIfDue(now) };
    }

    // Commit, in one datastore transaction: merge our authorities into the stored (shared)
    // bundle, less other servers' expired ones, write it when that changed it, and write our
    // journal. Then switch memory.
    const withdrawn = withdrawnAuthorities(td, journalBundle(td, before.journal, undefined), ours);
    let commit: { bundle: Bundle; changed: boolean; pruned: PrunedAuthority[]; journal: Journal; journalText: string } | undefined;
    await this.#ds.updateBundle(
      td,
      (current) => {
        const { bundle, changed, pruned } = mergeShared(td, this.#parseStored(current), ours, withdrawn, expiry);
        const journalSeq = BigInt(before.journal.sequence);
        const base = current === undefined || current.sequence < journalSeq ? journalSeq : current.sequence;
        bundle.sequence = changed || current === undefined ? base + 1n : current.sequence;
        const journal: Journal = { ...emptyJournal(td), sequence: bundle.sequence.toString(), x509: d.x509, jwt: d.jwt, upstreamRoots: d.upstreamRoots };
        const journalText = serializeJournal(journal);
        commit = { bundle, changed, pruned, journal, journalText };
        return {
          ...(changed ? { bundle: { trustDomain: td, document: marshalBundle(bundle), sequence: bundle.sequence } } : {}),
          ...(journalText !== before.journalText ? { caJournal: { serverId: this.#serverId, document: journalText } } : {}),
        };
      },
      Math.floor(now.getTime() / 1000),
    );
    if (commit === undefined) throw new CaError('journal', 'the datastore did not run the CA bundle update');
    const { bundle: candidate, changed: bundleChanged, journal } = commit;
    const served = !candidate.equals(before.bundle);
    this.#state = { journal, journalText: commit.journalText, liveX509: d.liveX509, liveJwt: d.liveJwt, bundle: candidate };
    const ax = d.x509.find((r) => r.status === 'active');
    const aj = d.jwt.find((r) => r.status === 'active');
    this.#activeX509 = ax ? d.liveX509.get(ax.id) : undefined;
    this.#activeJwt = aj ? d.liveJwt.get(aj.kid) : undefined;

    for (const e of d.events) {
      this.#log.info({ kind: e.kind, id: e.id, not_after: e.notAfter.toISOString() }, `CA authority ${e.action}`);
    }
    // Once: the bundle written no longer holds them, so no later step finds them again.
    for (const p of commit.pruned) {
      this.#log.info(
        { kind: p.kind, ...(p.kind === 'x509' ? { id: p.id } : { kid: p.id }), not_after: p.notAfter.toISOString() },
        'pruned an expired authority of another server from the shared bundle',
      );
    }
    await slots.deleteUnusedKeys(before.journal, journal, ctx.initial);

    if (bundleChanged) {
      this.#log.info(
        { bundle_sequence: candidate.sequence.toString(), x509_authorities: candidate.x509Authorities().length, jwt_authorities: candidate.jwtAuthorities().size },
        'trust bundle updated',
      );
    }
    if (served) this.#notifyBundle(candidate);

    return { bundleChanged, events: d.events, foreignPruned: commit.pruned, serverSvidRenewed: await this.#renewServerSvidIfDue(now) };
  }

  /**
   * The evidence this step prunes other servers' authorities on (trustbundle.ts ForeignExpiry).
   * Reads the journals (outside the bundle transaction) only when `served` holds a JWT key that
   * is not ours and not in #foreignJwt. A read that fails leaves the cache as it was: no
   * evidence, nothing pruned on it; the next step reads again.
   */
  async #foreignExpiry(now: Date, served: Bundle, ours: Bundle): Promise<ForeignExpiry> {
    const foreign = [...served.jwtAuthorities().keys()].filter((kid) => !ours.hasJwtAuthority(kid));
    if (foreign.some((kid) => !this.#foreignJwt.has(kid))) {
      try {
        const journals = await this.#ds.listCaJournals();
        const keys = journalJwtKeys(journals, this.#serverId, (serverId, err) =>
          this.#log.warn({ err, server_id: serverId }, 'CA journal of another server does not parse; its JWT keys are kept in the bundle'),
        );
        // Only the kids in the bundle are kept; one that no journal records stays null (kept
        // in the bundle: without a journal there is no evidence that it expired).
        this.#foreignJwt = new Map(foreign.map((kid) => [kid, keys.get(kid) ?? null]));
      } catch (err) {
        if (isDataStoreUnavailable(err)) this.#log.debug({ err }, 'could not read the CA journals of other servers; their JWT keys are not pruned in this step');
        else this.#log.warn({ err }, 'could not read the CA journals of other servers; their JWT keys are not pruned in this step');
      }
    }
    const jwtKeys = new Map<string, RecordedJwtKey>();
    for (const [kid, r] of this.#foreignJwt) if (r !== null) jwtKeys.set(kid, r);
    return { now, graceMs: this.#graceMs, jwtKeys };
  }

  /** The stored bundle of our trust domain, or undefined when there is none or it does not parse (logged). */
  #parseStored(stored: StoredBundle | undefined): Bundle | undefined {
    if (stored === undefined) return undefined;
    try {
      const b = parseBundle(this.trustDomain, stored.document);
      b.sequence = stored.sequence;
      return b;
    } catch (err) {
      this.#log.warn({ err }, 'stored bundle of our trust domain does not parse; it will be republished');
      return undefined;
    }
  }

  #notifyBundle(bundle: Bundle): void {
    for (const l of [...this.#bundleListeners]) {
      try {
        l(bundle.clone());
      } catch (err) {
        this.#log.error({ err }, 'bundle change listener failed');
      }
    }
  }

  async #renewServerSvidIfDue(now: Date): Promise<boolean> {
    const active = this.#activeX509;
    if (active === undefined || !this.#server.needsRenewal(now, active.record.id)) return false;
    const svid = await this.#server.renew(this.#signer.signServerSvid, now);
    this.#log.info({ [LogField.spiffeId]: svid.id, [LogField.serial]: svid.serialHex, not_after: svid.notAfter.toISOString() }, 'server SVID renewed');
    return true;
  }
}

/**
 * The agent's own identity: attestation, its X509-SVID and key kept under data_dir (key 0600)
 * so a restart resumes without a new join token, renewal at half-life, and the connection to
 * the server built from it.
 *
 * Re-attestation (as SPIRE does for attestors that allow it, e.g. k8s_psat): when the server
 * said the agent may re-attest and the attestor is configured, the half-life renewal attests
 * again with fresh evidence (a new projected token) instead of calling RenewAgent, and
 * `reattestAfterRefusal()` lets an evicted agent come back by itself. Join-token agents
 * renew and, once evicted, need a new token.
 *
 * Files in data_dir: agent_svid.pem (chain, leaf first), agent_svid.key (PKCS#8, 0600),
 * bundle.pem (our trust domain's X.509 authorities, refreshed as the server pushes them),
 * agent_data.json ({ agentId, reattestable }).
 */
import { chmodSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { ensureSafeDirectory } from '../../common/safedir.js';
import { writeFileReplacingSync } from '../../common/safefile.js';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { parseSpiffeId, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair, importPrivateKeyPkcs8 } from '../../spiffe/keys.js';
import { certificatesToPem, pemToCertificates, pemToPrivateKey, privateKeyToPem } from '../../spiffe/pem.js';
import { parseBundle } from '../../spiffe/bundle.js';
import { createCsr, parseCertificate } from '../../spiffe/x509/index.js';
import type { AgentNodeAttestor } from '../../attestors/node/types.js';
import type { RenewAgentResponse, GetBundleResponse } from '../../proto/gen/spindle/agent/v1/agent.js';
import { randomInt } from 'node:crypto';
import { attestAgent, connectAgentApi, retryUnavailable, type AgentApiConnection, type ServerAddress } from '../client/serverclient.js';
import { connectionOrder, formatServerAddresses, hasAlternatives, needsResolving, resolveServerAddresses, type LookupAll } from '../client/serveraddress.js';

export interface AgentIdentityLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

interface State {
  agentId: SpiffeId;
  chain: Buffer[];
  privateKey: KeyObject;
  bundle: Buffer[];
  reattestable: boolean;
}

const RETRY_MIN_MS = 5_000;
const RETRY_MAX_MS = 300_000;

const FILES = { svid: 'agent_svid.pem', key: 'agent_svid.key', bundle: 'bundle.pem', data: 'agent_data.json' } as const;

/** Replaces `path`; the temp file has `mode` before any byte is written (common/safefile.ts). */
function writeAtomic(path: string, data: string, mode: number): void {
  writeFileReplacingSync(path, data, mode);
}

export class AgentIdentity {
  readonly #dir: string;
  readonly #td: TrustDomain;
  /** The servers (server_address); one channel over all of them (agent/client/serveraddress.ts). */
  readonly #addresses: readonly ServerAddress[];
  /**
   * The addresses channels are built over: #addresses, or, when that list names servers by DNS
   * name, what the names resolved to last (resolved at start and again before each reconnect
   * by connection age; a failed lookup keeps the previous answer).
   */
  #resolved: readonly ServerAddress[];
  readonly #lookup: LookupAll | undefined;
  /** The names that did not resolve last time, as logged (to log a change once). */
  #unresolved = '';
  /** Longest life of a connection before it is replaced (to spread agents over the servers); 0: never. */
  readonly #maxConnectionAgeMs: number;
  #ageTimer: NodeJS.Timeout | undefined;
  readonly #log: AgentIdentityLogger;
  readonly #now: () => Date;
  #state!: State;
  #conn!: AgentApiConnection;
  #timer: NodeJS.Timeout | undefined;
  /** The renewal in progress: concurrent renew() calls share it (one RenewAgent call). */
  #renewing: Promise<void> | undefined;
  #stopped = false;
  /** Replaced connections, closed a little later so in-flight calls can finish. */
  readonly #retired = new Set<AgentApiConnection>();
  readonly #listeners = new Set<() => void>();
  readonly #attestor: AgentNodeAttestor | undefined;
  /** Consecutive failed renewals, for the retry backoff. */
  #failures = 0;
  readonly #describe: (err: unknown) => string;

  private constructor(opts: {
    dataDir: string;
    trustDomain: TrustDomain;
    address?: ServerAddress;
    addresses?: readonly ServerAddress[];
    maxConnectionAgeMs?: number;
    lookup?: LookupAll;
    logger: AgentIdentityLogger;
    now?: () => Date;
    attestor: AgentNodeAttestor | undefined;
    describeError?: (err: unknown) => string;
  }) {
    this.#attestor = opts.attestor;
    this.#describe = opts.describeError ?? ((err) => (err as Error).message);
    this.#dir = opts.dataDir;
    this.#td = opts.trustDomain;
    this.#addresses = opts.addresses ?? (opts.address ? [opts.address] : []);
    if (this.#addresses.length === 0) throw new Error('AgentIdentity: no server address');
    this.#resolved = this.#addresses;
    this.#lookup = opts.lookup;
    this.#maxConnectionAgeMs = opts.maxConnectionAgeMs ?? 0;
    this.#log = opts.logger;
    this.#now = opts.now ?? (() => new Date());
  }

  /**
   * Resumes from data_dir when it holds an unexpired agent SVID; otherwise attests with
   * `attestor`, trusting `bundle` (or, with insecureBootstrap, whatever the server sends).
   */
  static async start(opts: {
    dataDir: string;
    trustDomain: TrustDomain;
    /** One server (as `addresses: [address]`). */
    address?: ServerAddress;
    /** The servers of server_address, any of which will do (agent/client/serveraddress.ts). */
    addresses?: readonly ServerAddress[];
    /**
     * Replace the connection after at most this long (a random 75-100% of it), choosing among
     * the servers again with the one in use last; 0 (default) never. Only with alternatives.
     */
    maxConnectionAgeMs?: number;
    /** DNS lookup of the names in `addresses` (tests); default node:dns lookup with all addresses. */
    lookup?: LookupAll;
    attestor: AgentNodeAttestor | undefined;
    /** PEM of a trust bundle given by the operator (-trustBundle). */
    trustBundlePem?: string;
    /** The same, already parsed (DER certificates); wins over trustBundlePem. */
    trustBundle?: Buffer[];
    insecureBootstrap?: boolean;
    logger: AgentIdentityLogger;
    now?: () => Date;
    /** Turns a failed server call into the operator-facing text logged for renewals (agent/errors.ts). */
    describeError?: (err: unknown) => string;
  }): Promise<AgentIdentity> {
    const id = new AgentIdentity(opts);
    // Names in a list of servers: resolved before anything connects (none resolving is fatal here).
    if (needsResolving(id.#addresses)) await id.#resolve(true);
    // Refused when another local user controls it or an ancestor; created 0700 if missing, an
    // existing one narrowed to 0700.
    ensureSafeDirectory(opts.dataDir, 0o700, 'agent data directory');
    chmodSync(opts.dataDir, 0o700);
    const stored = id.#load();
    if (stored && parseCertificate(stored.chain[0]!).notAfter.getTime() > id.#now().getTime()) {
      id.#state = stored;
      id.#log.info({ agent_id: stored.agentId, not_after: parseCertificate(stored.chain[0]!).notAfter }, 'resuming with the stored agent SVID');
    } else {
      if (stored) id.#log.warn({ agent_id: stored.agentId }, 'the stored agent SVID has expired; attesting again');
      if (!opts.attestor) {
        throw new Error(
          stored
            ? `the stored agent SVID of ${stored.agentId} has expired and no node attestor is configured: give a new -joinToken to attest again`
            : 'no agent SVID in the data directory and no node attestor configured (give -joinToken)',
        );
      }
      let bundle = stored?.bundle;
      if (opts.trustBundle) bundle = opts.trustBundle;
      else if (opts.trustBundlePem) bundle = pemToCertificates(opts.trustBundlePem);
      if (!bundle && opts.insecureBootstrap) bundle = await id.#fetchBundleInsecurely();
      if (!bundle) throw new Error('no trust bundle to verify the server: give -trustBundle FILE (from `spindle-server bundle show`) or -insecureBootstrap');
      id.#state = await id.#attest(opts.attestor, bundle);
    }
    id.#conn = id.#connect();
    id.#scheduleAge();
    id.#schedule();
    return id;
  }

  get agentId(): SpiffeId {
    return this.#state.agentId;
  }

  /** Whether this agent renews by attesting again (the server allows it and an attestor is configured). */
  get reattests(): boolean {
    return this.#state.reattestable && this.#attestor !== undefined;
  }

  /**
   * The server refused the agent (evicted, or its SVID is no longer accepted): attest again
   * when that is possible. Returns whether a re-attestation was started.
   */
  reattestAfterRefusal(): boolean {
    if (!this.reattests || this.#stopped) return false;
    this.#log.warn({ agent_id: this.#state.agentId }, 'the server refused this agent; attesting again');
    this.renew().catch(() => undefined);
    return true;
  }

  /** notAfter of the current agent SVID. */
  svidNotAfter(): Date {
    return parseCertificate(this.#state.chain[0]!).notAfter;
  }

  connection(): AgentApiConnection {
    return this.#conn;
  }

  /** How often a call that failed with UNAVAILABLE is tried again (the channel moves to another server): 0 with one server. */
  get failoverRetries(): number {
    return hasAlternatives(this.#addresses) ? Math.max(2, this.#resolved.length) : 0;
  }

  /** Called after the connection was replaced (renewed SVID, new bundle, or its maximum age). */
  onConnectionChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The server pushed a new bundle: keep it for restarts and trust it from now on. */
  updateBundle(x509Authorities: Buffer[]): void {
    if (x509Authorities.length === 0) return;
    const same = x509Authorities.length === this.#state.bundle.length && x509Authorities.every((c, i) => c.equals(this.#state.bundle[i]!));
    if (same) return;
    this.#state = { ...this.#state, bundle: x509Authorities };
    writeAtomic(join(this.#dir, FILES.bundle), certificatesToPem(x509Authorities), 0o644);
    this.#replaceConnection();
  }

  /**
   * Removes the stored agent SVID, its key and agent_data.json (the bundle stays): the server no
   * longer accepts them, and the next start must attest (with a new join token) instead of
   * resuming with them. Stops renewing.
   */
  discardStoredSvid(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const f of [FILES.svid, FILES.key, FILES.data]) rmSync(join(this.#dir, f), { force: true });
  }

  /** The servers, as messages name them: `127.0.0.1:8081, 127.0.0.2:8081`. */
  get servers(): string {
    return formatServerAddresses(this.#addresses);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#ageTimer) clearTimeout(this.#ageTimer);
    this.#ageTimer = undefined;
    this.#conn?.close();
    for (const c of this.#retired) c.close();
    this.#retired.clear();
  }

  #load(): State | undefined {
    const p = (f: string): string => join(this.#dir, f);
    if (![FILES.svid, FILES.key, FILES.bundle, FILES.data].every((f) => existsSync(p(f)))) return undefined;
    const data = JSON.parse(readFileSync(p(FILES.data), 'utf8')) as { agentId: string; reattestable: boolean };
    return {
      agentId: parseSpiffeId(data.agentId),
      chain: pemToCertificates(readFileSync(p(FILES.svid), 'utf8')),
      privateKey: importPrivateKeyPkcs8(pemToPrivateKey(readFileSync(p(FILES.key), 'utf8'))),
      bundle: pemToCertificates(readFileSync(p(FILES.bundle), 'utf8')),
      reattestable: data.reattestable,
    };
  }

  #save(s: State): void {
    const p = (f: string): string => join(this.#dir, f);
    writeAtomic(p(FILES.key), privateKeyToPem(exportPrivateKeyPkcs8(s.privateKey)), 0o600);
    writeAtomic(p(FILES.svid), certificatesToPem(s.chain), 0o644);
    writeAtomic(p(FILES.bundle), certificatesToPem(s.bundle), 0o644);
    writeAtomic(p(FILES.data), `${JSON.stringify({ agentId: s.agentId, reattestable: s.reattestable })}\n`, 0o644);
  }

  async #fetchBundleInsecurely(): Promise<Buffer[]> {
    this.#log.warn({}, 'insecure bootstrap: trusting the bundle the server sends without verifying the server');
    const conn = connectAgentApi({ addresses: connectionOrder(this.#resolved), trustDomain: this.#td, insecure: true });
    try {
      const res = await new Promise<GetBundleResponse>((resolve, reject) =>
        conn.client.getBundle({}, new Metadata(), { deadline: Date.now() + 15_000 }, (err, r) => (err ? reject(err) : resolve(r!))),
      );
      return parseBundle(this.#td, res.bundle!.document).x509Authorities().slice();
    } finally {
      conn.close();
    }
  }

  async #attest(attestor: AgentNodeAttestor, bundle: Buffer[]): Promise<State> {
    const keys = await generateKeyPair('ec-p256');
    const conn = connectAgentApi({ addresses: connectionOrder(this.#resolved), trustDomain: this.#td, bundle });
    try {
      const res = await attestAgent(conn.client, {
        type: attestor.name,
        payload: await attestor.payload(),
        csr: createCsr(keys.privateKey),
        ...(attestor.answerChallenge ? { answerChallenge: (c: Buffer) => attestor.answerChallenge!(c) } : {}),
      });
      const state: State = { agentId: parseSpiffeId(res.svid.spiffeId), chain: res.svid.certChain, privateKey: keys.privateKey, bundle, reattestable: res.reattestable };
      this.#save(state);
      this.#log.info({ agent_id: state.agentId }, 'node attestation succeeded');
      return state;
    } finally {
      conn.close();
    }
  }

  /**
   * Resolves the names in server_address again (only when the list has names). `atStart`: a
   * lookup that finds no address at all throws; later it keeps the previous addresses and warns.
   */
  async #resolve(atStart = false): Promise<void> {
    if (!needsResolving(this.#addresses)) return;
    try {
      const { addresses, unresolved } = await resolveServerAddresses(this.#addresses, this.#lookup);
      this.#resolved = addresses;
      const now = unresolved.join(', ');
      if (now !== this.#unresolved) {
        if (now !== '') this.#log.warn({ unresolved: now, servers: formatServerAddresses(addresses) }, 'some server names in server_address do not resolve; using the others');
        else if (!atStart) this.#log.info({ servers: formatServerAddresses(addresses) }, 'every server name in server_address resolves again');
        this.#unresolved = now;
      }
    } catch (err) {
      if (atStart) throw err;
      this.#log.warn({ err: (err as Error).message, servers: formatServerAddresses(this.#resolved) }, 'could not resolve the server names in server_address; keeping the addresses found before');
    }
  }

  /** A new connection over every server, in random order but for `place` (the server to try first or last). */
  #connect(place: { first?: string | undefined; last?: string | undefined } = {}): AgentApiConnection {
    return connectAgentApi({
      addresses: connectionOrder(this.#resolved, place),
      trustDomain: this.#td,
      bundle: this.#state.bundle,
      svid: { chain: this.#state.chain, privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(this.#state.privateKey)) },
    });
  }

  /**
   * Replaces the connection: the listeners (the sync stream) move to the new one, opening their
   * stream there before they close the old. A renewed SVID or a new bundle keeps to the server in
   * use (`move` false: it is tried first); the maximum age moves away from it (tried last).
   */
  #replaceConnection(move = false): void {
    if (this.#stopped) return;
    const old = this.#conn;
    this.#conn = this.#connect(move ? { last: old.peer } : { first: old.peer });
    this.#scheduleAge();
    for (const l of this.#listeners) l();
    // Let in-flight calls on the old channel finish (stop() closes it sooner).
    this.#retired.add(old);
    setTimeout(() => {
      this.#retired.delete(old);
      old.close();
    }, 10_000).unref();
  }

  /**
   * The connection's maximum age: a random 75-100% of max_connection_age (so a fleet does not
   * move in step), then a new connection that tries the other servers first. Agents that all
   * failed over to one server thus spread again over the servers once the others are back.
   */
  #scheduleAge(): void {
    if (this.#ageTimer) clearTimeout(this.#ageTimer);
    this.#ageTimer = undefined;
    if (this.#stopped || this.#maxConnectionAgeMs <= 0 || !hasAlternatives(this.#addresses)) return;
    const max = this.#maxConnectionAgeMs;
    const delay = Math.min(max - randomInt(0, Math.max(1, Math.floor(max / 4))), 2 ** 31 - 1);
    this.#ageTimer = setTimeout(() => {
      this.#ageTimer = undefined;
      if (this.#stopped) return;
      // Names are looked up again first, so servers added to (or gone from) DNS are seen.
      void this.#resolve().then(() => {
        if (this.#stopped) return;
        this.#log.info({ server: this.#conn.peer, max_connection_age_ms: max }, 'the server connection reached its maximum age; connecting again, to another server if one answers');
        this.#replaceConnection(true);
      });
    }, delay);
    this.#ageTimer.unref();
  }

  #schedule(delayMs?: number): void {
    // One renewal timer at a time: a renew() called early (or a retry) replaces the pending one.
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#stopped) return;
    let delay = delayMs;
    if (delay === undefined) {
      const leaf = parseCertificate(this.#state.chain[0]!);
      const half = leaf.notBefore.getTime() + (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 2;
      delay = Math.max(0, Math.min(half - this.#now().getTime(), 2 ** 31 - 1));
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      // Failures are logged and retried by renew() itself.
      this.renew().catch(() => undefined);
    }, delay);
    this.#timer.unref();
  }

  /**
   * Renews the agent SVID now (the timer calls this at half-life), by re-attesting when
   * `reattests`. Resolves once the new SVID is stored and the connection replaced; on failure,
   * schedules a retry (5 s, doubling up to 5 min) and rejects. Concurrent calls share one renewal.
   */
  renew(): Promise<void> {
    this.#renewing ??= this.#renewOnce().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  async #renewOnce(): Promise<void> {
    try {
      if (this.reattests) {
        const before = this.#state.agentId;
        this.#state = await this.#attest(this.#attestor!, this.#state.bundle);
        if (this.#state.agentId !== before) this.#log.warn({ agent_id: this.#state.agentId, previous: before }, 'the agent ID changed on re-attestation');
        this.#failures = 0;
        this.#replaceConnection();
        this.#schedule();
        return;
      }
      const keys = await generateKeyPair('ec-p256');
      const csr = createCsr(keys.privateKey);
      // A server that goes away under the call: the channel moves to another one (several servers).
      const res = await retryUnavailable(
        () =>
          new Promise<RenewAgentResponse>((resolve, reject) =>
            this.#conn.client.renewAgent({ csr }, new Metadata(), { deadline: Date.now() + 15_000 }, (err, r) => (err ? reject(err) : resolve(r!))),
          ),
        this.failoverRetries,
      );
      this.#state = { ...this.#state, chain: res.svid!.certChain, privateKey: keys.privateKey };
      this.#save(this.#state);
      this.#log.info({ agent_id: this.#state.agentId, serial: res.svid!.serial }, 'agent SVID renewed');
      this.#failures = 0;
      this.#replaceConnection();
      this.#schedule();
    } catch (err) {
      // 5 s, doubling up to 5 min: a banned agent must not hammer the server.
      const delay = Math.min(RETRY_MIN_MS * 2 ** this.#failures, RETRY_MAX_MS);
      this.#failures++;
      this.#log.warn({ err: this.#describe(err), retry_ms: delay }, this.reattests ? 'agent re-attestation failed; retrying' : 'agent SVID renewal failed; retrying');
      this.#schedule(delay);
      throw err;
    }
  }
}

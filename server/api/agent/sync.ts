/**
 * SyncAuthorized: the long-lived stream over which an authenticated agent receives its
 * authorized registration entries (a snapshot, or the difference from the entries it says it
 * holds, then every change the AuthorizationCache reports for it) and the bundles they need
 * (its own trust domain's, and those its entries federate with). Streams are bounded: a few per
 * agent, a write backlog per stream, and the life of the agent certificate that opened them; a
 * banned or evicted agent's streams are ended, and a re-attested one's alias memberships pushed.
 */
import { status as GrpcStatus, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import type { SpiffeId } from '../../../spiffe/id.js';
import type { SyncAuthorizedRequest, SyncAuthorizedResponse } from '../../../proto/gen/spindle/agent/v1/agent.js';
import type { Bundle as ProtoBundle } from '../../../proto/gen/spindle/types/v1/types.js';
import { isDataStoreUnavailable, type RegistrationEntry } from '../../datastore/types.js';
import type { AgentChange } from '../../entries/authcache.js';
import { encodeSyncResponse } from './syncencode.js';
import { toServiceError } from '../errors.js';
import type { ApiLogger } from '../logger.js';
import type { AgentApiDeps, OwnBundle } from './deps.js';
import type { AgentAuth, Caller } from './auth.js';

/**
 * Open SyncAuthorized streams one agent may hold. spindle-agent keeps one (two for a moment
 * while it moves to a renewed SVID); more is a misbehaving or hostile client.
 */
export const MAX_SYNC_STREAMS_PER_AGENT = 8;
/** A changed node record that could not be read is read again this often while the agent has streams. */
export const NODE_RECHECK_MS = 5_000;
/**
 * Bounds on what a sync stream may have queued (written, not yet taken by the transport because
 * the agent does not read). Sync messages are deltas: they cannot be merged or dropped, so a
 * stream over a bound is ended with RESOURCE_EXHAUSTED instead, and the agent reconnects and
 * resumes from the entries it holds. Over SOFT with no progress for STALL_MS, or over HARD at
 * all; the first message of a stream (the snapshot) is never refused, whatever its size.
 */
export const SYNC_BACKLOG_SOFT_BYTES = 1024 * 1024;
export const SYNC_BACKLOG_HARD_BYTES = 16 * 1024 * 1024;
export const SYNC_BACKLOG_STALL_MS = 5_000;


/** One open SyncAuthorized stream. */
interface SyncStream {
  agentId: SpiffeId;
  call: ServerWritableStream<SyncAuthorizedRequest, SyncAuthorizedResponse>;
  /** Trust domain -> sequence of the bundles this stream has been sent. */
  bundleSequences: Map<string, bigint>;
  /** Ends the stream when the agent's certificate expires (cleared when the stream goes). */
  expiryTimer: NodeJS.Timeout | undefined;
  /** Bytes written to the call and not yet taken by the transport. */
  queued: number;
  /** When the transport last took a message (or the backlog last became non-empty). */
  lastProgress: number;
  /** Ended for its backlog: nothing more is written. */
  cut: boolean;
}

/** The open SyncAuthorized streams, by agent. */
export class SyncStreams {
  readonly #d: AgentApiDeps;
  readonly #log: ApiLogger;
  readonly #auth: AgentAuth;
  readonly #ownBundle: OwnBundle;
  readonly #streams = new Map<SpiffeId, Set<SyncStream>>();

  constructor(deps: AgentApiDeps, log: ApiLogger, auth: AgentAuth, ownBundle: OwnBundle) {
    this.#d = deps;
    this.#log = log;
    this.#auth = auth;
    this.#ownBundle = ownBundle;
  }

  /** Number of open sync streams. */
  get size(): number {
    let n = 0;
    for (const set of this.#streams.values()) n += set.size;
    return n;
  }

  /** Ends every stream (shutdown). */
  close(): void {
    for (const set of this.#streams.values())
      for (const s of set) {
        clearTimeout(s.expiryTimer);
        s.call.end();
      }
    this.#streams.clear();
  }

  /** Serves one SyncAuthorized call until it ends. */
  async open(call: ServerWritableStream<SyncAuthorizedRequest, SyncAuthorizedResponse>): Promise<void> {
    let caller: Caller;
    try {
      caller = await this.#auth.authenticate(call);
    } catch (err) {
      call.emit('error', toServiceError(err, this.#log, { method: 'SyncAuthorized' }, 'agent'));
      return;
    }
    if (call.cancelled) return;
    const { agentId } = caller;
    const cache = this.#d.cache;
    if ((this.#streams.get(agentId)?.size ?? 0) >= MAX_SYNC_STREAMS_PER_AGENT) {
      this.#log.warn({ agent_id: agentId, limit: MAX_SYNC_STREAMS_PER_AGENT }, 'sync stream refused: the agent has too many open');
      call.emit('error', { code: GrpcStatus.RESOURCE_EXHAUSTED, details: `agent ${agentId} already has ${MAX_SYNC_STREAMS_PER_AGENT} open sync streams (the limit); close one first` } as Partial<ServiceError>);
      return;
    }
    // A new agent's snapshot is what setAgent returns; an agent with another open stream already
    // has its set.
    const entries = (cache.hasAgent(agentId) ? cache.entriesFor(agentId) : cache.setAgent(agentId, caller.node.selectors)?.added) ?? [];
    const stream: SyncStream = { agentId, call, bundleSequences: new Map(), expiryTimer: undefined, queued: 0, lastProgress: Date.now(), cut: false };
    const req = call.request;
    const known = new Map(req.knownEntries.map((k) => [k.id, k.revisionNumber]));
    for (const [td, seq] of req.knownBundleSequences) stream.bundleSequences.set(td, seq);
    const first: SyncAuthorizedResponse = {
      revision: BigInt(this.#d.feed.revision),
      snapshot: known.size === 0,
      entries: [],
      removedEntryIds: [],
      bundles: [],
      bundlesIncluded: false,
    };
    let send: readonly RegistrationEntry[] = entries;
    if (known.size > 0) {
      const changed: RegistrationEntry[] = [];
      const current = new Set<string>();
      for (const e of entries) {
        current.add(e.id);
        if (known.get(e.id) !== BigInt(e.revisionNumber)) changed.push(e);
      }
      for (const id of known.keys()) if (!current.has(id)) first.removedEntryIds.push(id);
      send = changed;
    }
    this.#attachBundles(stream, entries, first, true);
    let set = this.#streams.get(agentId);
    if (!set) this.#streams.set(agentId, (set = new Set()));
    set.add(stream);
    const detach = (): void => {
      clearTimeout(stream.expiryTimer);
      stream.expiryTimer = undefined;
      const s = this.#streams.get(agentId);
      if (!s?.delete(stream)) return;
      if (s.size === 0) {
        this.#streams.delete(agentId);
        cache.removeAgent(agentId);
      }
    };
    call.on('cancelled', detach);
    call.on('close', detach);
    call.on('error', detach);
    call.on('finish', detach);
    this.#endAtExpiry(stream, caller.certNotAfter);
    this.#write(stream, encodeSyncResponse(first, send));
    this.#log.debug({ agent_id: agentId, entries: entries.length, snapshot: first.snapshot }, 'agent sync stream opened');
  }

  /**
   * Ends `stream` with UNAUTHENTICATED once the agent certificate it was opened with expires
   * (`notAfter`, ms; valid through that instant): a long-lived stream must not outlive the
   * credential that opened it. The agent renews at half-life and reopens its stream with the
   * renewed SVID long before, so this ends only streams of agents whose renewal failed.
   * Measured by the injected clock; the timer re-checks when it fires early (clock adjusted,
   * delays beyond setTimeout's range).
   */
  #endAtExpiry(stream: SyncStream, notAfter: number): void {
    const left = notAfter - this.#d.now().getTime();
    if (left < 0) {
      stream.expiryTimer = undefined;
      this.#log.info({ agent_id: stream.agentId, expired_at: new Date(notAfter).toISOString() }, 'ended the sync stream of an agent whose SVID expired');
      stream.call.emit('error', {
        code: GrpcStatus.UNAUTHENTICATED,
        details: `agent SVID expired at ${new Date(notAfter).toISOString()}: reconnect with the renewed agent SVID (or attest again)`,
      } as Partial<ServiceError>);
      return;
    }
    stream.expiryTimer = setTimeout(() => this.#endAtExpiry(stream, notAfter), Math.min(left + 1, 2 ** 31 - 1));
    stream.expiryTimer.unref();
  }

  /** Fills `msg.bundles` when the stream's bundle set differs from what it was last sent. */
  #attachBundles(stream: SyncStream, entries: readonly RegistrationEntry[], msg: SyncAuthorizedResponse, force: boolean): void {
    const own = this.#ownBundle.proto();
    const wanted: ProtoBundle[] = [own];
    const federated = new Set<string>();
    for (const e of entries) for (const td of e.federatesWith) federated.add(td);
    for (const td of [...federated].sort()) {
      const b = this.#federated.get(td);
      if (b) wanted.push(b);
    }
    const same =
      wanted.length === stream.bundleSequences.size && wanted.every((b) => stream.bundleSequences.get(b.trustDomain) === b.sequence);
    if (same && !(force && stream.bundleSequences.size === 0)) return;
    msg.bundles = wanted;
    msg.bundlesIncluded = true;
    stream.bundleSequences = new Map(wanted.map((b) => [b.trustDomain, b.sequence]));
  }

  /** Federated bundles by trust domain (refreshed from the datastore on bundle events). */
  #federated = new Map<string, ProtoBundle>();

  /** Loads federated bundles; call once at start (the feed keeps them fresh afterwards). */
  async loadFederatedBundles(): Promise<void> {
    const all = await this.#d.datastore.listBundles();
    const next = new Map<string, ProtoBundle>();
    for (const b of all) {
      if (b.trustDomain === this.#d.trustDomain) continue;
      next.set(b.trustDomain, { trustDomain: b.trustDomain, document: Buffer.from(b.document), sequence: b.sequence });
    }
    this.#federated = next;
  }

  pushEntries(changes: AgentChange[], revision: number): void {
    for (const ch of changes) {
      const set = this.#streams.get(ch.agentId);
      if (!set) continue;
      const entries = this.#d.cache.entriesFor(ch.agentId) ?? [];
      for (const stream of set) {
        const msg: SyncAuthorizedResponse = {
          revision: BigInt(revision),
          snapshot: false,
          entries: [],
          removedEntryIds: ch.removed.map((e) => e.id),
          bundles: [],
          bundlesIncluded: false,
        };
        this.#attachBundles(stream, entries, msg, false);
        this.#write(stream, encodeSyncResponse(msg, ch.updated.length === 0 ? ch.added : [...ch.added, ...ch.updated]));
      }
    }
  }

  /**
   * Writes one encoded sync message (the service is registered with syncencode.ts's definition,
   * whose serializer passes Buffers through), within the stream's backlog bounds; a stream over
   * them is ended with RESOURCE_EXHAUSTED and written to no more.
   */
  #write(stream: SyncStream, msg: Buffer): void {
    if (stream.cut) return;
    const now = Date.now();
    const after = stream.queued + msg.length;
    if (stream.queued > 0 && (after > SYNC_BACKLOG_HARD_BYTES || (after > SYNC_BACKLOG_SOFT_BYTES && now - stream.lastProgress > SYNC_BACKLOG_STALL_MS))) {
      stream.cut = true;
      const stalled = Math.round((now - stream.lastProgress) / 1000);
      this.#log.warn({ agent_id: stream.agentId, queued_bytes: stream.queued, stalled_s: stalled }, 'sync stream ended: the agent is not reading it');
      stream.call.emit('error', {
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        details: `sync stream ended: ${stream.queued} bytes queued for agent ${stream.agentId}, not read for ${stalled} s; reconnect to resume`,
      } as Partial<ServiceError>);
      return;
    }
    if (stream.queued === 0) stream.lastProgress = now;
    stream.queued = after;
    stream.call.write(msg as unknown as SyncAuthorizedResponse, () => {
      stream.queued -= msg.length;
      stream.lastProgress = Date.now();
    });
  }

  async pushBundles(): Promise<void> {
    try {
      await this.loadFederatedBundles();
    } catch (err) {
      this.#log.error({ err }, 'could not reload federated bundles');
      return;
    }
    const revision = BigInt(this.#d.feed.revision);
    for (const [agentId, set] of this.#streams) {
      const entries = this.#d.cache.entriesFor(agentId) ?? [];
      for (const stream of set) {
        const msg: SyncAuthorizedResponse = { revision, snapshot: false, entries: [], removedEntryIds: [], bundles: [], bundlesIncluded: false };
        this.#attachBundles(stream, entries, msg, false);
        if (msg.bundlesIncluded) this.#write(stream, encodeSyncResponse(msg, []));
      }
    }
  }

  /**
   * A node record changed: end the streams of banned or evicted agents; for a node that
   * re-attested with other node selectors (k8s_psat: new labels, another pod), recompute its
   * node-alias memberships and push the difference to its open streams.
   */
  checkNode(agentId: SpiffeId, revision: number, attempt = 0): void {
    this.#checkNode(agentId, revision).catch((err: unknown) => {
      // The record could not be read (the datastore went away): try again, so a ban or eviction
      // still ends the agent's streams once it can be read.
      if (attempt === 0 && !isDataStoreUnavailable(err)) this.#log.warn({ err, agent_id: agentId }, 'could not read a changed node record; retrying');
      const t = setTimeout(() => {
        if (this.#streams.has(agentId)) this.checkNode(agentId, revision, attempt + 1);
      }, NODE_RECHECK_MS);
      t.unref();
    });
  }

  async #checkNode(agentId: SpiffeId, revision: number): Promise<void> {
    const set = this.#streams.get(agentId);
    if (!set) return;
    const node = await this.#d.datastore.getAttestedNode(agentId);
    if (node && !node.banned) {
      if (!this.#d.cache.hasAgent(agentId)) return;
      const change = this.#d.cache.setAgent(agentId, node.selectors);
      if (change) this.pushEntries([change], revision);
      return;
    }
    const message = node ? `agent ${agentId} is banned` : `agent ${agentId} has been evicted: attest again`;
    for (const stream of [...set]) stream.call.emit('error', { code: GrpcStatus.PERMISSION_DENIED, details: message } as Partial<ServiceError>);
    this.#log.info({ agent_id: agentId }, node ? 'closed streams of banned agent' : 'closed streams of evicted agent');
  }
}

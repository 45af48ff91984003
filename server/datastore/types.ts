/**
 * The datastore contract: the `DataStore` interface everything outside server/datastore/ holds.
 * SQLite (sqlite/) implements it today; a PostgreSQL implementation for several servers sharing
 * one database implements the same interface later, which is why every method is async even
 * though better-sqlite3 is synchronous. factory.ts opens the backend the config names; the
 * backend-independent parts (argument checks, filter semantics, page tokens, entry IDs) live
 * beside this file, and test/datastore/contract.ts holds the tests every backend must pass.
 *
 * Every write that changes what an agent may be served appends to the change feed (`events`)
 * in the same transaction, so a reader that has seen event N and then reads events > N misses
 * nothing. Times are unix seconds (integers) unless a name says otherwise.
 */
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { Selector } from '../../common/selector.js';

// The selector and its order live in common/ (shared with the agent and the attestors);
// re-exported so datastore users can take everything from here.
export { compareSelectors, type Selector } from '../../common/selector.js';

export interface RegistrationEntry {
  /** Generated (a UUID v7: time-ordered, random below the millisecond) unless given at creation. */
  id: string;
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  /** Sorted by (type, value), no duplicates. */
  selectors: Selector[];
  /** 0: the server default (default_x509_svid_ttl). */
  x509SvidTtl: number;
  /** 0: the server default (default_jwt_svid_ttl). */
  jwtSvidTtl: number;
  /** In the order given; no duplicates. */
  dnsNames: string[];
  /** Sorted, no duplicates. */
  federatesWith: TrustDomain[];
  admin: boolean;
  downstream: boolean;
  hint: string;
  /** 0: never expires. */
  entryExpiry: number;
  /** Bumped on every update; 0 at creation. */
  revisionNumber: number;
  createdAt: number;
  updatedAt: number;
}

/** Fields a caller supplies to create an entry. */
export type NewEntry = Omit<RegistrationEntry, 'id' | 'revisionNumber' | 'createdAt' | 'updatedAt'> & { id?: string };

export type SelectorMatch = 'exact' | 'subset' | 'superset' | 'any';

export interface EntryFilter {
  bySpiffeId?: SpiffeId;
  byParentId?: SpiffeId;
  /**
   * exact: the entry's selector set equals these; subset: the entry's selectors are all among these
   * (SPIRE's "entries a workload with these selectors matches"); superset: the entry has all of
   * these (and maybe more); any: the entry has at least one of these.
   */
  bySelectors?: { selectors: Selector[]; match: SelectorMatch };
  byFederatesWith?: { trustDomains: TrustDomain[]; match: SelectorMatch };
  byHint?: string;
  byDownstream?: boolean;
}

export interface Page {
  /** Opaque token from the previous page; '' or undefined for the first. */
  token?: string;
  /** 0 or undefined: everything. */
  size?: number;
}

export interface Paged<T> {
  items: T[];
  /** '' when this was the last page. */
  nextToken: string;
}

export interface AttestedNode {
  spiffeId: SpiffeId;
  attestationType: string;
  /** Serial (lowercase hex) of the agent's current X509-SVID. */
  certSerial: string;
  certNotAfter: number;
  /** Serial of an SVID issued by renewal but not yet used by the agent ('' when none). */
  newCertSerial: string;
  newCertNotAfter: number;
  selectors: Selector[];
  banned: boolean;
  /** Whether the attestor allows this node to attest again (k8s_psat yes, join_token no). */
  canReattest: boolean;
  createdAt: number;
  updatedAt: number;
}

export interface NodeFilter {
  byAttestationType?: string;
  byBanned?: boolean;
  /** Nodes whose current SVID expires before this time. */
  byExpiresBefore?: number;
  bySelectors?: { selectors: Selector[]; match: SelectorMatch };
  /** Only nodes that can re-attest (true) or cannot (false). */
  byCanReattest?: boolean;
}

export interface JoinToken {
  /** SHA-256 (hex) of the token value; the value itself is never stored. */
  hash: string;
  expiresAt: number;
}

export interface StoredBundle {
  trustDomain: TrustDomain;
  /** The SPIFFE bundle document (spiffe/bundle.ts marshalBundle). */
  document: string;
  sequence: bigint;
}

/**
 * What a bundle update (DataStore.updateBundle) writes, decided from the bundle stored at that
 * moment inside the write transaction.
 */
export interface BundleUpdate {
  /**
   * The new bundle of the trust domain given to updateBundle (same trust domain); undefined:
   * leave the stored bundle as it is. Its sequence must be above the stored one's.
   */
  bundle?: StoredBundle;
  /** A CA journal to write in the same transaction (setCaJournal's arguments). */
  caJournal?: { serverId: string; document: string };
}

/**
 * A federation relationship (SPIRE's FederationRelationship): where the bundle of a foreign trust
 * domain is fetched from and how its endpoint is authenticated, plus what the last refresh did.
 * The foreign bundle itself is the federated bundle of `trustDomain` (getBundle / updateBundle).
 */
export type BundleEndpointProfile = 'https_web' | 'https_spiffe';

export interface FederationRelationship {
  trustDomain: TrustDomain;
  /** An https URL. */
  bundleEndpointUrl: string;
  bundleEndpointProfile: BundleEndpointProfile;
  /** The endpoint server's SPIFFE ID (https_spiffe); '' for https_web. */
  endpointSpiffeId: string;
  createdAt: number;
  updatedAt: number;
}

/** What the bundle refresher recorded for a relationship (0 / '' when it has not tried yet). */
export interface FederationRefreshState {
  /** When the last fetch started (unix seconds). */
  lastAttemptAt: number;
  /** When a fetch last succeeded (the bundle was stored or was already current). */
  lastSuccessAt: number;
  /** '' after a success; otherwise why the last attempt failed. */
  lastError: string;
  /** The sequence of the last bundle accepted (0 when none). */
  lastSequence: bigint;
}

export interface StoredFederationRelationship extends FederationRelationship {
  refresh: FederationRefreshState;
}

export const NO_REFRESH: FederationRefreshState = Object.freeze({ lastAttemptAt: 0, lastSuccessAt: 0, lastError: '', lastSequence: 0n });

/** The CA journal key of a single server (and of the journal written before servers had IDs). */
export const DEFAULT_CA_SERVER_ID = '';

export type ChangeKind =
  | 'entry_created'
  | 'entry_updated'
  | 'entry_deleted'
  | 'node_created'
  | 'node_updated'
  | 'node_deleted'
  | 'bundle_updated'
  | 'bundle_deleted';

export interface ChangeEvent {
  /** Strictly increasing; the "revision" agents resume from. */
  id: number;
  kind: ChangeKind;
  /** Entry ID, node SPIFFE ID or trust domain. */
  key: string;
  at: number;
}

export interface DataStore {
  // Registration entries. Duplicate = same spiffeId + parentId + selector set.
  /** Creates all or, per entry, reports why it was refused; accepted ones commit together. */
  createEntries(entries: NewEntry[], now: number): Promise<Array<{ entry: RegistrationEntry } | { error: DataStoreError }>>;
  getEntry(id: string): Promise<RegistrationEntry | undefined>;
  /**
   * The entries with these IDs, read in one snapshot, keyed by ID; unknown IDs are absent. For
   * bulk reads such as the change feed's (one query per batch of events, not one per event).
   */
  getEntries(ids: readonly string[]): Promise<Map<string, RegistrationEntry>>;
  /**
   * Every entry, in no particular order, read in one snapshot: the cheapest way to load them all
   * (the server's authorization cache at startup). listEntries pages and sorts; this does not.
   */
  listAllEntries(): Promise<RegistrationEntry[]>;
  listEntries(filter?: EntryFilter, page?: Page, opts?: ReadOptions): Promise<Paged<RegistrationEntry>>;
  countEntries(filter?: EntryFilter, opts?: ReadOptions): Promise<number>;
  /** Replaces the entry's mutable fields; bumps revisionNumber. Throws not_found / duplicate. */
  updateEntry(entry: RegistrationEntry, now: number): Promise<RegistrationEntry>;
  /** Deletes and returns the deleted entries; unknown IDs are reported as errors. */
  deleteEntries(ids: string[], now: number): Promise<Array<{ entry: RegistrationEntry } | { error: DataStoreError }>>;
  /** Deletes entries whose entryExpiry is set and before `now`. Returns how many. */
  pruneExpiredEntries(now: number): Promise<number>;

  // Attested agents.
  createAttestedNode(node: Omit<AttestedNode, 'createdAt' | 'updatedAt'>, now: number): Promise<AttestedNode>;
  getAttestedNode(id: SpiffeId): Promise<AttestedNode | undefined>;
  listAttestedNodes(filter?: NodeFilter, page?: Page, opts?: ReadOptions): Promise<Paged<AttestedNode>>;
  countAttestedNodes(filter?: NodeFilter, opts?: ReadOptions): Promise<number>;
  /** Updates serials, expiry, selectors, banned flag; throws not_found. */
  updateAttestedNode(node: AttestedNode, now: number): Promise<AttestedNode>;
  /** Evict: removes the node record (it must attest again). Returns the removed node or undefined. */
  deleteAttestedNode(id: SpiffeId, now: number): Promise<AttestedNode | undefined>;

  // Join tokens.
  createJoinToken(token: JoinToken): Promise<void>;
  /**
   * Atomically consumes a token: deletes and returns it if it exists (whatever its expiry; the
   * caller checks expiry so it can say "expired" rather than "unknown"). Of N concurrent
   * consumers of one token exactly one gets it.
   */
  consumeJoinToken(hash: string): Promise<JoinToken | undefined>;
  pruneJoinTokens(expiredBefore: number): Promise<number>;

  // Bundles: our own and federated ones, keyed by trust domain.
  getBundle(td: TrustDomain): Promise<StoredBundle | undefined>;
  listBundles(): Promise<StoredBundle[]>;
  setBundle(bundle: StoredBundle, now: number): Promise<void>;
  /**
   * Read-modify-write of one bundle in ONE write transaction: `update` gets the bundle stored now
   * (undefined: none) and returns what to write. Writes are serialized (across servers too), so
   * two concurrent updates each see the other's result and neither is lost. `update` must be
   * synchronous and must not call the store. A returned bundle whose sequence is not above the
   * stored one is refused (DataStoreError 'invalid', nothing written): sequences only grow.
   * A bundle write appends a bundle_updated event. Returns the bundle stored afterwards.
   */
  updateBundle(td: TrustDomain, update: (current: StoredBundle | undefined) => BundleUpdate, now: number): Promise<StoredBundle | undefined>;
  deleteBundle(td: TrustDomain, now: number): Promise<boolean>;

  // CA journals: one opaque JSON document (key slots, their states, certificates) per server that
  // shares the datastore, keyed by the server's ID (DEFAULT_CA_SERVER_ID when omitted).
  getCaJournal(serverId?: string): Promise<string | undefined>;
  setCaJournal(json: string, serverId?: string): Promise<void>;
  /**
   * Moves the journal of `from` to `to` when `to` has none and `from` has one (one transaction:
   * of several servers adopting the same journal exactly one gets it). Returns whether it moved.
   */
  adoptCaJournal(from: string, to: string): Promise<boolean>;
  /**
   * Every server's CA journal (server ID '' included), sorted by server ID. Read outside any
   * write: a journal committed after the read is not in it.
   */
  listCaJournals(): Promise<ExportedCaJournal[]>;

  // Federation relationships, keyed by trust domain (the foreign bundle is the federated bundle).
  /** Throws already_exists when one exists for the trust domain. Refresh state starts empty. */
  createFederationRelationship(rel: Omit<FederationRelationship, 'createdAt' | 'updatedAt'>, now: number): Promise<StoredFederationRelationship>;
  getFederationRelationship(td: TrustDomain): Promise<StoredFederationRelationship | undefined>;
  /** Sorted by trust domain. */
  listFederationRelationships(): Promise<StoredFederationRelationship[]>;
  /** Replaces URL, profile and endpoint SPIFFE ID (the refresh state stays); throws not_found. */
  updateFederationRelationship(rel: Omit<FederationRelationship, 'createdAt' | 'updatedAt'>, now: number): Promise<StoredFederationRelationship>;
  /** Deletes the relationship (not the federated bundle). Returns whether one existed. */
  deleteFederationRelationship(td: TrustDomain): Promise<boolean>;
  /** Records what a refresh did; false (nothing written) when the relationship no longer exists. */
  setFederationRefreshState(td: TrustDomain, state: FederationRefreshState): Promise<boolean>;

  // Change feed.
  /** Events with id > `after`, oldest first, at most `limit`. */
  listEventsSince(after: number, limit: number): Promise<ChangeEvent[]>;
  /** The highest event id (0 when none). */
  latestEventId(): Promise<number>;
  /** Removes events older than `before`, keeping the most recent one. */
  pruneEvents(before: number): Promise<number>;
  /** Called after each commit that appended events (same process). Returns an unsubscribe function. */
  onChange(listener: (latestEventId: number) => void): () => void;

  /** Runs `PRAGMA integrity_check` or the backend's equivalent; returns problems ('' when ok). */
  checkIntegrity(): Promise<string>;
  /**
   * Backends reached over a network (PostgreSQL): whether the database answered the last
   * statement, and a listener called with each change (false: lost, true: back). Absent: always up.
   */
  available?(): boolean;
  onAvailabilityChange?(listener: (up: boolean) => void): () => void;
  close(): Promise<void>;
}

/**
 * How a read may be served. `mayLag`: the caller shows the result (admin list and count pages,
 * gauges) and nothing is decided from it, so a backend may answer from a read-only replica that
 * lags the primary (PostgreSQL's ro_connection_string). Never set for reads that authorization,
 * the change feed or a check before a write depends on.
 */
export interface ReadOptions {
  mayLag?: boolean;
}

/**
 * Moving a deployment to another backend (`spindle-server datastore migrate`): every persistent
 * record of a datastore, as stored. Unlike the DataStore methods, an import keeps what the store
 * normally sets itself (entry revision numbers and times, node times, bundle update times) and
 * takes join tokens by hash, so the target holds exactly what the source held. The change feed is
 * not part of it: an imported database starts a feed of its own (agents then fetch everything).
 */
export interface ExportedBundle extends StoredBundle {
  /** When the bundle was last set (unix seconds). */
  updatedAt: number;
}

export interface DataStoreRecords {
  /** In creation order (the source's), each complete (selectors, DNS names, federatesWith). */
  entries: RegistrationEntry[];
  /** Sorted by SPIFFE ID. */
  nodes: AttestedNode[];
  /** Sorted by hash. */
  joinTokens: JoinToken[];
  /** Sorted by trust domain. */
  bundles: ExportedBundle[];
  /** One per server that has written one (server ID '' for a single server), sorted by server ID. */
  caJournals: ExportedCaJournal[];
  /** Sorted by trust domain, with their refresh state. */
  federationRelationships: StoredFederationRelationship[];
}

export interface ExportedCaJournal {
  serverId: string;
  document: string;
}

export interface RecordCounts {
  entries: number;
  nodes: number;
  joinTokens: number;
  bundles: number;
  caJournals: number;
  federationRelationships: number;
}

/** A backend that can export its records (both backends). */
export interface RecordExporter {
  /** Every record, read in one snapshot. */
  exportRecords(): Promise<DataStoreRecords>;
  /** How many records of each kind, read in one snapshot. */
  countRecords(): Promise<RecordCounts>;
}

/** A backend that can import records (PostgreSQL). */
export interface RecordImporter {
  /**
   * Writes `records` in ONE transaction: all of them or, on any failure, nothing. Refuses
   * (reason 'already_exists', naming what is there) a store holding any entry, node, join token,
   * bundle or CA journal unless `replace` is set; with `replace` those records and the change
   * feed are deleted first, in the same transaction. Appends no change-feed events. Every record
   * passes the same checks as a DataStore write. Before committing, counts what the store holds
   * and fails unless it is exactly `records`; returns those counts.
   */
  importRecords(records: DataStoreRecords, options: { replace: boolean }): Promise<RecordCounts>;
}

/** True when no record is counted. */
export function isEmptyCounts(c: RecordCounts): boolean {
  return c.entries === 0 && c.nodes === 0 && c.joinTokens === 0 && c.bundles === 0 && c.caJournals === 0 && c.federationRelationships === 0;
}

/** "2 entries, 1 agent, 0 bundles, 3 join tokens and the CA journal" (what is present). */
export function describeCounts(c: RecordCounts): string {
  const n = (count: number, one: string, many: string): string => `${count.toLocaleString('en-US')} ${count === 1 ? one : many}`;
  const parts = [n(c.entries, 'entry', 'entries'), n(c.nodes, 'agent', 'agents'), n(c.bundles, 'bundle', 'bundles'), n(c.joinTokens, 'join token', 'join tokens')];
  if (c.federationRelationships > 0) parts.push(n(c.federationRelationships, 'federation relationship', 'federation relationships'));
  if (c.caJournals === 1) parts.push('the CA journal');
  else if (c.caJournals === 0) parts.push('no CA journal');
  else parts.push(`${c.caJournals} CA journals (one per server)`);
  return `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]!}`;
}

/** Where a datastore reports what it noticed but did not fail on (an open directory, a listener that threw). */
export interface DataStoreLogger {
  warn(obj: object, msg: string): void;
}

/**
 * 'unavailable': the database cannot be reached (PostgreSQL down, refusing, not answering, the
 * connection lost); the message is meant for operators as it is (it names the host and port,
 * never credentials, and says whether anything was written). 'io': any other failure below the store.
 */
export type DataStoreErrorReason = 'not_found' | 'already_exists' | 'duplicate_entry' | 'invalid' | 'io' | 'unavailable';

export class DataStoreError extends Error {
  readonly code = 'ERR_DATASTORE';
  readonly reason: DataStoreErrorReason;
  /** The message without deployment details (host, port), for callers that are not operators (agents). */
  readonly redacted: string | undefined;
  constructor(reason: DataStoreErrorReason, message: string, options?: { cause?: unknown; redacted?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DataStoreError';
    this.reason = reason;
    this.redacted = options?.redacted;
  }
}

/** True for DataStoreError 'unavailable': the datastore has logged the outage once already; callers need not. */
export function isDataStoreUnavailable(err: unknown): boolean {
  return err instanceof DataStoreError && err.reason === 'unavailable';
}

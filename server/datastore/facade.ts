/**
 * The DataStore a backend presents, made of its parts: each backend splits its code by record
 * kind (entries, nodes, join tokens, bundles and CA journals, federation relationships, the change feed, integrity, the
 * record export) and this class forwards every DataStore method to the part that owns it, so
 * the forwarding is written once for all backends. A backend builds its parts over its own
 * connection and passes them in; what only one backend has (PostgreSQL's record import) it adds
 * in a subclass.
 */
import type { DataStore, RecordExporter } from './types.js';

type EntryMethods = 'createEntries' | 'getEntry' | 'getEntries' | 'listAllEntries' | 'listEntries' | 'countEntries' | 'updateEntry' | 'deleteEntries' | 'pruneExpiredEntries';
type NodeMethods = 'createAttestedNode' | 'getAttestedNode' | 'listAttestedNodes' | 'countAttestedNodes' | 'updateAttestedNode' | 'deleteAttestedNode';
type TokenMethods = 'createJoinToken' | 'consumeJoinToken' | 'pruneJoinTokens';
type BundleMethods = 'getBundle' | 'listBundles' | 'setBundle' | 'deleteBundle' | 'updateBundle' | 'getCaJournal' | 'setCaJournal' | 'adoptCaJournal' | 'listCaJournals';
type EventMethods = 'listEventsSince' | 'latestEventId' | 'pruneEvents';
type FederationMethods =
  | 'createFederationRelationship'
  | 'getFederationRelationship'
  | 'listFederationRelationships'
  | 'updateFederationRelationship'
  | 'deleteFederationRelationship'
  | 'setFederationRefreshState';

/** The parts of a backend, by the DataStore methods each one serves. */
export interface DataStoreParts {
  entries: Pick<DataStore, EntryMethods>;
  nodes: Pick<DataStore, NodeMethods>;
  tokens: Pick<DataStore, TokenMethods>;
  bundles: Pick<DataStore, BundleMethods>;
  events: Pick<DataStore, EventMethods>;
  federation: Pick<DataStore, FederationMethods>;
  integrity: Pick<DataStore, 'checkIntegrity'>;
  transfer: RecordExporter;
  /** The open connection: change notifications and closing. */
  connection: Pick<DataStore, 'onChange' | 'close'>;
}

type Args<M extends keyof DataStore> = Parameters<NonNullable<DataStore[M]>>;
type Result<M extends keyof DataStore> = ReturnType<NonNullable<DataStore[M]>>;

export class PartsDataStore implements DataStore, RecordExporter {
  constructor(protected readonly parts: DataStoreParts) {}

  createEntries(...a: Args<'createEntries'>): Result<'createEntries'> {
    return this.parts.entries.createEntries(...a);
  }
  getEntry(...a: Args<'getEntry'>): Result<'getEntry'> {
    return this.parts.entries.getEntry(...a);
  }
  getEntries(...a: Args<'getEntries'>): Result<'getEntries'> {
    return this.parts.entries.getEntries(...a);
  }
  listAllEntries(...a: Args<'listAllEntries'>): Result<'listAllEntries'> {
    return this.parts.entries.listAllEntries(...a);
  }
  listEntries(...a: Args<'listEntries'>): Result<'listEntries'> {
    return this.parts.entries.listEntries(...a);
  }
  countEntries(...a: Args<'countEntries'>): Result<'countEntries'> {
    return this.parts.entries.countEntries(...a);
  }
  updateEntry(...a: Args<'updateEntry'>): Result<'updateEntry'> {
    return this.parts.entries.updateEntry(...a);
  }
  deleteEntries(...a: Args<'deleteEntries'>): Result<'deleteEntries'> {
    return this.parts.entries.deleteEntries(...a);
  }
  pruneExpiredEntries(...a: Args<'pruneExpiredEntries'>): Result<'pruneExpiredEntries'> {
    return this.parts.entries.pruneExpiredEntries(...a);
  }

  createAttestedNode(...a: Args<'createAttestedNode'>): Result<'createAttestedNode'> {
    return this.parts.nodes.createAttestedNode(...a);
  }
  getAttestedNode(...a: Args<'getAttestedNode'>): Result<'getAttestedNode'> {
    return this.parts.nodes.getAttestedNode(...a);
  }
  listAttestedNodes(...a: Args<'listAttestedNodes'>): Result<'listAttestedNodes'> {
    return this.parts.nodes.listAttestedNodes(...a);
  }
  countAttestedNodes(...a: Args<'countAttestedNodes'>): Result<'countAttestedNodes'> {
    return this.parts.nodes.countAttestedNodes(...a);
  }
  updateAttestedNode(...a: Args<'updateAttestedNode'>): Result<'updateAttestedNode'> {
    return this.parts.nodes.updateAttestedNode(...a);
  }
  deleteAttestedNode(...a: Args<'deleteAttestedNode'>): Result<'deleteAttestedNode'> {
    return this.parts.nodes.deleteAttestedNode(...a);
  }

  createJoinToken(...a: Args<'createJoinToken'>): Result<'createJoinToken'> {
    return this.parts.tokens.createJoinToken(...a);
  }
  consumeJoinToken(...a: Args<'consumeJoinToken'>): Result<'consumeJoinToken'> {
    return this.parts.tokens.consumeJoinToken(...a);
  }
  pruneJoinTokens(...a: Args<'pruneJoinTokens'>): Result<'pruneJoinTokens'> {
    return this.parts.tokens.pruneJoinTokens(...a);
  }

  getBundle(...a: Args<'getBundle'>): Result<'getBundle'> {
    return this.parts.bundles.getBundle(...a);
  }
  listBundles(...a: Args<'listBundles'>): Result<'listBundles'> {
    return this.parts.bundles.listBundles(...a);
  }
  setBundle(...a: Args<'setBundle'>): Result<'setBundle'> {
    return this.parts.bundles.setBundle(...a);
  }
  deleteBundle(...a: Args<'deleteBundle'>): Result<'deleteBundle'> {
    return this.parts.bundles.deleteBundle(...a);
  }
  updateBundle(...a: Args<'updateBundle'>): Result<'updateBundle'> {
    return this.parts.bundles.updateBundle(...a);
  }
  getCaJournal(...a: Args<'getCaJournal'>): Result<'getCaJournal'> {
    return this.parts.bundles.getCaJournal(...a);
  }
  setCaJournal(...a: Args<'setCaJournal'>): Result<'setCaJournal'> {
    return this.parts.bundles.setCaJournal(...a);
  }
  adoptCaJournal(...a: Args<'adoptCaJournal'>): Result<'adoptCaJournal'> {
    return this.parts.bundles.adoptCaJournal(...a);
  }
  listCaJournals(...a: Args<'listCaJournals'>): Result<'listCaJournals'> {
    return this.parts.bundles.listCaJournals(...a);
  }

  createFederationRelationship(...a: Args<'createFederationRelationship'>): Result<'createFederationRelationship'> {
    return this.parts.federation.createFederationRelationship(...a);
  }
  getFederationRelationship(...a: Args<'getFederationRelationship'>): Result<'getFederationRelationship'> {
    return this.parts.federation.getFederationRelationship(...a);
  }
  listFederationRelationships(...a: Args<'listFederationRelationships'>): Result<'listFederationRelationships'> {
    return this.parts.federation.listFederationRelationships(...a);
  }
  updateFederationRelationship(...a: Args<'updateFederationRelationship'>): Result<'updateFederationRelationship'> {
    return this.parts.federation.updateFederationRelationship(...a);
  }
  deleteFederationRelationship(...a: Args<'deleteFederationRelationship'>): Result<'deleteFederationRelationship'> {
    return this.parts.federation.deleteFederationRelationship(...a);
  }
  setFederationRefreshState(...a: Args<'setFederationRefreshState'>): Result<'setFederationRefreshState'> {
    return this.parts.federation.setFederationRefreshState(...a);
  }

  listEventsSince(...a: Args<'listEventsSince'>): Result<'listEventsSince'> {
    return this.parts.events.listEventsSince(...a);
  }
  latestEventId(...a: Args<'latestEventId'>): Result<'latestEventId'> {
    return this.parts.events.latestEventId(...a);
  }
  pruneEvents(...a: Args<'pruneEvents'>): Result<'pruneEvents'> {
    return this.parts.events.pruneEvents(...a);
  }
  onChange(...a: Args<'onChange'>): Result<'onChange'> {
    return this.parts.connection.onChange(...a);
  }

  checkIntegrity(...a: Args<'checkIntegrity'>): Result<'checkIntegrity'> {
    return this.parts.integrity.checkIntegrity(...a);
  }
  exportRecords(): ReturnType<RecordExporter['exportRecords']> {
    return this.parts.transfer.exportRecords();
  }
  countRecords(): ReturnType<RecordExporter['countRecords']> {
    return this.parts.transfer.countRecords();
  }
  close(...a: Args<'close'>): Result<'close'> {
    return this.parts.connection.close(...a);
  }
}

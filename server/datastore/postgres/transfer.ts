/**
 * PostgreSQL: exporting and importing every record for a move between backends (types.ts
 * RecordExporter / RecordImporter; the target side of `spindle-server datastore migrate`).
 *
 * importRecords checks every record first (the checks of checks.ts, as a DataStore write makes
 * them), then writes them in ONE transaction under the write lock (connection.ts), in batches of
 * IMPORT_BATCH rows per statement (unnest of arrays: a statement per batch, not per record). What
 * the store normally sets itself is taken as given: entry ids, revision numbers and times, node
 * times, bundle update times, join token hashes. No change-feed event is appended. Before the
 * commit the rows are counted (records and child rows) and the transaction fails unless they are
 * exactly what was given; any failure rolls everything back.
 */
import type { TrustDomain } from '../../../spiffe/id.js';
import { FEDERATION_COLUMNS, relationshipFromRow, relationshipRow, type FederationRow } from '../federationrows.js';
import { checkBundle, checkCaJournal, checkCaServerId, checkFederationRelationship, checkRefreshState, checkEntryId, checkInt, checkJoinToken, checkNonNegativeInt, describe, invalid, normalizeNode } from '../checks.js';
import {
  DataStoreError,
  describeCounts,
  isEmptyCounts,
  type AttestedNode,
  type DataStoreRecords,
  type ExportedBundle,
  type ExportedCaJournal,
  type JoinToken,
  type RecordCounts,
  type StoredFederationRelationship,
} from '../types.js';
import type { PostgresConnection, Queryable } from './connection.js';
import { selectorsStorageKey } from './encoding.js';
import { ENTRY_COLUMNS, entryFromRow, insertEntryRows, normalizeStoredEntry, type EntryRow, type EntryRowToInsert } from './entries.js';
import { NODE_COLUMNS, nodeFromRow, type NodeRow } from './nodes.js';

/** Rows per INSERT statement of an import. */
const IMPORT_BATCH = 1000;

const COUNTS_SQL =
  'SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM attested_nodes), (SELECT count(*) FROM join_tokens), ' +
  '(SELECT count(*) FROM bundles), (SELECT count(*) FROM ca_journal), (SELECT count(*) FROM federation_relationships)';

async function countIn(q: Queryable): Promise<RecordCounts> {
  const [row] = await q.rows<[number, number, number, number, number, number]>(COUNTS_SQL);
  const [entries, nodes, joinTokens, bundles, caJournals, federationRelationships] = row!.map(Number) as [number, number, number, number, number, number];
  return { entries, nodes, joinTokens, bundles, caJournals, federationRelationships };
}

/** An imported entry, checked and normalised, kept as it was stored. */
type CheckedEntry = EntryRowToInsert;

interface CheckedRecords {
  entries: CheckedEntry[];
  nodes: AttestedNode[];
  joinTokens: JoinToken[];
  bundles: ExportedBundle[];
  caJournals: ExportedCaJournal[];
  federationRelationships: StoredFederationRelationship[];
}

/** Every record through the DataStore's own checks; throws 'invalid' naming the record. */
function checkRecords(records: DataStoreRecords): CheckedRecords {
  if (typeof records !== 'object' || records === null) throw invalid(`records must be an object, got ${describe(records)}`);
  const list = <T>(v: T[], what: string): T[] => {
    if (!Array.isArray(v)) throw invalid(`records.${what} must be an array, got ${describe(v)}`);
    return v;
  };
  const named = <T>(what: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof DataStoreError) throw new DataStoreError(err.reason, `${what}: ${err.message}`, { cause: err });
      throw err;
    }
  };
  const entries = list(records.entries, 'entries').map((e) =>
    named(`entry ${describe(e?.id)}`, () => ({
      id: checkEntryId(e.id),
      n: normalizeStoredEntry(e),
      revisionNumber: checkNonNegativeInt(e.revisionNumber, 'revisionNumber'),
      createdAt: checkInt(e.createdAt, 'createdAt'),
      updatedAt: checkInt(e.updatedAt, 'updatedAt'),
    })),
  );
  const nodes = list(records.nodes, 'nodes').map((node) =>
    named(`attested node ${describe(node?.spiffeId)}`, () => ({
      ...normalizeNode(node),
      createdAt: checkInt(node.createdAt, 'createdAt'),
      updatedAt: checkInt(node.updatedAt, 'updatedAt'),
    })),
  );
  const joinTokens = list(records.joinTokens, 'joinTokens').map((t, i) => named(`join token ${i + 1}`, () => checkJoinToken(t)));
  const bundles = list(records.bundles, 'bundles').map((b) =>
    named(`bundle ${describe(b?.trustDomain)}`, () => ({ ...checkBundle(b), updatedAt: checkInt(b.updatedAt, 'updatedAt') })),
  );
  const seen = new Set<string>();
  const caJournals = list(records.caJournals, 'caJournals').map((j) =>
    named(`CA journal of server ${describe(j?.serverId)}`, () => {
      const serverId = checkCaServerId(j.serverId);
      if (seen.has(serverId)) throw invalid('a server has one CA journal, found two');
      seen.add(serverId);
      return { serverId, document: checkCaJournal(j.document) };
    }),
  );
  const federationRelationships = list(records.federationRelationships ?? [], 'federationRelationships').map((r) =>
    named(`federation relationship ${describe(r?.trustDomain)}`, () => ({
      ...checkFederationRelationship(r),
      createdAt: checkInt(r.createdAt, 'createdAt'),
      updatedAt: checkInt(r.updatedAt, 'updatedAt'),
      refresh: checkRefreshState(r.refresh),
    })),
  );
  return { entries, nodes, joinTokens, bundles, caJournals, federationRelationships };
}

function batches<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += IMPORT_BATCH) out.push(items.slice(i, i + IMPORT_BATCH));
  return out;
}

async function insertEntries(q: Queryable, entries: readonly CheckedEntry[]): Promise<void> {
  for (const batch of batches(entries)) await insertEntryRows(q, batch);
}

async function insertNodes(q: Queryable, nodes: readonly AttestedNode[]): Promise<void> {
  for (const batch of batches(nodes)) {
    const col = <T>(f: (n: AttestedNode) => T): T[] => batch.map(f);
    await q.exec(
      'INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial, cert_not_after, new_cert_serial, new_cert_not_after, ' +
        'selectors_key, selector_count, banned, can_reattest, created_at, updated_at) SELECT * FROM unnest(' +
        '$1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::integer[], $9::boolean[], ' +
        '$10::boolean[], $11::bigint[], $12::bigint[])',
      [
        col((n) => n.spiffeId),
        col((n) => n.attestationType),
        col((n) => n.certSerial),
        col((n) => n.certNotAfter),
        col((n) => n.newCertSerial),
        col((n) => n.newCertNotAfter),
        col((n) => selectorsStorageKey(n.selectors)),
        col((n) => n.selectors.length),
        col((n) => n.banned),
        col((n) => n.canReattest),
        col((n) => n.createdAt),
        col((n) => n.updatedAt),
      ],
    );
    const sel: [string[], string[], string[]] = [[], [], []];
    for (const n of batch) {
      for (const s of n.selectors) {
        sel[0].push(n.spiffeId);
        sel[1].push(s.type);
        sel[2].push(s.value);
      }
    }
    if (sel[0].length > 0) await q.exec('INSERT INTO node_selectors (spiffe_id, type, value) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])', sel);
  }
}

async function insertSmallRecords(q: Queryable, r: CheckedRecords): Promise<void> {
  for (const batch of batches(r.joinTokens)) {
    await q.exec('INSERT INTO join_tokens (hash, expires_at) SELECT * FROM unnest($1::text[], $2::bigint[])', [batch.map((t) => t.hash), batch.map((t) => t.expiresAt)]);
  }
  for (const batch of batches(r.bundles)) {
    await q.exec('INSERT INTO bundles (trust_domain, document, sequence, updated_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])', [
      batch.map((b) => b.trustDomain),
      batch.map((b) => b.document),
      batch.map((b) => b.sequence.toString(10)),
      batch.map((b) => b.updatedAt),
    ]);
  }
  if (r.caJournals.length > 0) {
    await q.exec('INSERT INTO ca_journal (server_id, document) SELECT * FROM unnest($1::text[], $2::text[])', [r.caJournals.map((j) => j.serverId), r.caJournals.map((j) => j.document)]);
  }
  // Few by nature (one per foreign trust domain): a statement each.
  for (const rel of r.federationRelationships) {
    await q.exec(`INSERT INTO federation_relationships (${FEDERATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, relationshipRow(rel));
  }
}

/** Fails (rolling the import back) unless the store holds exactly the checked records and their child rows. */
async function verify(q: Queryable, r: CheckedRecords): Promise<RecordCounts> {
  const counts = await countIn(q);
  const expected: RecordCounts = { entries: r.entries.length, nodes: r.nodes.length, joinTokens: r.joinTokens.length, bundles: r.bundles.length, caJournals: r.caJournals.length, federationRelationships: r.federationRelationships.length };
  const sum = <T>(items: readonly T[], f: (x: T) => number): number => items.reduce((acc, x) => acc + f(x), 0);
  const [children] = await q.rows<[number, number, number, number]>(
    'SELECT (SELECT count(*) FROM entry_selectors), (SELECT count(*) FROM entry_dns_names), (SELECT count(*) FROM entry_federates_with), ' +
      '(SELECT count(*) FROM node_selectors)',
  );
  const expectedChildren = [
    sum(r.entries, (e) => e.n.selectors.length),
    sum(r.entries, (e) => e.n.dnsNames.length),
    sum(r.entries, (e) => e.n.federatesWith.length),
    sum(r.nodes, (n) => n.selectors.length),
  ];
  const same = JSON.stringify(counts) === JSON.stringify(expected) && JSON.stringify(children) === JSON.stringify(expectedChildren);
  if (!same) {
    throw new DataStoreError(
      'io',
      `postgres datastore: import records failed: after writing, the database holds ${describeCounts(counts)} ` +
        `(child rows ${JSON.stringify(children)}) instead of ${describeCounts(expected)} (child rows ${JSON.stringify(expectedChildren)}); nothing was committed`,
    );
  }
  return counts;
}

export class PostgresTransfer {
  constructor(private readonly c: PostgresConnection) {}

  async exportRecords(): Promise<DataStoreRecords> {
    return this.c.read(
      'export records',
      async (q) => ({
        entries: (await q.rows<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries e ORDER BY e.pk`)).map(entryFromRow),
        nodes: (await q.rows<NodeRow>(`SELECT ${NODE_COLUMNS} FROM attested_nodes n ORDER BY n.spiffe_id`)).map(nodeFromRow),
        joinTokens: (await q.rows<[string, number]>('SELECT hash, expires_at FROM join_tokens ORDER BY hash')).map(([hash, expiresAt]) => ({ hash, expiresAt })),
        bundles: (await q.rows<[string, string, string, number]>('SELECT trust_domain, document, sequence, updated_at FROM bundles ORDER BY trust_domain')).map(
          ([trustDomain, document, sequence, updatedAt]) => ({ trustDomain: trustDomain as TrustDomain, document, sequence: BigInt(sequence), updatedAt }),
        ),
        caJournals: (await q.rows<[string, string]>('SELECT server_id, document FROM ca_journal ORDER BY server_id')).map(([serverId, document]) => ({ serverId, document })),
        federationRelationships: (await q.rows<FederationRow>(`SELECT ${FEDERATION_COLUMNS} FROM federation_relationships ORDER BY trust_domain`)).map(relationshipFromRow),
      }),
      true,
    );
  }

  async countRecords(): Promise<RecordCounts> {
    return this.c.read('count records', countIn);
  }

  async importRecords(records: DataStoreRecords, options: { replace: boolean }): Promise<RecordCounts> {
    const checked = checkRecords(records);
    const replace = options?.replace === true;
    return this.c.write('import records', async (q) => {
      const present = await countIn(q);
      if (!isEmptyCounts(present)) {
        if (!replace) throw new DataStoreError('already_exists', `postgres datastore is not empty: it holds ${describeCounts(present)}`);
      }
      if (replace) {
        // Children go with their owners (ON DELETE CASCADE).
        for (const table of ['entries', 'attested_nodes', 'join_tokens', 'bundles', 'ca_journal', 'federation_relationships', 'events']) await q.exec(`DELETE FROM ${table}`);
      }
      await insertEntries(q, checked.entries);
      await insertNodes(q, checked.nodes);
      await insertSmallRecords(q, checked);
      return verify(q, checked);
    });
  }
}

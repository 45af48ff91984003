/**
 * PostgreSQL: registration entries. An entry row plus its child rows (entry_selectors,
 * entry_dns_names, entry_federates_with, keyed by entries.pk), written in one transaction (under
 * the write lock, connection.ts) with its change-feed event. A listing or get is ONE statement
 * (children aggregated in SQL), so it reads one snapshot. Duplicates (same spiffeId + parentId
 * + selector set) are found through identity_hash inside the write transaction.
 */
import { isSpiffeId, type SpiffeId, type TrustDomain } from '../../../spiffe/id.js';
import { checkEntryId, checkInt, createdEntry, checkString, describe, invalid, normalizeEntry, type NormalizedEntry } from '../checks.js';
import { checkEntryFilter } from '../filters.js';
import { newEntryId } from '../ids.js';
import { decodeToken, pageOf, pageSize } from '../paging.js';
import { DataStoreError, type EntryFilter, type NewEntry, type Page, type Paged, type ReadOptions, type RegistrationEntry } from '../types.js';
import type { Emit, PostgresConnection, Queryable } from './connection.js';
import { identityHash, parseJsonArray, selectorsFromKey, selectorsStorageKey } from './encoding.js';
import { entryWhere } from './filters.js';

type CreateResult = { entry: RegistrationEntry } | { error: DataStoreError };
export type StoredEntry = NormalizedEntry & { selectorsKey: string; identity: Buffer };

export function normalizeStoredEntry(e: NewEntry | RegistrationEntry): StoredEntry {
  // Extends the fresh object in place (a spread copy per entry is measurable in bulk inserts).
  const n = normalizeEntry(e) as StoredEntry;
  n.selectorsKey = selectorsStorageKey(n.selectors);
  n.identity = identityHash(n.spiffeId, n.parentId, n.selectorsKey);
  return n;
}

export type EntryRow = [
  pk: number,
  id: string,
  spiffeId: string,
  parentId: string,
  x509SvidTtl: number,
  jwtSvidTtl: number,
  admin: boolean,
  downstream: boolean,
  hint: string,
  entryExpiry: number,
  revisionNumber: number,
  createdAt: number,
  updatedAt: number,
  selectors: string,
  dnsNames: string,
  federatesWith: string,
];

export const ENTRY_COLUMNS =
  'e.pk, e.id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.admin, e.downstream, e.hint, ' +
  'e.entry_expiry, e.revision_number, e.created_at, e.updated_at, e.selectors_key, ' +
  "coalesce((SELECT json_agg(d.name ORDER BY d.position)::text FROM entry_dns_names d WHERE d.entry_pk = e.pk), '[]'), " +
  "CASE WHEN e.federates_count = 0 THEN '[]' ELSE (SELECT json_agg(f.trust_domain ORDER BY f.trust_domain)::text " +
  'FROM entry_federates_with f WHERE f.entry_pk = e.pk) END';

/** listAllEntries' row: EntryRow without the child lists. */
type LoadRow = [pk: number, id: string, spiffeId: string, parentId: string, x509SvidTtl: number, jwtSvidTtl: number, admin: boolean, downstream: boolean, hint: string, entryExpiry: number, revisionNumber: number, createdAt: number, updatedAt: number, selectors: string];

export function entryFromRow(r: EntryRow): RegistrationEntry {
  const [, id, spiffeId, parentId] = r;
  if (!isSpiffeId(spiffeId) || !isSpiffeId(parentId)) {
    throw new DataStoreError('io', `postgres datastore: stored entry ${describe(id)} has an invalid SPIFFE ID`);
  }
  return entryOf(r, spiffeId, parentId, parseJsonArray<string>(r[14]), parseJsonArray<TrustDomain>(r[15]));
}

/** The entry of a row (EntryRow or LoadRow: the same columns up to selectors_key), its IDs checked by the caller. */
function entryOf(r: EntryRow | LoadRow, spiffeId: SpiffeId, parentId: SpiffeId, dnsNames: string[], federatesWith: TrustDomain[]): RegistrationEntry {
  return {
    id: r[1],
    spiffeId,
    parentId,
    selectors: selectorsFromKey(r[13]),
    x509SvidTtl: r[4],
    jwtSvidTtl: r[5],
    dnsNames,
    federatesWith,
    admin: r[6],
    downstream: r[7],
    hint: r[8],
    entryExpiry: r[9],
    revisionNumber: r[10],
    createdAt: r[11],
    updatedAt: r[12],
  };
}

/** The mutable columns, in the order insert and update name them (spiffe_id ... entry_expiry). */
function columnValues(n: StoredEntry): unknown[] {
  return [n.spiffeId, n.parentId, n.selectorsKey, n.identity, n.selectors.length, n.federatesWith.length, n.x509SvidTtl, n.jwtSvidTtl, n.admin, n.downstream, n.hint, n.entryExpiry];
}

async function loadEntry(q: Queryable, id: string): Promise<RegistrationEntry | undefined> {
  const [row] = await q.rows<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.id = $1`, [id]);
  return row === undefined ? undefined : entryFromRow(row);
}

async function insertChildren(q: Queryable, pk: number, n: StoredEntry): Promise<void> {
  if (n.selectors.length > 0) {
    await q.exec('INSERT INTO entry_selectors (entry_pk, type, value) SELECT $1, t, v FROM unnest($2::text[], $3::text[]) AS x(t, v)', [
      pk,
      n.selectors.map((s) => s.type),
      n.selectors.map((s) => s.value),
    ]);
  }
  if (n.dnsNames.length > 0) {
    await q.exec('INSERT INTO entry_dns_names (entry_pk, position, name) SELECT $1, o - 1, d FROM unnest($2::text[]) WITH ORDINALITY AS x(d, o)', [pk, n.dnsNames]);
  }
  if (n.federatesWith.length > 0) {
    await q.exec('INSERT INTO entry_federates_with (entry_pk, trust_domain) SELECT $1, t FROM unnest($2::text[]) AS x(t)', [pk, n.federatesWith]);
  }
}

function duplicateError(n: StoredEntry, existing: string, inBatch: boolean): DataStoreError {
  return new DataStoreError(
    'duplicate_entry',
    `an entry with spiffeId ${describe(n.spiffeId)}, parentId ${describe(n.parentId)} and the same selectors ` +
      `already exists: ${describe(existing)}${inBatch ? ' (created earlier in this batch)' : ''}`,
  );
}

async function duplicateOf(q: Queryable, n: StoredEntry, id: string): Promise<string | undefined> {
  const [row] = await q.rows<[string]>('SELECT id FROM entries WHERE identity_hash = $1 AND id <> $2', [n.identity, id]);
  return row?.[0];
}

/** An entry row to write as it is: a create (revision 0, times now) or an imported record. */
export interface EntryRowToInsert {
  id: string;
  n: StoredEntry;
  revisionNumber: number;
  createdAt: number;
  updatedAt: number;
}

/**
 * Writes entry rows and their children (selectors, DNS names, federatesWith) set-wise: one
 * statement per table, whatever the number of rows. No checks and no events: the caller's job.
 */
export async function insertEntryRows(q: Queryable, rows: readonly EntryRowToInsert[]): Promise<void> {
  if (rows.length === 0) return;
  const col = <T>(f: (e: EntryRowToInsert) => T): T[] => rows.map(f);
  const inserted = await q.rows<[number, string]>(
    'INSERT INTO entries (id, spiffe_id, parent_id, selectors_key, identity_hash, selector_count, federates_count, x509_svid_ttl, ' +
      'jwt_svid_ttl, admin, downstream, hint, entry_expiry, revision_number, created_at, updated_at) ' +
      "SELECT id, sid, pid, sk, decode(ih, 'hex'), sc, fc, xt, jt, ad, ds, h, ee, rn, ca, ua FROM unnest(" +
      '$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::integer[], $8::bigint[], $9::bigint[], ' +
      '$10::boolean[], $11::boolean[], $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[]) WITH ORDINALITY ' +
      'AS x(id, sid, pid, sk, ih, sc, fc, xt, jt, ad, ds, h, ee, rn, ca, ua, o) ORDER BY o RETURNING pk, id',
    [
      col((e) => e.id),
      col((e) => e.n.spiffeId),
      col((e) => e.n.parentId),
      col((e) => e.n.selectorsKey),
      col((e) => e.n.identity.toString('hex')),
      col((e) => e.n.selectors.length),
      col((e) => e.n.federatesWith.length),
      col((e) => e.n.x509SvidTtl),
      col((e) => e.n.jwtSvidTtl),
      col((e) => e.n.admin),
      col((e) => e.n.downstream),
      col((e) => e.n.hint),
      col((e) => e.n.entryExpiry),
      col((e) => e.revisionNumber),
      col((e) => e.createdAt),
      col((e) => e.updatedAt),
    ],
  );
  const pkOf = new Map(inserted.map(([pk, id]) => [id, pk]));
  const sel: [number[], string[], string[]] = [[], [], []];
  const dns: [number[], number[], string[]] = [[], [], []];
  const fed: [number[], string[]] = [[], []];
  for (const e of rows) {
    const pk = pkOf.get(e.id);
    if (pk === undefined) throw new Error(`entry ${e.id} was not inserted`);
    for (const s of e.n.selectors) {
      sel[0].push(pk);
      sel[1].push(s.type);
      sel[2].push(s.value);
    }
    e.n.dnsNames.forEach((name, i) => {
      dns[0].push(pk);
      dns[1].push(i);
      dns[2].push(name);
    });
    for (const td of e.n.federatesWith) {
      fed[0].push(pk);
      fed[1].push(td);
    }
  }
  if (sel[0].length > 0) await q.exec('INSERT INTO entry_selectors (entry_pk, type, value) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])', sel);
  if (dns[0].length > 0) await q.exec('INSERT INTO entry_dns_names (entry_pk, position, name) SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[])', dns);
  if (fed[0].length > 0) await q.exec('INSERT INTO entry_federates_with (entry_pk, trust_domain) SELECT * FROM unnest($1::bigint[], $2::text[])', fed);
}

/**
 * The result slot of an accepted entry until its insert is done (then replaced): one shared
 * object, not an Error per entry (capturing a stack trace for each of a batch's entries cost
 * more CPU than the rest of its JavaScript).
 */
const NOT_INSERTED: CreateResult = { error: new DataStoreError('io', 'not inserted') };

/** One createEntries call waiting in a group (see PostgresEntries.createEntries). */
interface PendingCreate {
  entries: NewEntry[];
  now: number;
  resolve(results: CreateResult[]): void;
  reject(err: unknown): void;
}

/** An entry accepted for insertion, with where its result goes. */
interface Accepted {
  id: string;
  n: StoredEntry;
  now: number;
  results: CreateResult[];
  index: number;
}

export class PostgresEntries {
  /** The open group of createEntries calls, until its transaction starts or another call comes. */
  private group: { calls: PendingCreate[]; operations: number } | undefined;

  constructor(private readonly c: PostgresConnection) {}

  /**
   * Group commit: createEntries calls made while no other datastore call intervenes share ONE
   * transaction (concurrent admin API calls), each caller getting its own per-item results, as
   * if the calls had run one after another. A call made after any other read or write starts a
   * new group, so operations still take effect in the order they were called.
   */
  createEntries(entries: NewEntry[], now: number): Promise<CreateResult[]> {
    if (!Array.isArray(entries)) return Promise.reject(invalid(`entries must be an array, got ${describe(entries)}`));
    try {
      checkInt(now, 'now');
      this.c.assertOpen('create entries');
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<CreateResult[]>((resolve, reject) => {
      const call = { entries, now, resolve, reject };
      const g = this.group;
      if (g !== undefined && g.operations === this.c.operations) {
        g.calls.push(call);
        return;
      }
      const calls = [call];
      const write = this.c.write('create entries', async (q, emit) => {
        // Closed as soon as it runs: later calls go to a new group.
        if (this.group?.calls === calls) this.group = undefined;
        return this.insertEntries(q, calls, emit);
      });
      this.group = { calls, operations: this.c.operations };
      // A write that fails before its transaction runs (no connection) never closed the group:
      // close it here, or later calls would join a group that already settled and never hear back.
      const close = (): void => {
        if (this.group?.calls === calls) this.group = undefined;
      };
      write.then(
        (results) => {
          close();
          calls.forEach((p, i) => p.resolve(results[i]!));
        },
        (err) => {
          close();
          calls.forEach((p) => p.reject(err));
        },
      );
    });
  }

  /**
   * Inserts the calls' entries inside the caller's transaction in a fixed number of statements
   * (existing ids, existing identities, the rows, their children, the events), whatever their
   * number. Each call's results are what it alone would have got after the calls before it.
   */
  private async insertEntries(q: Queryable, calls: PendingCreate[], emit: Emit): Promise<CreateResult[][]> {
    const checked = calls.map((call) =>
      call.entries.map((input): { n: StoredEntry; id: string; explicit: boolean } | { error: DataStoreError } => {
        try {
          const n = normalizeStoredEntry(input);
          const explicit = input.id !== undefined && input.id !== '';
          return { n, id: explicit ? checkEntryId(input.id) : newEntryId(), explicit };
        } catch (err) {
          if (!(err instanceof DataStoreError)) throw err;
          return { error: err };
        }
      }),
    );
    const items = checked.flat().filter((x): x is { n: StoredEntry; id: string; explicit: boolean } => !('error' in x));
    const explicitIds = items.filter((x) => x.explicit).map((x) => x.id);
    const taken = new Set(explicitIds.length === 0 ? [] : (await q.rows<[string]>('SELECT id FROM entries WHERE id = ANY($1::text[])', [explicitIds])).map((r) => r[0]));
    const identities = items.map((x) => x.n.identity.toString('hex'));
    const byIdentity = new Map(
      identities.length === 0
        ? []
        : (await q.rows<[string, string]>("SELECT encode(identity_hash, 'hex'), id FROM entries WHERE identity_hash = ANY(SELECT decode(h, 'hex') FROM unnest($1::text[]) AS x(h))", [identities])),
    );

    const accepted: Accepted[] = [];
    const all: CreateResult[][] = calls.map((call, c) => {
      const results: CreateResult[] = [];
      const created = new Set<string>();
      for (const item of checked[c]!) {
        if ('error' in item) {
          results.push({ error: item.error });
          continue;
        }
        const { n, id } = item;
        if (item.explicit && taken.has(id)) {
          results.push({
            error: new DataStoreError('already_exists', `an entry with id ${describe(id)} already exists${created.has(id) ? ' (created earlier in this batch)' : ''}`),
          });
          continue;
        }
        const identity = n.identity.toString('hex');
        const dup = byIdentity.get(identity);
        if (dup !== undefined && dup !== id) {
          results.push({ error: duplicateError(n, dup, created.has(dup)) });
          continue;
        }
        taken.add(id);
        byIdentity.set(identity, id);
        created.add(id);
        accepted.push({ id, n, now: call.now, results, index: results.length });
        results.push(NOT_INSERTED); // replaced below
      }
      return results;
    });
    if (accepted.length === 0) return all;

    await insertEntryRows(
      q,
      accepted.map((a) => ({ id: a.id, n: a.n, revisionNumber: 0, createdAt: a.now, updatedAt: a.now })),
    );
    // Events in acceptance order; one statement per distinct `now` (normally one).
    let from = 0;
    while (from < accepted.length) {
      let to = from;
      while (to < accepted.length && accepted[to]!.now === accepted[from]!.now) to++;
      await emit.many('entry_created', accepted.slice(from, to).map((a) => a.id), accepted[from]!.now);
      from = to;
    }

    for (const a of accepted) a.results[a.index] = { entry: createdEntry(a.id, a.n, a.now) };
    return all;
  }

  async getEntry(id: string): Promise<RegistrationEntry | undefined> {
    checkString(id, 'entry id');
    return this.c.read('get entry', (q) => loadEntry(q, id));
  }

  async getEntries(ids: readonly string[]): Promise<Map<string, RegistrationEntry>> {
    if (!Array.isArray(ids)) throw invalid(`entry ids must be an array, got ${describe(ids)}`);
    ids.forEach((id, i) => checkString(id, `entry ids[${i}]`));
    const out = new Map<string, RegistrationEntry>();
    if (ids.length === 0) return out;
    return this.c.read('get entries', async (q) => {
      for (const row of await q.rows<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.id = ANY($1::text[])`, [ids])) {
        const e = entryFromRow(row);
        out.set(e.id, e);
      }
      return out;
    });
  }

  /**
   * Every entry (the server's cold start loads 100k and more through this): three statements in
   * one snapshot instead of ENTRY_COLUMNS' two correlated subqueries per row, the child tables
   * each read in one scan (both are empty or small in most deployments) and merged by pk, no
   * JSON text per row for empty lists, and each distinct parent ID checked once.
   */
  async listAllEntries(): Promise<RegistrationEntry[]> {
    return this.c.read(
      'list all entries',
      async (q) => {
        const dns = new Map<number, string[]>();
        for (const [pk, name] of await q.rows<[number, string]>('SELECT entry_pk, name FROM entry_dns_names ORDER BY entry_pk, position')) {
          const names = dns.get(pk);
          if (names === undefined) dns.set(pk, [name]);
          else names.push(name);
        }
        const federates = new Map<number, TrustDomain[]>();
        for (const [pk, td] of await q.rows<[number, TrustDomain]>('SELECT entry_pk, trust_domain FROM entry_federates_with ORDER BY entry_pk, trust_domain')) {
          const tds = federates.get(pk);
          if (tds === undefined) federates.set(pk, [td]);
          else tds.push(td);
        }
        const rows = await q.rows<LoadRow>(
          'SELECT e.pk, e.id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.admin, e.downstream, e.hint, ' +
            'e.entry_expiry, e.revision_number, e.created_at, e.updated_at, e.selectors_key FROM entries e',
        );
        // Parent IDs repeat (many entries per agent): check each distinct one once.
        const validParents = new Set<string>();
        const out: RegistrationEntry[] = new Array(rows.length);
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i]!;
          const [pk, id, spiffeId, parentId] = r;
          if (!isSpiffeId(spiffeId) || !(validParents.has(parentId) || isSpiffeId(parentId))) {
            throw new DataStoreError('io', `postgres datastore: stored entry ${describe(id)} has an invalid SPIFFE ID`);
          }
          validParents.add(parentId);
          out[i] = entryOf(r, spiffeId, parentId as SpiffeId, dns.get(pk) ?? [], federates.get(pk) ?? []);
        }
        return out;
      },
      true,
    );
  }

  async listEntries(filter?: EntryFilter, page?: Page, opts?: ReadOptions): Promise<Paged<RegistrationEntry>> {
    const w = entryWhere(checkEntryFilter(filter));
    const after = decodeToken('e', page?.token);
    const size = pageSize(page);
    if (after !== undefined) w.clauses.push(`e.id > ${w.p(after)}`);
    let sql = `SELECT ${ENTRY_COLUMNS} FROM entries e${w.sql()} ORDER BY e.id`;
    if (size > 0) sql += ` LIMIT ${w.p(size + 1)}`;
    return this.c.read(
      'list entries',
      async (q) => {
        const { items, nextToken } = pageOf('e', await q.rows<EntryRow>(sql, w.params), size, (r) => r[1]);
        return { items: items.map(entryFromRow), nextToken };
      },
      { replica: opts?.mayLag === true },
    );
  }

  async countEntries(filter?: EntryFilter, opts?: ReadOptions): Promise<number> {
    const w = entryWhere(checkEntryFilter(filter));
    return this.c.read('count entries', async (q) => (await q.rows<[number]>(`SELECT count(*) FROM entries e${w.sql()}`, w.params))[0]?.[0] ?? 0, {
      replica: opts?.mayLag === true,
    });
  }

  async updateEntry(entry: RegistrationEntry, now: number): Promise<RegistrationEntry> {
    if (typeof entry !== 'object' || entry === null) throw invalid(`entry must be an object, got ${describe(entry)}`);
    const id = checkEntryId(entry.id);
    const n = normalizeStoredEntry(entry);
    checkInt(now, 'now');
    return this.c.write('update entry', async (q, emit) => {
      const [row] = await q.rows<[number]>('SELECT pk FROM entries WHERE id = $1', [id]);
      if (row === undefined) throw new DataStoreError('not_found', `entry ${describe(id)} not found`);
      const pk = row[0];
      const dup = await duplicateOf(q, n, id);
      if (dup !== undefined) throw duplicateError(n, dup, false);
      await q.exec(
        'UPDATE entries SET spiffe_id = $1, parent_id = $2, selectors_key = $3, identity_hash = $4, selector_count = $5, federates_count = $6, ' +
          'x509_svid_ttl = $7, jwt_svid_ttl = $8, admin = $9, downstream = $10, hint = $11, entry_expiry = $12, ' +
          'revision_number = revision_number + 1, updated_at = $13 WHERE pk = $14',
        [...columnValues(n), now, pk],
      );
      await q.exec('DELETE FROM entry_selectors WHERE entry_pk = $1', [pk]);
      await q.exec('DELETE FROM entry_dns_names WHERE entry_pk = $1', [pk]);
      await q.exec('DELETE FROM entry_federates_with WHERE entry_pk = $1', [pk]);
      await insertChildren(q, pk, n);
      await emit('entry_updated', id, now);
      const updated = await loadEntry(q, id);
      if (updated === undefined) throw new Error(`entry ${id} vanished during its update`);
      return updated;
    });
  }

  async deleteEntries(ids: string[], now: number): Promise<Array<{ entry: RegistrationEntry } | { error: DataStoreError }>> {
    if (!Array.isArray(ids)) throw invalid(`ids must be an array, got ${describe(ids)}`);
    checkInt(now, 'now');
    return this.c.write('delete entries', async (q, emit) => {
      const out: Array<{ entry: RegistrationEntry } | { error: DataStoreError }> = [];
      for (const id of ids) {
        const entry = typeof id === 'string' ? await loadEntry(q, id) : undefined;
        if (entry === undefined) {
          out.push({ error: new DataStoreError('not_found', `entry ${describe(id)} not found`) });
          continue;
        }
        await q.exec('DELETE FROM entries WHERE id = $1', [id]);
        await emit('entry_deleted', id, now);
        out.push({ entry });
      }
      return out;
    });
  }

  async pruneExpiredEntries(now: number): Promise<number> {
    checkInt(now, 'now');
    return this.c.write('prune expired entries', async (q, emit) => {
      const rows = await q.rows<[string]>('WITH d AS (DELETE FROM entries WHERE entry_expiry > 0 AND entry_expiry < $1 RETURNING pk, id) SELECT id FROM d ORDER BY pk', [now]);
      for (const [id] of rows) await emit('entry_deleted', id, now);
      return rows.length;
    });
  }
}

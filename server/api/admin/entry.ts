/**
 * EntryService: registration entries CRUD (SPIRE's entry API semantics).
 * - Batch calls answer one result per item, in order; an item's failure never fails the call.
 * - Every entry is validated by server/entries/validate.ts before it reaches the datastore;
 *   failures are INVALID_ARGUMENT with a message naming the field and value.
 * - A duplicate (same spiffeId + parentId + selector set) is ALREADY_EXISTS "similar entry
 *   already exists" carrying the existing entry, as SPIRE does.
 * - Update replaces every mutable field of the entry named by `id`.
 */
import type { EntryServiceServer, EntryResult, BatchDeleteEntryResponse_Result } from '../../../proto/gen/spindle/admin/v1/admin.js';
import type { Entry } from '../../../proto/gen/spindle/types/v1/types.js';
import { DataStoreError, type NewEntry, type RegistrationEntry } from '../../datastore/types.js';
import { validateNewEntry } from '../../entries/validate.js';
import { entryFilterFromProto, entryInputFromProto, entryToProto, pageFromProto } from '../convert.js';
import { GrpcStatus, OK_STATUS, invalidArgument, notFound, statusOf, unary } from '../errors.js';
import type { AdminDeps, ApiLogger } from './types.js';

/** Most items one batch call may carry. */
export const MAX_BATCH_SIZE = 5000;

const SIMILAR_ENTRY = 'similar entry already exists';

function checkBatch(n: number, what: string): void {
  if (n > MAX_BATCH_SIZE) throw invalidArgument(`too many ${what} in one request: ${n}, at most ${MAX_BATCH_SIZE}`);
}

export function createEntryService(deps: AdminDeps, log: ApiLogger): EntryServiceServer {
  const { datastore: ds, trustDomain } = deps;
  const nowSeconds = (): number => Math.floor(deps.now().getTime() / 1000);

  async function existingLike(e: NewEntry): Promise<Entry | undefined> {
    const page = await ds.listEntries(
      { bySpiffeId: e.spiffeId, byParentId: e.parentId, bySelectors: { selectors: e.selectors, match: 'exact' } },
      { size: 1 },
    );
    const found = page.items[0];
    return found === undefined ? undefined : entryToProto(found);
  }

  async function failedResult(err: unknown, e: NewEntry | undefined, method: string): Promise<EntryResult> {
    if (err instanceof DataStoreError && err.reason === 'duplicate_entry' && e !== undefined) {
      return { status: { code: GrpcStatus.ALREADY_EXISTS, message: SIMILAR_ENTRY }, entry: await existingLike(e) };
    }
    return { status: statusOf(err, log, { method }), entry: undefined };
  }

  return {
    batchCreateEntry: unary(log, 'BatchCreateEntry', async (req) => {
      checkBatch(req.entries.length, 'entries');
      const results: EntryResult[] = new Array<EntryResult>(req.entries.length);
      const valid: NewEntry[] = [];
      const where: number[] = [];
      req.entries.forEach((e, i) => {
        try {
          valid.push(validateNewEntry(entryInputFromProto(e), { trustDomain }));
          where.push(i);
        } catch (err) {
          results[i] = { status: statusOf(err, log, { method: 'BatchCreateEntry' }), entry: undefined };
        }
      });
      if (valid.length > 0) {
        const created = await ds.createEntries(valid, nowSeconds());
        for (let k = 0; k < created.length; k++) {
          const r = created[k]!;
          const i = where[k]!;
          results[i] = 'entry' in r ? { status: OK_STATUS, entry: entryToProto(r.entry) } : await failedResult(r.error, valid[k], 'BatchCreateEntry');
        }
      }
      const ok = results.filter((r) => r.status?.code === GrpcStatus.OK).length;
      log.info({ method: 'BatchCreateEntry', created: ok, failed: results.length - ok }, 'entries created');
      return { results };
    }),

    getEntry: unary(log, 'GetEntry', async (req) => {
      if (req.id === '') throw invalidArgument('missing id: an entry ID is required');
      const e = await ds.getEntry(req.id);
      if (e === undefined) throw notFound(`entry ${JSON.stringify(req.id)} not found`);
      return entryToProto(e);
    }),

    listEntries: unary(log, 'ListEntries', async (req) => {
      const filter = entryFilterFromProto(req.filter);
      // Shown, not decided on: may come from the read-only replica (ro_connection_string).
      const page = await ds.listEntries(filter, pageFromProto(req.pageSize, req.pageToken), { mayLag: true });
      return { entries: page.items.map(entryToProto), nextPageToken: page.nextToken };
    }),

    countEntries: unary(log, 'CountEntries', async (req) => {
      return { count: await ds.countEntries(entryFilterFromProto(req.filter), { mayLag: true }) };
    }),

    batchUpdateEntry: unary(log, 'BatchUpdateEntry', async (req) => {
      checkBatch(req.entries.length, 'entries');
      const results: EntryResult[] = [];
      for (const e of req.entries) {
        let valid: NewEntry | undefined;
        try {
          if (e.id === '') throw invalidArgument('missing id: the ID of the entry to update is required');
          valid = validateNewEntry(entryInputFromProto(e), { trustDomain });
          const replacement: RegistrationEntry = { ...valid, id: e.id, revisionNumber: 0, createdAt: 0, updatedAt: 0 };
          const updated = await ds.updateEntry(replacement, nowSeconds());
          results.push({ status: OK_STATUS, entry: entryToProto(updated) });
        } catch (err) {
          results.push(await failedResult(err, valid, 'BatchUpdateEntry'));
        }
      }
      const ok = results.filter((r) => r.status?.code === GrpcStatus.OK).length;
      log.info({ method: 'BatchUpdateEntry', updated: ok, failed: results.length - ok }, 'entries updated');
      return { results };
    }),

    batchDeleteEntry: unary(log, 'BatchDeleteEntry', async (req) => {
      checkBatch(req.ids.length, 'ids');
      const results: BatchDeleteEntryResponse_Result[] = new Array<BatchDeleteEntryResponse_Result>(req.ids.length);
      const ids: string[] = [];
      const where: number[] = [];
      req.ids.forEach((id, i) => {
        if (id === '') results[i] = { status: { code: GrpcStatus.INVALID_ARGUMENT, message: 'missing id: an entry ID is required' }, id };
        else {
          ids.push(id);
          where.push(i);
        }
      });
      if (ids.length > 0) {
        const deleted = await ds.deleteEntries(ids, nowSeconds());
        deleted.forEach((r, k) => {
          const i = where[k]!;
          results[i] = { status: 'entry' in r ? OK_STATUS : statusOf(r.error, log, { method: 'BatchDeleteEntry' }), id: ids[k]! };
        });
      }
      const ok = results.filter((r) => r.status?.code === GrpcStatus.OK).length;
      log.info({ method: 'BatchDeleteEntry', deleted: ok, failed: results.length - ok }, 'entries deleted');
      return { results };
    }),
  };
}

/**
 * `entry create|show|update|delete|count`: SPIRE's flags, checks, messages and output.
 * Client-side checks are the ones SPIRE's CLI makes (required flags, well-formed IDs and
 * selectors, named by flag); everything else (trust domain, reserved paths, duplicates, limits)
 * is the server's validation, reported per entry.
 */
import { Option, type Command } from 'commander';
import { goQuote, grpcCodeName, pluralize, writeJson } from '../../common/output.js';
import {
  BatchCreateEntryResponse,
  BatchDeleteEntryResponse,
  BatchUpdateEntryResponse,
  CountEntriesResponse,
  ListEntriesResponse,
  MatchBehavior,
  type EntryFilter,
} from '../../proto/gen/spindle/admin/v1/admin.js';
import { Entry, type Selector } from '../../proto/gen/spindle/types/v1/types.js';
import { parseSpiffeId, trustDomainOf } from '../../spiffe/id.js';
import { serverIdOf } from '../../common/spireids.js';
import { validateSelector } from '../entries/validate.js';
import { requiredFlag } from '../../common/cli.js';
import type { AdminClient } from './client.js';
import { action, addCommonOptions, collect, parseIntFlag, readInput, type ActionContext, type CommonOptions } from './common.js';
import { formatEntry, parseEntriesJson, sortEntries } from './entryformat.js';
import { CliError } from './errors.js';

const LIST_PAGE_SIZE = 500;

/** Parses a SPIFFE ID flag, naming the flag on failure. */
export function idFlag(flag: string, value: string): string {
  try {
    return parseSpiffeId(value);
  } catch (err) {
    throw new CliError(`-${flag}: ${(err as Error).message}`);
  }
}

/** Parses `-selector type:value` values, naming the flag on failure. */
export function selectorFlags(values: readonly string[]): Selector[] {
  return values.map((s) => {
    try {
      return validateSelector(s);
    } catch (err) {
      throw new CliError(`-selector: ${(err as Error).message}`);
    }
  });
}

/** `-matchSelectorsOn` / `-matchFederatesWithOn` values. */
export function matchFlag(flag: string, value: string): MatchBehavior {
  switch (value) {
    case 'exact':
      return MatchBehavior.MATCH_EXACT;
    case 'any':
      return MatchBehavior.MATCH_ANY;
    case 'superset':
      return MatchBehavior.MATCH_SUPERSET;
    case 'subset':
      return MatchBehavior.MATCH_SUBSET;
    default:
      throw new CliError(`-${flag}: match behavior ${goQuote(value)} unknown: use exact, any, superset or subset`);
  }
}

interface EntryFieldOptions extends CommonOptions {
  entryID?: string;
  parentID?: string;
  spiffeID?: string;
  selector?: string[];
  x509SVIDTTL?: string;
  jwtSVIDTTL?: string;
  ttl?: string;
  dns?: string[];
  federatesWith?: string[];
  admin?: boolean;
  downstream?: boolean;
  node?: boolean;
  hint?: string;
  entryExpiry?: string;
  data?: string;
}

const FIELD_FLAGS: ReadonlyArray<keyof EntryFieldOptions> = [
  'entryID',
  'parentID',
  'spiffeID',
  'selector',
  'x509SVIDTTL',
  'jwtSVIDTTL',
  'ttl',
  'dns',
  'federatesWith',
  'admin',
  'downstream',
  'node',
  'hint',
  'entryExpiry',
];

function addEntryFieldOptions(cmd: Command, forCreate: boolean): Command {
  cmd
    .addOption(
      forCreate
        ? new Option('--entryID <id>', 'A custom ID for this registration entry (optional); generated when unset')
        : requiredFlag(new Option('--entryID <id>', 'The Registration Entry ID of the record to update'), '-data'),
    )
    .addOption(requiredFlag(new Option('--parentID <id>', "The SPIFFE ID of this record's parent"), forCreate ? '-node or -data' : '-data'))
    .addOption(requiredFlag(new Option('--spiffeID <id>', 'The SPIFFE ID that this record represents'), '-data'))
    .addOption(requiredFlag(new Option('--selector <type:value>', 'A colon-delimited type:value selector. Can be used more than once').argParser(collect), '-data'))
    .option('--x509SVIDTTL <seconds>', 'The lifetime, in seconds, for X509-SVIDs issued based on this registration entry (0: server default)')
    .option('--jwtSVIDTTL <seconds>', 'The lifetime, in seconds, for JWT-SVIDs issued based on this registration entry (0: server default)')
    .addOption(new Option('--ttl <seconds>', 'Deprecated: the X509-SVID lifetime in seconds; use -x509SVIDTTL').hideHelp())
    .option('--dns <name>', 'A DNS name that will be included in SVIDs issued based on this entry. Can be used more than once', collect)
    .option('--federatesWith <trustDomain>', 'SPIFFE ID of a trust domain to federate with. Can be used more than once', collect)
    .option('--admin', 'If set, the SPIFFE ID in this entry will be granted access to the server APIs')
    .option('--downstream', 'A boolean value that, when set, indicates that the entry describes a downstream server')
    .option('--hint <hint>', 'The entry hint, used to disambiguate entries with the same SPIFFE ID')
    .option('--entryExpiry <seconds>', 'An expiry, from epoch in seconds, for the resulting registration entry to be pruned')
    .option('--data <file>', "Path to a file containing registration JSON (optional). If set to '-', read the JSON from stdin");
  if (forCreate) cmd.option('--node', 'If set, this entry will be applied to matching nodes rather than workloads');
  return addCommonOptions(cmd);
}

/** Builds the request entries from flags or `-data`, with SPIRE's checks. */
function entriesFromFlags(o: EntryFieldOptions, mode: 'create' | 'update'): Entry[] {
  if (o.data !== undefined) {
    const combined = FIELD_FLAGS.filter((k) => o[k] !== undefined);
    if (combined.length > 0) {
      throw new CliError(`-data cannot be combined with entry flags (${combined.map((k) => `-${k}`).join(', ')}): put those fields in the JSON`);
    }
    const entries = parseEntriesJson(readInput(o.data, 'registration JSON'), o.data === '-' ? 'stdin' : o.data);
    if (mode === 'update') {
      entries.forEach((e, i) => {
        if (e.id === '') throw new CliError(`${o.data === '-' ? 'stdin' : o.data}: entries[${i}]: entry_id is required to update an entry`);
      });
    }
    return entries;
  }
  const selectors = o.selector ?? [];
  if (mode === 'update' && (o.entryID ?? '') === '') throw new CliError('entry ID is required: set -entryID');
  if (selectors.length < 1) throw new CliError('at least one selector is required: set -selector type:value (repeatable)');
  if (o.node && (o.federatesWith?.length ?? 0) > 0) throw new CliError('node entries can not federate: drop -federatesWith or -node');
  if (o.node && o.parentID !== undefined) throw new CliError('-node sets the parent ID to the server ID: drop -parentID or -node');
  if ((o.parentID ?? '') === '' && !o.node) {
    throw new CliError(mode === 'create' ? 'a parent ID is required if the node flag is not set: set -parentID (or -node)' : 'a parent ID is required: set -parentID');
  }
  if ((o.spiffeID ?? '') === '') throw new CliError('a SPIFFE ID is required: set -spiffeID');
  const ttl = parseIntFlag('ttl', o.ttl);
  const x509 = parseIntFlag('x509SVIDTTL', o.x509SVIDTTL);
  const jwt = parseIntFlag('jwtSVIDTTL', o.jwtSVIDTTL);
  if (ttl < 0) throw new CliError('a positive TTL is required (-ttl)');
  if (x509 < 0) throw new CliError('a positive x509-SVID TTL is required (-x509SVIDTTL)');
  if (jwt < 0) throw new CliError('a positive JWT-SVID TTL is required (-jwtSVIDTTL)');
  if (ttl > 0 && (x509 > 0 || jwt > 0)) throw new CliError('use x509SVIDTTL and jwtSVIDTTL flags or the deprecated ttl flag');
  const spiffeId = idFlag('spiffeID', o.spiffeID!);
  const parentId = o.node ? serverIdOf(trustDomainOf(parseSpiffeId(spiffeId))) : idFlag('parentID', o.parentID!);
  const entry = Entry.fromPartial({
    id: o.entryID ?? '',
    spiffeId,
    parentId,
    selectors: selectorFlags(selectors),
    x509SvidTtl: x509 > 0 ? x509 : ttl,
    jwtSvidTtl: jwt,
    dnsNames: o.dns ?? [],
    federatesWith: o.federatesWith ?? [],
    admin: o.admin === true,
    downstream: o.downstream === true,
    hint: o.hint ?? '',
    expiresAt: BigInt(parseIntFlag('entryExpiry', o.entryExpiry)),
  });
  return [entry];
}

interface ItemResult {
  status?: { code: number; message: string } | undefined;
  entry?: Entry | undefined;
}

/** SPIRE's batch output: successes on stdout, each failure (with the requested entry) on stderr. */
function printBatch(ctx: ActionContext, verb: 'create' | 'update', requested: Entry[], results: ItemResult[], json: unknown): void {
  const failed = results.filter((r) => (r.status?.code ?? 0) !== 0).length;
  if (ctx.format === 'json') {
    writeJson(ctx.io.out, json);
  } else {
    results.forEach((r) => {
      if ((r.status?.code ?? 0) === 0 && r.entry !== undefined) ctx.io.out.write(formatEntry(r.entry));
    });
    results.forEach((r, i) => {
      if ((r.status?.code ?? 0) === 0) return;
      ctx.io.err.write(
        `Failed to ${verb} the following entry (code: ${grpcCodeName(r.status!.code)}, msg: ${goQuote(r.status!.message)}):\n`,
      );
      const shown = requested[i];
      if (shown !== undefined) ctx.io.err.write(formatEntry(shown));
    });
  }
  if (failed > 0) throw new CliError(`failed to ${verb} one or more entries`);
}

interface FilterOptions extends CommonOptions {
  entryID?: string;
  parentID?: string;
  spiffeID?: string;
  selector?: string[];
  matchSelectorsOn: string;
  federatesWith?: string[];
  matchFederatesWithOn: string;
  downstream?: boolean;
  hint?: string;
}

function addFilterOptions(cmd: Command, noun: string): Command {
  cmd
    .option('--parentID <id>', `The Parent ID of the records to ${noun}`)
    .option('--spiffeID <id>', `The SPIFFE ID of the records to ${noun}`)
    .option('--selector <type:value>', 'A colon-delimited type:value selector. Can be used more than once', collect)
    .option('--matchSelectorsOn <match>', 'The match mode used when filtering by selectors. Options: exact, any, superset and subset', 'superset')
    .option('--federatesWith <trustDomain>', 'SPIFFE ID of a trust domain an entry is federate with. Can be used more than once', collect)
    .option('--matchFederatesWithOn <match>', 'The match mode used when filtering by federates with. Options: exact, any, superset and subset', 'superset')
    .option('--downstream', 'Only entries that describe a downstream server')
    .option('--hint <hint>', `The Hint of the records to ${noun}`);
  return addCommonOptions(cmd);
}

function filterFrom(o: FilterOptions): EntryFilter {
  const f: EntryFilter = { bySpiffeId: '', byParentId: '', bySelectors: undefined, byFederatesWith: undefined, byHint: '' };
  if (o.parentID !== undefined) f.byParentId = idFlag('parentID', o.parentID);
  if (o.spiffeID !== undefined) f.bySpiffeId = idFlag('spiffeID', o.spiffeID);
  if (o.selector !== undefined && o.selector.length > 0) {
    f.bySelectors = { selectors: selectorFlags(o.selector), match: matchFlag('matchSelectorsOn', o.matchSelectorsOn) };
  }
  if (o.federatesWith !== undefined && o.federatesWith.length > 0) {
    f.byFederatesWith = { trustDomains: o.federatesWith, match: matchFlag('matchFederatesWithOn', o.matchFederatesWithOn) };
  }
  if (o.downstream) f.byDownstream = true;
  if (o.hint !== undefined) f.byHint = o.hint;
  return f;
}

async function listAll(client: AdminClient, filter: EntryFilter): Promise<Entry[]> {
  const out: Entry[] = [];
  let pageToken = '';
  do {
    const resp = await client.call(client.entry.listEntries, { filter, pageSize: LIST_PAGE_SIZE, pageToken });
    out.push(...resp.entries);
    pageToken = resp.nextPageToken;
  } while (pageToken !== '');
  return out;
}

export function register(program: Command): void {
  const entry = program.command('entry').description('Manage registration entries');

  addEntryFieldOptions(entry.command('create').description('Creates registration entries'), true).action(
    action<EntryFieldOptions>(async (o, ctx) => {
      const requested = entriesFromFlags(o, 'create');
      const resp = await ctx.withClient((c) => c.call(c.entry.batchCreateEntry, { entries: requested }));
      printBatch(ctx, 'create', requested, resp.results, BatchCreateEntryResponse.toJSON(resp));
    }),
  );

  addEntryFieldOptions(entry.command('update').description('Updates registration entries'), false).action(
    action<EntryFieldOptions>(async (o, ctx) => {
      const requested = entriesFromFlags(o, 'update');
      const resp = await ctx.withClient((c) => c.call(c.entry.batchUpdateEntry, { entries: requested }));
      printBatch(ctx, 'update', requested, resp.results, BatchUpdateEntryResponse.toJSON(resp));
    }),
  );

  addFilterOptions(entry.command('show').description('Displays configured registration entries'), 'show')
    .option('--entryID <id>', 'The Entry ID of the records to show')
    .action(
      action<FilterOptions>(async (o, ctx) => {
        if (o.entryID !== undefined && (o.parentID !== undefined || o.spiffeID !== undefined || (o.selector?.length ?? 0) > 0)) {
          throw new CliError("the -entryID flag can't be combined with others");
        }
        const entries = await ctx.withClient(async (c) => {
          if (o.entryID !== undefined) {
            try {
              return [await c.call(c.entry.getEntry, { id: o.entryID })];
            } catch (err) {
              throw new CliError(`error fetching entry ID ${o.entryID}: ${(err as Error).message}`);
            }
          }
          return listAll(c, filterFrom(o));
        });
        sortEntries(entries);
        if (ctx.format === 'json') {
          writeJson(ctx.io.out, { entries: [], ...(ListEntriesResponse.toJSON({ entries, nextPageToken: '' }) as object) });
          return;
        }
        ctx.io.out.write(`Found ${pluralize(entries.length, 'entry', 'entries')}\n`);
        for (const e of entries) ctx.io.out.write(formatEntry(e));
      }),
    );

  addCommonOptions(
    entry
      .command('delete')
      .description('Deletes registration entries')
      .addOption(requiredFlag(new Option('--entryID <id>', 'The Registration Entry ID of the record to delete'), '-file'))
      .option('--file <path>', `Path to a JSON file {"ids": [...]} for batch deletion (optional). If set to '-', read from stdin`),
  ).action(
    action<CommonOptions & { entryID?: string; file?: string }>(async (o, ctx) => {
      if (o.entryID !== undefined && o.file !== undefined) throw new CliError('use either -entryID or -file, not both');
      let ids: string[];
      if (o.file !== undefined) {
        ids = parseIdsJson(readInput(o.file, 'entry IDs'), o.file === '-' ? 'stdin' : o.file);
      } else {
        if ((o.entryID ?? '') === '') throw new CliError('an entry ID is required: set -entryID (or -file)');
        ids = [o.entryID!];
      }
      const resp = await ctx.withClient((c) => c.call(c.entry.batchDeleteEntry, { ids }));
      const failures = resp.results.filter((r) => (r.status?.code ?? 0) !== 0);
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, BatchDeleteEntryResponse.toJSON(resp));
      } else if (o.file === undefined) {
        const r = resp.results[0];
        if (r !== undefined && (r.status?.code ?? 0) !== 0) throw new CliError(`failed to delete entry: ${r.status!.message}`);
        ctx.io.out.write(`Deleted entry with ID: ${o.entryID}\n`);
        return;
      } else {
        for (const r of resp.results) {
          if ((r.status?.code ?? 0) === 0) ctx.io.out.write(`Deleted entry with ID: ${r.id}\n`);
          else ctx.io.err.write(`Failed to delete entry with ID ${r.id} (code: ${grpcCodeName(r.status!.code)}, msg: ${goQuote(r.status!.message)})\n`);
        }
      }
      if (failures.length > 0) throw new CliError(ids.length === 1 ? `failed to delete entry: ${failures[0]!.status!.message}` : 'failed to delete one or more entries');
    }),
  );

  addFilterOptions(entry.command('count').description('Count registration entries'), 'count').action(
    action<FilterOptions>(async (o, ctx) => {
      const resp = await ctx.withClient((c) => c.call(c.entry.countEntries, { filter: filterFrom(o) }));
      if (ctx.format === 'json') writeJson(ctx.io.out, { ...(CountEntriesResponse.toJSON(resp) as object), count: resp.count });
      else ctx.io.out.write(`${pluralize(resp.count, 'registration entry', 'registration entries')}\n`);
    }),
  );
}

/** `entry delete -file`: SPIRE's `{"ids": ["...", ...]}`. */
function parseIdsJson(text: string, source: string): string[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${source}: invalid JSON: ${(err as Error).message}`);
  }
  const ids = typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>)['ids'] : undefined;
  if (!Array.isArray(ids) || ids.length === 0 || ids.some((x) => typeof x !== 'string' || x === '')) {
    throw new CliError(`${source}: expected {"ids": ["<entry ID>", ...]} with at least one non-empty ID`);
  }
  return ids as string[];
}

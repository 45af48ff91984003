/**
 * Validation of registration entries arriving from the admin API or the CLI (SPIRE semantics).
 * Raw strings stop here: what leaves `validateNewEntry` is a `NewEntry` with parsed, branded IDs,
 * sorted selectors and sorted bare trust domains, ready for the datastore.
 *
 * Rules (each failure is an `EntryValidationError`, code `ERR_ENTRY_INVALID`, naming the field,
 * the offending value and a stable `reason`):
 * - spiffeId: a valid SPIFFE ID (spiffe/id.ts rules) in the server's trust domain, with a
 *   non-root path, and not in SPIRE's reserved `/spire` namespace (`/spire` or `/spire/...`:
 *   agent and server IDs are minted by the server itself, never through an entry). Like SPIRE,
 *   this holds for node aliases too.
 * - parentId: a valid SPIFFE ID in the server's trust domain with a non-root path. It may be an
 *   agent ID (`/spire/agent/...`), the server ID `spiffe://<td>/spire/server` (the entry is then a
 *   node alias: SPIRE's `-node`), or any workload ID (chains / downstream).
 * - selectors: at least one; each `type:value` (objects or strings); type 1..128 characters of
 *   `[A-Za-z0-9_-]`; value non-empty, at most 1024 UTF-8 bytes, no control characters (C0, DEL,
 *   C1), no U+2028/U+2029 line separators, no unpaired surrogates; no duplicates.
 * - x509SvidTtl / jwtSvidTtl: integers in 0..maxTtlSeconds (0 = server default).
 * - dnsNames: RFC 1123 host names (letters, digits, hyphens; labels 1..63, no leading or trailing
 *   hyphen), an optional leading `*.` wildcard label, at most 253 characters, no trailing dot;
 *   kept as given (case preserved); no duplicates (compared case-insensitively).
 * - federatesWith: trust domain names (bare or `spiffe://td`), not our own, no duplicates;
 *   returned bare and sorted.
 * - hint: at most 1024 characters, same character rules as selector values.
 * - entryExpiry: integer unix seconds, 0 (never) up to year 9999. Past values are accepted
 *   (as in SPIRE); such an entry is simply never served.
 * - id (optional; '' means "generate"): 1..255 characters of `[A-Za-z0-9._~:@+=-]`.
 * - admin / downstream: booleans.
 * - Unknown fields are errors (a misspelt `spiffeID` must not silently vanish).
 */
import {
  isMemberOf,
  parseSpiffeId,
  parseTrustDomain,
  pathOf,
  trustDomainOf,
  type SpiffeId,
  type TrustDomain,
} from '../../spiffe/id.js';
import { compareCodePoints } from '../../common/strings.js';
import { quote } from '../../spiffe/errors.js';
import { dnsNameIssue } from '../../spiffe/x509/extensions.js';
import type { NewEntry } from '../datastore/types.js';
import { compareSelectors, formatSelector, splitSelector, type Selector } from '../../common/selector.js';

export { compareCodePoints } from '../../common/strings.js';
export { MAX_DNS_NAME_LENGTH } from '../../spiffe/x509/index.js';
export { compareSelectors, formatSelector, selectorSetKey as selectorKey } from '../../common/selector.js';

export const ERR_ENTRY_INVALID = 'ERR_ENTRY_INVALID';

export type EntryValidationReason =
  | 'not_object'
  | 'unknown_field'
  | 'required'
  | 'type'
  | 'spiffe_id'
  | 'trust_domain'
  | 'foreign_trust_domain'
  | 'root_path'
  | 'reserved'
  | 'empty'
  | 'too_many'
  | 'format'
  | 'char'
  | 'too_long'
  | 'duplicate'
  | 'range'
  | 'own_trust_domain';

export class EntryValidationError extends Error {
  readonly code = ERR_ENTRY_INVALID;
  /** The top-level entry field, e.g. `selectors`; for list items `index` says which one. */
  readonly field: string;
  readonly reason: EntryValidationReason;
  readonly index: number | undefined;

  constructor(
    field: string,
    reason: EntryValidationReason,
    message: string,
    options?: { index?: number; cause?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EntryValidationError';
    this.field = field;
    this.reason = reason;
    this.index = options?.index;
  }
}

export function isEntryValidationError(err: unknown): err is EntryValidationError {
  return err instanceof EntryValidationError;
}

/** What the admin API / CLI hands in. Selectors may be objects or `type:value` strings. */
export interface EntryInput {
  id?: string;
  spiffeId: string;
  parentId: string;
  selectors: ReadonlyArray<Selector | string>;
  x509SvidTtl?: number;
  jwtSvidTtl?: number;
  dnsNames?: readonly string[];
  federatesWith?: readonly string[];
  admin?: boolean;
  downstream?: boolean;
  hint?: string;
  entryExpiry?: number;
}

export interface ValidateEntryOptions {
  /** The server's trust domain: spiffeId and parentId must be members of it. */
  trustDomain: TrustDomain;
  /** Upper bound for x509SvidTtl and jwtSvidTtl (default DEFAULT_MAX_TTL_SECONDS, ten years). */
  maxTtlSeconds?: number;
}

export const DEFAULT_MAX_TTL_SECONDS = 10 * 365 * 24 * 60 * 60;
export const MAX_SELECTORS = 256;
export const MAX_SELECTOR_TYPE_LENGTH = 128;
export const MAX_SELECTOR_VALUE_BYTES = 1024;
export const MAX_DNS_NAMES = 256;
export const MAX_FEDERATES_WITH = 256;
export const MAX_HINT_LENGTH = 1024;
export const MAX_ENTRY_ID_LENGTH = 255;
/** 9999-12-31T23:59:59Z. */
export const MAX_ENTRY_EXPIRY = 253402300799;

/** The path of the server's own ID; entries parented by `spiffe://<td>/spire/server` are node aliases. */
export { SERVER_ID_PATH } from '../../common/spireids.js';

const KNOWN_FIELDS = new Set([
  'id',
  'spiffeId',
  'parentId',
  'selectors',
  'x509SvidTtl',
  'jwtSvidTtl',
  'dnsNames',
  'federatesWith',
  'admin',
  'downstream',
  'hint',
  'entryExpiry',
]);

const SELECTOR_TYPE_RE = /^[A-Za-z0-9_-]+$/;
const ENTRY_ID_RE = /^[A-Za-z0-9._~:@+=-]+$/;

// ---------------------------------------------------------------------------------------------
// Selectors

function shown(value: unknown): string {
  if (typeof value === 'string') return quote(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return '(array)';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return `(${typeof value})`;
}

/** Index of the first forbidden character (control, line separator, lone surrogate), or -1. */
function badCharIndex(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029) return i;
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
      return i;
    }
    if (c >= 0xdc00 && c <= 0xdfff) return i;
  }
  return -1;
}

function charName(s: string, i: number): string {
  const c = s.charCodeAt(i);
  return `U+${c.toString(16).toUpperCase().padStart(4, '0')} at index ${i}`;
}

function where(field: string, index: number | undefined): string {
  return index === undefined ? field : `${field}[${index}]`;
}

function selectorFail(
  reason: EntryValidationReason,
  detail: string,
  value: unknown,
  index: number | undefined,
): EntryValidationError {
  return new EntryValidationError(
    'selectors',
    reason,
    `invalid ${where('selectors', index)} ${shown(value)}: ${detail}`,
    index === undefined ? undefined : { index },
  );
}

function checkSelectorParts(type: string, value: string, raw: unknown, index: number | undefined): Selector {
  if (type.length === 0) throw selectorFail('empty', 'selector type must not be empty', raw, index);
  if (type.length > MAX_SELECTOR_TYPE_LENGTH) {
    throw selectorFail('too_long', `selector type is longer than ${MAX_SELECTOR_TYPE_LENGTH} characters`, raw, index);
  }
  if (!SELECTOR_TYPE_RE.test(type)) {
    throw selectorFail('char', 'selector type may contain only A-Z a-z 0-9 _ -', raw, index);
  }
  if (value.length === 0) throw selectorFail('empty', 'selector value must not be empty', raw, index);
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_SELECTOR_VALUE_BYTES) {
    throw selectorFail('too_long', `selector value is ${bytes} bytes, over the ${MAX_SELECTOR_VALUE_BYTES}-byte limit`, raw, index);
  }
  const bad = badCharIndex(value);
  if (bad !== -1) {
    throw selectorFail(
      'char',
      `selector value must not contain control characters, line separators or unpaired surrogates (${charName(value, bad)})`,
      raw,
      index,
    );
  }
  return { type, value };
}

function parseSelectorAt(s: unknown, index: number | undefined): Selector {
  if (typeof s !== 'string') throw selectorFail('type', 'expected a "type:value" string', s, index);
  const parts = splitSelector(s);
  if (parts === undefined) throw selectorFail('format', 'expected "type:value" (no ":" found)', s, index);
  return checkSelectorParts(parts.type, parts.value, s, index);
}

/**
 * Parses `type:value`, splitting at the FIRST colon (`unix:uid:1000` is type `unix`, value
 * `uid:1000`). Throws EntryValidationError (field `selectors`).
 */
export function parseSelector(s: string): Selector {
  return parseSelectorAt(s, undefined);
}

/** Validates a selector object (or parses a string); returns a fresh `{type, value}`. */
export function validateSelector(sel: Selector | string, index?: number): Selector {
  if (typeof sel === 'string') return parseSelectorAt(sel, index);
  if (typeof sel !== 'object' || sel === null || Array.isArray(sel)) {
    throw selectorFail('type', 'expected a selector {type, value} or a "type:value" string', sel, index);
  }
  const { type, value } = sel as { type?: unknown; value?: unknown };
  if (typeof type !== 'string' || typeof value !== 'string') {
    throw selectorFail('type', 'selector type and value must be strings', `${String(type)}:${String(value)}`, index);
  }
  return checkSelectorParts(type, value, `${type}:${value}`, index);
}

// ---------------------------------------------------------------------------------------------
// Entry

function fail(field: string, reason: EntryValidationReason, value: unknown, detail: string, index?: number): EntryValidationError {
  return new EntryValidationError(
    field,
    reason,
    `invalid ${where(field, index)} ${shown(value)}: ${detail}`,
    index === undefined ? undefined : { index },
  );
}

function checkMemberId(field: 'spiffeId' | 'parentId', raw: unknown, td: TrustDomain): SpiffeId {
  if (raw === undefined || raw === null || raw === '') throw fail(field, 'required', raw, 'a SPIFFE ID is required');
  if (typeof raw !== 'string') throw fail(field, 'type', raw, 'expected a string');
  let id: SpiffeId;
  try {
    id = parseSpiffeId(raw);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw new EntryValidationError(field, 'spiffe_id', `invalid ${field} ${quote(raw)}: ${detail}`, { cause: err });
  }
  if (!isMemberOf(id, td)) {
    throw fail(field, 'foreign_trust_domain', raw, `must be in this server's trust domain "${td}", not "${trustDomainOf(id)}"`);
  }
  if (pathOf(id) === '') throw fail(field, 'root_path', raw, 'must have a non-root path (spiffe://<td> alone names a trust domain)');
  return id;
}

function checkTtl(field: 'x509SvidTtl' | 'jwtSvidTtl', raw: unknown, max: number): number {
  if (raw === undefined) return 0;
  if (typeof raw !== 'number' || !Number.isInteger(raw)) throw fail(field, 'type', raw, 'expected an integer number of seconds');
  if (raw < 0 || raw > max) throw fail(field, 'range', raw, `must be between 0 (server default) and ${max} seconds`);
  return raw;
}

function checkBool(field: 'admin' | 'downstream', raw: unknown): boolean {
  if (raw === undefined) return false;
  if (typeof raw !== 'boolean') throw fail(field, 'type', raw, 'expected a boolean');
  return raw;
}

function checkList(field: string, raw: unknown, max: number): readonly unknown[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw fail(field, 'type', raw, 'expected a list');
  if (raw.length > max) throw fail(field, 'too_many', raw, `at most ${max} items allowed, got ${raw.length}`);
  return raw;
}

/**
 * Validates an entry from the admin API / CLI and returns the NewEntry the datastore takes.
 * Throws EntryValidationError (code ERR_ENTRY_INVALID) on the first problem found, checking
 * fields in this order: shape and unknown fields, id, spiffeId, parentId, selectors, TTLs,
 * dnsNames, federatesWith, admin, downstream, hint, entryExpiry.
 */
export function validateNewEntry(input: EntryInput, options: ValidateEntryOptions): NewEntry {
  const td = options.trustDomain;
  const maxTtl = options.maxTtlSeconds ?? DEFAULT_MAX_TTL_SECONDS;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new EntryValidationError('entry', 'not_object', `invalid entry ${shown(input)}: expected an object`);
  }
  const raw = input as unknown as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!KNOWN_FIELDS.has(key)) {
      throw new EntryValidationError(key, 'unknown_field', `unknown entry field ${quote(key)}`);
    }
  }

  // id
  let id: string | undefined;
  if (raw.id !== undefined && raw.id !== '') {
    if (typeof raw.id !== 'string') throw fail('id', 'type', raw.id, 'expected a string');
    if (raw.id.length > MAX_ENTRY_ID_LENGTH) {
      throw fail('id', 'too_long', raw.id, `entry ID is longer than ${MAX_ENTRY_ID_LENGTH} characters`);
    }
    if (!ENTRY_ID_RE.test(raw.id)) throw fail('id', 'char', raw.id, 'entry ID may contain only A-Z a-z 0-9 . _ ~ : @ + = -');
    id = raw.id;
  }

  // spiffeId, parentId
  const spiffeId = checkMemberId('spiffeId', raw.spiffeId, td);
  const spiffePath = pathOf(spiffeId);
  if (spiffePath === '/spire' || spiffePath.startsWith('/spire/')) {
    throw fail('spiffeId', 'reserved', raw.spiffeId, 'the "/spire" namespace is reserved for agents and servers');
  }
  const parentId = checkMemberId('parentId', raw.parentId, td);

  // selectors
  if (raw.selectors === undefined || raw.selectors === null) {
    throw fail('selectors', 'required', raw.selectors, 'at least one selector is required');
  }
  const rawSelectors = checkList('selectors', raw.selectors, MAX_SELECTORS);
  if (rawSelectors.length === 0) throw fail('selectors', 'required', raw.selectors, 'at least one selector is required');
  const selectors: Selector[] = [];
  const seenSelectors = new Map<string, number>();
  for (let i = 0; i < rawSelectors.length; i++) {
    const sel = validateSelector(rawSelectors[i] as Selector | string, i);
    const key = formatSelector(sel);
    const first = seenSelectors.get(key);
    if (first !== undefined) {
      throw fail('selectors', 'duplicate', key, `duplicate of selectors[${first}]`, i);
    }
    seenSelectors.set(key, i);
    selectors.push(sel);
  }
  selectors.sort(compareSelectors);

  // TTLs
  const x509SvidTtl = checkTtl('x509SvidTtl', raw.x509SvidTtl, maxTtl);
  const jwtSvidTtl = checkTtl('jwtSvidTtl', raw.jwtSvidTtl, maxTtl);

  // dnsNames
  const rawDns = checkList('dnsNames', raw.dnsNames, MAX_DNS_NAMES);
  const dnsNames: string[] = [];
  const seenDns = new Map<string, number>();
  for (let i = 0; i < rawDns.length; i++) {
    const name = rawDns[i];
    if (typeof name !== 'string') throw fail('dnsNames', 'type', name, 'expected a string', i);
    const problem = dnsNameIssue(name);
    if (problem !== undefined) throw fail('dnsNames', problem.reason, name, problem.detail, i);
    const folded = name.toLowerCase();
    const first = seenDns.get(folded);
    if (first !== undefined) throw fail('dnsNames', 'duplicate', name, `duplicate of dnsNames[${first}]`, i);
    seenDns.set(folded, i);
    dnsNames.push(name);
  }

  // federatesWith
  const rawFed = checkList('federatesWith', raw.federatesWith, MAX_FEDERATES_WITH);
  const federatesWith: TrustDomain[] = [];
  const seenFed = new Map<string, number>();
  for (let i = 0; i < rawFed.length; i++) {
    const value = rawFed[i];
    if (typeof value !== 'string') throw fail('federatesWith', 'type', value, 'expected a trust domain name', i);
    let fed: TrustDomain;
    try {
      fed = parseTrustDomain(value);
    } catch (err) {
      const detail = err instanceof Error ? err.message : String(err);
      throw new EntryValidationError('federatesWith', 'trust_domain', `invalid federatesWith[${i}] ${quote(value)}: ${detail}`, {
        index: i,
        cause: err,
      });
    }
    if (fed === td) {
      throw fail('federatesWith', 'own_trust_domain', value, 'an entry cannot federate with its own trust domain', i);
    }
    const first = seenFed.get(fed);
    if (first !== undefined) throw fail('federatesWith', 'duplicate', value, `duplicate of federatesWith[${first}]`, i);
    seenFed.set(fed, i);
    federatesWith.push(fed);
  }
  federatesWith.sort(compareCodePoints);

  const admin = checkBool('admin', raw.admin);
  const downstream = checkBool('downstream', raw.downstream);

  // hint
  let hint = '';
  if (raw.hint !== undefined) {
    if (typeof raw.hint !== 'string') throw fail('hint', 'type', raw.hint, 'expected a string');
    if (raw.hint.length > MAX_HINT_LENGTH) {
      throw fail('hint', 'too_long', raw.hint, `hint is ${raw.hint.length} characters, over the ${MAX_HINT_LENGTH} limit`);
    }
    const bad = badCharIndex(raw.hint);
    if (bad !== -1) {
      throw fail('hint', 'char', raw.hint, `hint must not contain control characters, line separators or unpaired surrogates (${charName(raw.hint, bad)})`);
    }
    hint = raw.hint;
  }

  // entryExpiry
  let entryExpiry = 0;
  if (raw.entryExpiry !== undefined) {
    const v = raw.entryExpiry;
    if (typeof v !== 'number' || !Number.isInteger(v)) throw fail('entryExpiry', 'type', v, 'expected integer unix seconds');
    if (v < 0 || v > MAX_ENTRY_EXPIRY) {
      throw fail('entryExpiry', 'range', v, `must be 0 (never expires) or unix seconds up to ${MAX_ENTRY_EXPIRY}`);
    }
    entryExpiry = v;
  }

  const entry: NewEntry = {
    spiffeId,
    parentId,
    selectors,
    x509SvidTtl,
    jwtSvidTtl,
    dnsNames,
    federatesWith,
    admin,
    downstream,
    hint,
    entryExpiry,
  };
  if (id !== undefined) entry.id = id;
  return entry;
}


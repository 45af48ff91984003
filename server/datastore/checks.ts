/**
 * The datastore's own argument checks and normalisation, shared by every backend: what a store
 * depends on whoever calls it, so each backend refuses the same input with the same
 * DataStoreError('invalid') message.
 *
 * The user-facing rules for registration entries (lengths, selector and DNS syntax, TTL limits,
 * which IDs may parent which, what an alias is) are server/entries/validate.ts's alone: every
 * entry the APIs write has passed validateNewEntry first. What is checked here is what a store
 * itself depends on: JavaScript types, text a database stores unchanged (no lone surrogates),
 * well-formed SPIFFE IDs and trust domains in the identity columns, non-negative integers, and
 * selector sets (non-empty type and value) and trust domain lists sorted and deduplicated,
 * because the identity rule ("no duplicate entry") and the set filters compare them as sets.
 */
import { compareCodePoints } from '../../common/strings.js';
import { isSpiffeId, parseTrustDomain, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import {
  DataStoreError,
  compareSelectors,
  type AttestedNode,
  type BundleUpdate,
  type FederationRefreshState,
  type FederationRelationship,
  type JoinToken,
  type NewEntry,
  type RegistrationEntry,
  type Selector,
  type StoredBundle,
} from './types.js';

const MAX_ENTRY_ID_LENGTH = 255;
const UINT64_MAX = (1n << 64n) - 1n;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const SERIAL_HEX = /^[0-9a-f]*$/;

const LONE_SURROGATE = /\p{Surrogate}/u;

/** A string SQLite stores as it is: UTF-8 cannot hold a lone surrogate (it would be altered). */
export function checkText(v: unknown, what: string): string {
  if (typeof v !== 'string') throw invalid(`${what} must be a string, got ${describe(v)}`);
  if (LONE_SURROGATE.test(v)) throw invalid(`${what} is not well-formed Unicode (lone surrogate)`);
  return v;
}

export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 100 ? `${v.slice(0, 100)}...` : v);
  if (typeof v === 'bigint') return `${v}n`;
  return v === undefined ? 'undefined' : typeof v === 'object' ? (v === null ? 'null' : typeof v) : String(v);
}

export function invalid(message: string): DataStoreError {
  return new DataStoreError('invalid', message);
}

export function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function checkInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalid(`${what} must be an integer, got ${describe(v)}`);
  return v;
}

export function checkNonNegativeInt(v: unknown, what: string): number {
  if (!isNonNegativeInt(v)) throw invalid(`${what} must be a non-negative integer, got ${describe(v)}`);
  return v;
}

export function checkString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw invalid(`${what} must be a string, got ${describe(v)}`);
  return v;
}

/** Sorted by (type, value), duplicates removed; throws 'invalid' for malformed selectors. */
export function normalizeSelectors(input: unknown, what: string): Selector[] {
  if (!Array.isArray(input)) throw invalid(`${what} must be an array, got ${describe(input)}`);
  const out: Selector[] = [];
  for (let i = 0; i < input.length; i++) {
    const s: unknown = input[i];
    if (typeof s !== 'object' || s === null) throw invalid(`${what}[${i}] must be a selector object, got ${describe(s)}`);
    const { type, value } = s as { type?: unknown; value?: unknown };
    if (typeof type !== 'string' || type === '') throw invalid(`${what}[${i}].type must be a non-empty string, got ${describe(type)}`);
    if (typeof value !== 'string' || value === '') throw invalid(`${what}[${i}].value must be a non-empty string, got ${describe(value)}`);
    checkText(type, `${what}[${i}].type`);
    checkText(value, `${what}[${i}].value`);
    out.push({ type, value });
  }
  out.sort(compareSelectors);
  return out.filter((s, i) => i === 0 || compareSelectors(out[i - 1]!, s) !== 0);
}


export function normalizeStrings(input: unknown, what: string): string[] {
  if (!Array.isArray(input)) throw invalid(`${what} must be an array, got ${describe(input)}`);
  for (let i = 0; i < input.length; i++) {
    const v: unknown = input[i];
    if (typeof v !== 'string') throw invalid(`${what}[${i}] must be a string, got ${describe(v)}`);
  }
  return input as string[];
}

export function sortedUnique(values: string[]): string[] {
  const out = [...values].sort(compareCodePoints);
  return out.filter((v, i) => i === 0 || out[i - 1] !== v);
}

export function checkSpiffeId(v: unknown, what: string): SpiffeId {
  if (!isSpiffeId(v)) throw invalid(`${what} must be a valid SPIFFE ID, got ${describe(v)}`);
  return v;
}

export function checkTrustDomain(v: unknown, what: string): TrustDomain {
  try {
    return parseTrustDomain(v as string);
  } catch (err) {
    throw new DataStoreError('invalid', `${what} must be a valid trust domain, got ${describe(v)}`, { cause: err });
  }
}

export function checkBool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw invalid(`${what} must be a boolean, got ${describe(v)}`);
  return v;
}

export interface NormalizedEntry {
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  selectors: Selector[];
  x509SvidTtl: number;
  jwtSvidTtl: number;
  dnsNames: string[];
  federatesWith: TrustDomain[];
  admin: boolean;
  downstream: boolean;
  hint: string;
  entryExpiry: number;
}

/**
 * Integrity-checks and normalises the mutable fields of an entry (see the file comment: not
 * the user-facing rules); throws DataStoreError('invalid').
 */
export function normalizeEntry(e: NewEntry | RegistrationEntry): NormalizedEntry {
  if (typeof e !== 'object' || e === null) throw invalid(`entry must be an object, got ${describe(e)}`);
  const selectors = normalizeSelectors(e.selectors, 'selectors');
  const dns = normalizeStrings(e.dnsNames, 'dnsNames');
  dns.forEach((d, i) => checkText(d, `dnsNames[${i}]`));
  const federatesWith = sortedUnique(
    normalizeStrings(e.federatesWith, 'federatesWith').map((td, i) => checkTrustDomain(td, `federatesWith[${i}]`)),
  ) as TrustDomain[];
  return {
    spiffeId: checkSpiffeId(e.spiffeId, 'spiffeId'),
    parentId: checkSpiffeId(e.parentId, 'parentId'),
    selectors,
    x509SvidTtl: checkNonNegativeInt(e.x509SvidTtl, 'x509SvidTtl'),
    jwtSvidTtl: checkNonNegativeInt(e.jwtSvidTtl, 'jwtSvidTtl'),
    dnsNames: [...new Set(dns)],
    federatesWith,
    admin: checkBool(e.admin, 'admin'),
    downstream: checkBool(e.downstream, 'downstream'),
    hint: checkText(e.hint, 'hint'),
    entryExpiry: checkNonNegativeInt(e.entryExpiry, 'entryExpiry'),
  };
}

export function checkEntryId(id: unknown): string {
  if (typeof id !== 'string' || id === '' || id.length > MAX_ENTRY_ID_LENGTH) {
    throw invalid(`entry id must be a non-empty string of at most ${MAX_ENTRY_ID_LENGTH} characters, got ${describe(id)}`);
  }
  return checkText(id, 'entry id');
}

export function checkSerial(v: unknown, what: string): string {
  if (typeof v !== 'string' || !SERIAL_HEX.test(v)) throw invalid(`${what} must be lowercase hex (or ''), got ${describe(v)}`);
  return v;
}

export interface NormalizedNode {
  spiffeId: SpiffeId;
  attestationType: string;
  certSerial: string;
  certNotAfter: number;
  newCertSerial: string;
  newCertNotAfter: number;
  selectors: Selector[];
  banned: boolean;
  canReattest: boolean;
}

export function normalizeNode(n: Omit<AttestedNode, 'createdAt' | 'updatedAt'>): NormalizedNode {
  if (typeof n !== 'object' || n === null) throw invalid(`node must be an object, got ${describe(n)}`);
  const attestationType = checkText(n.attestationType, 'attestationType');
  if (attestationType === '') throw invalid('attestationType must not be empty');
  return {
    spiffeId: checkSpiffeId(n.spiffeId, 'spiffeId'),
    attestationType,
    certSerial: checkSerial(n.certSerial, 'certSerial'),
    certNotAfter: checkNonNegativeInt(n.certNotAfter, 'certNotAfter'),
    newCertSerial: checkSerial(n.newCertSerial, 'newCertSerial'),
    newCertNotAfter: checkNonNegativeInt(n.newCertNotAfter, 'newCertNotAfter'),
    selectors: normalizeSelectors(n.selectors, 'selectors'),
    banned: checkBool(n.banned, 'banned'),
    canReattest: checkBool(n.canReattest, 'canReattest'),
  };
}

/** A join token to store; throws 'invalid'. */
export function checkJoinToken(token: JoinToken): JoinToken {
  if (typeof token !== 'object' || token === null) throw invalid(`join token must be an object, got ${describe(token)}`);
  // Insisting on a SHA-256 hex digest keeps a raw token value from ever being stored by mistake.
  if (typeof token.hash !== 'string' || !SHA256_HEX.test(token.hash)) {
    throw invalid('join token hash must be a lowercase hex SHA-256 digest (64 characters)');
  }
  const expiresAt = checkInt(token.expiresAt, 'join token expiresAt');
  return { hash: token.hash, expiresAt };
}

/** A bundle to store: a valid trust domain, a non-empty document and a uint64 sequence; throws 'invalid'. */
export function checkBundle(bundle: StoredBundle): StoredBundle {
  if (typeof bundle !== 'object' || bundle === null) throw invalid(`bundle must be an object, got ${describe(bundle)}`);
  const trustDomain = checkTrustDomain(bundle.trustDomain, 'bundle trustDomain');
  const document = checkText(bundle.document, 'bundle document');
  if (document === '') throw invalid('bundle document must not be empty');
  const sequence = bundle.sequence;
  if (typeof sequence !== 'bigint' || sequence < 0n || sequence > UINT64_MAX) {
    throw invalid(`bundle sequence must be a bigint in 0..2^64-1, got ${describe(sequence)}`);
  }
  return { trustDomain, document, sequence };
}

/** A CA journal's server ID: '' (the single server) or 1-128 characters of [A-Za-z0-9._-]; throws 'invalid'. */
export function checkCaServerId(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v !== 'string' || !/^[A-Za-z0-9._-]{0,128}$/.test(v)) {
    throw invalid(`CA journal server ID must be at most 128 characters of A-Z a-z 0-9 . _ -, got ${describe(v)}`);
  }
  return v;
}

/** The result of an updateBundle callback for trust domain `td`, checked against the stored bundle; throws 'invalid'. */
export function checkBundleUpdate(td: string, u: BundleUpdate, current: StoredBundle | undefined): { bundle?: StoredBundle; caJournal?: { serverId: string; document: string } } {
  if (typeof u !== 'object' || u === null) throw invalid(`bundle update must be an object, got ${describe(u)}`);
  const out: { bundle?: StoredBundle; caJournal?: { serverId: string; document: string } } = {};
  if (u.bundle !== undefined) {
    const b = checkBundle(u.bundle);
    if (b.trustDomain !== td) throw invalid(`bundle update for trust domain ${JSON.stringify(td)} returned a bundle of ${JSON.stringify(b.trustDomain)}`);
    if (current !== undefined && b.sequence <= current.sequence) {
      throw invalid(`bundle update of ${td}: sequence ${b.sequence} is not above the stored sequence ${current.sequence} (sequences only grow)`);
    }
    out.bundle = b;
  }
  if (u.caJournal !== undefined) {
    out.caJournal = { serverId: checkCaServerId(u.caJournal.serverId), document: checkCaJournal(u.caJournal.document) };
  }
  return out;
}

/** The CA journal document: well-formed text holding JSON; throws 'invalid'. */
export function checkCaJournal(json: string): string {
  checkText(json, 'CA journal');
  try {
    JSON.parse(json);
  } catch (err) {
    throw new DataStoreError('invalid', 'CA journal must be a JSON document', { cause: err });
  }
  return json;
}

/**
 * The entry a create returns: the normalised fields (named one by one, so a backend's own
 * additions such as a stored selector key never leak into it), revision 0, created and updated now.
 */
export function createdEntry(id: string, n: NormalizedEntry, now: number): RegistrationEntry {
  return {
    id,
    spiffeId: n.spiffeId,
    parentId: n.parentId,
    selectors: n.selectors,
    x509SvidTtl: n.x509SvidTtl,
    jwtSvidTtl: n.jwtSvidTtl,
    dnsNames: n.dnsNames,
    federatesWith: n.federatesWith,
    admin: n.admin,
    downstream: n.downstream,
    hint: n.hint,
    entryExpiry: n.entryExpiry,
    revisionNumber: 0,
    createdAt: now,
    updatedAt: now,
  };
}

/**
 * A federation relationship to store: trust domain, an absolute https URL, a known profile, and
 * for https_spiffe a well-formed endpoint SPIFFE ID ('' for https_web); throws 'invalid'. The
 * user-facing rules (messages in SPIRE's words) are the admin API's; these are what a store needs.
 */
export function checkFederationRelationship(rel: Omit<FederationRelationship, 'createdAt' | 'updatedAt'>): Omit<FederationRelationship, 'createdAt' | 'updatedAt'> {
  if (typeof rel !== 'object' || rel === null) throw invalid(`federation relationship must be an object, got ${describe(rel)}`);
  const trustDomain = checkTrustDomain(rel.trustDomain, 'federation relationship trustDomain');
  const url = checkText(rel.bundleEndpointUrl, 'bundle endpoint URL');
  if (!/^https:\/\/[^\s]+$/i.test(url)) throw invalid(`bundle endpoint URL must be an https URL, got ${describe(url)}`);
  const profile = rel.bundleEndpointProfile;
  if (profile !== 'https_web' && profile !== 'https_spiffe') throw invalid(`bundle endpoint profile must be https_web or https_spiffe, got ${describe(profile)}`);
  let endpointSpiffeId = '';
  if (profile === 'https_spiffe') endpointSpiffeId = checkSpiffeId(rel.endpointSpiffeId, 'endpoint SPIFFE ID');
  else if (rel.endpointSpiffeId !== '' && rel.endpointSpiffeId !== undefined) throw invalid('endpoint SPIFFE ID is only for the https_spiffe profile');
  return { trustDomain, bundleEndpointUrl: url, bundleEndpointProfile: profile, endpointSpiffeId };
}

/** A refresh state to store; throws 'invalid'. */
export function checkRefreshState(s: FederationRefreshState): FederationRefreshState {
  if (typeof s !== 'object' || s === null) throw invalid(`refresh state must be an object, got ${describe(s)}`);
  const seq = s.lastSequence;
  if (typeof seq !== 'bigint' || seq < 0n || seq > UINT64_MAX) throw invalid(`refresh state lastSequence must be a bigint in 0..2^64-1, got ${describe(seq)}`);
  return {
    lastAttemptAt: checkNonNegativeInt(s.lastAttemptAt, 'lastAttemptAt'),
    lastSuccessAt: checkNonNegativeInt(s.lastSuccessAt, 'lastSuccessAt'),
    lastError: checkText(s.lastError, 'lastError'),
    lastSequence: seq,
  };
}

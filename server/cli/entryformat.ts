/**
 * Registration entries on the command line: SPIRE's pretty block, SPIRE's ordering, and SPIRE's
 * batch JSON format for `-data` (`{"entries":[{"spiffe_id":..,"parent_id":..,"selectors":[{"type":..,
 * "value":..}],...}]}`).
 *
 * `-data` keys are matched as Go's encoding/json matches them (case-insensitively), and also
 * with underscores ignored, so `spiffe_id`, `spiffeId` and `spiffeID` all work. Known keys:
 * entry_id (or id), spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl, ttl
 * (deprecated: the X509-SVID TTL), dns_names, federates_with, admin, downstream, hint,
 * entryExpiry (or expires_at); revision_number and created_at are accepted and ignored.
 * Any other key is an error naming it.
 */
import { field, goTimeString } from '../../common/output.js';
import { Entry, type Selector } from '../../proto/gen/spindle/types/v1/types.js';
import { CliError } from './errors.js';

const W = 17;

/** SPIRE's `printEntry` block, blank line included. */
export function formatEntry(e: Entry): string {
  let s = '';
  s += field('Entry ID', e.id === '' ? '(none)' : e.id, W);
  s += field('SPIFFE ID', e.spiffeId, W);
  s += field('Parent ID', e.parentId, W);
  s += field('Revision', e.revisionNumber.toString(), W);
  if (e.downstream) s += field('Downstream', true, W);
  s += field('X509-SVID TTL', e.x509SvidTtl === 0 ? 'default' : e.x509SvidTtl, W);
  s += field('JWT-SVID TTL', e.jwtSvidTtl === 0 ? 'default' : e.jwtSvidTtl, W);
  if (e.expiresAt !== 0n) s += field('Expiration time', goTimeString(e.expiresAt), W);
  for (const sel of e.selectors) s += field('Selector', `${sel.type}:${sel.value}`, W);
  for (const td of e.federatesWith) s += field('FederatesWith', td, W);
  for (const d of e.dnsNames) s += field('DNS name', d, W);
  if (e.admin) s += field('Admin', true, W);
  if (e.hint !== '') s += field('Hint', e.hint, W);
  return `${s}\n`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function selectorsText(e: Entry): string {
  return e.selectors.map((s) => `${s.type}:${s.value}`).join(',');
}

/** SPIRE's display order: SPIFFE ID, parent ID, selectors, then entry ID. */
export function sortEntries(entries: Entry[]): Entry[] {
  return entries.sort(
    (a, b) => cmp(a.spiffeId, b.spiffeId) || cmp(a.parentId, b.parentId) || cmp(selectorsText(a), selectorsText(b)) || cmp(a.id, b.id),
  );
}

type Setter = (e: Entry, v: unknown, where: string) => void;

function str(v: unknown, where: string): string {
  if (typeof v !== 'string') throw new CliError(`${where}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function int(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new CliError(`${where}: expected an integer, got ${JSON.stringify(v)}`);
  return v;
}

function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw new CliError(`${where}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function strings(v: unknown, where: string): string[] {
  if (!Array.isArray(v)) throw new CliError(`${where}: expected a list of strings`);
  return v.map((x, i) => str(x, `${where}[${i}]`));
}

function selectors(v: unknown, where: string): Selector[] {
  if (!Array.isArray(v)) throw new CliError(`${where}: expected a list of {"type": ..., "value": ...}`);
  return v.map((s, i) => {
    const w = `${where}[${i}]`;
    if (typeof s === 'string') {
      const colon = s.indexOf(':');
      if (colon === -1) throw new CliError(`${w}: selector ${JSON.stringify(s)} must be formatted as type:value`);
      return { type: s.slice(0, colon), value: s.slice(colon + 1) };
    }
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new CliError(`${w}: expected {"type": ..., "value": ...}`);
    const rec = s as Record<string, unknown>;
    for (const k of Object.keys(rec)) {
      if (k.toLowerCase() !== 'type' && k.toLowerCase() !== 'value') throw new CliError(`${w}: unknown selector key ${JSON.stringify(k)}`);
    }
    const type = Object.entries(rec).find(([k]) => k.toLowerCase() === 'type')?.[1];
    const value = Object.entries(rec).find(([k]) => k.toLowerCase() === 'value')?.[1];
    return { type: str(type ?? '', `${w}.type`), value: str(value ?? '', `${w}.value`) };
  });
}

/** Folded key (lowercase, no underscores) -> setter. */
const KEYS: Record<string, Setter> = {
  entryid: (e, v, w) => void (e.id = str(v, w)),
  id: (e, v, w) => void (e.id = str(v, w)),
  spiffeid: (e, v, w) => void (e.spiffeId = str(v, w)),
  parentid: (e, v, w) => void (e.parentId = str(v, w)),
  selectors: (e, v, w) => void (e.selectors = selectors(v, w)),
  x509svidttl: (e, v, w) => void (e.x509SvidTtl = int(v, w)),
  jwtsvidttl: (e, v, w) => void (e.jwtSvidTtl = int(v, w)),
  dnsnames: (e, v, w) => void (e.dnsNames = strings(v, w)),
  federateswith: (e, v, w) => void (e.federatesWith = strings(v, w)),
  admin: (e, v, w) => void (e.admin = bool(v, w)),
  downstream: (e, v, w) => void (e.downstream = bool(v, w)),
  hint: (e, v, w) => void (e.hint = str(v, w)),
  entryexpiry: (e, v, w) => void (e.expiresAt = BigInt(int(v, w))),
  expiresat: (e, v, w) => void (e.expiresAt = BigInt(int(v, w))),
  revisionnumber: () => undefined,
  createdat: () => undefined,
};

/** Parses SPIRE's `-data` batch JSON into entries; errors name the file, entry index and key. */
export function parseEntriesJson(text: string, source: string): Entry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${source}: invalid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new CliError(`${source}: expected a JSON object {"entries": [...]}`);
  }
  const top = doc as Record<string, unknown>;
  for (const k of Object.keys(top)) {
    if (k.toLowerCase() !== 'entries') throw new CliError(`${source}: unknown key ${JSON.stringify(k)} (expected {"entries": [...]})`);
  }
  const list = Object.entries(top).find(([k]) => k.toLowerCase() === 'entries')?.[1];
  if (!Array.isArray(list)) throw new CliError(`${source}: "entries" must be a list of entries`);
  if (list.length === 0) throw new CliError(`${source}: "entries" is empty`);
  return list.map((raw, i) => {
    const where = `${source}: entries[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CliError(`${where}: expected an object`);
    const e = Entry.fromPartial({});
    let ttl: number | undefined;
    let x509Set = false;
    for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
      const folded = key.toLowerCase().replace(/_/g, '');
      if (folded === 'ttl') {
        ttl = int(value, `${where}.${key}`);
        continue;
      }
      if (folded === 'storesvid') {
        if (value === true) throw new CliError(`${where}.${key}: store_svid is not supported by Spindle`);
        continue;
      }
      const set = KEYS[folded];
      if (set === undefined) throw new CliError(`${where}: unknown key ${JSON.stringify(key)}`);
      if (value === null) continue;
      set(e, value, `${where}.${key}`);
      if (folded === 'x509svidttl') x509Set = true;
    }
    if (ttl !== undefined && !x509Set) e.x509SvidTtl = ttl;
    return e;
  });
}

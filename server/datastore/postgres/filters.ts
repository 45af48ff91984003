/**
 * PostgreSQL: checked filters (../filters.ts) -> WHERE clauses with numbered placeholders.
 * Filter lists are bound as text arrays and expanded with unnest, so a statement's text depends
 * only on which filters are present, never on their values. The only text spliced into SQL is
 * chosen here (column names, true/false).
 */
import type { SelectorMatch } from '../types.js';
import type { CheckedEntryFilter, CheckedNodeFilter, CheckedSelectorFilter } from '../filters.js';
import { selectorsStorageKey } from './encoding.js';

export class Where {
  readonly clauses: string[] = [];
  readonly params: unknown[] = [];
  /** A placeholder bound to `v`. */
  p(v: unknown): string {
    this.params.push(v);
    return `$${this.params.length}`;
  }
  sql(): string {
    return this.clauses.length === 0 ? '' : ` WHERE ${this.clauses.map((c) => `(${c})`).join(' AND ')}`;
  }
}

interface SetMatchSql {
  alias: string;
  /** Owner key in the outer query and in the child table. */
  owner: string;
  child: string;
  childOwner: string;
  ownerTable: string;
  ownerKey: string;
  countColumn: string;
  /** Canonical-key column for exact match, when the owner has one. */
  keyColumn?: string;
  /** Selector pairs (true) or single strings (trust domains, false). */
  pairs: boolean;
}

const ENTRY_SELECTORS: SetMatchSql = {
  alias: 'e', owner: 'e.pk', child: 'entry_selectors', childOwner: 'entry_pk', ownerTable: 'entries', ownerKey: 'pk',
  countColumn: 'selector_count', keyColumn: 'selectors_key', pairs: true,
};
const ENTRY_FEDERATES: SetMatchSql = {
  alias: 'e', owner: 'e.pk', child: 'entry_federates_with', childOwner: 'entry_pk', ownerTable: 'entries', ownerKey: 'pk',
  countColumn: 'federates_count', pairs: false,
};
const NODE_SELECTORS: SetMatchSql = {
  alias: 'n', owner: 'n.spiffe_id', child: 'node_selectors', childOwner: 'spiffe_id', ownerTable: 'attested_nodes', ownerKey: 'spiffe_id',
  countColumn: 'selector_count', keyColumn: 'selectors_key', pairs: true,
};

/** `items`: [type, value] pairs or strings, normalised (sorted, unique); `key`: canonical key. */
function addSetMatch(w: Where, m: SetMatchSql, match: SelectorMatch, items: Array<[string, string]> | string[], key: string): void {
  const count = items.length;
  const hits = (): string =>
    m.pairs
      ? `SELECT s.${m.childOwner} FROM unnest(${w.p((items as Array<[string, string]>).map((i) => i[0]))}::text[], ` +
        `${w.p((items as Array<[string, string]>).map((i) => i[1]))}::text[]) AS j(type, value) ` +
        `JOIN ${m.child} s ON s.type = j.type AND s.value = j.value`
      : `SELECT s.${m.childOwner} FROM unnest(${w.p(items)}::text[]) AS j(td) JOIN ${m.child} s ON s.trust_domain = j.td`;
  switch (match) {
    case 'exact':
      if (m.keyColumn !== undefined) w.clauses.push(`${m.alias}.${m.keyColumn} = ${w.p(key)}`);
      else if (count === 0) w.clauses.push(`${m.alias}.${m.countColumn} = 0`);
      else {
        const c = w.p(count);
        w.clauses.push(`${m.alias}.${m.countColumn} = ${c} AND ${m.owner} IN (${hits()} GROUP BY s.${m.childOwner} HAVING count(*) = ${c})`);
      }
      return;
    case 'superset':
      if (count === 0) return; // every set contains the empty set
      w.clauses.push(`${m.owner} IN (${hits()} GROUP BY s.${m.childOwner} HAVING count(*) = ${w.p(count)})`);
      return;
    case 'any':
      w.clauses.push(count === 0 ? 'false' : `${m.owner} IN (${hits()})`);
      return;
    case 'subset':
      if (count === 0) {
        w.clauses.push('false'); // owners without members never match subset (../filters.ts)
        return;
      }
      w.clauses.push(
        `${m.owner} IN (${hits()} GROUP BY s.${m.childOwner} HAVING count(*) = ` +
          `(SELECT x.${m.countColumn} FROM ${m.ownerTable} x WHERE x.${m.ownerKey} = s.${m.childOwner}))`,
      );
      return;
  }
}

function addSelectorFilter(w: Where, m: SetMatchSql, f: CheckedSelectorFilter): void {
  addSetMatch(w, m, f.match, f.selectors.map((s): [string, string] => [s.type, s.value]), selectorsStorageKey(f.selectors));
}

export function entryWhere(filter: CheckedEntryFilter): Where {
  const w = new Where();
  if (filter.bySpiffeId !== undefined) w.clauses.push(`e.spiffe_id = ${w.p(filter.bySpiffeId)}`);
  if (filter.byParentId !== undefined) w.clauses.push(`e.parent_id = ${w.p(filter.byParentId)}`);
  if (filter.byHint !== undefined) w.clauses.push(`e.hint = ${w.p(filter.byHint)}`);
  if (filter.byDownstream !== undefined) w.clauses.push(filter.byDownstream ? 'e.downstream' : 'NOT e.downstream');
  if (filter.bySelectors !== undefined) addSelectorFilter(w, ENTRY_SELECTORS, filter.bySelectors);
  if (filter.byFederatesWith !== undefined) {
    const { trustDomains, match } = filter.byFederatesWith;
    addSetMatch(w, ENTRY_FEDERATES, match, trustDomains, JSON.stringify(trustDomains));
  }
  return w;
}

export function nodeWhere(filter: CheckedNodeFilter): Where {
  const w = new Where();
  if (filter.byAttestationType !== undefined) w.clauses.push(`n.attestation_type = ${w.p(filter.byAttestationType)}`);
  if (filter.byBanned !== undefined) w.clauses.push(filter.byBanned ? 'n.banned' : 'NOT n.banned');
  if (filter.byExpiresBefore !== undefined) w.clauses.push(`n.cert_not_after < ${w.p(filter.byExpiresBefore)}`);
  if (filter.byCanReattest !== undefined) w.clauses.push(filter.byCanReattest ? 'n.can_reattest' : 'NOT n.can_reattest');
  if (filter.bySelectors !== undefined) addSelectorFilter(w, NODE_SELECTORS, filter.bySelectors);
  return w;
}

/**
 * SQLite: checked filters (../filters.ts) -> WHERE clauses. Clauses use `?` placeholders only;
 * params are bound in order. Filter lists (selectors, trust domains) are bound as ONE JSON text
 * parameter and expanded with `json_each`, so a statement's text depends only on which filters
 * are present, never on their values: statements are prepared once and cached. The only values
 * spliced into SQL are literals chosen here (0/1 for booleans).
 */
import type { SelectorMatch } from '../types.js';
import type { CheckedEntryFilter, CheckedNodeFilter, CheckedSelectorFilter } from '../filters.js';
import { selectorsStorageKey } from './encoding.js';

export interface Where {
  clauses: string[];
  params: Array<string | number>;
}

interface SetMatchSql {
  /** Owner key expression in the outer query (e.id / n.spiffe_id). */
  owner: string;
  /** Child table, its owner column, and the join condition against json_each row `j`. */
  child: string;
  childOwner: string;
  join: string;
  /** Owner table / key / count column, for subset's per-owner count. */
  ownerTable: string;
  ownerKey: string;
  countColumn: string;
  /** Canonical-key column for exact match, when the owner has one. */
  keyColumn?: string;
}

const ENTRY_SELECTORS_SQL: SetMatchSql = {
  owner: 'e.pk',
  child: 'entry_selectors',
  childOwner: 'entry_pk',
  join: 's.type = j.value ->> 0 AND s.value = j.value ->> 1',
  ownerTable: 'entries',
  ownerKey: 'pk',
  countColumn: 'selector_count',
  keyColumn: 'selectors_key',
};
const ENTRY_FEDERATES_SQL: SetMatchSql = {
  owner: 'e.pk',
  child: 'entry_federates_with',
  childOwner: 'entry_pk',
  join: 's.trust_domain = j.value',
  ownerTable: 'entries',
  ownerKey: 'pk',
  countColumn: 'federates_count',
};
const NODE_SELECTORS_SQL: SetMatchSql = {
  owner: 'n.spiffe_id',
  child: 'node_selectors',
  childOwner: 'spiffe_id',
  join: 's.type = j.value ->> 0 AND s.value = j.value ->> 1',
  ownerTable: 'attested_nodes',
  ownerKey: 'spiffe_id',
  countColumn: 'selector_count',
  keyColumn: 'selectors_key',
};

/**
 * Adds the clause for a set match. `items` is normalised (sorted, unique); `json` is its JSON
 * (array of [type, value] pairs or of strings, as `m.join` expects); `key` its canonical key.
 */
function addSetMatch(w: Where, m: SetMatchSql, match: SelectorMatch, count: number, json: string, key: string): void {
  const alias = m.owner.slice(0, m.owner.indexOf('.'));
  // CROSS JOIN pins json_each as the outer loop, so each given member is one index lookup. Left
  // to itself the planner may scan the whole child table to get GROUP BY order for free.
  const hits = `SELECT s.${m.childOwner} FROM json_each(?) j CROSS JOIN ${m.child} s ON ${m.join}`;
  switch (match) {
    case 'exact':
      if (m.keyColumn !== undefined) {
        w.clauses.push(`${alias}.${m.keyColumn} = ?`);
        w.params.push(key);
      } else if (count === 0) {
        w.clauses.push(`${alias}.${m.countColumn} = 0`);
      } else {
        w.clauses.push(`${alias}.${m.countColumn} = ? AND ${m.owner} IN (${hits} GROUP BY s.${m.childOwner} HAVING count(*) = ?)`);
        w.params.push(count, json, count);
      }
      return;
    case 'superset':
      if (count === 0) return; // every set contains the empty set
      w.clauses.push(`${m.owner} IN (${hits} GROUP BY s.${m.childOwner} HAVING count(*) = ?)`);
      w.params.push(json, count);
      return;
    case 'any':
      if (count === 0) {
        w.clauses.push('0');
        return;
      }
      w.clauses.push(`${m.owner} IN (${hits})`);
      w.params.push(json);
      return;
    case 'subset':
      if (count === 0) {
        w.clauses.push('0'); // owners without members never match subset (../filters.ts)
        return;
      }
      // Driven from the (type, value) index: candidates having any given member, kept when the
      // number of their members found equals their member count.
      w.clauses.push(
        `${m.owner} IN (${hits} GROUP BY s.${m.childOwner} HAVING count(*) = ` +
          `(SELECT x.${m.countColumn} FROM ${m.ownerTable} x WHERE x.${m.ownerKey} = s.${m.childOwner}))`,
      );
      w.params.push(json);
      return;
  }
}

function addSelectorFilter(w: Where, m: SetMatchSql, f: CheckedSelectorFilter): void {
  const key = selectorsStorageKey(f.selectors);
  addSetMatch(w, m, f.match, f.selectors.length, key, key);
}

export function entryWhere(filter: CheckedEntryFilter): Where {
  const w: Where = { clauses: [], params: [] };
  if (filter.bySpiffeId !== undefined) {
    w.clauses.push('e.spiffe_id = ?');
    w.params.push(filter.bySpiffeId);
  }
  if (filter.byParentId !== undefined) {
    w.clauses.push('e.parent_id = ?');
    w.params.push(filter.byParentId);
  }
  if (filter.byHint !== undefined) {
    w.clauses.push('e.hint = ?');
    w.params.push(filter.byHint);
  }
  if (filter.byDownstream !== undefined) w.clauses.push(filter.byDownstream ? 'e.downstream = 1' : 'e.downstream = 0');
  if (filter.bySelectors !== undefined) addSelectorFilter(w, ENTRY_SELECTORS_SQL, filter.bySelectors);
  if (filter.byFederatesWith !== undefined) {
    const { trustDomains, match } = filter.byFederatesWith;
    const json = JSON.stringify(trustDomains);
    addSetMatch(w, ENTRY_FEDERATES_SQL, match, trustDomains.length, json, json);
  }
  return w;
}

export function nodeWhere(filter: CheckedNodeFilter): Where {
  const w: Where = { clauses: [], params: [] };
  if (filter.byAttestationType !== undefined) {
    w.clauses.push('n.attestation_type = ?');
    w.params.push(filter.byAttestationType);
  }
  if (filter.byBanned !== undefined) w.clauses.push(filter.byBanned ? 'n.banned = 1' : 'n.banned = 0');
  if (filter.byExpiresBefore !== undefined) {
    w.clauses.push('n.cert_not_after < ?');
    w.params.push(filter.byExpiresBefore);
  }
  if (filter.byCanReattest !== undefined) w.clauses.push(filter.byCanReattest ? 'n.can_reattest = 1' : 'n.can_reattest = 0');
  if (filter.bySelectors !== undefined) addSelectorFilter(w, NODE_SELECTORS_SQL, filter.bySelectors);
  return w;
}

export function whereSql(clauses: string[]): string {
  return clauses.length === 0 ? '' : ` WHERE ${clauses.map((c) => `(${c})`).join(' AND ')}`;
}

/**
 * The filters of listEntries / countEntries and listAttestedNodes / countAttestedNodes: their
 * checks and their meaning, shared by every backend. A backend turns the checked filter into its
 * query; it does not re-check it.
 *
 * Semantics (every backend must give the same answers; the contract tests in
 * test/datastore/contract.ts pin them):
 * - All given fields must hold (AND). An absent field does not filter.
 * - Selector matching: exact / superset / any are plain set semantics (superset of [] matches
 *   everything, any of [] nothing). subset only matches entries (nodes) that HAVE at least one
 *   selector: an entry without selectors is not served to every workload. The same rules apply
 *   to byFederatesWith (subset: entries that federate, and only with the given domains).
 * - Selectors compare by (type, value) exactly; trust domains as given (not parsed: a filter
 *   value that is not a trust domain simply matches nothing). Values are data: wildcard or quote
 *   characters have no meaning.
 */
import { checkBool, checkInt, checkString, describe, invalid, normalizeSelectors, normalizeStrings, sortedUnique } from './checks.js';
import type { EntryFilter, NodeFilter, Selector, SelectorMatch } from './types.js';

const MATCH_MODES: readonly SelectorMatch[] = ['exact', 'subset', 'superset', 'any'];

/** A selector set filter, its selectors sorted by (type, value) and deduplicated. */
export interface CheckedSelectorFilter {
  selectors: Selector[];
  match: SelectorMatch;
}

/** An EntryFilter after checkEntryFilter: types checked, lists normalised. */
export interface CheckedEntryFilter {
  bySpiffeId?: string;
  byParentId?: string;
  byHint?: string;
  byDownstream?: boolean;
  bySelectors?: CheckedSelectorFilter;
  /** Sorted by code point, deduplicated. */
  byFederatesWith?: { trustDomains: string[]; match: SelectorMatch };
}

/** A NodeFilter after checkNodeFilter. */
export interface CheckedNodeFilter {
  byAttestationType?: string;
  byBanned?: boolean;
  byExpiresBefore?: number;
  byCanReattest?: boolean;
  bySelectors?: CheckedSelectorFilter;
}

function checkMatch(match: unknown, what: string): SelectorMatch {
  if (!MATCH_MODES.includes(match as SelectorMatch)) {
    throw invalid(`${what}.match must be one of ${MATCH_MODES.join(', ')}, got ${describe(match)}`);
  }
  return match as SelectorMatch;
}

function checkSelectorFilter(f: { selectors: Selector[]; match: SelectorMatch }, what: string): CheckedSelectorFilter {
  if (typeof f !== 'object' || f === null) throw invalid(`${what} must be an object, got ${describe(f)}`);
  const match = checkMatch(f.match, what);
  return { match, selectors: normalizeSelectors(f.selectors, `${what}.selectors`) };
}

/** Checks an entry filter; throws DataStoreError('invalid') naming the bad field. */
export function checkEntryFilter(filter: EntryFilter | undefined): CheckedEntryFilter {
  const out: CheckedEntryFilter = {};
  if (filter === undefined) return out;
  if (typeof filter !== 'object' || filter === null) throw invalid(`entry filter must be an object, got ${describe(filter)}`);
  if (filter.bySpiffeId !== undefined) out.bySpiffeId = checkString(filter.bySpiffeId, 'bySpiffeId');
  if (filter.byParentId !== undefined) out.byParentId = checkString(filter.byParentId, 'byParentId');
  if (filter.byHint !== undefined) out.byHint = checkString(filter.byHint, 'byHint');
  if (filter.byDownstream !== undefined) out.byDownstream = checkBool(filter.byDownstream, 'byDownstream');
  if (filter.bySelectors !== undefined) out.bySelectors = checkSelectorFilter(filter.bySelectors, 'bySelectors');
  if (filter.byFederatesWith !== undefined) {
    const f = filter.byFederatesWith;
    if (typeof f !== 'object' || f === null) throw invalid(`byFederatesWith must be an object, got ${describe(f)}`);
    const match = checkMatch(f.match, 'byFederatesWith');
    out.byFederatesWith = { match, trustDomains: sortedUnique(normalizeStrings(f.trustDomains, 'byFederatesWith.trustDomains')) };
  }
  return out;
}

/** Checks an attested node filter; throws DataStoreError('invalid') naming the bad field. */
export function checkNodeFilter(filter: NodeFilter | undefined): CheckedNodeFilter {
  const out: CheckedNodeFilter = {};
  if (filter === undefined) return out;
  if (typeof filter !== 'object' || filter === null) throw invalid(`node filter must be an object, got ${describe(filter)}`);
  if (filter.byAttestationType !== undefined) out.byAttestationType = checkString(filter.byAttestationType, 'byAttestationType');
  if (filter.byBanned !== undefined) out.byBanned = checkBool(filter.byBanned, 'byBanned');
  if (filter.byExpiresBefore !== undefined) out.byExpiresBefore = checkInt(filter.byExpiresBefore, 'byExpiresBefore');
  if (filter.byCanReattest !== undefined) out.byCanReattest = checkBool(filter.byCanReattest, 'byCanReattest');
  if (filter.bySelectors !== undefined) out.bySelectors = checkSelectorFilter(filter.bySelectors, 'bySelectors');
  return out;
}

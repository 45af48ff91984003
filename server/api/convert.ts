/**
 * Conversions between the server APIs' protobuf messages and the datastore's types (the admin
 * API's requests and answers; entries for the agent API's sync stream too). Raw strings from the
 * wire are parsed here (IDs, trust domains, selectors); failures are INVALID_ARGUMENT errors
 * naming the request field.
 */
import { isMemberOf, parseSpiffeId, parseTrustDomain, pathOf, trustDomainOf, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { quote } from '../../spiffe/errors.js';
import {
  MatchBehavior,
  type AgentFilter as ProtoAgentFilter,
  type EntryFilter as ProtoEntryFilter,
  type SelectorMatch as ProtoSelectorMatch,
} from '../../proto/gen/spindle/admin/v1/admin.js';
import type { Agent, Entry, Selector as ProtoSelector } from '../../proto/gen/spindle/types/v1/types.js';
import type {
  AttestedNode,
  EntryFilter,
  NodeFilter,
  RegistrationEntry,
  Selector,
  SelectorMatch,
} from '../datastore/types.js';
import { validateSelector, type EntryInput } from '../entries/validate.js';
import { invalidArgument } from './errors.js';

/** Largest page a listing returns in one response (keeps messages well under gRPC's 4 MiB). */
export const MAX_PAGE_SIZE = 1000;

export function entryToProto(e: RegistrationEntry): Entry {
  return {
    id: e.id,
    spiffeId: e.spiffeId,
    parentId: e.parentId,
    selectors: e.selectors.map((s) => ({ type: s.type, value: s.value })),
    x509SvidTtl: e.x509SvidTtl,
    jwtSvidTtl: e.jwtSvidTtl,
    dnsNames: [...e.dnsNames],
    federatesWith: [...e.federatesWith],
    admin: e.admin,
    downstream: e.downstream,
    hint: e.hint,
    expiresAt: BigInt(e.entryExpiry),
    revisionNumber: BigInt(e.revisionNumber),
    createdAt: BigInt(e.createdAt),
    updatedAt: BigInt(e.updatedAt),
  };
}

/** int64 seconds to a number the validator can range-check (out-of-range stays out of range). */
function int64ToNumber(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER + 1;
  if (v < BigInt(Number.MIN_SAFE_INTEGER)) return -1;
  return Number(v);
}

/** The validator's input for an entry from the wire (validateNewEntry does every check). */
export function entryInputFromProto(e: Entry): EntryInput {
  return {
    id: e.id,
    spiffeId: e.spiffeId,
    parentId: e.parentId,
    selectors: e.selectors.map((s) => ({ type: s.type, value: s.value })),
    x509SvidTtl: e.x509SvidTtl,
    jwtSvidTtl: e.jwtSvidTtl,
    dnsNames: e.dnsNames,
    federatesWith: e.federatesWith,
    admin: e.admin,
    downstream: e.downstream,
    hint: e.hint,
    entryExpiry: int64ToNumber(e.expiresAt),
  };
}

export function agentToProto(n: AttestedNode): Agent {
  return {
    spiffeId: n.spiffeId,
    attestationType: n.attestationType,
    x509SvidSerialNumber: n.certSerial,
    x509SvidExpiresAt: BigInt(n.certNotAfter),
    selectors: n.selectors.map((s) => ({ type: s.type, value: s.value })),
    banned: n.banned,
    canReattest: n.canReattest,
    createdAt: BigInt(n.createdAt),
  };
}

/** Parses a SPIFFE ID from request field `field`; '' is "missing". */
export function parseIdField(raw: string, field: string): SpiffeId {
  if (raw === '') throw invalidArgument(`missing ${field}: a SPIFFE ID is required`);
  try {
    return parseSpiffeId(raw);
  } catch (err) {
    throw invalidArgument(`invalid ${field}: ${(err as Error).message}`, err);
  }
}

/** A SPIFFE ID of our trust domain with a non-root path. */
export function parseMemberIdField(raw: string, field: string, td: TrustDomain): SpiffeId {
  const id = parseIdField(raw, field);
  if (!isMemberOf(id, td)) {
    throw invalidArgument(`invalid ${field} ${quote(raw)}: must be in this server's trust domain "${td}", not "${trustDomainOf(id)}"`);
  }
  if (pathOf(id) === '') throw invalidArgument(`invalid ${field} ${quote(raw)}: must have a non-root path`);
  return id;
}

/** A workload ID: member of our trust domain, non-root path, outside SPIRE's reserved `/spire` namespace. */
export function parseWorkloadIdField(raw: string, field: string, td: TrustDomain): SpiffeId {
  const id = parseMemberIdField(raw, field, td);
  const path = pathOf(id);
  if (path === '/spire' || path.startsWith('/spire/')) {
    throw invalidArgument(`invalid ${field} ${quote(raw)}: the "/spire" namespace is reserved for agents and servers`);
  }
  return id;
}

export function parseTrustDomainField(raw: string, field: string): TrustDomain {
  if (raw === '') throw invalidArgument(`missing ${field}: a trust domain is required`);
  try {
    return parseTrustDomain(raw);
  } catch (err) {
    throw invalidArgument(`invalid ${field}: ${(err as Error).message}`, err);
  }
}

function matchOf(m: MatchBehavior, field: string): SelectorMatch {
  switch (m) {
    case MatchBehavior.MATCH_EXACT:
      return 'exact';
    case MatchBehavior.MATCH_SUBSET:
      return 'subset';
    case MatchBehavior.MATCH_SUPERSET:
      return 'superset';
    case MatchBehavior.MATCH_ANY:
      return 'any';
    default:
      throw invalidArgument(`invalid ${field}.match: unknown match behavior ${String(m)}`);
  }
}

function selectorsFilter(m: ProtoSelectorMatch, field: string): { selectors: Selector[]; match: SelectorMatch } {
  if (m.selectors.length === 0) throw invalidArgument(`invalid ${field}: at least one selector is required`);
  const selectors = m.selectors.map((s: ProtoSelector, i) => {
    try {
      return validateSelector({ type: s.type, value: s.value }, i);
    } catch (err) {
      throw invalidArgument(`invalid ${field}: ${(err as Error).message}`, err);
    }
  });
  return { selectors, match: matchOf(m.match, field) };
}

export function entryFilterFromProto(f: ProtoEntryFilter | undefined): EntryFilter {
  const out: EntryFilter = {};
  if (f === undefined) return out;
  if (f.bySpiffeId !== '') out.bySpiffeId = parseIdField(f.bySpiffeId, 'filter.by_spiffe_id');
  if (f.byParentId !== '') out.byParentId = parseIdField(f.byParentId, 'filter.by_parent_id');
  if (f.bySelectors !== undefined) out.bySelectors = selectorsFilter(f.bySelectors, 'filter.by_selectors');
  if (f.byFederatesWith !== undefined) {
    const fw = f.byFederatesWith;
    if (fw.trustDomains.length === 0) throw invalidArgument('invalid filter.by_federates_with: at least one trust domain is required');
    out.byFederatesWith = {
      trustDomains: fw.trustDomains.map((td, i) => parseTrustDomainField(td, `filter.by_federates_with.trust_domains[${i}]`)),
      match: matchOf(fw.match, 'filter.by_federates_with'),
    };
  }
  if (f.byHint !== '') out.byHint = f.byHint;
  if (f.byDownstream !== undefined) out.byDownstream = f.byDownstream;
  return out;
}

export function nodeFilterFromProto(f: ProtoAgentFilter | undefined): NodeFilter {
  const out: NodeFilter = {};
  if (f === undefined) return out;
  if (f.byAttestationType !== '') out.byAttestationType = f.byAttestationType;
  if (f.byBanned !== undefined) out.byBanned = f.byBanned;
  if (f.byCanReattest !== undefined) out.byCanReattest = f.byCanReattest;
  if (f.bySelectors !== undefined) out.bySelectors = selectorsFilter(f.bySelectors, 'filter.by_selectors');
  if (f.byExpiresBefore !== 0n) {
    if (f.byExpiresBefore < 0n || f.byExpiresBefore > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw invalidArgument(`invalid filter.by_expires_before ${f.byExpiresBefore}: expected unix seconds`);
    }
    out.byExpiresBefore = Number(f.byExpiresBefore);
  }
  return out;
}

export function pageFromProto(pageSize: number, pageToken: string): { size: number; token: string } {
  if (!Number.isInteger(pageSize) || pageSize < 0) throw invalidArgument(`invalid page_size ${pageSize}: must not be negative`);
  return { size: pageSize === 0 ? 0 : Math.min(pageSize, MAX_PAGE_SIZE), token: pageToken };
}

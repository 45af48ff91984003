/**
 * Request generators for every method of the four local/remote APIs, and mutators over their
 * encodings. A generator makes a structurally valid request (through the generated encoders)
 * whose values are drawn from hostile pools: dot segments, percent-encoding, NUL and control
 * characters, other trust domains, huge and negative numbers, SQL metacharacters, very long
 * strings, junk DER. Mutators then break the encoding: truncation, bit flips, wrong wire types,
 * lying length prefixes, duplicated or unknown fields, random bytes.
 *
 * Everything is driven by a seeded PRNG so a failing case can be replayed from its seed.
 */
import { JWTBundlesRequest, JWTSVIDRequest, ValidateJWTSVIDRequest, X509BundlesRequest, X509SVIDRequest } from '../../../proto/gen/workload/workload.js';
import { DiscoveryRequest } from '../../../proto/gen/envoy/service/discovery/v3/discovery.js';
import {
  AttestAgentRequest,
  BatchNewX509SVIDRequest,
  GetBundleRequest as AgentGetBundleRequest,
  NewJWTSVIDRequest,
  RenewAgentRequest,
  SyncAuthorizedRequest,
} from '../../../proto/gen/spindle/agent/v1/agent.js';
import {
  BanAgentRequest,
  BatchCreateEntryRequest,
  BatchDeleteEntryRequest,
  BatchDeleteFederatedBundleRequest,
  BatchSetFederatedBundleRequest,
  BatchUpdateEntryRequest,
  CountAgentsRequest,
  CountEntriesRequest,
  CreateJoinTokenRequest,
  DeleteAgentRequest,
  GetAgentRequest,
  GetBundleRequest as AdminGetBundleRequest,
  GetEntryRequest,
  GetFederatedBundleRequest,
  ListAgentsRequest,
  ListEntriesRequest,
  ListFederatedBundlesRequest,
  MintJWTSVIDRequest,
  MintX509SVIDRequest,
} from '../../../proto/gen/spindle/admin/v1/admin.js';
import type { Entry, Selector } from '../../../proto/gen/spindle/types/v1/types.js';
import { encodeVarint, encodeWire, encodeWireField, parseWire, type WireField } from './wire.js';

// ---------------------------------------------------------------------------------------------
// PRNG

/** A small, fast, seedable PRNG (mulberry32). */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(maxExclusive: number): number {
    return Math.floor(this.next() * maxExclusive);
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  list<T>(max: number, f: () => T): T[] {
    return Array.from({ length: this.int(max + 1) }, f);
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile value pools

const TD = 'example.org';

export const HOSTILE_IDS: readonly string[] = [
  `spiffe://${TD}/workload`,
  `spiffe://${TD}/a/../admin`,
  `spiffe://${TD}/./a`,
  `spiffe://${TD}/a/%2e%2e/b`,
  `spiffe://${TD}/a%2Fb`,
  `spiffe://${TD}/a//b`,
  `spiffe://${TD}/a/`,
  `spiffe://${TD}`,
  `spiffe://${TD}/spire/server`,
  `spiffe://${TD}/spire/agent/join_token/00000000-0000-4000-8000-000000000000`,
  `spiffe://${TD.toUpperCase()}/x`,
  `SPIFFE://${TD}/x`,
  `spiffe://other.org/workload`,
  `spiffe://${TD}:8080/x`,
  `spiffe://user@${TD}/x`,
  `spiffe://${TD}/x?q=1`,
  `spiffe://${TD}/x#frag`,
  `spiffe://${TD}/\u0000`,
  `spiffe://${TD}/é`,
  `spiffe:///x`,
  `https://${TD}/x`,
  `spiffe://${TD}/${'a'.repeat(2100)}`,
  `spiffe://${'a'.repeat(300)}/x`,
  '',
  ' ',
  `spiffe://${TD}/' OR '1'='1`,
];

export const HOSTILE_STRINGS: readonly string[] = [
  '',
  'a',
  ' ',
  '\u0000',
  '\u0000\u0001\u0002',
  "'; DROP TABLE entries; --",
  '" OR 1=1 --',
  '%',
  '_',
  '\\',
  '../../etc/passwd',
  '\u202e\u200b',
  '😀'.repeat(50),
  '\ud800', // lone surrogate
  'x'.repeat(70_000),
  'uid:0',
  'unix:uid:0',
  'default',
  'ROOTCA',
  'ALL',
  `spiffe://${TD}`,
  'spiffe://other.org',
  TD,
  'other.org',
  'join_token',
  'k8s_psat',
  '{"cluster":"c","token":"x"}',
  'eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy94In0.',
  'a.b.c',
  ...HOSTILE_IDS.slice(0, 8),
];

const SELECTOR_TYPES = ['unix', 'k8s', 'join_token', 'spiffe_id', '', ':', 'unix:uid', 'UNIX', 'x'.repeat(300), '\u0000'];
const SELECTOR_VALUES = ['uid:0', 'uid:', 'uid:-1', 'gid:0', ':', '', 'ns:default', 'uid:0\u0000', 'x'.repeat(70_000), "uid:0' OR '1'='1"];

export const HOSTILE_INTS: readonly number[] = [0, 1, -1, 59, 60, 3600, 2147483647, -2147483648, 86400 * 365 * 10];
const HOSTILE_BIGINTS: readonly bigint[] = [0n, 1n, 2n ** 63n - 1n, 2n ** 64n - 1n, -1n];

function str(r: Rng): string {
  if (r.bool(0.15)) return r.bytes(r.int(40)).toString('latin1');
  return r.pick(HOSTILE_STRINGS);
}
function id(r: Rng): string {
  return r.pick(HOSTILE_IDS);
}
function u32(r: Rng): number {
  return r.pick(HOSTILE_INTS);
}
function int64(r: Rng): bigint {
  const v = r.pick(HOSTILE_BIGINTS);
  return v > 2n ** 63n - 1n ? -1n : v;
}
function uint64(r: Rng): bigint {
  const v = r.pick(HOSTILE_BIGINTS);
  return v < 0n ? 0n : v;
}
/** Junk where DER is expected: empty, random, a truncated SEQUENCE, a huge declared length. */
function der(r: Rng): Buffer {
  return r.pick([
    () => Buffer.alloc(0),
    () => r.bytes(r.int(300)),
    () => Buffer.from([0x30, 0x82, 0xff, 0xff, 0x30]),
    () => Buffer.from([0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]),
    () => Buffer.concat([Buffer.from([0x30, 0x80]), r.bytes(20)]),
    () => Buffer.alloc(r.int(20_000), 0x30),
  ])();
}
function selector(r: Rng): Selector {
  return { type: r.pick(SELECTOR_TYPES), value: r.pick(SELECTOR_VALUES) };
}
function entry(r: Rng): Entry {
  return {
    id: r.bool(0.3) ? str(r) : '',
    spiffeId: id(r),
    parentId: id(r),
    selectors: r.list(4, () => selector(r)),
    x509SvidTtl: u32(r),
    jwtSvidTtl: u32(r),
    dnsNames: r.list(3, () => r.pick(['a.example.org', '*.example.org', '', '-bad-', 'x'.repeat(300), 'a..b', '\u0000', 'UPPER.example.org'])),
    federatesWith: r.list(3, () => r.pick(['other.org', TD, '', 'spiffe://other.org', 'Other.Org', '..', '\u0000'])),
    admin: r.bool(),
    downstream: r.bool(),
    hint: str(r),
    expiresAt: int64(r),
    revisionNumber: int64(r),
    createdAt: int64(r),
    updatedAt: int64(r),
  };
}
const MATCH = [0, 1, 2, 3, 7, -1];

// ---------------------------------------------------------------------------------------------
// Methods

export type ApiName = 'workload' | 'sds' | 'agent' | 'admin';

export interface FuzzMethod {
  api: ApiName;
  /** `/<service>/<Method>`. */
  path: string;
  kind: 'unary' | 'server-stream' | 'bidi';
  /** A structurally valid request with hostile values. */
  generate(r: Rng): Uint8Array;
}

const enc = <T>(fns: { encode(m: T): { finish(): Uint8Array } }, m: T): Uint8Array => fns.encode(m).finish();

export const METHODS: readonly FuzzMethod[] = [
  // Workload API
  { api: 'workload', path: '/SpiffeWorkloadAPI/FetchX509SVID', kind: 'server-stream', generate: () => enc(X509SVIDRequest, {}) },
  { api: 'workload', path: '/SpiffeWorkloadAPI/FetchX509Bundles', kind: 'server-stream', generate: () => enc(X509BundlesRequest, {}) },
  { api: 'workload', path: '/SpiffeWorkloadAPI/FetchJWTBundles', kind: 'server-stream', generate: () => enc(JWTBundlesRequest, {}) },
  {
    api: 'workload',
    path: '/SpiffeWorkloadAPI/FetchJWTSVID',
    kind: 'unary',
    generate: (r) => enc(JWTSVIDRequest, { audience: r.list(4, () => str(r)), spiffeId: r.bool(0.5) ? id(r) : '' }),
  },
  {
    api: 'workload',
    path: '/SpiffeWorkloadAPI/ValidateJWTSVID',
    kind: 'unary',
    generate: (r) => enc(ValidateJWTSVIDRequest, { audience: str(r), svid: r.bool(0.3) ? `${r.bytes(30).toString('base64url')}.${r.bytes(60).toString('base64url')}.${r.bytes(64).toString('base64url')}` : str(r) }),
  },
  // SDS
  ...(['StreamSecrets', 'FetchSecrets'] as const).map(
    (m): FuzzMethod => ({
      api: 'sds',
      path: `/envoy.service.secret.v3.SecretDiscoveryService/${m}`,
      kind: m === 'StreamSecrets' ? 'bidi' : 'unary',
      generate: (r) =>
        enc(DiscoveryRequest, {
          versionInfo: str(r),
          node: r.bool(0.5) ? { id: str(r), cluster: str(r), metadata: r.bool(0.3) ? { k: str(r), n: 1, nested: { a: [1, 'x', null] } } : undefined, userAgentName: str(r), userAgentVersionType: undefined } : undefined,
          resourceNames: r.list(5, () => r.pick([...HOSTILE_IDS.slice(0, 10), 'default', 'ROOTCA', 'ALL', '', 'spiffe://other.org', str(r)])),
          typeUrl: r.pick(['type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret', '', 'type.googleapis.com/x', str(r)]),
          responseNonce: str(r),
          errorDetail: r.bool(0.2) ? { code: u32(r), message: str(r), details: [] } : undefined,
        }),
    }),
  ),
  // Agent API
  {
    api: 'agent',
    path: '/spindle.agent.v1.AgentAPI/AttestAgent',
    kind: 'bidi',
    generate: (r) =>
      enc(
        AttestAgentRequest,
        r.bool(0.8)
          ? { step: { $case: 'params', value: { data: { type: r.pick(['join_token', 'k8s_psat', '', 'x', str(r)]), payload: r.bool(0.5) ? Buffer.from(str(r)) : r.bytes(r.int(100)) }, csr: der(r) } } }
          : { step: { $case: 'challengeResponse', value: r.bytes(r.int(100)) } },
      ),
  },
  { api: 'agent', path: '/spindle.agent.v1.AgentAPI/RenewAgent', kind: 'unary', generate: (r) => enc(RenewAgentRequest, { csr: der(r) }) },
  {
    api: 'agent',
    path: '/spindle.agent.v1.AgentAPI/SyncAuthorized',
    kind: 'server-stream',
    generate: (r) =>
      enc(SyncAuthorizedRequest, {
        sinceRevision: uint64(r),
        knownEntries: r.list(5, () => ({ id: str(r), revisionNumber: int64(r) })),
        knownBundleSequences: new Map(r.list(3, () => [r.pick([TD, 'other.org', '', str(r)]), uint64(r)] as [string, bigint])),
      }),
  },
  {
    api: 'agent',
    path: '/spindle.agent.v1.AgentAPI/BatchNewX509SVID',
    kind: 'unary',
    generate: (r) => enc(BatchNewX509SVIDRequest, { params: r.list(5, () => ({ entryId: str(r), csr: der(r) })) }),
  },
  { api: 'agent', path: '/spindle.agent.v1.AgentAPI/NewJWTSVID', kind: 'unary', generate: (r) => enc(NewJWTSVIDRequest, { entryId: str(r), audience: r.list(4, () => str(r)) }) },
  { api: 'agent', path: '/spindle.agent.v1.AgentAPI/GetBundle', kind: 'unary', generate: () => enc(AgentGetBundleRequest, {}) },
  // Admin API
  { api: 'admin', path: '/spindle.admin.v1.EntryService/BatchCreateEntry', kind: 'unary', generate: (r) => enc(BatchCreateEntryRequest, { entries: r.list(3, () => entry(r)) }) },
  { api: 'admin', path: '/spindle.admin.v1.EntryService/GetEntry', kind: 'unary', generate: (r) => enc(GetEntryRequest, { id: str(r) }) },
  ...(['ListEntries', 'CountEntries'] as const).map(
    (m): FuzzMethod => ({
      api: 'admin',
      path: `/spindle.admin.v1.EntryService/${m}`,
      kind: 'unary',
      generate: (r) => {
        const filter = r.bool(0.8)
          ? {
              bySpiffeId: r.bool() ? id(r) : '',
              byParentId: r.bool() ? id(r) : '',
              bySelectors: r.bool() ? { selectors: r.list(3, () => selector(r)), match: r.pick(MATCH) } : undefined,
              byFederatesWith: r.bool() ? { trustDomains: r.list(3, () => str(r)), match: r.pick(MATCH) } : undefined,
              byHint: r.bool() ? str(r) : '',
              byDownstream: r.bool() ? r.bool() : undefined,
            }
          : undefined;
        return m === 'ListEntries' ? enc(ListEntriesRequest, { filter, pageSize: u32(r), pageToken: r.bool() ? str(r) : '' }) : enc(CountEntriesRequest, { filter });
      },
    }),
  ),
  { api: 'admin', path: '/spindle.admin.v1.EntryService/BatchUpdateEntry', kind: 'unary', generate: (r) => enc(BatchUpdateEntryRequest, { entries: r.list(3, () => entry(r)) }) },
  { api: 'admin', path: '/spindle.admin.v1.EntryService/BatchDeleteEntry', kind: 'unary', generate: (r) => enc(BatchDeleteEntryRequest, { ids: r.list(5, () => str(r)) }) },
  ...(['ListAgents', 'CountAgents'] as const).map(
    (m): FuzzMethod => ({
      api: 'admin',
      path: `/spindle.admin.v1.AgentService/${m}`,
      kind: 'unary',
      generate: (r) => {
        const filter = r.bool(0.8)
          ? {
              byAttestationType: r.bool() ? str(r) : '',
              byBanned: r.bool() ? r.bool() : undefined,
              bySelectors: r.bool() ? { selectors: r.list(3, () => selector(r)), match: r.pick(MATCH) } : undefined,
              byCanReattest: r.bool() ? r.bool() : undefined,
              byExpiresBefore: int64(r),
            }
          : undefined;
        return m === 'ListAgents' ? enc(ListAgentsRequest, { filter, pageSize: u32(r), pageToken: r.bool() ? str(r) : '' }) : enc(CountAgentsRequest, { filter });
      },
    }),
  ),
  // GetAgent / DeleteAgent / BanAgent: IDs from the hostile pool only (never a real agent's).
  { api: 'admin', path: '/spindle.admin.v1.AgentService/GetAgent', kind: 'unary', generate: (r) => enc(GetAgentRequest, { id: id(r) }) },
  { api: 'admin', path: '/spindle.admin.v1.AgentService/DeleteAgent', kind: 'unary', generate: (r) => enc(DeleteAgentRequest, { id: id(r) }) },
  { api: 'admin', path: '/spindle.admin.v1.AgentService/BanAgent', kind: 'unary', generate: (r) => enc(BanAgentRequest, { id: id(r) }) },
  {
    api: 'admin',
    path: '/spindle.admin.v1.AgentService/CreateJoinToken',
    kind: 'unary',
    generate: (r) => enc(CreateJoinTokenRequest, { ttl: u32(r), agentAliasSpiffeId: r.bool() ? id(r) : '' }),
  },
  { api: 'admin', path: '/spindle.admin.v1.BundleService/GetBundle', kind: 'unary', generate: () => enc(AdminGetBundleRequest, {}) },
  { api: 'admin', path: '/spindle.admin.v1.BundleService/ListFederatedBundles', kind: 'unary', generate: () => enc(ListFederatedBundlesRequest, {}) },
  { api: 'admin', path: '/spindle.admin.v1.BundleService/GetFederatedBundle', kind: 'unary', generate: (r) => enc(GetFederatedBundleRequest, { trustDomain: str(r) }) },
  {
    api: 'admin',
    path: '/spindle.admin.v1.BundleService/BatchSetFederatedBundle',
    kind: 'unary',
    generate: (r) =>
      enc(BatchSetFederatedBundleRequest, {
        bundles: r.list(3, () => ({
          trustDomain: r.pick(['other.org', TD, '', 'Other.org', '..', str(r)]),
          document: r.pick([
            () => Buffer.from('{"keys":[]}'),
            () => Buffer.from('{"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}'),
            () => Buffer.from('{"keys":'.repeat(2000)),
            () => Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
            () => r.bytes(r.int(200)),
          ])(),
          sequence: uint64(r),
        })),
        pem: r.bool(),
      }),
  },
  { api: 'admin', path: '/spindle.admin.v1.BundleService/BatchDeleteFederatedBundle', kind: 'unary', generate: (r) => enc(BatchDeleteFederatedBundleRequest, { trustDomains: r.list(3, () => r.pick([TD, 'other.org', '', str(r)])) }) },
  {
    api: 'admin',
    path: '/spindle.admin.v1.SVIDService/MintX509SVID',
    kind: 'unary',
    generate: (r) => enc(MintX509SVIDRequest, { csr: der(r), spiffeId: id(r), ttl: u32(r), dnsNames: r.list(3, () => str(r)) }),
  },
  {
    api: 'admin',
    path: '/spindle.admin.v1.SVIDService/MintJWTSVID',
    kind: 'unary',
    generate: (r) => enc(MintJWTSVIDRequest, { spiffeId: id(r), audience: r.list(3, () => str(r)), ttl: u32(r) }),
  },
];

// ---------------------------------------------------------------------------------------------
// Mutators over an encoding

export type MutationName =
  | 'none'
  | 'truncate'
  | 'bitflip'
  | 'append_random'
  | 'random_bytes'
  | 'wrong_wire_type'
  | 'lying_length'
  | 'duplicate_field'
  | 'unknown_field'
  | 'deep_nesting'
  | 'huge_varint';

export const MUTATIONS: readonly MutationName[] = [
  'none', 'truncate', 'bitflip', 'append_random', 'random_bytes', 'wrong_wire_type', 'lying_length', 'duplicate_field', 'unknown_field', 'deep_nesting', 'huge_varint',
];

export function mutate(r: Rng, input: Uint8Array, m: MutationName): Buffer {
  const buf = Buffer.from(input);
  const fields = parseWire(buf) ?? [];
  switch (m) {
    case 'none':
      return buf;
    case 'truncate':
      return buf.subarray(0, buf.length === 0 ? 0 : r.int(buf.length));
    case 'bitflip': {
      const out = Buffer.from(buf.length === 0 ? r.bytes(4) : buf);
      for (let i = 0, n = 1 + r.int(4); i < n; i++) {
        const at = r.int(out.length);
        out[at] = out[at]! ^ (1 << r.int(8));
      }
      return out;
    }
    case 'append_random':
      return Buffer.concat([buf, r.bytes(1 + r.int(64))]);
    case 'random_bytes':
      return r.bytes(r.int(256));
    case 'wrong_wire_type': {
      if (fields.length === 0) return Buffer.concat([encodeVarint((1n << 3n) | BigInt(r.pick([1, 3, 4, 5, 6, 7]))), r.bytes(8)]);
      const f = r.pick(fields);
      const wt = r.pick([0, 1, 2, 5].filter((w) => w !== f.wireType));
      return encodeWire(fields.map((g) => (g === f ? { ...g, wireType: wt } : g)));
    }
    case 'lying_length': {
      const lds = fields.filter((f) => f.wireType === 2);
      if (lds.length === 0) return Buffer.concat([buf, encodeVarint((15n << 3n) | 2n), encodeVarint(0xffffffffn), r.bytes(3)]);
      const f = r.pick(lds);
      return Buffer.concat(fields.map((g) => (g === f ? encodeWireField(g, { declaredLength: g.value.length + 1 + r.int(1 << 20) }) : encodeWireField(g))));
    }
    case 'duplicate_field':
      return fields.length === 0 ? buf : Buffer.concat([buf, encodeWireField(r.pick(fields))]);
    case 'unknown_field': {
      const f: WireField = { field: 1000 + r.int(500_000), wireType: r.pick([0, 2, 5]), value: Buffer.alloc(0) };
      f.value = f.wireType === 0 ? encodeVarint(r.int(1 << 30)) : f.wireType === 5 ? r.bytes(4) : r.bytes(r.int(32));
      return Buffer.concat([buf, encodeWireField(f)]);
    }
    case 'deep_nesting': {
      // Field 1 length-delimited inside itself, many levels deep: a recursion bomb for decoders
      // that descend into every submessage.
      let inner: Buffer = r.bytes(2);
      for (let i = 0; i < 2000; i++) inner = encodeWireField({ field: 1, wireType: 2, value: inner });
      return inner;
    }
    case 'huge_varint':
      return Buffer.concat([buf, encodeVarint((2n << 3n) | 0n), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])]);
  }
}

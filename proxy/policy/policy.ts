/**
 * spindle-proxy's access policy: the YAML format (docs/proxy-policy.md), its strict parser and
 * the compiled `Policy`, a `PolicyDecider` (proxy/decision.ts).
 *
 * Semantics (Istio's AuthorizationPolicy, in SPIFFE terms):
 * - DENY rules are evaluated before ALLOW rules; within an action the first matching rule in
 *   file order decides. When no rule matches, the request is denied (`default-deny`); there is
 *   no default-allow setting.
 * - A rule matches when every part it has matches: `listeners`, `from`, `to`, `when`. A missing
 *   part matches anything. Inside a part, the lists of one field are alternatives (any of),
 *   `not_*` fields exclude, and different fields must all hold (`methods` and `paths`).
 * - `from`: the caller's SPIFFE ID (from its X509-SVID) is one of `ids`, a member of one of
 *   `trust_domains`, or matches one of `id_patterns`; and is none of `not_ids`,
 *   `not_trust_domains`, `not_id_patterns`. A `from` with only `not_*` fields matches every
 *   caller not excluded, callers without an SVID included (as Istio's notPrincipals).
 * - TCP connections (facts without a method) have no method, path or bearer token: an ALLOW rule
 *   with `to` or `when` never matches them, and a DENY rule with `to` or `when` matches them on
 *   its other parts alone (fail closed, as Istio does with HTTP-only fields in DENY policies).
 * - On a listener where some rule looks at paths, a request path that is not normalized
 *   (`//`, `.` or `..` segments, percent-encoded `.`, `/` or `\`) is denied before any rule.
 * - `mode: dry-run`: decisions are computed and reported (`wouldAllow`, `rule`, `reason`), but
 *   `allow` is always true.
 *
 * decide() does no parsing and no allocation on the allow path: per listener the rules are
 * pre-filtered, per caller ID the rules whose `from` matches are memoized (bounded), and those
 * are indexed by the leading path segments their `paths` fix (`PathIndex`), so a request only
 * visits the rules its path can match.
 */
import { readFileSync } from 'node:fs';
import type { Decision, PolicyDecider, RequestFacts } from '../decision.js';
import { isSpiffeError } from '../../spiffe/errors.js';
import { parseSpiffeId } from '../../spiffe/id.js';
import { checkTrustDomain, compileIdPattern, compilePathPattern, leadingKeys, pathNotNormal, trustDomainOfId, type IdPattern, type PathPattern } from './patterns.js';
import { PolicyError, YamlFile, type Entry, type YNode } from './source.js';

export type PolicyMode = 'enforce' | 'dry-run';
export type RuleAction = 'ALLOW' | 'DENY';
export type ListenerProtocol = 'http' | 'tcp';

/** The rule name in decisions when no rule matched. */
export const DEFAULT_DENY = 'default-deny';

/** Where something was written: 1-based line and column. */
export interface Position {
  line: number;
  col: number;
}

export interface ListenerDecl {
  name: string;
  protocol?: ListenerProtocol;
  sensitive: boolean;
  description?: string;
  at: Position;
}

export interface SourceSpec {
  ids?: readonly string[];
  trustDomains?: readonly string[];
  idPatterns?: readonly IdPattern[];
  notIds?: readonly string[];
  notTrustDomains?: readonly string[];
  notIdPatterns?: readonly IdPattern[];
}

export interface OperationSpec {
  methods?: readonly string[];
  notMethods?: readonly string[];
  paths?: readonly PathPattern[];
  notPaths?: readonly PathPattern[];
}

export interface JwtSpec {
  audiences: readonly string[];
  issuer?: string;
  subjects?: readonly string[];
  /** Claim name to accepted values. */
  claims?: ReadonlyMap<string, readonly string[]>;
}

/** One rule as written (patterns compiled), with its position. */
export interface RuleSpec {
  name: string;
  description?: string;
  action: RuleAction;
  /** Undefined: every listener. */
  listeners?: readonly string[];
  from?: SourceSpec;
  to?: OperationSpec;
  when?: { jwt: JwtSpec };
  /** Position of the rule's list item. */
  at: Position;
  /** 0-based position in the file's rule list. */
  index: number;
}

const TOP_KEYS = ['mode', 'listeners', 'rules'] as const;
const LISTENER_KEYS = ['name', 'protocol', 'sensitive', 'description'] as const;
const RULE_KEYS = ['name', 'description', 'action', 'listeners', 'from', 'to', 'when'] as const;
const FROM_KEYS = ['ids', 'trust_domains', 'id_patterns', 'not_ids', 'not_trust_domains', 'not_id_patterns'] as const;
const TO_KEYS = ['methods', 'paths', 'not_methods', 'not_paths'] as const;
const WHEN_KEYS = ['jwt'] as const;
const JWT_KEYS = ['audiences', 'issuer', 'subjects', 'claims'] as const;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const METHOD_RE = /^[A-Z][A-Z0-9_-]*$/;

/** Why `s` is not a caller's SPIFFE ID (one with a path), or undefined. */
function checkLeafId(s: string): string | undefined {
  try {
    parseSpiffeId(s);
  } catch (err) {
    if (isSpiffeError(err)) return err.message;
    throw err;
  }
  if (s.indexOf('/', 'spiffe://'.length) === -1) return `${JSON.stringify(s)} names a trust domain, not a workload (use trust_domains)`;
  return undefined;
}

function checkMethod(s: string): string | undefined {
  if (METHOD_RE.test(s)) return undefined;
  if (METHOD_RE.test(s.toUpperCase())) return `method ${JSON.stringify(s)} must be upper case (${s.toUpperCase()})`;
  return `method ${JSON.stringify(s)} is not an HTTP method name`;
}

/** Reads and validates a policy file's text into rules and listeners (every problem collected). */
function readPolicy(f: YamlFile): { mode: PolicyMode; listeners?: Map<string, ListenerDecl>; rules: RuleSpec[] } | undefined {
  const root = f.root();
  if (root === undefined) return undefined;
  const top = f.map(root, 'the policy', TOP_KEYS);
  if (top === undefined) return undefined;
  let mode: PolicyMode = 'enforce';
  const modeEntry = top.get('mode');
  if (modeEntry !== undefined) {
    const m = f.string(modeEntry.value, 'mode');
    if (m === 'enforce' || m === 'dry-run') mode = m;
    else if (m !== undefined) f.problem(modeEntry.value, `mode must be enforce or dry-run, got ${JSON.stringify(m)}`);
  }
  let listeners: Map<string, ListenerDecl> | undefined;
  const lEntry = top.get('listeners');
  if (lEntry !== undefined) listeners = readListeners(f, lEntry.value);
  const rEntry = top.get('rules');
  if (rEntry === undefined) {
    f.problem(root, 'the policy has no rules: list them under rules (an empty policy would deny everything)');
    return undefined;
  }
  const items = f.list(rEntry.value, 'rules');
  if (items === undefined) return undefined;
  const rules: RuleSpec[] = [];
  const names = new Map<string, Position>();
  items.forEach((item, index) => {
    const { name, rule } = readRule(f, item, index, listeners);
    if (name === undefined) return;
    const first = names.get(name);
    if (first !== undefined) {
      f.problem(item, `duplicate rule name (first at ${f.file}:${first.line}:${first.col})`, name);
      return;
    }
    names.set(name, f.pos(item));
    if (rule !== undefined) rules.push(rule);
  });
  return { mode, ...(listeners !== undefined ? { listeners } : {}), rules };
}

function readListeners(f: YamlFile, node: YNode | null): Map<string, ListenerDecl> | undefined {
  const items = f.list(node, 'listeners');
  if (items === undefined) return undefined;
  const out = new Map<string, ListenerDecl>();
  for (const item of items) {
    const m = f.map(item, 'listener', LISTENER_KEYS);
    if (m === undefined) continue;
    const nameEntry = m.get('name');
    if (nameEntry === undefined) {
      f.problem(item, 'listener needs a name');
      continue;
    }
    const name = f.string(nameEntry.value, 'listener name');
    if (name === undefined) continue;
    if (!NAME_RE.test(name)) {
      f.problem(nameEntry.value, `listener name ${JSON.stringify(name)} may contain only letters, digits, ".", "-" and "_"`);
      continue;
    }
    const decl: ListenerDecl = { name, sensitive: false, at: f.pos(item) };
    const p = m.get('protocol');
    if (p !== undefined) {
      const v = f.string(p.value, `listener ${name}: protocol`);
      if (v === 'http' || v === 'tcp') decl.protocol = v;
      else if (v !== undefined) f.problem(p.value, `listener ${name}: protocol must be http or tcp, got ${JSON.stringify(v)}`);
    }
    const s = m.get('sensitive');
    if (s !== undefined) decl.sensitive = f.boolean(s.value, `listener ${name}: sensitive`) ?? false;
    const d = m.get('description');
    if (d !== undefined) {
      const v = f.string(d.value, `listener ${name}: description`);
      if (v !== undefined) decl.description = v;
    }
    if (out.has(name)) f.problem(item, `listener ${name} is declared twice`);
    else out.set(name, decl);
  }
  return out;
}

/** One rule: its name when it has a valid one, and the rule when it has no problem at all. */
function readRule(f: YamlFile, item: YNode, index: number, listeners: Map<string, ListenerDecl> | undefined): { name?: string; rule?: RuleSpec } {
  const before = f.problems.length;
  const m = f.map(item, `rule ${index + 1}`, RULE_KEYS);
  if (m === undefined) return {};
  const nameEntry = m.get('name');
  let name: string | undefined;
  if (nameEntry === undefined) f.problem(item, `rule ${index + 1} needs a name`);
  else {
    name = f.string(nameEntry.value, `rule ${index + 1}: name`);
    if (name !== undefined && !NAME_RE.test(name)) {
      f.problem(nameEntry.value, `rule name ${JSON.stringify(name)} may contain only letters, digits, ".", "-" and "_" (at most 128)`);
      name = undefined;
    } else if (name === DEFAULT_DENY) {
      f.problem(nameEntry.value, `rule name ${DEFAULT_DENY} is reserved for the decision when no rule matches`);
      name = undefined;
    }
  }
  const label = name ?? `#${index + 1}`;
  const rule: Partial<RuleSpec> = { at: f.pos(item), index };
  const actionEntry = m.get('action');
  if (actionEntry === undefined) f.problem(item, 'action is required (ALLOW or DENY)', label);
  else {
    const a = f.string(actionEntry.value, 'action', label);
    if (a === 'ALLOW' || a === 'DENY') rule.action = a;
    else if (a !== undefined) f.problem(actionEntry.value, `action must be ALLOW or DENY, got ${JSON.stringify(a)}`, label);
  }
  const d = m.get('description');
  if (d !== undefined) {
    const v = f.string(d.value, 'description', label);
    if (v !== undefined) rule.description = v;
  }
  const l = m.get('listeners');
  if (l !== undefined) {
    const names = f.stringList(l.value, 'listeners', label, (s) => {
      if (!NAME_RE.test(s)) return `listener name ${JSON.stringify(s)} may contain only letters, digits, ".", "-" and "_"`;
      if (listeners !== undefined && !listeners.has(s)) return `listener ${JSON.stringify(s)} is not declared under listeners (declared: ${[...listeners.keys()].join(', ') || 'none'})`;
      return undefined;
    });
    if (names !== undefined) rule.listeners = names;
  }
  const from = m.get('from');
  if (from !== undefined) rule.from = readFrom(f, from, label);
  const to = m.get('to');
  if (to !== undefined) rule.to = readTo(f, to, label);
  const when = m.get('when');
  if (when !== undefined) {
    const w = f.map(when.value, 'when', WHEN_KEYS, label);
    const jwt = w?.get('jwt');
    if (w !== undefined && jwt === undefined) f.problem(when.value, 'when needs jwt (or leave when out)', label);
    if (jwt !== undefined) {
      const j = readJwt(f, jwt, label);
      if (j !== undefined) rule.when = { jwt: j };
    }
  }
  if (name === undefined) return {};
  if (f.problems.length !== before) return { name };
  return { name, rule: { ...(rule as RuleSpec), name } };
}

function nonEmpty(f: YamlFile, m: Map<string, Entry>, e: Entry, what: string, keys: readonly string[], rule: string): boolean {
  if (m.size > 0) return true;
  f.problem(e.value ?? e.keyNode, `${what} needs at least one of ${keys.join(', ')} (leave ${what} out to match any)`, rule);
  return false;
}

function readFrom(f: YamlFile, e: Entry, rule: string): SourceSpec | undefined {
  const m = f.map(e.value, 'from', FROM_KEYS, rule);
  if (m === undefined || !nonEmpty(f, m, e, 'from', FROM_KEYS, rule)) return undefined;
  const out: SourceSpec = {};
  const ids = (key: string): string[] | undefined => {
    const v = m.get(key);
    return v === undefined ? undefined : f.stringList(v.value, `from.${key}`, rule, checkLeafId);
  };
  const tds = (key: string): string[] | undefined => {
    const v = m.get(key);
    return v === undefined ? undefined : f.stringList(v.value, `from.${key}`, rule, checkTrustDomain);
  };
  const pats = (key: string): IdPattern[] | undefined => {
    const v = m.get(key);
    return v === undefined ? undefined : f.compiledList(v.value, `from.${key}`, rule, compileIdPattern);
  };
  const set = <K extends keyof SourceSpec>(k: K, v: SourceSpec[K] | undefined): void => {
    if (v !== undefined) out[k] = v;
  };
  set('ids', ids('ids'));
  set('trustDomains', tds('trust_domains'));
  set('idPatterns', pats('id_patterns'));
  set('notIds', ids('not_ids'));
  set('notTrustDomains', tds('not_trust_domains'));
  set('notIdPatterns', pats('not_id_patterns'));
  return out;
}

function readTo(f: YamlFile, e: Entry, rule: string): OperationSpec | undefined {
  const m = f.map(e.value, 'to', TO_KEYS, rule);
  if (m === undefined || !nonEmpty(f, m, e, 'to', TO_KEYS, rule)) return undefined;
  const out: OperationSpec = {};
  const methods = (key: string): string[] | undefined => {
    const v = m.get(key);
    return v === undefined ? undefined : f.stringList(v.value, `to.${key}`, rule, checkMethod);
  };
  const paths = (key: string): PathPattern[] | undefined => {
    const v = m.get(key);
    return v === undefined ? undefined : f.compiledList(v.value, `to.${key}`, rule, compilePathPattern);
  };
  const mm = methods('methods');
  if (mm !== undefined) out.methods = mm;
  const nm = methods('not_methods');
  if (nm !== undefined) out.notMethods = nm;
  const pp = paths('paths');
  if (pp !== undefined) out.paths = pp;
  const np = paths('not_paths');
  if (np !== undefined) out.notPaths = np;
  return out;
}

function readJwt(f: YamlFile, e: Entry, rule: string): JwtSpec | undefined {
  const m = f.map(e.value, 'when.jwt', JWT_KEYS, rule);
  if (m === undefined) return undefined;
  const aud = m.get('audiences');
  if (aud === undefined) {
    f.problem(e.value ?? e.keyNode, 'when.jwt.audiences is required: a JWT-SVID is always validated against an audience', rule);
    return undefined;
  }
  const audiences = f.stringList(aud.value, 'when.jwt.audiences', rule);
  if (audiences === undefined) return undefined;
  const out: JwtSpec = { audiences };
  const iss = m.get('issuer');
  if (iss !== undefined) {
    const v = f.string(iss.value, 'when.jwt.issuer', rule);
    if (v !== undefined) out.issuer = v;
  }
  const sub = m.get('subjects');
  if (sub !== undefined) {
    const v = f.stringList(sub.value, 'when.jwt.subjects', rule, checkLeafId);
    if (v !== undefined) out.subjects = v;
  }
  const claims = m.get('claims');
  if (claims !== undefined) {
    const c = f.map(claims.value, 'when.jwt.claims', 'any', rule);
    if (c !== undefined) {
      const v = readClaims(f, c, claims, rule);
      if (v !== undefined) out.claims = v;
    }
  }
  return out;
}

function readClaims(f: YamlFile, m: Map<string, Entry>, e: Entry, rule: string): Map<string, string[]> | undefined {
  if (m.size === 0) {
    f.problem(e.value ?? e.keyNode, 'when.jwt.claims must not be empty (leave it out instead)', rule);
    return undefined;
  }
  const out = new Map<string, string[]>();
  for (const [key, entry] of m) {
    if (key === 'aud' || key === 'sub' || key === 'iss') {
      f.problem(entry.keyNode, `when.jwt.claims: use when.jwt.${key === 'aud' ? 'audiences' : key === 'sub' ? 'subjects' : 'issuer'} for ${JSON.stringify(key)}`, rule);
      continue;
    }
    const values = f.stringList(entry.value, `when.jwt.claims.${key}`, rule);
    if (values !== undefined) out.set(key, values);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Compiled form

interface CompiledRule {
  spec: RuleSpec;
  deny: boolean;
  /** Has `to` or `when`: needs an HTTP request. */
  http: boolean;
  matchSource: (id: string | undefined) => boolean;
  /** The parts after `from`; `tcp` is true for facts without a method. */
  matchRest: (facts: RequestFacts, tcp: boolean) => boolean;
  enforced: Decision;
  dryRun: Decision;
  /**
   * The path keys the rule's `paths` can match (undefined: any path): per pattern, its first
   * literal segment, or its first two joined by `/` when it fixes two (`/api/v1/**`: `api/v1`).
   */
  pathKeys: ReadonlySet<string> | undefined;
}

/**
 * Rules by the leading segments of the request path, so a request only visits the rules whose
 * `paths` it can match: under a two-segment key (`api/v1`) the rules with that key, with the
 * one-segment key `api`, and with no key; under `api` the rules with key `api` and no key;
 * `other` holds the rules with no key. Lists keep file order.
 */
interface PathIndex {
  byKey: Map<string, CompiledRule[]>;
  other: CompiledRule[];
}

function pathIndex(rules: CompiledRule[]): PathIndex {
  const keys = new Set<string>();
  for (const r of rules) {
    for (const k of r.pathKeys ?? []) {
      keys.add(k);
      const slash = k.indexOf('/');
      if (slash !== -1) keys.add(k.slice(0, slash));
    }
  }
  const byKey = new Map<string, CompiledRule[]>();
  for (const k of keys) {
    const slash = k.indexOf('/');
    const first = slash === -1 ? undefined : k.slice(0, slash);
    byKey.set(k, rules.filter((r) => r.pathKeys === undefined || r.pathKeys.has(k) || (first !== undefined && r.pathKeys.has(first))));
  }
  return { byKey, other: rules.filter((r) => r.pathKeys === undefined) };
}

function lookup(index: PathIndex, k1: string, k2: string | undefined): CompiledRule[] {
  return (k2 !== undefined ? index.byKey.get(k2) : undefined) ?? index.byKey.get(k1) ?? index.other;
}

interface Candidates {
  denies: CompiledRule[];
  allows: CompiledRule[];
  denyIndex: PathIndex;
  allowIndex: PathIndex;
}

const MEMO_LIMIT = 4096;

class ListenerRules {
  readonly denies: CompiledRule[];
  readonly allows: CompiledRule[];
  readonly checkPaths: boolean;
  readonly needsHttp: boolean;
  readonly audiences: readonly string[];
  readonly issuer: string | undefined;
  readonly needsJwt: boolean;
  private readonly memo = new Map<string, Candidates>();

  constructor(rules: CompiledRule[], decl: ListenerDecl | undefined, issuer: string | undefined) {
    this.denies = rules.filter((r) => r.deny);
    this.allows = rules.filter((r) => !r.deny);
    this.checkPaths = rules.some((r) => r.spec.to?.paths !== undefined || r.spec.to?.notPaths !== undefined);
    this.needsHttp = decl?.protocol !== 'tcp' && rules.some((r) => r.http);
    // A listener declared tcp carries no bearer tokens: no audiences, no issuer.
    const aud = new Set<string>();
    if (decl?.protocol !== 'tcp') for (const r of rules) for (const a of r.spec.when?.jwt.audiences ?? []) aud.add(a);
    this.audiences = Object.freeze([...aud].sort());
    this.needsJwt = aud.size > 0;
    this.issuer = issuer;
  }

  forSource(id: string | undefined): Candidates {
    const key = id ?? '';
    let c = this.memo.get(key);
    if (c === undefined) {
      const denies = this.denies.filter((r) => r.matchSource(id));
      const allows = this.allows.filter((r) => r.matchSource(id));
      c = { denies, allows, denyIndex: pathIndex(denies), allowIndex: pathIndex(allows) };
      if (this.memo.size >= MEMO_LIMIT) this.memo.clear();
      this.memo.set(key, c);
    }
    return c;
  }
}

/** The `from` matcher of a rule (also used by the lint's coverage checks). */
export function compileSource(s: SourceSpec | undefined): (id: string | undefined) => boolean {
  if (s === undefined) return () => true;
  const ids = new Set(s.ids ?? []);
  const tds = new Set(s.trustDomains ?? []);
  const pats = s.idPatterns ?? [];
  const notIds = new Set(s.notIds ?? []);
  const notTds = new Set(s.notTrustDomains ?? []);
  const notPats = s.notIdPatterns ?? [];
  const positive = s.ids !== undefined || s.trustDomains !== undefined || s.idPatterns !== undefined;
  return (id) => {
    if (id === undefined) return !positive;
    if (notIds.has(id) || (notTds.size > 0 && notTds.has(trustDomainOfId(id))) || notPats.some((p) => p.test(id))) return false;
    if (!positive) return true;
    return ids.has(id) || (tds.size > 0 && tds.has(trustDomainOfId(id))) || pats.some((p) => p.test(id));
  };
}

function claimMatches(value: unknown, accepted: ReadonlySet<string>): boolean {
  if (typeof value === 'string') return accepted.has(value);
  if (typeof value === 'number' || typeof value === 'boolean') return accepted.has(String(value));
  if (Array.isArray(value)) return value.some((v) => (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') && accepted.has(String(v)));
  return false;
}

function compileRest(spec: RuleSpec): (facts: RequestFacts, tcp: boolean) => boolean {
  const to = spec.to;
  const jwt = spec.when?.jwt;
  const deny = spec.action === 'DENY';
  const methods = to?.methods !== undefined ? new Set(to.methods) : undefined;
  const notMethods = to?.notMethods !== undefined ? new Set(to.notMethods) : undefined;
  const paths = to?.paths;
  const notPaths = to?.notPaths;
  const audiences = jwt !== undefined ? new Set(jwt.audiences) : undefined;
  const subjects = jwt?.subjects !== undefined ? new Set(jwt.subjects) : undefined;
  const claims = jwt?.claims !== undefined ? [...jwt.claims].map(([k, v]) => [k, new Set(v)] as const) : undefined;
  const issuer = jwt?.issuer;
  const http = to !== undefined || jwt !== undefined;
  if (!http) return () => true;
  return (facts, tcp) => {
    if (tcp) return deny; // HTTP conditions cannot hold on a connection: ALLOW never, DENY fails closed
    if (to !== undefined) {
      const m = facts.method;
      if (methods !== undefined && (m === undefined || !methods.has(m))) return false;
      if (notMethods !== undefined && m !== undefined && notMethods.has(m)) return false;
      const p = facts.path;
      if (p === undefined) {
        // A request without a path cannot be checked against path conditions: fail closed.
        if (!deny && (paths !== undefined || notPaths !== undefined)) return false;
      } else {
        if (paths !== undefined && !paths.some((x) => x.test(p))) return false;
        if (notPaths !== undefined && notPaths.some((x) => x.test(p))) return false;
      }
    }
    if (jwt !== undefined) {
      const t = facts.jwt;
      if (t === undefined) return false;
      if (!t.audience.some((a) => audiences!.has(a))) return false;
      if (issuer !== undefined && t.claims['iss'] !== issuer) return false;
      if (subjects !== undefined && !subjects.has(t.subject)) return false;
      if (claims !== undefined) for (const [k, v] of claims) if (!claimMatches(t.claims[k], v)) return false;
    }
    return true;
  };
}

/** The rule's path keys (CompiledRule.pathKeys), when every one of its `paths` fixes a first segment. */
function pathKeysOf(spec: RuleSpec): ReadonlySet<string> | undefined {
  const paths = spec.to?.paths;
  if (paths === undefined || paths.some((p) => p.leading.length === 0)) return undefined;
  return new Set(paths.map((p) => p.leading.slice(0, 2).join('/')));
}

function describeCaller(facts: RequestFacts): string {
  const who = facts.sourceId ?? 'a caller without an X509-SVID';
  if (facts.method === undefined) return who;
  const path = facts.path === undefined ? '' : facts.path.length > 200 ? ` ${facts.path.slice(0, 200)}...` : ` ${facts.path}`;
  return `${who} ${facts.method}${path}`;
}

/** A loaded access policy: the rules as written (for lint and tests) and the compiled decider. */
export class Policy implements PolicyDecider {
  /** The policy file's name, as given to parsePolicy (used in messages and lint findings). */
  readonly file: string;
  readonly mode: PolicyMode;
  /** Declared listeners, when the policy has a `listeners` section. */
  readonly listeners: ReadonlyMap<string, ListenerDecl> | undefined;
  readonly rules: readonly RuleSpec[];
  private readonly byListener = new Map<string, ListenerRules>();
  /** For listeners no rule names: the rules without `listeners`. */
  private readonly others: ListenerRules;

  /** Use parsePolicy or loadPolicyFile. */
  constructor(file: string, mode: PolicyMode, listeners: ReadonlyMap<string, ListenerDecl> | undefined, rules: readonly RuleSpec[], issuers: Map<string | undefined, string>) {
    this.file = file;
    this.mode = mode;
    this.listeners = listeners;
    this.rules = rules;
    const compiled = rules.map((spec): CompiledRule => {
      const deny = spec.action === 'DENY';
      const reason = deny ? `denied by rule ${spec.name}` : `allowed by rule ${spec.name}`;
      return {
        spec,
        deny,
        http: spec.to !== undefined || spec.when !== undefined,
        matchSource: compileSource(spec.from),
        matchRest: compileRest(spec),
        pathKeys: pathKeysOf(spec),
        enforced: Object.freeze({ allow: !deny, wouldAllow: !deny, rule: spec.name, reason, dryRun: false }),
        dryRun: Object.freeze({ allow: true, wouldAllow: !deny, rule: spec.name, reason: deny ? `dry-run: ${reason}` : reason, dryRun: true }),
      };
    });
    const named = new Set<string>();
    for (const r of rules) for (const l of r.listeners ?? []) named.add(l);
    for (const l of listeners?.keys() ?? []) named.add(l);
    for (const l of named) {
      const rs = compiled.filter((c) => c.spec.listeners === undefined || c.spec.listeners.includes(l));
      this.byListener.set(l, new ListenerRules(rs, listeners?.get(l), issuers.get(l) ?? issuers.get(undefined)));
    }
    this.others = new ListenerRules(
      compiled.filter((c) => c.spec.listeners === undefined),
      undefined,
      issuers.get(undefined),
    );
  }

  private group(listener: string): ListenerRules {
    return this.byListener.get(listener) ?? this.others;
  }

  decide(facts: RequestFacts): Decision {
    const g = this.group(facts.listener);
    const tcp = facts.method === undefined;
    if (!tcp && g.checkPaths && facts.path !== undefined) {
      const bad = pathNotNormal(facts.path);
      if (bad !== undefined) return this.deny(`denied: request path ${bad}`);
    }
    const c = g.forSource(facts.sourceId);
    const dry = this.mode === 'dry-run';
    let denies = c.denies;
    let allows = c.allows;
    if (!tcp && facts.path !== undefined) {
      const [k1, k2] = leadingKeys(facts.path);
      denies = lookup(c.denyIndex, k1, k2);
      allows = lookup(c.allowIndex, k1, k2);
    }
    for (const r of denies) if (r.matchRest(facts, tcp)) return dry ? r.dryRun : r.enforced;
    for (const r of allows) if (r.matchRest(facts, tcp)) return dry ? r.dryRun : r.enforced;
    let reason = `denied: no rule allows ${describeCaller(facts)} on ${facts.listener}`;
    if (facts.jwtError !== undefined && g.needsJwt) reason += ` (bearer token rejected: ${facts.jwtError})`;
    return this.deny(reason);
  }

  private deny(reason: string): Decision {
    if (this.mode === 'dry-run') return { allow: true, wouldAllow: false, rule: DEFAULT_DENY, reason: `dry-run: ${reason}`, dryRun: true };
    return { allow: false, wouldAllow: false, rule: DEFAULT_DENY, reason, dryRun: false };
  }

  needsHttp(listener: string): boolean {
    return this.group(listener).needsHttp;
  }

  jwtAudiences(listener: string): readonly string[] {
    return this.group(listener).audiences;
  }

  jwtIssuer(listener: string): string | undefined {
    const g = this.group(listener);
    return g.needsJwt ? g.issuer : undefined;
  }

  /** The rules that apply on `listener`, in file order. */
  rulesFor(listener: string): readonly RuleSpec[] {
    return this.rules.filter((r) => r.listeners === undefined || r.listeners.includes(listener));
  }
}

/**
 * The JWT issuer of each listener (key undefined: listeners no rule names). Rules on one
 * listener that name different issuers are an error: the listener validates every bearer
 * JWT-SVID against one `iss`.
 */
function listenerIssuers(f: YamlFile, rules: readonly RuleSpec[], items: readonly YNode[]): Map<string | undefined, string> {
  const out = new Map<string | undefined, string>();
  const setBy = new Map<string | undefined, string>();
  for (const r of rules) {
    const iss = r.when?.jwt.issuer;
    if (iss === undefined) continue;
    const keys: readonly (string | undefined)[] = r.listeners ?? [undefined];
    for (const k of keys) {
      const prev = out.get(k);
      if (prev !== undefined && prev !== iss) {
        f.problem(items[r.index], `when.jwt.issuer ${JSON.stringify(iss)} conflicts with ${JSON.stringify(prev)} of rule ${setBy.get(k)} on ${k === undefined ? 'every listener' : `listener ${k}`}: a listener accepts JWT-SVIDs of one issuer`, r.name);
        continue;
      }
      out.set(k, iss);
      setBy.set(k, r.name);
    }
  }
  // A rule for every listener and a rule for one listener must agree too.
  const global = out.get(undefined);
  if (global !== undefined) {
    for (const [k, iss] of out) {
      if (k !== undefined && iss !== global) {
        const r = rules.find((x) => x.name === setBy.get(k))!;
        f.problem(items[r.index], `when.jwt.issuer ${JSON.stringify(iss)} on listener ${k} conflicts with ${JSON.stringify(global)} of rule ${setBy.get(undefined)} (every listener): a listener accepts JWT-SVIDs of one issuer`, r.name);
      }
    }
  }
  return out;
}

/** Parses a policy file's text; throws PolicyError listing every problem (file:line:col, rule). */
export function parsePolicy(text: string, fileName = 'policy.yaml'): Policy {
  const f = new YamlFile(text, fileName);
  const read = readPolicy(f);
  if (read !== undefined && f.problems.length === 0) {
    const items = f.list((f.doc.contents as unknown as { get(k: string, keep: boolean): YNode }).get('rules', true), 'rules') ?? [];
    const issuers = listenerIssuers(f, read.rules, items);
    if (f.problems.length === 0) return new Policy(fileName, read.mode, read.listeners, read.rules, issuers);
  }
  throw new PolicyError(f.problems.length > 0 ? f.problems : [{ file: fileName, line: 1, col: 1, message: 'the policy could not be read' }]);
}

/** Reads and parses a policy file; throws PolicyError (also for a file that cannot be read). */
export function loadPolicyFile(path: string): Policy {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new PolicyError([{ file: path, line: 1, col: 1, message: `cannot read the policy file: ${why}` }], { cause: err });
  }
  return parsePolicy(text, path);
}

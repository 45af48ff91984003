/**
 * `lintPolicy`: what in a valid policy is overly permissive or dead. Each finding has a
 * severity (`error` fails `policy lint`), the check that found it, the rule (when it is about
 * one) and where it is written. The checks (docs/proxy-policy.md, "policy lint"):
 *
 *   any-source             an ALLOW rule for any caller: no `from`, `id_patterns: ["*"]`, or only
 *                          `not_*` exclusions (error on a sensitive listener, else warning)
 *   trust-domain-on-sensitive  an ALLOW rule for a whole trust domain (`trust_domains`,
 *                          `spiffe://td/**`) on a listener declared `sensitive: true` (error)
 *   never-matches          a rule no request can match: `to`/`when` on listeners all declared
 *                          `protocol: tcp` (ALLOW), every method excluded by `not_methods`, every
 *                          path by `not_paths`, every source by the `not_*` source fields (error)
 *   never-allows           an ALLOW rule that a DENY rule covers entirely (DENY is evaluated
 *                          first, wherever it is written) (error)
 *   shadowed               a rule that an earlier rule of the same action covers entirely: it
 *                          never decides anything (warning)
 *   deny-on-tcp            a DENY rule with `to`/`when` on a tcp listener: there it denies every
 *                          connection from its sources (warning)
 *   no-allow               a declared listener no ALLOW rule applies to: everything is denied (warning)
 *   dry-run                the policy is in dry-run: nothing is denied (warning)
 *   listeners-not-declared no `listeners` section: rule listener names are not checked and no
 *                          listener is sensitive (info)
 *
 * Coverage ("rule A matches everything rule B matches") is decided conservatively: a finding is
 * only reported when it is certain.
 */
import { compileSource, type JwtSpec, type ListenerDecl, type OperationSpec, type Policy, type Position, type RuleSpec, type SourceSpec } from './policy.js';
import { pathCovers } from './patterns.js';

export type LintSeverity = 'error' | 'warning' | 'info';
export type LintCheck =
  | 'any-source'
  | 'trust-domain-on-sensitive'
  | 'never-matches'
  | 'never-allows'
  | 'shadowed'
  | 'deny-on-tcp'
  | 'no-allow'
  | 'dry-run'
  | 'listeners-not-declared';

export interface LintFinding {
  severity: LintSeverity;
  check: LintCheck;
  /** The rule the finding is about; absent for findings about the policy or a listener. */
  rule?: string;
  message: string;
  /** Where: the rule's (or listener's) position in the policy file; 1:1 for the whole policy. */
  line: number;
  col: number;
}

const SEVERITY_ORDER: Record<LintSeverity, number> = { error: 0, warning: 1, info: 2 };

function subset<T>(a: readonly T[] | undefined, b: readonly T[] | undefined): boolean {
  if (a === undefined) return true;
  return b !== undefined && a.every((x) => b.includes(x));
}

function hasPositive(s: SourceSpec): boolean {
  return s.ids !== undefined || s.trustDomains !== undefined || s.idPatterns !== undefined;
}

function texts(p: readonly { text: string }[] | undefined): string[] | undefined {
  return p?.map((x) => x.text);
}

/** Every exclusion of `a` is also an exclusion of `b`. */
function exclusionsWithin(a: SourceSpec, b: SourceSpec): boolean {
  return subset(a.notIds, b.notIds) && subset(a.notTrustDomains, b.notTrustDomains) && subset(texts(a.notIdPatterns), texts(b.notIdPatterns));
}

function coversTrustDomain(a: SourceSpec, td: string | undefined): boolean {
  if (!hasPositive(a)) return true;
  if (a.idPatterns?.some((p) => p.text === '*')) return true;
  if (td === undefined) return false;
  return (a.trustDomains?.includes(td) ?? false) || (a.idPatterns?.some((p) => p.wide && p.trustDomain === td) ?? false);
}

/** Whether `from` a matches every caller `from` b matches. */
function sourceCovers(a: SourceSpec | undefined, b: SourceSpec | undefined): boolean {
  if (a === undefined) return true;
  if (b === undefined) return false;
  if (!hasPositive(b)) return !hasPositive(a) && exclusionsWithin(a, b);
  const match = compileSource(a);
  if (!(b.ids ?? []).every((id) => match(id))) return false;
  const wide = [...(b.trustDomains ?? []).map((td) => ({ td, text: undefined as string | undefined })), ...(b.idPatterns ?? []).map((p) => ({ td: p.trustDomain, text: p.text }))];
  if (wide.length === 0) return true;
  if (!exclusionsWithin(a, b)) return false;
  return wide.every((w) => coversTrustDomain(a, w.td) || (w.text !== undefined && (a.idPatterns?.some((p) => p.text === w.text) ?? false)));
}

function operationCovers(a: OperationSpec | undefined, b: OperationSpec | undefined): boolean {
  if (a === undefined) return true;
  if (b === undefined) return false;
  if (a.methods !== undefined && (b.methods === undefined || !subset(b.methods, a.methods))) return false;
  if (a.notMethods !== undefined) {
    const ok = (b.methods !== undefined && !b.methods.some((m) => a.notMethods!.includes(m))) || subset(a.notMethods, b.notMethods);
    if (!ok) return false;
  }
  if (a.paths !== undefined) {
    if (b.paths === undefined || !b.paths.every((bp) => a.paths!.some((ap) => pathCovers(ap, bp)))) return false;
  }
  if (a.notPaths !== undefined) {
    const byText = subset(texts(a.notPaths), texts(b.notPaths));
    const exactOutside = b.paths !== undefined && b.paths.every((bp) => bp.kind === 'exact' && !a.notPaths!.some((np) => np.test(bp.text)));
    if (!byText && !exactOutside) return false;
  }
  return true;
}

function jwtCovers(a: JwtSpec | undefined, b: JwtSpec | undefined): boolean {
  if (a === undefined) return true;
  if (b === undefined) return false;
  if (!subset(b.audiences, a.audiences)) return false;
  if (a.issuer !== undefined && a.issuer !== b.issuer) return false;
  if (a.subjects !== undefined && (b.subjects === undefined || !subset(b.subjects, a.subjects))) return false;
  for (const [k, vals] of a.claims ?? []) {
    const bv = b.claims?.get(k);
    if (bv === undefined || !subset(bv, vals)) return false;
  }
  return true;
}

/** Whether rule a matches every request rule b matches. */
export function ruleCovers(a: RuleSpec, b: RuleSpec): boolean {
  return (
    (a.listeners === undefined || (b.listeners !== undefined && subset(b.listeners, a.listeners))) &&
    sourceCovers(a.from, b.from) &&
    operationCovers(a.to, b.to) &&
    jwtCovers(a.when?.jwt, b.when?.jwt)
  );
}

/** The declared listeners a rule applies to (all declared ones when it names none). */
function declaredFor(policy: Policy, r: RuleSpec): ListenerDecl[] {
  if (policy.listeners === undefined) return [];
  return [...policy.listeners.values()].filter((l) => r.listeners === undefined || r.listeners.includes(l.name));
}

/** Why a rule can never match, or undefined. */
function neverMatches(policy: Policy, r: RuleSpec): string | undefined {
  const http = r.to !== undefined || r.when !== undefined;
  if (http && r.action === 'ALLOW' && r.listeners !== undefined && policy.listeners !== undefined) {
    if (r.listeners.every((l) => policy.listeners!.get(l)?.protocol === 'tcp')) {
      return `it has HTTP conditions (${r.to !== undefined ? 'to' : 'when'}) but its listeners (${r.listeners.join(', ')}) are declared tcp: connections have no method, path or bearer token`;
    }
  }
  const to = r.to;
  if (to?.methods !== undefined && to.notMethods !== undefined && to.methods.every((m) => to.notMethods!.includes(m))) {
    return 'every method in to.methods is excluded by to.not_methods';
  }
  if (to?.paths !== undefined && to.notPaths !== undefined && to.paths.every((p) => to.notPaths!.some((np) => pathCovers(np, p)))) {
    return 'every path in to.paths is excluded by to.not_paths';
  }
  const s = r.from;
  if (s !== undefined && hasPositive(s)) {
    const match = compileSource(s);
    const excludedTd = (td: string | undefined): boolean => td !== undefined && (s.notTrustDomains?.includes(td) ?? false);
    const idsGone = (s.ids ?? []).every((id) => !match(id));
    const tdsGone = (s.trustDomains ?? []).every((td) => excludedTd(td));
    const patsGone = (s.idPatterns ?? []).every((p) => excludedTd(p.trustDomain) || (s.notIdPatterns?.some((n) => n.text === p.text || n.text === '*') ?? false));
    if (idsGone && tdsGone && patsGone) return 'every caller its from lists is excluded by its not_ids, not_trust_domains or not_id_patterns';
  }
  return undefined;
}

function anySource(r: RuleSpec): string | undefined {
  if (r.from === undefined) return 'allows any caller, with or without an X509-SVID (it has no from)';
  if (r.from.idPatterns?.some((p) => p.text === '*')) return 'allows any caller with an X509-SVID (id_patterns "*")';
  if (!hasPositive(r.from)) return 'allows any caller its not_* fields do not exclude, callers without an X509-SVID included';
  return undefined;
}

function wholeTrustDomains(r: RuleSpec): string[] {
  const out = [...(r.from?.trustDomains ?? [])];
  for (const p of r.from?.idPatterns ?? []) if (p.wide && p.trustDomain !== undefined) out.push(p.trustDomain);
  return out;
}

/** What in `policy` is overly permissive or dead (module comment); sorted by severity, then position. */
export function lintPolicy(policy: Policy): LintFinding[] {
  const out: LintFinding[] = [];
  const at = (p: Position): { line: number; col: number } => ({ line: p.line, col: p.col });
  const add = (severity: LintSeverity, check: LintCheck, message: string, pos: Position, rule?: string): void => {
    out.push({ severity, check, ...(rule !== undefined ? { rule } : {}), message, ...at(pos) });
  };
  const top = { line: 1, col: 1 };
  if (policy.mode === 'dry-run') add('warning', 'dry-run', 'mode is dry-run: denials are reported but not enforced, every request is let through', top);
  if (policy.listeners === undefined) {
    add('info', 'listeners-not-declared', 'no listeners section: listener names in rules are not checked against a list, and no listener is marked sensitive or tcp', top);
  }
  const dead = new Set<string>();
  for (const r of policy.rules) {
    const never = neverMatches(policy, r);
    if (never !== undefined) {
      dead.add(r.name);
      add('error', 'never-matches', `never matches: ${never}`, r.at, r.name);
      continue;
    }
    const declared = declaredFor(policy, r);
    const sensitive = declared.filter((l) => l.sensitive).map((l) => l.name);
    if (r.action === 'ALLOW') {
      const any = anySource(r);
      if (any !== undefined) {
        const onSensitive = sensitive.length > 0 ? ` on sensitive listener${sensitive.length > 1 ? 's' : ''} ${sensitive.join(', ')}` : '';
        add(onSensitive ? 'error' : 'warning', 'any-source', `${any}${onSensitive}`, r.at, r.name);
      } else if (sensitive.length > 0) {
        const tds = wholeTrustDomains(r);
        if (tds.length > 0) {
          add('error', 'trust-domain-on-sensitive', `allows every workload of trust domain${tds.length > 1 ? 's' : ''} ${tds.join(', ')} on sensitive listener${sensitive.length > 1 ? 's' : ''} ${sensitive.join(', ')}: list the callers (ids, id_patterns)`, r.at, r.name);
        }
      }
    } else if (r.to !== undefined || r.when !== undefined) {
      const tcp = declared.filter((l) => l.protocol === 'tcp').map((l) => l.name);
      if (tcp.length > 0) {
        add('warning', 'deny-on-tcp', `on tcp listener${tcp.length > 1 ? 's' : ''} ${tcp.join(', ')} this rule denies every connection from its sources: its to/when conditions cannot be checked on a connection`, r.at, r.name);
      }
    }
  }
  const live = policy.rules.filter((r) => !dead.has(r.name));
  for (let i = 0; i < live.length; i++) {
    const b = live[i]!;
    if (b.action === 'ALLOW') {
      const deny = live.find((a) => a.action === 'DENY' && ruleCovers(a, b));
      if (deny !== undefined) {
        add('error', 'never-allows', `never allows anything: DENY rule ${deny.name} (line ${deny.at.line}) matches every request it matches, and DENY rules are evaluated first`, b.at, b.name);
        continue;
      }
    }
    const earlier = live.slice(0, i).find((a) => a.action === b.action && ruleCovers(a, b));
    if (earlier !== undefined) {
      add('warning', 'shadowed', `never decides: the earlier ${b.action} rule ${earlier.name} (line ${earlier.at.line}) matches every request it matches`, b.at, b.name);
    }
  }
  for (const l of policy.listeners?.values() ?? []) {
    // On a tcp listener, ALLOW rules with HTTP conditions never match.
    const allows = live.filter((r) => r.action === 'ALLOW' && (r.listeners === undefined || r.listeners.includes(l.name)) && !(l.protocol === 'tcp' && (r.to !== undefined || r.when !== undefined)));
    if (allows.length === 0) {
      add('warning', 'no-allow', `listener ${l.name}: no ALLOW rule applies to it, every caller is denied`, l.at);
    }
  }
  return out.sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.line - b.line || a.col - b.col);
}

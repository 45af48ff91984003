/**
 * Policy as code: `runPolicyTests` runs a table of requests against a policy and compares each
 * decision with the expected one (`spindle-proxy policy test`). The cases file:
 *
 *   cases:
 *     - name: payments reads the database          # optional; default "case N"
 *       listener: database-in                      # required
 *       source: spiffe://example.org/payments      # the caller's SPIFFE ID; leave out for no SVID
 *       method: GET                                # HTTP requests: method and path together;
 *       path: /v1/items                            #   leave both out for a TCP connection
 *       jwt: { sub: spiffe://example.org/payments, aud: [database], role: admin }   # a valid bearer JWT-SVID's claims
 *       jwt_error: audience mismatch               # or: a bearer token that did not validate
 *       expect: ALLOW                              # required: ALLOW or DENY
 *       rule: payments-to-database                 # optional: the rule that must decide (or default-deny)
 *
 * `expect` is compared with what the policy decides (`wouldAllow`), so the cases of a dry-run
 * policy test the policy itself, not the dry-run. The file is read strictly, like the policy.
 */
import type { Decision, RequestFacts } from '../decision.js';
import { isSpiffeId } from '../../spiffe/id.js';
import { DEFAULT_DENY, type Policy, type RuleAction } from './policy.js';
import { PolicyError, YamlFile, type YNode } from './source.js';

export interface CaseResult {
  name: string;
  /** Position of the case in the cases file. */
  line: number;
  col: number;
  facts: RequestFacts;
  expect: RuleAction;
  /** The rule the case expects to decide, when it names one. */
  expectRule?: string;
  decision: Decision;
  pass: boolean;
  /** What did not match, in words (empty when the case passed). */
  mismatch: string;
}

export interface PolicyTestReport {
  results: CaseResult[];
  passed: number;
  failed: number;
}

const CASES_KEYS = ['cases'] as const;
const CASE_KEYS = ['name', 'listener', 'source', 'method', 'path', 'jwt', 'jwt_error', 'expect', 'rule'] as const;

interface ParsedCase {
  name: string;
  line: number;
  col: number;
  facts: RequestFacts;
  expect: RuleAction;
  expectRule?: string;
}

function readCase(f: YamlFile, item: YNode, index: number, policy: Policy): ParsedCase | undefined {
  const before = f.problems.length;
  const m = f.map(item, `case ${index + 1}`, CASE_KEYS);
  if (m === undefined) return undefined;
  let name = `case ${index + 1}`;
  const n = m.get('name');
  if (n !== undefined) name = f.string(n.value, 'name', name) ?? name;
  const str = (key: string): string | undefined => {
    const e = m.get(key);
    return e === undefined ? undefined : f.string(e.value, key, name);
  };
  const listener = str('listener');
  if (!m.has('listener')) f.problem(item, 'listener is required', name);
  const facts: RequestFacts = { listener: listener ?? '' };
  const source = str('source');
  if (source !== undefined) {
    if (isSpiffeId(source)) facts.sourceId = source;
    else f.problem(m.get('source')!.value, `source ${JSON.stringify(source)} is not a SPIFFE ID`, name);
  }
  const method = str('method');
  const path = str('path');
  if (method !== undefined) {
    if (/^[A-Z][A-Z0-9_-]*$/.test(method)) facts.method = method;
    else f.problem(m.get('method')!.value, `method ${JSON.stringify(method)} must be an upper-case HTTP method`, name);
  }
  if (path !== undefined) facts.path = path;
  if ((m.has('method') || m.has('path')) && !(m.has('method') && m.has('path'))) {
    f.problem(item, 'an HTTP request has both method and path (leave both out for a TCP connection)', name);
  }
  const jwt = m.get('jwt');
  if (jwt !== undefined) {
    const claims = f.map(jwt.value, 'jwt', 'any', name);
    if (claims !== undefined) {
      const json = (jwt.value as unknown as { toJS(doc: unknown): Record<string, unknown> }).toJS(f.doc);
      const sub = json['sub'];
      const aud = json['aud'];
      const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string') ? (aud as string[]) : undefined;
      if (typeof sub !== 'string' || !isSpiffeId(sub)) f.problem(jwt.value, 'jwt.sub must be the SPIFFE ID of the token (a JWT-SVID always has one)', name);
      else if (auds === undefined) f.problem(jwt.value, 'jwt.aud must be a string or a non-empty list of strings', name);
      else facts.jwt = { subject: sub, audience: auds, claims: json };
    }
    if (!m.has('method')) f.problem(jwt.keyNode, 'jwt needs an HTTP request (method and path)', name);
  }
  const jwtError = str('jwt_error');
  if (jwtError !== undefined) facts.jwtError = jwtError;
  if (jwt !== undefined && jwtError !== undefined) f.problem(item, 'a case has jwt (a valid token) or jwt_error (a rejected one), not both', name);
  let expect: RuleAction | undefined;
  const e = m.get('expect');
  if (e === undefined) f.problem(item, 'expect is required (ALLOW or DENY)', name);
  else {
    const v = f.string(e.value, 'expect', name);
    if (v === 'ALLOW' || v === 'DENY') expect = v;
    else if (v !== undefined) f.problem(e.value, `expect must be ALLOW or DENY, got ${JSON.stringify(v)}`, name);
  }
  const rule = str('rule');
  if (rule !== undefined && rule !== DEFAULT_DENY && !policy.rules.some((r) => r.name === rule)) {
    f.problem(m.get('rule')!.value, `the policy has no rule ${JSON.stringify(rule)} (rules: ${policy.rules.map((r) => r.name).join(', ')}, or ${DEFAULT_DENY})`, name);
  }
  if (f.problems.length !== before || expect === undefined) return undefined;
  const pos = f.pos(item);
  return { name, line: pos.line, col: pos.col, facts, expect, ...(rule !== undefined ? { expectRule: rule } : {}) };
}

/**
 * Runs the cases in `casesText` (named `casesFile` in errors) against `policy`. Throws
 * PolicyError, listing every problem, when the cases file is not valid.
 */
export function runPolicyTests(policy: Policy, casesText: string, casesFile = 'cases.yaml'): PolicyTestReport {
  const f = new YamlFile(casesText, casesFile, 'case');
  const root = f.root();
  const cases: ParsedCase[] = [];
  if (root !== undefined) {
    const top = f.map(root, 'the cases file', CASES_KEYS);
    const list = top?.get('cases');
    if (top !== undefined && list === undefined) f.problem(root, 'the cases file needs a cases list');
    const items = list === undefined ? undefined : f.list(list.value, 'cases');
    const names = new Set<string>();
    items?.forEach((item, i) => {
      const c = readCase(f, item, i, policy);
      if (c === undefined) return;
      if (names.has(c.name)) f.problem(item, 'duplicate case name', c.name);
      names.add(c.name);
      cases.push(c);
    });
  }
  if (f.problems.length > 0) throw new PolicyError(f.problems);
  const results = cases.map((c): CaseResult => {
    const decision = policy.decide(c.facts);
    const got: RuleAction = decision.wouldAllow ? 'ALLOW' : 'DENY';
    const problems: string[] = [];
    if (got !== c.expect) problems.push(`expected ${c.expect}, got ${got}`);
    if (c.expectRule !== undefined && decision.rule !== c.expectRule) problems.push(`expected rule ${c.expectRule}, decided by ${decision.rule}`);
    return { ...c, decision, pass: problems.length === 0, mismatch: problems.join('; ') };
  });
  const passed = results.filter((r) => r.pass).length;
  return { results, passed, failed: results.length - passed };
}

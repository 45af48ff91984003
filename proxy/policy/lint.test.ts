import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { lintPolicy, type LintFinding } from './lint.js';
import { parsePolicy } from './policy.js';

const PAY = 'spiffe://example.org/payments';
const FRONT = 'spiffe://example.org/frontend';

const LISTENERS = `listeners:
  - { name: db, protocol: http, sensitive: true }
  - { name: web, protocol: http }
  - { name: raw, protocol: tcp }
`;

/** The findings of a policy made of LISTENERS and `rules`, as "severity check rule" strings (info and no-allow left out unless asked). */
function lint(rules: string, opts: { listeners?: string; all?: boolean } = {}): LintFinding[] {
  const findings = lintPolicy(parsePolicy(`${opts.listeners ?? LISTENERS}rules:\n${rules}`, 'p.yaml'));
  return opts.all ? findings : findings.filter((f) => f.check !== 'no-allow' && f.check !== 'listeners-not-declared');
}

function summary(findings: LintFinding[]): string[] {
  return findings.map((f) => `${f.severity} ${f.check} ${f.rule ?? '-'}`);
}

/** Allows something on every declared listener, so no-allow stays quiet. */
const BASE = `  - { name: base-db, action: ALLOW, listeners: [db], from: { ids: [${PAY}] } }
  - { name: base-web, action: ALLOW, listeners: [web], from: { ids: [${PAY}] } }
  - { name: base-raw, action: ALLOW, listeners: [raw], from: { ids: [${PAY}] } }
`;

describe('lintPolicy', () => {
  test('a tight policy has no findings', () => {
    assert.deepEqual(lint(BASE, { all: true }), []);
  });

  test('any-source: no from, "*", or only exclusions; error on a sensitive listener', () => {
    const f = lint(`${BASE}  - { name: anyone-web, action: ALLOW, listeners: [web], to: { paths: [/z] } }
  - { name: star-web, action: ALLOW, listeners: [web], from: { id_patterns: ["*"] }, to: { paths: [/x] } }
  - { name: not-front-web, action: ALLOW, listeners: [web], from: { not_ids: [${FRONT}] }, to: { paths: [/y] } }
  - { name: anyone-everywhere, action: ALLOW, to: { paths: [/health] } }
  - { name: deny-anyone, action: DENY, listeners: [web], to: { paths: [/admin] } }
`);
    assert.deepEqual(summary(f), [
      'error any-source anyone-everywhere',
      'warning any-source anyone-web',
      'warning any-source star-web',
      'warning any-source not-front-web',
    ]);
    assert.match(f[0]!.message, /allows any caller, with or without an X509-SVID \(it has no from\) on sensitive listener db$/);
    assert.match(f[2]!.message, /any caller with an X509-SVID \(id_patterns "\*"\)/);
    assert.deepEqual([f[0]!.line, f[0]!.col], [12, 5]);
  });

  test('trust-domain-on-sensitive: trust_domains or spiffe://td/** on a sensitive listener', () => {
    const f = lint(`${BASE}  - { name: domain-db, action: ALLOW, listeners: [db], from: { trust_domains: [example.org] }, to: { paths: [/a] } }
  - { name: tree-db, action: ALLOW, listeners: [db], from: { id_patterns: ["spiffe://partner.example/**"] }, to: { paths: [/b] } }
  - { name: domain-web, action: ALLOW, listeners: [web], from: { trust_domains: [example.org] } }
  - { name: narrow-pattern-db, action: ALLOW, listeners: [db], from: { id_patterns: ["spiffe://example.org/ns/*/sa/x"] } }
`);
    assert.deepEqual(summary(f), ['error trust-domain-on-sensitive domain-db', 'error trust-domain-on-sensitive tree-db']);
    assert.match(f[1]!.message, /every workload of trust domain partner\.example on sensitive listener db/);
  });

  test('never-matches: HTTP conditions on tcp listeners, excluded methods, paths and sources', () => {
    const f = lint(`${BASE}  - { name: get-raw, action: ALLOW, listeners: [raw], from: { ids: [${FRONT}] }, to: { methods: [GET] } }
  - { name: jwt-raw, action: ALLOW, listeners: [raw], from: { ids: [${FRONT}] }, when: { jwt: { audiences: [a] } } }
  - { name: methods-gone, action: ALLOW, listeners: [web], from: { ids: [${FRONT}] }, to: { methods: [GET], not_methods: [GET, PUT] } }
  - { name: paths-gone, action: DENY, listeners: [web], to: { paths: [/v1/a, /v1/b/**], not_paths: [/v1/**] } }
  - { name: ids-gone, action: ALLOW, listeners: [web], from: { ids: [${FRONT}], not_id_patterns: ["spiffe://example.org/*"] } }
  - { name: domain-gone, action: ALLOW, listeners: [web], from: { trust_domains: [x.example], not_trust_domains: [x.example] } }
`);
    assert.deepEqual(summary(f), [
      'error never-matches get-raw',
      'error never-matches jwt-raw',
      'error never-matches methods-gone',
      'error never-matches paths-gone',
      'error never-matches ids-gone',
      'error never-matches domain-gone',
    ]);
    assert.match(f[0]!.message, /HTTP conditions \(to\) but its listeners \(raw\) are declared tcp/);
    assert.match(f[2]!.message, /every method in to\.methods is excluded/);
    assert.match(f[3]!.message, /every path in to\.paths is excluded/);
  });

  test('never-allows: an ALLOW rule a DENY rule covers, before or after it', () => {
    const f = lint(`${BASE}  - { name: front-health, action: ALLOW, listeners: [web], from: { ids: [${FRONT}] }, to: { methods: [GET], paths: [/health] } }
  - { name: deny-front, action: DENY, from: { ids: [${FRONT}] } }
  - { name: front-admin, action: ALLOW, listeners: [web], from: { ids: [${FRONT}] } }
  - { name: partly-denied, action: ALLOW, listeners: [web], from: { ids: [${FRONT}, spiffe://example.org/other] } }
`);
    assert.deepEqual(summary(f), ['error never-allows front-health', 'error never-allows front-admin']);
    assert.match(f[0]!.message, /DENY rule deny-front \(line 10\) matches every request it matches, and DENY rules are evaluated first/);
  });

  test('a DENY after an identical ALLOW', () => {
    const f = lint(`${BASE}  - { name: allow-x, action: ALLOW, listeners: [web], from: { ids: [${FRONT}] }, to: { paths: ["/v1/**"] } }
  - { name: deny-x, action: DENY, listeners: [web], from: { ids: [${FRONT}] }, to: { paths: ["/v1/**"] } }
`);
    assert.deepEqual(summary(f), ['error never-allows allow-x']);
  });

  test('shadowed: an earlier rule of the same action covers it (listeners, sources, methods, paths, JWT)', () => {
    const f = lint(`${BASE}  - { name: wide, action: ALLOW, listeners: [web, db], from: { ids: [${FRONT}], id_patterns: ["spiffe://example.org/ns/*/sa/*"] }, to: { methods: [GET, POST], paths: ["/v1/**"] }, when: { jwt: { audiences: [a, b], claims: { scope: [r, w] } } } }
  - { name: narrow, action: ALLOW, listeners: [web], from: { ids: [${FRONT}, spiffe://example.org/ns/p/sa/q] }, to: { methods: [GET], paths: ["/v1/items/*", /v1] }, when: { jwt: { audiences: [a], claims: { scope: [r], other: [x] } } } }
  - { name: not-narrower, action: ALLOW, listeners: [web], from: { ids: [${FRONT}] }, to: { methods: [GET], paths: ["/v1/**"] }, when: { jwt: { audiences: [c] } } }
  - { name: deny-1, action: DENY, listeners: [web], to: { paths: ["/admin/**"] } }
  - { name: deny-2, action: DENY, listeners: [web], from: { ids: [${FRONT}] }, to: { paths: ["/admin/x"] } }
  - { name: base-web-again, action: ALLOW, listeners: [web], from: { ids: [${PAY}] } }
`);
    assert.deepEqual(summary(f), ['warning shadowed narrow', 'warning shadowed deny-2', 'warning shadowed base-web-again']);
    assert.match(f[0]!.message, /never decides: the earlier ALLOW rule wide \(line 9\) matches every request it matches/);
  });

  test('coverage is conservative: exclusions, other listeners and wider sources are not covered', () => {
    const f = lint(`${BASE}  - { name: a, action: ALLOW, listeners: [web], from: { trust_domains: [example.org], not_ids: [${FRONT}] } }
  - { name: b, action: ALLOW, listeners: [web], from: { id_patterns: ["spiffe://example.org/ns/*/sa/x"] } }
  - { name: c, action: ALLOW, listeners: [web], from: { ids: [${FRONT}] } }
  - { name: d, action: ALLOW, from: { ids: [spiffe://example.org/d] } }
  - { name: e, action: ALLOW, listeners: [web], from: { not_ids: [${FRONT}] }, to: { paths: [/e] } }
  - { name: f, action: ALLOW, listeners: [web], to: { paths: [/e] } }
`);
    assert.deepEqual(summary(f), ['warning any-source e', 'warning any-source f']);
  });

  test('deny-on-tcp: a DENY rule with to/when on a tcp listener denies whole connections', () => {
    const f = lint(`${BASE}  - { name: no-posts, action: DENY, from: { ids: [${FRONT}] }, to: { methods: [POST] } }
`);
    assert.deepEqual(summary(f), ['warning deny-on-tcp no-posts']);
    assert.match(f[0]!.message, /on tcp listener raw this rule denies every connection from its sources/);
  });

  test('no-allow: a declared listener no ALLOW rule can match on', () => {
    const f = lint(`  - { name: web-only, action: ALLOW, listeners: [web], from: { ids: [${PAY}] } }
  - { name: http-anywhere, action: ALLOW, from: { ids: [${PAY}] }, to: { methods: [GET] } }
`, { all: true });
    assert.deepEqual(summary(f), ['warning no-allow -']);
    assert.match(f[0]!.message, /^listener raw: no ALLOW rule applies to it, every caller is denied$/);
    assert.deepEqual([f[0]!.line, f[0]!.col], [4, 5]);
  });

  test('dry-run and listeners-not-declared', () => {
    const f = lintPolicy(parsePolicy(`mode: dry-run\nrules:\n  - { name: r, action: ALLOW, from: { ids: [${PAY}] } }\n`, 'p.yaml'));
    assert.deepEqual(summary(f), ['warning dry-run -', 'info listeners-not-declared -']);
    assert.match(f[0]!.message, /denials are reported but not enforced/);
  });
});

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy } from './policy.js';
import { runPolicyTests } from './policytest.js';
import { PolicyError } from './source.js';

const POLICY = parsePolicy(
  `listeners:
  - { name: db, protocol: http }
  - { name: raw, protocol: tcp }
rules:
  - name: deny-admin
    action: DENY
    listeners: [db]
    to: { paths: ["/admin/**"] }
  - name: payments
    action: ALLOW
    listeners: [db]
    from: { ids: [spiffe://example.org/payments] }
    to: { methods: [GET] }
  - name: reports
    action: ALLOW
    listeners: [db]
    when: { jwt: { audiences: [db], claims: { scope: [read] } } }
  - name: raw-anyone
    action: ALLOW
    listeners: [raw]
    from: { trust_domains: [example.org] }
`,
  'policy.yaml',
);

describe('runPolicyTests', () => {
  test('each case gets the decision and whether it matched the expected one', () => {
    const report = runPolicyTests(
      POLICY,
      `cases:
  - name: payments reads
    listener: db
    source: spiffe://example.org/payments
    method: GET
    path: /v1
    expect: ALLOW
    rule: payments
  - name: admin is denied
    listener: db
    source: spiffe://example.org/payments
    method: GET
    path: /admin/users
    expect: DENY
    rule: deny-admin
  - name: reports with a token
    listener: db
    method: GET
    path: /r
    jwt: { sub: spiffe://example.org/reports, aud: db, scope: [read] }
    expect: ALLOW
  - listener: raw
    source: spiffe://example.org/x
    expect: ALLOW
    rule: raw-anyone
  - name: wrong decision
    listener: db
    source: spiffe://example.org/frontend
    method: GET
    path: /v1
    expect: ALLOW
  - name: wrong rule
    listener: db
    source: spiffe://example.org/frontend
    method: GET
    path: /admin/x
    expect: DENY
    rule: default-deny
  - name: bad token
    listener: db
    method: GET
    path: /r
    jwt_error: audience mismatch
    expect: DENY
`,
      'cases.yaml',
    );
    assert.deepEqual(
      report.results.map((r) => [r.name, r.pass, r.decision.rule, r.mismatch, r.line]),
      [
        ['payments reads', true, 'payments', '', 2],
        ['admin is denied', true, 'deny-admin', '', 9],
        ['reports with a token', true, 'reports', '', 16],
        ['case 4', true, 'raw-anyone', '', 22],
        ['wrong decision', false, 'default-deny', 'expected ALLOW, got DENY', 26],
        ['wrong rule', false, 'deny-admin', 'expected rule default-deny, decided by deny-admin', 32],
        ['bad token', true, 'default-deny', '', 39],
      ],
    );
    assert.equal(report.passed, 5);
    assert.equal(report.failed, 2);
    assert.deepEqual(report.results[2]!.facts.jwt, { subject: 'spiffe://example.org/reports', audience: ['db'], claims: { sub: 'spiffe://example.org/reports', aud: 'db', scope: ['read'] } });
    assert.match(report.results[6]!.decision.reason, /bearer token rejected: audience mismatch/);
  });

  test('a dry-run policy is tested on what it decides, not on the dry-run pass', () => {
    const dry = parsePolicy('mode: dry-run\nrules:\n  - { name: r, action: ALLOW, from: { ids: [spiffe://example.org/a] } }\n', 'p.yaml');
    const report = runPolicyTests(dry, 'cases:\n  - { listener: l, source: spiffe://example.org/b, expect: DENY, rule: default-deny }\n');
    assert.equal(report.failed, 0);
    assert.equal(report.results[0]!.decision.allow, true);
  });

  test('an invalid cases file is reported whole, with positions and case names', () => {
    const text = `cases:
  - name: one
    listener: db
    source: not-an-id
    method: get
    path: /x
    expect: PERMIT
  - name: two
    listener: db
    path: /x
    expect: ALLOW
    rule: no-such-rule
  - name: three
    expect: DENY
    jwt: { sub: spiffe://example.org/a, aud: [] }
    lisener: db
`;
    assert.throws(
      () => runPolicyTests(POLICY, text, 'c.yaml'),
      (err: unknown) => {
        assert.ok(err instanceof PolicyError);
        assert.deepEqual(err.message.split('\n'), [
          'c.yaml:4:13: case one: source "not-an-id" is not a SPIFFE ID',
          'c.yaml:5:13: case one: method "get" must be an upper-case HTTP method',
          'c.yaml:7:13: case one: expect must be ALLOW or DENY, got "PERMIT"',
          'c.yaml:8:5: case two: an HTTP request has both method and path (leave both out for a TCP connection)',
          'c.yaml:12:11: case two: the policy has no rule "no-such-rule" (rules: deny-admin, payments, reports, raw-anyone, or default-deny)',
          'c.yaml:16:5: case 3: unknown key "lisener" (did you mean listener?); allowed: name, listener, source, method, path, jwt, jwt_error, expect, rule',
          'c.yaml:13:5: case three: listener is required',
          'c.yaml:15:10: case three: jwt.aud must be a string or a non-empty list of strings',
          'c.yaml:15:5: case three: jwt needs an HTTP request (method and path)',
        ]);
        return true;
      },
    );
    assert.throws(() => runPolicyTests(POLICY, 'tests: []\n', 'c.yaml'), /c\.yaml:1:1: the cases file: unknown key "tests"/);
    assert.throws(() => runPolicyTests(POLICY, 'cases:\n  - { name: a, listener: x, expect: DENY }\n  - { name: a, listener: x, expect: DENY }\n', 'c.yaml'), /c\.yaml:3:5: case a: duplicate case name/);
  });
});

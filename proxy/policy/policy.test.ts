import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestFacts } from '../decision.js';
import { compilePathPattern, type PathPattern } from './patterns.js';
import { DEFAULT_DENY, loadPolicyFile, parsePolicy, type Policy } from './policy.js';
import { PolicyError, type PolicyProblem } from './source.js';

const PAY = 'spiffe://example.org/payments';
const FRONT = 'spiffe://example.org/frontend';

function policy(text: string): Policy {
  return parsePolicy(text, 'p.yaml');
}

/** The problems parsePolicy reports for `text`. */
function problems(text: string): PolicyProblem[] {
  try {
    parsePolicy(text, 'bad.yaml');
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    assert.equal(err.code, 'ERR_PROXY_POLICY_INVALID');
    return [...err.problems];
  }
  assert.fail('the policy was accepted');
}

function rule(p: Policy, facts: RequestFacts): string {
  return p.decide(facts).rule;
}

const http = (sourceId: string | undefined, method: string, path: string, extra: Partial<RequestFacts> = {}): RequestFacts => ({
  listener: 'db',
  ...(sourceId !== undefined ? { sourceId } : {}),
  method,
  path,
  ...extra,
});

describe('matching', () => {
  test('from.ids, trust_domains and id_patterns are alternatives; not_* exclude', () => {
    const p = policy(`
rules:
  - name: r
    action: ALLOW
    from:
      ids: [${PAY}]
      trust_domains: [partner.example]
      id_patterns: ["spiffe://example.org/ns/*/sa/reports"]
      not_ids: [spiffe://partner.example/untrusted]
      not_id_patterns: ["spiffe://partner.example/legacy/**"]
`);
    const allowed = [PAY, 'spiffe://partner.example/x', 'spiffe://example.org/ns/prod/sa/reports'];
    const denied = [FRONT, 'spiffe://partner.example/untrusted', 'spiffe://partner.example/legacy/a/b', 'spiffe://partner.example.evil/x', 'spiffe://example.org/ns/prod/sa/reports/x'];
    for (const s of allowed) assert.equal(rule(p, { listener: 'db', sourceId: s }), 'r', s);
    for (const s of denied) assert.equal(rule(p, { listener: 'db', sourceId: s }), DEFAULT_DENY, s);
    assert.equal(rule(p, { listener: 'db' }), DEFAULT_DENY, 'no SVID');
  });

  test('no from matches any caller, an SVID-less one too; only exclusions match every caller not excluded', () => {
    const p = policy(`
rules:
  - name: anyone
    action: ALLOW
    listeners: [a]
  - name: all-but-frontend
    action: ALLOW
    listeners: [b]
    from: { not_ids: [${FRONT}], not_trust_domains: [evil.example] }
`);
    assert.equal(rule(p, { listener: 'a' }), 'anyone');
    assert.equal(rule(p, { listener: 'b' }), 'all-but-frontend');
    assert.equal(rule(p, { listener: 'b', sourceId: PAY }), 'all-but-frontend');
    assert.equal(rule(p, { listener: 'b', sourceId: FRONT }), DEFAULT_DENY);
    assert.equal(rule(p, { listener: 'b', sourceId: 'spiffe://evil.example/x' }), DEFAULT_DENY);
  });

  test('listeners: a rule names the listeners it applies to; without listeners it applies to all', () => {
    const p = policy(`
rules:
  - name: only-db
    action: ALLOW
    listeners: [db]
    from: { ids: [${PAY}] }
  - name: everywhere
    action: ALLOW
    from: { ids: [${FRONT}] }
`);
    assert.equal(rule(p, { listener: 'db', sourceId: PAY }), 'only-db');
    assert.equal(rule(p, { listener: 'cache', sourceId: PAY }), DEFAULT_DENY);
    assert.equal(rule(p, { listener: 'db', sourceId: FRONT }), 'everywhere');
    assert.equal(rule(p, { listener: 'never-named', sourceId: FRONT }), 'everywhere');
  });

  test('to: methods and paths must both hold; not_methods and not_paths exclude', () => {
    const p = policy(`
rules:
  - name: r
    action: ALLOW
    to:
      methods: [GET, POST]
      not_methods: [POST]
      paths: ["/v1/**", "/health"]
      not_paths: ["/v1/secret/**"]
`);
    assert.equal(rule(p, http(PAY, 'GET', '/v1/items')), 'r');
    assert.equal(rule(p, http(PAY, 'GET', '/health')), 'r');
    assert.equal(rule(p, http(PAY, 'POST', '/v1/items')), DEFAULT_DENY);
    assert.equal(rule(p, http(PAY, 'PUT', '/v1/items')), DEFAULT_DENY);
    assert.equal(rule(p, http(PAY, 'GET', '/v2/items')), DEFAULT_DENY);
    assert.equal(rule(p, http(PAY, 'GET', '/v1/secret/x')), DEFAULT_DENY);
  });

  test('when.jwt: audiences (any of), issuer, subjects and claims (string or list values)', () => {
    const p = policy(`
rules:
  - name: r
    action: ALLOW
    when:
      jwt:
        audiences: [db, db2]
        issuer: https://oidc.example.org
        subjects: [${PAY}]
        claims:
          scope: [read, admin]
          tier: ["1"]
`);
    const ok = { subject: PAY, audience: ['other', 'db2'], claims: { iss: 'https://oidc.example.org', scope: ['x', 'read'], tier: 1 } };
    assert.equal(rule(p, http(PAY, 'GET', '/', { jwt: ok })), 'r');
    assert.equal(rule(p, http(PAY, 'GET', '/', { jwt: { ...ok, claims: { ...ok.claims, scope: 'admin' } } })), 'r');
    const bad = [
      { ...ok, audience: ['other'] },
      { ...ok, claims: { ...ok.claims, iss: 'https://other' } },
      { ...ok, subject: FRONT },
      { ...ok, claims: { ...ok.claims, scope: ['write'] } },
      { ...ok, claims: { iss: ok.claims.iss, scope: 'read' } },
      { ...ok, claims: { ...ok.claims, scope: { read: true } } },
    ];
    for (const jwt of bad) assert.equal(rule(p, http(PAY, 'GET', '/', { jwt })), DEFAULT_DENY, JSON.stringify(jwt));
    assert.equal(rule(p, http(PAY, 'GET', '/')), DEFAULT_DENY, 'no token');
    const d = p.decide(http(PAY, 'GET', '/', { jwtError: 'audience mismatch' }));
    assert.equal(d.rule, DEFAULT_DENY);
    assert.match(d.reason, /bearer token rejected: audience mismatch/);
  });

  test('DENY beats ALLOW wherever it is written; within an action the first rule decides', () => {
    const p = policy(`
rules:
  - name: allow-payments
    action: ALLOW
    from: { ids: [${PAY}] }
  - name: allow-payments-again
    action: ALLOW
    from: { ids: [${PAY}] }
  - name: deny-admin
    action: DENY
    to: { paths: ["/admin/**"] }
  - name: deny-admin-again
    action: DENY
    to: { paths: ["/admin/**"] }
`);
    assert.equal(rule(p, http(PAY, 'GET', '/v1')), 'allow-payments');
    const d = p.decide(http(PAY, 'GET', '/admin/x'));
    assert.deepEqual(d, { allow: false, wouldAllow: false, rule: 'deny-admin', reason: 'denied by rule deny-admin', dryRun: false });
  });

  test('default deny names the caller, request and listener', () => {
    const p = policy(`
rules:
  - name: r
    action: ALLOW
    listeners: [database-in]
    from: { ids: [${PAY}] }
`);
    assert.deepEqual(p.decide({ listener: 'database-in', sourceId: FRONT }), {
      allow: false,
      wouldAllow: false,
      rule: 'default-deny',
      reason: `denied: no rule allows ${FRONT} on database-in`,
      dryRun: false,
    });
    assert.equal(p.decide({ listener: 'database-in' }).reason, 'denied: no rule allows a caller without an X509-SVID on database-in');
    assert.equal(p.decide({ listener: 'database-in', sourceId: FRONT, method: 'GET', path: '/x' }).reason, `denied: no rule allows ${FRONT} GET /x on database-in`);
    assert.deepEqual(p.decide({ listener: 'database-in', sourceId: PAY }), { allow: true, wouldAllow: true, rule: 'r', reason: 'allowed by rule r', dryRun: false });
  });

  test('TCP connections: ALLOW rules with to/when never match, DENY rules with to/when match on their other parts', () => {
    const p = policy(`
rules:
  - name: deny-frontend-writes
    action: DENY
    from: { ids: [${FRONT}] }
    to: { methods: [POST] }
  - name: allow-get
    action: ALLOW
    to: { methods: [GET] }
  - name: allow-payments
    action: ALLOW
    from: { ids: [${PAY}] }
`);
    assert.equal(rule(p, { listener: 'db', sourceId: FRONT }), 'deny-frontend-writes');
    assert.equal(rule(p, { listener: 'db', sourceId: 'spiffe://example.org/other' }), DEFAULT_DENY);
    assert.equal(rule(p, { listener: 'db', sourceId: PAY }), 'allow-payments');
    assert.equal(rule(p, http(FRONT, 'GET', '/')), 'allow-get');
    assert.equal(rule(p, http(FRONT, 'POST', '/')), 'deny-frontend-writes');
  });

  test('an HTTP request without a path: ALLOW path conditions fail, DENY path conditions hold (fail closed)', () => {
    const p = policy(`
rules:
  - { name: deny-admin, action: DENY, from: { ids: [${FRONT}] }, to: { paths: ["/admin/**"] } }
  - { name: allow-not-secret, action: ALLOW, to: { not_paths: ["/secret/**"] } }
`);
    assert.equal(rule(p, { listener: 'db', sourceId: FRONT, method: 'GET' }), 'deny-admin');
    assert.equal(rule(p, { listener: 'db', sourceId: PAY, method: 'GET' }), DEFAULT_DENY);
    assert.equal(rule(p, http(PAY, 'GET', '/public')), 'allow-not-secret');
  });

  test('a path that is not normalized is denied on listeners whose rules look at paths', () => {
    const p = policy(`
rules:
  - name: v1
    action: ALLOW
    listeners: [db]
    to: { paths: ["/v1/**"] }
  - name: anything
    action: ALLOW
    listeners: [plain]
`);
    const d = p.decide(http(PAY, 'GET', '/v1/../admin'));
    assert.equal(d.rule, DEFAULT_DENY);
    assert.match(d.reason, /request path has a "\." or "\.\." segment/);
    assert.equal(rule(p, http(PAY, 'GET', '/v1/%2e%2e/admin')), DEFAULT_DENY);
    assert.equal(rule(p, http(PAY, 'GET', '/v1/items')), 'v1');
    assert.equal(rule(p, { ...http(PAY, 'GET', '/v1/../x'), listener: 'plain' }), 'anything');
  });

  test('dry-run: allow is true, wouldAllow and rule say what the policy decided', () => {
    const p = policy(`
mode: dry-run
rules:
  - name: allow-payments
    action: ALLOW
    from: { ids: [${PAY}] }
  - name: deny-admin
    action: DENY
    to: { paths: ["/admin/**"] }
`);
    assert.deepEqual(p.decide(http(FRONT, 'GET', '/v1')), {
      allow: true,
      wouldAllow: false,
      rule: DEFAULT_DENY,
      reason: `dry-run: denied: no rule allows ${FRONT} GET /v1 on db`,
      dryRun: true,
    });
    assert.deepEqual(p.decide(http(PAY, 'GET', '/admin/x')), { allow: true, wouldAllow: false, rule: 'deny-admin', reason: 'dry-run: denied by rule deny-admin', dryRun: true });
    assert.deepEqual(p.decide(http(PAY, 'GET', '/v1')), { allow: true, wouldAllow: true, rule: 'allow-payments', reason: 'allowed by rule allow-payments', dryRun: true });
  });

  test('the path index never hides a rule: each request gets the first rule whose pattern matches', () => {
    const patterns = ['/api/v1/**', '/api/v1/items', '/api/*/x', '/api/v2*', '/api*', '/api/x/*', '/api', '/api/', '/v1*', '/v1/**', '/v10/a', '*.json', '*', '/', '/a/b/c/d', '/a/b/*', '/a/*/c'];
    const paths = ['/', '/api', '/api/', '/api/v1', '/api/v1/', '/api/v1/items', '/api/v1/items/7', '/api/v2', '/api/v20/q', '/api/q/x', '/apix', '/v1', '/v10', '/v10/a', '/v1/a.json', '/a/b/c/d', '/a/b/c', '/a/z/c', '/a', '/zzz', '/zzz/y.json'];
    // Every suffix of the pattern list, so each pattern is first once.
    for (let start = 0; start < patterns.length; start++) {
      const list = patterns.slice(start);
      const p = policy(`rules:\n${list.map((x, i) => `  - { name: r${i}, action: ALLOW, to: { paths: [${JSON.stringify(x)}] } }`).join('\n')}\n`);
      const compiled = list.map((x) => compilePathPattern(x) as PathPattern);
      for (const path of paths) {
        const i = compiled.findIndex((c) => c.test(path));
        assert.equal(rule(p, http(PAY, 'GET', path)), i === -1 ? DEFAULT_DENY : `r${i}`, `${path} with patterns ${list.join(' ')}`);
      }
    }
  });

  test('decisions stay right for many callers (the per-caller memo is bounded and cleared)', () => {
    const p = policy(`
rules:
  - name: odd
    action: ALLOW
    from: { id_patterns: ["spiffe://example.org/odd/*"] }
`);
    for (let i = 0; i < 10_000; i++) {
      const even = `spiffe://example.org/even/${i}`;
      const odd = `spiffe://example.org/odd/${i}`;
      assert.equal(rule(p, { listener: 'db', sourceId: even }), DEFAULT_DENY);
      assert.equal(rule(p, { listener: 'db', sourceId: odd }), 'odd');
    }
  });
});

describe('needsHttp, jwtAudiences, jwtIssuer', () => {
  const p = policy(`
listeners:
  - { name: api, protocol: http }
  - { name: raw, protocol: tcp }
  - { name: plain }
  - { name: other }
rules:
  - name: api-jwt
    action: ALLOW
    listeners: [api]
    when: { jwt: { audiences: [api, shared], issuer: https://oidc.example.org } }
  - name: api-jwt-2
    action: ALLOW
    listeners: [api]
    when: { jwt: { audiences: [api2, api] } }
  - name: raw-deny-post
    action: DENY
    listeners: [raw]
    to: { methods: [POST] }
  - name: raw-deny-jwt
    action: DENY
    listeners: [raw]
    when: { jwt: { audiences: [raw-aud], issuer: https://oidc.example.org } }
  - name: plain-ids
    action: ALLOW
    listeners: [plain]
    from: { ids: [${PAY}] }
  - name: everywhere-get
    action: ALLOW
    listeners: [api, other]
    to: { methods: [GET] }
`);

  test('needsHttp: some rule on the listener has to or when, and the listener is not declared tcp', () => {
    assert.equal(p.needsHttp('api'), true);
    assert.equal(p.needsHttp('other'), true);
    assert.equal(p.needsHttp('plain'), false);
    assert.equal(p.needsHttp('raw'), false);
    assert.equal(p.needsHttp('unknown'), false);
  });

  test('jwtAudiences: the sorted union of the listener JWT rules; jwtIssuer when one is set', () => {
    assert.deepEqual(p.jwtAudiences('api'), ['api', 'api2', 'shared']);
    assert.deepEqual(p.jwtAudiences('plain'), []);
    assert.deepEqual(p.jwtAudiences('raw'), [], 'a tcp listener carries no bearer tokens');
    assert.equal(p.jwtIssuer('raw'), undefined);
    assert.deepEqual(p.jwtAudiences('other'), []);
    assert.equal(p.jwtIssuer('api'), 'https://oidc.example.org');
    assert.equal(p.jwtIssuer('plain'), undefined);
    assert.equal(p.jwtIssuer('unknown'), undefined);
  });

  test('rules for every listener count on every listener', () => {
    const q = policy(`
rules:
  - name: jwt-everywhere
    action: ALLOW
    when: { jwt: { audiences: [mesh], issuer: https://i.example } }
`);
    assert.equal(q.needsHttp('any'), true);
    assert.deepEqual(q.jwtAudiences('any'), ['mesh']);
    assert.equal(q.jwtIssuer('any'), 'https://i.example');
  });
});

describe('strict parsing', () => {
  test('every problem is reported with file:line:col and the rule', () => {
    const text = `rules:
  - name: a
    action: ALLOW
    from: { ids: [spiffe://Example.org/x], trustDomains: [x] }
    to: { methods: [get], paths: ["/v1/a*b"] }
  - name: a
    action: PERMIT
  - name: b
    action: ALLOW
    when: { jwt: { issuer: x } }
`;
    let err: unknown;
    try {
      parsePolicy(text, 'bad.yaml');
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof PolicyError);
    assert.deepEqual(
      err.message.split('\n'),
      [
        'bad.yaml:4:44: rule a: from: unknown key "trustDomains" (did you mean trust_domains?); allowed: ids, trust_domains, id_patterns, not_ids, not_trust_domains, not_id_patterns',
        'bad.yaml:4:19: rule a: from.ids: invalid SPIFFE ID "spiffe://Example.org/x": trust domain may contain only a-z 0-9 . - _ (uppercase letters are not allowed: "E" at index 9)',
        'bad.yaml:5:21: rule a: to.methods: method "get" must be upper case (GET)',
        'bad.yaml:5:35: rule a: to.paths: path pattern "/v1/a*b": "*" must be a whole segment, a leading "*" (suffix) or a trailing "*" after text (prefix)',
        'bad.yaml:7:13: rule a: action must be ALLOW or DENY, got "PERMIT"',
        'bad.yaml:6:5: rule a: duplicate rule name (first at bad.yaml:2:5)',
        'bad.yaml:10:18: rule b: when.jwt.audiences is required: a JWT-SVID is always validated against an audience',
      ],
    );
  });

  const cases: [string, string, RegExp][] = [
    ['unknown top-level key', 'rulez: []\n', /^bad\.yaml:1:1: the policy: unknown key "rulez" \(did you mean rules\?\)/],
    ['YAML syntax error', 'rules: [\n', /^bad\.yaml:\d+:\d+: YAML: /],
    ['empty file', '', /^bad\.yaml:1:1: the file is empty/],
    ['no rules', 'mode: enforce\n', /the policy has no rules/],
    ['bad mode', 'mode: audit\nrules:\n  - { name: r, action: ALLOW }\n', /^bad\.yaml:1:7: mode must be enforce or dry-run, got "audit"/],
    ['duplicate YAML key', 'rules:\n  - name: r\n    action: ALLOW\n    action: DENY\n', /^bad\.yaml:4:5: YAML: Map keys must be unique/],
    ['rule without a name', 'rules:\n  - action: ALLOW\n', /^bad\.yaml:2:5: rule 1 needs a name/],
    ['reserved name', 'rules:\n  - { name: default-deny, action: ALLOW }\n', /reserved/],
    ['bad name', 'rules:\n  - { name: "a b", action: ALLOW }\n', /rule name "a b" may contain only/],
    ['root ID in ids', 'rules:\n  - { name: r, action: ALLOW, from: { ids: [spiffe://example.org] } }\n', /rule r: from\.ids: "spiffe:\/\/example\.org" names a trust domain, not a workload/],
    ['trust domain as an ID', 'rules:\n  - { name: r, action: ALLOW, from: { trust_domains: [spiffe://example.org] } }\n', /write the bare name \(example\.org\)/],
    ['bad trust domain', 'rules:\n  - { name: r, action: ALLOW, from: { trust_domains: [Example.org] } }\n', /invalid trust domain "Example\.org"/],
    ['bad id pattern', 'rules:\n  - { name: r, action: ALLOW, from: { id_patterns: ["spiffe://example.org/a*"] } }\n', /rule r: from\.id_patterns: .*whole path segment/],
    ['empty from', 'rules:\n  - { name: r, action: ALLOW, from: {} }\n', /rule r: from needs at least one of ids, /],
    ['empty list', 'rules:\n  - { name: r, action: ALLOW, to: { methods: [] } }\n', /rule r: to\.methods must not be an empty list/],
    ['duplicate item', 'rules:\n  - { name: r, action: ALLOW, to: { methods: [GET, GET] } }\n', /rule r: to\.methods: "GET" is listed twice/],
    ['number where a string is expected', 'rules:\n  - { name: r, action: ALLOW, to: { paths: [42] } }\n', /to\.paths item must be a string, got number \(quote it\)/],
    ['claims about aud', 'rules:\n  - { name: r, action: ALLOW, when: { jwt: { audiences: [a], claims: { aud: [x] } } } }\n', /use when\.jwt\.audiences for "aud"/],
    ['claim value not a string', 'rules:\n  - { name: r, action: ALLOW, when: { jwt: { audiences: [a], claims: { admin: [true] } } } }\n', /when\.jwt\.claims\.admin item must be a string, got boolean/],
    ['undeclared listener', 'listeners:\n  - { name: db }\nrules:\n  - { name: r, action: ALLOW, listeners: [dbb] }\n', /^bad\.yaml:4:43: rule r: listeners: listener "dbb" is not declared under listeners \(declared: db\)/],
    ['bad listener protocol', 'listeners:\n  - { name: db, protocol: grpc }\nrules:\n  - { name: r, action: ALLOW }\n', /listener db: protocol must be http or tcp/],
    ['listener declared twice', 'listeners:\n  - { name: db }\n  - { name: db }\nrules:\n  - { name: r, action: ALLOW }\n', /^bad\.yaml:3:5: listener db is declared twice/],
    [
      'two JWT issuers on one listener',
      'rules:\n  - { name: a, action: ALLOW, listeners: [db], when: { jwt: { audiences: [x], issuer: https://a } } }\n  - { name: b, action: ALLOW, listeners: [db], when: { jwt: { audiences: [x], issuer: https://b } } }\n',
      /^bad\.yaml:3:5: rule b: when\.jwt\.issuer "https:\/\/b" conflicts with "https:\/\/a" of rule a on listener db/,
    ],
    [
      'an issuer for every listener and another for one',
      'rules:\n  - { name: a, action: ALLOW, when: { jwt: { audiences: [x], issuer: https://a } } }\n  - { name: b, action: ALLOW, listeners: [db], when: { jwt: { audiences: [x], issuer: https://b } } }\n',
      /rule b: when\.jwt\.issuer "https:\/\/b" on listener db conflicts with "https:\/\/a" of rule a \(every listener\)/,
    ],
  ];
  for (const [what, text, re] of cases) {
    test(what, () => {
      const ps = problems(text);
      assert.ok(ps.length > 0);
      const msg = ps.map((p) => `${p.file}:${p.line}:${p.col}: ${p.rule !== undefined ? `rule ${p.rule}: ` : ''}${p.message}`).join('\n');
      assert.match(msg, re);
    });
  }

  test('aliases are read as what they point to', () => {
    const p = policy(`
rules:
  - name: a
    action: ALLOW
    listeners: [x]
    from: { ids: &callers [${PAY}] }
  - name: b
    action: ALLOW
    listeners: [y]
    from: { ids: *callers }
`);
    assert.equal(rule(p, { listener: 'y', sourceId: PAY }), 'b');
  });

  test('loadPolicyFile reads a file, and names it in errors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'policy-test-'));
    try {
      const file = join(dir, 'p.yaml');
      writeFileSync(file, `rules:\n  - { name: r, action: ALLOW, from: { ids: [${PAY}] } }\n`);
      assert.equal(rule(loadPolicyFile(file), { listener: 'l', sourceId: PAY }), 'r');
      writeFileSync(file, 'rules:\n  - { name: r, action: allow }\n');
      assert.throws(() => loadPolicyFile(file), (e: unknown) => e instanceof PolicyError && e.message === `${file}:2:24: rule r: action must be ALLOW or DENY, got "allow"`);
      assert.throws(() => loadPolicyFile(join(dir, 'missing.yaml')), /missing\.yaml:1:1: cannot read the policy file: no such file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// spindle-proxy's config file, the one-listener flags, the -allow / -expect patterns, the source
// ID cap of the metrics, and `spindle-proxy validate` as a process.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError } from '../common/configmessages.js';
import { parseSpiffeId } from '../spiffe/id.js';
import { AllowlistDecider, authorizePatterns, parseIdPattern } from './allowlist.js';
import { DEFAULT_SOCKET_PATH, parseProxyConfig } from './config.js';
import { SourceLabels } from './telemetry.js';
import { repoRoot } from '../test/support/paths.js';

const proxyBin = join(repoRoot, 'bin', 'spindle-proxy');

function problemsOf(text: string): string[] {
  try {
    parseProxyConfig(text, '/etc/proxy.yaml', {});
  } catch (err) {
    assert.ok(isConfigError(err), String(err));
    return err.problems;
  }
  assert.fail('the config was accepted');
}

describe('config file', () => {
  test('a full file: listeners, defaults, socket path from the environment', () => {
    const cfg = parseProxyConfig(
      `admin: 127.0.0.1:9901
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    forward: unix:/run/app.sock
    http: true
    allow: [spiffe://example.org/web, spiffe://example.org/ns/*/sa/api]
    header_timeout: 500ms
  - name: out
    mode: outbound
    listen: 127.0.0.1:9000
    connect: db.internal:8443
    expect: spiffe://example.org/db
`,
      '/etc/proxy.yaml',
      { SPIFFE_ENDPOINT_SOCKET: 'unix:///run/agent.sock' },
    );
    assert.equal(cfg.socketPath, 'unix:///run/agent.sock');
    assert.deepEqual(cfg.admin, { host: '127.0.0.1', port: 9901 });
    const [i, o] = cfg.listeners;
    assert.deepEqual(i!.forward, { kind: 'unix', path: '/run/app.sock' });
    assert.equal(i!.headerTimeoutMs, 500);
    assert.equal(i!.handshakeTimeoutMs, 10_000);
    assert.equal(i!.maxConnections, 1024);
    assert.equal(i!.http, true);
    assert.deepEqual(o!.connect, { host: 'db.internal', port: 8443 });
    assert.equal(o!.expect![0]!.kind, 'exact');
    assert.equal(parseProxyConfig('listeners:\n  - {name: o, mode: outbound, listen: "127.0.0.1:1", connect: "a:2", expect: spiffe://x.org}\n', 'f', {}).socketPath, DEFAULT_SOCKET_PATH);
  });

  test('every problem at once, each naming file:line and the key', () => {
    const problems = problemsOf(`listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8443
    forward: 10.0.0.5:8080
    allow: [spiffe://example.org/web]
    idle_timout: 5m
  - name: out
    mode: outbound
    listen: 0.0.0.0:9000
    connect: db:8443
    expect: [not-an-id]
`);
    assert.deepEqual(problems, [
      '/etc/proxy.yaml:5: listeners[0] (in).forward: the local service must be on loopback (127.0.0.0/8, ::1, localhost) or a unix: socket, got "10.0.0.5:8080"',
      '/etc/proxy.yaml:7: listeners[0].idle_timout: unknown key (did you mean "idle_timeout"?)',
      '/etc/proxy.yaml:10: listeners[1] (out).listen: an outbound listener accepts plain TCP, so it must listen on loopback (127.0.0.1, ::1), got "0.0.0.0:9000"',
      '/etc/proxy.yaml:12: listeners[1] (out).expect: invalid SPIFFE ID pattern "not-an-id": it must start with spiffe://',
    ]);
  });

  test('inbound listeners need exactly one of allow and policy; duplicate names and addresses; syntax errors', () => {
    assert.match(problemsOf('listeners:\n  - {name: a, mode: inbound, listen: "127.0.0.1:1", forward: "127.0.0.1:2"}\n')[0]!, /^\/etc\/proxy\.yaml:2: listeners\[0\] \(a\): an inbound listener needs allow/);
    assert.match(problemsOf('listeners:\n  - {name: a, mode: inbound, listen: "127.0.0.1:1", forward: "127.0.0.1:2", allow: spiffe://x.org, policy: p.yaml}\n')[0]!, /set either allow or policy, not both/);
    const dup = problemsOf(
      'listeners:\n  - {name: a, mode: inbound, listen: "127.0.0.1:1", forward: "127.0.0.1:2", allow: spiffe://x.org}\n  - {name: a, mode: inbound, listen: "127.0.0.1:1", forward: "127.0.0.1:2", allow: spiffe://x.org}\n',
    );
    assert.match(dup[0]!, /^\/etc\/proxy\.yaml:3: listeners\[1\]\.name: "a" is used by another listener/);
    assert.match(problemsOf('listeners:\n  - name: a\n   mode: [\n')[0]!, /^\/etc\/proxy\.yaml:3: /);
    assert.match(problemsOf('listenrs: []\n')[0]!, /^\/etc\/proxy\.yaml:1: listenrs: unknown key \(did you mean "listeners"\?\)/);
  });

  test('admission limits: max_pending_handshakes and max_pending_per_address, with defaults; inbound only', () => {
    const base = 'listeners:\n  - {name: a, mode: inbound, listen: "127.0.0.1:1", forward: "127.0.0.1:2", allow: spiffe://x.org';
    const d = parseProxyConfig(`${base}}\n`, 'f', {}).listeners[0]!;
    assert.equal(d.maxPendingHandshakes, 1024);
    assert.equal(d.maxPendingPerAddress, 64);
    const c = parseProxyConfig(`${base}, max_pending_handshakes: 300, max_pending_per_address: 8}\n`, 'f', {}).listeners[0]!;
    assert.equal(c.maxPendingHandshakes, 300);
    assert.equal(c.maxPendingPerAddress, 8);
    assert.match(problemsOf(`${base}, max_pending_per_address: 0}\n`)[0]!, /listeners\[0\] \(a\)\.max_pending_per_address: expected a whole number from 1 to 1000000, got 0/);
    assert.match(
      problemsOf('listeners:\n  - {name: o, mode: outbound, listen: "127.0.0.1:1", connect: "a:2", expect: spiffe://x.org, max_pending_handshakes: 10}\n')[0]!,
      /listeners\[0\] \(o\)\.max_pending_handshakes: only for inbound listeners \(this one is outbound\)/,
    );
    assert.match(problemsOf(`${base}, max_pending_per_adress: 8}\n`)[0]!, /did you mean "max_pending_per_address"/);
  });

  test('a relative policy path resolves against the config file', () => {
    const cfg = parseProxyConfig('listeners:\n  - {name: a, mode: inbound, listen: "127.0.0.1:1", forward: "127.0.0.1:2", policy: policies/a.yaml}\n', '/etc/spindle/proxy.yaml', {});
    assert.equal(cfg.listeners[0]!.policy, '/etc/spindle/policies/a.yaml');
  });
});

describe('-allow / -expect patterns', () => {
  const id = (s: string) => parseSpiffeId(s);
  test('exact ID, trust domain, path patterns', () => {
    assert.ok(parseIdPattern('spiffe://example.org/payments').matches(id('spiffe://example.org/payments')));
    assert.ok(!parseIdPattern('spiffe://example.org/payments').matches(id('spiffe://example.org/payments/x')));
    const td = parseIdPattern('spiffe://example.org');
    assert.equal(td.kind, 'member');
    assert.ok(td.matches(id('spiffe://example.org/anything/at/all')));
    assert.ok(!td.matches(id('spiffe://example.org.evil/x')));
    const one = parseIdPattern('spiffe://example.org/ns/*/sa/web');
    assert.ok(one.matches(id('spiffe://example.org/ns/prod/sa/web')));
    assert.ok(!one.matches(id('spiffe://example.org/ns/prod/x/sa/web')), '* stays inside one segment');
    assert.ok(!one.matches(id('spiffe://other.org/ns/prod/sa/web')), 'the trust domain is literal');
    const deep = parseIdPattern('spiffe://example.org/ns/prod/**');
    assert.ok(deep.matches(id('spiffe://example.org/ns/prod/sa/web')));
    assert.ok(deep.matches(id('spiffe://example.org/ns/prod')), '** is zero or more segments, as in the policy');
    assert.ok(!deep.matches(id('spiffe://example.org/ns/production')));
    for (const bad of ['example.org/x', 'spiffe://EXAMPLE..org/x', 'spiffe://example.org/**/x', 'spiffe://example.org/a b', 'spiffe://example.org//x', 'spiffe://example.org/web-*']) {
      assert.throws(() => parseIdPattern(bad), /invalid SPIFFE ID pattern/, bad);
    }
  });

  test('the allowlist decider names the rule; authorizePatterns refuses with not_expected', () => {
    const d = new AllowlistDecider(['spiffe://example.org/web', 'spiffe://partner.org']);
    assert.deepEqual(d.decide({ listener: 'in', sourceId: 'spiffe://partner.org/x' }), {
      allow: true,
      wouldAllow: true,
      rule: 'allow spiffe://partner.org',
      reason: 'spiffe://partner.org/x matches spiffe://partner.org',
      dryRun: false,
    });
    assert.equal(d.decide({ listener: 'in', sourceId: 'spiffe://example.org/db' }).rule, 'default-deny');
    assert.equal(d.decide({ listener: 'in' }).allow, false);
    assert.equal(d.needsHttp(), false);
    assert.deepEqual(d.jwtAudiences(), []);
    const auth = authorizePatterns([parseIdPattern('spiffe://example.org/db')]);
    auth(id('spiffe://example.org/db'), []);
    assert.throws(() => auth(id('spiffe://example.org/web'), []), (err: { reason?: string }) => err.reason === 'not_expected');
  });

  test('metric labels: at most max distinct source IDs, then "other"', () => {
    const s = new SourceLabels(2);
    assert.equal(s.label('spiffe://a.org/1'), 'spiffe://a.org/1');
    assert.equal(s.label('spiffe://a.org/2'), 'spiffe://a.org/2');
    assert.equal(s.label('spiffe://a.org/3'), 'other');
    assert.equal(s.label('spiffe://a.org/1'), 'spiffe://a.org/1');
    assert.equal(s.label(undefined), 'none');
  });
});

describe('spindle-proxy validate', () => {
  test('prints every problem with file:line, exit 1; a good file is valid; a broken policy file is named with its line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spindle-proxy-cfg-'));
    try {
      const bad = join(dir, 'bad.yaml');
      writeFileSync(bad, 'listeners:\n  - name: in\n    mode: sideways\n    listen: 127.0.0.1:8443\n');
      let r = spawnSync(proxyBin, ['validate', '-config', bad], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`${bad.replace(/[.]/g, '\\.')}:3: listeners\\[0\\] \\(in\\)\\.mode: expected inbound or outbound, got "sideways"`));
      const good = join(dir, 'good.yaml');
      writeFileSync(good, 'listeners:\n  - {name: in, mode: inbound, listen: "127.0.0.1:8443", forward: "127.0.0.1:8080", allow: spiffe://example.org/web}\n');
      r = spawnSync(proxyBin, ['validate', '-config', good], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'Configuration is valid.\n');
      const pol = join(dir, 'pol.yaml');
      writeFileSync(pol, 'listeners:\n  - {name: in, mode: inbound, listen: "127.0.0.1:8443", forward: "127.0.0.1:8080", policy: p.yaml}\n');
      writeFileSync(join(dir, 'p.yaml'), 'rules:\n  - name: web\n    action: ALLOW\n    listeners: [in]\n    from: { ids: [spiffe://example.org/web] }\n');
      r = spawnSync(proxyBin, ['validate', '-config', pol], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      writeFileSync(join(dir, 'p.yaml'), 'rules:\n  - name: web\n    action: ALOW\n    listeners: [in]\n    from: { ids: [spiffe://example.org/web] }\n');
      r = spawnSync(proxyBin, ['validate', '-config', pol], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /p\.yaml:3:\d+: rule web: .*ALOW/);
      r = spawnSync(proxyBin, ['inbound', '-listen', '127.0.0.1:8443', '-forward', '127.0.0.1:8080'], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /-allow is required/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compileIdPattern, compilePathPattern, pathCovers, pathNotNormal, type IdPattern, type PathPattern } from './patterns.js';

function id(text: string): IdPattern {
  const p = compileIdPattern(text);
  assert.notEqual(typeof p, 'string', `${text}: ${String(p)}`);
  return p as IdPattern;
}

function path(text: string): PathPattern {
  const p = compilePathPattern(text);
  assert.notEqual(typeof p, 'string', `${text}: ${String(p)}`);
  return p as PathPattern;
}

describe('SPIFFE ID patterns', () => {
  test('"*" matches any ID', () => {
    const p = id('*');
    assert.ok(p.test('spiffe://example.org/a') && p.test('spiffe://other.org/x/y'));
    assert.equal(p.wide, true);
  });

  test('"*" is exactly one segment', () => {
    const p = id('spiffe://example.org/ns/*/sa/payments');
    assert.ok(p.test('spiffe://example.org/ns/prod/sa/payments'));
    assert.ok(!p.test('spiffe://example.org/ns/prod/x/sa/payments'));
    assert.ok(!p.test('spiffe://example.org/ns/sa/payments'));
    assert.ok(!p.test('spiffe://example.org/ns/prod/sa/payments2'));
    assert.ok(!p.test('spiffe://example.org.evil/ns/prod/sa/payments'));
    assert.equal(p.trustDomain, 'example.org');
    assert.equal(p.wide, false);
  });

  test('a trailing "**" is zero or more segments', () => {
    const p = id('spiffe://example.org/ns/prod/**');
    assert.ok(p.test('spiffe://example.org/ns/prod'));
    assert.ok(p.test('spiffe://example.org/ns/prod/sa/x'));
    assert.ok(!p.test('spiffe://example.org/ns/production'));
    assert.ok(!p.test('spiffe://example.org/ns'));
    assert.equal(id('spiffe://example.org/**').wide, true);
  });

  test('literal patterns match only themselves (regex characters are literal)', () => {
    const p = id('spiffe://example.org/a.b');
    assert.ok(p.test('spiffe://example.org/a.b'));
    assert.ok(!p.test('spiffe://example.org/aXb'));
  });

  test('bad patterns say why', () => {
    const bad: [string, RegExp][] = [
      ['example.org/x', /must be "\*" or start with "spiffe:\/\/"/],
      ['spiffe://*/x', /trust domain must be literal/],
      ['spiffe://example.org', /has no path: .*trust_domains/],
      ['spiffe://example.org/sa-*', /must be a whole path segment/],
      ['spiffe://example.org/**/x', /only allowed as the last segment/],
      ['spiffe://Example.org/x', /uppercase/],
      ['spiffe://example.org/a//b', /empty segments/],
      ['spiffe://example.org/a/%41', /percent-encoding/],
    ];
    for (const [text, re] of bad) {
      const r = compileIdPattern(text);
      assert.equal(typeof r, 'string', text);
      assert.match(r as string, re, text);
    }
  });
});

describe('path patterns', () => {
  test('exact', () => {
    const p = path('/health');
    assert.equal(p.kind, 'exact');
    assert.ok(p.test('/health') && !p.test('/health/') && !p.test('/healthz'));
  });

  test('"*" as a segment is exactly one non-empty segment', () => {
    const p = path('/v1/*/items');
    assert.ok(p.test('/v1/a/items'));
    assert.ok(!p.test('/v1/a/b/items') && !p.test('/v1//items') && !p.test('/v1/items'));
    const last = path('/v1/*');
    assert.ok(last.test('/v1/x') && !last.test('/v1/x/y') && !last.test('/v1/') && !last.test('/v1'));
  });

  test('a trailing "/**" is the base and everything below it', () => {
    const p = path('/v1/**');
    for (const ok of ['/v1', '/v1/', '/v1/a', '/v1/a/b/c']) assert.ok(p.test(ok), ok);
    for (const no of ['/v10', '/v', '/x/v1']) assert.ok(!p.test(no), no);
  });

  test("Istio's prefix and suffix forms and any path", () => {
    const prefix = path('/v1/item*');
    assert.equal(prefix.kind, 'prefix');
    assert.ok(prefix.test('/v1/item') && prefix.test('/v1/items/7') && !prefix.test('/v1/ite'));
    const suffix = path('*.json');
    assert.equal(suffix.kind, 'suffix');
    assert.ok(suffix.test('/a/b.json') && !suffix.test('/a/b.jsonx'));
    const any = path('*');
    assert.ok(any.test('/anything') && any.test('/'));
  });

  test('bad path patterns say why', () => {
    const bad: [string, RegExp][] = [
      ['v1/x', /does not start with "\/"/],
      ['/v1//x', /empty segment/],
      ['/v1/../x', /"\." or "\.\." segment/],
      ['/v1/%2e%2e/x', /percent-encoded/],
      ['/v1/a*b', /must be a whole segment/],
      ['/**/x', /only allowed as the last segment/],
      ['*/x*', /one "\*", at the start/],
      ['/v1?x=1', /"\?" and "#" are not allowed/],
    ];
    for (const [text, re] of bad) {
      const r = compilePathPattern(text);
      assert.equal(typeof r, 'string', text);
      assert.match(r as string, re, text);
    }
  });

  test('pathCovers is conservative and right', () => {
    const yes: [string, string][] = [
      ['*', '/x/**'],
      ['/v1/**', '/v1/a/b'],
      ['/v1/**', '/v1/*/items'],
      ['/v1/**', '/v1/items*'],
      ['/v1/**', '/v1/**'],
      ['/v1*', '/v1/**'],
      ['/v1/*', '/v1/a'],
      ['*.json', '/a.json'],
    ];
    const no: [string, string][] = [
      ['/v1/**', '/v1*'], // /v1* matches /v10
      ['/v1/**', '*.json'],
      ['/v1/*', '/v1/**'],
      ['/v1/a', '/v1/*'],
      ['/v1*', '*'],
      ['*.json', '/v1/**'],
    ];
    for (const [a, b] of yes) assert.ok(pathCovers(path(a), path(b)), `${a} covers ${b}`);
    for (const [a, b] of no) assert.ok(!pathCovers(path(a), path(b)), `${a} does not cover ${b}`);
  });

  test('request paths in normal form', () => {
    assert.equal(pathNotNormal('/v1/a/b'), undefined);
    assert.equal(pathNotNormal('/'), undefined);
    assert.equal(pathNotNormal('/v1/a..b/c.d'), undefined);
    for (const p of ['/v1/../admin', '/v1/./x', '/v1/..', '//admin', '/v1/%2E%2e/admin', '/v1%2fadmin', '/v1\\admin', 'v1', '*']) {
      assert.notEqual(pathNotNormal(p), undefined, p);
    }
  });
});

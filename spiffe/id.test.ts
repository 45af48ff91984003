import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, SpiffeError } from './errors.js';
import {
  MAX_SPIFFE_ID_LENGTH,
  MAX_TRUST_DOMAIN_LENGTH,
  assertLeafId,
  idFromPath,
  idFromSegments,
  isMemberOf,
  isSpiffeId,
  isTrustDomain,
  parseLeafSpiffeId,
  parseSpiffeId,
  parseTrustDomain,
  pathOf,
  trustDomainId,
  trustDomainOf,
  type SpiffeId,
  type TrustDomain,
} from './id.js';

/** Asserts fn throws a SpiffeError with this code and reason, whose message quotes `mustMention`. */
function assertFails(fn: () => unknown, code: string, reason: string, mustMention?: string): SpiffeError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof SpiffeError, `expected a SpiffeError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.reason, reason, caught.message);
  if (mustMention !== undefined) {
    assert.ok(caught.message.includes(JSON.stringify(mustMention)), `message should quote the input: ${caught.message}`);
  }
  return caught;
}

const TD_256 = 'a'.repeat(256);
const TD_255 = 'a'.repeat(255);

// Sample IDs of the SPIFFE ID specification, plus extra valid cases.
const VALID: Array<{ id: string; td: string; path: string }> = [
  { id: 'spiffe://example.org/ns/prod/sa/web-fe_1', td: 'example.org', path: '/ns/prod/sa/web-fe_1' },
  { id: 'spiffe://example.org', td: 'example.org', path: '' },
  { id: 'spiffe://example.org/Payments/MySQL', td: 'example.org', path: '/Payments/MySQL' },
  { id: 'spiffe://example.org/.hidden', td: 'example.org', path: '/.hidden' },
  { id: 'spiffe://192.168.0.1/svc', td: '192.168.0.1', path: '/svc' },
  { id: 'spiffe://a', td: 'a', path: '' },
  { id: 'spiffe://example.org/...', td: 'example.org', path: '/...' },
  { id: 'spiffe://example.org/..x', td: 'example.org', path: '/..x' },
  { id: 'spiffe://example.org/x..', td: 'example.org', path: '/x..' },
  { id: 'spiffe://example.org/.../..x/.y', td: 'example.org', path: '/.../..x/.y' },
  { id: 'spiffe://example.org/ABC/xYz09', td: 'example.org', path: '/ABC/xYz09' },
  { id: 'spiffe://my_td-1.example/a-b_c.d', td: 'my_td-1.example', path: '/a-b_c.d' },
  { id: 'spiffe://.../x', td: '...', path: '/x' },
  { id: `spiffe://${TD_255}/w`, td: TD_255, path: '/w' },
];

const ID = ErrorCode.SPIFFE_ID_INVALID;

const INVALID: Array<{ input: string; reason: string; why: string }> = [
  // Sample vectors.
  { input: 'http://example.org/w', reason: 'scheme', why: 'other scheme' },
  { input: 'SPIFFE://example.org/w', reason: 'scheme', why: 'uppercase scheme' },
  { input: 'spiffe:/example.org/w', reason: 'scheme', why: 'no authority' },
  { input: 'spiffe://', reason: 'empty_trust_domain', why: 'empty trust domain' },
  { input: 'spiffe://Example.org/w', reason: 'trust_domain_char', why: 'uppercase trust domain' },
  { input: 'spiffe://example.org:8443/w', reason: 'trust_domain_char', why: 'port' },
  { input: 'spiffe://user@example.org/w', reason: 'trust_domain_char', why: 'userinfo' },
  { input: 'spiffe://example.org/w?x=1', reason: 'path_char', why: 'query' },
  { input: 'spiffe://example.org/w#f', reason: 'path_char', why: 'fragment' },
  { input: 'spiffe://example.org/%41', reason: 'path_char', why: 'percent-encoding' },
  { input: 'spiffe://example.org/w/', reason: 'path_trailing_slash', why: 'trailing slash' },
  { input: 'spiffe://example.org//w', reason: 'path_empty_segment', why: 'empty segment' },
  { input: 'spiffe://example.org/a/../b', reason: 'path_dot_segment', why: 'dot segment' },
  { input: 'spiffe://[::1]/w', reason: 'trust_domain_char', why: 'IPv6 literal' },
  { input: 'spiffe://example.org/a b', reason: 'path_char', why: 'space' },
  { input: `spiffe://${TD_256}/w`, reason: 'trust_domain_too_long', why: 'trust domain of 256 bytes' },
  // More.
  { input: '', reason: 'empty', why: 'empty' },
  { input: 'example.org/w', reason: 'scheme', why: 'no scheme' },
  { input: 'spiffe:', reason: 'scheme', why: 'scheme only' },
  { input: 'spiffe:example.org', reason: 'scheme', why: 'opaque' },
  { input: 'Spiffe://example.org', reason: 'scheme', why: 'mixed-case scheme' },
  { input: ' spiffe://example.org', reason: 'scheme', why: 'leading space' },
  { input: 'spiffe:///w', reason: 'empty_trust_domain', why: 'empty trust domain with path' },
  { input: 'spiffe://example.org/', reason: 'path_trailing_slash', why: 'bare slash path' },
  { input: 'spiffe://example.org//', reason: 'path_empty_segment', why: 'double slash only' },
  { input: 'spiffe://example.org/a//b', reason: 'path_empty_segment', why: 'inner empty segment' },
  { input: 'spiffe://example.org/a/./b', reason: 'path_dot_segment', why: 'single dot inner' },
  { input: 'spiffe://example.org/..', reason: 'path_dot_segment', why: 'dot-dot last' },
  { input: 'spiffe://example.org/.', reason: 'path_dot_segment', why: 'dot last' },
  { input: 'spiffe://example.org/./a', reason: 'path_dot_segment', why: 'dot first' },
  { input: 'spiffe://example.org/w?', reason: 'path_char', why: 'empty query' },
  { input: 'spiffe://example.org/w#', reason: 'path_char', why: 'empty fragment' },
  { input: 'spiffe://example.org?', reason: 'trust_domain_char', why: 'query right after trust domain' },
  { input: 'spiffe://example.org#', reason: 'trust_domain_char', why: 'fragment right after trust domain' },
  { input: 'spiffe://example.org/caf\u00e9', reason: 'path_char', why: 'non-ASCII (2-byte UTF-8) in path' },
  { input: 'spiffe://example.org/\u{1F600}', reason: 'path_char', why: 'non-ASCII (4-byte UTF-8) in path' },
  { input: 'spiffe://ex\u00e4mple.org/w', reason: 'trust_domain_char', why: 'non-ASCII in trust domain' },
  { input: 'spiffe://example.org/a\u0000b', reason: 'path_char', why: 'NUL in path' },
  { input: 'spiffe://exa\u0000mple.org/a', reason: 'trust_domain_char', why: 'NUL in trust domain' },
  { input: 'spiffe://example.org/a\n', reason: 'path_char', why: 'trailing newline' },
  { input: 'spiffe://example.org/a\\b', reason: 'path_char', why: 'backslash' },
  { input: 'spiffe://example.org/a+b', reason: 'path_char', why: 'plus' },
  { input: 'spiffe://example.org/a:b', reason: 'path_char', why: 'colon in path' },
  { input: 'spiffe://example.org/a~b', reason: 'path_char', why: 'tilde' },
  { input: 'spiffe://exa%6Dple.org/w', reason: 'trust_domain_char', why: 'percent in trust domain' },
  { input: 'spiffe://example org/w', reason: 'trust_domain_char', why: 'space in trust domain' },
  { input: 'spiffe://example.org:/w', reason: 'trust_domain_char', why: 'empty port' },
  { input: 'spiffe://[::1]', reason: 'trust_domain_char', why: 'IPv6 literal without path' },
  { input: 'spiffe:// example.org', reason: 'trust_domain_char', why: 'space before trust domain' },
];

describe('parseSpiffeId: valid IDs', () => {
  for (const v of VALID) {
    it(`accepts ${v.id.length > 60 ? `${v.id.slice(0, 40)}...` : v.id}`, () => {
      const id = parseSpiffeId(v.id);
      assert.equal(id, v.id); // exact same string: nothing normalised
      assert.equal(isSpiffeId(v.id), true);
      assert.equal(trustDomainOf(id), v.td);
      assert.equal(pathOf(id), v.path);
      assert.equal(isMemberOf(id, parseTrustDomain(v.td)), true);
    });
  }
});

describe('parseSpiffeId: invalid IDs', () => {
  for (const v of INVALID) {
    it(`rejects ${JSON.stringify(v.input.length > 60 ? `${v.input.slice(0, 40)}...` : v.input)} (${v.why}) as ${v.reason}`, () => {
      const err = assertFails(() => parseSpiffeId(v.input), ID, v.reason, v.input.length <= 300 ? v.input : undefined);
      assert.match(err.message, /^invalid SPIFFE ID /);
      assert.equal(isSpiffeId(v.input), false);
      assert.throws(() => parseLeafSpiffeId(v.input), (e: unknown) => e instanceof SpiffeError && e.reason === v.reason);
    });
  }

  it('names the specific rule in the message', () => {
    const cases: Array<[string, RegExp]> = [
      ['spiffe://example.org:8443/w', /port/],
      ['spiffe://user@example.org/w', /userinfo/],
      ['spiffe://Example.org/w', /uppercase/],
      ['spiffe://[::1]/w', /IPv6/],
      ['spiffe://example.org/w?x=1', /query/],
      ['spiffe://example.org/w#f', /fragment/],
      ['spiffe://example.org/%41', /percent-encoding/],
      ['spiffe://example.org/caf\u00e9', /non-ASCII.*U\+00E9/],
      ['spiffe://example.org/a\u0000b', /control character.*U\+0000/],
      ['SPIFFE://example.org/w', /lowercase/],
      ['spiffe:/example.org/w', /"\/\/"/],
    ];
    for (const [input, re] of cases) {
      assert.throws(() => parseSpiffeId(input), (e: unknown) => e instanceof SpiffeError && re.test(e.message), input);
    }
  });

  it('rejects non-string values without a TypeError', () => {
    for (const v of [undefined, null, 42, {}, ['spiffe://a']]) {
      assertFails(() => parseSpiffeId(v as unknown as string), ID, 'not_string');
      assert.equal(isSpiffeId(v), false);
    }
  });
});

describe('parseSpiffeId: length limits (bytes)', () => {
  const prefix = 'spiffe://example.org/';
  it(`accepts exactly ${MAX_SPIFFE_ID_LENGTH} bytes`, () => {
    const s = prefix + 'a'.repeat(MAX_SPIFFE_ID_LENGTH - prefix.length);
    assert.equal(s.length, 2048);
    assert.equal(parseSpiffeId(s), s);
  });
  it('accepts 2048 bytes made of many segments', () => {
    const s = `spiffe://example.org${'/ab'.repeat(676)}`;
    assert.equal(s.length, 2048);
    assert.equal(parseSpiffeId(s), s);
  });
  it(`rejects ${MAX_SPIFFE_ID_LENGTH + 1} bytes as too_long, quoting a cut of the input`, () => {
    const s = prefix + 'a'.repeat(MAX_SPIFFE_ID_LENGTH + 1 - prefix.length);
    assert.equal(s.length, 2049);
    const err = assertFails(() => parseSpiffeId(s), ID, 'too_long');
    assert.ok(err.message.includes(prefix), err.message);
    assert.ok(err.message.includes('2049'), err.message);
    assert.ok(err.message.length < 1000, 'the message must not embed the whole input');
  });
  it('counts UTF-8 bytes, not UTF-16 units', () => {
    // 700 x U+00E9 = 700 units but 1400 bytes; with 700 units of ASCII this is 1421 units / 2121 bytes.
    const s = `${prefix}${'a'.repeat(700)}${'\u00e9'.repeat(700)}`;
    assert.ok(s.length <= MAX_SPIFFE_ID_LENGTH);
    assertFails(() => parseSpiffeId(s), ID, 'too_long');
    // Same unit count but under 2048 bytes: fails on the character instead.
    const t = `${prefix}${'\u00e9'.repeat(600)}`;
    assertFails(() => parseSpiffeId(t), ID, 'path_char');
  });
  it('rejects a megabyte-long ID quickly as too_long', () => {
    const s = prefix + 'a'.repeat(1 << 20);
    assertFails(() => parseSpiffeId(s), ID, 'too_long');
  });
  it(`trust domain of ${MAX_TRUST_DOMAIN_LENGTH} bytes accepted, 256 rejected`, () => {
    assert.equal(parseSpiffeId(`spiffe://${TD_255}`), `spiffe://${TD_255}`);
    assertFails(() => parseSpiffeId(`spiffe://${TD_256}`), ID, 'trust_domain_too_long');
  });
});

describe('parseTrustDomain', () => {
  const TD = ErrorCode.TRUST_DOMAIN_INVALID;
  const valid: Array<[string, string]> = [
    ['example.org', 'example.org'],
    ['spiffe://example.org', 'example.org'],
    ['192.168.0.1', '192.168.0.1'],
    ['a', 'a'],
    ['my_td-1.example', 'my_td-1.example'],
    [TD_255, TD_255],
    [`spiffe://${TD_255}`, TD_255],
  ];
  for (const [input, want] of valid) {
    it(`accepts ${input.length > 40 ? `${input.slice(0, 20)}...` : input}`, () => {
      assert.equal(parseTrustDomain(input), want);
      assert.equal(isTrustDomain(input), true);
    });
  }
  const invalid: Array<[string, string]> = [
    ['', 'empty'],
    ['spiffe://', 'empty_trust_domain'],
    ['spiffe://example.org/x', 'has_path'],
    ['spiffe://example.org/', 'has_path'],
    ['Example.org', 'trust_domain_char'],
    ['spiffe://Example.org', 'trust_domain_char'],
    ['example.org:8443', 'trust_domain_char'],
    ['user@example.org', 'trust_domain_char'],
    ['[::1]', 'trust_domain_char'],
    ['::1', 'trust_domain_char'],
    ['exa%6Dple.org', 'trust_domain_char'],
    ['example.org/x', 'trust_domain_char'],
    ['example.org ', 'trust_domain_char'],
    ['ex\u00e4mple.org', 'trust_domain_char'],
    ['ex\u0000ample.org', 'trust_domain_char'],
    ['http://example.org', 'scheme'],
    ['SPIFFE://example.org', 'scheme'],
    [TD_256, 'trust_domain_too_long'],
    [`spiffe://${TD_256}`, 'trust_domain_too_long'],
  ];
  for (const [input, reason] of invalid) {
    it(`rejects ${JSON.stringify(input.length > 40 ? `${input.slice(0, 20)}...` : input)} as ${reason}`, () => {
      const err = assertFails(() => parseTrustDomain(input), TD, reason, input);
      assert.match(err.message, /^invalid trust domain /);
      assert.equal(isTrustDomain(input), false);
    });
  }
  it('rejects non-strings', () => {
    assertFails(() => parseTrustDomain(undefined as unknown as string), TD, 'not_string');
    assert.equal(isTrustDomain(7), false);
  });
});

describe('helpers', () => {
  const td = parseTrustDomain('example.org');
  const evil = parseTrustDomain('example.org.evil');

  it('trustDomainOf / pathOf', () => {
    assert.equal(trustDomainOf(parseSpiffeId('spiffe://example.org/a/b')), 'example.org');
    assert.equal(trustDomainOf(parseSpiffeId('spiffe://example.org')), 'example.org');
    assert.equal(pathOf(parseSpiffeId('spiffe://example.org/a/b')), '/a/b');
    assert.equal(pathOf(parseSpiffeId('spiffe://example.org')), '');
  });

  it('trustDomainOf gives a value usable as a Map key with parseTrustDomain results', () => {
    const m = new Map<TrustDomain, number>([[td, 1]]);
    assert.equal(m.get(trustDomainOf(parseSpiffeId('spiffe://example.org/w'))), 1);
  });

  const membership: Array<[string, TrustDomain, boolean]> = [
    ['spiffe://example.org/w', td, true],
    ['spiffe://example.org', td, true],
    ['spiffe://example.org.evil/w', td, false],
    ['spiffe://example.org.evil', td, false],
    ['spiffe://example.org/w', evil, false],
    ['spiffe://example.org', evil, false],
    ['spiffe://example.org.evil/w', evil, true],
    ['spiffe://example.orgx/w', td, false],
    ['spiffe://xexample.org/w', td, false],
    ['spiffe://example.or/w', td, false],
  ];
  for (const [id, t, want] of membership) {
    it(`isMemberOf(${id}, ${t}) = ${want}`, () => {
      assert.equal(isMemberOf(parseSpiffeId(id), t), want);
    });
  }

  it('trustDomainId', () => {
    const id = trustDomainId(td);
    assert.equal(id, 'spiffe://example.org');
    assert.equal(id, parseSpiffeId('spiffe://example.org'));
    assert.equal(parseTrustDomain(id), td);
  });

  it('idFromSegments builds valid IDs', () => {
    assert.equal(idFromSegments(td, 'ns', 'prod', 'sa', 'web-fe_1'), 'spiffe://example.org/ns/prod/sa/web-fe_1');
    assert.equal(idFromSegments(td, '.hidden', '...', '..x', 'MySQL'), 'spiffe://example.org/.hidden/.../..x/MySQL');
    assert.equal(idFromSegments(td), 'spiffe://example.org');
    const built: SpiffeId = idFromSegments(td, 'a');
    assert.equal(built, parseSpiffeId('spiffe://example.org/a'));
  });

  const badSegments: Array<[string[], string, string]> = [
    [['ok', 'a/b'], 'path_char', 'a/b'],
    [['ok', ''], 'path_empty_segment', ''],
    [['.'], 'path_dot_segment', '.'],
    [['ok', '..'], 'path_dot_segment', '..'],
    [['a b'], 'path_char', 'a b'],
    [['%41'], 'path_char', '%41'],
    [['w?x'], 'path_char', 'w?x'],
    [['w#f'], 'path_char', 'w#f'],
    [['caf\u00e9'], 'path_char', 'caf\u00e9'],
    [['a\u0000'], 'path_char', 'a\u0000'],
  ];
  for (const [segs, reason, bad] of badSegments) {
    it(`idFromSegments rejects segment ${JSON.stringify(bad)} as ${reason}, naming it`, () => {
      const err = assertFails(() => idFromSegments(td, ...segs), ID, reason, bad);
      assert.match(err.message, new RegExp(`segment ${segs.indexOf(bad) + 1}\\)`));
    });
  }
  it('idFromSegments names the "/" problem', () => {
    const err = assertFails(() => idFromSegments(td, 'a/b'), ID, 'path_char', 'a/b');
    assert.match(err.message, /must not contain "\/"/);
  });
  it('idFromSegments refuses to issue an ID over 2048 bytes', () => {
    const base = 'spiffe://example.org/'.length;
    assert.equal(idFromSegments(td, 'a'.repeat(2048 - base)).length, 2048);
    assertFails(() => idFromSegments(td, 'a'.repeat(2049 - base)), ID, 'too_long');
  });

  it('idFromPath', () => {
    assert.equal(idFromPath(td, '/ns/prod'), 'spiffe://example.org/ns/prod');
    assert.equal(idFromPath(td, ''), 'spiffe://example.org');
    const bad: Array<[string, string]> = [
      ['ns/prod', 'path_no_leading_slash'],
      ['/', 'path_trailing_slash'],
      ['/a/', 'path_trailing_slash'],
      ['//a', 'path_empty_segment'],
      ['/a/../b', 'path_dot_segment'],
      ['/.', 'path_dot_segment'],
      ['/a%2Fb', 'path_char'],
      ['/a?b', 'path_char'],
    ];
    for (const [path, reason] of bad) assertFails(() => idFromPath(td, path), ID, reason, path);
    const base = 'spiffe://example.org/'.length;
    assertFails(() => idFromPath(td, `/${'a'.repeat(2049 - base)}`), ID, 'too_long');
  });

  it('parseLeafSpiffeId / assertLeafId require a non-root path', () => {
    assert.equal(parseLeafSpiffeId('spiffe://example.org/w'), 'spiffe://example.org/w');
    const err = assertFails(() => parseLeafSpiffeId('spiffe://example.org'), ID, 'root_path', 'spiffe://example.org');
    assert.match(err.message, /path/);
    assertFails(() => assertLeafId(parseSpiffeId('spiffe://example.org')), ID, 'root_path');
    assertFails(() => assertLeafId(trustDomainId(td)), ID, 'root_path');
    assert.doesNotThrow(() => assertLeafId(parseSpiffeId('spiffe://example.org/a')));
  });
});

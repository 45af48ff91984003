import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseTrustDomain } from '../../spiffe/id.js';
import {
  DEFAULT_MAX_TTL_SECONDS,
  ERR_ENTRY_INVALID,
  EntryValidationError,
  MAX_DNS_NAMES,
  MAX_ENTRY_EXPIRY,
  MAX_SELECTORS,
  compareSelectors,
  formatSelector,
  parseSelector,
  selectorKey,
  validateNewEntry,
  validateSelector,
  type EntryInput,
} from './validate.js';

const td = parseTrustDomain('example.org');
const opts = { trustDomain: td };

function catchErr(fn: () => unknown): EntryValidationError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof EntryValidationError, `expected EntryValidationError, got ${String(err)}`);
    assert.equal(err.code, ERR_ENTRY_INVALID);
    return err;
  }
  assert.fail('expected an EntryValidationError');
}

function base(): EntryInput {
  return {
    spiffeId: 'spiffe://example.org/ns/prod/web',
    parentId: 'spiffe://example.org/spire/agent/join_token/abc',
    selectors: ['unix:uid:1000'],
  };
}

describe('parseSelector', () => {
  it('splits at the first colon: the value may hold colons', () => {
    assert.deepEqual(parseSelector('unix:uid:1000'), { type: 'unix', value: 'uid:1000' });
    assert.deepEqual(parseSelector('k8s:pod-label:app:web'), { type: 'k8s', value: 'pod-label:app:web' });
    assert.deepEqual(parseSelector('docker:label:a:'), { type: 'docker', value: 'label:a:' });
    assert.deepEqual(parseSelector('a::'), { type: 'a', value: ':' });
    assert.deepEqual(parseSelector('spiffe_id:spiffe://example.org/x'), { type: 'spiffe_id', value: 'spiffe://example.org/x' });
    assert.deepEqual(parseSelector('T-y_p3:v a l u e'), { type: 'T-y_p3', value: 'v a l u e' });
  });

  it('rejects a missing colon, an empty type or an empty value', () => {
    const cases: Array<[string, string]> = [
      ['unix', 'format'],
      ['', 'format'],
      [':uid:1000', 'empty'],
      [':', 'empty'],
      ['unix:', 'empty'],
    ];
    for (const [input, reason] of cases) {
      const err = catchErr(() => parseSelector(input));
      assert.equal(err.field, 'selectors', input);
      assert.equal(err.reason, reason, `${input}: ${err.message}`);
      assert.ok(err.message.includes(JSON.stringify(input)), err.message);
    }
  });

  it('rejects bad type characters', () => {
    for (const input of ['un ix:1', 'un.ix:1', 'ü:1', 'a/b:1', 'a\u0000:1']) {
      const err = catchErr(() => parseSelector(input));
      assert.equal(err.reason, 'char', input);
    }
    assert.equal(catchErr(() => parseSelector(`${'t'.repeat(129)}:v`)).reason, 'too_long');
    assert.deepEqual(parseSelector(`${'t'.repeat(128)}:v`).type.length, 128);
  });

  it('rejects control characters, line separators and lone surrogates in the value', () => {
    for (const bad of ['\u0000', '\n', '\r', '\t', '\u001b', '\u007f', '\u0085', '\u009f', '\u2028', '\u2029', '\ud800', '\udc00', 'x\ud800y']) {
      const err = catchErr(() => parseSelector(`unix:uid${bad}1`));
      assert.equal(err.reason, 'char', JSON.stringify(bad));
      assert.match(err.message, /U\+[0-9A-F]{4}/);
    }
    // A proper surrogate pair and other non-ASCII text are fine.
    assert.equal(parseSelector('label:emoji-\u{1F600}').value, 'emoji-\u{1F600}');
    assert.equal(parseSelector('label:café').value, 'café');
  });

  it('caps the value at 1024 UTF-8 bytes', () => {
    assert.equal(parseSelector(`a:${'v'.repeat(1024)}`).value.length, 1024);
    assert.equal(catchErr(() => parseSelector(`a:${'v'.repeat(1025)}`)).reason, 'too_long');
    assert.equal(parseSelector(`a:${'é'.repeat(512)}`).value.length, 512);
    assert.equal(catchErr(() => parseSelector(`a:${'é'.repeat(513)}`)).reason, 'too_long');
  });

  it('rejects non-strings', () => {
    assert.equal(catchErr(() => parseSelector(42 as unknown as string)).reason, 'type');
  });
});

describe('validateSelector, formatSelector, selectorKey', () => {
  it('validates objects and strings alike', () => {
    assert.deepEqual(validateSelector({ type: 'unix', value: 'uid:1' }), { type: 'unix', value: 'uid:1' });
    assert.deepEqual(validateSelector('unix:uid:1'), { type: 'unix', value: 'uid:1' });
    assert.equal(catchErr(() => validateSelector({ type: '', value: 'x' })).reason, 'empty');
    assert.equal(catchErr(() => validateSelector({ type: 'a:b', value: 'x' })).reason, 'char');
    assert.equal(catchErr(() => validateSelector({ type: 'a', value: 1 } as never)).reason, 'type');
    assert.equal(catchErr(() => validateSelector(null as never)).reason, 'type');
  });

  it('formatSelector inverts parseSelector', () => {
    for (const s of ['unix:uid:1000', 'k8s:ns:prod', 'a::', 'x:y z']) assert.equal(formatSelector(parseSelector(s)), s);
  });

  it('selectorKey is the canonical string of the set', () => {
    const a = [parseSelector('unix:uid:1'), parseSelector('k8s:ns:prod'), parseSelector('unix:gid:2')];
    const b = [a[2]!, a[0]!, a[1]!, a[0]!];
    assert.equal(selectorKey(a), selectorKey(b));
    assert.equal(selectorKey(a), 'k8s:ns:prod\nunix:gid:2\nunix:uid:1');
    assert.notEqual(selectorKey(a), selectorKey(a.slice(1)));
    assert.equal(selectorKey([]), '');
    // (type, value) boundaries cannot be confused.
    assert.notEqual(selectorKey([{ type: 'a', value: 'b:c' }]), selectorKey([{ type: 'a', value: 'b' }, { type: 'a', value: 'c' }]));
  });

  it('orders by code point (the datastore order), not UTF-16 unit', () => {
    const bmp = { type: 't', value: '\uffff' };
    const astral = { type: 't', value: '\u{10000}' };
    assert.ok(compareSelectors(bmp, astral) < 0);
    assert.ok(compareSelectors({ type: 'a', value: 'z' }, { type: 'b', value: 'a' }) < 0);
  });
});

describe('validateNewEntry', () => {
  it('returns a normalized NewEntry', () => {
    const e = validateNewEntry(
      {
        id: 'my-entry_1',
        spiffeId: 'spiffe://example.org/ns/prod/web',
        parentId: 'spiffe://example.org/spire/agent/k8s_psat/prod/node-1',
        selectors: ['unix:uid:1000', { type: 'k8s', value: 'ns:prod' }],
        x509SvidTtl: 3600,
        jwtSvidTtl: 300,
        dnsNames: ['web.prod.svc', '*.Example.COM'],
        federatesWith: ['spiffe://b.org', 'a.org'],
        admin: true,
        downstream: true,
        hint: 'web frontend',
        entryExpiry: 2_000_000_000,
      },
      opts,
    );
    assert.deepEqual(e, {
      id: 'my-entry_1',
      spiffeId: 'spiffe://example.org/ns/prod/web',
      parentId: 'spiffe://example.org/spire/agent/k8s_psat/prod/node-1',
      selectors: [
        { type: 'k8s', value: 'ns:prod' },
        { type: 'unix', value: 'uid:1000' },
      ],
      x509SvidTtl: 3600,
      jwtSvidTtl: 300,
      dnsNames: ['web.prod.svc', '*.Example.COM'],
      federatesWith: ['a.org', 'b.org'],
      admin: true,
      downstream: true,
      hint: 'web frontend',
      entryExpiry: 2_000_000_000,
    });
  });

  it('fills defaults and treats an empty id as absent', () => {
    const e = validateNewEntry({ ...base(), id: '' }, opts);
    assert.equal('id' in e, false);
    assert.equal(e.x509SvidTtl, 0);
    assert.equal(e.jwtSvidTtl, 0);
    assert.deepEqual(e.dnsNames, []);
    assert.deepEqual(e.federatesWith, []);
    assert.equal(e.admin, false);
    assert.equal(e.downstream, false);
    assert.equal(e.hint, '');
    assert.equal(e.entryExpiry, 0);
  });

  it('accepts node aliases, workload parents and boundary values', () => {
    const alias = validateNewEntry(
      { spiffeId: 'spiffe://example.org/cluster/prod', parentId: 'spiffe://example.org/spire/server', selectors: ['k8s_psat:cluster:prod'] },
      opts,
    );
    assert.equal(alias.parentId, 'spiffe://example.org/spire/server');
    validateNewEntry({ ...base(), parentId: 'spiffe://example.org/ns/prod/downstream' }, opts);
    validateNewEntry({ ...base(), x509SvidTtl: DEFAULT_MAX_TTL_SECONDS, jwtSvidTtl: 0, entryExpiry: MAX_ENTRY_EXPIRY }, opts);
    validateNewEntry({ ...base(), x509SvidTtl: 60 }, { trustDomain: td, maxTtlSeconds: 60 });
    validateNewEntry({ ...base(), hint: 'h'.repeat(1024) }, opts);
    validateNewEntry({ ...base(), dnsNames: [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`] }, opts);
    validateNewEntry({ ...base(), selectors: Array.from({ length: MAX_SELECTORS }, (_, i) => `t:${i}`) }, opts);
    validateNewEntry({ ...base(), spiffeId: 'spiffe://example.org/spirex/a' }, opts);
    validateNewEntry({ ...base(), spiffeId: 'spiffe://example.org/x/spire/agent' }, opts);
  });

  // Each case: a change to a valid entry, the field that must be named, the reason, and a
  // fragment of the offending value that the message must quote.
  const BAD: Array<{ name: string; input: Record<string, unknown>; field: string; reason: string; shows?: string }> = [
    { name: 'unknown field', input: { spiffeID: 'x' }, field: 'spiffeID', reason: 'unknown_field', shows: 'spiffeID' },
    { name: 'id type', input: { id: 7 }, field: 'id', reason: 'type' },
    { name: 'id chars', input: { id: 'a b' }, field: 'id', reason: 'char', shows: 'a b' },
    { name: 'id length', input: { id: 'a'.repeat(256) }, field: 'id', reason: 'too_long' },
    { name: 'spiffeId missing', input: { spiffeId: undefined }, field: 'spiffeId', reason: 'required' },
    { name: 'spiffeId empty', input: { spiffeId: '' }, field: 'spiffeId', reason: 'required' },
    { name: 'spiffeId type', input: { spiffeId: 5 }, field: 'spiffeId', reason: 'type' },
    { name: 'spiffeId syntax', input: { spiffeId: 'spiffe://example.org/a/../b' }, field: 'spiffeId', reason: 'spiffe_id', shows: '/a/../b' },
    { name: 'spiffeId encoded', input: { spiffeId: 'spiffe://example.org/%41' }, field: 'spiffeId', reason: 'spiffe_id', shows: '%41' },
    { name: 'spiffeId uppercase td', input: { spiffeId: 'spiffe://Example.org/w' }, field: 'spiffeId', reason: 'spiffe_id' },
    { name: 'spiffeId foreign', input: { spiffeId: 'spiffe://other.org/w' }, field: 'spiffeId', reason: 'foreign_trust_domain', shows: 'other.org' },
    { name: 'spiffeId td prefix', input: { spiffeId: 'spiffe://example.org.evil/w' }, field: 'spiffeId', reason: 'foreign_trust_domain' },
    { name: 'spiffeId root', input: { spiffeId: 'spiffe://example.org' }, field: 'spiffeId', reason: 'root_path' },
    { name: 'spiffeId agent ns', input: { spiffeId: 'spiffe://example.org/spire/agent/x' }, field: 'spiffeId', reason: 'reserved', shows: '/spire/agent/x' },
    { name: 'spiffeId server', input: { spiffeId: 'spiffe://example.org/spire/server' }, field: 'spiffeId', reason: 'reserved' },
    { name: 'spiffeId /spire', input: { spiffeId: 'spiffe://example.org/spire' }, field: 'spiffeId', reason: 'reserved' },
    {
      name: 'alias in reserved ns',
      input: { spiffeId: 'spiffe://example.org/spire/agent/alias', parentId: 'spiffe://example.org/spire/server' },
      field: 'spiffeId',
      reason: 'reserved',
    },
    { name: 'parentId missing', input: { parentId: undefined }, field: 'parentId', reason: 'required' },
    { name: 'parentId syntax', input: { parentId: 'spiffe://example.org/a/' }, field: 'parentId', reason: 'spiffe_id' },
    { name: 'parentId foreign', input: { parentId: 'spiffe://other.org/spire/agent/x' }, field: 'parentId', reason: 'foreign_trust_domain' },
    { name: 'parentId root', input: { parentId: 'spiffe://example.org' }, field: 'parentId', reason: 'root_path' },
    { name: 'selectors missing', input: { selectors: undefined }, field: 'selectors', reason: 'required' },
    { name: 'selectors empty', input: { selectors: [] }, field: 'selectors', reason: 'required' },
    { name: 'selectors not list', input: { selectors: 'unix:uid:1' }, field: 'selectors', reason: 'type' },
    { name: 'selectors too many', input: { selectors: Array.from({ length: MAX_SELECTORS + 1 }, (_, i) => `t:${i}`) }, field: 'selectors', reason: 'too_many' },
    { name: 'selector empty value', input: { selectors: ['unix:uid:1', 'unix:'] }, field: 'selectors', reason: 'empty', shows: 'unix:' },
    { name: 'selector NUL', input: { selectors: ['unix:uid\u00001'] }, field: 'selectors', reason: 'char' },
    { name: 'selector duplicate', input: { selectors: ['unix:uid:1', { type: 'unix', value: 'uid:1' }] }, field: 'selectors', reason: 'duplicate', shows: 'unix:uid:1' },
    { name: 'x509SvidTtl negative', input: { x509SvidTtl: -1 }, field: 'x509SvidTtl', reason: 'range', shows: '-1' },
    { name: 'x509SvidTtl fraction', input: { x509SvidTtl: 1.5 }, field: 'x509SvidTtl', reason: 'type', shows: '1.5' },
    { name: 'x509SvidTtl NaN', input: { x509SvidTtl: Number.NaN }, field: 'x509SvidTtl', reason: 'type' },
    { name: 'x509SvidTtl string', input: { x509SvidTtl: '60' }, field: 'x509SvidTtl', reason: 'type' },
    { name: 'x509SvidTtl too big', input: { x509SvidTtl: DEFAULT_MAX_TTL_SECONDS + 1 }, field: 'x509SvidTtl', reason: 'range' },
    { name: 'jwtSvidTtl too big', input: { jwtSvidTtl: 1e12 }, field: 'jwtSvidTtl', reason: 'range' },
    { name: 'jwtSvidTtl Infinity', input: { jwtSvidTtl: Infinity }, field: 'jwtSvidTtl', reason: 'type' },
    { name: 'dnsNames not list', input: { dnsNames: 'a.b' }, field: 'dnsNames', reason: 'type' },
    { name: 'dnsNames too many', input: { dnsNames: Array.from({ length: MAX_DNS_NAMES + 1 }, (_, i) => `h${i}.x`) }, field: 'dnsNames', reason: 'too_many' },
    { name: 'dns empty', input: { dnsNames: [''] }, field: 'dnsNames', reason: 'empty' },
    { name: 'dns underscore', input: { dnsNames: ['a_b.example.org'] }, field: 'dnsNames', reason: 'char', shows: 'a_b.example.org' },
    { name: 'dns leading hyphen', input: { dnsNames: ['-a.example.org'] }, field: 'dnsNames', reason: 'char' },
    { name: 'dns trailing hyphen', input: { dnsNames: ['a-.example.org'] }, field: 'dnsNames', reason: 'char' },
    { name: 'dns trailing dot', input: { dnsNames: ['example.org.'] }, field: 'dnsNames', reason: 'format' },
    { name: 'dns double dot', input: { dnsNames: ['a..org'] }, field: 'dnsNames', reason: 'format' },
    { name: 'dns inner wildcard', input: { dnsNames: ['a.*.org'] }, field: 'dnsNames', reason: 'char' },
    { name: 'dns partial wildcard', input: { dnsNames: ['w*.org'] }, field: 'dnsNames', reason: 'char' },
    { name: 'dns bare wildcard', input: { dnsNames: ['*'] }, field: 'dnsNames', reason: 'format' },
    { name: 'dns long label', input: { dnsNames: [`${'a'.repeat(64)}.org`] }, field: 'dnsNames', reason: 'too_long' },
    { name: 'dns long name', input: { dnsNames: [`${'a.'.repeat(127)}ab`] }, field: 'dnsNames', reason: 'too_long' },
    { name: 'dns space', input: { dnsNames: ['a b.org'] }, field: 'dnsNames', reason: 'char' },
    { name: 'dns unicode', input: { dnsNames: ['exämple.org'] }, field: 'dnsNames', reason: 'char' },
    { name: 'dns duplicate (case)', input: { dnsNames: ['a.org', 'A.ORG'] }, field: 'dnsNames', reason: 'duplicate', shows: 'A.ORG' },
    { name: 'dns type', input: { dnsNames: [1] }, field: 'dnsNames', reason: 'type' },
    { name: 'federatesWith own', input: { federatesWith: ['example.org'] }, field: 'federatesWith', reason: 'own_trust_domain', shows: 'example.org' },
    { name: 'federatesWith own as ID', input: { federatesWith: ['spiffe://example.org'] }, field: 'federatesWith', reason: 'own_trust_domain' },
    { name: 'federatesWith bad', input: { federatesWith: ['Bad.Org'] }, field: 'federatesWith', reason: 'trust_domain', shows: 'Bad.Org' },
    { name: 'federatesWith path', input: { federatesWith: ['spiffe://b.org/x'] }, field: 'federatesWith', reason: 'trust_domain' },
    { name: 'federatesWith dup', input: { federatesWith: ['b.org', 'spiffe://b.org'] }, field: 'federatesWith', reason: 'duplicate' },
    { name: 'federatesWith type', input: { federatesWith: [null] }, field: 'federatesWith', reason: 'type' },
    { name: 'admin type', input: { admin: 'yes' }, field: 'admin', reason: 'type', shows: 'yes' },
    { name: 'downstream type', input: { downstream: 1 }, field: 'downstream', reason: 'type' },
    { name: 'hint long', input: { hint: 'h'.repeat(1025) }, field: 'hint', reason: 'too_long' },
    { name: 'hint control', input: { hint: 'a\nb' }, field: 'hint', reason: 'char' },
    { name: 'hint type', input: { hint: 3 }, field: 'hint', reason: 'type' },
    { name: 'entryExpiry negative', input: { entryExpiry: -5 }, field: 'entryExpiry', reason: 'range', shows: '-5' },
    { name: 'entryExpiry fraction', input: { entryExpiry: 0.5 }, field: 'entryExpiry', reason: 'type' },
    { name: 'entryExpiry huge', input: { entryExpiry: MAX_ENTRY_EXPIRY + 1 }, field: 'entryExpiry', reason: 'range' },
  ];

  for (const c of BAD) {
    it(`rejects: ${c.name} (names field ${c.field})`, () => {
      const input = { ...base(), ...c.input } as Record<string, unknown>;
      for (const [k, v] of Object.entries(c.input)) if (v === undefined) delete input[k];
      const err = catchErr(() => validateNewEntry(input as unknown as EntryInput, opts));
      assert.equal(err.field, c.field, err.message);
      assert.equal(err.reason, c.reason, err.message);
      assert.ok(err.message.includes(c.field), `message should name the field: ${err.message}`);
      if (c.shows !== undefined) assert.ok(err.message.includes(c.shows), `message should show ${c.shows}: ${err.message}`);
    });
  }

  it('names the list index of a bad item', () => {
    const err = catchErr(() => validateNewEntry({ ...base(), selectors: ['unix:uid:1', 'k8s:ns:a', 'bad'] }, opts));
    assert.equal(err.field, 'selectors');
    assert.equal(err.index, 2);
    assert.ok(err.message.includes('selectors[2]'), err.message);
    const dup = catchErr(() => validateNewEntry({ ...base(), dnsNames: ['a.org', 'b.org', 'a.org'] }, opts));
    assert.equal(dup.index, 2);
    assert.ok(dup.message.includes('dnsNames[0]'), dup.message);
  });

  it('keeps the SPIFFE parser error as cause and in the message', () => {
    const err = catchErr(() => validateNewEntry({ ...base(), spiffeId: 'spiffe://example.org/w?x=1' }, opts));
    assert.ok(err.cause instanceof Error);
    assert.match(err.message, /query/);
  });

  it('rejects non-objects', () => {
    for (const v of [null, 'x', 1, []]) {
      const err = catchErr(() => validateNewEntry(v as unknown as EntryInput, opts));
      assert.equal(err.field, 'entry');
      assert.equal(err.reason, 'not_object');
    }
  });

  it('does not alias the caller arrays', () => {
    const input = { ...base(), dnsNames: ['a.org'], selectors: ['unix:uid:1'] };
    const e = validateNewEntry(input, opts);
    input.dnsNames.push('b.org');
    assert.deepEqual(e.dnsNames, ['a.org']);
  });
});

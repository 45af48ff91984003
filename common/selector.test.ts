import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compareSelectors, formatSelector, selectorMapKey, selectorSetKey, splitSelector } from './selector.js';

describe('common/selector', () => {
  it('splitSelector splits at the first colon and inverts formatSelector', () => {
    assert.deepEqual(splitSelector('unix:uid:1000'), { type: 'unix', value: 'uid:1000' });
    assert.deepEqual(splitSelector('a:'), { type: 'a', value: '' });
    assert.equal(splitSelector('nocolon'), undefined);
    for (const s of ['unix:uid:1000', 'k8s:ns:prod', 'a::']) assert.equal(formatSelector(splitSelector(s)!), s);
  });

  it('selectorMapKey is the type:value text, distinct for distinct selectors with valid types', () => {
    assert.equal(selectorMapKey({ type: 'unix', value: 'uid:1' }), 'unix:uid:1');
    assert.equal(selectorMapKey({ type: 'unix', value: 'uid:1' }), selectorMapKey({ type: 'unix', value: 'uid:1' }));
    assert.notEqual(selectorMapKey({ type: 'unix', value: 'uid:1' }), selectorMapKey({ type: 'unix', value: 'uid:10' }));
    assert.notEqual(selectorMapKey({ type: 'k8s', value: 'ns:a' }), selectorMapKey({ type: 'k8s_psat', value: 'ns:a' }));
  });

  it('selectorSetKey ignores order and duplicates', () => {
    const a = [{ type: 'unix', value: 'uid:1' }, { type: 'k8s', value: 'ns:x' }];
    assert.equal(selectorSetKey(a), selectorSetKey([...a].reverse().concat(a)));
    assert.equal(selectorSetKey(a), 'k8s:ns:x\nunix:uid:1');
  });

  it('compareSelectors orders by type, then value, in code point order', () => {
    assert.ok(compareSelectors({ type: 'a', value: 'z' }, { type: 'b', value: 'a' }) < 0);
    assert.ok(compareSelectors({ type: 'a', value: '\uFFFF' }, { type: 'a', value: '\u{10000}' }) < 0);
    assert.equal(compareSelectors({ type: 'a', value: 'b' }, { type: 'a', value: 'b' }), 0);
  });
});

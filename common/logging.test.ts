// The text log format keeps one record on one line, whatever the values hold.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger, textLine } from './logging.js';
import { escapeControls } from './strings.js';

/** Every character some reader treats as a line end (Python's str.splitlines, Unicode, terminals). */
const LINE_ENDS = /[\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/;

test('text format: U+2028, U+0085 and other controls in values, keys and the message are escaped; one line per record', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-logging-'));
  try {
    const file = join(dir, 'text.log');
    const log = createLogger({ level: 'INFO', format: 'text', file, name: 'test' });
    log.info(
      { subsystem: 'entries', spiffe_id: 'spiffe://example.org/a\u2028INFO forged', selector: 'unix:uid:1\u0085ERROR forged', hint: 'h\u2029i', nested: { v: 'x\u0085y' }, ['k\u2028ey']: 1 },
      'entry changed\u2028INFO forged line',
    );
    log.info({ plain: 'value' }, 'second record');
    await new Promise<void>((resolve) => log.flush(() => resolve()));
    // The file stream writes asynchronously after flush; wait until both records are there.
    let text = '';
    for (let i = 0; i < 100 && (text.match(/\n/g) ?? []).length < 2; i++) {
      await new Promise((r) => setTimeout(r, 20));
      text = readFileSync(file, 'utf8');
    }
    const lines = text.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 2, text);
    for (const l of lines) assert.doesNotMatch(l, LINE_ENDS, 'no raw line separator inside a record');
    const [first] = lines;
    assert.match(first!, / INFO  \[entries\] entry changed\\u2028INFO forged line /);
    assert.match(first!, / spiffe_id="spiffe:\/\/example.org\/a\\u2028INFO forged"/);
    assert.match(first!, / selector="unix:uid:1\\u0085ERROR forged"/);
    assert.match(first!, / hint="h\\u2029i"/);
    assert.match(first!, / nested=\{"v":"x\\u0085y"\}/);
    assert.match(first!, / k\\u2028ey=1/);
    assert.match(lines[1]!, / second record plain=value$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('textLine: values without special characters print as before; C0 controls and DEL are escaped too', () => {
  const line = textLine(JSON.stringify({ level: 30, time: 0, msg: 'ok', a: 'plain', b: 'tab\there', c: 'bell\u0007', d: 'del\u007f' }));
  assert.equal(line, '1970-01-01T00:00:00.000Z INFO  ok a=plain b="tab\\there" c="bell\\u0007" d="del\\u007f"\n');
  assert.equal(escapeControls('a\u2028b\u0085c\u009fd\u001be'), 'a\\u2028b\\u0085c\\u009fd\\u001be');
  assert.equal(escapeControls('ünïcödé ✓'), 'ünïcödé ✓');
});

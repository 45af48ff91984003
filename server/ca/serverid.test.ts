// The server ID file in data_dir: made once, read back unchanged, refused when it holds anything
// but an ID, never overwritten.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SERVER_ID_FILE, loadServerId } from './serverid.js';
import { isCaError } from './testkit.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-serverid-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

describe('server ID', () => {
  it('is a random UUID written 0600 on the first call (creating the data dir) and read back afterwards', () => {
    const dir = join(root, `d${++n}`, 'data');
    const id = loadServerId(dir);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const file = join(dir, SERVER_ID_FILE);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o077, 0);
    assert.equal(loadServerId(dir), id);
    assert.equal(readFileSync(file, 'utf8'), `${id}\n`);
    assert.notEqual(loadServerId(join(root, `d${++n}`)), id, 'another data dir, another ID');
  });

  it('keeps an ID an operator wrote, and refuses a file that is not one, naming it', () => {
    const dir = join(root, `d${++n}`);
    loadServerId(dir);
    const file = join(dir, SERVER_ID_FILE);
    writeFileSync(file, 'server-a\n');
    assert.equal(loadServerId(dir), 'server-a');
    for (const bad of ['', 'has space', 'x'.repeat(129), '../etc']) {
      writeFileSync(file, bad);
      assert.throws(() => loadServerId(dir), (e: Error) => isCaError(e, 'config') && e.message.includes(file));
      assert.equal(readFileSync(file, 'utf8'), bad, 'left as it was');
    }
  });
});

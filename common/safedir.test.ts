// checkSafeDirectory / ensureSafeDirectory, bindSocketInPlace and writeFileReplacingSync on the
// real filesystem. The other-owner cases chown to uid 65534 and need root (CI runs as root).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkSafeDirectory, ensureOutputDirectory, ensureSafeDirectory } from './safedir.js';
import { writeFileReplacingSync } from './safefile.js';
import { bindSocketInPlace, prepareSocketDirectory } from './unixsocket.js';

const NOBODY = 65534;
const root = mkdtempSync(join(tmpdir(), 'spindle-safedir-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => {
  const d = join(root, `t${++n}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
};
const mode = (p: string): number => statSync(p).mode & 0o7777;
const asRoot = (): void => assert.equal(process.getuid?.(), 0, 'this test chowns to uid 65534 and must run as root (CI does); it did NOT run');

describe('checkSafeDirectory', () => {
  it('accepts /tmp itself (root, sticky, world-writable) and directories we own', () => {
    assert.ok((statSync('/tmp').mode & 0o1000) !== 0, '/tmp is expected to be sticky here');
    checkSafeDirectory('/tmp', 'socket directory');
    const d = fresh();
    chmodSync(d, 0o755);
    checkSafeDirectory(d, 'socket directory');
    checkSafeDirectory(join(d, 'missing', 'deeper'), 'socket directory'); // judged by its existing ancestors
  });

  it('refuses a directory owned by another user, naming path, owner uid and mode', () => {
    asRoot();
    const d = join(fresh(), 'theirs');
    mkdirSync(d, { mode: 0o755 });
    chownSync(d, NOBODY, NOBODY);
    assert.throws(() => checkSafeDirectory(d, 'admin socket directory'), (err: Error) => {
      assert.match(err.message, /^admin socket directory /);
      assert.ok(err.message.includes(d), err.message);
      assert.match(err.message, /owner uid 65534, mode 0755/);
      return true;
    });
    // ...and anything below it: the parent is what lets them swap it.
    assert.throws(() => checkSafeDirectory(join(d, 'sub'), 'x'), /owner uid 65534/);
  });

  it('refuses a group- or world-writable directory without the sticky bit, itself or as a parent', () => {
    for (const m of [0o777, 0o775, 0o757]) {
      const d = fresh();
      chmodSync(d, m);
      assert.throws(() => checkSafeDirectory(d, 'socket directory'), new RegExp(`writable by group or others without the sticky bit \\(owner uid \\d+, mode 0${m.toString(8)}\\)`));
      const child = join(d, 'private');
      mkdirSync(child, { mode: 0o700 });
      assert.throws(() => checkSafeDirectory(child, 'socket directory'), (err: Error) => err.message.includes(`${d} is writable`));
    }
    const sticky = fresh();
    chmodSync(sticky, 0o1777);
    checkSafeDirectory(sticky, 'socket directory');
  });

  it('refuses a symlink owned by another user, and a symlink leading into their directory', () => {
    asRoot();
    const d = fresh();
    const theirs = join(d, 'theirs');
    mkdirSync(theirs, { mode: 0o755 });
    chownSync(theirs, NOBODY, NOBODY);
    const ours = join(d, 'ours');
    mkdirSync(ours, { mode: 0o700 });
    symlinkSync(theirs, join(d, 'link-to-theirs'));
    assert.throws(() => checkSafeDirectory(join(d, 'link-to-theirs'), 'x'), /owner uid 65534/);
    symlinkSync(ours, join(d, 'their-link'));
    lchownSync(join(d, 'their-link'), NOBODY, NOBODY);
    assert.throws(() => checkSafeDirectory(join(d, 'their-link'), 'x'), (err: Error) => err.message.includes(`${join(d, 'their-link')} is owned by another user`));
  });

  it('refuses a file where a directory is expected', () => {
    const f = join(fresh(), 'file');
    writeFileSync(f, '');
    assert.throws(() => checkSafeDirectory(f, 'x'), /exists and is not a directory/);
  });
});

describe('ensureSafeDirectory', () => {
  it('creates every missing component with exactly the mode, even under umask 000 and 077', () => {
    for (const [umask, m] of [
      [0o000, 0o700],
      [0o077, 0o755],
    ] as const) {
      const base = fresh();
      const dir = join(base, 'a', 'b');
      const old = process.umask(umask);
      try {
        assert.equal(ensureSafeDirectory(dir, m, 'data directory'), undefined);
      } finally {
        process.umask(old);
      }
      assert.equal(mode(dir), m);
      assert.equal(mode(join(base, 'a')), m);
    }
  });

  it('leaves an existing safe directory as it is and returns its stats', () => {
    const d = fresh();
    chmodSync(d, 0o750);
    const st = ensureSafeDirectory(d, 0o700, 'data directory');
    assert.equal(st?.isDirectory(), true);
    assert.equal(mode(d), 0o750);
  });

  it('refuses (and creates nothing under) a directory owned by another user', () => {
    asRoot();
    const theirs = join(fresh(), 'theirs');
    mkdirSync(theirs, { mode: 0o755 });
    chownSync(theirs, NOBODY, NOBODY);
    assert.throws(() => ensureSafeDirectory(join(theirs, 'data'), 0o700, 'server data directory'), /server data directory .*\(owner uid 65534, mode 0755/);
    assert.deepEqual(readdirSync(theirs), []);
  });

  it('prepareSocketDirectory applies the same rule', () => {
    const d = fresh();
    chmodSync(d, 0o777);
    assert.throws(() => prepareSocketDirectory(join(d, 'private'), 0o700, 'admin socket'), /^Error: admin socket directory .* mode 0777/);
    assert.equal(existsSync(join(d, 'private')), false);
  });
});

describe('ensureOutputDirectory (the CLI -write directory)', () => {
  it('creates a missing directory and its missing parents 0700, even under umask 000', () => {
    const base = fresh();
    const dir = join(base, 'out', 'svids');
    const old = process.umask(0);
    try {
      assert.equal(ensureOutputDirectory(dir, '-write directory'), true);
    } finally {
      process.umask(old);
    }
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(join(base, 'out')), 0o700);
  });

  it('uses an existing directory as it is, and refuses a path that is a file', () => {
    const d = fresh();
    chmodSync(d, 0o755);
    assert.equal(ensureOutputDirectory(d, '-write directory'), false);
    assert.equal(mode(d), 0o755);
    const f = join(d, 'file');
    writeFileSync(f, '');
    assert.throws(() => ensureOutputDirectory(f, '-write directory'), /^Error: -write directory .*\/file exists and is not a directory$/);
  });

  it('creates nothing under a directory another user controls', () => {
    asRoot();
    const theirs = join(fresh(), 'theirs');
    mkdirSync(theirs, { mode: 0o755 });
    chownSync(theirs, NOBODY, NOBODY);
    assert.throws(() => ensureOutputDirectory(join(theirs, 'out'), '-write directory'), /-write directory .*\(owner uid 65534, mode 0755/);
    assert.deepEqual(readdirSync(theirs), []);
  });
});

describe('bindSocketInPlace', () => {
  it('the socket appears at the path only with its final mode, and keeps serving after the rename', async () => {
    const d = fresh();
    const path = join(d, 'api.sock');
    const server = createServer((s) => s.end('hi'));
    const old = process.umask(0);
    let staged = '';
    try {
      await bindSocketInPlace(path, 0o770, async (staging) => {
        staged = staging;
        assert.equal(existsSync(path), false, 'nothing at the final path while binding');
        await new Promise<void>((ok) => server.listen(staging, ok));
        assert.equal(mode(join(staging, '..')) & 0o077, 0, 'staging directory is private');
      });
    } finally {
      process.umask(old);
    }
    assert.ok(lstatSync(path).isSocket());
    assert.equal(mode(path), 0o770);
    assert.equal(existsSync(join(staged, '..')), false, 'staging directory removed');
    assert.deepEqual(readdirSync(d), ['api.sock']);
    const got = await new Promise<string>((ok, fail) => {
      const c = connect(path);
      let data = '';
      c.on('data', (b) => (data += b.toString()));
      c.on('end', () => ok(data));
      c.on('error', fail);
    });
    assert.equal(got, 'hi');
    await new Promise((ok) => server.close(ok));
  });

  it('a failing bind leaves no staging directory behind', async () => {
    const d = fresh();
    await assert.rejects(bindSocketInPlace(join(d, 'api.sock'), 0o770, () => Promise.reject(new Error('boom'))), /boom/);
    assert.deepEqual(readdirSync(d), []);
  });
});

describe('writeFileReplacingSync', () => {
  it('writes with exactly the mode under umask 000 and 077, replacing (not writing through) an existing file or symlink', () => {
    const d = fresh();
    const key = join(d, 'key.pem');
    writeFileSync(key, 'old', { mode: 0o666 });
    chmodSync(key, 0o666);
    const target = join(d, 'target');
    writeFileSync(target, 'untouched');
    const link = join(d, 'link.pem');
    symlinkSync(target, link);
    for (const umask of [0o000, 0o077]) {
      const old = process.umask(umask);
      try {
        writeFileReplacingSync(key, 'secret', 0o600);
        writeFileReplacingSync(link, 'public', 0o644);
      } finally {
        process.umask(old);
      }
      assert.equal(mode(key), 0o600);
      assert.equal(readFileSync(key, 'utf8'), 'secret');
      assert.equal(lstatSync(link).isSymbolicLink(), false);
      assert.equal(mode(link), 0o644);
    }
    assert.equal(readFileSync(target, 'utf8'), 'untouched');
    assert.deepEqual(readdirSync(d).sort(), ['key.pem', 'link.pem', 'target']);
  });

  it('a file owned by another user is replaced by one of ours', () => {
    asRoot();
    const d = fresh();
    const key = join(d, 'key.pem');
    writeFileSync(key, '');
    chownSync(key, NOBODY, NOBODY);
    writeFileReplacingSync(key, 'secret', 0o600);
    assert.equal(statSync(key).uid, process.getuid!());
  });
});

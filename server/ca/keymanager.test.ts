import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportPublicKeySpki, keyTypeOf } from '../../spiffe/keys.js';
import { DiskKeyManager, MemoryKeyManager, keyManagerFromConfig } from './keymanager.js';
import { TempDirs, isCaError } from './testkit.js';

const dirs = new TempDirs();
after(() => dirs.cleanup());

const mode = (p: string): number => statSync(p).mode & 0o777;

async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

describe('DiskKeyManager', () => {
  it('writes PKCS#8 PEM key files 0600 in a 0700 directory even with umask 0', async () => {
    await withUmask(0, async () => {
      const keysPath = join(dirs.make(), 'nested', 'keys');
      const km = new DiskKeyManager(keysPath);
      const key = await km.generate('x509-CA-A', 'ec-p256');
      assert.equal(mode(keysPath), 0o700);
      const file = join(keysPath, 'x509-CA-A.key');
      assert.equal(mode(file), 0o600);
      assert.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
      assert.deepEqual(readdirSync(keysPath), ['x509-CA-A.key'], 'no temp files left behind');
      const loaded = await km.load('x509-CA-A');
      assert.ok(loaded);
      assert.ok(exportPublicKeySpki(loaded).equals(exportPublicKeySpki(key)));
    });
  });

  it('keeps 0600 under a umask that would strip the owner bits', async () => {
    await withUmask(0o277, async () => {
      const keysPath = join(dirs.make(), 'keys');
      const km = new DiskKeyManager(keysPath);
      await km.generate('JWT-Signer-A', 'ec-p384');
      assert.equal(mode(keysPath), 0o700);
      assert.equal(mode(join(keysPath, 'JWT-Signer-A.key')), 0o600);
      const k = await km.load('JWT-Signer-A');
      assert.equal(k && keyTypeOf(k), 'ec-p384');
    });
  });

  it('tightens an existing group/world-readable keys directory to 0700', async () => {
    await withUmask(0, async () => {
      const keysPath = join(dirs.make(), 'keys');
      mkdirSync(keysPath, { mode: 0o755 });
      const warnings: object[] = [];
      const km = new DiskKeyManager(keysPath, { logger: { warn: (o) => warnings.push(o) } });
      await km.generate('x509-CA-B', 'ec-p256');
      assert.equal(mode(keysPath), 0o700);
      assert.equal(warnings.length, 1);
    });
  });

  it('generate replaces the slot key; delete forgets it; missing slots load as undefined', async () => {
    const km = new DiskKeyManager(join(dirs.make(), 'keys'));
    assert.equal(await km.load('x509-CA-A'), undefined, 'directory does not exist yet');
    const k1 = await km.generate('x509-CA-A', 'ec-p256');
    const k2 = await km.generate('x509-CA-A', 'ec-p256');
    const loaded = await km.load('x509-CA-A');
    assert.ok(loaded && exportPublicKeySpki(loaded).equals(exportPublicKeySpki(k2)));
    assert.ok(!exportPublicKeySpki(k1).equals(exportPublicKeySpki(k2)));
    await km.delete('x509-CA-A');
    assert.equal(await km.load('x509-CA-A'), undefined);
    await km.delete('x509-CA-A'); // idempotent
  });

  it('refuses key files readable by others, symlinks and garbage, naming the file and never the content', async () => {
    const keysPath = join(dirs.make(), 'keys');
    const km = new DiskKeyManager(keysPath);
    await km.generate('x509-CA-A', 'ec-p256');
    const file = join(keysPath, 'x509-CA-A.key');
    chmodSync(file, 0o644);
    await assert.rejects(km.load('x509-CA-A'), (err: Error) => isCaError(err, 'key_manager') && err.message.includes(file) && err.message.includes('0644'));
    chmodSync(file, 0o640);
    await assert.rejects(km.load('x509-CA-A'), (err: Error) => isCaError(err, 'key_manager'));

    const secret = 'NOT-A-KEY-BUT-SECRET-LOOKING';
    writeFileSync(join(keysPath, 'JWT-Signer-A.key'), secret, { mode: 0o600 });
    await assert.rejects(
      km.load('JWT-Signer-A'),
      (err: Error) => isCaError(err, 'key_manager') && err.message.includes('JWT-Signer-A.key') && !err.message.includes(secret),
    );

    chmodSync(file, 0o600);
    symlinkSync(file, join(keysPath, 'x509-CA-B.key'));
    await assert.rejects(km.load('x509-CA-B'), (err: Error) => isCaError(err, 'key_manager') && /symbolic link/.test(err.message));
  });

  it('rejects slot IDs that are not plain file names', async () => {
    const km = new DiskKeyManager(join(dirs.make(), 'keys'));
    for (const bad of ['', '../x509-CA-A', 'a/b', '.hidden', 'x'.repeat(65), 'sp ace']) {
      await assert.rejects(km.generate(bad, 'ec-p256'), (err: Error) => isCaError(err, 'slot_id'), bad);
      await assert.rejects(km.load(bad), (err: Error) => isCaError(err, 'slot_id'), bad);
    }
  });

  it('does not print key material when serialized', async () => {
    const km = new DiskKeyManager(join(dirs.make(), 'keys'));
    await km.generate('x509-CA-A', 'ec-p256');
    assert.doesNotMatch(JSON.stringify(km), /PRIVATE/);
  });
});

describe('MemoryKeyManager', () => {
  it('generates, loads and deletes in memory only', async () => {
    const km = new MemoryKeyManager();
    assert.equal(await km.load('x509-CA-A'), undefined);
    const k = await km.generate('x509-CA-A', 'rsa-2048');
    assert.equal(await km.load('x509-CA-A'), k);
    assert.equal(keyTypeOf(k), 'rsa-2048');
    assert.equal(await new MemoryKeyManager().load('x509-CA-A'), undefined, 'another instance (a restart) has nothing');
    await km.delete('x509-CA-A');
    assert.equal(await km.load('x509-CA-A'), undefined);
    assert.doesNotMatch(JSON.stringify(km), /PRIVATE|BEGIN/);
  });

  it('keyManagerFromConfig picks the configured kind', () => {
    assert.equal(keyManagerFromConfig({ name: 'memory' }).kind, 'memory');
    const disk = keyManagerFromConfig({ name: 'disk', keysPath: '/tmp/spindle-keys-unused' });
    assert.ok(disk instanceof DiskKeyManager);
    assert.equal(disk.keysPath, '/tmp/spindle-keys-unused');
  });
});

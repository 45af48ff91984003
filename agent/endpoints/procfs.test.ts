import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readEffectiveUid, readStartTime } from './procfs.js';

const status = (euid: number): string => `Name:\tw\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t${euid}\t${euid}\t${euid}\nGid:\t1000\t1000\t1000\t1000\n`;

test('the effective uid is read once per process per synchronous run, and again in the next one', async () => {
  const root = mkdtempSync(join(tmpdir(), 'spindle-procfs-'));
  try {
    mkdirSync(join(root, '42'));
    mkdirSync(join(root, '43'));
    writeFileSync(join(root, '42', 'status'), status(1000));
    writeFileSync(join(root, '43', 'status'), status(2000));
    assert.equal(readEffectiveUid(root, 42), 1000);
    assert.equal(readEffectiveUid(root, 43), 2000, 'another process is read on its own');
    writeFileSync(join(root, '42', 'status'), status(0));
    assert.equal(readEffectiveUid(root, 42), 1000, 'same synchronous run: the value read at its start');
    await Promise.resolve();
    assert.equal(readEffectiveUid(root, 42), 0, 'next run: read again');
    rmSync(join(root, '42'), { recursive: true });
    assert.equal(readEffectiveUid(root, 42), 0);
    await Promise.resolve();
    assert.equal(readEffectiveUid(root, 42), undefined, 'a process gone: undefined');
    assert.equal(readEffectiveUid(root, 44), undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the start time is field 22 counted after the last parenthesis of comm', () => {
  const root = mkdtempSync(join(tmpdir(), 'spindle-procfs-'));
  try {
    mkdirSync(join(root, '7'));
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    writeFileSync(join(root, '7', 'stat'), `7 (a) b) c) ${fields.join(' ')}\n`);
    assert.equal(readStartTime(root, 7), '22');
    assert.equal(readStartTime(root, 8), undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStartTime, readCallerFacts, readExeId, readStartTime } from './procfs.js';

const status = (euid: number, egid = 1000): string => `Name:\tw\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t${euid}\t${euid}\t${euid}\nGid:\t1000\t${egid}\t${egid}\t${egid}\n`;

test('effective ids and the executable are read once per process per synchronous run, and again in the next one', async () => {
  const root = mkdtempSync(join(tmpdir(), 'spindle-procfs-'));
  try {
    mkdirSync(join(root, '42'));
    mkdirSync(join(root, '43'));
    writeFileSync(join(root, 'prog-a'), 'a');
    writeFileSync(join(root, 'prog-b'), 'b');
    const idOf = (f: string): string => {
      const st = statSync(join(root, f), { bigint: true });
      return `${st.dev}:${st.ino}`;
    };
    writeFileSync(join(root, '42', 'status'), status(1000));
    symlinkSync(join(root, 'prog-a'), join(root, '42', 'exe'));
    writeFileSync(join(root, '43', 'status'), status(2000, 42));
    assert.deepEqual(readCallerFacts(root, 42), { euid: 1000, egid: 1000, exe: idOf('prog-a') });
    assert.deepEqual(readCallerFacts(root, 43), { euid: 2000, egid: 42, exe: undefined }, 'another process is read on its own; no exe: undefined');
    writeFileSync(join(root, '42', 'status'), status(0, 42));
    unlinkSync(join(root, '42', 'exe'));
    symlinkSync(join(root, 'prog-b'), join(root, '42', 'exe')); // "exec"
    assert.deepEqual(readCallerFacts(root, 42), { euid: 1000, egid: 1000, exe: idOf('prog-a') }, 'same synchronous run: the values read at its start');
    await Promise.resolve();
    assert.deepEqual(readCallerFacts(root, 42), { euid: 0, egid: 42, exe: idOf('prog-b') }, 'next run: read again');
    assert.equal(readExeId(root, 42), idOf('prog-b'));
    rmSync(join(root, '42'), { recursive: true });
    await Promise.resolve();
    assert.deepEqual(readCallerFacts(root, 42), { euid: undefined, egid: undefined, exe: undefined }, 'a process gone: undefined');
    assert.equal(readExeId(root, 44), undefined);
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

test('a stat line without the comm parenthesis, too few fields or a non-numeric start time gives no start time; runs of spaces separate one field', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  assert.equal(parseStartTime(`7 (a) ${fields.join('   ')}`), '22');
  assert.equal(parseStartTime(`7 a ${fields.join(' ')}`), undefined);
  assert.equal(parseStartTime(`) ${fields.join(' ')}`), '22', 'a parenthesis at the very start still closes comm');
  assert.equal(parseStartTime(`7 (a) ${fields.slice(0, 19).join(' ')}`), undefined);
  for (const bad of ['22x', 'x22', '-22', '']) {
    const f = [...fields];
    f[19] = bad;
    assert.equal(parseStartTime(`7 (a) ${f.join(' ')}`), bad === '' ? '23' : undefined, JSON.stringify(bad));
  }
});

test('effective ids are the second column of the Uid: and Gid: lines, whatever the spacing; a missing line leaves only that id unknown', async () => {
  const root = mkdtempSync(join(tmpdir(), 'spindle-procfs-'));
  try {
    const status = (pid: number, text: string) => {
      mkdirSync(join(root, String(pid)));
      writeFileSync(join(root, String(pid), 'status'), text);
    };
    // A decoy line ending in "Uid:" / "Gid:" comes first: only a line starting with it counts.
    status(1, 'Name:\tx\nNotUid:\t1\t2\t3\t4\nNotGid:\t5\t6\t7\t8\nUid:  1000   2000  3000  4000\nGid:\t100\t200\t300\t400\n');
    status(2, 'Name:\tx\nGid:\t100\t200\t300\t400\n');
    status(3, 'Name:\tx\nUid:\t1000\t2000\t3000\t4000\n');
    status(4, 'Name:\tx\nUid:\t1000\t2000\t3000\t4000\nGid:  100   200  300  400\n');
    const one = readCallerFacts(root, 1);
    assert.equal(one.euid, 2000);
    assert.equal(one.egid, 200);
    await Promise.resolve();
    assert.deepEqual([readCallerFacts(root, 2).euid, readCallerFacts(root, 2).egid], [undefined, 200]);
    assert.deepEqual([readCallerFacts(root, 3).euid, readCallerFacts(root, 3).egid], [2000, undefined]);
    assert.deepEqual([readCallerFacts(root, 4).euid, readCallerFacts(root, 4).egid], [2000, 200], 'runs of spaces in the Gid: line too');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

// Fault: the server's data dir on a full disk, then on a read-only filesystem (a 8 MiB tmpfs;
// needs root to mount). Entry writes must fail with a clear status (no stack trace, no
// INTERNAL with internals), the server must stay up and keep serving reads, the database must
// stay intact, and writes must succeed again once space returns / the fs is writable again.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServerProcess, type ServerProcess } from '../support/serverproc.js';
import { adminClient, integrityCheck, keepOrClean, listAllEntries, ok, workloadEntry } from './support/common.js';
import { needsRoot } from '../support/otheruid.js';
import { mountTmpfs, type TmpfsMount } from './support/tmpfs.js';

const TD = 'example.org';
const PARENT = `spiffe://${TD}/faults/node`;

let server: ServerProcess | undefined;
let mount: TmpfsMount | undefined;
let dir: string | undefined;
after(async () => {
  await server?.stop();
  mount?.unmount();
  keepOrClean(!!process.env['SPINDLE_E2E_KEEP'], [server]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function cliCreate(s: ServerProcess, n: string) {
  return s.cli(['entry', 'create', '-parentID', PARENT, '-spiffeID', `spiffe://${TD}/disk/${n}`, '-selector', `unix:uid:${n.length}`]);
}

/** What a failed CLI write must look like: SPIRE's "rpc error: code = X desc = ...", no stack. */
function assertClearFailure(r: { status: number | null; stdout: string; stderr: string }, expect: RegExp, what: string): string {
  assert.notEqual(r.status, 0, `${what}: the CLI must fail: ${r.stdout}`);
  const msg = `${r.stderr}${r.stdout}`.trim();
  assert.doesNotMatch(msg, /\n\s+at |node:internal|SqliteError|\.js:\d+/, `${what}: no stack trace or internals:\n${msg}`);
  assert.doesNotMatch(msg, /code = (INTERNAL|UNKNOWN)\b/, `${what}: not an INTERNAL/UNKNOWN status:\n${msg}`);
  assert.match(msg, expect, `${what}: says what is wrong:\n${msg}`);
  return msg;
}

test('disk full and read-only data dir: clear errors, server up, intact database, recovery', { timeout: 60_000 }, async () => {
  needsRoot('mounting a tmpfs');
  dir = mkdtempSync(join(tmpdir(), 'spindle-disk-'));
  mount = mountTmpfs(join(dir, 'data'), 8 * 1024 * 1024);
  server = await startServerProcess({ dir, trustDomain: TD });
  assert.equal(server.dataDir, mount.path);
  const admin = adminClient(server);
  const acked = new Set<string>();
  const create = async (n: string): Promise<{ code: number; message: string }> => {
    let res;
    try {
      res = await admin.call(admin.entry.batchCreateEntry, { entries: [workloadEntry({ spiffeId: `spiffe://${TD}/disk/${n}`, parentId: PARENT, selectors: [`unix:uid:${n.length}`] })] });
    } catch (err) {
      return { code: -1, message: (err as Error).message };
    }
    const r = res.results[0]!;
    if (r.status?.code === 0) acked.add(r.entry!.id);
    return { code: r.status?.code ?? -1, message: r.status?.message ?? '' };
  };
  const problems: string[] = [];
  const clear = (...args: Parameters<typeof assertClearFailure>): string => {
    try {
      return assertClearFailure(...args);
    } catch (err) {
      problems.push((err as Error).message);
      return `${args[0].stderr}${args[0].stdout}`.trim();
    }
  };
  try {
    for (let i = 0; i < 20; i++) assert.equal((await create(`before-${i}`)).code, 0);

    // --- Disk full.
    const filler = join(mount.path, 'filler');
    mount.fill(filler);
    // SQLite may still find room in pages it already has: write until it cannot.
    let failure: { code: number; message: string } | undefined;
    for (let i = 0; i < 2000 && !failure; i++) {
      const r = await create(`full-${i}`);
      if (r.code !== 0) failure = r;
    }
    assert.ok(failure, 'writes fail once the disk is full');
    const fullMsg = clear(cliCreate(server, 'full-cli'), /disk|space|full/i, 'entry create on a full disk');
    assert.equal(server.proc.exitCode, null, 'the server is still running');
    ok(server.cli(['entry', 'count']), 'reads work on a full disk');
    ok(server.cli(['healthcheck']), 'healthcheck on a full disk');

    rmSync(filler);
    assert.equal((await create('after-full')).code, 0, 'writes succeed once space returns');
    ok(cliCreate(server, 'after-full-cli'), 'CLI write after space returns');

    const present = new Set((await listAllEntries(admin)).map((e) => e.id));
    assert.deepEqual([...acked].filter((id) => !present.has(id)), [], 'every acknowledged entry is present');
    admin.close();

    // --- Read-only. A live remount is refused while the server holds the database open for
    // writing (EBUSY), so: the server restarts on a data dir that has gone read-only.
    await server.stop();
    mount.remount('ro');
    const roStart = await startServerProcess({ dir, port: server.port, trustDomain: TD }).then(
      (s) => {
        server = s;
        return 'started';
      },
      (err: Error) => err.message,
    );
    const roMsg = roStart === 'started' ? 'started' : roStart.split('\n').filter((l) => /ERROR|FATAL|error/i.test(l)).join('\n') || roStart;
    if (roStart === 'started') {
      // Started anyway (e.g. read-only mode): writes must then fail clearly.
      clear(cliCreate(server, 'ro-cli'), /read-only|readonly|read only/i, 'entry create on a read-only data dir');
      await server.stop();
    } else {
      if (!/read-only|readonly|read only|EROFS/i.test(roMsg)) problems.push(`the server on a read-only data dir must say so, it said:\n${roMsg}`);
      if (/\n\s+at /.test(roMsg)) problems.push(`no stack trace on a read-only data dir:\n${roMsg}`);
    }
    mount.remount('rw');
    server = await startServerProcess({ dir, port: server.port, trustDomain: TD });
    const again = adminClient(server);
    try {
      const res = await again.call(again.entry.batchCreateEntry, { entries: [workloadEntry({ spiffeId: `spiffe://${TD}/disk/after-ro`, parentId: PARENT, selectors: ['unix:uid:1'] })] });
      assert.equal(res.results[0]?.status?.code, 0, 'writes succeed once the data dir is writable again');
      const present = new Set((await listAllEntries(again)).map((e) => e.id));
      assert.deepEqual([...acked].filter((id) => !present.has(id)), [], 'every acknowledged entry is present after the restart');
    } finally {
      again.close();
    }
    console.log(`# full disk: API status ${failure.code} "${failure.message}"; CLI: ${fullMsg}`);
    console.log(`# read-only data dir at start: ${roMsg}`);
  } finally {
    admin.close();
  }
  // Asserted last so the recovery checks above run (and report) even when a message is unclear.
  assert.deepEqual(problems, [], 'failed writes say clearly what is wrong');
  await server.stop();
  const check = integrityCheck(mount.path);
  assert.equal(check.integrity, 'ok');
  assert.equal(check.foreignKeyViolations, 0);
});

// Fault: spindle-server killed with SIGKILL in the middle of a burst of entry writes (single
// creates and batches over the admin socket, and CLI processes). Every write the API or the CLI
// acknowledged must be present after a restart on the same data dir, and the SQLite database
// must pass PRAGMA integrity_check. Three rounds, killed at a different moment each time.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { serverCliAsync } from '../support/agentproc.js';
import { startServerProcess, type ServerProcess } from '../support/serverproc.js';
import { CliError } from '../../server/cli/errors.js';
import { adminClient, entryIdOf, integrityCheck, keepOrClean, listAllEntries, sleep, workloadEntry } from './support/common.js';

const TD = 'example.org';
const PARENT = `spiffe://${TD}/faults/node`;
const ROUNDS = 3;
const SINGLE_WRITERS = 8;
const BATCH_WRITERS = 4;
const BATCH_SIZE = 10;
const CLI_WRITERS = 2;

let server: ServerProcess | undefined;
after(async () => {
  await server?.stop('SIGKILL');
  keepOrClean(!!process.env['SPINDLE_E2E_KEEP'], [server]);
});

/**
 * The call's answer, or undefined when it failed the way a call to a server being killed fails
 * (the admin client's CliError: a gRPC status such as UNAVAILABLE, or no socket). Anything else
 * (an assertion, a bug in the test or the client) is thrown, not counted as a failed write.
 */
async function callFailure<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    // The admin client reports a failed call (a gRPC status, or the socket gone) as a CliError.
    if (err instanceof CliError) return undefined;
    throw err;
  }
}

test('SIGKILL during a burst of entry writes loses no acknowledged entry and leaves an intact database', { timeout: 120_000 }, async () => {
  server = await startServerProcess({ trustDomain: TD });
  const acked = new Map<string, string>(); // entry ID -> SPIFFE ID
  const notes: string[] = [];
  let failedTotal = 0; // writes that got no acknowledgement, over all rounds
  for (let round = 0; round < ROUNDS; round++) {
    const srv: ServerProcess = server!;
    let stop = false;
    let attempted = 0;
    let failed = 0;
    const roundAcked = { single: 0, batch: 0, cli: 0 };
    const admins = Array.from({ length: SINGLE_WRITERS + BATCH_WRITERS }, () => adminClient(srv));
    const ack = (id: string, spiffeId: string): void => {
      assert.ok(!acked.has(id), `entry ID ${id} acknowledged twice`);
      acked.set(id, spiffeId);
    };
    const single = async (w: number): Promise<void> => {
      const a = admins[w]!;
      for (let n = 0; !stop; n++) {
        const spiffeId = `spiffe://${TD}/burst/r${round}/s${w}/${n}`;
        attempted++;
        const res = await callFailure(a.call(a.entry.batchCreateEntry, { entries: [workloadEntry({ spiffeId, parentId: PARENT, selectors: [`unix:uid:${1000 + n}`] })] }));
        if (res === undefined) {
          failed++;
          await sleep(20);
          continue;
        }
        const r = res.results[0]!;
        if (r.status?.code === 0 && r.entry) {
          ack(r.entry.id, spiffeId);
          roundAcked.single++;
        } else failed++;
      }
    };
    const batch = async (w: number): Promise<void> => {
      const a = admins[SINGLE_WRITERS + w]!;
      for (let n = 0; !stop; n++) {
        const entries = Array.from({ length: BATCH_SIZE }, (_, k) => workloadEntry({ spiffeId: `spiffe://${TD}/burst/r${round}/b${w}/${n}/${k}`, parentId: PARENT, selectors: [`unix:gid:${k}`] }));
        attempted += BATCH_SIZE;
        const res = await callFailure(a.call(a.entry.batchCreateEntry, { entries }));
        if (res === undefined) {
          failed += BATCH_SIZE;
          await sleep(20);
          continue;
        }
        // Outside any try: a broken promise here fails the test, it is not a "failed write".
        res.results.forEach((r, k) => {
          if (r.status?.code === 0 && r.entry) {
            assert.equal(r.entry.spiffeId, entries[k]!.spiffeId, 'results are in request order');
            ack(r.entry.id, entries[k]!.spiffeId);
            roundAcked.batch++;
          } else failed++;
        });
      }
    };
    const cli = async (w: number): Promise<void> => {
      for (let n = 0; !stop; n++) {
        const spiffeId = `spiffe://${TD}/burst/r${round}/c${w}/${n}`;
        attempted++;
        const r = await serverCliAsync(srv, ['entry', 'create', '-parentID', PARENT, '-spiffeID', spiffeId, '-selector', `unix:uid:${n}`]);
        if (r.status === 0) {
          ack(entryIdOf(r.stdout), spiffeId);
          roundAcked.cli++;
        } else {
          failed++;
          // What the CLI prints when the server vanishes under it: a clear message, no stack.
          assert.doesNotMatch(r.stderr, /\n\s+at /, `CLI stderr without a stack trace:\n${r.stderr}`);
          await sleep(20);
        }
      }
    };
    const t0 = performance.now();
    const writers = [
      ...Array.from({ length: SINGLE_WRITERS }, (_, w) => single(w)),
      ...Array.from({ length: BATCH_WRITERS }, (_, w) => batch(w)),
      ...Array.from({ length: CLI_WRITERS }, (_, w) => cli(w)),
    ];
    let killedAt = 0;
    try {
      // Let the burst get going (at least one CLI write through), then kill at a varying moment.
      while (roundAcked.cli === 0 && performance.now() - t0 < 15_000) await sleep(10);
      await sleep(200 + round * 350);
      assert.equal(srv.proc.exitCode, null, `the server is still running under the burst:\n${srv.log().slice(-2000)}`);
      await srv.stop('SIGKILL');
      killedAt = performance.now() - t0;
      // Writes in flight at the kill fail; keep going briefly so some hit the dead socket too.
      await sleep(300);
    } finally {
      stop = true;
      await Promise.all(writers);
      failedTotal += failed;
      for (const a of admins) a.close();
    }

    const check = integrityCheck(srv.dataDir);
    assert.equal(check.integrity, 'ok', `integrity_check of ${check.file} after SIGKILL (round ${round})`);
    assert.equal(check.foreignKeyViolations, 0, `foreign_key_check of ${check.file}`);

    server = await startServerProcess({ dir: srv.dir, port: srv.port, trustDomain: TD });
    const a = adminClient(server);
    try {
      const present = new Map((await listAllEntries(a)).map((e) => [e.id, e.spiffeId]));
      const missing = [...acked].filter(([id, sid]) => present.get(id) !== sid);
      assert.deepEqual(missing, [], `acknowledged entries missing after the SIGKILL of round ${round}`);
      const extra = present.size - acked.size;
      notes.push(`round ${round}: killed at ${killedAt.toFixed(0)} ms; acknowledged this round: single ${roundAcked.single}, batch ${roundAcked.batch}, CLI ${roundAcked.cli}), ${attempted} attempted, ${failed} failed; ${present.size} present = ${acked.size} acknowledged + ${extra} committed but unacknowledged`);
      // Committed but unacknowledged entries can only be writes that failed (in flight at the
      // kill), each one this test attempted: nothing else appears.
      const unacked = [...present].filter(([id]) => !acked.has(id));
      assert.equal(unacked.length, extra);
      assert.ok(extra <= failedTotal, `${extra} unacknowledged entries, but only ${failedTotal} writes failed`);
      for (const [id, sid] of unacked) assert.match(sid, new RegExp(`^spiffe://${TD.replace(/\./g, '\\.')}/burst/r\\d+/`), `entry ${id} (${sid}) was never written by this test`);
      // The restarted server takes writes again.
      const res = await a.call(a.entry.batchCreateEntry, { entries: [workloadEntry({ spiffeId: `spiffe://${TD}/burst/after-r${round}`, parentId: PARENT, selectors: ['unix:uid:1'] })] });
      assert.equal(res.results[0]?.status?.code, 0, res.results[0]?.status?.message);
      acked.set(res.results[0]!.entry!.id, `spiffe://${TD}/burst/after-r${round}`);
    } finally {
      a.close();
    }
    assert.ok(roundAcked.single + roundAcked.batch > 50, `round ${round}: the burst was under way when killed (${JSON.stringify(roundAcked)})`);
  }
  for (const n of notes) console.log(`# ${n}`);
});

// `npm run demo:mesh -- --proxy` end to end: the demo runs as a real process for 15 s (its own
// spindle-server and spindle-agent, three plain HTTP services and a real `spindle-proxy run
// -config` process per service holding the service's identity), and everything is judged from
// what it prints and its exit code: payments -> database requests all succeed through the two
// proxies, frontend's requests to the database get 403 naming the policy rule, the database
// proxy's /metrics counts those refusals for frontend's ID and the requests it allowed for
// payments, its access log has the refused line, the services print their callers from
// x-forwarded-client-cert (whose Hash changes as the callers' proxies rotate), every proxy
// rotates its SVID, exit code 0. The policy file is the one docs/demo-mesh.md shows.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, tempDir } from './support/serverproc.js';
import { runScript } from './support/scriptrun.js';

const demoJs = join(repoRoot, 'dist', 'scripts', 'demomesh.js');
const policyFile = join(repoRoot, 'scripts', 'demomesh', 'database-policy.yaml');
const ID = (name: string): string => `spiffe://example.org/${name}`;
const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const RULE = 'frontend-not-to-database';

function summaryCount(out: string, re: RegExp): number[] {
  const m = re.exec(out);
  assert.ok(m, `the summary has ${re}\n${out.slice(out.lastIndexOf('Summary'))}`);
  return m.slice(1).map(Number);
}

/** The XFCC hashes (as printed, shortened) `server` saw on requests from `caller`. */
function xfccHashes(out: string, server: string, caller: string): string[] {
  const re = new RegExp(`^\\S+  ${server}: GET \\S+ from ${esc(ID(caller))} \\(x-forwarded-client-cert URI=${esc(ID(caller))} Hash=([0-9a-f]{12})…\\)$`, 'gm');
  return [...out.matchAll(re)].map((m) => m[1]!);
}

const proxyPids = new Set<number>();
/** Set when the demo exited on its own (it then stopped its proxies). */
let demoExited = false;
after(() => {
  if (demoExited) return;
  for (const pid of proxyPids) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('spindle-proxy')) process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

describe('npm run demo:mesh -- --proxy', { timeout: 120_000 }, () => {
  test('docs/demo-mesh.md shows the database proxy policy file as it is', () => {
    const policy = readFileSync(policyFile, 'utf8');
    const docs = readFileSync(join(repoRoot, 'docs', 'demo-mesh.md'), 'utf8');
    assert.ok(docs.includes(`\`\`\`yaml\n${policy}\`\`\``), 'docs/demo-mesh.md has the policy file verbatim in a yaml block');
  });

  test('plain services behind spindle-proxy: payments reaches the database, frontend gets 403 naming the rule, metrics and access log agree, SVIDs rotate', async () => {
    const tmp = tempDir('spindle-demo-mesh-proxy-test-');
    chmodSync(tmp, 0o711); // the proxies' uids must pass through it to the agent socket
    const run = runScript('demo:mesh --proxy', demoJs, ['--proxy', '--duration', '15'], { cwd: tmp, env: { TMPDIR: tmp } });
    // The proxies run in process groups of their own (Ctrl-C is for the runner): should this test
    // fail with the demo still running, they are stopped by pid as well as the demo's group.
    run.child.stdout!.on('data', () => {
      for (const m of run.out().matchAll(/proxy is ready \(pid (\d+),/g)) proxyPids.add(Number(m[1]));
    });
    await run.waitFor(/Requests flow/, 60_000);
    await run.waitFor(/^Result: /m, 60_000);
    const code = await run.exited;
    demoExited = true;
    const out = run.out();
    const all = `--- stdout\n${out}\n--- stderr\n${run.err()}`;
    assert.equal(code, 0, all);
    assert.match(out, /^Result: OK/m, all);
    assert.equal(run.err(), '', 'nothing on stderr');

    // Each proxy is a real process with the service's identity (uid as root, else a node link).
    for (const name of ['database', 'payments', 'frontend']) {
      assert.match(out, new RegExp(`^\\S+  \\[4/4\\] ${name} proxy is ready \\(pid \\d+, (uid \\d+|\\S+/bin/${name});`, 'm'));
      assert.match(out, new RegExp(`^\\S+  \\[4/4\\] ${name} is up \\(plain HTTP, no identity`, 'm'));
    }

    // Allowed: all succeeded, and there were some.
    const [pdOk, pdFailed] = summaryCount(out, /^ {2}payments -> database +allowed +ok (\d+) +failed (\d+)$/m);
    assert.ok(pdOk! > 0, 'payments -> database requests succeeded');
    assert.equal(pdFailed, 0);
    const [fpOk, fpFailed] = summaryCount(out, /^ {2}frontend -> payments +allowed +ok (\d+) +failed (\d+)$/m);
    assert.ok(fpOk! > 0);
    assert.equal(fpFailed, 0);
    assert.doesNotMatch(out, /FAILED|GOT THROUGH/);

    // Forbidden: every try got 403 from the database's proxy, the body naming the DENY rule.
    const [forbidden, through, fdFailed] = summaryCount(out, /^ {2}frontend -> database +forbidden +403 (\d+) +got through (\d+) +failed (\d+)$/m);
    assert.ok(forbidden! > 0);
    assert.equal(through, 0);
    assert.equal(fdFailed, 0);
    const bodies = out.match(new RegExp(`^\\S+  frontend: call to database refused: HTTP 403 forbidden by rule "${RULE}": .+$`, 'gm')) ?? [];
    assert.equal(bodies.length, forbidden, 'each 403 printed with its body naming the rule');
    assert.deepEqual(xfccHashes(out, 'database', 'frontend'), [], 'the database never saw frontend');

    // The database proxy's /metrics: refusals for frontend by the rule, requests allowed for payments.
    const [refusals] = summaryCount(out, new RegExp(`^ {4}spindle_proxy_refusals_total\\{listener="database-in",source="${esc(ID('frontend'))}",rule="${RULE}"\\} (\\d+)$`, 'm'));
    assert.equal(refusals, forbidden);
    const [allowed] = summaryCount(out, new RegExp(`^ {4}spindle_proxy_requests_total\\{listener="database-in",source="${esc(ID('payments'))}",decision="allow"\\} (\\d+)$`, 'm'));
    assert.equal(allowed, pdOk);

    // Its access log: a refused line with frontend's ID, decision deny and the rule.
    const line = /database proxy access log: \d+ lines, (\d+) refused; one refused line:\n {4}(\{.*\})$/m.exec(out);
    assert.ok(line, all);
    assert.equal(Number(line[1]), forbidden);
    const entry = JSON.parse(line[2]!) as Record<string, unknown>;
    assert.equal(entry['source_id'], ID('frontend'));
    assert.equal(entry['own_id'], ID('database'));
    assert.equal(entry['decision'], 'deny');
    assert.equal(entry['rule'], RULE);
    assert.equal(entry['status'], 403);

    // Callers printed from x-forwarded-client-cert; the certificate hash changes as the caller's proxy rotates.
    for (const [server, caller] of [['database', 'payments'], ['payments', 'frontend']] as const) {
      const hashes = xfccHashes(out, server, caller);
      assert.ok(hashes.length > 0, `${server} printed requests from ${ID(caller)} by x-forwarded-client-cert`);
      assert.ok(new Set(hashes).size >= 2, `${server} saw ${caller}'s proxy present a rotated SVID (hashes ${[...new Set(hashes)].join(', ')})`);
    }

    // Every proxy rotated its SVID, and the summary counts it.
    const rotations = /^ {2}rotations \(the proxies' X509-SVIDs\): (.*)$/m.exec(out)?.[1] ?? '';
    for (const name of ['database', 'payments', 'frontend']) {
      assert.match(out, new RegExp(`^\\S+  ${name} proxy: new X509-SVID for ${esc(ID(name))}$`, 'm'), `${name} proxy rotated`);
      assert.ok(Number(new RegExp(`${name} (\\d+)`).exec(rotations)?.[1]) >= 1, `summary rotations for ${name}: ${rotations}`);
    }
  });
});

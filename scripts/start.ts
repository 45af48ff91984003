/**
 * `npm start`: the quickstart. With no configuration it starts, under ./.spindle/quickstart:
 * a local spindle-server, a spindle-agent attested with a join token, a registration entry for
 * the current user (short SVID lifetime, so rotation shows within a minute), and a demo
 * workload that watches its identity over the Workload API and prints every update live,
 * labelled: first identity, rotated, identity added, identity removed, bundle changed.
 *
 * A second run resumes the same state. The quickstart owns its server, so when the agent cannot
 * resume (its stored SVID expired while stopped, or the server no longer knows the agent) it
 * removes the stale agent state and attests again with a fresh join token for the same node
 * alias, so the workload entry (parented to the alias) stays valid. The agent's ID is also kept
 * in <state>/agent_id: an agent told by the server that it was evicted discards its own files,
 * and the next run still knows which node record and alias entry to clean up. If the server or
 * the agent stops on its own while the demo runs (an evicted agent exits), the quickstart says
 * which one and why, stops the rest and exits 1. Ctrl-C stops the demo workload first, then the
 * agent, then the server, and exits 0.
 *
 * Environment: SPINDLE_QUICKSTART_PORT (agent API port, default 18081);
 * SPINDLE_QUICKSTART_AGENT_TTL (agent SVID lifetime in seconds, default the server's, one hour:
 * a short value shows the re-attestation after a stop without waiting an hour).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createWorkloadApiClient, type X509Context } from '../spiffe/workloadapi/index.js';
import { parseCertificate } from '../spiffe/x509/index.js';
import { pemToCertificates } from '../spiffe/pem.js';
import { LocalStack, agentBin, serverBin, sh, tail } from './localstack.js';

const state = resolve('.spindle', 'quickstart');
const td = 'example.org';
const nodeId = `spiffe://${td}/quickstart/node`;
const workloadId = `spiffe://${td}/quickstart/workload`;
const adminSocket = join(state, 'server', 'admin', 'api.sock');
const agentSocket = join(state, 'agent', 'public', 'api.sock');
const agentData = join(state, 'agent', 'data');
/** The last agent ID this quickstart attested (survives the agent discarding its own files). */
const agentIdFile = join(state, 'agent_id');
const uid = userInfo().uid;
let closeDemo: (() => void) | undefined;

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

function envInt(name: string, fallback: number | undefined): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^[1-9][0-9]{0,5}$/.test(raw)) {
    process.stderr.write(`quickstart: ${name}=${JSON.stringify(raw)} is not a whole number between 1 and 999999; unset it or fix it\n`);
    process.exit(2);
  }
  return Number(raw);
}

const port = envInt('SPINDLE_QUICKSTART_PORT', 18081)!;
const agentTtl = envInt('SPINDLE_QUICKSTART_AGENT_TTL', undefined);

const stack = new LocalStack({
  state,
  adminSocket,
  onStoppedOnItsOwn: (name, description) => {
    say(`\n${description}`);
    if (name === 'agent') say('Run npm start again: the quickstart attests the agent again with a new join token when it has to.');
    say('Stopping the rest...');
    void stopAll(1);
  },
});
const cli = (args: string[]): { status: number | null; stdout: string; stderr: string } => stack.cli(args);
const start = stack.start.bind(stack);

let stopping = false;
/** Stops the demo workload first (so it does not report the agent going away), then the agent, then the server. */
async function stopAll(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  closeDemo?.();
  await stack.stopAll();
  process.exit(code);
}

process.on('SIGINT', () => {
  if (!stopping) say('\nStopping the demo workload, then the agent, then the server...');
  void stopAll(0);
});
process.on('SIGTERM', () => void stopAll(0));

/** What the agent's data directory holds: nothing, an unusable SVID (why), or one to resume with. */
function storedAgent(): { kind: 'none' } | { kind: 'stale'; agentId?: string; why: string } | { kind: 'resume'; agentId: string } {
  if (!existsSync(join(agentData, 'agent_svid.pem'))) {
    // No SVID, but an agent attested before: the agent discarded its files (the server told it
    // it was evicted), or someone removed them. Either way its node record and alias entry go.
    const previous = existsSync(agentIdFile) ? readFileSync(agentIdFile, 'utf8').trim() : '';
    if (!previous) return { kind: 'none' };
    const shown = cli(['agent', 'show', '-spiffeID', previous]);
    if (shown.status !== 0 && /not found/i.test(shown.stdout + shown.stderr)) {
      return { kind: 'stale', agentId: previous, why: `the server no longer knows the agent ${previous} (it was evicted)` };
    }
    return { kind: 'stale', agentId: previous, why: `the agent's stored identity is gone from ${agentData}` };
  }
  let agentId: string;
  let notAfter: Date;
  try {
    agentId = (JSON.parse(readFileSync(join(agentData, 'agent_data.json'), 'utf8')) as { agentId: string }).agentId;
    notAfter = parseCertificate(pemToCertificates(readFileSync(join(agentData, 'agent_svid.pem'), 'utf8'))[0]!).notAfter;
  } catch (err) {
    return { kind: 'stale', why: `the agent's stored identity in ${agentData} is unreadable (${(err as Error).message})` };
  }
  // A few seconds of margin: an SVID that expires while the agent starts cannot be renewed either.
  if (notAfter.getTime() <= Date.now() + 5_000) {
    return { kind: 'stale', agentId, why: `the agent's stored identity expired while the quickstart was stopped (at ${notAfter.toISOString()})` };
  }
  const shown = cli(['agent', 'show', '-spiffeID', agentId]);
  if (shown.status !== 0 && /not found/i.test(shown.stdout + shown.stderr)) {
    return { kind: 'stale', agentId, why: `the server no longer knows the agent ${agentId} (it was evicted)` };
  }
  return { kind: 'resume', agentId };
}

/**
 * Forgets a stale agent: its files now; its node record and the alias entry its join token made
 * in the background (the returned promise), as those admin calls take a moment each.
 */
function forgetAgent(agentId: string | undefined): Promise<void> {
  for (const f of ['agent_svid.pem', 'agent_svid.key', 'bundle.pem', 'agent_data.json']) rmSync(join(agentData, f), { force: true });
  rmSync(agentIdFile, { force: true });
  if (!agentId) return Promise.resolve();
  const admin = (args: string[]): Promise<string> =>
    new Promise((res) => execFile(serverBin, [...args, '-socketPath', adminSocket], { encoding: 'utf8' }, (err, stdout) => res(err ? '' : stdout)));
  const evict = admin(['agent', 'evict', '-spiffeID', agentId]);
  const aliases = admin(['entry', 'show', '-parentID', agentId, '-output', 'json']).then(async (out) => {
    let ids: string[] = [];
    try {
      ids = ((JSON.parse(out) as { entries?: Array<{ id: string }> }).entries ?? []).map((e) => e.id);
    } catch {
      // Cleanup only: a leftover alias entry of a dead agent is harmless.
    }
    await Promise.all(ids.map((id) => admin(['entry', 'delete', '-entryID', id])));
  });
  return Promise.all([evict, aliases]).then(() => undefined);
}

/** Adds a fresh join token (alias nodeId) and the bootstrap bundle to the agent's arguments. */
function withJoinToken(agentArgs: string[]): string[] {
  return [...agentArgs, '-joinToken', stack.joinToken(nodeId), '-trustBundle', join(state, 'bundle.pem')];
}

const time = (d: Date): string => d.toISOString().slice(11, 19);

/** Prints each Workload API update as what changed since the previous one. */
function demoPrinter(onFirst: () => void): (ctx: X509Context) => void {
  let prev: { serials: Map<string, string>; bundles: string } | undefined;
  return (ctx) => {
    const when = time(new Date());
    const serials = new Map<string, string>();
    const line = (label: string, svid: X509Context['svids'][number]): string => {
      const leaf = parseCertificate(svid.certificates[0]!);
      return `${when}  ${label.padEnd(16)} ${svid.id}  serial ${leaf.serialHex.slice(0, 12)}…  valid until ${time(leaf.notAfter)}`;
    };
    for (const s of ctx.svids) serials.set(s.id, parseCertificate(s.certificates[0]!).serialHex);
    const bundles = ctx.bundles
      .bundles()
      .map((b) => `${b.trustDomain}:${b.x509Authorities().map((c) => c.toString('base64')).join(',')}`)
      .sort()
      .join(';');
    if (!prev) {
      for (const s of ctx.svids) say(line('first identity', s));
      prev = { serials, bundles };
      onFirst();
      return;
    }
    let changed = false;
    for (const s of ctx.svids) {
      const before = prev.serials.get(s.id);
      if (before === undefined) say(line('identity added', s));
      else if (before !== serials.get(s.id)) say(line('rotated', s));
      else continue;
      changed = true;
    }
    for (const id of prev.serials.keys()) {
      if (serials.has(id)) continue;
      say(`${when}  ${'identity removed'.padEnd(16)} ${id}`);
      changed = true;
    }
    if (bundles !== prev.bundles) {
      const counts = ctx.bundles.bundles().map((b) => `${b.trustDomain} (${b.x509Authorities().length} X.509 authorities)`);
      say(`${when}  ${'bundle changed'.padEnd(16)} ${counts.join(', ')}`);
      changed = true;
    }
    if (!changed) say(`${when}  ${'update'.padEnd(16)} same identities and bundle`);
    prev = { serials, bundles };
  };
}

try {
  mkdirSync(join(state, 'server'), { recursive: true, mode: 0o700 });
  mkdirSync(join(state, 'agent'), { recursive: true, mode: 0o700 });
  say(`Spindle quickstart: trust domain ${td}, state in ${state}\n`);
  const serverArgs = ['run', '-trustDomain', td, '-dataDir', join(state, 'server', 'data'), '-socketPath', adminSocket, '-bindAddress', '127.0.0.1', '-serverPort', String(port)];
  if (agentTtl !== undefined) {
    const conf = join(state, 'server', 'server.json');
    writeFileSync(conf, `${JSON.stringify({ server: { agent_ttl: agentTtl } })}\n`);
    serverArgs.push('-config', conf);
  }
  await start(serverBin, serverArgs, 'server', 'spindle-server is ready');
  say(`[1/4] spindle-server is running (agent API 127.0.0.1:${port}, admin socket ${adminSocket}${agentTtl ? `, agent SVID TTL ${agentTtl} s` : ''})`);

  const bundle = cli(['bundle', 'show']);
  if (bundle.status !== 0) throw new Error(`bundle show failed: ${(bundle.stderr || bundle.stdout).trim()}`);
  writeFileSync(join(state, 'bundle.pem'), bundle.stdout);
  const baseAgentArgs = ['run', '-trustDomain', td, '-serverAddress', '127.0.0.1', '-serverPort', String(port), '-dataDir', agentData, '-socketPath', agentSocket];
  const stored = storedAgent();
  let agentArgs = baseAgentArgs;
  let cleanup: Promise<void> = Promise.resolve();
  if (stored.kind === 'none') {
    agentArgs = withJoinToken(baseAgentArgs);
    say(`[2/4] generated a join token for the agent (node alias ${nodeId})`);
  } else if (stored.kind === 'stale') {
    cleanup = forgetAgent(stored.agentId);
    agentArgs = withJoinToken(baseAgentArgs);
    say(`[2/4] ${stored.why}; attesting again with a new join token (node alias ${nodeId})`);
  } else say('[2/4] the agent resumes with its stored SVID (no new join token needed)');

  const entry = cli(['entry', 'create', '-parentID', nodeId, '-spiffeID', workloadId, '-selector', `unix:uid:${uid}`, '-x509SVIDTTL', '40']);
  if (entry.status === 0) say(`[3/4] registered ${workloadId} for unix:uid:${uid} (X509-SVID TTL 40 s)`);
  else if (/already exists/i.test(entry.stdout + entry.stderr)) say(`[3/4] the entry for unix:uid:${uid} is already registered`);
  else throw new Error(`entry create failed: ${(entry.stderr || entry.stdout).trim()}`);

  try {
    await start(agentBin, agentArgs, 'agent', 'spindle-agent is ready');
  } catch (err) {
    // Resuming can still fail (the SVID expired in between, or the server refuses it): the
    // quickstart owns the server, so it attests the agent again once, and shows the cause.
    if (stored.kind !== 'resume' || stopping) throw err;
    const cause = tail(String((err as { output?: string }).output ?? (err as Error).message), 1);
    cleanup = forgetAgent(stored.agentId);
    say(`      the agent could not resume with its stored identity (${cause}); attesting again with a new join token`);
    await start(agentBin, withJoinToken(baseAgentArgs), 'agent', 'spindle-agent is ready');
  }
  await cleanup;
  try {
    const { agentId } = JSON.parse(readFileSync(join(agentData, 'agent_data.json'), 'utf8')) as { agentId: string };
    writeFileSync(agentIdFile, `${agentId}\n`);
  } catch {
    // Only cleanup after an eviction depends on it: that run then starts as a first run.
  }
  say(`[4/4] spindle-agent is running (Workload API at ${agentSocket})\n`);

  say('Demo workload: watching its identity over the Workload API (rotation at half-life, about every 20 s)\n');
  const client = createWorkloadApiClient({ address: `unix://${agentSocket}` });
  const watch = client.watchX509Context(
    demoPrinter(() =>
      say(`
  Try it yourself (in another terminal):
    ${sh(agentBin)} api fetch x509 -socketPath ${sh(agentSocket)}
    ${sh(agentBin)} api fetch jwt -audience demo -socketPath ${sh(agentSocket)}
    ${sh(serverBin)} entry show -socketPath ${sh(adminSocket)}
  Give this workload (your uid) a second identity; the demo prints "identity added":
    ${sh(serverBin)} entry create -socketPath ${sh(adminSocket)} -parentID ${nodeId} -spiffeID spiffe://${td}/my/service -selector unix:uid:${uid} -x509SVIDTTL 40
  Logs: ${join(state, 'server.log')}, ${join(state, 'agent.log')}.  Ctrl-C stops everything.
`),
    ),
    (err, info) => say(`  workload API: ${err.message}${info.final ? '' : ` (retrying in ${info.retryInMs} ms)`}`),
  );
  closeDemo = () => {
    watch.close();
    client.close();
  };
} catch (err) {
  process.stderr.write(`quickstart failed: ${(err as Error).message}\n`);
  await stopAll(1);
}

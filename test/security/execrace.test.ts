/**
 * Exec after connect, with real processes and a real second uid (65534), against a real server
 * and agent (unix attestor with discover_workload_path).
 *
 * The attack: a process of uid 65534 connects to the Workload API, forks, and the parent (the
 * pid SO_PEERCRED reports) execs a program that blocks, while the child sends FetchX509SVID over
 * the inherited connection. pid, pidfd, start time and uid survive execve(), so an agent that
 * reads the caller's groups and executable from /proc at attestation time attests the exec'd
 * program and hands its SVIDs (and keys) to the child. Two programs: a setgid copy of sleep
 * (root:shadow, 2755: entries on unix:group:shadow, unix:gid:42 and its unix:path) and a plain
 * copy (an entry on its unix:path only, so only the executable tells the exec apart).
 *
 * The parent waits until the agent has accepted the connection (it peeks at the server's first
 * HTTP/2 bytes, which grpc-js sends only once the agent handed it the accepted socket) before it
 * execs: an exec between connect() and accept() that changes no credential is a documented
 * limit (docs/security.md, "Local users: exec after connect").
 *
 * Controls: the same fork-and-inherit path without the exec gets uid 65534's own SVID; a setgid
 * (shadow) copy of node that connects by itself gets the shadow identities.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { startServerProcess, tempDir, type ServerProcess } from '../support/serverproc.js';
import { forOtherUid, needsRoot } from '../support/otheruid.js';

const NOBODY = 65534;
const SHADOW_GID = 42;
const CLIENT_IN_CHECKOUT = fileURLToPath(new URL('./fixtures/fetch-client.js', import.meta.url));
/** The client as uid 65534 can reach it (set in before(): a readable copy when it cannot enter the checkout). */
let CLIENT = CLIENT_IN_CHECKOUT;
const UNAVAILABLE = 14;

/**
 * argv: socket path, mode (exec | stay), program, node, client script. Connects, waits for the
 * agent's first bytes (MSG_PEEK: left for the child's HTTP/2 client), forks; the child waits
 * until the parent runs the program, then execs the node client on the inherited socket (fd 3);
 * the parent execs the program (mode exec) or just sleeps (mode stay).
 */
const ATTACKER = `
import os, socket, sys, time
sock_path, mode, prog, node, client = sys.argv[1:6]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock_path)
s.settimeout(20)
s.recv(1, socket.MSG_PEEK)
s.settimeout(None)
if os.fork() == 0:
    parent = os.getppid()
    deadline = time.monotonic() + 20
    def parent_runs_prog():
        if mode == 'stay':
            return True
        try:
            return os.readlink('/proc/%d/exe' % parent) == prog
        except PermissionError:
            # a setgid program is not dumpable: its exe link is closed to us, its status is not
            with open('/proc/%d/status' % parent) as f:
                for line in f:
                    if line.startswith('Gid:'):
                        return int(line.split()[2]) == os.stat(prog).st_gid
        return False
    while not parent_runs_prog():
        if time.monotonic() > deadline:
            sys.exit('parent never ran ' + prog)
        time.sleep(0.01)
    if s.fileno() != 3:
        os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    os.execv(node, [node, client, 'fd3'])
if mode == 'exec':
    os.execv(prog, [prog, '120'])
time.sleep(120)
`;

interface FetchResult {
  code?: number;
  details: string;
  failure?: string;
  spiffeIds: string[];
  keys: number;
}

/** Runs `cmd args` as uid/gid 65534 and returns the first JSON line it prints; kills it after. */
async function firstLineAsNobody(cmd: string, args: string[]): Promise<FetchResult> {
  const proc = spawn(cmd, args, { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    return await new Promise<FetchResult>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${cmd} ${args.join(' ')}: no answer in 40 s; stderr: ${stderr}`)), 40_000);
      createInterface({ input: proc.stdout! }).once('line', (l) => {
        clearTimeout(timer);
        resolve(JSON.parse(l) as FetchResult);
      });
      proc.once('exit', (code, signal) => {
        // The parent becomes the blocking program and never exits by itself; an early exit is a failure.
        setTimeout(() => {
          clearTimeout(timer);
          reject(new Error(`${cmd} exited (${code ?? signal}) before answering; stderr: ${stderr}`));
        }, 500);
      });
    });
  } finally {
    proc.kill('SIGKILL');
  }
}

describe('local users: exec after connect', () => {
  let server: ServerProcess;
  let agent: AgentProcess;
  let dir: string;
  let setgidSleep: string;
  let plainSleep: string;
  let setgidNode: string;
  let attacker: string;
  const ids: Record<string, string> = {};

  before(async () => {
    needsRoot('running the attacker as uid 65534 and making setgid copies');
    CLIENT = forOtherUid(CLIENT_IN_CHECKOUT);
    dir = tempDir('spindle-execrace-');
    chmodSync(dir, 0o755);
    setgidSleep = join(dir, 'sleep-shadow');
    copyFileSync('/bin/sleep', setgidSleep);
    chownSync(setgidSleep, 0, SHADOW_GID);
    chmodSync(setgidSleep, 0o2755);
    plainSleep = join(dir, 'sleep-plain');
    copyFileSync('/bin/sleep', plainSleep);
    chmodSync(plainSleep, 0o755);
    setgidNode = join(dir, 'node-shadow');
    copyFileSync(process.execPath, setgidNode);
    chownSync(setgidNode, 0, SHADOW_GID);
    chmodSync(setgidNode, 0o2755);
    attacker = join(dir, 'attacker.py');
    writeFileSync(attacker, ATTACKER, { mode: 0o644 });
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify({ plugins: { WorkloadAttestor: { unix: { plugin_data: { discover_workload_path: true } } } } }));

    server = await startServerProcess();
    const joinToken = generateJoinToken(server);
    agent = await startAgentProcess({ server, joinToken, extraArgs: ['-config', config] });
    const agentId = `spiffe://${server.trustDomain}/spire/agent/join_token/${joinToken}`;
    const entries: Array<[string, string]> = [
      ['shadowGroup', 'unix:group:shadow'],
      ['gid42', `unix:gid:${SHADOW_GID}`],
      ['setgidPath', `unix:path:${setgidSleep}`],
      ['plainPath', `unix:path:${plainSleep}`],
      ['nobody', `unix:uid:${NOBODY}`], // last: once it is served, the others have been synced
    ];
    for (const [name, selector] of entries) {
      ids[name] = `spiffe://${server.trustDomain}/exec/${name}`;
      const r = server.cli(['entry', 'create', '-parentID', agentId, '-spiffeID', ids[name]!, '-selector', selector]);
      assert.equal(r.status, 0, `entry create ${selector}: ${r.stderr}${r.stdout}`);
    }
    // Wait until the agent serves uid 65534 (the entries reach it through the sync stream).
    for (let i = 0; ; i++) {
      const r = await firstLineAsNobody(process.execPath, [CLIENT, 'connect', agent.socketPath]);
      if (r.spiffeIds.includes(ids['nobody']!)) break;
      if (i >= 100) throw new Error(`the agent never served ${ids['nobody']} to uid ${NOBODY}: ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  });

  after(async () => {
    await agent?.stop();
    await server?.stop();
  });

  it('control: a forked child using the inherited connection of a parent that did not exec gets uid 65534\'s own SVID', async () => {
    const r = await firstLineAsNobody('/usr/bin/python3', [attacker, agent.socketPath, 'stay', plainSleep, process.execPath, CLIENT]);
    assert.equal(r.code, undefined, JSON.stringify(r));
    assert.deepEqual(r.spiffeIds, [ids['nobody']]);
    assert.equal(r.keys, 1);
  });

  it('control: a setgid (shadow) process that connects by itself gets the shadow identities', async () => {
    const r = await firstLineAsNobody(setgidNode, [CLIENT, 'connect', agent.socketPath]);
    assert.equal(r.code, undefined, JSON.stringify(r));
    assert.deepEqual([...r.spiffeIds].sort(), [ids['gid42'], ids['nobody'], ids['shadowGroup']].sort());
  });

  it('the parent execs a setgid (shadow) program after connecting, the child asks: no SVID, UNAVAILABLE naming the change', async () => {
    const r = await firstLineAsNobody('/usr/bin/python3', [attacker, agent.socketPath, 'exec', setgidSleep, process.execPath, CLIENT]);
    assert.deepEqual(r.spiffeIds, [], `the child was served ${r.spiffeIds.join(', ')}`);
    assert.equal(r.keys, 0);
    assert.equal(r.code, UNAVAILABLE, JSON.stringify(r));
    assert.match(r.details, new RegExp(`caller process changed since it connected: process \\d+ connected with effective uid ${NOBODY} gid ${NOBODY} and now runs with uid ${NOBODY} gid ${SHADOW_GID}`));
    assert.match(r.details, /identities are only served to the process that opened the connection/);
  });

  it('the parent execs another (not setgid) program after connecting, the child asks: no unix:path SVID, UNAVAILABLE naming the exec', async () => {
    const r = await firstLineAsNobody('/usr/bin/python3', [attacker, agent.socketPath, 'exec', plainSleep, process.execPath, CLIENT]);
    assert.deepEqual(r.spiffeIds, [], `the child was served ${r.spiffeIds.join(', ')}`);
    assert.equal(r.code, UNAVAILABLE, JSON.stringify(r));
    assert.match(r.details, /caller process changed since it connected: process \d+ executed another program since it connected/);
  });

  it('the agent is still up and serves uid 65534 afterwards', async () => {
    const r = await firstLineAsNobody(process.execPath, [CLIENT, 'connect', agent.socketPath]);
    assert.deepEqual(r.spiffeIds, [ids['nobody']]);
    assert.equal(agent.proc.exitCode, null);
  });
});

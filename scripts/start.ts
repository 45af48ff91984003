/**
 * `npm start`: the quickstart. With no configuration it starts, under ./.spindle/quickstart:
 * a local spindle-server, a spindle-agent attested with a join token, a registration entry for
 * the current user (short SVID lifetime, so rotation shows within a minute), and a demo
 * workload that watches its identity over the Workload API and prints every update live.
 * A second run resumes the same state (no new token needed). Ctrl-C stops everything.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createWorkloadApiClient } from '../spiffe/workloadapi/index.js';
import { parseCertificate } from '../spiffe/x509/index.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const serverBin = join(root, 'bin', 'spindle-server');
const agentBin = join(root, 'bin', 'spindle-agent');
const state = resolve('.spindle', 'quickstart');
const td = 'example.org';
const port = Number(process.env['SPINDLE_QUICKSTART_PORT'] ?? 18081);
const adminSocket = join(state, 'server', 'admin', 'api.sock');
const agentSocket = join(state, 'agent', 'public', 'api.sock');
const uid = userInfo().uid;
const children: ChildProcess[] = [];

mkdirSync(join(state, 'server'), { recursive: true, mode: 0o700 });
mkdirSync(join(state, 'agent'), { recursive: true, mode: 0o700 });

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(serverBin, [...args, '-socketPath', adminSocket], { encoding: 'utf8' });
}

function start(bin: string, args: string[], name: string, ready: string): Promise<ChildProcess> {
  const logFile = join(state, `${name}.log`);
  writeFileSync(logFile, '');
  const child = spawn(bin, [...args, '-logFile', logFile], { stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(child);
  return new Promise((resolveReady, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const log = spawnSync('cat', [logFile], { encoding: 'utf8' }).stdout;
      if (log.includes(ready)) {
        clearInterval(poll);
        resolveReady(child);
      } else if (child.exitCode !== null || Date.now() - started > 30_000) {
        clearInterval(poll);
        reject(new Error(`${name} did not start; see ${logFile}:\n${log.split('\n').slice(-15).join('\n')}`));
      }
    }, 100);
  });
}

async function stopAll(code: number): Promise<never> {
  await Promise.all(
    children.reverse().map(
      (c) =>
        new Promise<void>((res) => {
          if (c.exitCode !== null) return res();
          c.once('exit', () => res());
          c.kill('SIGTERM');
        }),
    ),
  );
  process.exit(code);
}

process.on('SIGINT', () => {
  say('\nStopping the demo workload, agent and server...');
  void stopAll(0);
});
process.on('SIGTERM', () => void stopAll(0));

try {
  say(`Spindle quickstart: trust domain ${td}, state in ${state}\n`);
  await start(serverBin, ['run', '-trustDomain', td, '-dataDir', join(state, 'server', 'data'), '-socketPath', adminSocket, '-bindAddress', '127.0.0.1', '-serverPort', String(port)], 'server', 'spindle-server is ready');
  say(`[1/4] spindle-server is running (agent API 127.0.0.1:${port}, admin socket ${adminSocket})`);

  const bundle = cli(['bundle', 'show']);
  writeFileSync(join(state, 'bundle.pem'), bundle.stdout);
  const nodeId = `spiffe://${td}/quickstart/node`;
  const agentArgs = ['run', '-trustDomain', td, '-serverAddress', '127.0.0.1', '-serverPort', String(port), '-dataDir', join(state, 'agent', 'data'), '-socketPath', agentSocket];
  const haveState = spawnSync('test', ['-f', join(state, 'agent', 'data', 'agent_svid.pem')]).status === 0;
  if (!haveState) {
    const tok = /^Token: (\S+)$/m.exec(cli(['token', 'generate', '-spiffeID', nodeId]).stdout);
    if (!tok) throw new Error('could not generate a join token');
    agentArgs.push('-joinToken', tok[1]!, '-trustBundle', join(state, 'bundle.pem'));
    say(`[2/4] generated a join token for the agent (node alias ${nodeId})`);
  } else say('[2/4] the agent resumes with its stored SVID (no new join token needed)');

  const entry = cli(['entry', 'create', '-parentID', nodeId, '-spiffeID', `spiffe://${td}/quickstart/workload`, '-selector', `unix:uid:${uid}`, '-x509SVIDTTL', '40']);
  if (entry.status === 0) say(`[3/4] registered spiffe://${td}/quickstart/workload for unix:uid:${uid} (X509-SVID TTL 40 s)`);
  else if (/already exists/i.test(entry.stdout + entry.stderr)) say(`[3/4] the entry for unix:uid:${uid} is already registered`);
  else throw new Error(`entry create failed: ${entry.stderr || entry.stdout}`);

  await start(agentBin, agentArgs, 'agent', 'spindle-agent is ready');
  say(`[4/4] spindle-agent is running (Workload API at ${agentSocket})\n`);

  say('Demo workload: watching its identity over the Workload API (rotation at half-life, about every 20 s)\n');
  const client = createWorkloadApiClient({ address: `unix://${agentSocket}` });
  let updates = 0;
  client.watchX509Context(
    (ctx) => {
      updates++;
      const leaf = parseCertificate(ctx.defaultSvid.certificates[0]!);
      const when = new Date().toISOString().slice(11, 19);
      say(`${when}  ${updates === 1 ? 'received' : 'rotated '}  ${ctx.defaultSvid.id}  serial ${leaf.serialHex.slice(0, 12)}…  valid until ${leaf.notAfter.toISOString().slice(11, 19)}`);
      if (updates === 1) {
        say(`
  Try it yourself (in another terminal):
    ${agentBin} api fetch x509 -socketPath ${agentSocket}
    ${agentBin} api fetch jwt -audience demo -socketPath ${agentSocket}
    ${serverBin} entry show -socketPath ${adminSocket}
  Register your own workload:
    ${serverBin} entry create -socketPath ${adminSocket} -parentID ${nodeId} \\
      -spiffeID spiffe://${td}/my/service -selector unix:uid:<uid>
  Logs: ${join(state, 'server.log')}, ${join(state, 'agent.log')}.  Ctrl-C stops everything.
`);
      }
    },
    (err, info) => say(`  workload API: ${err.message}${info.final ? '' : ` (retrying in ${info.retryInMs} ms)`}`),
  );
} catch (err) {
  process.stderr.write(`quickstart failed: ${(err as Error).message}\n`);
  await stopAll(1);
}

/**
 * `npm run demo:mesh [-- --duration <s>] [--ttl <s>] [--rate <n>] [--identities uid|path]`:
 * three services that know each other only by SPIFFE ID, on one machine, with real processes
 * throughout. In a fresh temp directory it starts a spindle-server and a spindle-agent (join
 * token, as `npm start` does: scripts/localstack.ts), registers
 *
 *   spiffe://example.org/frontend, spiffe://example.org/payments, spiffe://example.org/database
 *
 * with a short X509-SVID TTL (`--ttl`, default 8 s: the agent renews at half the remaining
 * lifetime minus up to 10% jitter, so about every 3.5 s; the server sets no minimum), and runs
 * each service (scripts/demomesh/service.ts) as its own child process that uses only the Node
 * SDK `spindle/spiffe`. The database accepts only payments, payments accepts only frontend and
 * calls the database; frontend calls payments (`--rate` a second, default 2) and every 2 s tries
 * the database directly, which refuses it. The services' lines are shown as they come
 * (callers by ID, refusals with their reason, SVID rotations); at the end (`--duration`, or
 * Ctrl-C) the services stop callers first, then the agent and the server, and a summary counts
 * calls per pair, refusals, requests served and rotations. Exit code 1 when an allowed call
 * failed, a forbidden one got through, or a process died; 2 for bad arguments.
 *
 * How each service gets its own identity: the agent tells the processes apart by kernel facts
 * only (the unix workload attestor), so each service must differ in one.
 * - Running as root (`--identities uid`, the default for root): each service runs under its own
 *   uid and gid (the first three unused ids from 64001 up), and its entry's selector is
 *   `unix:uid:<n>`. The demo directory is 0711 so they can reach the agent's socket (0777 in a
 *   0755 directory), and the checkout and node must be readable by other users (otherwise the
 *   demo says so and uses paths).
 * - Otherwise (`--identities path`, the only choice for other users, who cannot switch uid): the
 *   agent runs with `discover_workload_path: true` (`workload_size_limit: -1`: no hashing of the
 *   node binary on every call), each service runs through its own hard link of the node binary
 *   (a copy when a hard link is impossible, e.g. across filesystems or under
 *   fs.protected_hardlinks) at <dir>/bin/<service>, and its selector is `unix:path:<that path>`.
 *   Any process of this user running that file would get that identity.
 * The temp directory is removed at the end unless something failed (it then holds the logs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants, copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { LocalStack, agentBin, repoRoot, serverBin, stopChild } from './localstack.js';
import { ACCEPTS, CALLS, SERVICES, TRUST_DOMAIN, idOf, type RunnerMessage, type ServiceMessage, type ServiceName, type ServiceStats } from './demomesh/mesh.js';

const serviceJs = fileURLToPath(new URL('./demomesh/service.js', import.meta.url));
const nodeId = `spiffe://${TRUST_DOMAIN}/demo-mesh/node`;
const FIRST_UID = 64001;

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

function usage(msg: string): never {
  process.stderr.write(`demo:mesh: ${msg}
usage: npm run demo:mesh -- [--duration <seconds>] [--ttl <seconds>] [--rate <per second>] [--identities uid|path]
  --duration    stop after this many seconds (default: run until Ctrl-C)
  --ttl         X509-SVID lifetime of the services, 4..3600 (default 8: a rotation about every 3.5 s)
  --rate        frontend -> payments calls a second, 0.1..20 (default 2)
  --identities  uid: a uid per service, unix:uid selectors (root only; the default for root)
                path: a node binary link per service, unix:path selectors (the default otherwise)
`);
  process.exit(2);
}

const isRoot = process.getuid?.() === 0;
const opts = { duration: 0, ttl: 8, rate: 2, identities: (isRoot ? 'uid' : 'path') as 'uid' | 'path' };
{
  const argv = process.argv.slice(2);
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !/^\d+(\.\d+)?$/.test(v) || n < min || n > max) usage(`${flag} wants a number from ${min} to ${max}, got ${JSON.stringify(v ?? '')}`);
    return n;
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, v] = [argv[i]!, argv[i + 1]];
    if (flag === '--duration') opts.duration = num(flag, v, 1, 86_400);
    else if (flag === '--ttl') opts.ttl = Math.round(num(flag, v, 4, 3600));
    else if (flag === '--rate') opts.rate = num(flag, v, 0.1, 20);
    else if (flag === '--identities' && (v === 'uid' || v === 'path')) opts.identities = v;
    else usage(`unknown argument ${JSON.stringify(flag)}${v === undefined ? '' : ` ${JSON.stringify(v)}`}`);
  }
  if (opts.identities === 'uid' && !isRoot) usage('--identities uid needs root (only root can run the services under other uids); use --identities path');
}

/** Why a user other than us could not run the services from here (undefined: they can). */
function unreadableByOthers(): string | undefined {
  const paths = [serviceJs, join(repoRoot, 'package.json'), join(repoRoot, 'node_modules', '@grpc', 'grpc-js', 'package.json'), process.execPath];
  for (const p of paths) {
    let real: string;
    try {
      real = realpathSync(p);
    } catch {
      return `${p} is missing`;
    }
    if ((statSync(real).mode & 0o004) === 0) return `${real} is not readable by other users`;
    for (let d = dirname(real); ; d = dirname(d)) {
      if ((statSync(d).mode & 0o001) === 0) return `${d} cannot be entered by other users`;
      if (d === dirname(d)) break;
    }
  }
  return undefined;
}

/** The first `n` uids from FIRST_UID up that no user or group in /etc/passwd, /etc/group has. */
function freeIds(n: number): number[] {
  const taken = new Set<number>();
  for (const f of ['/etc/passwd', '/etc/group']) {
    try {
      for (const line of readFileSync(f, 'utf8').split('\n')) {
        const id = line.split(':')[2];
        if (id !== undefined && /^\d+$/.test(id)) taken.add(Number(id));
      }
    } catch {
      // No such file: nothing taken there.
    }
  }
  const out: number[] = [];
  for (let id = FIRST_UID; out.length < n; id++) if (!taken.has(id)) out.push(id);
  return out;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

if (opts.identities === 'uid') {
  const why = unreadableByOthers();
  if (why) {
    say(`Running as root, but the services could not run under other uids from here (${why}): using per-path identities instead.\n`);
    opts.identities = 'path';
  }
}

const dir = mkdtempSync(join(tmpdir(), 'spindle-demo-mesh-'));
const adminSocket = join(dir, 'server', 'admin', 'api.sock');
const agentSocket = join(dir, 'agent', 'public', 'api.sock');
/** When every service was up (the summary counts from there). */
let flowing = 0;
let failed = false;

const stack = new LocalStack({
  state: dir,
  adminSocket,
  onStoppedOnItsOwn: (_name, description) => {
    say(`\n${description}`);
    void stop(`spindle-${_name} stopped`, true);
  },
});

interface Service {
  name: ServiceName;
  child: ChildProcess;
  port: number | null;
  /** Its counts, once it stopped cleanly. */
  stats?: ServiceStats;
  /** Where it came from: uid N or the path of its node binary. */
  how: string;
}
const services = new Map<ServiceName, Service>();
let stopping: Promise<void> | undefined;
const time = (): string => new Date().toISOString().slice(11, 19);

/** Starts one service; resolves when it reported ready (its port). */
function startService(name: ServiceName, selectorFact: { uid?: number; exe: string }, args: string[]): Promise<Service> {
  const child = spawn(selectorFact.exe, [serviceJs, name, ...args], {
    cwd: dir,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', SPIFFE_ENDPOINT_SOCKET: `unix://${agentSocket}` },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    ...(selectorFact.uid === undefined ? {} : { uid: selectorFact.uid, gid: selectorFact.uid }),
  });
  const svc: Service = { name, child, port: null, how: selectorFact.uid === undefined ? selectorFact.exe : `uid ${selectorFact.uid}` };
  services.set(name, svc);
  let stderr = '';
  createInterface({ input: child.stdout! }).on('line', (line) => say(`${time()}  ${line}`));
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr += `${line}\n`;
    process.stderr.write(`${time()}  ${line.startsWith(`${name}:`) ? line : `${name}: ${line}`}\n`);
  });
  child.on('message', (m: ServiceMessage) => {
    if (m.type === 'stats') svc.stats = m.stats;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not get ready within 30 s`)), 30_000);
    child.on('message', (m: ServiceMessage) => {
      if (m.type !== 'ready') return;
      clearTimeout(timer);
      svc.port = m.port;
      resolve(svc);
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${name} could not be started from ${selectorFact.exe}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before it was ready (${code !== null ? `exit code ${code}` : `signal ${signal}`})${stderr ? `:\n${stderr.trimEnd()}` : ''}`));
      if (!stopping) void stop(`${name} exited (${code ?? signal})`, true);
    });
  });
}

/** Tells a service to stop and waits for it (SIGKILL after 15 s). */
function stopService(svc: Service): Promise<void> {
  const { child } = svc;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(kill);
      res();
    });
    if (child.connected) child.send({ type: 'stop' } satisfies RunnerMessage);
    else void stopChild(child);
  });
}

/** Stops the services (callers first), then the agent and the server; prints the summary; exits. */
function stop(why: string, failure: boolean): Promise<void> {
  if (failure) failed = true;
  stopping ??= (async () => {
    stack.beginStop();
    say(`\n${time()}  ${why}: stopping frontend, payments, database, then the agent and the server...`);
    for (const name of [...SERVICES].reverse()) {
      const svc = services.get(name);
      if (svc) await stopService(svc);
    }
    await stack.stopAll();
    const ok = summary() && !failed;
    if (ok) rmSync(dir, { recursive: true, force: true });
    else say(`Logs and state kept in ${dir}`);
    process.exit(ok ? 0 : 1);
  })();
  return stopping;
}

/** Prints the counts; true when every allowed call succeeded and every forbidden one was refused. */
function summary(): boolean {
  let ok = true;
  const ran = flowing ? `${((Date.now() - flowing) / 1000).toFixed(1)} s of requests` : 'no requests (not every service started)';
  const out: string[] = [`\nSummary after ${ran} (identities by ${opts.identities === 'uid' ? 'uid' : 'executable path'}, X509-SVID TTL ${opts.ttl} s):`];
  for (const name of SERVICES) {
    if (services.has(name) && !services.get(name)!.stats) {
      out.push(`  ${name} did not report its counts (it did not stop cleanly)`);
      ok = false;
    }
  }
  for (const c of CALLS) {
    const s = services.get(c.from)?.stats?.calls[c.to] ?? { ok: 0, failed: 0 };
    const pair = `${c.from} -> ${c.to}`.padEnd(22);
    if (c.allowed) {
      out.push(`  ${pair} allowed    ok ${s.ok}  failed ${s.failed}`);
      if (s.failed > 0) ok = false;
    } else {
      const served = services.get(c.to)?.stats?.served[idOf(c.from)] ?? 0;
      out.push(`  ${pair} forbidden  refused ${s.failed}  got through ${s.ok}${served ? `  (${c.to} served ${served})` : ''}`);
      if (s.ok > 0 || served > 0) ok = false;
    }
  }
  for (const name of SERVICES) {
    if (ACCEPTS[name].length === 0) continue;
    const st = services.get(name)?.stats;
    const refused = Object.entries(st?.refused ?? {});
    const n = refused.reduce((a, [, v]) => a + v, 0);
    out.push(`  ${name} refused ${n} client${n === 1 ? '' : 's'}${n ? ` (${refused.map(([k, v]) => `${k}: ${v}`).join(', ')})` : ''}; served ${Object.entries(st?.served ?? {}).map(([k, v]) => `${k}: ${v}`).join(', ') || 'nobody'}`);
  }
  out.push(`  rotations: ${SERVICES.map((n) => `${n} ${services.get(n)?.stats?.rotations ?? '?'}`).join(', ')}`);
  out.push(ok && !failed ? 'Result: OK (every allowed call succeeded, every forbidden call was refused)' : 'Result: FAILED');
  say(out.join('\n'));
  return ok;
}

process.on('SIGINT', () => void stop('Ctrl-C', false));
// `npm run demo:mesh | head`: once nobody reads the output, stop everything (not crash on EPIPE).
process.stdout.on('error', () => void stop('the output was closed', false));
process.on('SIGTERM', () => void stop('SIGTERM', false));

try {
  const ids = opts.identities === 'uid' ? freeIds(SERVICES.length) : [];
  // uid mode: other uids must reach <dir>/agent/public/api.sock (they may not list or read the rest).
  chmodSync(dir, opts.identities === 'uid' ? 0o711 : 0o700);
  mkdirSync(join(dir, 'server'), { mode: 0o700 });
  mkdirSync(join(dir, 'agent'), { mode: opts.identities === 'uid' ? 0o711 : 0o700 });
  chmodSync(join(dir, 'agent'), opts.identities === 'uid' ? 0o711 : 0o700);
  say(`Spindle mesh demo: trust domain ${TRUST_DOMAIN}, state in ${dir}\n`);

  const port = await freePort();
  await stack.start(serverBin, ['run', '-trustDomain', TRUST_DOMAIN, '-dataDir', join(dir, 'server', 'data'), '-socketPath', adminSocket, '-bindAddress', '127.0.0.1', '-serverPort', String(port)], 'server', 'spindle-server is ready');
  say(`[1/4] spindle-server is running (agent API 127.0.0.1:${port})`);
  const bundle = stack.cli(['bundle', 'show']);
  if (bundle.status !== 0) throw new Error(`bundle show failed: ${(bundle.stderr || bundle.stdout).trim()}`);
  writeFileSync(join(dir, 'bundle.pem'), bundle.stdout);

  // Each service's kernel fact: its uid, or its own link of the node binary.
  const facts = new Map<ServiceName, { uid?: number; exe: string; selector: string }>();
  if (opts.identities === 'path') mkdirSync(join(dir, 'bin'), { mode: 0o755 });
  let copied = false;
  SERVICES.forEach((name, i) => {
    if (opts.identities === 'uid') {
      facts.set(name, { uid: ids[i]!, exe: process.execPath, selector: `unix:uid:${ids[i]}` });
      return;
    }
    const exe = join(realpathSync(dir), 'bin', name);
    try {
      linkSync(realpathSync(process.execPath), exe);
    } catch {
      copyFileSync(realpathSync(process.execPath), exe);
      chmodSync(exe, 0o755);
      copied = true;
    }
    accessSync(exe, constants.X_OK);
    facts.set(name, { exe, selector: `unix:path:${exe}` });
  });
  const how =
    opts.identities === 'uid'
      ? `each service runs under its own uid (${SERVICES.map((n) => `${n} ${facts.get(n)!.uid}`).join(', ')}); selectors unix:uid:<n>`
      : `each service runs its own ${copied ? 'copy' : 'hard link'} of node in ${join(realpathSync(dir), 'bin')}; the agent discovers workload paths; selectors unix:path:<file>`;

  for (const name of SERVICES) {
    const r = stack.cli(['entry', 'create', '-parentID', nodeId, '-spiffeID', idOf(name), '-selector', facts.get(name)!.selector, '-x509SVIDTTL', String(opts.ttl)]);
    if (r.status !== 0) throw new Error(`entry create for ${name} failed: ${(r.stderr || r.stdout).trim()}`);
  }
  say(`[2/4] registered ${SERVICES.map(idOf).join(', ')} (X509-SVID TTL ${opts.ttl} s)\n      ${how}`);

  const agentConf = join(dir, 'agent', 'agent.json');
  const unixData = opts.identities === 'path' ? { discover_workload_path: true, workload_size_limit: -1 } : {};
  writeFileSync(agentConf, `${JSON.stringify({ plugins: { WorkloadAttestor: { unix: { plugin_data: unixData } } } }, null, 2)}\n`);
  await stack.start(
    agentBin,
    [
      'run', '-config', agentConf, '-trustDomain', TRUST_DOMAIN, '-serverAddress', '127.0.0.1', '-serverPort', String(port),
      '-dataDir', join(dir, 'agent', 'data'), '-socketPath', agentSocket, '-joinToken', stack.joinToken(nodeId), '-trustBundle', join(dir, 'bundle.pem'),
    ],
    'agent',
    'spindle-agent is ready',
  );
  say(`[3/4] spindle-agent is running (Workload API at ${agentSocket})`);

  for (const name of SERVICES) {
    const calls = CALLS.filter((c) => c.from === name).flatMap((c) => ['--call', `${c.to}=127.0.0.1:${services.get(c.to)!.port}`]);
    const svc = await startService(name, facts.get(name)!, [...calls, '--rate', String(opts.rate)]);
    if (stopping) break;
    say(`${time()}  [4/4] ${name} is up (${svc.how}${svc.port === null ? '' : `, port ${svc.port}`})`);
  }
  if (!stopping) {
    flowing = Date.now();
    say(`\nRequests flow; SVIDs rotate every ${+(opts.ttl * 0.4).toFixed(1)}-${opts.ttl / 2} s. ${opts.duration ? `Stopping after ${opts.duration} s.` : 'Ctrl-C stops everything.'}\n`);
    if (opts.duration) setTimeout(() => void stop(`${opts.duration} s are up`, false), opts.duration * 1000);
  }
} catch (err) {
  process.stderr.write(`demo:mesh failed: ${(err as Error).message}\n`);
  await stop('start failed', true);
}

/**
 * `npm run demo:mesh [-- --duration <s>] [--ttl <s>] [--rate <n>] [--identities uid|path] [--proxy]`:
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
 *
 * `--proxy`: the same mesh with the TLS moved out of the services. The services are plain HTTP
 * servers and clients on 127.0.0.1 with no SPIFFE code (scripts/demomesh/plainservice.ts: not
 * registered, no Workload API socket), and each has its own spindle-proxy sidecar
 * (scripts/demomesh/proxies.ts), started with the service's uid or node link as above: the proxy
 * is the workload the agent attests, the identity is the sidecar's. The database's proxy decides
 * by the access policy scripts/demomesh/database-policy.yaml (frontend gets 403 naming the rule);
 * the summary adds what the proxies counted (/metrics) and a refused access log line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, appendFileSync, chmodSync, closeSync, constants, copyFileSync, linkSync, mkdirSync, openSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { LocalStack, agentBin, repoRoot, serverBin, stopChild, tail } from './localstack.js';
import { ACCEPTS, CALLS, SERVICES, TRUST_DOMAIN, idOf, type RunnerMessage, type ServiceMessage, type ServiceName, type ServiceStats } from './demomesh/mesh.js';
import { DATABASE_POLICY, adminGet, inboundName, parseMetrics, proxyConfig, readAccessLog, type ProxyPorts, type Sample } from './demomesh/proxies.js';

const serviceJs = fileURLToPath(new URL('./demomesh/service.js', import.meta.url));
const plainServiceJs = fileURLToPath(new URL('./demomesh/plainservice.js', import.meta.url));
const proxyBin = join(repoRoot, 'bin', 'spindle-proxy');
const nodeId = `spiffe://${TRUST_DOMAIN}/demo-mesh/node`;
const FIRST_UID = 64001;

function say(msg: string): void {
  process.stdout.write(`${msg}\n`);
}

function usage(msg: string): never {
  process.stderr.write(`demo:mesh: ${msg}
usage: npm run demo:mesh -- [--duration <seconds>] [--ttl <seconds>] [--rate <per second>] [--identities uid|path] [--proxy]
  --duration    stop after this many seconds (default: run until Ctrl-C)
  --ttl         X509-SVID lifetime of the services, 4..3600 (default 8: a rotation about every 3.5 s)
  --rate        frontend -> payments calls a second, 0.1..20 (default 2)
  --identities  uid: a uid per service, unix:uid selectors (root only; the default for root)
                path: a node binary link per service, unix:path selectors (the default otherwise)
  --proxy       plain HTTP services, each behind its own spindle-proxy holding its identity
`);
  process.exit(2);
}

const isRoot = process.getuid?.() === 0;
const opts = { duration: 0, ttl: 8, rate: 2, identities: (isRoot ? 'uid' : 'path') as 'uid' | 'path', proxy: false };
{
  const argv = process.argv.slice(2);
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !/^\d+(\.\d+)?$/.test(v) || n < min || n > max) usage(`${flag} wants a number from ${min} to ${max}, got ${JSON.stringify(v ?? '')}`);
    return n;
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, v] = [argv[i]!, argv[i + 1]];
    if (flag === '--proxy') {
      opts.proxy = true;
      i--;
    } else if (flag === '--duration') opts.duration = num(flag, v, 1, 86_400);
    else if (flag === '--ttl') opts.ttl = Math.round(num(flag, v, 4, 3600));
    else if (flag === '--rate') opts.rate = num(flag, v, 0.1, 20);
    else if (flag === '--identities' && (v === 'uid' || v === 'path')) opts.identities = v;
    else usage(`unknown argument ${JSON.stringify(flag)}${v === undefined ? '' : ` ${JSON.stringify(v)}`}`);
  }
  if (opts.identities === 'uid' && !isRoot) usage('--identities uid needs root (only root can run the services under other uids); use --identities path');
}

/** Why a user other than us could not run the services from here (undefined: they can). */
function unreadableByOthers(): string | undefined {
  const paths = [opts.proxy ? join(repoRoot, 'dist', 'proxy', 'cli', 'main.js') : serviceJs, join(repoRoot, 'package.json'), join(repoRoot, 'node_modules', '@grpc', 'grpc-js', 'package.json'), process.execPath];
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
  // --proxy: a plain service has no identity (no Workload API socket); its proxy has.
  const child = spawn(selectorFact.exe, [opts.proxy ? plainServiceJs : serviceJs, name, ...args], {
    cwd: dir,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...(opts.proxy ? {} : { SPIFFE_ENDPOINT_SOCKET: `unix://${agentSocket}` }) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    ...(selectorFact.uid === undefined ? {} : { uid: selectorFact.uid, gid: selectorFact.uid }),
  });
  const svc: Service = { name, child, port: null, how: opts.proxy ? 'plain HTTP, no identity' : selectorFact.uid === undefined ? selectorFact.exe : `uid ${selectorFact.uid}` };
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

interface Proxy {
  name: ServiceName;
  child: ChildProcess;
  config: string;
  /** Its stdout: one JSON access log line per request or connection. */
  accessLog: string;
  /** Its stderr: its own log (JSON lines). */
  log: string;
  /** X509-SVID updates it logged. */
  rotations: number;
  /** /metrics, scraped after the services stopped (undefined: could not). */
  metrics?: Sample[];
}
const proxies = new Map<ServiceName, Proxy>();
process.once('exit', () => {
  for (const p of proxies.values()) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
});
const proxyPorts = new Map<ServiceName, ProxyPorts>();

/**
 * Starts `name`'s spindle-proxy (`bin/spindle-proxy run -config`) with the service's identity
 * (its uid, or its node link running bin/spindle-proxy); resolves once its /ready says 200.
 */
async function startProxy(name: ServiceName, selectorFact: { uid?: number; exe: string }, servicePort: number | null): Promise<Proxy> {
  const base = join(dir, 'proxy', name);
  const config = `${base}.yaml`;
  writeFileSync(config, proxyConfig(name, proxyPorts, servicePort, agentSocket, join(repoRoot, DATABASE_POLICY)), { mode: 0o644 });
  const accessLog = `${base}.access.log`;
  const log = `${base}.log`;
  const out = openSync(accessLog, 'w', 0o644);
  const child = spawn(selectorFact.exe, [proxyBin, 'run', '-config', config], {
    cwd: dir,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
    stdio: ['ignore', out, 'pipe'],
    // Its own process group: Ctrl-C in a terminal signals the whole foreground group, and a proxy
    // stopping there would take its counters with it before the runner reads them. The runner
    // stops the proxies itself, after the services, and SIGTERMs any left when it exits.
    detached: true,
    ...(selectorFact.uid === undefined ? {} : { uid: selectorFact.uid, gid: selectorFact.uid }),
  });
  closeSync(out);
  const p: Proxy = { name, child, config, accessLog, log, rotations: 0 };
  proxies.set(name, p);
  writeFileSync(log, '');
  createInterface({ input: child.stderr! }).on('line', (line) => {
    appendFileSync(log, `${line}\n`);
    let o: { msg?: string; spiffe_id?: string; level?: number } = {};
    try {
      o = JSON.parse(line) as typeof o;
    } catch {
      process.stderr.write(`${time()}  ${name} proxy: ${line}\n`);
      return;
    }
    if (o.msg === 'X509-SVID updated') {
      p.rotations++;
      say(`${time()}  ${name} proxy: new X509-SVID for ${o.spiffe_id}`);
    } else if ((o.level ?? 0) >= 50) say(`${time()}  ${name} proxy: ${o.msg}`);
  });
  const admin = proxyPorts.get(name)!.admin;
  const since = Date.now();
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the ${name} proxy exited before it was ready (${child.exitCode ?? child.signalCode}); its log (${log}):\n${tail(readFileSync(log, 'utf8'), 15)}`);
    }
    const r = await adminGet(admin, '/ready').catch(() => ({ status: 0, body: '' }));
    if (r.status === 200) break;
    if (Date.now() - since > 30_000) throw new Error(`the ${name} proxy was not ready within 30 s (${r.body.trim() || 'no answer'}); its log: ${log}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  child.once('exit', (code, signal) => {
    if (!stopping) void stop(`the ${name} proxy exited (${code ?? signal}); its log: ${log}`, true);
  });
  return p;
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
    say(`\n${time()}  ${why}: stopping frontend, payments, database, ${opts.proxy ? 'then their proxies (after reading their /metrics), ' : ''}then the agent and the server...`);
    for (const name of [...SERVICES].reverse()) {
      const svc = services.get(name);
      if (svc) await stopService(svc);
    }
    // --proxy: what the proxies counted, once no request is in flight; then the proxies stop.
    for (const name of [...SERVICES].reverse()) {
      const p = proxies.get(name);
      if (!p || p.child.exitCode !== null || p.child.signalCode !== null) continue;
      const m = await adminGet(proxyPorts.get(name)!.admin, '/metrics').catch(() => undefined);
      if (m?.status === 200) p.metrics = parseMetrics(m.body);
      await stopChild(p.child);
    }
    await stack.stopAll();
    const ok = summary() && !failed;
    if (ok) rmSync(dir, { recursive: true, force: true });
    else say(`Logs and state kept in ${dir}`);
    process.exit(ok ? 0 : 1);
  })();
  return stopping;
}

/** The summary's first line: how long requests flowed, how identities were given, the TTL. */
function summaryHead(how: string): string[] {
  const ran = flowing ? `${((Date.now() - flowing) / 1000).toFixed(1)} s of requests` : 'no requests (not every service started)';
  return [`\nSummary after ${ran} (${how}, X509-SVID TTL ${opts.ttl} s):`];
}

/** Adds a line for each started service that did not report its counts; false when one did not. */
function everyServiceReported(out: string[]): boolean {
  let ok = true;
  for (const name of SERVICES) {
    if (services.has(name) && !services.get(name)!.stats) {
      out.push(`  ${name} did not report its counts (it did not stop cleanly)`);
      ok = false;
    }
  }
  return ok;
}

/** Prints the counts; true when every allowed call succeeded and every forbidden one was refused. */
function summary(): boolean {
  if (opts.proxy) return proxySummary();
  const out = summaryHead(`identities by ${opts.identities === 'uid' ? 'uid' : 'executable path'}`);
  let ok = everyServiceReported(out);
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

/**
 * The --proxy summary: calls per pair as the plain services counted them (ok / 403 / failed),
 * what each service saw in x-forwarded-client-cert, each proxy's refusal and request counters
 * from /metrics, one refused access log line, the proxies' rotations. True when every allowed
 * call succeeded, every forbidden one got the policy's 403, and the database proxy's counters
 * and access log agree with what the services saw.
 */
function proxySummary(): boolean {
  const out = summaryHead(`plain HTTP services behind spindle-proxy; proxy identities by ${opts.identities === 'uid' ? 'uid' : 'executable path'}`);
  let ok = everyServiceReported(out);
  for (const c of CALLS) {
    const s = services.get(c.from)?.stats?.calls[c.to] ?? { ok: 0, failed: 0 };
    const pair = `${c.from} -> ${c.to}`.padEnd(22);
    if (c.allowed) {
      out.push(`  ${pair} allowed    ok ${s.ok}  failed ${s.failed}`);
      if (s.failed > 0) ok = false;
    } else {
      const served = services.get(c.to)?.stats?.served[idOf(c.from)] ?? 0;
      out.push(`  ${pair} forbidden  403 ${s.forbidden ?? 0}  got through ${s.ok}  failed ${s.failed}${served ? `  (${c.to} served ${served})` : ''}`);
      if (s.ok > 0 || served > 0 || s.failed > 0 || !s.forbidden) ok = false;
    }
  }
  for (const name of SERVICES) {
    if (ACCEPTS[name].length === 0) continue;
    const served = Object.entries(services.get(name)?.stats?.served ?? {});
    out.push(`  ${name} served (x-forwarded-client-cert URI): ${served.map(([k, v]) => `${k}: ${v}`).join(', ') || 'nobody'}`);
  }
  for (const name of SERVICES) {
    const p = proxies.get(name);
    if (!p) continue;
    if (!p.metrics) {
      out.push(`  ${name} proxy /metrics: could not be scraped`);
      ok = false;
      continue;
    }
    // Inbound: requests decided; outbound: connections made to the target; both: refusals.
    const shown = p.metrics.filter(
      (m) =>
        m.value > 0 &&
        (m.metric === 'spindle_proxy_refusals_total' ||
          (m.metric === 'spindle_proxy_requests_total' && m.labels['listener'] === inboundName(name)) ||
          (m.metric === 'spindle_proxy_connections_total' && m.labels['listener'] !== inboundName(name))),
    );
    out.push(`  ${name} proxy /metrics:${shown.length ? '' : ' nothing counted'}`);
    for (const m of shown) out.push(`    ${m.line}`);
  }
  // The database proxy counted what the services saw: every 403 frontend got, every request payments made.
  const db = proxies.get('database');
  if (db?.metrics) {
    const value = (metric: string, labels: Record<string, string>): number =>
      db.metrics!.filter((m) => m.metric === metric && Object.entries(labels).every(([k, v]) => m.labels[k] === v)).reduce((a, m) => a + m.value, 0);
    const refusals = value('spindle_proxy_refusals_total', { listener: inboundName('database'), source: idOf('frontend') });
    const allowed = value('spindle_proxy_requests_total', { listener: inboundName('database'), source: idOf('payments'), decision: 'allow' });
    const fd = services.get('frontend')?.stats?.calls['database'];
    const pd = services.get('payments')?.stats?.calls['database'];
    if (refusals !== (fd?.forbidden ?? 0) || refusals === 0) {
      out.push(`  the database proxy counted ${refusals} refusals of frontend, frontend got ${fd?.forbidden ?? 0} 403s`);
      ok = false;
    }
    if (allowed !== (pd?.ok ?? 0) || allowed === 0) {
      out.push(`  the database proxy allowed ${allowed} requests of payments, payments counted ${pd?.ok ?? 0} answered`);
      ok = false;
    }
  }
  if (db) {
    const lines = readAccessLog(db.accessLog);
    const denied = lines.filter((l) => l.entry['decision'] === 'deny');
    out.push(`  database proxy access log: ${lines.length} lines, ${denied.length} refused; one refused line:`);
    if (denied[0]) out.push(`    ${denied[0].line}`);
    else {
      out.push('    (none)');
      ok = false;
    }
  }
  out.push(`  rotations (the proxies' X509-SVIDs): ${SERVICES.map((n) => `${n} ${proxies.get(n)?.rotations ?? '?'}`).join(', ')}`);
  out.push(ok && !failed ? 'Result: OK (every allowed call succeeded, every forbidden call got 403 from the policy)' : 'Result: FAILED');
  say(out.join('\n'));
  return ok;
}

process.on('SIGINT', () => void stop('Ctrl-C', false));
// `npm run demo:mesh | head`: once nobody reads the output, stop everything (not crash on EPIPE).
process.stdout.on('error', () => void stop('the output was closed', false));
process.on('SIGTERM', () => void stop('SIGTERM', false));
process.on('SIGHUP', () => void stop('SIGHUP (the terminal closed)', false));

try {
  const ids = opts.identities === 'uid' ? freeIds(SERVICES.length) : [];
  // uid mode: other uids must reach <dir>/agent/public/api.sock (they may not list or read the rest).
  chmodSync(dir, opts.identities === 'uid' ? 0o711 : 0o700);
  mkdirSync(join(dir, 'server'), { mode: 0o700 });
  mkdirSync(join(dir, 'agent'), { mode: opts.identities === 'uid' ? 0o711 : 0o700 });
  chmodSync(join(dir, 'agent'), opts.identities === 'uid' ? 0o711 : 0o700);
  say(`Spindle mesh demo${opts.proxy ? ' (plain HTTP services, each behind its own spindle-proxy)' : ''}: trust domain ${TRUST_DOMAIN}, state in ${dir}\n`);

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
      ? `each service${opts.proxy ? "'s proxy" : ''} runs under its own uid (${SERVICES.map((n) => `${n} ${facts.get(n)!.uid}`).join(', ')}); selectors unix:uid:<n>`
      : `each service${opts.proxy ? "'s proxy" : ''} runs its own ${copied ? 'copy' : 'hard link'} of node in ${join(realpathSync(dir), 'bin')}; the agent discovers workload paths; selectors unix:path:<file>`;

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

  if (opts.proxy) {
    // Every proxy's ports first (a proxy's outbound listeners connect to the others' inbound ones).
    for (const name of SERVICES) {
      const outbound: ProxyPorts['outbound'] = {};
      for (const c of CALLS.filter((x) => x.from === name)) outbound[c.to] = await freePort();
      proxyPorts.set(name, { admin: await freePort(), ...(ACCEPTS[name].length > 0 ? { inbound: await freePort() } : {}), outbound });
    }
    mkdirSync(join(dir, 'proxy'), { mode: 0o755 });
    chmodSync(join(dir, 'proxy'), 0o755);
    for (const name of SERVICES) {
      // A server starts before its proxy (which forwards to it); a client after its proxy (it calls through it).
      const calls = CALLS.filter((c) => c.from === name).flatMap((c) => ['--call', `${c.to}=127.0.0.1:${proxyPorts.get(name)!.outbound[c.to]}`]);
      const startPlain = (): Promise<Service> => startService(name, { exe: process.execPath }, [...calls, '--rate', String(opts.rate)]);
      const svc = ACCEPTS[name].length > 0 ? await startPlain() : undefined;
      if (stopping) break;
      const fact = facts.get(name)!;
      await startProxy(name, fact, svc?.port ?? null);
      if (stopping) break;
      const pp = proxyPorts.get(name)!;
      const listeners = [
        ...(pp.inbound === undefined ? [] : [`inbound ${inboundName(name)} 127.0.0.1:${pp.inbound} -> ${svc!.port}`]),
        ...Object.entries(pp.outbound).map(([to, port]) => `outbound ${to} 127.0.0.1:${port} -> ${proxyPorts.get(to as ServiceName)!.inbound}`),
      ];
      say(`${time()}  [4/4] ${name} proxy is ready (pid ${proxies.get(name)!.child.pid}, ${fact.uid === undefined ? fact.exe : `uid ${fact.uid}`}; ${listeners.join(', ')}; admin 127.0.0.1:${pp.admin})`);
      const up = svc ?? (await startPlain());
      if (stopping) break;
      say(`${time()}  [4/4] ${name} is up (${up.how}${up.port === null ? '' : `, port ${up.port}`})`);
    }
  } else {
    for (const name of SERVICES) {
      const calls = CALLS.filter((c) => c.from === name).flatMap((c) => ['--call', `${c.to}=127.0.0.1:${services.get(c.to)!.port}`]);
      const svc = await startService(name, facts.get(name)!, [...calls, '--rate', String(opts.rate)]);
      if (stopping) break;
      say(`${time()}  [4/4] ${name} is up (${svc.how}${svc.port === null ? '' : `, port ${svc.port}`})`);
    }
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

/**
 * One service of `npm run demo:mesh` (started by scripts/demomesh.ts as its own process):
 *
 *   node dist/scripts/demomesh/service.js <frontend|payments|database> [--call <name>=<host>:<port>]... [--rate <n>]
 *
 * Everything SPIFFE comes from the Node SDK (`spindle/spiffe`) alone: `X509Source.create()`
 * reads SPIFFE_ENDPOINT_SOCKET, the agent decides which identity this process gets (by its uid
 * or its executable's path); the server is `createMtlsHttpsServer` accepting only the callers in
 * ACCEPTS (scripts/demomesh/mesh.ts: `authorizeID` for the database, `authorizeOneOf` for payments), clients use `mtlsClientOptions` with
 * `authorizeID` of the service they mean to reach, and `peerIdOf` names the verified peer.
 *
 * - database: answers `GET /balance`, from payments only.
 * - payments: answers `GET /pay`, from frontend only, by calling the database.
 * - frontend: calls payments `--rate` times a second, and every 2 s tries the database directly
 *   (the database refuses it).
 * Prints one line per request served (caller ID and the serial of the SVID it presented), per
 * refusal (with its reason), per failed call, and per SVID rotation. At most one call per target
 * is in flight; each has a 5 s timeout.
 *
 * With an IPC channel (started by the runner) it sends `ready` (its port) and, when told to stop
 * (or on SIGTERM), its counts (`stats`), then exits; SIGINT is left to the runner, which stops
 * the services in order (callers first). Without one, SIGINT stops it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as https from 'node:https';
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { X509Source, authorizeID, authorizeOneOf, createMtlsHttpsServer, mtlsClientOptions, peerIdOf } from 'spindle/spiffe';
import { ACCEPTS, SERVICES, idOf, parseServiceArgs, type RunnerMessage, type ServiceMessage, type ServiceName, type ServiceStats } from './mesh.js';

const CALL_TIMEOUT_MS = 5_000;
const FORBIDDEN_TRY_MS = 2_000;

function usage(msg: string): never {
  process.stderr.write(`service: ${msg}\nusage: service.js <${SERVICES.join('|')}> [--call <name>=<host>:<port>]... [--rate <n>]\n`);
  process.exit(2);
}

const { name, targets, rate } = parseServiceArgs(process.argv.slice(2), usage);

const stats: ServiceStats = { calls: {}, served: {}, refused: {}, rotations: 0 };
const time = (d: Date): string => d.toISOString().slice(11, 19);
const say = (msg: string): void => void process.stdout.write(`${name}: ${msg}\n`);
const short = (serial: string): string => `${serial.toLowerCase().slice(0, 12)}…`;
const describe = (err: unknown): string => {
  const e = err as { code?: string; reason?: string; message?: string };
  return [e.code, e.reason].filter(Boolean).join(' ') + (e.message ? `: ${e.message}` : '');
};
const send = (m: ServiceMessage, then?: () => void): void => {
  if (process.send && process.connected) process.send(m, undefined, {}, () => then?.());
  else then?.();
};

const source = await X509Source.create().catch((err: unknown) => {
  process.stderr.write(`${name}: no identity from the Workload API: ${describe(err)}\n`);
  process.exit(1);
});
source.on('error', (err: Error) => say(`Workload API: ${describe(err)} (keeping the current SVID meanwhile)`));

// Our identity is the agent's decision (uid or executable path): check it is the one we expect.
const mine = source.getX509Svid();
if (mine.id !== idOf(name)) {
  process.stderr.write(`${name}: the agent gave this process ${mine.id}, not ${idOf(name)}\n`);
  process.exit(1);
}
let serial = '';
const showSvid = (): void => {
  const svid = source.getX509Svid();
  const leaf = new X509Certificate(svid.certificates[0]!);
  if (leaf.serialNumber === serial) return;
  const expires = time(new Date(leaf.validTo));
  if (serial === '') say(`first SVID ${svid.id} serial ${short(leaf.serialNumber)} expires ${expires}`);
  else {
    stats.rotations++;
    say(`new SVID serial ${short(leaf.serialNumber)} expires ${expires}`);
  }
  serial = leaf.serialNumber;
};
showSvid();
source.on('updated', showSvid);

/** GET https://<target><path> as this workload, the server verified as `idOf(target)`. */
function call(target: ServiceName, path: string): Promise<{ status: number; body: string; server: string }> {
  const t = targets.get(target);
  if (t === undefined) return Promise.reject(new Error(`no address for ${target} (--call ${target}=host:port)`));
  const opts = mtlsClientOptions(source, source, authorizeID(idOf(target)));
  return new Promise((resolve, reject) => {
    const req = https.request({ ...opts, host: t.host, port: t.port, path, timeout: CALL_TIMEOUT_MS }, (res) => {
      const server = peerIdOf(res.socket as TLSSocket);
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim(), server }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${CALL_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function count(target: ServiceName, ok: boolean): void {
  const c = (stats.calls[target] ??= { ok: 0, failed: 0 });
  if (ok) c.ok++;
  else c.failed++;
}

let stopping = false;
const inFlight = new Set<Promise<unknown>>();
const busy = new Set<ServiceName>();
/** Runs one call to `target` unless one is still in flight. */
function track(target: ServiceName, run: () => Promise<void>): void {
  if (busy.has(target) || stopping) return;
  busy.add(target);
  const p = run().finally(() => {
    busy.delete(target);
    inFlight.delete(p);
  });
  inFlight.add(p);
}

let server: https.Server | undefined;
if (ACCEPTS[name].length > 0) {
  // The database names its one caller (authorizeID, reason id_mismatch); payments takes a list
  // that more callers could join (authorizeOneOf, reason not_one_of).
  const allowed = ACCEPTS[name].map(idOf);
  const authorizer = name === 'database' ? authorizeID(allowed[0]!) : authorizeOneOf(...allowed);
  server = createMtlsHttpsServer(source, source, authorizer, (req: IncomingMessage, res: ServerResponse) => void handle(req, res));
  server.on('spiffeRejected', (err: { code?: string; reason?: string }) => {
    const key = `${err.code} ${err.reason}`;
    stats.refused[key] = (stats.refused[key] ?? 0) + 1;
    say(`refused a client: ${describe(err)}`);
  });
  server.on('tlsClientError', (err: Error) => say(`TLS handshake with a client failed: ${describe(err)}`));
  await new Promise<void>((res) => server!.listen(0, '127.0.0.1', res));
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const caller = peerIdOf(req);
  const cert = (req.socket as TLSSocket).getPeerX509Certificate();
  stats.served[caller] = (stats.served[caller] ?? 0) + 1;
  say(`request from ${caller} (svid serial ${cert ? short(cert.serialNumber) : '?'})`);
  if (name === 'database') {
    res.end('balance 42\n');
    return;
  }
  // payments: the database is asked for every payment.
  try {
    const r = await call('database', '/balance');
    const ok = r.status === 200;
    count('database', ok);
    if (!ok) say(`call to database FAILED: HTTP ${r.status} ${r.body}`);
    res.statusCode = ok ? 200 : 502;
    res.end(ok ? `paid; ${r.server} said: ${r.body}\n` : `database answered ${r.status}\n`);
  } catch (err) {
    count('database', false);
    say(`call to database FAILED: ${describe(err)}`);
    res.statusCode = 502;
    res.end(`database unreachable: ${describe(err)}\n`);
  }
}

const timers: NodeJS.Timeout[] = [];
if (name === 'frontend') {
  timers.push(
    setInterval(
      () =>
        track('payments', async () => {
          try {
            const r = await call('payments', '/pay');
            count('payments', r.status === 200);
            if (r.status === 200) say(`${r.server} answered: ${r.body}`);
            else say(`call to payments FAILED: HTTP ${r.status} ${r.body}`);
          } catch (err) {
            count('payments', false);
            say(`call to payments FAILED: ${describe(err)}`);
          }
        }),
      1000 / rate,
    ),
    setInterval(
      () =>
        track('database', async () => {
          try {
            const r = await call('database', '/balance');
            count('database', true);
            say(`call to database GOT THROUGH (it must be refused): HTTP ${r.status} from ${r.server}: ${r.body}`);
          } catch (err) {
            count('database', false);
            const closed = /ECONNRESET|socket hang up/.test(describe(err));
            say(`call to database refused: ${describe(err)}${closed ? ' (the database closed the connection after the handshake: it does not accept our ID)' : ''}`);
          }
        }),
      FORBIDDEN_TRY_MS,
    ),
  );
}

send({ type: 'ready', port: server ? (server.address() as { port: number }).port : null });
if (!process.send) say(`listening on 127.0.0.1:${server ? (server.address() as { port: number }).port : '-'}`);

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const t of timers) clearInterval(t);
  await Promise.allSettled([...inFlight]);
  if (server) {
    const closed = new Promise((res) => server!.close(res));
    server.closeIdleConnections();
    await Promise.race([closed, new Promise((res) => setTimeout(res, CALL_TIMEOUT_MS))]);
  }
  source.close();
  send({ type: 'stats', stats }, () => process.exit(0));
}

process.on('message', (m: RunnerMessage) => {
  if (m.type === 'stop') void stop();
});
process.on('disconnect', () => void stop());
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => {
  if (!process.send) void stop();
});

/**
 * One service of `npm run demo:mesh -- --proxy` (started by scripts/demomesh.ts as its own
 * process): a plain HTTP server or client on 127.0.0.1 with no TLS and no SPIFFE code at all.
 * Its spindle-proxy (a sidecar process of its own, holding the service's identity) does the mTLS:
 *
 *   node dist/scripts/demomesh/plainservice.js <frontend|payments|database> [--call <name>=<host>:<port>]... [--rate <n>]
 *
 * `--call` names the local address to reach a service at: its own proxy's outbound listener for
 * that service (plain TCP in, mTLS out to the target's proxy).
 *
 * - database: answers `GET /v1/balance`; its proxy lets only payments in (access policy file).
 * - payments: answers `GET /pay` by calling the database (through its proxy's outbound listener).
 * - frontend: calls payments `--rate` times a second, and every 2 s tries the database (its proxy
 *   relays the request; the database's proxy answers 403 naming the policy rule).
 * The servers print each caller from the `x-forwarded-client-cert` header their proxy sets
 * (`URI=` the caller's verified SPIFFE ID, `Hash=` its certificate's SHA-256, which changes when
 * the caller's proxy rotates its SVID). At most one call per target is in flight, 5 s timeout.
 *
 * IPC with the runner as service.ts: `ready` (its port), `stop` -> `stats`, then exit.
 */
import * as http from 'node:http';
import { SERVICES, parseServiceArgs, type RunnerMessage, type ServiceMessage, type ServiceName, type ServiceStats } from './mesh.js';

const CALL_TIMEOUT_MS = 5_000;
const FORBIDDEN_TRY_MS = 2_000;

function usage(msg: string): never {
  process.stderr.write(`plainservice: ${msg}\nusage: plainservice.js <${SERVICES.join('|')}> [--call <name>=<host>:<port>]... [--rate <n>]\n`);
  process.exit(2);
}

const { name, targets, rate } = parseServiceArgs(process.argv.slice(2), usage);
const stats: ServiceStats = { calls: {}, served: {}, refused: {}, rotations: 0 };
const say = (msg: string): void => void process.stdout.write(`${name}: ${msg}\n`);
const send = (m: ServiceMessage, then?: () => void): void => {
  if (process.send && process.connected) process.send(m, undefined, {}, () => then?.());
  else then?.();
};

/** `URI` and `Hash` of an Envoy-style x-forwarded-client-cert value (the last element: our proxy's). */
function xfcc(value: string | undefined): { uri?: string; hash?: string } {
  const last = (value ?? '').split(',').pop() ?? '';
  const out: { uri?: string; hash?: string } = {};
  for (const kv of last.split(';')) {
    const [k, v] = [kv.slice(0, kv.indexOf('=')).trim(), kv.slice(kv.indexOf('=') + 1).trim().replace(/^"|"$/g, '')];
    if (k === 'URI') out.uri = v;
    else if (k === 'Hash') out.hash = v;
  }
  return out;
}

/** Plain HTTP GET to the local address given for `target` (our proxy's outbound listener). */
function call(target: ServiceName, path: string): Promise<{ status: number; body: string }> {
  const t = targets.get(target);
  if (t === undefined) return Promise.reject(new Error(`no address for ${target} (--call ${target}=host:port)`));
  return new Promise((resolve, reject) => {
    // A connection per call (agent: false): each one is a new mTLS handshake between the proxies,
    // with the SVIDs they hold now.
    const req = http.request({ host: t.host, port: t.port, path, agent: false, timeout: CALL_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${CALL_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function count(target: ServiceName, outcome: 'ok' | 'failed' | 'forbidden'): void {
  const c = (stats.calls[target] ??= { ok: 0, failed: 0, forbidden: 0 });
  c[outcome] = (c[outcome] ?? 0) + 1;
}

let stopping = false;
const inFlight = new Set<Promise<unknown>>();
const busy = new Set<ServiceName>();
function track(target: ServiceName, run: () => Promise<void>): void {
  if (busy.has(target) || stopping) return;
  busy.add(target);
  const p = run().finally(() => {
    busy.delete(target);
    inFlight.delete(p);
  });
  inFlight.add(p);
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const { uri, hash } = xfcc(req.headers['x-forwarded-client-cert'] as string | undefined);
  const caller = uri ?? 'nobody (no x-forwarded-client-cert)';
  stats.served[caller] = (stats.served[caller] ?? 0) + 1;
  say(`${req.method} ${req.url} from ${caller} (x-forwarded-client-cert URI=${uri ?? '-'} Hash=${hash ? `${hash.slice(0, 12)}…` : '-'})`);
  if (name === 'database') {
    res.end(req.url === '/v1/balance' ? 'balance 42\n' : 'ok\n');
    return;
  }
  try {
    const r = await call('database', '/v1/balance');
    count('database', r.status === 200 ? 'ok' : 'failed');
    if (r.status !== 200) say(`call to database FAILED: HTTP ${r.status} ${r.body}`);
    res.statusCode = r.status === 200 ? 200 : 502;
    res.end(r.status === 200 ? `paid; database said: ${r.body}\n` : `database answered ${r.status}\n`);
  } catch (err) {
    count('database', 'failed');
    say(`call to database FAILED: ${(err as Error).message}`);
    res.statusCode = 502;
    res.end(`database unreachable: ${(err as Error).message}\n`);
  }
}

let server: http.Server | undefined;
if (name !== 'frontend') {
  server = http.createServer((req, res) => void handle(req, res));
  await new Promise<void>((res) => server!.listen(0, '127.0.0.1', res));
}

const timers: NodeJS.Timeout[] = [];
if (name === 'frontend') {
  timers.push(
    setInterval(
      () =>
        track('payments', async () => {
          try {
            const r = await call('payments', '/pay');
            count('payments', r.status === 200 ? 'ok' : 'failed');
            say(r.status === 200 ? `payments answered: ${r.body}` : `call to payments FAILED: HTTP ${r.status} ${r.body}`);
          } catch (err) {
            count('payments', 'failed');
            say(`call to payments FAILED: ${(err as Error).message}`);
          }
        }),
      1000 / rate,
    ),
    setInterval(
      () =>
        track('database', async () => {
          try {
            const r = await call('database', '/v1/balance');
            if (r.status === 403) {
              count('database', 'forbidden');
              say(`call to database refused: HTTP 403 ${r.body}`);
            } else if (r.status === 200) {
              count('database', 'ok');
              say(`call to database GOT THROUGH (it must be refused): HTTP 200 ${r.body}`);
            } else {
              count('database', 'failed');
              say(`call to database FAILED: HTTP ${r.status} ${r.body}`);
            }
          } catch (err) {
            count('database', 'failed');
            say(`call to database FAILED: ${(err as Error).message}`);
          }
        }),
      FORBIDDEN_TRY_MS,
    ),
  );
}

const port = server ? (server.address() as { port: number }).port : null;
send({ type: 'ready', port });
if (!process.send) say(`listening on 127.0.0.1:${port ?? '-'}`);

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

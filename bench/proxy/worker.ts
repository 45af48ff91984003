/**
 * The processes of the spindle-proxy benchmark other than the proxies themselves, one role per
 * process (`node dist/bench/proxy/worker.js <role> <json>`), all on 127.0.0.1:
 * - `service`: the local services behind the inbound side: a TCP sink (counts what it reads
 *   until the caller's half-close, answers `<bytes>\n` and closes) and a keep-alive HTTP server
 *   answering every request with a short body. Prints `{"sink":port,"http":port}` once bound.
 * - `relay-out` / `relay-in`: the same-run baseline, a plain node:tls relay pair written here
 *   (plain TCP -> node:tls mTLS with the same certificates -> plain TCP): no SPIFFE checks
 *   beyond the chain, no policy, no metrics, no logs. Prints the bound ports as JSON.
 * - `load`: one measurement (`bulk`, `rps` or `paced`), bounded in count and time; prints its
 *   result as one JSON line and exits. Load runs in its own process so it never shares a core's
 *   event loop with what it measures.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';

type Json = Record<string, unknown>;
const role = process.argv[2];
const arg = JSON.parse(process.argv[3] ?? '{}') as Json;

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** Both directions piped, half-close passed on, torn down together on an error. */
function pipeBoth(a: net.Socket, b: net.Socket): void {
  const kill = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
  a.pipe(b);
  b.pipe(a);
}

async function service(): Promise<void> {
  const sink = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(`${n}\n`));
    s.on('error', () => s.destroy());
  });
  const body = Buffer.from('hello from the service\n');
  const web = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  console.log(JSON.stringify({ sink: await listen(sink), http: await listen(web) }));
}

/** Relay pair: `relay-out` maps local ports to the relay-in's TLS ports; `relay-in` maps TLS ports to services. */
async function relayOut(): Promise<void> {
  const key = readFileSync(arg.key as string);
  const cert = readFileSync(arg.cert as string);
  const ca = readFileSync(arg.ca as string);
  const ports: number[] = [];
  for (const target of arg.targets as number[]) {
    const server = net.createServer({ allowHalfOpen: true }, (c) => {
      c.pause();
      c.on('error', () => c.destroy());
      const up = tls.connect({ host: '127.0.0.1', port: target, key, cert, ca, checkServerIdentity: () => undefined });
      up.allowHalfOpen = true;
      up.once('secureConnect', () => {
        c.resume();
        pipeBoth(c, up);
      });
      up.once('error', () => c.destroy());
    });
    ports.push(await listen(server));
  }
  console.log(JSON.stringify({ ports }));
}

async function relayIn(): Promise<void> {
  const opts: tls.TlsOptions = { key: readFileSync(arg.key as string), cert: readFileSync(arg.cert as string), ca: readFileSync(arg.ca as string), requestCert: true, rejectUnauthorized: true, allowHalfOpen: true };
  const ports: number[] = [];
  for (const target of arg.targets as number[]) {
    const server = tls.createServer(opts, (s) => {
      const up = net.connect({ host: '127.0.0.1', port: target, allowHalfOpen: true });
      pipeBoth(s, up);
    });
    server.on('tlsClientError', () => undefined);
    ports.push(await listen(server));
  }
  console.log(JSON.stringify({ ports }));
}

/** Writes `bytes` to `port`, half-closes, waits for the sink's count: MB/s from connect to the answer. */
function bulk(port: number, bytes: number, timeoutMs: number): Promise<Json> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const t0 = performance.now();
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`bulk transfer not done in ${timeoutMs} ms`));
    }, timeoutMs);
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent);
        sent += n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
      }
      s.end();
    };
    let answer = '';
    s.on('data', (d: Buffer) => (answer += d.toString()));
    s.on('end', () => {
      clearTimeout(timer);
      const secs = (performance.now() - t0) / 1000;
      const got = Number(answer.trim());
      if (got !== bytes) return reject(new Error(`the sink got ${got} bytes of ${bytes}`));
      resolve({ bytes, seconds: secs, mbps: bytes / 1e6 / secs });
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.once('connect', pump);
  });
}

function get(agent: http.Agent, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      res.resume();
      res.once('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('request timeout')));
    req.once('error', reject);
    req.end();
  });
}

/** Closed loop: `conns` keep-alive connections, each one request at a time, for `seconds` after a warm-up (at most `max` requests). */
async function rps(port: number, conns: number, seconds: number, max: number): Promise<Json> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
  const warmEnd = performance.now() + 500;
  let end = Infinity;
  let n = 0;
  let counting = false;
  let t0 = 0;
  const loop = async (): Promise<void> => {
    while (performance.now() < end && n < max) {
      await get(agent, port);
      if (counting) n++;
    }
  };
  const loops = Array.from({ length: conns }, loop);
  await new Promise((r) => setTimeout(r, Math.max(0, warmEnd - performance.now())));
  counting = true;
  t0 = performance.now();
  end = t0 + seconds * 1000;
  await Promise.all(loops);
  const secs = (performance.now() - t0) / 1000;
  agent.destroy();
  return { requests: n, seconds: secs, rps: n / secs };
}

/**
 * Open loop: `count` requests at `rate`/s over a pool of `pool` keep-alive connections opened
 * before the clock starts (requests queue for a free connection rather than open new ones, so
 * the figure is per-request latency, not connection set-up), each latency measured from its
 * scheduled start (a late send counts against the path), bounded by `maxSeconds`. Returns every
 * latency in ms and how many connections were opened (`pool` when none was lost).
 */
async function paced(port: number, rate: number, count: number, maxSeconds: number, pool: number): Promise<Json> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: pool, scheduling: 'fifo' });
  let connections = 0;
  const create = agent.createConnection.bind(agent);
  agent.createConnection = ((...a: Parameters<typeof create>) => {
    connections++;
    return create(...a);
  }) as typeof agent.createConnection;
  // Warm-up: the pool's connections opened, then used a few times each.
  for (let i = 0; i < 4; i++) await Promise.all(Array.from({ length: pool }, () => get(agent, port)));
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const deadline = t0 + maxSeconds * 1000;
  let issued = 0;
  await new Promise<void>((resolve) => {
    let done = 0;
    const finish = (): void => {
      if (++done === count) resolve();
    };
    const tick = (): void => {
      const now = performance.now();
      if (now > deadline) return resolve();
      while (issued < count && t0 + (issued * 1000) / rate <= now) {
        const due = t0 + (issued * 1000) / rate;
        issued++;
        get(agent, port).then(
          () => {
            lat.push(performance.now() - due);
            finish();
          },
          () => {
            errors++;
            finish();
          },
        );
      }
      if (issued < count) setTimeout(tick, 0);
    };
    tick();
  });
  agent.destroy();
  return { latencies: lat, errors, connections, seconds: (performance.now() - t0) / 1000 };
}

async function load(): Promise<void> {
  const port = arg.port as number;
  let out: Json;
  if (arg.kind === 'bulk') out = await bulk(port, arg.bytes as number, arg.timeoutMs as number);
  else if (arg.kind === 'rps') out = await rps(port, arg.conns as number, arg.seconds as number, arg.max as number);
  else out = await paced(port, arg.rate as number, arg.count as number, arg.maxSeconds as number, arg.pool as number);
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

const roles: Record<string, () => Promise<void>> = { service, 'relay-out': relayOut, 'relay-in': relayIn, load };
const run = roles[role ?? ''];
if (run === undefined) {
  console.error(`usage: worker.js service|relay-out|relay-in|load <json>`);
  process.exit(2);
}
run().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});

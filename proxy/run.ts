/**
 * `startProxy`: spindle-proxy's wiring. Order: logger, metrics, the admin listener (`/live`,
 * `/ready`, `/metrics`; ready only once the X509Source holds an SVID and every listener is
 * bound), each inbound listener's decider (an `allow:` list, or its `policy:` file through the
 * engine hook in policyhook.ts, watched for changes), the X509Source (retried with backoff while
 * the agent is missing or has no identity for us), then the listeners. `stop()` closes them in
 * reverse.
 */
import { createServer, type Server } from 'node:http';
import { createLogger, flushLogger } from '../common/logging.js';
import { X509Source } from '../spiffe/sdk/x509source.js';
import { AllowlistDecider } from './allowlist.js';
import type { ListenerConfig, ProxyConfig } from './config.js';
import type { PolicyDecider } from './decision.js';
import { startInbound, type ListenerDeps, type RunningListener } from './inbound.js';
import { JwtBundleWatch } from './jwt.js';
import { startOutbound } from './outbound.js';
import { DeciderRef, loadDecider, watchPolicy, type PolicyWatch } from './policyhook.js';
import { createAccessLog, ProxyMetrics, type AccessLog } from './telemetry.js';

type Logger = ReturnType<typeof createLogger>;

export interface RunningProxy {
  logger: Logger;
  listeners: RunningListener[];
  /** Where the admin listener is bound (`host:port`), when configured. */
  adminAddress?: string;
  stop(): Promise<void>;
}

/** A listener's policy that asks for HTTP facts on a TCP listener cannot be enforced: refuse it. */
function checkDecider(l: ListenerConfig, d: PolicyDecider): void {
  if (!l.http && d.needsHttp(l.name)) {
    throw new Error(`${l.where}: listener ${l.name}: its policy has rules on HTTP requests (method, path or JWT) but the listener has no http: true`);
  }
}

/** The deciders of the inbound listeners, by listener name (the policy files loaded once each). */
export async function buildDeciders(cfg: ProxyConfig, load: (file: string) => Promise<PolicyDecider> = loadDecider): Promise<Map<string, DeciderRef>> {
  const out = new Map<string, DeciderRef>();
  const files = new Map<string, Promise<PolicyDecider>>();
  for (const l of cfg.listeners) {
    if (l.mode !== 'inbound') continue;
    let d: PolicyDecider;
    if (l.allow !== undefined) d = new AllowlistDecider(l.allow);
    else {
      const file = l.policy!;
      if (!files.has(file)) files.set(file, load(file));
      d = await files.get(file)!;
    }
    checkDecider(l, d);
    out.set(l.name, new DeciderRef(d));
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

export async function startProxy(cfg: ProxyConfig, opts: { access?: AccessLog } = {}): Promise<RunningProxy> {
  const logger = createLogger({ level: cfg.logLevel, format: cfg.logFormat, name: 'spindle-proxy' });
  const metrics = new ProxyMetrics(cfg.maxSourceIds);
  const access = opts.access ?? createAccessLog();
  const deciders = await buildDeciders(cfg);
  let source: X509Source | undefined;
  let listeners: RunningListener[] = [];
  let bound = false;
  let stopped = false;

  const ready = (): { ready: boolean; why: string } => {
    if (source === undefined) return { ready: false, why: 'waiting for an X509-SVID from the Workload API' };
    try {
      source.getX509Svid();
    } catch (err) {
      return { ready: false, why: (err as Error).message };
    }
    return bound ? { ready: true, why: 'ok' } : { ready: false, why: 'listeners not bound yet' };
  };

  let admin: Server | undefined;
  let adminAddress: string | undefined;
  if (cfg.admin !== undefined) {
    admin = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      const send = (code: number, type: string, body: string): void => {
        res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
      if (path === '/live') return send(200, 'application/json', '{"live":true}\n');
      if (path === '/ready') {
        const r = ready();
        return send(r.ready ? 200 : 503, 'application/json', `${JSON.stringify({ ready: r.ready, reason: r.why })}\n`);
      }
      if (path === '/metrics') {
        void metrics.registry.metrics().then(
          (text) => send(200, metrics.registry.contentType, text),
          (err: Error) => send(500, 'text/plain', `${err.message}\n`),
        );
        return;
      }
      send(404, 'text/plain', 'not found: /live, /ready, /metrics\n');
    });
    admin.headersTimeout = 10_000;
    admin.requestTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      admin!.once('error', reject);
      admin!.listen(cfg.admin!.port, cfg.admin!.host, () => {
        admin!.off('error', reject);
        resolve();
      });
    });
    const a = admin.address();
    adminAddress = typeof a === 'object' && a !== null ? `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : undefined;
    logger.info({ address: adminAddress }, 'admin listener (/live, /ready, /metrics)');
  }

  const watches: PolicyWatch[] = [];
  for (const l of cfg.listeners) {
    if (l.policy === undefined) continue;
    const ref = deciders.get(l.name)!;
    watches.push(
      watchPolicy(l.policy, ref, logger.child({ listener: l.name }), {
        check: (d) => checkDecider(l, d),
        onReload: (ok) => metrics.policyReloads.inc({ listener: l.name, result: ok ? 'ok' : 'failed' }),
      }),
    );
  }

  // The SVID: wait for the agent (and for our registration entry) as long as it takes.
  for (let delay = 500; source === undefined && !stopped; delay = Math.min(delay * 2, 10_000)) {
    try {
      source = await X509Source.create({ socketPath: cfg.socketPath, timeoutMs: 30_000 });
    } catch (err) {
      logger.warn({ socket_path: cfg.socketPath, err: (err as Error).message, retry_ms: delay }, 'no X509-SVID yet from the Workload API');
      await sleep(delay);
    }
  }
  source!.on('error', (err: Error) => logger.warn({ err: err.message }, 'Workload API watch error (retrying)'));
  source!.on('updated', () => {
    try {
      logger.info({ spiffe_id: source!.getX509Svid().id }, 'X509-SVID updated');
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'X509 context updated without a usable SVID');
    }
  });
  logger.info({ spiffe_id: source!.getX509Svid().id }, 'X509-SVID received');

  const jwtBundles = new JwtBundleWatch(cfg.socketPath, logger);
  const deps: ListenerDeps = { source: source!, metrics, access, log: logger, jwtBundles };
  try {
    for (const l of cfg.listeners) {
      listeners.push(l.mode === 'inbound' ? await startInbound(l, deciders.get(l.name)!, deps) : await startOutbound(l, deps));
    }
  } catch (err) {
    for (const r of listeners) await r.close();
    for (const w of watches) w.close();
    jwtBundles.close();
    source!.close();
    if (admin !== undefined) await new Promise<void>((r) => admin!.close(() => r()));
    throw err;
  }
  bound = true;
  logger.info({ listeners: listeners.map((r) => r.name) }, 'spindle-proxy ready');

  return {
    logger,
    listeners,
    ...(adminAddress === undefined ? {} : { adminAddress }),
    async stop(): Promise<void> {
      stopped = true;
      bound = false;
      for (const w of watches) w.close();
      await Promise.all(listeners.map((r) => r.close()));
      listeners = [];
      jwtBundles.close();
      source?.close();
      if (admin !== undefined) {
        await new Promise<void>((r) => {
          admin!.close(() => r());
          admin!.closeAllConnections();
        });
      }
      logger.info({}, 'spindle-proxy stopped');
      await flushLogger(logger);
    },
  };
}

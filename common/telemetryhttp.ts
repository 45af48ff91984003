/**
 * The HTTP side of health checks (SPIRE's health_checks block: live and ready paths) and
 * Prometheus metrics (telemetry.Prometheus), shared by spindle-server and spindle-agent. Each
 * listener exists only when configured. What "ready" means is the caller's (`ready()`).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

export interface HealthChecksConfig {
  listenerEnabled: boolean;
  bindAddress: string;
  bindPort: number;
  livePath: string;
  readyPath: string;
}

export interface Readiness {
  ready: boolean;
  body: Record<string, unknown>;
}

export interface TelemetryListeners {
  close(): Promise<void>;
}

type Logger = { info(o: object, m: string): void; warn(o: object, m: string): void };

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

const closeServer = (s: Server): Promise<void> =>
  new Promise((resolve) => {
    s.close(() => resolve());
    s.closeAllConnections();
  });

function sendJson(req: IncomingMessage, res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(req.method === 'HEAD' ? undefined : text);
}

const pathOf = (req: IncomingMessage): string => (req.url ?? '').split('?')[0] ?? '';
const isRead = (req: IncomingMessage): boolean => req.method === 'GET' || req.method === 'HEAD';

export async function startTelemetryListeners(opts: {
  healthChecks: HealthChecksConfig;
  prometheus: { host: string; port: number } | undefined;
  registry: Registry;
  ready: () => Promise<Readiness>;
  logger: Logger;
}): Promise<TelemetryListeners> {
  const { registry, logger } = opts;
  const servers: Server[] = [];
  const stopAll = (): Promise<void> => Promise.all(servers.map(closeServer)).then(() => undefined);
  try {
    if (opts.prometheus) {
      const server = createServer((req, res) => {
        if (!isRead(req) || pathOf(req) !== '/metrics') {
          res.writeHead(404);
          res.end();
          return;
        }
        registry.metrics().then(
          (body) => {
            res.writeHead(200, { 'content-type': registry.contentType });
            res.end(req.method === 'HEAD' ? undefined : body);
          },
          (err: unknown) => {
            logger.warn({ err }, 'collecting metrics failed');
            res.writeHead(500);
            res.end();
          },
        );
      });
      const { host, port } = opts.prometheus;
      await listen(server, host, port);
      servers.push(server);
      logger.info({ address: `${host}:${port}` }, 'serving Prometheus metrics');
    }
    const hc = opts.healthChecks;
    if (hc.listenerEnabled) {
      const server = createServer((req, res) => {
        const path = pathOf(req);
        if (!isRead(req) || (path !== hc.livePath && path !== hc.readyPath)) {
          res.writeHead(404);
          res.end();
          return;
        }
        if (path === hc.livePath) {
          sendJson(req, res, 200, { live: true });
          return;
        }
        opts.ready().then(
          (r) => sendJson(req, res, r.ready ? 200 : 503, r.body),
          (err: unknown) => {
            logger.warn({ err }, 'readiness check failed');
            sendJson(req, res, 503, { ready: false, reasons: ['readiness check failed'] });
          },
        );
      });
      await listen(server, hc.bindAddress, hc.bindPort);
      servers.push(server);
      logger.info({ address: `${hc.bindAddress}:${hc.bindPort}` }, 'serving health checks');
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  return { close: stopAll };
}

/**
 * Health endpoints (SPIRE's health_checks block: /live and /ready) and Prometheus metrics
 * (telemetry.Prometheus). Both are plain HTTP listeners that only exist when configured.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServerConfig } from './config/config.js';
import type { DataStore } from './datastore/types.js';
import type { CaManager } from './ca/manager.js';
import type { AgentApi } from './api/agent/service.js';

export interface Telemetry {
  registry: Registry;
  close(): Promise<void>;
}

/** Counters other components increment. */
export const serverMetrics = {
  registry: new Registry(),
};

export const svidsSigned = new Counter({
  name: 'spindle_server_x509_svids_signed_total',
  help: 'X509-SVIDs signed through the agent API',
  registers: [serverMetrics.registry],
});

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

const closeServer = (s: Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()));

export async function startTelemetry(opts: {
  config: ServerConfig;
  datastore: DataStore;
  ca: CaManager;
  api: AgentApi;
  logger: { info(o: object, m: string): void; warn(o: object, m: string): void };
}): Promise<Telemetry> {
  const { config, datastore, ca, api } = opts;
  const registry = serverMetrics.registry;
  const servers: Server[] = [];

  const ready = (): { ok: boolean; detail: Record<string, unknown> } => {
    const st = ca.status();
    const active = st.x509.find((a) => a.status === 'active');
    const ok = active !== undefined && active.notAfter.getTime() > Date.now() && st.serverSvid !== undefined;
    return { ok, detail: { ca_active_not_after: active?.notAfter, bundle_sequence: String(st.bundleSequence), agent_streams: api.openStreams } };
  };

  if (config.telemetry.prometheus) {
    if (registry.getSingleMetric('process_cpu_user_seconds_total') === undefined) collectDefaultMetrics({ register: registry, prefix: '' });
    if (registry.getSingleMetric('spindle_server_entries') === undefined) {
      new Gauge({
        name: 'spindle_server_entries',
        help: 'Registration entries',
        registers: [registry],
        async collect() {
          this.set(await datastore.countEntries());
        },
      });
      new Gauge({
        name: 'spindle_server_agents',
        help: 'Attested agents',
        registers: [registry],
        async collect() {
          this.set(await datastore.countAttestedNodes());
        },
      });
      new Gauge({
        name: 'spindle_server_agent_sync_streams',
        help: 'Open agent sync streams',
        registers: [registry],
        collect() {
          this.set(api.openStreams);
        },
      });
      new Gauge({
        name: 'spindle_server_ca_expiry_seconds',
        help: 'notAfter (unix seconds) of the active X.509 CA and JWT key',
        labelNames: ['kind'],
        registers: [registry],
        collect() {
          const st = ca.status();
          const x = st.x509.find((a) => a.status === 'active');
          const j = st.jwt.find((a) => a.status === 'active');
          if (x) this.set({ kind: 'x509' }, Math.floor(x.notAfter.getTime() / 1000));
          if (j) this.set({ kind: 'jwt' }, Math.floor(j.notAfter.getTime() / 1000));
        },
      });
    }
    const { host, port } = config.telemetry.prometheus;
    const server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        registry.metrics().then(
          (body) => {
            res.writeHead(200, { 'content-type': registry.contentType });
            res.end(body);
          },
          () => {
            res.writeHead(500);
            res.end();
          },
        );
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await listen(server, host, port);
    servers.push(server);
    opts.logger.info({ address: `${host}:${port}` }, 'serving Prometheus metrics');
  }

  const hc = config.healthChecks;
  if (hc.listenerEnabled) {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' || (path !== hc.livePath && path !== hc.readyPath)) {
        res.writeHead(404);
        res.end();
        return;
      }
      const r = ready();
      const ok = path === hc.livePath ? true : r.ok;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify(path === hc.livePath ? { live: true } : { ready: r.ok, ...r.detail }));
    });
    await listen(server, hc.bindAddress, hc.bindPort);
    servers.push(server);
    opts.logger.info({ address: `${hc.bindAddress}:${hc.bindPort}` }, 'serving health checks');
  }

  return {
    registry,
    close: async () => {
      await Promise.all(servers.map(closeServer));
    },
  };
}

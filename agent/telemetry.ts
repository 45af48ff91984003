/**
 * The agent's health checks and Prometheus metrics (same config blocks as SPIRE's agent).
 * Ready: the first sync with the server has completed and the agent SVID is unexpired (an agent
 * that lost the server stays ready while it can still serve what it has).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { startTelemetryListeners, type TelemetryListeners } from '../common/telemetryhttp.js';
import type { AgentConfig } from './config/types.js';
import type { ConnectionLimitStats } from './endpoints/connlimits.js';
import { LIMITED_APIS, type CallerLimitStats } from './endpoints/limits.js';

export interface AgentTelemetrySources {
  /** Authorized entries held. */
  entries(): number;
  /** Whether the first sync with the server completed. */
  synced(): boolean;
  /** notAfter of the agent's own SVID. */
  agentSvidNotAfter(): Date;
  /** Per-caller limit counters of the Workload API socket (agent/endpoints/limits.ts). */
  workloadApiLimits?(): CallerLimitStats;
  /** The JWT-SVID cache (agent/manager/jwtcache.ts): tokens held, and evicted by its caps so far. */
  jwtSvidCache?(): { entries: number; evictions: number };
  /** Connection limit counters of the same socket (agent/endpoints/connlimits.ts). */
  workloadApiConnections?(): ConnectionLimitStats;
}

export const REFUSED_METRIC = 'spindle_agent_workload_api_refused_total';
export const OPEN_STREAMS_METRIC = 'spindle_agent_workload_api_open_streams';
export const JWT_CACHE_ENTRIES_METRIC = 'spindle_agent_jwt_svid_cache_entries';
export const JWT_CACHE_EVICTIONS_METRIC = 'spindle_agent_jwt_svid_cache_evictions_total';

/**
 * The JWT-SVID cache's metrics, read from `stats` at scrape time:
 * - spindle_agent_jwt_svid_cache_entries: JWT-SVIDs cached now (one per entry and audience set);
 * - spindle_agent_jwt_svid_cache_evictions_total: evicted by the per-entry or total cap.
 */
export function registerJwtCacheMetrics(registry: Registry, stats: () => { entries: number; evictions: number }): void {
  new Gauge({ name: JWT_CACHE_ENTRIES_METRIC, help: 'JWT-SVIDs cached by the agent (one per entry and audience set)', registers: [registry], collect() { this.set(stats().entries); } });
  new Counter({
    name: JWT_CACHE_EVICTIONS_METRIC,
    help: 'JWT-SVIDs evicted from the agent cache by its per-entry or total cap (least recently used first)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats().evictions);
    },
  });
}

export const OPEN_CONNECTIONS_METRIC = 'spindle_agent_workload_api_open_connections';

/**
 * The Workload API socket's per-caller limit metrics, read from `stats` at scrape time:
 * - spindle_agent_workload_api_refused_total{api="workload"|"sds", reason="rate"|"streams",
 *   scope="process"|"uid"}: calls refused with RESOURCE_EXHAUSTED by a per-caller limit;
 *   With `connections`: connections refused at accept as {api="socket", reason="connections",
 *   scope="all"|"uid"|"process"};
 * - spindle_agent_workload_api_open_streams{api}: streaming calls open now;
 * - spindle_agent_workload_api_open_connections (with `connections`): connections open now.
 */
export function registerWorkloadApiMetrics(registry: Registry, stats: () => CallerLimitStats, connections?: () => ConnectionLimitStats): void {
  new Counter({
    name: REFUSED_METRIC,
    help: 'Workload API and SDS calls refused (RESOURCE_EXHAUSTED) by a per-caller limit, by API, limit (rate, streams) and scope (process, uid); connections refused at accept as api="socket", reason="connections", scope (all, uid, process)',
    labelNames: ['api', 'reason', 'scope'] as const,
    registers: [registry],
    collect() {
      // The source counts monotonically; mirror it (reset + inc keeps prom-client's Counter type).
      this.reset();
      for (const api of LIMITED_APIS) for (const reason of ['rate', 'streams']) this.inc({ api, reason, scope: 'process' }, 0);
      for (const r of stats().refused) this.inc({ api: r.api, reason: r.reason, scope: r.scope }, r.count);
      if (connections) {
        for (const scope of ['uid', 'process']) this.inc({ api: 'socket', reason: 'connections', scope }, 0);
        for (const r of connections().refused) this.inc({ api: 'socket', reason: 'connections', scope: r.scope }, r.count);
      }
    },
  });
  new Gauge({
    name: OPEN_STREAMS_METRIC,
    help: 'Streaming Workload API and SDS calls open now, by API',
    labelNames: ['api'] as const,
    registers: [registry],
    collect() {
      const open = stats().openStreams;
      for (const api of LIMITED_APIS) this.set({ api }, open[api]);
    },
  });
  if (connections) {
    new Gauge({
      name: OPEN_CONNECTIONS_METRIC,
      help: 'Connections to the Workload API socket open now (admitted by the connection limits)',
      registers: [registry],
      collect() {
        this.set(connections().open);
      },
    });
  }
}

export async function startAgentTelemetry(opts: {
  config: AgentConfig;
  sources: AgentTelemetrySources;
  logger: { info(o: object, m: string): void; warn(o: object, m: string): void };
  now?: () => Date;
}): Promise<TelemetryListeners & { registry: Registry }> {
  const { sources } = opts;
  const now = opts.now ?? (() => new Date());
  const registry = new Registry();
  if (opts.config.telemetry.prometheus) {
    collectDefaultMetrics({ register: registry });
    new Gauge({ name: 'spindle_agent_entries', help: 'Authorized registration entries held by the agent', registers: [registry], collect() { this.set(sources.entries()); } });
    new Gauge({ name: 'spindle_agent_synced', help: '1 once the first sync with the server completed', registers: [registry], collect() { this.set(sources.synced() ? 1 : 0); } });
    new Gauge({
      name: 'spindle_agent_svid_expiry_seconds',
      help: "notAfter (unix seconds) of the agent's own SVID",
      registers: [registry],
      collect() {
        this.set(Math.floor(sources.agentSvidNotAfter().getTime() / 1000));
      },
    });
    if (sources.workloadApiLimits) registerWorkloadApiMetrics(registry, sources.workloadApiLimits.bind(sources), sources.workloadApiConnections?.bind(sources));
    if (sources.jwtSvidCache) registerJwtCacheMetrics(registry, sources.jwtSvidCache.bind(sources));
  }
  const listeners = await startTelemetryListeners({
    healthChecks: opts.config.healthChecks,
    prometheus: opts.config.telemetry.prometheus,
    registry,
    logger: opts.logger,
    ready: async () => {
      const reasons: string[] = [];
      if (!sources.synced()) reasons.push('not yet synchronized with the server');
      const notAfter = sources.agentSvidNotAfter();
      if (notAfter.getTime() <= now().getTime()) reasons.push('agent SVID expired');
      return { ready: reasons.length === 0, body: { ready: reasons.length === 0, entries: sources.entries(), agent_svid_not_after: notAfter, ...(reasons.length ? { reasons } : {}) } };
    },
  });
  return { registry, close: () => listeners.close() };
}

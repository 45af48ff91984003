/**
 * The agent's health checks and Prometheus metrics (same config blocks as SPIRE's agent).
 * Ready: the first sync with the server has completed and the agent SVID is unexpired (an agent
 * that lost the server stays ready while it can still serve what it has).
 */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { startTelemetryListeners, type TelemetryListeners } from '../common/telemetryhttp.js';
import type { AgentConfig } from './config/types.js';

export interface AgentTelemetrySources {
  /** Authorized entries held. */
  entries(): number;
  /** Whether the first sync with the server completed. */
  synced(): boolean;
  /** notAfter of the agent's own SVID. */
  agentSvidNotAfter(): Date;
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

/**
 * Health endpoints (SPIRE's health_checks block: /live and /ready) and Prometheus metrics
 * (telemetry.Prometheus). Both are plain HTTP listeners that only exist when configured.
 *
 * Contract:
 * - live: 200 `{"live":true}` whenever the process answers (its event loop runs).
 * - ready: 200 only while the CA has an active, unexpired X.509 authority and JWT key, the
 *   server SVID exists and is unexpired, and the datastore answers a cheap query within
 *   READY_DATASTORE_TIMEOUT_MS; otherwise 503. The JSON body says which check failed
 *   (`reasons`), never internals (the datastore error is logged once per outage instead).
 * - /metrics: the server instance's own registry (server/metrics.ts), Prometheus text format.
 */
import { startTelemetryListeners, type Readiness } from '../common/telemetryhttp.js';
import type { Registry } from 'prom-client';
import type { ServerConfig } from './config/config.js';
import type { CaStatus } from './ca/manager.js';
import type { MetricsSources, ServerMetrics } from './metrics.js';

export interface Telemetry {
  registry: Registry;
  close(): Promise<void>;
}

/** How long /ready waits for the datastore before calling it unavailable. */
export const READY_DATASTORE_TIMEOUT_MS = 2_000;

/** What the health checks and state gauges read. */
export interface TelemetrySources {
  datastore: { latestEventId(): Promise<number>; available?(): boolean } & MetricsSources['datastore'];
  ca: { status(): CaStatus };
  api: { readonly openStreams: number };
}

export type { Readiness };

type TelemetryLogger = { info(o: object, m: string): void; warn(o: object, m: string): void };

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err);
      },
    );
  });
}

/** Evaluates readiness (see the module contract). `onDatastoreError` sees the cause. */
export async function checkReadiness(src: TelemetrySources, now: Date, onDatastoreError?: (err: unknown) => void): Promise<Readiness> {
  const reasons: string[] = [];
  const st = src.ca.status();
  const t = now.getTime();
  const active = (list: CaStatus['x509']) => list.find((a) => a.status === 'active' && a.notAfter.getTime() > t);
  const x509 = active(st.x509);
  const jwt = active(st.jwt);
  if (x509 === undefined) reasons.push('no active unexpired X.509 CA');
  if (jwt === undefined) reasons.push('no active unexpired JWT signing key');
  if (st.serverSvid === undefined) reasons.push('server SVID not issued');
  else if (st.serverSvid.notAfter.getTime() <= t) reasons.push('server SVID expired');
  let datastore = 'ok';
  try {
    await withTimeout(src.datastore.latestEventId(), READY_DATASTORE_TIMEOUT_MS, 'datastore');
  } catch (err) {
    datastore = 'unavailable';
    reasons.push('datastore unavailable');
    onDatastoreError?.(err);
  }
  const body: Record<string, unknown> = {
    ready: reasons.length === 0,
    ca_active_not_after: x509?.notAfter,
    jwt_active_not_after: jwt?.notAfter,
    server_svid_not_after: st.serverSvid?.notAfter,
    bundle_sequence: String(st.bundleSequence),
    agent_streams: src.api.openStreams,
    datastore,
  };
  if (reasons.length > 0) body['reasons'] = reasons;
  return { ready: reasons.length === 0, body };
}

export async function startTelemetry(opts: {
  config: ServerConfig;
  metrics: ServerMetrics;
  datastore: TelemetrySources['datastore'];
  ca: TelemetrySources['ca'];
  api: TelemetrySources['api'];
  now?: () => Date;
  logger: TelemetryLogger;
}): Promise<Telemetry> {
  const { config, metrics, logger } = opts;
  const now = opts.now ?? (() => new Date());
  const src: TelemetrySources = { datastore: opts.datastore, ca: opts.ca, api: opts.api };
  const registry = metrics.registry;
  metrics.observe(src);
  let datastoreDown = false;
  const listeners = await startTelemetryListeners({
    healthChecks: config.healthChecks,
    prometheus: config.telemetry.prometheus,
    registry,
    logger,
    ready: async () => {
      const r = await checkReadiness(src, now(), (err) => {
        if (!datastoreDown) logger.warn({ err }, 'readiness: datastore is not answering');
        datastoreDown = true;
      });
      if (r.body['datastore'] === 'ok') datastoreDown = false;
      return r;
    },
  });
  return { registry, close: () => listeners.close() };
}

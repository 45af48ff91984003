/**
 * spindle-proxy's metrics (prom-client, served on the admin listener's /metrics) and access log.
 *
 * Labels: `listener` (the listener's name: for outbound listeners it names the destination),
 * `source` (the caller's SPIFFE ID on inbound listeners; `local` on outbound ones, whose caller
 * is a local process; `none` when the caller presented no SVID), `decision` (`allow` / `deny`),
 * `rule` on refusals (a policy's rule names are few), `reason` on handshake errors (stable
 * SpiffeError reasons or `timeout` / `tls`). Source IDs are capped: after `maxSourceIds` distinct
 * ones, new IDs are counted as `other`, so a caller minting IDs cannot grow the registry.
 *
 * The access log is one JSON line on stdout per connection (TCP listeners, outbound listeners)
 * or per request (HTTP listeners); see AccessRecord.
 */
import pino from 'pino';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class SourceLabels {
  readonly #seen = new Set<string>();
  constructor(readonly max: number) {}

  label(id: string | undefined): string {
    if (id === undefined) return 'none';
    if (this.#seen.has(id)) return id;
    if (this.#seen.size >= this.max) return 'other';
    this.#seen.add(id);
    return id;
  }
}

const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly sources: SourceLabels;
  readonly connections: Counter<'listener' | 'source' | 'decision'>;
  readonly activeConnections: Gauge<'listener'>;
  readonly bytesReceived: Counter<'listener' | 'source'>;
  readonly bytesSent: Counter<'listener' | 'source'>;
  readonly requests: Counter<'listener' | 'source' | 'decision'>;
  readonly refusals: Counter<'listener' | 'source' | 'rule'>;
  readonly handshakeErrors: Counter<'listener' | 'reason'>;
  readonly overCapacity: Counter<'listener'>;
  readonly shed: Counter<'listener' | 'reason'>;
  readonly pendingConnections: Gauge<'listener'>;
  readonly requestDuration: Histogram<'listener' | 'source' | 'decision'>;
  readonly connectionDuration: Histogram<'listener' | 'source' | 'decision'>;
  readonly policyReloads: Counter<'listener' | 'result'>;

  constructor(maxSourceIds: number) {
    this.sources = new SourceLabels(maxSourceIds);
    const r = [this.registry];
    this.connections = new Counter({ name: 'spindle_proxy_connections_total', help: 'Connections decided, by listener, source SPIFFE ID and decision', labelNames: ['listener', 'source', 'decision'], registers: r });
    this.activeConnections = new Gauge({ name: 'spindle_proxy_active_connections', help: 'Open connections per listener (TLS handshakes included)', labelNames: ['listener'], registers: r });
    this.bytesReceived = new Counter({ name: 'spindle_proxy_received_bytes_total', help: 'Bytes received from callers (inbound: from the remote caller; outbound: from the local process)', labelNames: ['listener', 'source'], registers: r });
    this.bytesSent = new Counter({ name: 'spindle_proxy_sent_bytes_total', help: 'Bytes sent back to callers', labelNames: ['listener', 'source'], registers: r });
    this.requests = new Counter({ name: 'spindle_proxy_requests_total', help: 'HTTP requests decided, by listener, source and decision', labelNames: ['listener', 'source', 'decision'], registers: r });
    this.refusals = new Counter({ name: 'spindle_proxy_refusals_total', help: 'Connections or requests refused, by listener, source and the rule (or check) that refused', labelNames: ['listener', 'source', 'rule'], registers: r });
    this.handshakeErrors = new Counter({ name: 'spindle_proxy_handshake_errors_total', help: 'TLS handshakes that failed or whose peer failed SPIFFE verification', labelNames: ['listener', 'reason'], registers: r });
    this.overCapacity = new Counter({ name: 'spindle_proxy_connections_over_limit_total', help: 'Connections closed at accept because the listener had max_connections open', labelNames: ['listener'], registers: r });
    this.shed = new Counter({ name: 'spindle_proxy_connections_shed_total', help: 'Connections closed at accept by the admission limits, by reason: pending_per_address, max_pending_handshakes, max_connections', labelNames: ['listener', 'reason'], registers: r });
    this.pendingConnections = new Gauge({ name: 'spindle_proxy_pending_connections', help: 'Inbound connections accepted whose caller is not verified yet (TLS handshake in progress)', labelNames: ['listener'], registers: r });
    this.requestDuration = new Histogram({ name: 'spindle_proxy_request_duration_seconds', help: 'HTTP request duration, head received to response end', labelNames: ['listener', 'source', 'decision'], buckets: DURATION_BUCKETS, registers: r });
    this.connectionDuration = new Histogram({ name: 'spindle_proxy_connection_duration_seconds', help: 'Connection duration, accept to close', labelNames: ['listener', 'source', 'decision'], buckets: DURATION_BUCKETS, registers: r });
    this.policyReloads = new Counter({ name: 'spindle_proxy_policy_reloads_total', help: 'Policy file reloads by result (ok / failed)', labelNames: ['listener', 'result'], registers: r });
  }
}

/** One access log line. */
export interface AccessRecord {
  /** `connection` (TCP and outbound listeners) or `request` (HTTP listeners). */
  kind: 'connection' | 'request';
  listener: string;
  mode: 'inbound' | 'outbound';
  /** The caller's SPIFFE ID (inbound), absent when it presented none or failed verification. */
  source_id?: string;
  /** Our own SPIFFE ID at the time. */
  own_id?: string;
  /** Outbound: the target's verified SPIFFE ID. */
  destination_id?: string;
  decision: 'allow' | 'deny';
  rule: string;
  reason: string;
  dry_run?: boolean;
  method?: string;
  path?: string;
  /** HTTP listeners whose policy uses JWTs: the validated bearer JWT-SVID's subject, or why it did not validate. */
  jwt_subject?: string;
  jwt_error?: string;
  status?: number;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  traceparent?: string;
  remote: string;
}

export type AccessLog = (rec: AccessRecord) => void;

/** The access log: JSON lines on `dest` (default stdout), one per record. */
export function createAccessLog(dest: NodeJS.WritableStream = process.stdout): AccessLog {
  const logger = pino({ base: undefined, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime }, dest as pino.DestinationStream);
  return (rec) => logger.info({ log: 'access', ...rec });
}

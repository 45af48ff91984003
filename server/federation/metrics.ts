/**
 * Federation refresh metrics, registered on the server's own prom-client Registry
 * (server/metrics.ts ServerMetrics.registry). Labelled by the foreign trust domain: bounded by
 * the relationships an operator configures, and removed when a relationship is deleted.
 *
 *   spindle_server_federation_last_refresh_timestamp_seconds{trust_domain}  last attempt
 *   spindle_server_federation_last_refresh_success{trust_domain}            1 ok, 0 failed
 *   spindle_server_federation_last_success_timestamp_seconds{trust_domain}  last success (0 never)
 *   spindle_server_federation_bundle_sequence{trust_domain}                 last sequence accepted
 */
import { Gauge, type Registry } from 'prom-client';
import type { FederationRefreshState } from '../datastore/types.js';

export class FederationMetrics {
  private readonly attempt: Gauge<'trust_domain'>;
  private readonly success: Gauge<'trust_domain'>;
  private readonly lastSuccess: Gauge<'trust_domain'>;
  private readonly sequence: Gauge<'trust_domain'>;

  constructor(registry: Registry) {
    const registers = [registry];
    const labelNames = ['trust_domain'] as const;
    this.attempt = new Gauge({ name: 'spindle_server_federation_last_refresh_timestamp_seconds', help: 'When the bundle of a federated trust domain was last fetched (unix seconds)', labelNames, registers });
    this.success = new Gauge({ name: 'spindle_server_federation_last_refresh_success', help: 'Whether the last bundle refresh of a federated trust domain succeeded (1) or failed (0)', labelNames, registers });
    this.lastSuccess = new Gauge({ name: 'spindle_server_federation_last_success_timestamp_seconds', help: 'When a bundle refresh of a federated trust domain last succeeded (unix seconds, 0: never)', labelNames, registers });
    this.sequence = new Gauge({ name: 'spindle_server_federation_bundle_sequence', help: 'The sequence of the last bundle accepted from a federated trust domain', labelNames, registers });
  }

  record(td: string, state: FederationRefreshState, ok: boolean): void {
    this.attempt.set({ trust_domain: td }, state.lastAttemptAt);
    this.success.set({ trust_domain: td }, ok ? 1 : 0);
    this.lastSuccess.set({ trust_domain: td }, state.lastSuccessAt);
    this.sequence.set({ trust_domain: td }, Number(state.lastSequence));
  }

  forget(td: string): void {
    for (const g of [this.attempt, this.success, this.lastSuccess, this.sequence]) g.remove({ trust_domain: td });
  }
}

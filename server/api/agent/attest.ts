/**
 * AttestAgent: a node proves what it is with a node attestor (attestors/node) and receives its
 * first agent SVID. The stream is unauthenticated (anyone who can reach the port may open one),
 * so it is bounded: streams in progress at once, in all and per remote address, a deadline for
 * the agent's data, and how many messages it may send ahead. The CSR is checked before the
 * attestor runs; a banned node, or one that attested before and may not re-attest, is refused.
 */
import { status as GrpcStatus, type ServerDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { verifyCsrForIssuance } from '../../../spiffe/x509/csr.js';
import type { AttestAgentRequest, AttestAgentResponse } from '../../../proto/gen/spindle/agent/v1/agent.js';
import { AttestationError } from '../../../attestors/node/types.js';
import { statusOf } from '../errors.js';
import type { ApiLogger } from '../logger.js';
import { denied, invalid, nowSeconds, svidToProto, type AgentApiDeps, type AgentApiMetrics, type AttestationLimit } from './deps.js';

/**
 * How long after an AttestAgent stream opens the agent may take to send what the server waits
 * for (its params, then any challenge response): the stream is refused when the deadline
 * passes. Agents send their params at once (join_token needs no further round trip, k8s_psat
 * one TokenReview by the server); the attestor's own outbound calls are bounded by their own
 * timeouts (k8s API: 10 s per request).
 */
export const ATTESTATION_TIMEOUT_MS = 10_000;
/**
 * AttestAgent streams in progress at once (unauthenticated: anyone who can reach the port may
 * open them), over all callers and per remote address. Beyond either, a new stream is refused
 * with RESOURCE_EXHAUSTED before anything is read. An attestation holds its slot until it ends
 * (at most ATTESTATION_TIMEOUT_MS waiting for the agent).
 */
export const MAX_ATTESTATIONS_IN_PROGRESS = 1024;
export const MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS = 64;
/** AttestAgent messages buffered ahead of the server reading them (params, one challenge response). */
const MAX_QUEUED_ATTESTATION_MESSAGES = 4;

/** AttestAgent streams, admitted within the in-progress limits and run to their end. */
export class Attestations {
  readonly #d: AgentApiDeps;
  readonly #log: ApiLogger;
  readonly #metrics: AgentApiMetrics;
  /** AttestAgent streams in progress: in all, and by remote address. */
  #attesting = 0;
  readonly #attestingByAddress = new Map<string, number>();

  constructor(deps: AgentApiDeps, log: ApiLogger, metrics: AgentApiMetrics) {
    this.#d = deps;
    this.#log = log;
    this.#metrics = metrics;
  }

  /** AttestAgent streams in progress now. */
  get inProgress(): number {
    return this.#attesting;
  }

  /**
   * Admits an AttestAgent stream within the in-progress limits (total and per remote address),
   * or refuses it with RESOURCE_EXHAUSTED before reading anything. The slot is held until the
   * attestation ends.
   */
  attest(call: ServerDuplexStream<AttestAgentRequest, AttestAgentResponse>): void {
    const address = remoteAddressOf(call.getPeer());
    const fromAddress = this.#attestingByAddress.get(address) ?? 0;
    let refusal: { limit: AttestationLimit; message: string } | undefined;
    if (this.#attesting >= MAX_ATTESTATIONS_IN_PROGRESS) {
      refusal = { limit: 'in_progress_total', message: `too many agent attestations in progress on this server (at most ${MAX_ATTESTATIONS_IN_PROGRESS} at once); try again shortly` };
    } else if (fromAddress >= MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS) {
      refusal = {
        limit: 'in_progress_per_address',
        message: `too many agent attestations in progress from ${address} (at most ${MAX_ATTESTATIONS_IN_PROGRESS_PER_ADDRESS} at once per remote address); try again shortly`,
      };
    }
    if (refusal !== undefined) {
      // Not logged one by one (a flood would flood the log too): counted instead.
      this.#metrics.attestationRefused?.(refusal.limit);
      call.emit('error', { code: GrpcStatus.RESOURCE_EXHAUSTED, details: refusal.message } as Partial<ServiceError>);
      return;
    }
    this.#attesting++;
    this.#attestingByAddress.set(address, fromAddress + 1);
    void this.#runAttestation(call).finally(() => {
      this.#attesting--;
      const n = (this.#attestingByAddress.get(address) ?? 1) - 1;
      if (n > 0) this.#attestingByAddress.set(address, n);
      else this.#attestingByAddress.delete(address);
    });
  }

  async #runAttestation(call: ServerDuplexStream<AttestAgentRequest, AttestAgentResponse>): Promise<void> {
    const log = this.#log;
    const deadline = Date.now() + ATTESTATION_TIMEOUT_MS;
    const queue: AttestAgentRequest[] = [];
    let waiting: ((m: AttestAgentRequest | undefined) => void) | undefined;
    let ended = false;
    /** The agent sent more than the attestation can have asked for (not kept). */
    let overflow = false;
    call.on('data', (m: AttestAgentRequest) => {
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        w(m);
      } else if (queue.length < MAX_QUEUED_ATTESTATION_MESSAGES) queue.push(m);
      else overflow = true;
    });
    const finish = (): void => {
      ended = true;
      waiting?.(undefined);
    };
    call.on('end', finish);
    call.on('error', finish);
    call.on('cancelled', finish);
    const next = (): Promise<AttestAgentRequest | undefined> => {
      if (overflow) return Promise.reject(invalid('the agent sent more AttestAgent messages than the attestation asked for'));
      const m = queue.shift();
      if (m) return Promise.resolve(m);
      if (ended) return Promise.resolve(undefined);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new AttestationError('timeout', `timed out waiting for the agent's attestation data (an attestation must complete within ${ATTESTATION_TIMEOUT_MS / 1000} s)`)),
          Math.max(0, deadline - Date.now()),
        );
        waiting = (v) => {
          clearTimeout(t);
          resolve(v);
        };
      });
    };
    let attestorType: string | undefined;
    try {
      const first = await next();
      if (first?.step?.$case !== 'params') throw invalid('the first AttestAgent message must carry params');
      const { data, csr } = first.step.value;
      if (!data || data.type === '') throw invalid('attestation data type is required');
      if (csr.length === 0) throw invalid('a CSR is required');
      attestorType = data.type;
      const attestor = this.#d.attestors.get(data.type);
      if (!attestor) throw invalid(`node attestor ${JSON.stringify(data.type)} is not enabled on this server`);
      // The CSR is checked before the attestor runs: attestors may consume their evidence (a
      // join token is single-use), which a request that cannot be signed must not burn.
      verifyCsrForIssuance(csr);
      const result = await attestor.attest(data.payload, {
        trustDomain: this.#d.trustDomain,
        datastore: this.#d.datastore,
        now: this.#d.now,
        challenge: async (challenge) => {
          call.write({ step: { $case: 'challenge', value: challenge } });
          const answer = await next();
          if (answer?.step?.$case !== 'challengeResponse') throw new AttestationError('challenge', 'expected a challenge response');
          return answer.step.value;
        },
      });
      const existing = await this.#d.datastore.getAttestedNode(result.agentId);
      if (existing?.banned) throw denied(`agent ${result.agentId} is banned`);
      if (existing && !existing.canReattest) throw denied(`agent ${result.agentId} has already attested and cannot re-attest`);
      const svid = this.#d.ca.signX509Svid({ id: result.agentId, csr, ttlSeconds: this.#d.agentTtlSeconds });
      this.#metrics.x509SvidSigned('agent');
      const record = {
        spiffeId: result.agentId,
        attestationType: attestor.name,
        certSerial: svid.serialHex,
        certNotAfter: Math.floor(svid.notAfter.getTime() / 1000),
        newCertSerial: '',
        newCertNotAfter: 0,
        selectors: result.selectors,
        banned: false,
        canReattest: result.canReattest,
      };
      const now = nowSeconds(this.#d.now);
      if (existing) await this.#d.datastore.updateAttestedNode({ ...existing, ...record }, now);
      else await this.#d.datastore.createAttestedNode(record, now);
      log.info({ agent_id: result.agentId, attestor: attestor.name, serial: svid.serialHex }, 'agent attested');
      this.#metrics.nodeAttestation(attestor.name, 'ok');
      call.write({ step: { $case: 'result', value: { svid: svidToProto(result.agentId, svid), reattestable: result.canReattest } } });
      call.end();
    } catch (err) {
      const st =
        err instanceof AttestationError
          ? (log.warn({ reason: err.reason }, 'node attestation refused'), { code: GrpcStatus.PERMISSION_DENIED, message: `attestation failed: ${err.message}` })
          : statusOf(err, log, { method: 'AttestAgent' }, 'agent');
      this.#metrics.nodeAttestation(attestorType, st.code === GrpcStatus.PERMISSION_DENIED || st.code === GrpcStatus.UNAUTHENTICATED ? 'denied' : 'error');
      call.emit('error', { code: st.code, details: st.message } as Partial<ServiceError>);
    }
  }
}

/**
 * The remote address of a call from grpc-js's `getPeer()` ("ip:port", IPv6 without brackets),
 * without the port; an IPv4-mapped IPv6 address (a listener on `::`) as plain IPv4.
 */
export function remoteAddressOf(peer: string): string {
  const colon = peer.lastIndexOf(':');
  let host = colon > 0 && /^\d+$/.test(peer.slice(colon + 1)) ? peer.slice(0, colon) : peer;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host.toLowerCase().startsWith('::ffff:') && host.includes('.')) host = host.slice(7);
  return host;
}

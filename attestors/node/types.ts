/**
 * Node attestation: how an agent proves which machine it runs on. Each attestor has an agent
 * half (produces evidence, answers challenges) and a server half (checks the evidence, may
 * challenge, and names the agent). One folder per built-in attestor; `registry.ts` builds them
 * from configuration.
 */
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import type { DataStore } from '../../server/datastore/types.js';
import type { Selector } from '../../common/selector.js';

/** Refusal of an attestation; the agent API answers PERMISSION_DENIED with the message. */
export class AttestationError extends Error {
  readonly code = 'ERR_ATTESTATION_FAILED';
  /** Stable: `unknown_token`, `expired_token`, `malformed`, ... */
  readonly reason: string;
  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AttestationError';
    this.reason = reason;
  }
}

export interface AttestationResult {
  agentId: SpiffeId;
  /** Node selectors (type is the attestor name, e.g. `k8s_psat`), used for node-alias matching. */
  selectors: Selector[];
  /** Whether this agent may attest again later with fresh evidence (k8s_psat) or not (join_token). */
  canReattest: boolean;
}

export interface ServerAttestorContext {
  trustDomain: TrustDomain;
  datastore: DataStore;
  now: () => Date;
  /** Sends a challenge to the agent and resolves with its answer. */
  challenge(data: Buffer): Promise<Buffer>;
}

export interface ServerNodeAttestor {
  readonly name: string;
  attest(payload: Buffer, ctx: ServerAttestorContext): Promise<AttestationResult>;
}

export interface AgentNodeAttestor {
  readonly name: string;
  /** The evidence to send (read fresh each time: a projected token rotates). */
  payload(): Promise<Buffer>;
  /** Answers a server challenge; attestors without challenges throw. */
  answerChallenge?(challenge: Buffer): Promise<Buffer>;
}

/** The agent ID shape SPIRE uses: `spiffe://<td>/spire/agent/<attestor>/<...>`. */
export const AGENT_PATH_PREFIX = '/spire/agent';

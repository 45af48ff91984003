/**
 * Node attestation: how an agent proves which machine it runs on. Each attestor has an agent
 * half (produces evidence, answers challenges) and a server half (checks the evidence, may
 * challenge, and names the agent). One folder per built-in attestor, each exporting a
 * `NodeAttestorPlugin` from its `plugin.ts`; `registry.ts` lists them and builds them from
 * configuration.
 */
import type { ConfigReader } from '../../common/configfile.js';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
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

/**
 * What a server-side node attestor may do with the datastore: only claim a join token (atomic
 * and single use: of concurrent claims of one token exactly one gets it). The server's datastore
 * satisfies it; attestors see nothing else of the server.
 */
export interface AttestorDataStore {
  /** Removes the join token with this SHA-256 hash (hex) and returns it, or undefined if none. */
  consumeJoinToken(hash: string): Promise<{ hash: string; expiresAt: number } | undefined>;
}

export interface ServerAttestorContext {
  trustDomain: TrustDomain;
  datastore: AttestorDataStore;
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

/** What server halves may read from outside their config (injected: nothing below main reads process.env). */
export interface NodeAttestorEnv {
  /** The process environment (k8s_psat in-cluster credentials: KUBERNETES_SERVICE_HOST/PORT). */
  env?: Readonly<Record<string, string | undefined>>;
  /** k8s_psat in-cluster service-account mount; default /var/run/secrets/kubernetes.io/serviceaccount. */
  serviceAccountDir?: string;
}

/** What agent halves get besides their plugin_data. */
export interface AgentNodeAttestorContext {
  /** The agent's join token (-joinToken, -joinTokenFile or agent.join_token), if one was given. */
  joinToken?: string;
}

/**
 * One node attestor as the build knows it: its name and how to build each half. Both halves
 * validate their own plugin_data (reading keys from the `ConfigReader`, then
 * `data.throwIfInvalid()`, so a `ConfigError` names the offending key). Building contacts
 * nothing outside the process (reading a configured file is allowed).
 */
export interface NodeAttestorPlugin {
  /** The name in configuration (`NodeAttestor "<name>"`), on the wire and in agent IDs. */
  readonly name: string;
  /** The attestor takes no plugin_data: the config modules report any key in it as unknown. */
  readonly noPluginData?: boolean;
  /** The agent half uses the agent's join token; with any other attestor a given token is a config error. */
  readonly usesJoinToken?: boolean;
  /** Builds the server half. */
  server(data: ConfigReader, env: NodeAttestorEnv): ServerNodeAttestor;
  /** Builds the agent half; undefined when it has nothing to present (the agent must resume from its data dir). */
  agent(data: ConfigReader, ctx: AgentNodeAttestorContext): AgentNodeAttestor | undefined;
}

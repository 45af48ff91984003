/**
 * Who is calling the agent API, and what that caller may be given. `authenticate` turns the TLS
 * client certificate of a call into an attested agent: the certificate must verify against our
 * bundle, name an agent of our trust domain, belong to an attested node that is neither banned
 * nor evicted, and carry the node's current serial (or the serial of the SVID issued by the last
 * renewal, which then becomes current and retires the old one). `authorizedEntry` and
 * `authorizedMap` give the registration entries that agent is authorized for (server/entries),
 * the only source of identity in anything the agent API signs.
 *
 * Datastore outage (DataStoreError 'unavailable'): the node record last read for the agent is
 * used instead (#nodes), so agents keep getting SVIDs for the entries they are authorized for
 * while the database is down. A node event from the change feed drops that record (`nodeChanged`):
 * an agent banned or evicted before the outage (as far as this server's feed had read) is not
 * authenticated from memory. Promoting a renewed SVID's serial is a write: while the database is
 * down the renewed serial is accepted without it, and promoted on the first call after it returns.
 */
import { verifyX509Svid, type CertificateInfo } from '../../../spiffe/x509/index.js';
import { isMemberOf, pathOf, type SpiffeId } from '../../../spiffe/id.js';
import { isDataStoreUnavailable, type AttestedNode, type RegistrationEntry } from '../../datastore/types.js';
import { AGENT_PATH_PREFIX } from '../../../attestors/node/types.js';
import { peerCertificateDer, type AuthContextCall } from './peer.js';
import { denied, nowSeconds, unauthenticated, type AgentApiDeps, type OwnBundle } from './deps.js';

/** Agent certificates whose chain verification is remembered (see AgentAuth.authenticate). */
export const MAX_VERIFIED_AGENT_CERTS = 4096;
/** Longest a remembered chain verification is reused before the chain is verified again. */
export const VERIFIED_AGENT_CERT_TTL_MS = 60_000;
/** Node records remembered for authentication during a datastore outage (oldest dropped beyond). */
export const MAX_REMEMBERED_NODES = 100_000;

/** An authenticated agent. */
export interface Caller {
  agentId: SpiffeId;
  node: AttestedNode;
  /** End of the presented certificate chain's common validity (ms since the epoch). */
  certNotAfter: number;
}

/** A chain verification that succeeded, for one agent certificate (DER) and the current bundle. */
interface VerifiedAgentCert {
  agentId: SpiffeId;
  serialHex: string;
  /** The verified path's common validity window (ms): max notBefore, min notAfter. */
  notBefore: number;
  notAfter: number;
  verifiedAt: number;
}

/** Authentication of agent API callers and lookup of their authorized entries. */
export class AgentAuth {
  readonly #d: AgentApiDeps;
  readonly #ownBundle: OwnBundle;
  /**
   * Agent certificates (base64 DER) whose chain verified against the current bundle and that
   * name an agent of this trust domain. Cleared (`forget`) whenever the CA's bundle changes;
   * entries expire with the verified path's validity and after VERIFIED_AGENT_CERT_TTL_MS;
   * insertion-ordered, oldest dropped beyond MAX_VERIFIED_AGENT_CERTS. Only successes are kept.
   */
  readonly #verified = new Map<string, VerifiedAgentCert>();
  /** The node record last read per agent (see the module comment); insertion-ordered, bounded. */
  readonly #nodes = new Map<SpiffeId, AttestedNode>();

  constructor(deps: AgentApiDeps, ownBundle: OwnBundle) {
    this.#d = deps;
    this.#ownBundle = ownBundle;
  }

  /** Forgets every remembered verification (the bundle changed, or shutdown). */
  forget(): void {
    this.#verified.clear();
  }

  /** A node event for `agentId`: its remembered record is no longer trusted. */
  nodeChanged(agentId: SpiffeId): void {
    this.#nodes.delete(agentId);
  }

  #remember(agentId: SpiffeId, node: AttestedNode | undefined): void {
    this.#nodes.delete(agentId);
    if (node === undefined) return;
    this.#nodes.set(agentId, node);
    if (this.#nodes.size > MAX_REMEMBERED_NODES) this.#nodes.delete(this.#nodes.keys().next().value!);
  }

  /** The node record: from the datastore, or while it is unavailable the one read last. */
  async #node(agentId: SpiffeId): Promise<{ node: AttestedNode | undefined; fromMemory: boolean }> {
    try {
      const node = await this.#d.datastore.getAttestedNode(agentId);
      this.#remember(agentId, node);
      return { node, fromMemory: false };
    } catch (err) {
      const remembered = isDataStoreUnavailable(err) ? this.#nodes.get(agentId) : undefined;
      if (remembered === undefined) throw err;
      return { node: remembered, fromMemory: true };
    }
  }

  /**
   * The caller's agent identity from its TLS client certificate; throws a gRPC-mapped error.
   * The chain verification (and the agent-ID shape check) of a certificate is remembered in
   * #verified; the node checks (attested, not banned, serial current) run on every call.
   */
  async authenticate(call: AuthContextCall): Promise<Caller> {
    const der = peerCertificateDer(call);
    if (der === undefined) throw unauthenticated('no valid agent X509-SVID was presented (the TLS client certificate is missing, expired, or not signed by this trust domain)');
    const { agentId, serialHex: serial, notAfter: certNotAfter } = this.#verifyAgentCert(der);
    let { node, fromMemory } = await this.#node(agentId);
    if (!node) throw denied(`agent ${agentId} is not attested (evicted?): attest again`);
    if (node.banned) throw denied(`agent ${agentId} is banned`);
    if (serial !== node.certSerial) {
      if (node.newCertSerial === '' || serial !== node.newCertSerial) {
        throw denied(`agent SVID serial ${serial} has been superseded; use the current agent SVID`);
      }
      // First use of the renewed SVID: it becomes current and the old serial is retired. While
      // the datastore is unavailable that waits (the renewed serial is accepted as it is).
      if (!fromMemory) {
        try {
          node = await this.#d.datastore.updateAttestedNode(
            { ...node, certSerial: node.newCertSerial, certNotAfter: node.newCertNotAfter, newCertSerial: '', newCertNotAfter: 0 },
            nowSeconds(this.#d.now),
          );
          this.#remember(agentId, node);
        } catch (err) {
          if (!isDataStoreUnavailable(err)) throw err;
          fromMemory = true;
        }
      }
    }
    return { agentId, node, certNotAfter };
  }

  /** Chain verification against the current bundle, remembered per certificate (see #verified). */
  #verifyAgentCert(der: Buffer): VerifiedAgentCert {
    const now = this.#d.now();
    const t = now.getTime();
    const key = der.toString('base64');
    const hit = this.#verified.get(key);
    if (hit !== undefined) {
      if (t >= hit.notBefore && t <= hit.notAfter && t - hit.verifiedAt >= 0 && t - hit.verifiedAt < VERIFIED_AGENT_CERT_TTL_MS) return hit;
      this.#verified.delete(key);
    }
    let certs: CertificateInfo[];
    let agentId: SpiffeId;
    try {
      ({ id: agentId, certificates: certs } = verifyX509Svid([der, ...(this.#d.ca.intermediates?.() ?? [])], this.#ownBundle.now().bundle, { now }));
    } catch (err) {
      throw unauthenticated(`agent SVID is not valid: ${(err as Error).message}`);
    }
    if (!isMemberOf(agentId, this.#d.trustDomain) || !pathOf(agentId).startsWith(`${AGENT_PATH_PREFIX}/`)) {
      throw denied(`${agentId} is not an agent ID of this trust domain`);
    }
    const v: VerifiedAgentCert = {
      agentId,
      serialHex: certs[0]!.serialHex,
      notBefore: Math.max(...certs.map((c) => c.notBefore.getTime())),
      notAfter: Math.min(...certs.map((c) => c.notAfter.getTime())),
      verifiedAt: t,
    };
    this.#verified.set(key, v);
    if (this.#verified.size > MAX_VERIFIED_AGENT_CERTS) this.#verified.delete(this.#verified.keys().next().value!);
    return v;
  }

  /** The authorized entry `entryId` of the caller, if any. */
  authorizedEntry(caller: Caller, entryId: string): RegistrationEntry | undefined {
    const cache = this.#d.cache;
    const tracked = cache.entryFor(caller.agentId, entryId);
    if (tracked !== null) return tracked;
    // No open sync stream: compute from the index without tracking the agent.
    return cache.index.authorizedEntries(caller.agentId, caller.node.selectors).find((e) => e.id === entryId);
  }

  /** The caller's authorized entries by ID. */
  authorizedMap(caller: Caller): Map<string, RegistrationEntry> {
    const cache = this.#d.cache;
    let entries = cache.entriesFor(caller.agentId);
    if (entries === undefined) {
      // No open sync stream: compute from the index without tracking the agent.
      entries = cache.index.authorizedEntries(caller.agentId, caller.node.selectors);
    }
    return new Map(entries.map((e) => [e.id, e]));
  }
}

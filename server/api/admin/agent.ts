/**
 * AgentService: attested agents (list, show, evict, ban, count) and join tokens.
 *
 * Join tokens (SPIRE's CreateJoinToken):
 * - The value is a random UUID v4; only its SHA-256 (hex) is stored (both as the join_token
 *   attestor defines them: attestors/node/join_token/token.ts). The value is returned to
 *   the caller once and never logged.
 * - TTL 0 means the default (600 s unless configured); negative TTLs are refused.
 * - With `agent_alias_spiffe_id`, SPIRE's alias entry is created too: spiffeId = the alias,
 *   parentId = the agent ID the token will produce (`spiffe://<td>/spire/agent/join_token/<token>`),
 *   one selector `spiffe_id:<that agent ID>`. The alias is validated (our trust domain, non-root,
 *   not under `/spire`) before anything is stored; if the entry cannot be created the token is
 *   consumed again so no half-done token remains.
 *
 * Ban (SPIRE semantics): the record stays, marked banned, with its SVID serials cleared; the
 * agent API refuses banned agents and their re-attestation until the record is deleted (evict).
 */
import { generateJoinToken, hashJoinToken } from '../../../attestors/node/join_token/token.js';
import { idFromSegments } from '../../../spiffe/id.js';
import type { AgentServiceServer } from '../../../proto/gen/spindle/admin/v1/admin.js';
import { validateNewEntry } from '../../entries/validate.js';
import { agentToProto, nodeFilterFromProto, pageFromProto, parseIdField, parseWorkloadIdField } from '../convert.js';
import { ApiError, GrpcStatus, invalidArgument, notFound, unary } from '../errors.js';
import { DEFAULT_JOIN_TOKEN_TTL_SECONDS, type AdminDeps, type ApiLogger } from './types.js';

/** Longest join token lifetime accepted (one year). */
export const MAX_JOIN_TOKEN_TTL_SECONDS = 365 * 24 * 3600;

export function createAgentService(deps: AdminDeps, log: ApiLogger): AgentServiceServer {
  const { datastore: ds, trustDomain } = deps;
  const nowSeconds = (): number => Math.floor(deps.now().getTime() / 1000);
  const defaultTtl = deps.joinTokenDefaultTtlSeconds ?? DEFAULT_JOIN_TOKEN_TTL_SECONDS;

  async function getNode(raw: string) {
    const id = parseIdField(raw, 'id');
    const node = await ds.getAttestedNode(id);
    if (node === undefined) throw notFound(`agent ${JSON.stringify(raw)} not found`);
    return node;
  }

  return {
    listAgents: unary(log, 'ListAgents', async (req) => {
      const filter = nodeFilterFromProto(req.filter);
      // Shown, not decided on: may come from the read-only replica (ro_connection_string).
      const page = await ds.listAttestedNodes(filter, pageFromProto(req.pageSize, req.pageToken), { mayLag: true });
      return { agents: page.items.map(agentToProto), nextPageToken: page.nextToken };
    }),

    countAgents: unary(log, 'CountAgents', async (req) => {
      return { count: await ds.countAttestedNodes(nodeFilterFromProto(req.filter), { mayLag: true }) };
    }),

    getAgent: unary(log, 'GetAgent', async (req) => agentToProto(await getNode(req.id))),

    deleteAgent: unary(log, 'DeleteAgent', async (req) => {
      const id = parseIdField(req.id, 'id');
      const removed = await ds.deleteAttestedNode(id, nowSeconds());
      if (removed === undefined) throw notFound(`agent ${JSON.stringify(req.id)} not found`);
      log.info({ method: 'DeleteAgent', agentId: id }, 'agent evicted');
      return {};
    }),

    banAgent: unary(log, 'BanAgent', async (req) => {
      const node = await getNode(req.id);
      await ds.updateAttestedNode(
        { ...node, banned: true, certSerial: '', newCertSerial: '', newCertNotAfter: 0 },
        nowSeconds(),
      );
      log.info({ method: 'BanAgent', agentId: node.spiffeId }, 'agent banned');
      return {};
    }),

    createJoinToken: unary(log, 'CreateJoinToken', async (req) => {
      if (!Number.isInteger(req.ttl) || req.ttl < 0) throw invalidArgument(`invalid ttl ${req.ttl}: must be a positive number of seconds (0: default ${defaultTtl})`);
      const ttl = req.ttl === 0 ? defaultTtl : req.ttl;
      if (ttl > MAX_JOIN_TOKEN_TTL_SECONDS) throw invalidArgument(`invalid ttl ${ttl}: at most ${MAX_JOIN_TOKEN_TTL_SECONDS} seconds`);
      const alias =
        req.agentAliasSpiffeId === '' ? undefined : parseWorkloadIdField(req.agentAliasSpiffeId, 'agent_alias_spiffe_id', trustDomain);

      const token = generateJoinToken();
      const agentId = idFromSegments(trustDomain, 'spire', 'agent', 'join_token', token);
      // Validate the alias entry before storing anything (fail early, as SPIRE does).
      const aliasEntry =
        alias === undefined
          ? undefined
          : validateNewEntry({ spiffeId: alias, parentId: agentId, selectors: [{ type: 'spiffe_id', value: agentId }] }, { trustDomain });

      const now = nowSeconds();
      const expiresAt = now + ttl;
      const hash = hashJoinToken(token);
      await ds.createJoinToken({ hash, expiresAt });
      if (aliasEntry !== undefined) {
        const [result] = await ds.createEntries([aliasEntry], now);
        if (result === undefined || 'error' in result) {
          await ds.consumeJoinToken(hash).catch(() => undefined);
          const cause = result !== undefined && 'error' in result ? result.error : undefined;
          log.error({ method: 'CreateJoinToken', err: cause }, 'failed to create the join token alias entry');
          throw new ApiError(GrpcStatus.INTERNAL, 'failed to create the join token registration entry', { cause });
        }
      }
      log.info({ method: 'CreateJoinToken', expiresAt, aliasSpiffeId: alias }, 'join token created');
      return { value: token, expiresAt: BigInt(expiresAt) };
    }),
  };
}

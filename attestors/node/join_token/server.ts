/**
 * join_token, server half. The token is consumed atomically by the datastore (of N concurrent
 * attestations with one token exactly one gets it); the agent ID is
 * `spiffe://<td>/spire/agent/join_token/<token>`, as in SPIRE. No selectors; no re-attestation.
 */
import { idFromSegments } from '../../../spiffe/id.js';
import { AttestationError, type AttestationResult, type ServerAttestorContext, type ServerNodeAttestor } from '../types.js';
import { hashJoinToken, isWellFormedJoinToken } from './token.js';

export const JOIN_TOKEN = 'join_token';

export class JoinTokenServerAttestor implements ServerNodeAttestor {
  readonly name = JOIN_TOKEN;

  async attest(payload: Buffer, ctx: ServerAttestorContext): Promise<AttestationResult> {
    const value = payload.toString('utf8');
    if (!isWellFormedJoinToken(value)) {
      throw new AttestationError('malformed', 'join token is malformed: expected the exact value printed by `spindle-server token generate`');
    }
    const token = await ctx.datastore.consumeJoinToken(hashJoinToken(value));
    if (token === undefined) throw new AttestationError('unknown_token', 'join token does not exist or has already been used');
    if (token.expiresAt * 1000 <= ctx.now().getTime()) throw new AttestationError('expired_token', 'join token has expired');
    return { agentId: idFromSegments(ctx.trustDomain, 'spire', 'agent', JOIN_TOKEN, value), selectors: [], canReattest: false };
  }
}

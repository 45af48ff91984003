/** join_token, agent half: sends the token it was given (flag, config or file). */
import { AttestationError, type AgentNodeAttestor } from '../types.js';
import { isWellFormedJoinToken } from './token.js';
import { JOIN_TOKEN } from './server.js';

export class JoinTokenAgentAttestor implements AgentNodeAttestor {
  readonly name = JOIN_TOKEN;
  readonly #token: string;

  constructor(token: string) {
    const trimmed = token.trim();
    if (!isWellFormedJoinToken(trimmed)) throw new AttestationError('malformed', 'join token is malformed (expected a UUID as printed by `spindle-server token generate`)');
    this.#token = trimmed;
  }

  async payload(): Promise<Buffer> {
    return Buffer.from(this.#token, 'utf8');
  }
}

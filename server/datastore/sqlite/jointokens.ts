/**
 * SQLite: join tokens, stored by hash only (the value never reaches the store). Consuming one is a
 * single `DELETE ... RETURNING` inside an IMMEDIATE transaction, so of N concurrent consumers (in
 * this process or others sharing the file) exactly one gets the token.
 */
import { checkInt, checkJoinToken, checkString } from '../checks.js';
import { DataStoreError, type JoinToken } from '../types.js';
import type { SqliteConnection } from './connection.js';

function prepare(c: SqliteConnection) {
  return {
    joinTokenExists: c.pluck<number>('SELECT 1 FROM join_tokens WHERE hash = ?'),
    insertJoinToken: c.run('INSERT INTO join_tokens (hash, expires_at) VALUES (?, ?)'),
    consumeJoinToken: c.raw<[string, number]>('DELETE FROM join_tokens WHERE hash = ? RETURNING hash, expires_at'),
    pruneJoinTokens: c.run('DELETE FROM join_tokens WHERE expires_at < ?'),
  };
}

export class SqliteJoinTokens {
  private readonly s;

  constructor(private readonly c: SqliteConnection) {
    this.s = prepare(c);
  }

  async createJoinToken(token: JoinToken): Promise<void> {
    const { hash, expiresAt } = checkJoinToken(token);
    this.c.write('create join token', () => {
      if (this.s.joinTokenExists.get(hash) !== undefined) {
        throw new DataStoreError('already_exists', 'a join token with this hash already exists');
      }
      this.s.insertJoinToken.run(hash, expiresAt);
    });
  }

  async consumeJoinToken(hash: string): Promise<JoinToken | undefined> {
    checkString(hash, 'join token hash');
    return this.c.write('consume join token', () => {
      const row = this.s.consumeJoinToken.get(hash);
      return row === undefined ? undefined : { hash: row[0], expiresAt: row[1] };
    });
  }

  async pruneJoinTokens(expiredBefore: number): Promise<number> {
    checkInt(expiredBefore, 'expiredBefore');
    return this.c.write('prune join tokens', () => this.s.pruneJoinTokens.run(expiredBefore).changes);
  }
}

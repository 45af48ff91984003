/**
 * SQLite: reading and pruning the change feed (`events`). Events are appended by the writes
 * themselves, in their transaction (SqliteConnection.write's emit); ids are AUTOINCREMENT, so
 * they are never reused, even after pruning.
 */
import { checkInt, checkNonNegativeInt } from '../checks.js';
import type { ChangeEvent, ChangeKind } from '../types.js';
import type { SqliteConnection } from './connection.js';

type EventRow = [id: number, kind: ChangeKind, key: string, at: number];

function prepare(c: SqliteConnection) {
  return {
    eventsSince: c.raw<EventRow>('SELECT id, kind, key, at FROM events WHERE id > ? ORDER BY id LIMIT ?'),
    latestEventId: c.pluck<number>('SELECT coalesce(max(id), 0) FROM events'),
    pruneEvents: c.run('DELETE FROM events WHERE at < ? AND id < (SELECT coalesce(max(id), 0) FROM events)'),
  };
}

export class SqliteEvents {
  private readonly s;

  constructor(private readonly c: SqliteConnection) {
    this.s = prepare(c);
  }

  async listEventsSince(after: number, limit: number): Promise<ChangeEvent[]> {
    checkInt(after, 'after');
    checkNonNegativeInt(limit, 'limit');
    if (limit === 0) return [];
    return this.c.read('list events', () =>
      this.s.eventsSince.all(after, limit).map(([id, kind, key, at]) => ({ id, kind, key, at })),
    );
  }

  async latestEventId(): Promise<number> {
    return this.c.read('latest event id', () => this.s.latestEventId.get() ?? 0);
  }

  async pruneEvents(before: number): Promise<number> {
    checkInt(before, 'before');
    return this.c.write('prune events', () => this.s.pruneEvents.run(before).changes);
  }
}

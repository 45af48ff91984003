/**
 * SQLite: checkIntegrity. SQLite's own integrity_check, the foreign key check, and the cached
 * child-row counts (selector_count, federates_count) compared with the child rows, all read in
 * one snapshot.
 */
import type { SqliteConnection } from './connection.js';

function prepare(c: SqliteConnection) {
  return {
    integrityCheck: c.pluck<string>('PRAGMA integrity_check'),
    // Cached counts that disagree with the child rows (the store writes both in one transaction).
    countMismatches: c.db.prepare<unknown[], { kind: string; key: string; what: string; recorded: number; actual: number }>(
      'SELECT * FROM (' +
        "SELECT 'entry' AS kind, e.id AS key, 'selectors' AS what, e.selector_count AS recorded, " +
        '(SELECT count(*) FROM entry_selectors s WHERE s.entry_pk = e.pk) AS actual FROM entries e ' +
        "UNION ALL SELECT 'entry', e.id, 'federatesWith', e.federates_count, " +
        '(SELECT count(*) FROM entry_federates_with f WHERE f.entry_pk = e.pk) FROM entries e ' +
        "UNION ALL SELECT 'node', n.spiffe_id, 'selectors', n.selector_count, " +
        '(SELECT count(*) FROM node_selectors s WHERE s.spiffe_id = n.spiffe_id) FROM attested_nodes n' +
        ') WHERE recorded <> actual LIMIT 100',
    ),
    foreignKeyCheck: c.db.prepare<unknown[], { table: string; rowid: number | null; parent: string; fkid: number }>(
      'PRAGMA foreign_key_check',
    ),
  };
}

export class SqliteIntegrity {
  private readonly s;

  constructor(private readonly c: SqliteConnection) {
    this.s = prepare(c);
  }

  async checkIntegrity(): Promise<string> {
    return this.c.read('check integrity', () => {
      const problems: string[] = [];
      const ic = this.s.integrityCheck.all();
      if (!(ic.length === 1 && ic[0] === 'ok')) problems.push(...ic);
      for (const fk of this.s.foreignKeyCheck.all()) {
        problems.push(
          `foreign key violation: a row of ${fk.table}${fk.rowid === null ? '' : ` (rowid ${fk.rowid})`} ` +
            `references a missing ${fk.parent} row`,
        );
      }
      for (const m of this.s.countMismatches.all()) {
        problems.push(`${m.kind} ${JSON.stringify(m.key)}: ${m.recorded} ${m.what} recorded but ${m.actual} rows`);
      }
      return problems.join('\n');
    }, true);
  }
}

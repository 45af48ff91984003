/**
 * SQLite: the migration runner. Brings a database to SCHEMA_VERSION with the pending
 * migrations of migrations.ts in one IMMEDIATE transaction, and refuses a database written by a
 * newer Spindle (its user_version is higher than this code knows).
 */
import type Database from 'better-sqlite3';
import { DataStoreError } from '../types.js';
import { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';

export function readUserVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

export function newerSchemaError(file: string, version: number): DataStoreError {
  return new DataStoreError(
    'invalid',
    `sqlite datastore ${file} has schema version ${version}, newer than version ${SCHEMA_VERSION} that this ` +
      'Spindle knows: it was written by a newer Spindle. Refusing to open it; run the newer version or restore a backup',
  );
}

/** Applies pending migrations in one IMMEDIATE transaction (the caller refused newer versions). */
export function migrate(db: Database.Database, file: string): void {
  if (readUserVersion(db) === SCHEMA_VERSION) return;
  db.transaction(() => {
    // Re-read under the write lock: another process may have migrated meanwhile.
    const current = readUserVersion(db);
    if (current > SCHEMA_VERSION) throw newerSchemaError(file, current);
    for (let v = current; v < SCHEMA_VERSION; v++) {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }
  }).immediate();
}

/**
 * PostgreSQL schema migrations and their runner. `MIGRATIONS[i]` takes the schema from version i
 * to i + 1; spindle_schema_migrations holds one row per applied version (its primary key makes a
 * second application fail loudly). All pending migrations run in ONE transaction holding
 * `pg_advisory_xact_lock(MIGRATE_LOCK)`, so several servers starting at once against an empty
 * database migrate it once: the others wait for the lock, then find nothing to do. Append only:
 * never edit a migration that has shipped. A database at a version above MIGRATIONS.length was
 * written by a newer Spindle and is refused; with disable_migration an outdated schema is refused
 * too (an operator migrates it on purpose).
 *
 * Schema notes (contract for the other files of this folder):
 * - Every text column is COLLATE "C": comparisons and ORDER BY are by byte, which on UTF-8 is the
 *   Unicode code point order page tokens and normalised lists use (../paging.ts), whatever the
 *   database's default collation.
 * - entries.identity_hash is SHA-256 of the entry's identity (spiffe_id, parent_id,
 *   selectors_key) and UNIQUE: the "no duplicate entry" rule with a bounded index key (a B-tree
 *   key must stay below ~2.7 kB; selector sets may not). Long equality-only columns use hash
 *   indexes for the same reason.
 * - selectors_key is the canonical JSON of the sorted selector set, as in the SQLite backend
 *   (reads take selectors from it); entry_selectors / node_selectors rows serve the filters;
 *   selector_count / federates_count cache the child counts for subset / exact matching.
 * - ca_journal holds one CA journal per server sharing the database, keyed by server_id; '' is
 *   the single server's (and the journal written before servers had IDs).
 * - federation_relationships: one row per foreign trust domain (the bundle itself is in bundles);
 *   last_sequence is a uint64 as decimal text.
 * - bundles.sequence is a uint64 as a decimal string; events.id is an identity column (never
 *   reused after pruning; a rolled-back write may leave a gap).
 */
import type pg from 'pg';
import { DataStoreError } from '../types.js';

export const MIGRATE_LOCK = '7294012460010001';

export const MIGRATIONS: readonly string[] = [
  // 1: initial schema.
  `
CREATE TABLE entries (
  pk              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id              text COLLATE "C" NOT NULL UNIQUE,
  spiffe_id       text COLLATE "C" NOT NULL,
  parent_id       text COLLATE "C" NOT NULL,
  selectors_key   text COLLATE "C" NOT NULL,
  identity_hash   bytea   NOT NULL UNIQUE,
  selector_count  integer NOT NULL CHECK (selector_count >= 0),
  federates_count integer NOT NULL CHECK (federates_count >= 0),
  x509_svid_ttl   bigint  NOT NULL CHECK (x509_svid_ttl >= 0),
  jwt_svid_ttl    bigint  NOT NULL CHECK (jwt_svid_ttl >= 0),
  admin           boolean NOT NULL,
  downstream      boolean NOT NULL,
  hint            text COLLATE "C" NOT NULL,
  entry_expiry    bigint  NOT NULL CHECK (entry_expiry >= 0),
  revision_number bigint  NOT NULL CHECK (revision_number >= 0),
  created_at      bigint  NOT NULL,
  updated_at      bigint  NOT NULL
);
CREATE INDEX entries_spiffe_id ON entries USING hash (spiffe_id);
CREATE INDEX entries_parent_id ON entries USING hash (parent_id);
CREATE INDEX entries_selectors_key ON entries USING hash (selectors_key);
CREATE INDEX entries_hint ON entries USING hash (hint);
CREATE INDEX entries_downstream ON entries (downstream) WHERE downstream;
CREATE INDEX entries_expiry ON entries (entry_expiry) WHERE entry_expiry > 0;

CREATE TABLE entry_selectors (
  entry_pk bigint NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
  type     text COLLATE "C" NOT NULL,
  value    text COLLATE "C" NOT NULL
);
CREATE INDEX entry_selectors_entry_pk ON entry_selectors (entry_pk);
CREATE INDEX entry_selectors_value ON entry_selectors USING hash (value);

CREATE TABLE entry_dns_names (
  entry_pk bigint  NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
  position integer NOT NULL,
  name     text COLLATE "C" NOT NULL,
  PRIMARY KEY (entry_pk, position)
);

CREATE TABLE entry_federates_with (
  entry_pk     bigint NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
  trust_domain text COLLATE "C" NOT NULL,
  PRIMARY KEY (entry_pk, trust_domain)
);
CREATE INDEX entry_federates_with_trust_domain ON entry_federates_with (trust_domain);

CREATE TABLE attested_nodes (
  spiffe_id          text COLLATE "C" NOT NULL PRIMARY KEY,
  attestation_type   text COLLATE "C" NOT NULL,
  cert_serial        text COLLATE "C" NOT NULL,
  cert_not_after     bigint  NOT NULL,
  new_cert_serial    text COLLATE "C" NOT NULL,
  new_cert_not_after bigint  NOT NULL,
  selectors_key      text COLLATE "C" NOT NULL,
  selector_count     integer NOT NULL CHECK (selector_count >= 0),
  banned             boolean NOT NULL,
  can_reattest       boolean NOT NULL,
  created_at         bigint  NOT NULL,
  updated_at         bigint  NOT NULL
);
CREATE INDEX attested_nodes_attestation_type ON attested_nodes USING hash (attestation_type);
CREATE INDEX attested_nodes_cert_not_after ON attested_nodes (cert_not_after);
CREATE INDEX attested_nodes_selectors_key ON attested_nodes USING hash (selectors_key);

CREATE TABLE node_selectors (
  spiffe_id text COLLATE "C" NOT NULL REFERENCES attested_nodes (spiffe_id) ON DELETE CASCADE,
  type      text COLLATE "C" NOT NULL,
  value     text COLLATE "C" NOT NULL
);
CREATE INDEX node_selectors_spiffe_id ON node_selectors (spiffe_id);
CREATE INDEX node_selectors_value ON node_selectors USING hash (value);

CREATE TABLE join_tokens (
  hash       text COLLATE "C" NOT NULL PRIMARY KEY,
  expires_at bigint NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
  trust_domain text COLLATE "C" NOT NULL PRIMARY KEY,
  document     text NOT NULL,
  sequence     text COLLATE "C" NOT NULL CHECK (sequence ~ '^[0-9]+$'),
  updated_at   bigint NOT NULL
);

CREATE TABLE ca_journal (
  id       integer NOT NULL PRIMARY KEY CHECK (id = 1),
  document text    NOT NULL
);

CREATE TABLE events (
  id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind text COLLATE "C" NOT NULL CHECK (kind IN ('entry_created', 'entry_updated', 'entry_deleted',
                                        'node_created', 'node_updated', 'node_deleted',
                                        'bundle_updated', 'bundle_deleted')),
  key  text COLLATE "C" NOT NULL,
  at   bigint NOT NULL
);
CREATE INDEX events_at ON events (at);
`,
  // 2: one CA journal per server: the single row (id 1) becomes server_id ''.
  `
ALTER TABLE ca_journal ADD COLUMN server_id text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE ca_journal DROP CONSTRAINT ca_journal_pkey;
ALTER TABLE ca_journal DROP COLUMN id;
ALTER TABLE ca_journal ALTER COLUMN server_id DROP DEFAULT;
ALTER TABLE ca_journal ADD PRIMARY KEY (server_id);
`,
  // 3: federation relationships (where each foreign bundle is fetched from) and their refresh state.
  `
CREATE TABLE federation_relationships (
  trust_domain            text COLLATE "C" NOT NULL PRIMARY KEY,
  bundle_endpoint_url     text COLLATE "C" NOT NULL,
  bundle_endpoint_profile text COLLATE "C" NOT NULL CHECK (bundle_endpoint_profile IN ('https_web', 'https_spiffe')),
  endpoint_spiffe_id      text COLLATE "C" NOT NULL,
  created_at              bigint NOT NULL,
  updated_at              bigint NOT NULL,
  last_attempt_at         bigint NOT NULL DEFAULT 0,
  last_success_at         bigint NOT NULL DEFAULT 0,
  last_error              text COLLATE "C" NOT NULL DEFAULT '',
  last_sequence           text COLLATE "C" NOT NULL DEFAULT '0' CHECK (last_sequence ~ '^[0-9]+$')
);
`,
];

/** The schema version this code writes and understands. */
export const SCHEMA_VERSION = MIGRATIONS.length;

const HISTORY_DDL =
  'CREATE TABLE IF NOT EXISTS spindle_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())';

function newerSchemaError(version: number): DataStoreError {
  return new DataStoreError(
    'invalid',
    `postgres datastore has schema version ${version}, newer than version ${SCHEMA_VERSION} that this Spindle knows: ` +
      'it was written by a newer Spindle. Refusing to use it; run the newer version or restore a backup',
  );
}

async function currentVersion(client: pg.PoolClient): Promise<number> {
  const exists = await client.query<[boolean]>({ text: "SELECT to_regclass('spindle_schema_migrations') IS NOT NULL", rowMode: 'array' });
  if (exists.rows[0]?.[0] !== true) return 0;
  const r = await client.query<[number | null]>({ text: 'SELECT max(version) FROM spindle_schema_migrations', rowMode: 'array' });
  return r.rows[0]?.[0] ?? 0;
}

/**
 * Brings the database to SCHEMA_VERSION (or, with `disabled`, only checks it is there). Returns
 * the versions this call applied (empty when another server had already migrated).
 */
export async function migrate(pool: pg.Pool, disabled: boolean): Promise<number[]> {
  const client = await pool.connect();
  // A connection that breaks between two statements must fail the next one, not end the process
  // with an 'error' event nobody listens to (a checked-out client has no pool listener).
  const ignore = (): void => undefined;
  client.on('error', ignore);
  let ok = false;
  try {
    if (disabled) {
      const v = await currentVersion(client);
      if (v > SCHEMA_VERSION) throw newerSchemaError(v);
      if (v < SCHEMA_VERSION) {
        throw new DataStoreError(
          'invalid',
          `postgres datastore has schema version ${v} but this Spindle needs version ${SCHEMA_VERSION}, and disable_migration ` +
            'is set: migrate the database (start one server without disable_migration) or unset it',
        );
      }
      ok = true;
      return [];
    }
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK]);
    await client.query(HISTORY_DDL);
    const current = await currentVersion(client);
    if (current > SCHEMA_VERSION) throw newerSchemaError(current);
    const applied: number[] = [];
    for (let v = current; v < SCHEMA_VERSION; v++) {
      await client.query(MIGRATIONS[v]!);
      await client.query('INSERT INTO spindle_schema_migrations (version) VALUES ($1)', [v + 1]);
      applied.push(v + 1);
    }
    await client.query('COMMIT');
    ok = true;
    return applied;
  } catch (err) {
    if (!disabled) await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.off('error', ignore);
    client.release(ok ? undefined : true);
  }
}

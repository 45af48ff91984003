/**
 * SQLite schema migrations. `MIGRATIONS[i]` takes the schema from version i to version i + 1;
 * `PRAGMA user_version` records the applied version. They run at open, all pending ones in one
 * IMMEDIATE transaction (migrate.ts). Append only: never edit a migration that has shipped, add a
 * new one. A database whose version is higher than `MIGRATIONS.length` was written by a newer
 * Spindle and is refused.
 *
 * Schema notes (contract for the other files of this folder):
 * - All tables are STRICT (no silent type coercion). Booleans are INTEGER 0/1.
 * - entries.selectors_key is the canonical JSON of the sorted, deduplicated selector set
 *   (`[["type","value"],...]`); with spiffe_id and parent_id it is UNIQUE, which is the
 *   "no duplicate entry" rule. selector_count / federates_count cache the child-row counts so
 *   subset / exact matching is one indexed GROUP BY.
 * - entries.id (the API's UUID) is UNIQUE; the child tables reference the integer surrogate
 *   entries.pk instead. Child rows stay small and, as new pks are max + 1, are appended rather
 *   than scattered over random UUID positions: batch inserts measured 2-4x faster than with
 *   children keyed by id. pk never leaves the store.
 * - entries.selectors_key is also where reads take an entry's selectors from; entry_selectors
 *   rows (written in the same transaction) serve the filters and checkIntegrity compares counts.
 * - Child tables are WITHOUT ROWID with the owner's key first, so an owner's rows are contiguous
 *   and deleting the owner cascades through that key.
 * - bundles.sequence is a uint64 as a decimal string (lossless; SQLite INTEGER is signed 64-bit).
 * - events.id is AUTOINCREMENT: ids are never reused, even after pruning.
 * - ca_journal holds one CA journal per server sharing the datastore, keyed by server_id; ''
 *   is the single server's (and the journal written before servers had IDs).
 * - federation_relationships: one row per foreign trust domain; last_sequence is a uint64 as a
 *   decimal string like bundles.sequence. The foreign bundle itself lives in bundles.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: initial schema.
  `
CREATE TABLE entries (
  pk              INTEGER PRIMARY KEY,
  id              TEXT    NOT NULL UNIQUE,
  spiffe_id       TEXT    NOT NULL,
  parent_id       TEXT    NOT NULL,
  selectors_key   TEXT    NOT NULL,
  selector_count  INTEGER NOT NULL CHECK (selector_count >= 0),
  federates_count INTEGER NOT NULL CHECK (federates_count >= 0),
  x509_svid_ttl   INTEGER NOT NULL CHECK (x509_svid_ttl >= 0),
  jwt_svid_ttl    INTEGER NOT NULL CHECK (jwt_svid_ttl >= 0),
  admin           INTEGER NOT NULL CHECK (admin IN (0, 1)),
  downstream      INTEGER NOT NULL CHECK (downstream IN (0, 1)),
  hint            TEXT    NOT NULL,
  entry_expiry    INTEGER NOT NULL CHECK (entry_expiry >= 0),
  revision_number INTEGER NOT NULL CHECK (revision_number >= 0),
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, parent_id, selectors_key);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_selectors_key ON entries (selectors_key);
CREATE INDEX entries_hint ON entries (hint);
CREATE INDEX entries_downstream ON entries (downstream) WHERE downstream = 1;
CREATE INDEX entries_expiry ON entries (entry_expiry) WHERE entry_expiry > 0;

CREATE TABLE entry_selectors (
  entry_pk INTEGER NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
  type     TEXT    NOT NULL,
  value    TEXT    NOT NULL,
  PRIMARY KEY (entry_pk, type, value)
) STRICT, WITHOUT ROWID;
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

CREATE TABLE entry_dns_names (
  entry_pk INTEGER NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  name     TEXT    NOT NULL,
  PRIMARY KEY (entry_pk, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE entry_federates_with (
  entry_pk     INTEGER NOT NULL REFERENCES entries (pk) ON DELETE CASCADE,
  trust_domain TEXT    NOT NULL,
  PRIMARY KEY (entry_pk, trust_domain)
) STRICT, WITHOUT ROWID;
CREATE INDEX entry_federates_with_trust_domain ON entry_federates_with (trust_domain);

CREATE TABLE attested_nodes (
  spiffe_id          TEXT    NOT NULL PRIMARY KEY,
  attestation_type   TEXT    NOT NULL,
  cert_serial        TEXT    NOT NULL,
  cert_not_after     INTEGER NOT NULL,
  new_cert_serial    TEXT    NOT NULL,
  new_cert_not_after INTEGER NOT NULL,
  selectors_key      TEXT    NOT NULL,
  selector_count     INTEGER NOT NULL CHECK (selector_count >= 0),
  banned             INTEGER NOT NULL CHECK (banned IN (0, 1)),
  can_reattest       INTEGER NOT NULL CHECK (can_reattest IN (0, 1)),
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX attested_nodes_attestation_type ON attested_nodes (attestation_type);
CREATE INDEX attested_nodes_banned ON attested_nodes (banned);
CREATE INDEX attested_nodes_cert_not_after ON attested_nodes (cert_not_after);
CREATE INDEX attested_nodes_can_reattest ON attested_nodes (can_reattest);
CREATE INDEX attested_nodes_selectors_key ON attested_nodes (selectors_key);

CREATE TABLE node_selectors (
  spiffe_id TEXT NOT NULL REFERENCES attested_nodes (spiffe_id) ON DELETE CASCADE,
  type      TEXT NOT NULL,
  value     TEXT NOT NULL,
  PRIMARY KEY (spiffe_id, type, value)
) STRICT, WITHOUT ROWID;
CREATE INDEX node_selectors_type_value ON node_selectors (type, value);

CREATE TABLE join_tokens (
  hash       TEXT    NOT NULL PRIMARY KEY,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
  trust_domain TEXT    NOT NULL PRIMARY KEY,
  document     TEXT    NOT NULL,
  sequence     TEXT    NOT NULL CHECK (sequence <> '' AND sequence NOT GLOB '*[^0-9]*'),
  updated_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE ca_journal (
  id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  document TEXT    NOT NULL
) STRICT;

CREATE TABLE events (
  id   INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT    NOT NULL CHECK (kind IN ('entry_created', 'entry_updated', 'entry_deleted',
                                        'node_created', 'node_updated', 'node_deleted',
                                        'bundle_updated', 'bundle_deleted')),
  key  TEXT    NOT NULL,
  at   INTEGER NOT NULL
) STRICT;
CREATE INDEX events_at ON events (at);
`,
  // 2: one CA journal per server: the single row (id 1) becomes server_id ''.
  `
CREATE TABLE ca_journal_by_server (
  server_id TEXT NOT NULL PRIMARY KEY,
  document  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO ca_journal_by_server (server_id, document) SELECT '', document FROM ca_journal;
DROP TABLE ca_journal;
ALTER TABLE ca_journal_by_server RENAME TO ca_journal;
`,
  // 3: federation relationships (where each foreign bundle is fetched from) and their refresh state.
  `
CREATE TABLE federation_relationships (
  trust_domain            TEXT    NOT NULL PRIMARY KEY,
  bundle_endpoint_url     TEXT    NOT NULL,
  bundle_endpoint_profile TEXT    NOT NULL CHECK (bundle_endpoint_profile IN ('https_web', 'https_spiffe')),
  endpoint_spiffe_id      TEXT    NOT NULL,
  created_at              INTEGER NOT NULL,
  updated_at              INTEGER NOT NULL,
  last_attempt_at         INTEGER NOT NULL DEFAULT 0,
  last_success_at         INTEGER NOT NULL DEFAULT 0,
  last_error              TEXT    NOT NULL DEFAULT '',
  last_sequence           TEXT    NOT NULL DEFAULT '0' CHECK (last_sequence <> '' AND last_sequence NOT GLOB '*[^0-9]*')
) STRICT, WITHOUT ROWID;
`,
];

/** The schema version this code writes and understands. */
export const SCHEMA_VERSION = MIGRATIONS.length;

//! Versioned schema migrations of the PostgreSQL store, applied in order at start.
//!
//! Every object lives in the `celltrail` schema. `celltrail.schema_migrations` records each
//! version applied; a server applies the missing ones in one transaction each, under a
//! transaction-scoped advisory lock so that servers starting together do not race. A database
//! at a version newer than this code knows is refused (a newer celltrail wrote it).
//! Migrations are append-only: a released one is never edited, a change is a new version.

/// (version, what it does, SQL). Versions start at 1 and have no gaps.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "log entries, chain heads, Merkle nodes, bag index, meta, log state, writer lease",
        r#"
CREATE TABLE celltrail.entries (
    idx        bigint PRIMARY KEY CHECK (idx >= 0),
    -- The exact bytes hashed into the Merkle log (an encoded LogEntry): never re-encoded.
    bytes      bytea  NOT NULL,
    event_hash bytea  NOT NULL UNIQUE CHECK (octet_length(event_hash) = 32),
    chain_id   text   COLLATE "C" NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 0),
    UNIQUE (chain_id, seq)
);
CREATE TABLE celltrail.heads (
    chain_id   text   COLLATE "C" PRIMARY KEY,
    seq        bigint NOT NULL,
    hash       bytea  NOT NULL CHECK (octet_length(hash) = 32),
    state_name text   NOT NULL
);
-- Perfect Merkle subtree hashes (level 0 = leaf hashes), written once when completed.
CREATE TABLE celltrail.nodes (
    level smallint NOT NULL,
    idx   bigint   NOT NULL,
    hash  bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);
-- Which chains name a bag (collection DIN, product bags): the entry that first named it.
CREATE TABLE celltrail.bags (
    din      text   COLLATE "C" NOT NULL,
    chain_id text   COLLATE "C" NOT NULL,
    idx      bigint NOT NULL,
    PRIMARY KEY (din, chain_id)
);
-- Small values the ledger keeps beside the log (storage::Group::meta).
CREATE TABLE celltrail.meta (
    key   text  COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
-- One row: the tree size and the latest signed checkpoint, changed by every group commit.
CREATE TABLE celltrail.log (
    id         int    PRIMARY KEY CHECK (id = 1),
    tree_size  bigint NOT NULL CHECK (tree_size >= 0),
    checkpoint text
);
INSERT INTO celltrail.log VALUES (1, 0, NULL);
-- One row: who may write. `epoch` grows by one at every takeover; a group commit locks this
-- row (FOR SHARE) and proves its epoch is still the current one, so a stale writer commits
-- nothing. Times are the database's clock, so servers' clocks never have to agree.
CREATE TABLE celltrail.lease (
    id         int    PRIMARY KEY CHECK (id = 1),
    epoch      bigint NOT NULL,
    holder     text,
    address    text,
    expires_at timestamptz
);
INSERT INTO celltrail.lease VALUES (1, 0, NULL, NULL, NULL);
"#,
    ),
    (
        2,
        "open hold reasons in chain heads; per-chain summaries for the console worklist",
        r#"
-- Reasons of the hold open after the head event, as a JSON array of strings (empty: none).
ALTER TABLE celltrail.heads ADD COLUMN hold bytea NOT NULL DEFAULT '\x5b5d';
-- What the worklist shows about a chain (summary::ChainSummary as JSON), rewritten by every
-- group that appends to the chain, so the console never replays a chain.
CREATE TABLE celltrail.summaries (
    chain_id text  COLLATE "C" PRIMARY KEY,
    summary  bytea NOT NULL
);
"#,
    ),
];

/// The newest schema version this code writes.
pub fn latest() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Key of the advisory lock taken while migrating ("celltrail" in ASCII, truncated).
pub const MIGRATION_LOCK: i64 = 0x63656c6c7472;

/// Applies the missing migrations; returns the schema version now in force.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<i32, super::PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS celltrail;
         CREATE TABLE IF NOT EXISTS celltrail.schema_migrations (
             version     int PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM celltrail.schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > latest() {
        return Err(super::PgError::Refused(format!(
            "the database's celltrail schema is at version {current}, written by a newer \
             celltrail; this one knows up to version {}: upgrade celltrail",
            latest()
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO celltrail.schema_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await?;
        tracing::info!(version, description, "applied schema migration");
    }
    tx.commit().await?;
    Ok(latest())
}

//! The schema and its versioned migrations.
//!
//! `PRAGMA user_version` records how many entries of [`MIGRATIONS`] have been
//! applied; each one runs in its own transaction together with the bump, so a
//! crash mid-migration leaves the file at the previous version, never between.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Schema migrations, in order. Append only: an applied entry is never edited,
/// because files already carrying its version would not run it again.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: instances, their session data, script key-values and the journal.
    "CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        connection_status TEXT NOT NULL,
        state TEXT NOT NULL,
        last_reason_code INTEGER,
        last_reason_kind TEXT,
        last_change_at INTEGER NOT NULL,
        jid TEXT,
        push_name TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE session (
        instance TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (instance, key)
    );
    CREATE TABLE kv (
        instance TEXT NOT NULL,
        script TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (instance, script, key)
    );
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        instance TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );",
    // 2: API tokens, one per instance, stored as SHA-256 hex digests only.
    "CREATE TABLE api_tokens (
        hash TEXT PRIMARY KEY,
        instance TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );",
];

/// Every table holding an instance's protocol/session data, each with an
/// `instance` column. Logging out and deleting an instance clear exactly these,
/// so any new per-instance protocol table (e.g. the WhatsApp key store's) MUST
/// be added here, or its rows would outlive the session they belong to.
pub const SESSION_TABLES: &[&str] = &["session"];

/// The schema version this code writes: the number of known migrations.
pub(crate) fn known_version() -> i64 {
    // A list of a few entries always fits.
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the file up to [`known_version`]; refuses a file from a newer
/// moonwire rather than guessing at a schema it does not know.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let sqlite = |op| move |source| StoreError::Sqlite { op, source };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite("reading user_version"))?;
    let known = known_version();
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (version, sql) in (1_i64..)
        .zip(MIGRATIONS.iter())
        .skip_while(|(v, _)| *v <= found)
    {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("beginning migration"))?;
        tx.execute_batch(sql)
            .map_err(sqlite("applying migration"))?;
        // PRAGMA takes no bound parameters; `version` is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(sqlite("bumping user_version"))?;
        tx.commit().map_err(sqlite("committing migration"))?;
        tracing::debug!(version, "applied store migration");
    }
    Ok(())
}

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
    // 3: the WhatsApp key store (wacore's storage `Backend`), one set of rows
    // per instance. `wa_kv` holds the values looked up by one text key only;
    // the other tables exist because the traits query them by range, batch,
    // prefix, order or age. Every one is listed in `SESSION_TABLES`.
    "CREATE TABLE wa_kv (
        instance TEXT NOT NULL,
        ns TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (instance, ns, key)
    );
    CREATE TABLE wa_prekeys (
        instance TEXT NOT NULL,
        id INTEGER NOT NULL,
        record BLOB NOT NULL,
        uploaded INTEGER NOT NULL,
        PRIMARY KEY (instance, id)
    );
    CREATE TABLE wa_signed_prekeys (
        instance TEXT NOT NULL,
        id INTEGER NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (instance, id)
    );
    CREATE TABLE wa_sync_keys (
        instance TEXT NOT NULL,
        key_id BLOB NOT NULL,
        key_data BLOB NOT NULL,
        fingerprint BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (instance, key_id)
    );
    CREATE TABLE wa_mutation_macs (
        instance TEXT NOT NULL,
        name TEXT NOT NULL,
        index_mac BLOB NOT NULL,
        value_mac BLOB NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (instance, name, index_mac)
    );
    CREATE TABLE wa_sender_key_devices (
        instance TEXT NOT NULL,
        group_jid TEXT NOT NULL,
        device_jid TEXT NOT NULL,
        has_key INTEGER NOT NULL,
        PRIMARY KEY (instance, group_jid, device_jid)
    );
    CREATE INDEX wa_sender_key_devices_by_device ON wa_sender_key_devices (instance, device_jid);
    CREATE TABLE wa_lid_mappings (
        instance TEXT NOT NULL,
        lid TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        learning_source TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (instance, lid)
    );
    CREATE INDEX wa_lid_mappings_by_phone ON wa_lid_mappings (instance, phone_number, seq);
    CREATE TABLE wa_base_keys (
        instance TEXT NOT NULL,
        address TEXT NOT NULL,
        message_id TEXT NOT NULL,
        base_key BLOB NOT NULL,
        PRIMARY KEY (instance, address, message_id)
    );
    CREATE TABLE wa_tc_tokens (
        instance TEXT NOT NULL,
        jid TEXT NOT NULL,
        token BLOB NOT NULL,
        token_timestamp INTEGER NOT NULL,
        sender_timestamp INTEGER,
        PRIMARY KEY (instance, jid)
    );
    CREATE TABLE wa_sent_messages (
        instance TEXT NOT NULL,
        chat_jid TEXT NOT NULL,
        message_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (instance, chat_jid, message_id)
    );
    CREATE INDEX wa_sent_messages_by_age ON wa_sent_messages (instance, created_at);
    CREATE TABLE wa_pending_inbound (
        instance TEXT NOT NULL,
        chat TEXT NOT NULL,
        sender TEXT NOT NULL,
        id TEXT NOT NULL,
        message BLOB NOT NULL,
        inserted_at INTEGER NOT NULL,
        PRIMARY KEY (instance, chat, sender, id)
    );
    CREATE TABLE wa_msg_secrets (
        instance TEXT NOT NULL,
        chat TEXT NOT NULL,
        sender TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        secret BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        message_ts INTEGER NOT NULL,
        PRIMARY KEY (instance, chat, sender, msg_id)
    );",
    // 4: the cause of the last close (e.g. the DNS or TLS error of a failed
    // dial); who made the instance, so a restart brings back the API's own
    // (only the API ever issued tokens, so rows with one were made by it);
    // and whether a simulated account waits for a scan when it pairs.
    "ALTER TABLE instances ADD COLUMN last_reason_message TEXT;
    ALTER TABLE instances ADD COLUMN created_by TEXT NOT NULL DEFAULT 'config';
    ALTER TABLE instances ADD COLUMN manual_scan INTEGER NOT NULL DEFAULT 0;
    UPDATE instances SET created_by = 'api' WHERE name IN (SELECT instance FROM api_tokens);",
    // 5: durable delivery. The inbox holds each message that arrived, under
    // the (chat, sender, id) a redelivery repeats, committed before the
    // server's ack; `handled_at` is set once the scripts have run for it.
    // The outbox holds every send from the moment it has an id until it is
    // sent or failed. `seq` orders both. Who logged out goes in the row.
    "CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT NOT NULL,
        chat TEXT NOT NULL,
        sender TEXT NOT NULL,
        id TEXT NOT NULL,
        message TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        handled_at INTEGER,
        UNIQUE (instance, chat, sender, id)
    );
    CREATE INDEX inbox_unhandled ON inbox (instance, seq) WHERE handled_at IS NULL;
    CREATE INDEX inbox_by_age ON inbox (instance, received_at);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT NOT NULL,
        id TEXT NOT NULL,
        chat TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (instance, id)
    );
    CREATE INDEX outbox_queued ON outbox (instance, seq) WHERE status = 'queued';
    CREATE INDEX outbox_by_age ON outbox (instance, updated_at);
    ALTER TABLE instances ADD COLUMN logout_by TEXT;",
    // 6: the scripts start an instance's messages in `seq` order, so what
    // they handled is one number per instance, `handled_through`, moved
    // once per batch, instead of a rewrite of each row and its entry in
    // an index of the unhandled (two thirds of the inbox's cost per
    // message). `handled_at` stays for rows marked one by one (those no
    // script runs for). Unhandled rows are found by walking `seq` from
    // the mark, so the partial index goes; pruning by age walks `seq` too
    // (it grows with `received_at`), so the age index goes as well.
    "CREATE TABLE inbox_progress (
        instance TEXT PRIMARY KEY,
        handled_through INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO inbox_progress (instance, handled_through)
        SELECT instance, COALESCE(MIN(CASE WHEN handled_at IS NULL THEN seq END) - 1, MAX(seq))
        FROM inbox GROUP BY instance;
    DROP INDEX inbox_unhandled;
    DROP INDEX inbox_by_age;",
];

/// The tables of an instance's messages in transit: deleted with its
/// session (a logout) and with the instance, but not session data (an
/// inbox row does not make an instance paired).
pub const DELIVERY_TABLES: &[&str] = &["inbox", "inbox_progress", "outbox"];

/// Every table holding an instance's protocol/session data, each with an
/// `instance` column. Logging out and deleting an instance clear exactly these,
/// so any new per-instance protocol table (e.g. the WhatsApp key store's) MUST
/// be added here, or its rows would outlive the session they belong to.
pub const SESSION_TABLES: &[&str] = &[
    "session",
    "wa_kv",
    "wa_prekeys",
    "wa_signed_prekeys",
    "wa_sync_keys",
    "wa_mutation_macs",
    "wa_sender_key_devices",
    "wa_lid_mappings",
    "wa_base_keys",
    "wa_tc_tokens",
    "wa_sent_messages",
    "wa_pending_inbound",
    "wa_msg_secrets",
];

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

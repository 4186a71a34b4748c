//! moonwire's one SQLite file: instance status, session data, script
//! key-values and a bounded journal.
//!
//! Every method returns its failure instead of logging it: a status or session
//! write that silently vanished would make the next start-up lie about what
//! happened, so the caller decides whether to retry.

mod delivery;
#[cfg(test)]
mod delivery_props;
#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod instance_tests;
mod instances;
mod schema;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::lifecycle::StatusRow;

pub use delivery::{
    InboxItem, InboxRow, KvWrite, OutboxItem, OutboxRow, Pruned, SendOutcome, SendRecord,
    SendStatus,
};
pub use instances::{CreatedBy, InstanceRow, NewInstance, Reconciled};
pub use schema::{DELIVERY_TABLES, SESSION_TABLES};

use delivery::delete_delivery;

use instances::update_status;

/// The journal keeps at most about this many rows (plus up to
/// [`JOURNAL_TRIM_EVERY`] between trims); older ones are dropped.
pub const JOURNAL_LIMIT: usize = 10_000;

/// Trimming on every insert would cost a DELETE per event; every 100th id is
/// enough to keep the table bounded.
pub const JOURNAL_TRIM_EVERY: i64 = 100;

const JOURNAL_LIMIT_SQL: i64 = JOURNAL_LIMIT as i64;

/// How long a statement waits for a lock held by another connection before
/// failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL pages (4 KiB) written before a checkpoint: the WAL file grows to
/// about 40 MiB before it is copied back and reused.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// Everything that can go wrong in the store. Each variant says what was being
/// done and why it failed, so a log line alone is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op}: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("opening store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Json {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A protocol client from before a logout touched the key store; its
    /// session's keys are gone and must stay gone.
    #[error("{op}: the session of {instance:?} this client belonged to has ended")]
    SessionEnded { op: &'static str, instance: String },
    /// A stored value this code cannot read back. `instance` names the row: an
    /// instance name, or `journal#<id>` for a journal row.
    #[error("store row {instance:?}: column {column} holds unreadable value {value:?}")]
    Corrupt {
        instance: String,
        column: &'static str,
        value: String,
    },
    #[error("no such instance: {0:?}")]
    NoSuchInstance(String),
    #[error("instance {0:?} already exists")]
    Exists(String),
    /// The file was written by a newer moonwire; migrating "down" is guesswork.
    #[error(
        "store schema version {found} is newer than this moonwire knows ({known}); upgrade moonwire"
    )]
    TooNew { found: i64, known: i64 },
    /// SQLite integers are signed 64-bit; a larger timestamp cannot be stored.
    #[error("{op}: {column} value {value} does not fit in a 64-bit signed integer")]
    OutOfRange {
        op: &'static str,
        column: &'static str,
        value: u64,
    },
}

/// Wraps a rusqlite error with the operation that hit it.
fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}

fn json_err(op: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| StoreError::Json { op, source }
}

fn corrupt(instance: &str, column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt {
        instance: instance.to_owned(),
        column,
        value: value.to_string(),
    }
}

fn to_sql_int(op: &'static str, column: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { op, column, value })
}

fn from_sql_int(instance: &str, column: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(instance, column, value))
}

/// One journal row.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: u64,
    pub instance: Option<String>,
    pub kind: String,
    pub data: serde_json::Value,
}

fn has_session(conn: &Connection, op: &'static str, instance: &str) -> Result<bool, StoreError> {
    for table in SESSION_TABLES {
        // Table names come from our own constant list, never from input.
        let found: bool = conn
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE instance = ?1)"),
                [instance],
                |r| r.get(0),
            )
            .map_err(sql(op))?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

fn delete_sessions(conn: &Connection, op: &'static str, instance: &str) -> Result<(), StoreError> {
    for table in SESSION_TABLES {
        conn.execute(
            &format!("DELETE FROM {table} WHERE instance = ?1"),
            [instance],
        )
        .map_err(sql(op))?;
    }
    Ok(())
}

/// The store. One connection behind a mutex: SQLite serialises writers anyway,
/// and a single connection keeps transactions simple. Share it in an `Arc`.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// Per instance, how many sessions have ended in this process. A key
    /// store handle remembers the epoch it was made in, so a protocol client
    /// still winding down after a logout (its disconnect flushes device
    /// state) cannot write the deleted keys back. Locked only under `conn`
    /// or alone, never the other way round.
    epochs: Mutex<std::collections::HashMap<String, u64>>,
}

impl Store {
    /// Opens (creating if needed) the file at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                op: "creating store directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::setup(conn)
    }

    /// A private, empty in-memory store, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(sql("opening in-memory store"))?;
        Store::setup(conn)
    }

    fn setup(mut conn: Connection) -> Result<Store, StoreError> {
        // First, so the pragmas below wait for another process's lock too.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting busy timeout"))?;
        // WAL lets readers run during a write; NORMAL is durable across an
        // application crash (only an OS crash may lose the last commits).
        // journal_mode answers with the mode in force ("memory" in memory).
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql("setting journal_mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("setting synchronous"))?;
        // A checkpoint copies the WAL into the file and syncs it, inside
        // whichever commit crosses the limit; at the default 1000 pages its sync
        // was a large share of the inbox's commits (profiled). Fewer,
        // larger checkpoints copy a page rewritten many times once. Each
        // commit is as durable as before: this only says when it is copied.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(sql("setting wal_autocheckpoint"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enabling foreign_keys"))?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            epochs: Default::default(),
        })
    }

    /// A panic while holding the lock cannot leave a half-done write behind
    /// (an open transaction rolls back when dropped during unwinding), so a
    /// poisoned mutex is safe to keep using.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection under the store's lock, naming `op` in any
    /// error. Tests use it to look at (or break) the file directly.
    #[cfg(test)]
    pub(crate) fn with_conn<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        f(&mut self.conn()).map_err(sql(op))
    }

    /// Runs `f` on the connection under the store's lock for the WhatsApp
    /// key store, whose tables live in this file so that
    /// [`Store::end_session`] clears them in the same transaction as the
    /// status write; but only while `instance`'s session is still the one of
    /// `epoch` (see [`Store::session_epoch`]), checked under the lock
    /// `end_session` holds, so nothing lands after its delete. `f` must not
    /// block on anything but SQLite.
    pub(crate) fn with_session_conn<R>(
        &self,
        op: &'static str,
        instance: &str,
        epoch: u64,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut conn = self.conn();
        if self.session_epoch(instance) != epoch {
            return Err(StoreError::SessionEnded {
                op,
                instance: instance.to_string(),
            });
        }
        f(&mut conn).map_err(sql(op))
    }

    /// Which session of `instance` is current: bumped by every
    /// [`Store::end_session`].
    pub fn session_epoch(&self, instance: &str) -> u64 {
        self.epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(instance)
            .copied()
            .unwrap_or(0)
    }

    pub fn session_put(&self, instance: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO session (instance, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (instance, key) DO UPDATE SET value = excluded.value",
                params![instance, key, value],
            )
            .map_err(sql("session_put"))?;
        Ok(())
    }

    pub fn session_get(&self, instance: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()
            .query_row(
                "SELECT value FROM session WHERE instance = ?1 AND key = ?2",
                [instance, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("session_get"))
    }

    /// Whether the instance has any row in any [`SESSION_TABLES`] table, i.e.
    /// could reconnect without pairing again.
    pub fn session_exists(&self, instance: &str) -> Result<bool, StoreError> {
        has_session(&self.conn(), "session_exists", instance)
    }

    /// Deletes the instance's session data, its inbox and outbox, and writes
    /// its status in one transaction: a status saying "logged out" next to a
    /// live session (or the reverse) must never be observable, even after a
    /// crash, and nothing of the old account's messages may outlive it.
    pub fn end_session(&self, instance: &str, row: &StatusRow) -> Result<(), StoreError> {
        const OP: &str = "end_session";
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        delete_sessions(&tx, OP, instance)?;
        delete_delivery(&tx, OP, instance)?;
        delivery::mark_all_handled(&tx, OP, instance)?;
        // On error the transaction is dropped, rolling the deletes back.
        update_status(&tx, OP, instance, row)?;
        tx.commit().map_err(sql(OP))?;
        // Still under the connection lock: no stale handle writes between
        // the commit and this.
        *self
            .epochs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(instance.to_string())
            .or_default() += 1;
        Ok(())
    }

    pub fn kv_get(
        &self,
        instance: &str,
        script: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        const OP: &str = "kv_get";
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT value FROM kv WHERE instance = ?1 AND script = ?2 AND key = ?3",
                [instance, script, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(OP))?;
        text.map(|t| serde_json::from_str(&t).map_err(json_err(OP)))
            .transpose()
    }

    pub fn kv_set(
        &self,
        instance: &str,
        script: &str,
        key: &str,
        value: &serde_json::Value,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        const OP: &str = "kv_set";
        let text = serde_json::to_string(value).map_err(json_err(OP))?;
        let now = to_sql_int(OP, "updated_at", now_ms)?;
        self.conn()
            .execute(
                "INSERT INTO kv (instance, script, key, value, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (instance, script, key) \
                 DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![instance, script, key, text, now],
            )
            .map_err(sql(OP))?;
        Ok(())
    }

    /// Returns whether the key existed.
    pub fn kv_delete(&self, instance: &str, script: &str, key: &str) -> Result<bool, StoreError> {
        let deleted = self
            .conn()
            .execute(
                "DELETE FROM kv WHERE instance = ?1 AND script = ?2 AND key = ?3",
                [instance, script, key],
            )
            .map_err(sql("kv_delete"))?;
        Ok(deleted > 0)
    }

    /// The script's keys for this instance, sorted.
    pub fn kv_keys(&self, instance: &str, script: &str) -> Result<Vec<String>, StoreError> {
        const OP: &str = "kv_keys";
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT key FROM kv WHERE instance = ?1 AND script = ?2 ORDER BY key")
            .map_err(sql(OP))?;
        stmt.query_map([instance, script], |r| r.get(0))
            .map_err(sql(OP))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(sql(OP))
    }

    /// Appends an event; every [`JOURNAL_TRIM_EVERY`]th id also drops rows
    /// beyond the newest [`JOURNAL_LIMIT`], in the same transaction.
    pub fn journal_append(
        &self,
        at_ms: u64,
        instance: Option<&str>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), StoreError> {
        const OP: &str = "journal_append";
        let text = serde_json::to_string(data).map_err(json_err(OP))?;
        let at = to_sql_int(OP, "at", at_ms)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        tx.execute(
            "INSERT INTO journal (at, instance, kind, data) VALUES (?1, ?2, ?3, ?4)",
            params![at, instance, kind, text],
        )
        .map_err(sql(OP))?;
        if tx.last_insert_rowid() % JOURNAL_TRIM_EVERY == 0 {
            tx.execute(
                "DELETE FROM journal WHERE id <= (SELECT MAX(id) FROM journal) - ?1",
                [JOURNAL_LIMIT_SQL],
            )
            .map_err(sql(OP))?;
        }
        tx.commit().map_err(sql(OP))
    }

    /// Up to `limit` entries, newest first.
    pub fn journal_recent(&self, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        const OP: &str = "journal_recent";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, at, instance, kind, data FROM journal ORDER BY id DESC LIMIT ?1")
            .map_err(sql(OP))?;
        let raws = stmt
            .query_map([limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(sql(OP))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(OP))?;
        raws.into_iter()
            .map(|(id, at, instance, kind, data)| {
                Ok(JournalEntry {
                    id,
                    at: from_sql_int(&format!("journal#{id}"), "at", at)?,
                    instance,
                    kind,
                    data: serde_json::from_str(&data).map_err(json_err(OP))?,
                })
            })
            .collect()
    }
}

//! The `instances` table and the API tokens that belong to its rows.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::to_sql_int;
use super::{
    Store, StoreError, corrupt, delete_delivery, delete_sessions, from_sql_int, has_session, sql,
};
use crate::lifecycle::{ConnectionStatus, LogoutBy, ReasonKind, StateName, StatusRow};

/// Who made an instance. The config file is the truth for the instances it
/// names; the API's own instances live only in their rows, so a restart
/// must find them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreatedBy {
    /// An `[[instance]]` of the config file, or `moonwire console`'s own.
    Config,
    /// `POST /v1/instances`.
    Api,
}

impl CreatedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            CreatedBy::Config => "config",
            CreatedBy::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<CreatedBy> {
        match s {
            "config" => Some(CreatedBy::Config),
            "api" => Some(CreatedBy::Api),
            _ => None,
        }
    }
}

/// One `instances` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub name: String,
    pub channel: String,
    pub status: StatusRow,
    /// Unix milliseconds.
    pub created_at: u64,
    pub created_by: CreatedBy,
    /// A simulated (console) account that waits for a scan when it pairs.
    pub manual_scan: bool,
}

impl InstanceRow {
    /// The row as the HTTP API shows it (flat, Evolution-style field names).
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.status;
        serde_json::json!({
            "name": self.name,
            "channel": self.channel,
            "connection_status": s.connection_status.as_str(),
            "state": s.state.as_str(),
            "last_reason_code": s.last_reason_code,
            "last_reason_kind": s.last_reason_kind.map(ReasonKind::as_str),
            "last_reason_message": s.last_reason_message,
            "last_change_at": s.last_change_at,
            "jid": s.jid,
            "push_name": s.push_name,
            "logout_by": s.logout_by.map(LogoutBy::as_str),
            "created_at": self.created_at,
            "created_by": self.created_by.as_str(),
        })
    }
}

/// What [`Store::create_instance`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance<'a> {
    pub name: &'a str,
    pub channel: &'a str,
    pub created_by: CreatedBy,
    pub manual_scan: bool,
    /// The digest of the instance's API token, stored with the row.
    pub token_hash: Option<&'a str>,
}

/// An instance that [`Store::reconcile`] found open or connecting after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub name: String,
    pub previous_state: StateName,
    /// Whether it still has session data, i.e. can reconnect without pairing.
    pub has_session: bool,
}

const INSTANCE_COLUMNS: &str = "name, channel, connection_status, state, last_reason_code, \
     last_reason_kind, last_change_at, jid, push_name, created_at, last_reason_message, \
     created_by, manual_scan, logout_by";

/// An `instances` row as SQLite returned it, before its text is trusted.
struct RawInstance {
    name: String,
    channel: String,
    connection_status: String,
    state: String,
    last_reason_code: Option<i64>,
    last_reason_kind: Option<String>,
    last_change_at: i64,
    jid: Option<String>,
    push_name: Option<String>,
    created_at: i64,
    last_reason_message: Option<String>,
    created_by: String,
    manual_scan: bool,
    logout_by: Option<String>,
}

impl RawInstance {
    /// Reads [`INSTANCE_COLUMNS`], in that order.
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawInstance> {
        Ok(RawInstance {
            name: r.get(0)?,
            channel: r.get(1)?,
            connection_status: r.get(2)?,
            state: r.get(3)?,
            last_reason_code: r.get(4)?,
            last_reason_kind: r.get(5)?,
            last_change_at: r.get(6)?,
            jid: r.get(7)?,
            push_name: r.get(8)?,
            created_at: r.get(9)?,
            last_reason_message: r.get(10)?,
            created_by: r.get(11)?,
            manual_scan: r.get(12)?,
            logout_by: r.get(13)?,
        })
    }

    /// Parses the text columns; a value no variant matches is [`StoreError::Corrupt`].
    fn parse(self) -> Result<InstanceRow, StoreError> {
        let name = self.name.as_str();
        let connection_status = ConnectionStatus::parse(&self.connection_status)
            .ok_or_else(|| corrupt(name, "connection_status", &self.connection_status))?;
        let state =
            StateName::parse(&self.state).ok_or_else(|| corrupt(name, "state", &self.state))?;
        let last_reason_code = self
            .last_reason_code
            .map(|c| u16::try_from(c).map_err(|_| corrupt(name, "last_reason_code", c)))
            .transpose()?;
        let last_reason_kind = self
            .last_reason_kind
            .as_deref()
            .map(|k| ReasonKind::parse(k).ok_or_else(|| corrupt(name, "last_reason_kind", k)))
            .transpose()?;
        let created_by = CreatedBy::parse(&self.created_by)
            .ok_or_else(|| corrupt(name, "created_by", &self.created_by))?;
        let logout_by = self
            .logout_by
            .as_deref()
            .map(|b| LogoutBy::parse(b).ok_or_else(|| corrupt(name, "logout_by", b)))
            .transpose()?;
        let last_change_at = from_sql_int(name, "last_change_at", self.last_change_at)?;
        let created_at = from_sql_int(name, "created_at", self.created_at)?;
        Ok(InstanceRow {
            status: StatusRow {
                connection_status,
                state,
                last_reason_code,
                last_reason_kind,
                last_reason_message: self.last_reason_message,
                last_change_at,
                jid: self.jid,
                push_name: self.push_name,
                logout_by,
            },
            name: self.name,
            channel: self.channel,
            created_at,
            created_by,
            manual_scan: self.manual_scan,
        })
    }
}

fn read_instance(
    conn: &Connection,
    op: &'static str,
    name: &str,
) -> Result<Option<InstanceRow>, StoreError> {
    conn.query_row(
        &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE name = ?1"),
        [name],
        RawInstance::from_row,
    )
    .optional()
    .map_err(sql(op))?
    .map(RawInstance::parse)
    .transpose()
}

/// Overwrites an instance's status columns; a missing row is an error, never
/// an implicit insert, so a typo cannot conjure an instance.
pub(super) fn update_status(
    conn: &Connection,
    op: &'static str,
    name: &str,
    row: &StatusRow,
) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE instances SET connection_status = ?2, state = ?3, last_reason_code = ?4, \
             last_reason_kind = ?5, last_change_at = ?6, jid = ?7, push_name = ?8, \
             last_reason_message = ?9, logout_by = ?10 WHERE name = ?1",
            params![
                name,
                row.connection_status.as_str(),
                row.state.as_str(),
                row.last_reason_code,
                row.last_reason_kind.map(ReasonKind::as_str),
                to_sql_int(op, "last_change_at", row.last_change_at)?,
                row.jid,
                row.push_name,
                row.last_reason_message,
                row.logout_by.map(LogoutBy::as_str),
            ],
        )
        .map_err(sql(op))?;
    if changed == 0 {
        return Err(StoreError::NoSuchInstance(name.to_owned()));
    }
    Ok(())
}

impl Store {
    /// Returns the instance, creating it idle and closed if it does not exist.
    /// An existing row is returned as is: its channel is not changed.
    pub fn ensure_instance(
        &self,
        name: &str,
        channel: &str,
        now_ms: u64,
    ) -> Result<InstanceRow, StoreError> {
        const OP: &str = "ensure_instance";
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        let now = to_sql_int(OP, "created_at", now_ms)?;
        tx.execute(
            "INSERT INTO instances (name, channel, connection_status, state, last_change_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (name) DO NOTHING",
            params![
                name,
                channel,
                ConnectionStatus::Close.as_str(),
                StateName::Idle.as_str(),
                now
            ],
        )
        .map_err(sql(OP))?;
        super::delivery::ensure_mark(&tx, OP, name)?;
        let row = read_instance(&tx, OP, name)?
            .ok_or_else(|| StoreError::NoSuchInstance(name.to_owned()))?;
        tx.commit().map_err(sql(OP))?;
        Ok(row)
    }

    /// Creates a new instance row, with its token digest if one is given, in
    /// one transaction: a token without its row (or the reverse) is never
    /// observable. [`StoreError::Exists`] if the name is taken.
    pub fn create_instance(
        &self,
        new: &NewInstance<'_>,
        now_ms: u64,
    ) -> Result<InstanceRow, StoreError> {
        const OP: &str = "create_instance";
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        let now = to_sql_int(OP, "created_at", now_ms)?;
        if read_instance(&tx, OP, new.name)?.is_some() {
            return Err(StoreError::Exists(new.name.to_owned()));
        }
        tx.execute(
            "INSERT INTO instances (name, channel, connection_status, state, last_change_at, \
             created_at, created_by, manual_scan) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
            params![
                new.name,
                new.channel,
                ConnectionStatus::Close.as_str(),
                StateName::Idle.as_str(),
                now,
                new.created_by.as_str(),
                new.manual_scan,
            ],
        )
        .map_err(sql(OP))?;
        if let Some(hash) = new.token_hash {
            tx.execute(
                "INSERT INTO api_tokens (hash, instance, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(instance) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at",
                params![hash, new.name, now],
            )
            .map_err(sql(OP))?;
        }
        super::delivery::ensure_mark(&tx, OP, new.name)?;
        let row = read_instance(&tx, OP, new.name)?
            .ok_or_else(|| StoreError::NoSuchInstance(new.name.to_owned()))?;
        tx.commit().map_err(sql(OP))?;
        Ok(row)
    }

    /// Makes an API-created instance a configured one (the config file now
    /// names it); its token and session stay. Returns whether it changed.
    pub fn adopt_instance(&self, name: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE instances SET created_by = ?2 WHERE name = ?1 AND created_by = ?3",
                params![name, CreatedBy::Config.as_str(), CreatedBy::Api.as_str()],
            )
            .map_err(sql("adopt_instance"))?;
        Ok(changed > 0)
    }

    /// Persists an instance's status; [`StoreError::NoSuchInstance`] if absent.
    pub fn write_status(&self, name: &str, row: &StatusRow) -> Result<(), StoreError> {
        update_status(&self.conn(), "write_status", name, row)
    }

    pub fn instance(&self, name: &str) -> Result<Option<InstanceRow>, StoreError> {
        read_instance(&self.conn(), "reading instance", name)
    }

    /// All instances, ordered by name.
    pub fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        const OP: &str = "listing instances";
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY name"
            ))
            .map_err(sql(OP))?;
        let raws = stmt
            .query_map([], RawInstance::from_row)
            .map_err(sql(OP))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(OP))?;
        raws.into_iter().map(RawInstance::parse).collect()
    }

    /// Removes the instance with its session data and script key-values.
    /// Returns whether the instance row existed. The journal keeps its history.
    pub fn delete_instance(&self, name: &str) -> Result<bool, StoreError> {
        const OP: &str = "delete_instance";
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        delete_sessions(&tx, OP, name)?;
        delete_delivery(&tx, OP, name)?;
        tx.execute("DELETE FROM kv WHERE instance = ?1", [name])
            .map_err(sql(OP))?;
        tx.execute("DELETE FROM api_tokens WHERE instance = ?1", [name])
            .map_err(sql(OP))?;
        let deleted = tx
            .execute("DELETE FROM instances WHERE name = ?1", [name])
            .map_err(sql(OP))?;
        tx.commit().map_err(sql(OP))?;
        Ok(deleted > 0)
    }

    /// Sets (or replaces) the instance's API token digest.
    pub fn set_token_hash(
        &self,
        instance: &str,
        hash: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        const OP: &str = "set_token_hash";
        let now = to_sql_int(OP, "created_at", now_ms)?;
        self.conn()
            .execute(
                "INSERT INTO api_tokens (hash, instance, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(instance) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at",
                params![hash, instance, now],
            )
            .map_err(sql(OP))?;
        Ok(())
    }

    /// Which instance a token digest belongs to, if any.
    pub fn token_instance(&self, hash: &str) -> Result<Option<String>, StoreError> {
        const OP: &str = "token_instance";
        self.conn()
            .query_row(
                "SELECT instance FROM api_tokens WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(OP))
    }

    /// Start-up repair: a row still saying open/connecting belongs to a
    /// process that died without closing it. Marks each such row closed with
    /// reason `interrupted` and reports it, so the host can reconnect those
    /// that kept a session. Other rows are untouched.
    pub fn reconcile(&self, now_ms: u64) -> Result<Vec<Reconciled>, StoreError> {
        const OP: &str = "reconcile";
        let now = to_sql_int(OP, "last_change_at", now_ms)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        let stale = {
            let mut stmt = tx
                .prepare("SELECT name, state FROM instances WHERE connection_status IN (?1, ?2) ORDER BY name")
                .map_err(sql(OP))?;
            stmt.query_map(
                [
                    ConnectionStatus::Open.as_str(),
                    ConnectionStatus::Connecting.as_str(),
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(sql(OP))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(OP))?
        };
        let mut out = Vec::with_capacity(stale.len());
        for (name, state) in stale {
            let previous_state =
                StateName::parse(&state).ok_or_else(|| corrupt(&name, "state", &state))?;
            let has_session = has_session(&tx, OP, &name)?;
            tx.execute(
                "UPDATE instances SET connection_status = ?2, state = ?3, last_reason_code = NULL, \
                 last_reason_kind = ?4, last_reason_message = NULL, last_change_at = ?5, logout_by = NULL \
                 WHERE name = ?1",
                params![
                    name,
                    ConnectionStatus::Close.as_str(),
                    StateName::Closed.as_str(),
                    ReasonKind::Interrupted.as_str(),
                    now
                ],
            )
            .map_err(sql(OP))?;
            out.push(Reconciled {
                name,
                previous_state,
                has_session,
            });
        }
        tx.commit().map_err(sql(OP))?;
        Ok(out)
    }
}

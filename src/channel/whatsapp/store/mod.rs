//! The WhatsApp key store: wacore's storage `Backend` traits on rusqlite, in
//! moonwire's own database file.
//!
//! Every row carries the instance it belongs to and every table is listed in
//! [`crate::store::SESSION_TABLES`], so a logout deletes the instance's keys in
//! the same transaction that writes its `logged_out` status (the logout
//! invariant in ARCHITECTURE.md), and `session_exists` sees them.
//!
//! Semantics follow wacore's `InMemoryBackend` (merges, batches, return values,
//! what a miss returns); the few places that differ say why. Values only ever
//! looked up by one text key share the generic `wa_kv` table; the others have
//! their own tables because the traits query them by range, batch, prefix,
//! order or age. Structured values wacore derives serde for (the device, app
//! state versions, device lists) are stored as JSON: serde's field defaults
//! keep old rows readable when wacore adds a field.
//!
//! Each method does its SQLite work synchronously under the store's lock and
//! never awaits while holding it: the statements are short, local and indexed.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::Device;
use wacore::store::error::{Result as WaResult, StoreError as WaError};
use wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow, ProtocolStore,
    SignalStore, TcTokenEntry,
};

use crate::store::Store;

mod app_sync;
mod device;
mod protocol;
mod signal;
#[cfg(test)]
mod tests;

// `wa_kv` namespaces.
const NS_IDENTITY: &str = "identity";
const NS_SESSION: &str = "session";
const NS_SENDER_KEY: &str = "sender_key";
const NS_APP_STATE_VERSION: &str = "app_state_version";
const NS_DEVICE_LIST: &str = "device_list";
const NS_GROUP_METADATA: &str = "group_metadata";
const NS_DEVICE: &str = "device";
/// moonwire's own: the polls this device sent (options and secret), so a
/// vote on one can be read after a restart. Deleted with the session.
const NS_POLL: &str = "moonwire_poll";

/// The key of the device row: an instance is exactly one WhatsApp device.
const DEVICE_KEY: &str = "";

/// What [`DeviceStore::create`] returns. The id only matters to stores that
/// hold several devices; here the instance name is the key.
pub const DEVICE_ID: i32 = 1;

/// At this many retained sent messages per instance the oldest are dropped
/// down to three quarters, like wacore's in-memory store. The client's
/// keepalive sweep prunes by age; this only bounds a burst between sweeps.
const MAX_SENT_MESSAGES: i64 = 4096;

/// A value that would not encode to or decode from its JSON column, with the
/// operation that hit it.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct CodecError {
    op: &'static str,
    #[source]
    source: serde_json::Error,
}

fn encode<T: Serialize>(op: &'static str, value: &T) -> WaResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|source| WaError::Serialization(Box::new(CodecError { op, source })))
}

fn decode<T: DeserializeOwned>(op: &'static str, bytes: &[u8]) -> WaResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|source| WaError::Serialization(Box::new(CodecError { op, source })))
}

/// Saturates a deleted-row count into the traits' `u32`.
fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One instance's view of the key store. Cheap to clone; hand the client an
/// `Arc<WaStore>` as its backend.
#[derive(Debug, Clone)]
pub struct WaStore {
    store: Arc<Store>,
    instance: String,
    /// The session this handle belongs to: once a logout ends it, every
    /// read and write fails instead of resurrecting deleted keys.
    epoch: u64,
}

impl WaStore {
    pub fn new(store: Arc<Store>, instance: impl Into<String>) -> WaStore {
        let instance = instance.into();
        let epoch = store.session_epoch(&instance);
        WaStore {
            store,
            instance,
            epoch,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether pairing finished: the stored device carries the account's
    /// phone number. The device itself (keys made at the first dial) exists
    /// long before that, so having session rows does not mean paired.
    pub fn is_registered(&self) -> WaResult<bool> {
        const OP: &str = "device_registered";
        let Some(bytes) = self.run(OP, |c, i| kv_get(c, i, NS_DEVICE, DEVICE_KEY))? else {
            return Ok(false);
        };
        let device: Device = decode(OP, &bytes)?;
        Ok(device.pn.is_some())
    }

    /// Keeps what a vote on the poll `id` needs to be read.
    pub fn put_poll(&self, id: &str, record: &[u8]) -> WaResult<()> {
        self.run("put_poll", |c, i| kv_put(c, i, NS_POLL, id, record))
    }

    /// What [`WaStore::put_poll`] kept for the poll `id`.
    pub fn get_poll(&self, id: &str) -> WaResult<Option<Vec<u8>>> {
        self.run("get_poll", |c, i| kv_get(c, i, NS_POLL, id))
    }

    /// Runs `f` under the store's lock with this instance's name.
    fn run<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection, &str) -> rusqlite::Result<R>,
    ) -> WaResult<R> {
        self.store
            .with_session_conn(op, &self.instance, self.epoch, |conn| {
                f(conn, &self.instance)
            })
            .map_err(|e| WaError::Database(Box::new(e)))
    }

    /// Like [`WaStore::run`], in one IMMEDIATE transaction: a batch commits
    /// once (all or nothing), and a read-modify-write cannot interleave with
    /// another connection's write to the same file.
    fn run_tx<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection, &str) -> rusqlite::Result<R>,
    ) -> WaResult<R> {
        self.store
            .with_session_conn(op, &self.instance, self.epoch, |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx, &self.instance)?;
                tx.commit()?;
                Ok(out)
            })
            .map_err(|e| WaError::Database(Box::new(e)))
    }
}

fn kv_get(
    conn: &Connection,
    instance: &str,
    ns: &str,
    key: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM wa_kv WHERE instance = ?1 AND ns = ?2 AND key = ?3")?
        .query_row(params![instance, ns, key], |r| r.get(0))
        .optional()
}

fn kv_exists(conn: &Connection, instance: &str, ns: &str, key: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM wa_kv WHERE instance = ?1 AND ns = ?2 AND key = ?3)",
    )?
    .query_row(params![instance, ns, key], |r| r.get(0))
}

fn kv_put(
    conn: &Connection,
    instance: &str,
    ns: &str,
    key: &str,
    value: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO wa_kv (instance, ns, key, value) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (instance, ns, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![instance, ns, key, value])?;
    Ok(())
}

fn kv_delete(conn: &Connection, instance: &str, ns: &str, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM wa_kv WHERE instance = ?1 AND ns = ?2 AND key = ?3")?
        .execute(params![instance, ns, key])?;
    Ok(())
}

/// Whether any key in `ns` is `user@…` or `user:…` (a Signal address of any
/// of the user's devices). Two key ranges rather than LIKE, so the primary key
/// index answers it and `_`/`%` in `user` mean nothing: `'@' + 1` is `'A'` and
/// `':' + 1` is `';'`, and text compares bytewise.
fn kv_has_user(conn: &Connection, instance: &str, ns: &str, user: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM wa_kv WHERE instance = ?1 AND ns = ?2 AND \
         ((key >= ?3 AND key < ?4) OR (key >= ?5 AND key < ?6)))",
    )?
    .query_row(
        params![
            instance,
            ns,
            format!("{user}@"),
            format!("{user}A"),
            format!("{user}:"),
            format!("{user};"),
        ],
        |r| r.get(0),
    )
}

fn put_prekey(
    conn: &Connection,
    instance: &str,
    id: u32,
    record: &[u8],
    uploaded: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO wa_prekeys (instance, id, record, uploaded) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (instance, id) DO UPDATE SET record = excluded.record, uploaded = excluded.uploaded",
    )?
    .execute(params![instance, id, record, uploaded])?;
    Ok(())
}

fn get_prekey(conn: &Connection, instance: &str, id: u32) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT record FROM wa_prekeys WHERE instance = ?1 AND id = ?2")?
        .query_row(params![instance, id], |r| r.get(0))
        .optional()
}

fn get_mutation_mac(
    conn: &Connection,
    instance: &str,
    name: &str,
    index_mac: &[u8],
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(
        "SELECT value_mac FROM wa_mutation_macs WHERE instance = ?1 AND name = ?2 AND index_mac = ?3",
    )?
    .query_row(params![instance, name, index_mac], |r| r.get(0))
    .optional()
}

const LID_COLUMNS: &str = "lid, phone_number, created_at, updated_at, learning_source";

fn lid_row(r: &Row<'_>) -> rusqlite::Result<LidPnMappingEntry> {
    Ok(LidPnMappingEntry {
        lid: r.get(0)?,
        phone_number: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        learning_source: r.get(4)?,
    })
}

fn put_pending_inbound(
    conn: &Connection,
    instance: &str,
    row: &PendingInboundRow<'_>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO wa_pending_inbound (instance, chat, sender, id, message, inserted_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (instance, chat, sender, id) \
         DO UPDATE SET message = excluded.message, inserted_at = excluded.inserted_at",
    )?
    .execute(params![
        instance,
        row.chat,
        row.sender,
        row.id,
        row.message,
        now
    ])?;
    Ok(())
}

fn delete_pending_inbound(
    conn: &Connection,
    instance: &str,
    key: &PendingInboundKey<'_>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM wa_pending_inbound WHERE instance = ?1 AND chat = ?2 AND sender = ?3 AND id = ?4",
    )?
    .execute(params![instance, key.chat, key.sender, key.id])?;
    Ok(())
}

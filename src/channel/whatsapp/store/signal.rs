//! The Signal keys: identities, sessions, pre-keys, sender keys.

use super::*;

#[async_trait]
impl SignalStore for WaStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> WaResult<()> {
        self.run("put_identity", |c, i| {
            kv_put(c, i, NS_IDENTITY, address, &key)
        })
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> WaResult<()> {
        if identities.is_empty() {
            return Ok(());
        }
        self.run_tx("put_identities_batch", |c, i| {
            identities
                .iter()
                .try_for_each(|(address, key)| kv_put(c, i, NS_IDENTITY, address, key))
        })
    }

    async fn load_identity(&self, address: &str) -> WaResult<Option<[u8; 32]>> {
        let raw = self.run("load_identity", |c, i| kv_get(c, i, NS_IDENTITY, address))?;
        raw.map(|v| {
            <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
                WaError::Validation(format!(
                    "load_identity: stored identity for {address:?} is {} bytes, not 32",
                    v.len()
                ))
            })
        })
        .transpose()
    }

    async fn delete_identity(&self, address: &str) -> WaResult<()> {
        self.run("delete_identity", |c, i| {
            kv_delete(c, i, NS_IDENTITY, address)
        })
    }

    async fn get_session(&self, address: &str) -> WaResult<Option<Bytes>> {
        let raw = self.run("get_session", |c, i| kv_get(c, i, NS_SESSION, address))?;
        Ok(raw.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> WaResult<()> {
        self.run("put_session", |c, i| {
            kv_put(c, i, NS_SESSION, address, session)
        })
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> WaResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        self.run_tx("put_sessions_batch", |c, i| {
            sessions
                .iter()
                .try_for_each(|(address, session)| kv_put(c, i, NS_SESSION, address, session))
        })
    }

    async fn delete_session(&self, address: &str) -> WaResult<()> {
        self.run("delete_session", |c, i| {
            kv_delete(c, i, NS_SESSION, address)
        })
    }

    async fn has_session(&self, address: &str) -> WaResult<bool> {
        self.run("has_session", |c, i| kv_exists(c, i, NS_SESSION, address))
    }

    async fn has_signal_state_for_user(&self, user: &str) -> WaResult<bool> {
        self.run("has_signal_state_for_user", |c, i| {
            Ok(kv_has_user(c, i, NS_SESSION, user)? || kv_has_user(c, i, NS_IDENTITY, user)?)
        })
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> WaResult<()> {
        self.run("store_prekey", |c, i| {
            put_prekey(c, i, id, record, uploaded)
        })
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> WaResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run_tx("store_prekeys_batch", |c, i| {
            keys.iter()
                .try_for_each(|(id, record)| put_prekey(c, i, *id, record, uploaded))
        })
    }

    async fn load_prekey(&self, id: u32) -> WaResult<Option<Bytes>> {
        let raw = self.run("load_prekey", |c, i| get_prekey(c, i, id))?;
        Ok(raw.map(Bytes::from))
    }

    /// In the order asked for, skipping ids that are not stored.
    async fn load_prekeys_batch(&self, ids: &[u32]) -> WaResult<Vec<(u32, Bytes)>> {
        self.run("load_prekeys_batch", |c, i| {
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                if let Some(record) = get_prekey(c, i, id)? {
                    out.push((id, Bytes::from(record)));
                }
            }
            Ok(out)
        })
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> WaResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // UPDATE, never upsert: a key consumed since the upload snapshot must
        // stay deleted.
        self.run_tx("mark_prekeys_uploaded", |c, i| {
            let mut stmt = c.prepare_cached(
                "UPDATE wa_prekeys SET uploaded = 1 WHERE instance = ?1 AND id = ?2",
            )?;
            for &id in ids {
                stmt.execute(params![i, id])?;
            }
            Ok(())
        })
    }

    async fn remove_prekey(&self, id: u32) -> WaResult<()> {
        self.run("remove_prekey", |c, i| {
            c.execute(
                "DELETE FROM wa_prekeys WHERE instance = ?1 AND id = ?2",
                params![i, id],
            )
            .map(drop)
        })
    }

    async fn get_max_prekey_id(&self) -> WaResult<u32> {
        self.run("get_max_prekey_id", |c, i| {
            c.query_row(
                "SELECT COALESCE(MAX(id), 0) FROM wa_prekeys WHERE instance = ?1",
                [i],
                |r| r.get(0),
            )
        })
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> WaResult<()> {
        self.run("store_signed_prekey", |c, i| {
            c.execute(
                "INSERT INTO wa_signed_prekeys (instance, id, record) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (instance, id) DO UPDATE SET record = excluded.record",
                params![i, id, record],
            )
            .map(drop)
        })
    }

    async fn load_signed_prekey(&self, id: u32) -> WaResult<Option<Vec<u8>>> {
        self.run("load_signed_prekey", |c, i| {
            c.query_row(
                "SELECT record FROM wa_signed_prekeys WHERE instance = ?1 AND id = ?2",
                params![i, id],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Ordered by id (the in-memory store answers in hash order).
    async fn load_all_signed_prekeys(&self) -> WaResult<Vec<(u32, Vec<u8>)>> {
        self.run("load_all_signed_prekeys", |c, i| {
            let mut stmt = c.prepare(
                "SELECT id, record FROM wa_signed_prekeys WHERE instance = ?1 ORDER BY id",
            )?;
            stmt.query_map([i], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    async fn remove_signed_prekey(&self, id: u32) -> WaResult<()> {
        self.run("remove_signed_prekey", |c, i| {
            c.execute(
                "DELETE FROM wa_signed_prekeys WHERE instance = ?1 AND id = ?2",
                params![i, id],
            )
            .map(drop)
        })
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> WaResult<()> {
        self.run("put_sender_key", |c, i| {
            kv_put(c, i, NS_SENDER_KEY, address, record)
        })
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> WaResult<()> {
        if sender_keys.is_empty() {
            return Ok(());
        }
        self.run_tx("put_sender_keys_batch", |c, i| {
            sender_keys
                .iter()
                .try_for_each(|(address, record)| kv_put(c, i, NS_SENDER_KEY, address, record))
        })
    }

    async fn get_sender_key(&self, address: &str) -> WaResult<Option<Vec<u8>>> {
        self.run("get_sender_key", |c, i| {
            kv_get(c, i, NS_SENDER_KEY, address)
        })
    }

    async fn delete_sender_key(&self, address: &str) -> WaResult<()> {
        self.run("delete_sender_key", |c, i| {
            kv_delete(c, i, NS_SENDER_KEY, address)
        })
    }
}

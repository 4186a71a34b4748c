//! Message secrets and the device row.

use super::*;

#[async_trait]
impl MsgSecretStore for WaStore {
    /// On a key conflict the secret is replaced, the later deadline wins (`0`,
    /// never, beats any) and the later parent time wins: the SQL spelling of
    /// wacore's `merge_msg_secret_expiry` and `merge_msg_secret_message_ts`.
    /// Returns how many entries were written, as the in-memory store does.
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> WaResult<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        self.run_tx("put_msg_secrets", |c, i| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO wa_msg_secrets \
                   (instance, chat, sender, msg_id, secret, expires_at, message_ts) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (instance, chat, sender, msg_id) DO UPDATE SET \
                   secret = excluded.secret, \
                   expires_at = CASE WHEN wa_msg_secrets.expires_at = 0 OR excluded.expires_at = 0 \
                     THEN 0 ELSE MAX(wa_msg_secrets.expires_at, excluded.expires_at) END, \
                   message_ts = MAX(wa_msg_secrets.message_ts, excluded.message_ts)",
            )?;
            for e in &entries {
                stmt.execute(params![
                    i,
                    e.chat.as_ref(),
                    e.sender.as_ref(),
                    e.msg_id.as_ref(),
                    e.secret,
                    e.expires_at,
                    e.message_ts
                ])?;
            }
            Ok(entries.len())
        })
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> WaResult<Option<(Vec<u8>, i64)>> {
        self.run("get_msg_secret_with_ts", |c, i| {
            c.query_row(
                "SELECT secret, message_ts FROM wa_msg_secrets \
                 WHERE instance = ?1 AND chat = ?2 AND sender = ?3 AND msg_id = ?4",
                params![i, chat, sender, msg_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        self.run("delete_expired_msg_secrets", |c, i| {
            c.execute(
                "DELETE FROM wa_msg_secrets WHERE instance = ?1 AND expires_at != 0 AND expires_at <= ?2",
                params![i, cutoff_timestamp],
            )
            .map(count_u32)
        })
    }
}

#[async_trait]
impl DeviceStore for WaStore {
    async fn save(&self, device: &Device) -> WaResult<()> {
        const OP: &str = "save_device";
        let bytes = encode(OP, device)?;
        self.run(OP, |c, i| kv_put(c, i, NS_DEVICE, DEVICE_KEY, &bytes))
    }

    /// The device as saved, with its runtime-only fields (not serialized) set
    /// the way a fresh `Device` has them, as whatsapp-rust's own SQLite store
    /// does: the client applies its overrides to them after loading.
    async fn load(&self) -> WaResult<Option<Device>> {
        const OP: &str = "load_device";
        let Some(bytes) = self.run(OP, |c, i| kv_get(c, i, NS_DEVICE, DEVICE_KEY))? else {
            return Ok(None);
        };
        let mut device: Device = decode(OP, &bytes)?;
        device.device_props = Arc::new(wacore::store::device::DEVICE_PROPS.clone());
        device.client_profile = wacore::client_profile::ClientProfile::web();
        Ok(Some(device))
    }

    async fn exists(&self) -> WaResult<bool> {
        self.run("device_exists", |c, i| {
            kv_exists(c, i, NS_DEVICE, DEVICE_KEY)
        })
    }

    /// Stores a fresh device (new keys) unless one exists, and returns
    /// [`DEVICE_ID`]: an existing device is never replaced.
    async fn create(&self) -> WaResult<i32> {
        const OP: &str = "create_device";
        let bytes = encode(OP, &Device::new())?;
        self.run(OP, |c, i| {
            c.execute(
                "INSERT INTO wa_kv (instance, ns, key, value) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (instance, ns, key) DO NOTHING",
                params![i, NS_DEVICE, DEVICE_KEY, bytes],
            )
        })?;
        Ok(DEVICE_ID)
    }
}

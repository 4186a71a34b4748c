//! Protocol state: device lists, LID mappings, sent messages, tokens, pending keys.

use super::*;

#[async_trait]
impl ProtocolStore for WaStore {
    /// Ordered by device JID.
    async fn get_sender_key_devices(&self, group_jid: &str) -> WaResult<Vec<(String, bool)>> {
        self.run("get_sender_key_devices", |c, i| {
            let mut stmt = c.prepare(
                "SELECT device_jid, has_key FROM wa_sender_key_devices \
                 WHERE instance = ?1 AND group_jid = ?2 ORDER BY device_jid",
            )?;
            stmt.query_map(params![i, group_jid], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    async fn set_sender_key_status(
        &self,
        group_jid: &str,
        entries: &[(&str, bool)],
    ) -> WaResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.run_tx("set_sender_key_status", |c, i| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO wa_sender_key_devices (instance, group_jid, device_jid, has_key) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (instance, group_jid, device_jid) \
                 DO UPDATE SET has_key = excluded.has_key",
            )?;
            for (device_jid, has_key) in entries {
                stmt.execute(params![i, group_jid, device_jid, has_key])?;
            }
            Ok(())
        })
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> WaResult<()> {
        self.run("clear_sender_key_devices", |c, i| {
            c.execute(
                "DELETE FROM wa_sender_key_devices WHERE instance = ?1 AND group_jid = ?2",
                params![i, group_jid],
            )
            .map(drop)
        })
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> WaResult<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        self.run_tx("delete_sender_key_device_rows", |c, i| {
            let mut stmt = c.prepare_cached(
                "DELETE FROM wa_sender_key_devices WHERE instance = ?1 AND device_jid = ?2",
            )?;
            for device_jid in device_jids {
                stmt.execute(params![i, device_jid])?;
            }
            Ok(())
        })
    }

    async fn clear_all_sender_key_devices(&self) -> WaResult<()> {
        self.run("clear_all_sender_key_devices", |c, i| {
            c.execute("DELETE FROM wa_sender_key_devices WHERE instance = ?1", [i])
                .map(drop)
        })
    }

    async fn get_lid_mapping(&self, lid: &str) -> WaResult<Option<LidPnMappingEntry>> {
        self.run("get_lid_mapping", |c, i| {
            c.query_row(
                &format!(
                    "SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE instance = ?1 AND lid = ?2"
                ),
                params![i, lid],
                lid_row,
            )
            .optional()
        })
    }

    /// The most recently written mapping naming this phone number.
    async fn get_pn_mapping(&self, phone: &str) -> WaResult<Option<LidPnMappingEntry>> {
        self.run("get_pn_mapping", |c, i| {
            c.query_row(
                &format!(
                    "SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE instance = ?1 \
                     AND phone_number = ?2 ORDER BY seq DESC LIMIT 1"
                ),
                params![i, phone],
                lid_row,
            )
            .optional()
        })
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> WaResult<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    /// Each entry replaces the LID's row whole, as the in-memory store does;
    /// `seq` records the write order that [`Self::get_pn_mapping`] goes by.
    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> WaResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.run_tx("put_lid_mappings", |c, i| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO wa_lid_mappings \
                   (instance, lid, phone_number, created_at, updated_at, learning_source, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
                   (SELECT COALESCE(MAX(seq), 0) + 1 FROM wa_lid_mappings WHERE instance = ?1)) \
                 ON CONFLICT (instance, lid) DO UPDATE SET phone_number = excluded.phone_number, \
                   created_at = excluded.created_at, updated_at = excluded.updated_at, \
                   learning_source = excluded.learning_source, seq = excluded.seq",
            )?;
            for e in entries {
                stmt.execute(params![
                    i,
                    e.lid,
                    e.phone_number,
                    e.created_at,
                    e.updated_at,
                    e.learning_source
                ])?;
            }
            Ok(())
        })
    }

    /// Ordered by LID.
    async fn get_all_lid_mappings(&self) -> WaResult<Vec<LidPnMappingEntry>> {
        self.run("get_all_lid_mappings", |c, i| {
            let mut stmt = c.prepare(&format!(
                "SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE instance = ?1 ORDER BY lid"
            ))?;
            stmt.query_map([i], lid_row)?.collect()
        })
    }

    async fn save_base_key(
        &self,
        address: &str,
        message_id: &str,
        base_key: &[u8],
    ) -> WaResult<()> {
        self.run("save_base_key", |c, i| {
            c.execute(
                "INSERT INTO wa_base_keys (instance, address, message_id, base_key) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (instance, address, message_id) \
                 DO UPDATE SET base_key = excluded.base_key",
                params![i, address, message_id, base_key],
            )
            .map(drop)
        })
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> WaResult<bool> {
        let stored: Option<Vec<u8>> = self.run("has_same_base_key", |c, i| {
            c.query_row(
                "SELECT base_key FROM wa_base_keys \
                 WHERE instance = ?1 AND address = ?2 AND message_id = ?3",
                params![i, address, message_id],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(stored.is_some_and(|s| s == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> WaResult<()> {
        self.run("delete_base_key", |c, i| {
            c.execute(
                "DELETE FROM wa_base_keys WHERE instance = ?1 AND address = ?2 AND message_id = ?3",
                params![i, address, message_id],
            )
            .map(drop)
        })
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> WaResult<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> WaResult<()> {
        const OP: &str = "update_device_lists";
        if records.is_empty() {
            return Ok(());
        }
        let encoded = records
            .iter()
            .map(|r| Ok((r.user.as_str(), encode(OP, r)?)))
            .collect::<WaResult<Vec<_>>>()?;
        self.run_tx(OP, |c, i| {
            encoded
                .iter()
                .try_for_each(|(user, bytes)| kv_put(c, i, NS_DEVICE_LIST, user, bytes))
        })
    }

    async fn get_devices(&self, user: &str) -> WaResult<Option<DeviceListRecord>> {
        const OP: &str = "get_devices";
        self.run(OP, |c, i| kv_get(c, i, NS_DEVICE_LIST, user))?
            .map(|bytes| decode(OP, &bytes))
            .transpose()
    }

    async fn delete_devices(&self, user: &str) -> WaResult<()> {
        self.run("delete_devices", |c, i| {
            kv_delete(c, i, NS_DEVICE_LIST, user)
        })
    }

    async fn get_group_metadata(&self, group_jid: &str) -> WaResult<Option<Vec<u8>>> {
        self.run("get_group_metadata", |c, i| {
            kv_get(c, i, NS_GROUP_METADATA, group_jid)
        })
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> WaResult<()> {
        self.run("put_group_metadata", |c, i| {
            kv_put(c, i, NS_GROUP_METADATA, group_jid, blob)
        })
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> WaResult<()> {
        self.run("delete_group_metadata", |c, i| {
            kv_delete(c, i, NS_GROUP_METADATA, group_jid)
        })
    }

    async fn get_tc_token(&self, jid: &str) -> WaResult<Option<TcTokenEntry>> {
        self.run("get_tc_token", |c, i| {
            c.query_row(
                "SELECT token, token_timestamp, sender_timestamp FROM wa_tc_tokens \
                 WHERE instance = ?1 AND jid = ?2",
                params![i, jid],
                |r| {
                    Ok(TcTokenEntry {
                        token: r.get(0)?,
                        token_timestamp: r.get(1)?,
                        sender_timestamp: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> WaResult<()> {
        self.run("put_tc_token", |c, i| {
            c.execute(
                "INSERT INTO wa_tc_tokens (instance, jid, token, token_timestamp, sender_timestamp) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (instance, jid) DO UPDATE SET \
                   token = excluded.token, token_timestamp = excluded.token_timestamp, \
                   sender_timestamp = excluded.sender_timestamp",
                params![i, jid, entry.token, entry.token_timestamp, entry.sender_timestamp],
            )
            .map(drop)
        })
    }

    async fn delete_tc_token(&self, jid: &str) -> WaResult<()> {
        self.run("delete_tc_token", |c, i| {
            c.execute(
                "DELETE FROM wa_tc_tokens WHERE instance = ?1 AND jid = ?2",
                params![i, jid],
            )
            .map(drop)
        })
    }

    /// Ordered by JID.
    async fn get_all_tc_token_jids(&self) -> WaResult<Vec<String>> {
        self.run("get_all_tc_token_jids", |c, i| {
            let mut stmt =
                c.prepare("SELECT jid FROM wa_tc_tokens WHERE instance = ?1 ORDER BY jid")?;
            stmt.query_map([i], |r| r.get(0))?.collect()
        })
    }

    /// A row stays while either its received token or its sender bucket is live.
    async fn delete_expired_tc_tokens(
        &self,
        token_cutoff: i64,
        sender_cutoff: i64,
    ) -> WaResult<u32> {
        self.run("delete_expired_tc_tokens", |c, i| {
            c.execute(
                "DELETE FROM wa_tc_tokens WHERE instance = ?1 AND NOT ( \
                   (length(token) > 0 AND token_timestamp >= ?2) \
                   OR (sender_timestamp IS NOT NULL AND sender_timestamp >= ?3))",
                params![i, token_cutoff, sender_cutoff],
            )
            .map(count_u32)
        })
    }

    /// One upsert, so it is atomic against [`Self::store_received_tc_token`].
    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> WaResult<()> {
        self.run("touch_tc_token_sender_timestamp", |c, i| {
            c.execute(
                "INSERT INTO wa_tc_tokens (instance, jid, token, token_timestamp, sender_timestamp) \
                 VALUES (?1, ?2, X'', ?3, ?3) ON CONFLICT (instance, jid) DO UPDATE SET \
                   sender_timestamp = MAX(COALESCE(wa_tc_tokens.sender_timestamp, ?3), ?3)",
                params![i, jid, sender_timestamp],
            )
            .map(drop)
        })
    }

    /// Newer wins, a placeholder never blocks a real token, and the sender
    /// bucket is kept: one conditional upsert.
    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> WaResult<()> {
        self.run("store_received_tc_token", |c, i| {
            c.execute(
                "INSERT INTO wa_tc_tokens (instance, jid, token, token_timestamp, sender_timestamp) \
                 VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT (instance, jid) DO UPDATE SET \
                   token = excluded.token, token_timestamp = excluded.token_timestamp \
                 WHERE length(wa_tc_tokens.token) = 0 \
                   OR excluded.token_timestamp >= wa_tc_tokens.token_timestamp",
                params![i, jid, token, token_timestamp],
            )
            .map(drop)
        })
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> WaResult<()> {
        let now = wacore::time::now_secs();
        self.run_tx("store_sent_message", |c, i| {
            let count: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM wa_sent_messages WHERE instance = ?1")?
                .query_row([i], |r| r.get(0))?;
            if count >= MAX_SENT_MESSAGES {
                let excess = count - MAX_SENT_MESSAGES * 3 / 4;
                c.prepare_cached(
                    "DELETE FROM wa_sent_messages WHERE rowid IN (SELECT rowid FROM wa_sent_messages \
                     WHERE instance = ?1 ORDER BY created_at, rowid LIMIT ?2)",
                )?
                .execute(params![i, excess])?;
            }
            c.prepare_cached(
                "INSERT INTO wa_sent_messages (instance, chat_jid, message_id, payload, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (instance, chat_jid, message_id) \
                 DO UPDATE SET payload = excluded.payload, created_at = excluded.created_at",
            )?
            .execute(params![i, chat_jid, message_id, payload, now])?;
            Ok(())
        })
    }

    /// One `DELETE … RETURNING`: two retry receipts cannot both take it.
    async fn take_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        self.run("take_sent_message", |c, i| {
            c.query_row(
                "DELETE FROM wa_sent_messages WHERE instance = ?1 AND chat_jid = ?2 \
                 AND message_id = ?3 RETURNING payload",
                params![i, chat_jid, message_id],
                |r| r.get(0),
            )
            .optional()
        })
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        self.run("delete_expired_sent_messages", |c, i| {
            c.execute(
                "DELETE FROM wa_sent_messages WHERE instance = ?1 AND created_at < ?2",
                params![i, cutoff_timestamp],
            )
            .map(count_u32)
        })
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> WaResult<()> {
        let now = wacore::time::now_secs();
        let row = PendingInboundRow {
            chat,
            sender,
            id,
            message,
        };
        self.run("store_pending_inbound", |c, i| {
            put_pending_inbound(c, i, &row, now)
        })
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        self.run("get_pending_inbound", |c, i| {
            c.query_row(
                "SELECT message FROM wa_pending_inbound \
                 WHERE instance = ?1 AND chat = ?2 AND sender = ?3 AND id = ?4",
                params![i, chat, sender, id],
                |r| r.get(0),
            )
            .optional()
        })
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> WaResult<()> {
        let key = PendingInboundKey { chat, sender, id };
        self.run("delete_pending_inbound", |c, i| {
            delete_pending_inbound(c, i, &key)
        })
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        self.run("delete_expired_pending_inbound", |c, i| {
            c.execute(
                "DELETE FROM wa_pending_inbound WHERE instance = ?1 AND inserted_at < ?2",
                params![i, cutoff_timestamp],
            )
            .map(count_u32)
        })
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> WaResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = wacore::time::now_secs();
        self.run_tx("store_pending_inbound_batch", |c, i| {
            rows.iter()
                .try_for_each(|row| put_pending_inbound(c, i, row, now))
        })
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> WaResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run_tx("delete_pending_inbound_batch", |c, i| {
            keys.iter()
                .try_for_each(|key| delete_pending_inbound(c, i, key))
        })
    }
}

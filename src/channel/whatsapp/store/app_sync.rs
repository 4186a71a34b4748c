//! App-state sync: keys, versions, mutation MACs.

use super::*;

#[async_trait]
impl AppSyncStore for WaStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> WaResult<Option<AppStateSyncKey>> {
        self.run("get_sync_key", |c, i| {
            c.query_row(
                "SELECT key_data, fingerprint, timestamp FROM wa_sync_keys \
                 WHERE instance = ?1 AND key_id = ?2",
                params![i, key_id],
                |r| {
                    Ok(AppStateSyncKey {
                        key_data: r.get(0)?,
                        fingerprint: r.get(1)?,
                        timestamp: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Also makes `key_id` the latest: `seq` numbers the writes.
    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> WaResult<()> {
        self.run("set_sync_key", |c, i| {
            c.execute(
                "INSERT INTO wa_sync_keys (instance, key_id, key_data, fingerprint, timestamp, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, \
                   (SELECT COALESCE(MAX(seq), 0) + 1 FROM wa_sync_keys WHERE instance = ?1)) \
                 ON CONFLICT (instance, key_id) DO UPDATE SET key_data = excluded.key_data, \
                   fingerprint = excluded.fingerprint, timestamp = excluded.timestamp, seq = excluded.seq",
                params![i, key_id, key.key_data, key.fingerprint, key.timestamp],
            )
            .map(drop)
        })
    }

    /// A collection never stored is at the default (version 0) state.
    async fn get_version(&self, name: &str) -> WaResult<HashState> {
        const OP: &str = "get_version";
        match self.run(OP, |c, i| kv_get(c, i, NS_APP_STATE_VERSION, name))? {
            Some(bytes) => decode(OP, &bytes),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> WaResult<()> {
        const OP: &str = "set_version";
        let bytes = encode(OP, &state)?;
        self.run(OP, |c, i| kv_put(c, i, NS_APP_STATE_VERSION, name, &bytes))
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> WaResult<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        self.run_tx("put_mutation_macs", |c, i| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO wa_mutation_macs (instance, name, index_mac, value_mac, version) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (instance, name, index_mac) \
                 DO UPDATE SET value_mac = excluded.value_mac, version = excluded.version",
            )?;
            for m in mutations {
                stmt.execute(params![i, name, m.index_mac, m.value_mac, version])?;
            }
            Ok(())
        })
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> WaResult<Option<Vec<u8>>> {
        self.run("get_mutation_mac", |c, i| {
            get_mutation_mac(c, i, name, index_mac)
        })
    }

    /// One lock and one prepared statement for the whole batch.
    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> WaResult<HashMap<[u8; 32], Vec<u8>>> {
        self.run("get_mutation_macs", |c, i| {
            let mut out = HashMap::with_capacity(index_macs.len());
            for index_mac in index_macs {
                if let Some(mac) = get_mutation_mac(c, i, name, index_mac)? {
                    out.insert(*index_mac, mac);
                }
            }
            Ok(out)
        })
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> WaResult<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        self.run_tx("delete_mutation_macs", |c, i| {
            let mut stmt = c.prepare_cached(
                "DELETE FROM wa_mutation_macs WHERE instance = ?1 AND name = ?2 AND index_mac = ?3",
            )?;
            for index_mac in index_macs {
                stmt.execute(params![i, name, index_mac])?;
            }
            Ok(())
        })
    }

    async fn clear_mutation_macs(&self, name: &str) -> WaResult<()> {
        self.run("clear_mutation_macs", |c, i| {
            c.execute(
                "DELETE FROM wa_mutation_macs WHERE instance = ?1 AND name = ?2",
                params![i, name],
            )
            .map(drop)
        })
    }

    async fn get_latest_sync_key_id(&self) -> WaResult<Option<Vec<u8>>> {
        self.run("get_latest_sync_key_id", |c, i| {
            c.query_row(
                "SELECT key_id FROM wa_sync_keys WHERE instance = ?1 ORDER BY seq DESC LIMIT 1",
                [i],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

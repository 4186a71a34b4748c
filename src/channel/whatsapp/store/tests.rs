use super::*;
use crate::lifecycle::{ReasonKind, StateName, StatusRow};
use crate::store::{SESSION_TABLES, StoreError};
use wacore::store::traits::{Backend, DeviceInfo};

fn mem() -> Arc<Store> {
    Arc::new(Store::open_in_memory().expect("in-memory store"))
}

fn logged_out(at: u64) -> StatusRow {
    StatusRow {
        connection_status: StateName::LoggedOut.connection_status(),
        state: StateName::LoggedOut,
        last_reason_code: Some(401),
        last_reason_kind: Some(ReasonKind::LoggedOut),
        last_reason_message: None,
        last_change_at: at,
        jid: None,
        push_name: None,
        logout_by: None,
    }
}

/// Rows the instance has in `table`, read straight from SQLite.
fn rows(store: &Store, table: &str, instance: &str) -> i64 {
    store
        .with_conn("test count", |c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE instance = ?1"),
                [instance],
                |r| r.get(0),
            )
        })
        .expect("count")
}

fn lid(lid: &str, phone: &str, at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.to_owned(),
        phone_number: phone.to_owned(),
        created_at: at,
        updated_at: at,
        learning_source: "usync".to_owned(),
    }
}

fn secret(chat: &str, msg_id: &str, b: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from(chat),
        sender: Arc::from("s@lid"),
        msg_id: Arc::from(msg_id),
        secret: [b; 32],
        expires_at,
        message_ts,
    }
}

fn device_list(user: &str, b: u8) -> DeviceListRecord {
    DeviceListRecord {
        user: user.to_owned(),
        devices: vec![
            DeviceInfo::new(0, None),
            DeviceInfo::new(u32::from(b), Some(7)).with_hosting(true),
        ],
        timestamp: 1_700_000_000,
        phash: Some(format!("2:{b}")),
        raw_id: Some(u32::from(b)),
    }
}

fn hash_state(b: u8) -> HashState {
    let mut s = HashState {
        version: u64::from(b),
        ..HashState::default()
    };
    s.hash[0] = b;
    s.hash[127] = b;
    s.index_value_map.insert(format!("idx{b}"), vec![b; 3]);
    s
}

/// Writes one of everything, tagged with `b`, touching every `wa_` table.
async fn fill(s: &WaStore, b: u8) {
    s.put_identity("1@s.whatsapp.net", [b; 32])
        .await
        .expect("identity");
    s.put_session("1@s.whatsapp.net", &[b])
        .await
        .expect("session");
    s.store_prekey(5, &[b], true).await.expect("prekey");
    s.store_signed_prekey(6, &[b]).await.expect("signed prekey");
    s.put_sender_key("g@g.us::1", &[b])
        .await
        .expect("sender key");
    s.set_sync_key(
        &[b],
        AppStateSyncKey {
            key_data: vec![b],
            fingerprint: vec![b],
            timestamp: i64::from(b),
        },
    )
    .await
    .expect("sync key");
    s.set_version("regular", hash_state(b))
        .await
        .expect("version");
    s.put_mutation_macs(
        "regular",
        1,
        &[AppStateMutationMAC {
            index_mac: vec![b],
            value_mac: vec![b, b],
        }],
    )
    .await
    .expect("macs");
    s.set_sender_key_status("g@g.us", &[("d:1@lid", true)])
        .await
        .expect("skd");
    s.put_lid_mapping(&lid("100", "555", i64::from(b)))
        .await
        .expect("lid");
    s.save_base_key("1@s.whatsapp.net", "M", &[b])
        .await
        .expect("base key");
    s.update_device_list(device_list("555", b))
        .await
        .expect("device list");
    s.put_group_metadata("g@g.us", &[b]).await.expect("group");
    s.put_tc_token(
        "100@lid",
        &TcTokenEntry {
            token: vec![b],
            token_timestamp: i64::from(b),
            sender_timestamp: Some(i64::from(b)),
        },
    )
    .await
    .expect("tc token");
    s.store_sent_message("c@s.whatsapp.net", "M", &[b])
        .await
        .expect("sent");
    s.store_pending_inbound("c", "s", "M", &[b])
        .await
        .expect("pending");
    s.put_msg_secret("c", "s", "M", &[b; 32])
        .await
        .expect("secret");
    let mut device = Device::new();
    device.push_name = format!("dev{b}");
    s.save(&device).await.expect("device");
}

/// Reads back everything [`fill`] wrote with tag `b` (without consuming).
async fn assert_filled(s: &WaStore, b: u8) {
    assert_eq!(
        s.load_identity("1@s.whatsapp.net").await.unwrap(),
        Some([b; 32])
    );
    assert_eq!(
        s.get_session("1@s.whatsapp.net").await.unwrap().as_deref(),
        Some(&[b][..])
    );
    assert_eq!(s.load_prekey(5).await.unwrap().as_deref(), Some(&[b][..]));
    assert_eq!(s.load_signed_prekey(6).await.unwrap(), Some(vec![b]));
    assert_eq!(s.get_sender_key("g@g.us::1").await.unwrap(), Some(vec![b]));
    let key = s.get_sync_key(&[b]).await.unwrap().expect("sync key");
    assert_eq!(
        (key.key_data, key.fingerprint, key.timestamp),
        (vec![b], vec![b], i64::from(b))
    );
    assert_eq!(s.get_latest_sync_key_id().await.unwrap(), Some(vec![b]));
    let v = s.get_version("regular").await.unwrap();
    assert_eq!((v.version, v.hash), (u64::from(b), hash_state(b).hash));
    assert_eq!(
        s.get_mutation_mac("regular", &[b]).await.unwrap(),
        Some(vec![b, b])
    );
    assert_eq!(
        s.get_sender_key_devices("g@g.us").await.unwrap(),
        vec![("d:1@lid".to_owned(), true)]
    );
    assert_eq!(
        s.get_lid_mapping("100")
            .await
            .unwrap()
            .expect("lid")
            .created_at,
        i64::from(b)
    );
    assert!(
        s.has_same_base_key("1@s.whatsapp.net", "M", &[b])
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_devices("555").await.unwrap().expect("devices").raw_id,
        Some(u32::from(b))
    );
    assert_eq!(s.get_group_metadata("g@g.us").await.unwrap(), Some(vec![b]));
    assert_eq!(
        s.get_tc_token("100@lid").await.unwrap().expect("tc").token,
        vec![b]
    );
    assert_eq!(
        s.get_pending_inbound("c", "s", "M").await.unwrap(),
        Some(vec![b])
    );
    assert_eq!(
        s.get_msg_secret("c", "s", "M").await.unwrap(),
        Some(vec![b; 32])
    );
    assert_eq!(
        s.load().await.unwrap().expect("device").push_name,
        format!("dev{b}")
    );
    let sent: i64 = s
        .run("test sent", |c, i| {
            c.query_row(
                "SELECT payload = ?2 FROM wa_sent_messages WHERE instance = ?1",
                params![i, vec![b]],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(sent, 1);
}

/// Every getter answers "nothing stored".
async fn assert_empty(s: &WaStore) {
    assert_eq!(s.load_identity("1@s.whatsapp.net").await.unwrap(), None);
    assert!(!s.has_signal_state_for_user("1").await.unwrap());
    assert_eq!(s.get_session("1@s.whatsapp.net").await.unwrap(), None);
    assert_eq!(s.load_prekey(5).await.unwrap(), None);
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
    assert!(s.load_all_signed_prekeys().await.unwrap().is_empty());
    assert_eq!(s.get_sender_key("g@g.us::1").await.unwrap(), None);
    assert_eq!(s.get_latest_sync_key_id().await.unwrap(), None);
    assert_eq!(s.get_version("regular").await.unwrap().version, 0);
    assert!(
        s.get_mutation_macs("regular", &[[1; 32]])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.get_sender_key_devices("g@g.us").await.unwrap().is_empty());
    assert!(s.get_all_lid_mappings().await.unwrap().is_empty());
    assert!(s.get_pn_mapping("555").await.unwrap().is_none());
    assert!(
        !s.has_same_base_key("1@s.whatsapp.net", "M", &[1])
            .await
            .unwrap()
    );
    assert!(s.get_devices("555").await.unwrap().is_none());
    assert_eq!(s.get_group_metadata("g@g.us").await.unwrap(), None);
    assert!(s.get_all_tc_token_jids().await.unwrap().is_empty());
    assert_eq!(
        s.take_sent_message("c@s.whatsapp.net", "M").await.unwrap(),
        None
    );
    assert_eq!(s.get_pending_inbound("c", "s", "M").await.unwrap(), None);
    assert_eq!(s.get_msg_secret_with_ts("c", "s", "M").await.unwrap(), None);
    assert!(!s.exists().await.unwrap());
    assert!(s.load().await.unwrap().is_none());
}

#[test]
fn is_a_whatsapp_backend() {
    fn backend<T: Backend + 'static>() {}
    backend::<WaStore>();
    let _: Arc<dyn Backend> = Arc::new(WaStore::new(mem(), "a"));
}

#[test]
fn every_wa_table_is_a_session_table() {
    let store = mem();
    let tables: Vec<String> = store
        .with_conn("test tables", |c| {
            let mut stmt = c.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'wa\\_%' ESCAPE '\\'",
            )?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
        .expect("tables");
    assert_eq!(tables.len(), 12, "{tables:?}");
    for t in &tables {
        assert!(
            SESSION_TABLES.contains(&t.as_str()),
            "{t} missing from SESSION_TABLES"
        );
    }
}

#[tokio::test]
async fn signal_identities_and_sessions_round_trip() {
    let s = WaStore::new(mem(), "a");
    let addr = "15550001:2@s.whatsapp.net";
    s.put_identity(addr, [1; 32]).await.unwrap();
    assert_eq!(s.load_identity(addr).await.unwrap(), Some([1; 32]));
    s.put_identity(addr, [2; 32]).await.unwrap();
    assert_eq!(s.load_identity(addr).await.unwrap(), Some([2; 32]));
    s.put_identities_batch(&[(Arc::from("x@lid"), [3; 32]), (Arc::from(addr), [4; 32])])
        .await
        .unwrap();
    assert_eq!(s.load_identity("x@lid").await.unwrap(), Some([3; 32]));
    assert_eq!(s.load_identity(addr).await.unwrap(), Some([4; 32]));
    s.delete_identity(addr).await.unwrap();
    assert_eq!(s.load_identity(addr).await.unwrap(), None);
    s.delete_identity(addr).await.unwrap();

    assert!(!s.has_session(addr).await.unwrap());
    s.put_session(addr, b"one").await.unwrap();
    assert!(s.has_session(addr).await.unwrap());
    assert_eq!(
        s.get_session(addr).await.unwrap(),
        Some(Bytes::from_static(b"one"))
    );
    s.put_sessions_batch(&[
        (Arc::from(addr), Bytes::from_static(b"two")),
        (Arc::from("y@lid"), Bytes::from_static(b"")),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_session(addr).await.unwrap(),
        Some(Bytes::from_static(b"two"))
    );
    assert_eq!(s.get_session("y@lid").await.unwrap(), Some(Bytes::new()));
    s.put_sessions_batch(&[]).await.unwrap();
    s.delete_session(addr).await.unwrap();
    assert_eq!(s.get_session(addr).await.unwrap(), None);
    assert!(!s.has_session(addr).await.unwrap());
}

#[tokio::test]
async fn signal_state_for_user_matches_whole_users_only() {
    let s = WaStore::new(mem(), "a");
    s.put_session("123:4@s.whatsapp.net", b"s").await.unwrap();
    s.put_identity("77@lid", [0; 32]).await.unwrap();
    assert!(s.has_signal_state_for_user("123").await.unwrap());
    assert!(s.has_signal_state_for_user("77").await.unwrap());
    // Prefixes and extensions of a user are other users.
    assert!(!s.has_signal_state_for_user("12").await.unwrap());
    assert!(!s.has_signal_state_for_user("1234").await.unwrap());
    assert!(!s.has_signal_state_for_user("7").await.unwrap());
    // LIKE wildcards are plain characters.
    assert!(!s.has_signal_state_for_user("1_3").await.unwrap());
    assert!(!s.has_signal_state_for_user("%").await.unwrap());
    // Sender keys are not Signal session state for this question.
    s.put_sender_key("9@lid", b"k").await.unwrap();
    assert!(!s.has_signal_state_for_user("9").await.unwrap());
}

#[tokio::test]
async fn signal_prekeys_signed_prekeys_and_sender_keys_round_trip() {
    let s = WaStore::new(mem(), "a");
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
    s.store_prekey(3, b"three", false).await.unwrap();
    s.store_prekeys_batch(
        &[
            (1, Bytes::from_static(b"one")),
            (u32::MAX, Bytes::from_static(b"max")),
        ],
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        s.load_prekey(3).await.unwrap(),
        Some(Bytes::from_static(b"three"))
    );
    assert_eq!(s.load_prekey(2).await.unwrap(), None);
    assert_eq!(s.get_max_prekey_id().await.unwrap(), u32::MAX);
    assert_eq!(
        s.load_prekeys_batch(&[u32::MAX, 2, 1]).await.unwrap(),
        vec![
            (u32::MAX, Bytes::from_static(b"max")),
            (1, Bytes::from_static(b"one"))
        ]
    );
    // Marking uploaded never resurrects a removed key.
    s.remove_prekey(u32::MAX).await.unwrap();
    s.mark_prekeys_uploaded(&[3, u32::MAX]).await.unwrap();
    assert_eq!(s.load_prekey(u32::MAX).await.unwrap(), None);
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 3);
    let uploaded: bool = s
        .run("test uploaded", |c, i| {
            c.query_row(
                "SELECT uploaded FROM wa_prekeys WHERE instance = ?1 AND id = 3",
                [i],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert!(uploaded);

    s.store_signed_prekey(9, b"nine").await.unwrap();
    s.store_signed_prekey(2, b"two").await.unwrap();
    s.store_signed_prekey(9, b"NINE").await.unwrap();
    assert_eq!(
        s.load_signed_prekey(9).await.unwrap(),
        Some(b"NINE".to_vec())
    );
    assert_eq!(
        s.load_all_signed_prekeys().await.unwrap(),
        vec![(2, b"two".to_vec()), (9, b"NINE".to_vec())]
    );
    s.remove_signed_prekey(9).await.unwrap();
    assert_eq!(s.load_signed_prekey(9).await.unwrap(), None);

    s.put_sender_key("g::a", b"k1").await.unwrap();
    s.put_sender_keys_batch(&[
        (Arc::from("g::a"), Bytes::from_static(b"k2")),
        (Arc::from("g::b"), Bytes::from_static(b"k3")),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_sender_key("g::a").await.unwrap(),
        Some(b"k2".to_vec())
    );
    assert_eq!(
        s.get_sender_key("g::b").await.unwrap(),
        Some(b"k3".to_vec())
    );
    s.delete_sender_key("g::a").await.unwrap();
    assert_eq!(s.get_sender_key("g::a").await.unwrap(), None);
}

#[tokio::test]
async fn app_sync_keys_versions_and_macs_round_trip() {
    let s = WaStore::new(mem(), "a");
    let key = |b: u8| AppStateSyncKey {
        key_data: vec![b; 32],
        fingerprint: vec![b, 1],
        timestamp: 1_700_000_000 + i64::from(b),
    };
    assert!(s.get_sync_key(b"k1").await.unwrap().is_none());
    s.set_sync_key(b"k2", key(2)).await.unwrap();
    s.set_sync_key(b"k1", key(1)).await.unwrap();
    // Latest means last written, not largest id.
    assert_eq!(
        s.get_latest_sync_key_id().await.unwrap(),
        Some(b"k1".to_vec())
    );
    s.set_sync_key(b"k2", key(3)).await.unwrap();
    assert_eq!(
        s.get_latest_sync_key_id().await.unwrap(),
        Some(b"k2".to_vec())
    );
    let got = s.get_sync_key(b"k2").await.unwrap().expect("k2");
    assert_eq!(
        (got.key_data, got.fingerprint, got.timestamp),
        (vec![3; 32], vec![3, 1], 1_700_000_003)
    );

    let v = s.get_version("critical_block").await.unwrap();
    assert_eq!(
        (v.version, v.hash, v.index_value_map.len()),
        (0, [0; 128], 0)
    );
    let mut state = hash_state(9);
    state.mac_mismatch_fatal = true;
    s.set_version("critical_block", state).await.unwrap();
    let v = s.get_version("critical_block").await.unwrap();
    assert_eq!(v.version, 9);
    assert_eq!(v.hash, hash_state(9).hash);
    assert_eq!(v.index_value_map, hash_state(9).index_value_map);
    assert!(v.mac_mismatch_fatal);
    assert_eq!(s.get_version("regular").await.unwrap().version, 0);

    let mac = |i: u8, v: u8| AppStateMutationMAC {
        index_mac: vec![i; 32],
        value_mac: vec![v; 32],
    };
    s.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20)])
        .await
        .unwrap();
    s.put_mutation_macs("regular", 2, &[mac(2, 21)])
        .await
        .unwrap();
    s.put_mutation_macs("other", 1, &[mac(1, 99)])
        .await
        .unwrap();
    assert_eq!(
        s.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        Some(vec![10; 32])
    );
    assert_eq!(
        s.get_mutation_mac("regular", &[2; 32]).await.unwrap(),
        Some(vec![21; 32])
    );
    assert_eq!(s.get_mutation_mac("regular", &[3; 32]).await.unwrap(), None);
    let batch = s
        .get_mutation_macs("regular", &[[1; 32], [3; 32], [2; 32]])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[&[1; 32]], vec![10; 32]);
    assert_eq!(batch[&[2; 32]], vec![21; 32]);
    s.delete_mutation_macs("regular", &[vec![1; 32]])
        .await
        .unwrap();
    assert_eq!(s.get_mutation_mac("regular", &[1; 32]).await.unwrap(), None);
    assert_eq!(
        s.get_mutation_mac("other", &[1; 32]).await.unwrap(),
        Some(vec![99; 32])
    );
    s.clear_mutation_macs("regular").await.unwrap();
    assert_eq!(s.get_mutation_mac("regular", &[2; 32]).await.unwrap(), None);
    assert_eq!(
        s.get_mutation_mac("other", &[1; 32]).await.unwrap(),
        Some(vec![99; 32])
    );
}

#[tokio::test]
async fn protocol_sender_key_devices_round_trip() {
    let s = WaStore::new(mem(), "a");
    assert!(s.get_sender_key_devices("g1").await.unwrap().is_empty());
    s.set_sender_key_status("g1", &[("d2", true), ("d1", false)])
        .await
        .unwrap();
    s.set_sender_key_status("g1", &[("d1", true)])
        .await
        .unwrap();
    s.set_sender_key_status("g2", &[("d1", false), ("d3", true)])
        .await
        .unwrap();
    s.set_sender_key_status("g3", &[]).await.unwrap();
    assert_eq!(
        s.get_sender_key_devices("g1").await.unwrap(),
        vec![("d1".to_owned(), true), ("d2".to_owned(), true)]
    );
    s.delete_sender_key_device_rows(&["d1"]).await.unwrap();
    assert_eq!(
        s.get_sender_key_devices("g1").await.unwrap(),
        vec![("d2".to_owned(), true)]
    );
    assert_eq!(
        s.get_sender_key_devices("g2").await.unwrap(),
        vec![("d3".to_owned(), true)]
    );
    s.clear_sender_key_devices("g1").await.unwrap();
    assert!(s.get_sender_key_devices("g1").await.unwrap().is_empty());
    assert_eq!(s.get_sender_key_devices("g2").await.unwrap().len(), 1);
    s.clear_all_sender_key_devices().await.unwrap();
    assert!(s.get_sender_key_devices("g2").await.unwrap().is_empty());
}

#[tokio::test]
async fn protocol_lid_mappings_round_trip() {
    let s = WaStore::new(mem(), "a");
    assert!(s.get_lid_mapping("100").await.unwrap().is_none());
    s.put_lid_mapping(&lid("100", "555", 1)).await.unwrap();
    let got = s.get_lid_mapping("100").await.unwrap().expect("100");
    assert_eq!(
        (
            got.lid.as_str(),
            got.phone_number.as_str(),
            got.created_at,
            got.updated_at,
            got.learning_source.as_str()
        ),
        ("100", "555", 1, 1, "usync")
    );
    // A newer LID for the same phone wins the reverse lookup...
    s.put_lid_mappings(&[lid("200", "555", 2), lid("300", "777", 3)])
        .await
        .unwrap();
    assert_eq!(
        s.get_pn_mapping("555").await.unwrap().expect("555").lid,
        "200"
    );
    assert_eq!(
        s.get_pn_mapping("777").await.unwrap().expect("777").lid,
        "300"
    );
    // ...and a LID moving to another phone leaves its old phone.
    s.put_lid_mapping(&lid("200", "888", 4)).await.unwrap();
    assert_eq!(
        s.get_pn_mapping("888").await.unwrap().expect("888").lid,
        "200"
    );
    assert_eq!(
        s.get_pn_mapping("555").await.unwrap().expect("555").lid,
        "100"
    );
    assert!(s.get_pn_mapping("999").await.unwrap().is_none());
    let all: Vec<String> = s
        .get_all_lid_mappings()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.lid)
        .collect();
    assert_eq!(all, ["100", "200", "300"]);
}

#[tokio::test]
async fn protocol_base_keys_device_lists_and_group_metadata_round_trip() {
    let s = WaStore::new(mem(), "a");
    assert!(!s.has_same_base_key("a@lid", "M1", b"k").await.unwrap());
    s.save_base_key("a@lid", "M1", b"k").await.unwrap();
    assert!(s.has_same_base_key("a@lid", "M1", b"k").await.unwrap());
    assert!(!s.has_same_base_key("a@lid", "M1", b"other").await.unwrap());
    assert!(!s.has_same_base_key("a@lid", "M2", b"k").await.unwrap());
    s.save_base_key("a@lid", "M1", b"k2").await.unwrap();
    assert!(s.has_same_base_key("a@lid", "M1", b"k2").await.unwrap());
    s.delete_base_key("a@lid", "M1").await.unwrap();
    assert!(!s.has_same_base_key("a@lid", "M1", b"k2").await.unwrap());

    assert!(s.get_devices("555").await.unwrap().is_none());
    s.update_device_list(device_list("555", 1)).await.unwrap();
    s.update_device_lists(vec![device_list("555", 2), device_list("666", 3)])
        .await
        .unwrap();
    s.update_device_lists(Vec::new()).await.unwrap();
    let got = s.get_devices("555").await.unwrap().expect("555");
    assert_eq!(got.user, "555");
    assert_eq!(got.timestamp, 1_700_000_000);
    assert_eq!(got.phash.as_deref(), Some("2:2"));
    assert_eq!(got.raw_id, Some(2));
    let devices: Vec<_> = got
        .devices
        .iter()
        .map(|d| (d.device_id, d.key_index, d.is_hosted))
        .collect();
    assert_eq!(devices, [(0, None, false), (2, Some(7), true)]);
    assert_eq!(
        s.get_devices("666").await.unwrap().expect("666").raw_id,
        Some(3)
    );
    s.delete_devices("555").await.unwrap();
    assert!(s.get_devices("555").await.unwrap().is_none());

    assert_eq!(s.get_group_metadata("g").await.unwrap(), None);
    s.put_group_metadata("g", b"v1").await.unwrap();
    s.put_group_metadata("g", b"v2").await.unwrap();
    assert_eq!(
        s.get_group_metadata("g").await.unwrap(),
        Some(b"v2".to_vec())
    );
    s.delete_group_metadata("g").await.unwrap();
    assert_eq!(s.get_group_metadata("g").await.unwrap(), None);
}

#[tokio::test]
async fn protocol_tc_tokens_round_trip_and_merge() {
    let s = WaStore::new(mem(), "a");
    assert!(s.get_tc_token("u").await.unwrap().is_none());
    let entry = TcTokenEntry {
        token: vec![1, 2],
        token_timestamp: 10,
        sender_timestamp: None,
    };
    s.put_tc_token("u", &entry).await.unwrap();
    let got = s.get_tc_token("u").await.unwrap().expect("u");
    assert_eq!(
        (got.token, got.token_timestamp, got.sender_timestamp),
        (vec![1, 2], 10, None)
    );

    // Touch: a placeholder when absent, advance-only, never the token.
    s.touch_tc_token_sender_timestamp("p", 1000).await.unwrap();
    let p = s.get_tc_token("p").await.unwrap().expect("p");
    assert_eq!(
        (p.token, p.token_timestamp, p.sender_timestamp),
        (vec![], 1000, Some(1000))
    );
    s.touch_tc_token_sender_timestamp("p", 500).await.unwrap();
    assert_eq!(
        s.get_tc_token("p")
            .await
            .unwrap()
            .expect("p")
            .sender_timestamp,
        Some(1000)
    );
    s.touch_tc_token_sender_timestamp("u", 30).await.unwrap();
    let u = s.get_tc_token("u").await.unwrap().expect("u");
    assert_eq!(
        (u.token, u.token_timestamp, u.sender_timestamp),
        (vec![1, 2], 10, Some(30))
    );

    // Received: newer wins, the placeholder yields, the sender bucket stays.
    s.store_received_tc_token("u", &[9], 5).await.unwrap();
    assert_eq!(
        s.get_tc_token("u").await.unwrap().expect("u").token,
        vec![1, 2]
    );
    s.store_received_tc_token("u", &[9], 10).await.unwrap();
    let u = s.get_tc_token("u").await.unwrap().expect("u");
    assert_eq!(
        (u.token, u.token_timestamp, u.sender_timestamp),
        (vec![9], 10, Some(30))
    );
    s.store_received_tc_token("p", &[7], 1).await.unwrap();
    let p = s.get_tc_token("p").await.unwrap().expect("p");
    assert_eq!(
        (p.token, p.token_timestamp, p.sender_timestamp),
        (vec![7], 1, Some(1000))
    );
    s.store_received_tc_token("n", &[8], 3).await.unwrap();
    assert_eq!(
        s.get_tc_token("n")
            .await
            .unwrap()
            .expect("n")
            .sender_timestamp,
        None
    );

    assert_eq!(s.get_all_tc_token_jids().await.unwrap(), ["n", "p", "u"]);
    s.delete_tc_token("n").await.unwrap();
    assert!(s.get_tc_token("n").await.unwrap().is_none());
}

#[tokio::test]
async fn protocol_tc_token_expiry_keeps_either_live_window() {
    let s = WaStore::new(mem(), "a");
    let put = |token: Vec<u8>, token_timestamp, sender_timestamp| TcTokenEntry {
        token,
        token_timestamp,
        sender_timestamp,
    };
    s.touch_tc_token_sender_timestamp("recent_ph", 2500)
        .await
        .unwrap();
    s.touch_tc_token_sender_timestamp("stale_ph", 100)
        .await
        .unwrap();
    s.put_tc_token("live_sender", &put(vec![1], 1, Some(2500)))
        .await
        .unwrap();
    s.put_tc_token("orphan", &put(vec![2], 1, None))
        .await
        .unwrap();
    s.put_tc_token("fresh", &put(vec![3], 5000, None))
        .await
        .unwrap();
    s.put_tc_token("empty_fresh", &put(vec![], 5000, None))
        .await
        .unwrap();
    assert_eq!(s.delete_expired_tc_tokens(1000, 2000).await.unwrap(), 3);
    assert_eq!(
        s.get_all_tc_token_jids().await.unwrap(),
        ["fresh", "live_sender", "recent_ph"]
    );
}

#[tokio::test]
async fn protocol_sent_messages_are_taken_once_and_expire() {
    let s = WaStore::new(mem(), "a");
    s.store_sent_message("c", "M1", b"p1").await.unwrap();
    s.store_sent_message("c", "M1", b"p1b").await.unwrap();
    s.store_sent_message("c", "M2", b"p2").await.unwrap();
    assert_eq!(
        s.take_sent_message("c", "M1").await.unwrap(),
        Some(b"p1b".to_vec())
    );
    assert_eq!(s.take_sent_message("c", "M1").await.unwrap(), None);
    assert_eq!(s.take_sent_message("other", "M2").await.unwrap(), None);
    // Stored "now": a cutoff in the past keeps it, one in the future drops it.
    let now = wacore::time::now_secs();
    assert_eq!(s.delete_expired_sent_messages(now - 60).await.unwrap(), 0);
    assert_eq!(s.delete_expired_sent_messages(now + 60).await.unwrap(), 1);
    assert_eq!(s.take_sent_message("c", "M2").await.unwrap(), None);
}

#[tokio::test]
async fn protocol_sent_messages_are_capped_oldest_first() {
    let store = mem();
    let s = WaStore::new(Arc::clone(&store), "a");
    for n in 0..MAX_SENT_MESSAGES {
        s.store_sent_message("c", &format!("m{n}"), b"p")
            .await
            .unwrap();
    }
    // Age the first few so they are strictly the oldest.
    s.run("test age", |c, i| {
        c.execute(
            "UPDATE wa_sent_messages SET created_at = created_at - 100 \
             WHERE instance = ?1 AND message_id IN ('m0', 'm1', 'm2')",
            [i],
        )
    })
    .unwrap();
    assert_eq!(rows(&store, "wa_sent_messages", "a"), MAX_SENT_MESSAGES);
    s.store_sent_message("c", "trigger", b"p").await.unwrap();
    assert_eq!(
        rows(&store, "wa_sent_messages", "a"),
        MAX_SENT_MESSAGES * 3 / 4 + 1
    );
    assert_eq!(s.take_sent_message("c", "m0").await.unwrap(), None);
    assert_eq!(s.take_sent_message("c", "m2").await.unwrap(), None);
    assert!(s.take_sent_message("c", "trigger").await.unwrap().is_some());
    let last = format!("m{}", MAX_SENT_MESSAGES - 1);
    assert!(s.take_sent_message("c", &last).await.unwrap().is_some());
}

#[tokio::test]
async fn protocol_pending_inbound_round_trips() {
    let s = WaStore::new(mem(), "a");
    assert_eq!(s.get_pending_inbound("c", "s", "1").await.unwrap(), None);
    s.store_pending_inbound("c", "s", "1", b"m1").await.unwrap();
    s.store_pending_inbound("c", "s", "1", b"m1b")
        .await
        .unwrap();
    assert_eq!(
        s.get_pending_inbound("c", "s", "1").await.unwrap(),
        Some(b"m1b".to_vec())
    );
    // Keyed by all three parts.
    assert_eq!(s.get_pending_inbound("c", "t", "1").await.unwrap(), None);
    s.store_pending_inbound_batch(&[
        PendingInboundRow {
            chat: "c",
            sender: "t",
            id: "1",
            message: b"m2",
        },
        PendingInboundRow {
            chat: "d",
            sender: "s",
            id: "1",
            message: b"m3",
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_pending_inbound("c", "t", "1").await.unwrap(),
        Some(b"m2".to_vec())
    );
    assert_eq!(
        s.get_pending_inbound("d", "s", "1").await.unwrap(),
        Some(b"m3".to_vec())
    );
    s.delete_pending_inbound("c", "s", "1").await.unwrap();
    assert_eq!(s.get_pending_inbound("c", "s", "1").await.unwrap(), None);
    s.delete_pending_inbound_batch(&[PendingInboundKey {
        chat: "c",
        sender: "t",
        id: "1",
    }])
    .await
    .unwrap();
    assert_eq!(s.get_pending_inbound("c", "t", "1").await.unwrap(), None);
    let now = wacore::time::now_secs();
    assert_eq!(s.delete_expired_pending_inbound(now - 60).await.unwrap(), 0);
    assert_eq!(s.delete_expired_pending_inbound(now + 60).await.unwrap(), 1);
    assert_eq!(s.get_pending_inbound("d", "s", "1").await.unwrap(), None);
}

#[tokio::test]
async fn msg_secrets_round_trip_merge_and_expire() {
    let s = WaStore::new(mem(), "a");
    assert_eq!(s.get_msg_secret("c", "s@lid", "M").await.unwrap(), None);
    s.put_msg_secret("c", "s@lid", "M", &[1; 32]).await.unwrap();
    assert_eq!(
        s.get_msg_secret_with_ts("c", "s@lid", "M").await.unwrap(),
        Some((vec![1; 32], 0))
    );
    // Keyed by chat, sender and id.
    assert_eq!(s.get_msg_secret("c", "other", "M").await.unwrap(), None);

    let stored = s
        .put_msg_secrets(vec![
            secret("c", "A", 2, 100, 50),
            secret("c", "B", 3, 0, 0),
            secret("c", "A", 4, 200, 40),
        ])
        .await
        .unwrap();
    assert_eq!(stored, 3);
    // Last secret, later deadline, later parent time.
    assert_eq!(
        s.get_msg_secret_with_ts("c", "s@lid", "A").await.unwrap(),
        Some((vec![4; 32], 50))
    );
    s.put_msg_secrets(vec![secret("c", "A", 5, 150, 0)])
        .await
        .unwrap();
    // "Never" wins over any deadline, both ways.
    s.put_msg_secrets(vec![
        secret("c", "B", 6, 300, 0),
        secret("c", "C", 7, 300, 0),
    ])
    .await
    .unwrap();
    s.put_msg_secrets(vec![secret("c", "C", 7, 0, 0)])
        .await
        .unwrap();
    assert_eq!(s.put_msg_secrets(Vec::new()).await.unwrap(), 0);

    // A is due at 200; B and C and the plain put never expire.
    assert_eq!(s.delete_expired_msg_secrets(199).await.unwrap(), 0);
    assert_eq!(s.delete_expired_msg_secrets(200).await.unwrap(), 1);
    assert_eq!(s.get_msg_secret("c", "s@lid", "A").await.unwrap(), None);
    assert_eq!(
        s.get_msg_secret("c", "s@lid", "B").await.unwrap(),
        Some(vec![6; 32])
    );
    assert_eq!(
        s.get_msg_secret("c", "s@lid", "C").await.unwrap(),
        Some(vec![7; 32])
    );
    assert_eq!(s.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 0);
    assert!(s.get_msg_secret("c", "s@lid", "M").await.unwrap().is_some());
}

#[tokio::test]
async fn device_create_save_load_round_trip() {
    let s = WaStore::new(mem(), "a");
    assert!(!s.exists().await.unwrap());
    assert!(s.load().await.unwrap().is_none());
    assert_eq!(s.create().await.unwrap(), DEVICE_ID);
    assert!(s.exists().await.unwrap());
    let created = s.load().await.unwrap().expect("created");
    // create never replaces an existing device.
    assert_eq!(s.create().await.unwrap(), DEVICE_ID);
    let again = s.load().await.unwrap().expect("still there");
    assert_eq!(
        again.identity_key.public_key.public_key_bytes(),
        created.identity_key.public_key.public_key_bytes()
    );
    assert_eq!(again.registration_id, created.registration_id);

    let mut device = created;
    device.push_name = "moon".to_owned();
    device.pn = Some("15551234567@s.whatsapp.net".parse().expect("jid"));
    device.lid = Some("100000012345678@lid".parse().expect("jid"));
    device.next_pre_key_id = 812;
    device.login_counter = 3;
    device.edge_routing_info = Some(vec![1, 2, 3]);
    device.account = Some(Arc::new(
        whatsapp_rust::waproto::whatsapp::ADVSignedDeviceIdentity {
            details: Some(b"details".to_vec()),
            account_signature_key: Some(vec![1; 32]),
            account_signature: Some(vec![2; 64]),
            device_signature: Some(vec![3; 64]),
        },
    ));
    s.save(&device).await.unwrap();
    let got = s.load().await.unwrap().expect("saved");
    assert_eq!(got.push_name, "moon");
    assert_eq!(got.pn, device.pn);
    assert_eq!(got.lid, device.lid);
    assert_eq!((got.next_pre_key_id, got.login_counter), (812, 3));
    assert_eq!(got.edge_routing_info, Some(vec![1, 2, 3]));
    assert_eq!(
        got.signed_pre_key_signature,
        device.signed_pre_key_signature
    );
    assert_eq!(got.adv_secret_key, device.adv_secret_key);
    assert_eq!(
        got.noise_key.private_key.serialize(),
        device.noise_key.private_key.serialize()
    );
    assert_eq!(
        got.account.as_deref().and_then(|a| a.details.clone()),
        Some(b"details".to_vec())
    );
    // The runtime-only props come back as a fresh device has them.
    assert_eq!(*got.device_props, *Device::new().device_props);
}

#[tokio::test]
async fn two_instances_in_one_file_never_see_each_others_rows() {
    let store = mem();
    let a = WaStore::new(Arc::clone(&store), "a");
    let b = WaStore::new(Arc::clone(&store), "b");
    fill(&a, 1).await;
    assert_empty(&b).await;
    fill(&b, 2).await;
    assert_filled(&a, 1).await;
    assert_filled(&b, 2).await;

    // Instance-wide operations stay inside the instance.
    b.clear_all_sender_key_devices().await.unwrap();
    assert_eq!(b.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 0);
    assert_eq!(b.delete_expired_sent_messages(i64::MAX).await.unwrap(), 1);
    assert_eq!(b.delete_expired_pending_inbound(i64::MAX).await.unwrap(), 1);
    assert_eq!(
        b.delete_expired_tc_tokens(i64::MAX, i64::MAX)
            .await
            .unwrap(),
        1
    );
    assert_filled(&a, 1).await;
}

#[tokio::test]
async fn the_store_survives_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("moonwire.db");
    {
        let store = Arc::new(Store::open(&path).expect("open"));
        fill(&WaStore::new(Arc::clone(&store), "a"), 7).await;
        fill(&WaStore::new(store, "b"), 8).await;
    }
    let store = Arc::new(Store::open(&path).expect("reopen"));
    assert_filled(&WaStore::new(Arc::clone(&store), "a"), 7).await;
    assert_filled(&WaStore::new(Arc::clone(&store), "b"), 8).await;
    assert!(store.session_exists("a").expect("exists"));
}

#[tokio::test]
async fn end_session_deletes_every_wa_row_with_the_status_write() {
    let store = mem();
    store.ensure_instance("a", "whatsapp", 1).expect("ensure");
    store.ensure_instance("b", "whatsapp", 1).expect("ensure");
    let a = WaStore::new(Arc::clone(&store), "a");
    let b = WaStore::new(Arc::clone(&store), "b");
    fill(&a, 1).await;
    fill(&b, 2).await;
    for table in SESSION_TABLES.iter().filter(|t| t.starts_with("wa_")) {
        assert!(rows(&store, table, "a") > 0, "fill leaves {table} empty");
    }

    store.end_session("a", &logged_out(5)).expect("end");

    for table in SESSION_TABLES {
        assert_eq!(rows(&store, table, "a"), 0, "{table} kept rows of a");
    }
    assert!(!store.session_exists("a").expect("exists"));
    // A client still winding down after the logout (its disconnect
    // flushes device state) cannot write the keys back.
    let err = a
        .store_prekey(9, b"late", false)
        .await
        .expect_err("a handle from before the logout");
    let source = std::error::Error::source(&err).expect("source").to_string();
    assert!(source.contains("has ended"), "{source}");
    assert_eq!(rows(&store, "wa_prekeys", "a"), 0);
    assert!(!store.session_exists("a").expect("exists"));
    // The next session's handle starts empty and works.
    let next = WaStore::new(Arc::clone(&store), "a");
    assert_empty(&next).await;
    fill(&next, 4).await;
    assert_filled(&next, 4).await;
    assert_eq!(
        store.instance("a").expect("read").expect("a").status,
        logged_out(5)
    );
    assert_filled(&b, 2).await;
    assert!(store.session_exists("b").expect("exists"));
}

#[tokio::test]
async fn end_session_rolls_back_the_deletes_when_the_status_write_fails() {
    let store = mem();
    // Keys but no instance row: the status write fails.
    let s = WaStore::new(Arc::clone(&store), "orphan");
    fill(&s, 3).await;
    let err = store
        .end_session("orphan", &logged_out(5))
        .expect_err("no instance row");
    assert!(matches!(err, StoreError::NoSuchInstance(_)), "{err:?}");
    assert_filled(&s, 3).await;
    assert!(store.session_exists("orphan").expect("exists"));

    store
        .ensure_instance("orphan", "whatsapp", 6)
        .expect("ensure");
    store.end_session("orphan", &logged_out(7)).expect("end");
    assert_empty(&WaStore::new(Arc::clone(&store), "orphan")).await;
}

#[tokio::test]
async fn sqlite_errors_become_wacore_database_errors_naming_the_operation() {
    let store = mem();
    store
        .with_conn("test drop", |c| c.execute_batch("DROP TABLE wa_prekeys"))
        .expect("drop");
    let s = WaStore::new(store, "a");
    let err = s.store_prekey(1, b"x", false).await.expect_err("no table");
    assert!(matches!(err, WaError::Database(_)), "{err:?}");
    let source = std::error::Error::source(&err).expect("source").to_string();
    assert!(source.starts_with("store_prekey: "), "{source}");
}

#[tokio::test]
async fn unreadable_json_is_a_serialization_error() {
    let store = mem();
    let s = WaStore::new(Arc::clone(&store), "a");
    s.run("test corrupt", |c, i| {
        kv_put(c, i, NS_DEVICE, DEVICE_KEY, b"{not json")
    })
    .unwrap();
    let err = s.load().await.err().expect("corrupt device");
    assert!(matches!(err, WaError::Serialization(_)), "{err:?}");
    let source = std::error::Error::source(&err).expect("source").to_string();
    assert!(source.starts_with("load_device: "), "{source}");
}

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::lifecycle::{ConnectionStatus, ReasonKind, StateName};

const ALL_STATES: [StateName; 8] = StateName::ALL;

const ALL_STATUSES: [ConnectionStatus; 3] = [
    ConnectionStatus::Open,
    ConnectionStatus::Connecting,
    ConnectionStatus::Close,
];

fn mem() -> Store {
    Store::open_in_memory().expect("in-memory store")
}

fn status(state: StateName, at: u64) -> StatusRow {
    StatusRow {
        connection_status: state.connection_status(),
        state,
        last_reason_code: None,
        last_reason_kind: None,
        last_reason_message: None,
        last_change_at: at,
        jid: None,
        push_name: None,
        logout_by: None,
    }
}

fn user_version(store: &Store) -> i64 {
    store
        .conn()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let store = Arc::new(mem());
    let s2 = Arc::clone(&store);
    std::thread::spawn(move || s2.ensure_instance("t", "wa", 1).map(|_| ()))
        .join()
        .expect("thread")
        .expect("ensure");
    assert!(store.instance("t").expect("read").is_some());
}

/// Durability stays WAL + NORMAL; checkpoints run at the larger limit.
#[test]
fn a_file_store_keeps_normal_sync_and_checkpoints_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("moonwire.db")).expect("open");
    let sync: i64 = store
        .conn()
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("synchronous");
    assert_eq!(sync, 1, "NORMAL");
    let pages: i64 = store
        .conn()
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .expect("wal_autocheckpoint");
    assert_eq!(pages, super::WAL_CHECKPOINT_PAGES);
}

#[test]
fn migrates_a_new_file_and_reopens_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("deeper").join("moonwire.db");
    {
        let store = Store::open(&path).expect("open new");
        assert_eq!(user_version(&store), schema::known_version());
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let fk: i64 = store
            .conn()
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .expect("foreign_keys");
        assert_eq!(fk, 1);
        store.ensure_instance("a", "whatsapp", 10).expect("ensure");
    }
    assert!(path.exists());
    let store = Store::open(&path).expect("reopen");
    assert_eq!(user_version(&store), schema::known_version());
    assert_eq!(store.instances().expect("list").len(), 1);
    drop(store);
    // A third open is just as uneventful.
    let store = Store::open(&path).expect("reopen again");
    assert_eq!(
        store
            .instance("a")
            .expect("read")
            .expect("present")
            .created_at,
        10
    );
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let too_new = schema::known_version() + 3;
    {
        let conn = Connection::open(&path).expect("raw open");
        conn.execute_batch(&format!("PRAGMA user_version = {too_new}"))
            .expect("bump");
    }
    let err = Store::open(&path).expect_err("must refuse");
    match &err {
        StoreError::TooNew { found, known } => {
            assert_eq!(*found, too_new);
            assert_eq!(*known, schema::known_version());
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&too_new.to_string()), "{msg}");
    assert!(msg.contains(&schema::known_version().to_string()), "{msg}");
}

#[test]
fn ensure_instance_creates_idle_and_keeps_an_existing_row() {
    let store = mem();
    let row = store
        .ensure_instance("bot", "whatsapp", 1_000)
        .expect("ensure");
    assert_eq!(row.name, "bot");
    assert_eq!(row.channel, "whatsapp");
    assert_eq!(row.created_at, 1_000);
    assert_eq!(
        row.status,
        StatusRow {
            connection_status: ConnectionStatus::Close,
            state: StateName::Idle,
            last_reason_code: None,
            last_reason_kind: None,
            last_reason_message: None,
            last_change_at: 1_000,
            jid: None,
            push_name: None,
            logout_by: None,
        }
    );
    let mut open = status(StateName::Open, 2_000);
    open.jid = Some("1@s.whatsapp.net".into());
    store.write_status("bot", &open).expect("write");
    let again = store
        .ensure_instance("bot", "telegram", 3_000)
        .expect("ensure again");
    assert_eq!(again.channel, "whatsapp");
    assert_eq!(again.created_at, 1_000);
    assert_eq!(again.status, open);
}

#[test]
fn every_state_status_and_reason_round_trips() {
    let store = mem();
    store.ensure_instance("i", "whatsapp", 1).expect("ensure");
    let mut at = 1;
    for state in ALL_STATES {
        for connection_status in ALL_STATUSES {
            for (n, kind) in ReasonKind::ALL
                .into_iter()
                .map(Some)
                .chain([None])
                .enumerate()
            {
                at += 1;
                let row = StatusRow {
                    connection_status,
                    state,
                    last_reason_code: kind.and_then(ReasonKind::default_code),
                    last_reason_kind: kind,
                    last_reason_message: (n % 4 == 0).then(|| format!("dial: refused ✗ {n}")),
                    last_change_at: at,
                    jid: (n % 2 == 0).then(|| format!("{n}@s.whatsapp.net")),
                    push_name: (n % 3 == 0).then(|| format!("Näme {n} ✓")),
                    logout_by: None,
                };
                store.write_status("i", &row).expect("write");
                let back = store.instance("i").expect("read").expect("present");
                assert_eq!(back.status, row);
                assert_eq!(store.instances().expect("list")[0].status, row);
            }
        }
    }
    // Extreme values survive too.
    let row = StatusRow {
        last_reason_code: Some(u16::MAX),
        last_change_at: i64::MAX as u64,
        ..status(StateName::Closed, 0)
    };
    store.write_status("i", &row).expect("write");
    assert_eq!(
        store.instance("i").expect("read").expect("present").status,
        row
    );
}

#[test]
fn a_timestamp_beyond_i64_is_an_error_not_a_wrap() {
    let store = mem();
    store.ensure_instance("i", "wa", 1).expect("ensure");
    let err = store
        .write_status("i", &status(StateName::Open, u64::MAX))
        .expect_err("out of range");
    assert!(
        matches!(
            err,
            StoreError::OutOfRange {
                column: "last_change_at",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        store.ensure_instance("j", "wa", u64::MAX),
        Err(StoreError::OutOfRange { .. })
    ));
}

#[test]
fn instances_are_ordered_by_name_and_missing_is_none() {
    let store = mem();
    for name in ["charlie", "alpha", "bravo"] {
        store.ensure_instance(name, "whatsapp", 5).expect("ensure");
    }
    let names: Vec<_> = store
        .instances()
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    assert_eq!(store.instance("delta").expect("read"), None);
}

#[test]
fn to_json_has_exactly_the_documented_fields() {
    let store = mem();
    store.ensure_instance("bot", "whatsapp", 7).expect("ensure");
    let row = store.instance("bot").expect("read").expect("present");
    let v = row.to_json();
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "channel",
            "connection_status",
            "created_at",
            "created_by",
            "jid",
            "last_change_at",
            "last_reason_code",
            "last_reason_kind",
            "last_reason_message",
            "logout_by",
            "name",
            "push_name",
            "state",
        ]
    );
    assert_eq!(
        v,
        json!({
            "name": "bot", "channel": "whatsapp", "connection_status": "close",
            "state": "idle", "last_reason_code": null, "last_reason_kind": null,
            "last_reason_message": null, "last_change_at": 7, "jid": null,
            "push_name": null, "created_at": 7, "created_by": "config", "logout_by": null,
        })
    );
    let full = InstanceRow {
        status: StatusRow {
            connection_status: ConnectionStatus::Close,
            state: StateName::LoggedOut,
            last_reason_code: Some(401),
            last_reason_kind: Some(ReasonKind::LoggedOut),
            last_reason_message: None,
            last_change_at: 9,
            jid: Some("1@s.whatsapp.net".into()),
            push_name: Some("Me".into()),
            logout_by: Some(crate::lifecycle::LogoutBy::User),
        },
        ..row
    };
    let v = full.to_json();
    assert_eq!(v["logout_by"], json!("user"));
    assert_eq!(v["last_reason_code"], json!(401));
    assert_eq!(v["last_reason_kind"], json!("logged_out"));
    assert_eq!(v["state"], json!("logged_out"));
    assert_eq!(v["jid"], json!("1@s.whatsapp.net"));
    assert_eq!(v["push_name"], json!("Me"));
}

#[test]
fn write_status_for_a_missing_instance_errors_and_creates_nothing() {
    let store = mem();
    let err = store
        .write_status("ghost", &status(StateName::Open, 1))
        .expect_err("missing");
    assert!(
        matches!(&err, StoreError::NoSuchInstance(n) if n == "ghost"),
        "{err:?}"
    );
    assert!(store.instances().expect("list").is_empty());
}

#[test]
fn session_put_get_exists() {
    let store = mem();
    assert!(!store.session_exists("a").expect("exists"));
    assert_eq!(store.session_get("a", "creds").expect("get"), None);
    store
        .session_put("a", "creds", b"\x00\x01binary\xff")
        .expect("put");
    assert!(store.session_exists("a").expect("exists"));
    assert_eq!(
        store.session_get("a", "creds").expect("get").as_deref(),
        Some(&b"\x00\x01binary\xff"[..])
    );
    store
        .session_put("a", "creds", b"replaced")
        .expect("overwrite");
    assert_eq!(
        store.session_get("a", "creds").expect("get").as_deref(),
        Some(&b"replaced"[..])
    );
    store.session_put("a", "empty", b"").expect("put empty");
    assert_eq!(
        store.session_get("a", "empty").expect("get"),
        Some(Vec::new())
    );
}

#[test]
fn end_session_deletes_sessions_and_writes_status_together() {
    let store = mem();
    store.ensure_instance("a", "whatsapp", 1).expect("ensure");
    store.ensure_instance("b", "whatsapp", 1).expect("ensure");
    store
        .write_status("a", &status(StateName::Open, 2))
        .expect("write");
    store.session_put("a", "creds", b"x").expect("put");
    store.session_put("a", "keys", b"y").expect("put");
    store.session_put("b", "creds", b"z").expect("put");

    let mut out = status(StateName::LoggedOut, 3);
    out.last_reason_code = Some(401);
    out.last_reason_kind = Some(ReasonKind::LoggedOut);
    store.end_session("a", &out).expect("end");

    assert!(!store.session_exists("a").expect("exists"));
    assert_eq!(store.session_get("a", "creds").expect("get"), None);
    assert_eq!(
        store.instance("a").expect("read").expect("present").status,
        out
    );
    // The other instance is untouched.
    assert_eq!(
        store.session_get("b", "creds").expect("get").as_deref(),
        Some(&b"z"[..])
    );
}

#[test]
fn end_session_rolls_back_when_the_status_write_fails() {
    let store = mem();
    // Session rows exist but the instance row does not: the status write fails.
    store
        .session_put("orphan", "creds", b"keep me")
        .expect("put");
    let err = store
        .end_session("orphan", &status(StateName::LoggedOut, 5))
        .expect_err("no instance row");
    assert!(matches!(err, StoreError::NoSuchInstance(_)), "{err:?}");
    assert!(store.session_exists("orphan").expect("exists"));
    assert_eq!(
        store
            .session_get("orphan", "creds")
            .expect("get")
            .as_deref(),
        Some(&b"keep me"[..])
    );
    // The connection is usable afterwards (no transaction left open).
    store
        .ensure_instance("orphan", "whatsapp", 6)
        .expect("ensure");
    store
        .end_session("orphan", &status(StateName::LoggedOut, 7))
        .expect("end");
    assert!(!store.session_exists("orphan").expect("exists"));
}

#[test]
fn instances_never_see_each_others_rows() {
    let store = mem();
    store.session_put("a", "creds", b"A").expect("put");
    store.kv_set("a", "s", "k", &json!("A"), 1).expect("set");
    assert_eq!(store.session_get("b", "creds").expect("get"), None);
    assert!(!store.session_exists("b").expect("exists"));
    assert_eq!(store.kv_get("b", "s", "k").expect("get"), None);
    assert!(store.kv_keys("b", "s").expect("keys").is_empty());

    store.session_put("b", "creds", b"B").expect("put");
    store.kv_set("b", "s", "k", &json!("B"), 1).expect("set");
    assert_eq!(
        store.session_get("a", "creds").expect("get").as_deref(),
        Some(&b"A"[..])
    );
    assert_eq!(store.kv_get("a", "s", "k").expect("get"), Some(json!("A")));
    assert_eq!(store.kv_get("b", "s", "k").expect("get"), Some(json!("B")));

    // Nor do two scripts of one instance.
    assert_eq!(store.kv_get("a", "other", "k").expect("get"), None);

    assert!(store.kv_delete("b", "s", "k").expect("delete"));
    assert_eq!(store.kv_get("a", "s", "k").expect("get"), Some(json!("A")));
}

#[test]
fn delete_instance_removes_its_rows_only() {
    let store = mem();
    for name in ["a", "b"] {
        store.ensure_instance(name, "whatsapp", 1).expect("ensure");
        store
            .session_put(name, "creds", name.as_bytes())
            .expect("put");
        store.kv_set(name, "s", "k", &json!(name), 1).expect("set");
    }
    store
        .journal_append(1, Some("a"), "opened", &json!({}))
        .expect("journal");
    assert!(store.delete_instance("a").expect("delete"));
    assert!(!store.delete_instance("a").expect("delete again"));
    assert_eq!(store.instance("a").expect("read"), None);
    assert!(!store.session_exists("a").expect("exists"));
    assert_eq!(store.kv_get("a", "s", "k").expect("get"), None);
    assert!(store.instance("b").expect("read").is_some());
    assert!(store.session_exists("b").expect("exists"));
    assert_eq!(store.kv_get("b", "s", "k").expect("get"), Some(json!("b")));
    // History is kept.
    assert_eq!(store.journal_recent(10).expect("journal").len(), 1);
}

#[test]
fn reconcile_after_a_simulated_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("moonwire.db");
    let others = [
        ("idle", StateName::Idle),
        ("closed", StateName::Closed),
        ("logged_out", StateName::LoggedOut),
        ("logging_out", StateName::LoggingOut),
    ];
    let mut before_others = Vec::new();
    {
        let store = Store::open(&path).expect("open");
        store
            .ensure_instance("live", "whatsapp", 1)
            .expect("ensure");
        let mut open = status(StateName::Open, 2);
        open.jid = Some("1@s.whatsapp.net".into());
        open.push_name = Some("Me".into());
        store.write_status("live", &open).expect("write");
        store.session_put("live", "creds", b"c").expect("put");

        store
            .ensure_instance("pairing", "whatsapp", 1)
            .expect("ensure");
        store
            .write_status("pairing", &status(StateName::Pairing, 2))
            .expect("write");

        store
            .ensure_instance("retrying", "whatsapp", 1)
            .expect("ensure");
        let mut retrying = status(StateName::Reconnecting, 2);
        retrying.last_reason_code = Some(428);
        retrying.last_reason_kind = Some(ReasonKind::ConnectionClosed);
        store.write_status("retrying", &retrying).expect("write");
        store.session_put("retrying", "creds", b"r").expect("put");

        for (name, state) in others {
            store.ensure_instance(name, "whatsapp", 1).expect("ensure");
            store.write_status(name, &status(state, 3)).expect("write");
            before_others.push(store.instance(name).expect("read").expect("present"));
        }
        // Simulated kill: no close, no cleanup; the WAL is left as is.
        std::mem::forget(store);
    }
    let store = Store::open(&path).expect("reopen");
    let got = store.reconcile(100).expect("reconcile");
    assert_eq!(
        got,
        [
            Reconciled {
                name: "live".into(),
                previous_state: StateName::Open,
                has_session: true
            },
            Reconciled {
                name: "pairing".into(),
                previous_state: StateName::Pairing,
                has_session: false
            },
            Reconciled {
                name: "retrying".into(),
                previous_state: StateName::Reconnecting,
                has_session: true
            },
        ]
    );
    let live = store.instance("live").expect("read").expect("present");
    assert_eq!(
        live.status,
        StatusRow {
            connection_status: ConnectionStatus::Close,
            state: StateName::Closed,
            last_reason_code: None,
            last_reason_kind: Some(ReasonKind::Interrupted),
            last_reason_message: None,
            last_change_at: 100,
            jid: Some("1@s.whatsapp.net".into()),
            push_name: Some("Me".into()),
            logout_by: None,
        }
    );
    let retrying = store.instance("retrying").expect("read").expect("present");
    assert_eq!(retrying.status.last_reason_code, None);
    assert_eq!(
        retrying.status.last_reason_kind,
        Some(ReasonKind::Interrupted)
    );
    // Reconcile does not touch session data.
    assert_eq!(
        store.session_get("live", "creds").expect("get").as_deref(),
        Some(&b"c"[..])
    );
    for before in before_others {
        assert_eq!(store.instance(&before.name).expect("read"), Some(before));
    }
    // Nothing left to repair the second time.
    assert!(store.reconcile(200).expect("reconcile again").is_empty());
}

#[test]
fn kv_set_get_delete_keys_with_nested_json() {
    let store = mem();
    let nested = json!({
        "list": [1, 2.5, "three", null, true, {"deep": {"deeper": [[], {}]}}],
        "unicode": "héllo ✓ \u{0}",
        "n": -42,
        "big": u64::MAX,
    });
    store
        .kv_set("i", "bot.lua", "state", &nested, 1)
        .expect("set");
    assert_eq!(
        store.kv_get("i", "bot.lua", "state").expect("get"),
        Some(nested)
    );
    store
        .kv_set("i", "bot.lua", "state", &json!(null), 2)
        .expect("overwrite");
    assert_eq!(
        store.kv_get("i", "bot.lua", "state").expect("get"),
        Some(json!(null))
    );
    store
        .kv_set("i", "bot.lua", "b", &json!([1]), 3)
        .expect("set");
    store
        .kv_set("i", "bot.lua", "a", &json!("s"), 3)
        .expect("set");
    assert_eq!(
        store.kv_keys("i", "bot.lua").expect("keys"),
        ["a", "b", "state"]
    );
    assert!(store.kv_delete("i", "bot.lua", "b").expect("delete"));
    assert!(!store.kv_delete("i", "bot.lua", "b").expect("delete again"));
    assert_eq!(store.kv_get("i", "bot.lua", "b").expect("get"), None);
    assert_eq!(store.kv_keys("i", "bot.lua").expect("keys"), ["a", "state"]);
}

#[test]
fn kv_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let value = json!({"counter": 3, "seen": ["x", "y"]});
    {
        let store = Store::open(&path).expect("open");
        store.kv_set("i", "s", "k", &value, 1).expect("set");
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.kv_get("i", "s", "k").expect("get"), Some(value));
}

#[test]
fn journal_is_bounded_and_newest_first() {
    let store = mem();
    let total = JOURNAL_LIMIT + 500;
    for i in 0..total {
        store
            .journal_append(
                i as u64,
                (i % 2 == 0).then_some("a"),
                "tick",
                &json!({ "i": i }),
            )
            .expect("append");
    }
    let count: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .expect("count");
    assert!(
        count <= (JOURNAL_LIMIT as i64) + JOURNAL_TRIM_EVERY,
        "{count}"
    );
    assert!(count >= JOURNAL_LIMIT as i64, "{count}");

    let recent = store.journal_recent(3).expect("recent");
    assert_eq!(recent.len(), 3);
    let last = total - 1;
    assert_eq!(recent[0].data, json!({ "i": last }));
    assert_eq!(recent[0].at, last as u64);
    assert_eq!(recent[1].data, json!({ "i": last - 1 }));
    assert_eq!(recent[2].data, json!({ "i": last - 2 }));
    assert!(recent.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(recent[0].kind, "tick");
    assert_eq!(
        recent[0].instance.as_deref(),
        last.is_multiple_of(2).then_some("a")
    );
    assert_eq!(
        recent[1].instance.as_deref(),
        (last - 1).is_multiple_of(2).then_some("a")
    );
    // The oldest rows are the ones that went.
    let all = store.journal_recent(usize::MAX).expect("all");
    assert_eq!(all.len() as i64, count);
    assert_eq!(
        all.last().expect("oldest").data,
        json!({ "i": total - all.len() })
    );
}

#[test]
fn corrupt_text_is_an_error_naming_the_column() {
    let store = mem();
    store.ensure_instance("bad", "whatsapp", 1).expect("ensure");
    store
        .ensure_instance("good", "whatsapp", 1)
        .expect("ensure");
    store
        .conn()
        .execute(
            "UPDATE instances SET state = 'bogus', connection_status = 'open' WHERE name = 'bad'",
            [],
        )
        .expect("corrupt it");
    let check = |err: StoreError| match err {
        StoreError::Corrupt {
            instance,
            column,
            value,
        } => {
            assert_eq!(
                (instance.as_str(), column, value.as_str()),
                ("bad", "state", "bogus")
            );
        }
        other => panic!("unexpected {other:?}"),
    };
    check(store.instance("bad").expect_err("corrupt"));
    check(store.instances().expect_err("corrupt"));
    check(store.reconcile(5).expect_err("corrupt"));
    assert!(store.instance("good").expect("good is fine").is_some());

    for (column, sql) in [
        (
            "connection_status",
            "UPDATE instances SET state = 'idle', connection_status = 'half' WHERE name = 'bad'",
        ),
        (
            "last_reason_kind",
            "UPDATE instances SET connection_status = 'close', last_reason_kind = 'meh' WHERE name = 'bad'",
        ),
        (
            "last_reason_code",
            "UPDATE instances SET last_reason_kind = NULL, last_reason_code = 70000 WHERE name = 'bad'",
        ),
        (
            "last_change_at",
            "UPDATE instances SET last_reason_code = NULL, last_change_at = -1 WHERE name = 'bad'",
        ),
        (
            "created_by",
            "UPDATE instances SET last_change_at = 1, created_by = 'aliens' WHERE name = 'bad'",
        ),
    ] {
        store.conn().execute(sql, []).expect("corrupt it");
        match store.instance("bad") {
            Err(StoreError::Corrupt { column: c, .. }) => assert_eq!(c, column),
            other => panic!("{column}: unexpected {other:?}"),
        }
    }
}

#[test]
fn a_poisoned_lock_is_recovered() {
    let store = Arc::new(mem());
    let s2 = Arc::clone(&store);
    let joined = std::thread::spawn(move || {
        let _guard = s2.conn();
        panic!("poison the mutex");
    })
    .join();
    assert!(joined.is_err());
    assert!(store.conn.is_poisoned());
    store
        .ensure_instance("still", "whatsapp", 1)
        .expect("works after poison");
}

#[test]
fn errors_say_what_was_being_done() {
    let store = mem();
    store.conn().execute_batch("DROP TABLE kv").expect("drop");
    let err = store
        .kv_set("i", "s", "k", &json!(1), 1)
        .expect_err("no table");
    assert!(err.to_string().starts_with("kv_set: "), "{err}");
    assert!(std::error::Error::source(&err).is_some());

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    // The parent "directory" is a file: creating it fails with an Io error.
    let err = Store::open(&file.join("m.db")).expect_err("parent is a file");
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
}

#[test]
fn api_tokens_map_to_one_instance_and_go_with_it() {
    let store = Store::open_in_memory().unwrap();
    store.ensure_instance("a", "console", 1).unwrap();
    store.set_token_hash("a", "h1", 2).unwrap();
    assert_eq!(store.token_instance("h1").unwrap().as_deref(), Some("a"));
    // Rotating replaces the old digest.
    store.set_token_hash("a", "h2", 3).unwrap();
    assert_eq!(store.token_instance("h1").unwrap(), None);
    assert_eq!(store.token_instance("h2").unwrap().as_deref(), Some("a"));
    store.delete_instance("a").unwrap();
    assert_eq!(store.token_instance("h2").unwrap(), None);
}

#[test]
fn a_version_2_file_gains_the_key_store_tables_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    {
        let conn = Connection::open(&path).expect("raw open");
        for sql in &schema::MIGRATIONS[..2] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO instances (name, channel, connection_status, state, last_change_at, created_at)
             VALUES ('old', 'whatsapp', 'close', 'idle', 1, 1);",
        )
        .expect("old row");
    }
    let store = Store::open(&path).expect("upgrade");
    assert_eq!(user_version(&store), schema::known_version());
    assert!(store.instance("old").expect("read").is_some());
    for table in SESSION_TABLES {
        let n: i64 = store
            .conn()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("new table exists");
        assert_eq!(n, 0, "{table}");
    }
}

//! The instances the API makes: row and token together, adoption by the
//! config file, and the migration that tells them apart in older files.

use rusqlite::Connection;

use super::*;
use crate::lifecycle::StateName;

fn mem() -> Store {
    Store::open_in_memory().expect("in-memory store")
}

fn user_version(store: &Store) -> i64 {
    store
        .conn()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

#[test]
fn an_api_instance_and_its_token_are_created_together_or_not_at_all() {
    let store = mem();
    let new = NewInstance {
        name: "api1",
        channel: "console",
        created_by: CreatedBy::Api,
        manual_scan: true,
        token_hash: Some("h1"),
    };
    let row = store.create_instance(&new, 5).expect("create");
    assert_eq!(row.created_by, CreatedBy::Api);
    assert!(row.manual_scan);
    assert_eq!(row.status.state, StateName::Idle);
    assert_eq!(store.token_instance("h1").unwrap().as_deref(), Some("api1"));
    // A taken name changes nothing, not even the token.
    let again = NewInstance {
        token_hash: Some("h2"),
        ..new.clone()
    };
    let err = store.create_instance(&again, 6).expect_err("exists");
    assert!(
        matches!(&err, StoreError::Exists(n) if n == "api1"),
        "{err:?}"
    );
    assert_eq!(store.token_instance("h2").unwrap(), None);
    assert_eq!(store.token_instance("h1").unwrap().as_deref(), Some("api1"));
    // A token digest already used by another instance rolls the row back.
    let clash = NewInstance {
        name: "api2",
        token_hash: Some("h1"),
        ..new
    };
    store
        .create_instance(&clash, 7)
        .expect_err("digest is unique");
    assert!(
        store.instance("api2").unwrap().is_none(),
        "no row without its token"
    );
    // Adopting makes it a configured instance; the token stays.
    assert!(store.adopt_instance("api1").unwrap());
    assert!(!store.adopt_instance("api1").unwrap(), "only once");
    assert_eq!(
        store.instance("api1").unwrap().unwrap().created_by,
        CreatedBy::Config
    );
    assert_eq!(store.token_instance("h1").unwrap().as_deref(), Some("api1"));
    assert_eq!(
        store
            .ensure_instance("cfg", "whatsapp", 8)
            .unwrap()
            .created_by,
        CreatedBy::Config
    );
}

#[test]
fn a_version_3_file_learns_which_instances_the_api_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    {
        let conn = Connection::open(&path).expect("raw open");
        for sql in &schema::MIGRATIONS[..3] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO instances (name, channel, connection_status, state, last_change_at, created_at)
             VALUES ('cfg', 'whatsapp', 'close', 'idle', 1, 1), ('api', 'console', 'open', 'open', 1, 1);
             INSERT INTO api_tokens (hash, instance, created_at) VALUES ('h', 'api', 1);",
        )
        .expect("old rows");
    }
    let store = Store::open(&path).expect("upgrade");
    assert_eq!(user_version(&store), schema::known_version());
    let cfg = store.instance("cfg").unwrap().unwrap();
    let api = store.instance("api").unwrap().unwrap();
    assert_eq!(
        (cfg.created_by, api.created_by),
        (CreatedBy::Config, CreatedBy::Api)
    );
    assert!(!api.manual_scan);
    assert_eq!(api.status.last_reason_message, None);
}

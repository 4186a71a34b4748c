//! Create, delete, logout and connect on one instance name, 50 at a time,
//! against `moonwire run` over real HTTP: whatever the interleaving, every
//! call is answered, and the end is one truth — the API, `status --json`
//! and the database agree, with no token or session left without its row.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "k";
const NAME: &str = "r";

/// name -> (state, connection_status)
type States = BTreeMap<String, (String, String)>;

fn states(list: &Value) -> States {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                (
                    i["state"].as_str().unwrap().to_string(),
                    i["connection_status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_operations_on_one_name_end_consistent() {
    let sb = Sandbox::new();
    let port = common::free_port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[[instance]]\nname = \"cfg\"\nchannel = \"console\"\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"{KEY}\"\n"
        ),
    )
    .unwrap();
    let child = common::spawn_run(sb.cmd());
    let mut child = common::Reaper::new(child);
    let base = format!("http://127.0.0.1:{port}");
    // No call may wait without a bound: the client gives up well after the
    // API's own 30 s.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .build()
        .unwrap();
    for _ in 0..400 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let db_path = sb.path().join("data").join("moonwire.db");

    for round in 0..4 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..50 {
            let http = http.clone();
            let base = base.clone();
            // A different mix each round, every kind in each.
            let (method, path, body) = match (i + round) % 4 {
                0 => (
                    "POST",
                    "/v1/instances".to_string(),
                    Some(json!({"name": NAME, "channel": "console"})),
                ),
                1 => ("DELETE", format!("/v1/instances/{NAME}"), None),
                2 => ("POST", format!("/v1/instances/{NAME}/logout"), None),
                _ => ("POST", format!("/v1/instances/{NAME}/connect"), None),
            };
            calls.spawn(async move {
                let mut req = http
                    .request(method.parse().unwrap(), format!("{base}{path}"))
                    .bearer_auth(KEY);
                if let Some(b) = body {
                    req = req.json(&b);
                }
                let resp = req.send().await.expect("answered within the bound");
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                (method, path, status, v)
            });
        }
        let mut tokens = Vec::new();
        while let Some(done) = calls.join_next().await {
            let (method, path, status, v) = done.unwrap();
            assert!(
                [
                    StatusCode::OK,
                    StatusCode::CREATED,
                    StatusCode::ACCEPTED,
                    StatusCode::NO_CONTENT,
                    StatusCode::NOT_FOUND,
                    StatusCode::CONFLICT,
                ]
                .contains(&status),
                "round {round}: {method} {path} -> {status} {v}"
            );
            if status == StatusCode::CREATED {
                assert_eq!(v["instance"]["created_by"], "api", "{v}");
                tokens.push(v["token"].as_str().unwrap().to_string());
            }
        }

        // Once the last state change lands, the API and the rows agree.
        let mut agreed = None;
        for _ in 0..400 {
            let api: Value = http
                .get(format!("{base}/v1/instances"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let out = sb.cmd().args(["status", "--json"]).output().unwrap();
            let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
            let (a, b) = (states(&api), states(&rows));
            if a == b {
                agreed = Some(a);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let agreed = agreed.unwrap_or_else(|| panic!("round {round}: API and status never agreed"));
        assert!(agreed.contains_key("cfg"));

        let db = rusqlite::Connection::open(&db_path).unwrap();
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM api_tokens WHERE instance NOT IN (SELECT name FROM instances)"
            ),
            0,
            "round {round}: a token without its instance"
        );
        for table in moonwire::store::SESSION_TABLES {
            assert_eq!(
                count(
                    &db,
                    &format!(
                        "SELECT COUNT(*) FROM {table} WHERE instance NOT IN (SELECT name FROM instances)"
                    )
                ),
                0,
                "round {round}: {table} rows without their instance"
            );
        }
        let exists = agreed.contains_key(NAME);
        let tokens_of_r = count(
            &db,
            &format!("SELECT COUNT(*) FROM api_tokens WHERE instance = '{NAME}'"),
        );
        assert_eq!(
            tokens_of_r,
            i64::from(exists),
            "round {round}: one token per API instance"
        );
        if exists {
            // The row belongs to the one create that won: its token works.
            let mut working = 0;
            for t in &tokens {
                let st = http
                    .get(format!("{base}/v1/instances/{NAME}"))
                    .bearer_auth(t)
                    .send()
                    .await
                    .unwrap()
                    .status();
                if st == StatusCode::OK {
                    working += 1;
                }
            }
            assert_eq!(working, 1, "round {round}: {} tokens issued", tokens.len());
        }
        // Whatever the state, the next calls answer at once.
        let st = http
            .delete(format!("{base}/v1/instances/{NAME}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            st == StatusCode::NO_CONTENT || (st == StatusCode::NOT_FOUND && !exists),
            "round {round}: {st}"
        );
    }

    let out = common::terminate(child.take()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("will retry"), "{err}");
    assert!(
        !err.contains("row is gone"),
        "no actor outlived its row: {err}"
    );
}

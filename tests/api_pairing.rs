//! The API's pairing and instance-management edges over real HTTP: manual
//! scan end to end, configured instances, bounded operations, and who may
//! read the OpenAPI document.

mod common;

use std::time::Duration;

use common::server::{Server, err_code, sse_until};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn an_instance_token_may_read_the_openapi_document() {
    // Decided: the document describes routes, holds no instance's data, and
    // a token holder needs it to build a client.
    let s = Server::start(vec![], false).await;
    let token = s.create("t").await;
    let (st, v) = s.call("GET", "/v1/openapi.json", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["paths"]["/v1/instances/{name}"].is_object());
    let desc = v["info"]["description"].as_str().unwrap();
    assert!(desc.contains("this document"), "{desc}");
}

#[tokio::test]
async fn a_manual_scan_console_instance_pairs_end_to_end() {
    let s = Server::launch(vec![], false, None, |dir| {
        std::fs::write(
            dir.join("qr.lua"),
            "function on_qr(p) bot.store.set('seen', {code = p.code, kind = p.kind}) end\n",
        )
        .unwrap();
    })
    .await;
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"name": "w", "channel": "whatsapp", "manual_scan": true})),
        )
        .await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        "{v}"
    );
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"name": "q", "channel": "console", "manual_scan": true})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let mut sse = s
        .http
        .get(s.url("/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    // Nothing on show yet: a scan has nothing to scan.
    let (st, v) = s.admin("POST", "/v1/instances/q/scan", None).await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::CONFLICT, "not_pairing"),
        "{v}"
    );
    // A new manual-scan account is not paired: connecting shows a QR.
    s.admin("POST", "/v1/instances/q/connect", None).await;
    s.wait_state("q", "pairing").await;
    let (st, qr) = s
        .call("GET", "/v1/instances/q/qr", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{qr}");
    assert_eq!(qr["kind"], "qr");
    let code = qr["code"].as_str().unwrap().to_string();
    let png = s
        .http
        .get(s.url("/v1/instances/q/qr"))
        .bearer_auth(&token)
        .header("Accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let ev = sse_until(&mut sse, |v| v["type"] == "qr").await;
    assert_eq!(
        (ev["instance"].clone(), ev["code"].clone()),
        (json!("q"), json!(code))
    );
    // on_qr saw the same code.
    s.app.host.settle().await;
    let seen = s.app.store.kv_get("q", "qr", "seen").unwrap();
    assert_eq!(seen, Some(json!({"code": code, "kind": "qr"})));
    // The simulated phone scans: pairing succeeds, the 515 restart opens.
    let (st, v) = s
        .call("POST", "/v1/instances/q/scan", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let v = s.wait_state("q", "open").await;
    assert_eq!(v["jid"], "me@console");
    // A WhatsApp instance cannot be scanned from here.
    s.admin(
        "POST",
        "/v1/instances",
        Some(json!({"name": "wa", "channel": "whatsapp"})),
    )
    .await;
    let (st, v) = s.admin("POST", "/v1/instances/wa/scan", None).await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::CONFLICT, "not_simulated"),
        "{v}"
    );
}

#[tokio::test]
async fn a_configured_instance_cannot_be_deleted_through_the_api() {
    let s = Server::start(vec![], false).await;
    s.app
        .start_instance("cfg", moonwire::config::ChannelKind::Console)
        .unwrap();
    let (st, v) = s.admin("GET", "/v1/instances/cfg", None).await;
    assert_eq!(
        (st, v["created_by"].clone()),
        (StatusCode::OK, json!("config"))
    );
    let (st, v) = s.admin("DELETE", "/v1/instances/cfg", None).await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::CONFLICT, "configured"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file")
    );
    assert!(s.app.store.instance("cfg").unwrap().is_some());
    // Nor created again.
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"name": "cfg", "channel": "console"})),
        )
        .await;
    assert_eq!((st, err_code(&v)), (StatusCode::CONFLICT, "exists"));
}

#[tokio::test]
async fn an_operation_that_cannot_finish_is_answered_504_and_still_finishes() {
    let s = Server::launch(vec![], false, Some(Duration::from_millis(300)), |_| {}).await;
    s.create("slow").await;
    s.open("slow").await;
    // Another connection to the same file refuses every status write.
    let db = rusqlite::Connection::open(s.dir.path().join("moonwire.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_writes BEFORE UPDATE ON instances BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (st, v) = tokio::time::timeout(
        Duration::from_secs(10),
        s.admin("POST", "/v1/instances/slow/logout", None),
    )
    .await
    .expect("answered in bounded time");
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
    // The next call on that name waits its turn, bounded too.
    let (st, _) = tokio::time::timeout(
        Duration::from_secs(10),
        s.admin("DELETE", "/v1/instances/slow", None),
    )
    .await
    .expect("answered in bounded time");
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT);
    db.execute_batch("DROP TRIGGER no_writes;").unwrap();
    // The logout went on and landed, then the delete.
    for _ in 0..500 {
        if s.app.store.instance("slow").unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.app.store.instance("slow").unwrap().is_none());
    let (st, _) = s.admin("GET", "/v1/instances/slow", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

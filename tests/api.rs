//! The admin API over real HTTP on 127.0.0.1, with simulated (console)
//! instances driven from the test through the library.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::server::{ADMIN, Server, err_code, sse_until};
use moonwire::api::webhook::sign;
use moonwire::api::{self};
use moonwire::config::{ApiConfig, WebhookConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn only_healthz_is_open() {
    let s = Server::start(vec![], false).await;
    let (st, v) = s.call("GET", "/healthz", None, None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"status": "ok"})));
    for (m, p) in [
        ("GET", "/v1/instances"),
        ("POST", "/v1/instances"),
        ("GET", "/v1/instances/x"),
        ("DELETE", "/v1/instances/x"),
        ("POST", "/v1/instances/x/connect"),
        ("GET", "/v1/instances/x/qr"),
        ("POST", "/v1/instances/x/logout"),
        ("POST", "/v1/instances/x/restart"),
        ("POST", "/v1/instances/x/scan"),
        ("POST", "/v1/instances/x/messages"),
        ("GET", "/v1/instances/x/groups"),
        ("GET", "/v1/instances/x/groups/g@g.us"),
        ("POST", "/v1/instances/x/groups/g@g.us/participants"),
        ("GET", "/v1/instances/x/groups/g@g.us/invite"),
        ("GET", "/v1/scripts"),
        ("POST", "/v1/scripts/reload"),
        ("GET", "/v1/events"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/metrics"),
    ] {
        let (st, v) = s.call(m, p, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{m} {p}");
        assert_eq!(err_code(&v), "unauthorized");
        let (st, _) = s.call(m, p, Some("wrong"), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{m} {p}");
    }
}

#[tokio::test]
async fn instances_are_created_listed_and_validated() {
    let s = Server::start(vec![], false).await;
    let token = s.create("shop").await;
    assert!(token.starts_with("mwt_"));
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"name": "shop", "channel": "console"})),
        )
        .await;
    assert_eq!((st, err_code(&v)), (StatusCode::CONFLICT, "exists"));
    for body in [
        json!({"name": "Bad Name", "channel": "console"}),
        json!({"name": "-x", "channel": "console"}),
        json!({"name": "ok", "channel": "telegram"}),
    ] {
        let (st, v) = s.admin("POST", "/v1/instances", Some(body.clone())).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
    }
    let (st, v) = s.admin("GET", "/v1/instances", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let one = &v[0];
    for field in [
        "name",
        "channel",
        "connection_status",
        "state",
        "last_reason_code",
        "last_reason_kind",
        "jid",
    ] {
        assert!(one.get(field).is_some(), "{field} missing: {one}");
    }
    assert_eq!(one["state"], "idle");
    // The token is never shown again, and never stored in the clear.
    assert!(!v.to_string().contains(&token));
    let (st, _) = s.admin("GET", "/v1/instances/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_instance_token_reaches_only_its_instance() {
    let s = Server::start(vec![], false).await;
    let a = s.create("a").await;
    let _b = s.create("b").await;
    let (st, v) = s.call("GET", "/v1/instances/a", Some(&a), None).await;
    assert_eq!((st, v["name"].clone()), (StatusCode::OK, json!("a")));
    for (m, p) in [
        ("GET", "/v1/instances/b"),
        ("POST", "/v1/instances/b/connect"),
        ("POST", "/v1/instances/b/logout"),
        ("DELETE", "/v1/instances/b"),
        ("GET", "/v1/instances/b/qr"),
        ("POST", "/v1/instances/b/scan"),
        ("GET", "/v1/instances"),
        ("GET", "/v1/scripts"),
        ("GET", "/v1/events?instance=b"),
        ("GET", "/metrics"),
    ] {
        let (st, v) = s.call(m, p, Some(&a), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{m} {p}: {v}");
    }
    let (st, _) = s
        .call(
            "POST",
            "/v1/instances",
            Some(&a),
            Some(json!({"name": "c", "channel": "console"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = s
        .call(
            "POST",
            "/v1/instances/b/messages",
            Some(&a),
            Some(json!({"to": "x@console", "text": "hi"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn pairing_shows_a_qr_as_json_and_png() {
    let s = Server::start(vec![], false).await;
    s.create("p").await;
    let sim = s.app.console_sim("p").unwrap();
    let (st, v) = s.admin("GET", "/v1/instances/p/qr", None).await;
    assert_eq!((st, err_code(&v)), (StatusCode::NOT_FOUND, "not_pairing"));
    assert!(v["error"]["message"].as_str().unwrap().contains("idle"));
    // Log the simulated account out so the next connect has to pair.
    s.open("p").await;
    // An open instance has no code, and connecting would not make one.
    let (st, v) = s.admin("GET", "/v1/instances/p/qr", None).await;
    assert_eq!((st, err_code(&v)), (StatusCode::NOT_FOUND, "not_pairing"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("state: open") && msg.contains("paired already"),
        "{msg}"
    );
    assert!(
        !msg.contains("connect"),
        "no advice to connect an open instance: {msg}"
    );
    sim.server_logout();
    s.wait_state("p", "logged_out").await;
    sim.set_manual_scan(true);
    s.admin("POST", "/v1/instances/p/connect", None).await;
    s.wait_state("p", "pairing").await;
    let (st, v) = s.admin("GET", "/v1/instances/p/qr", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["kind"], "qr");
    assert!(v["code"].as_str().unwrap().starts_with("2@console-"));
    assert!(v["expires_in"].as_u64().unwrap() <= 60);
    let png = s
        .http
        .get(s.url("/v1/instances/p/qr"))
        .bearer_auth(ADMIN)
        .header("Accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), StatusCode::OK);
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    sim.scan().unwrap();
    let v = s.wait_state("p", "open").await;
    assert_eq!(v["jid"], "me@console");
}

#[tokio::test]
async fn logout_answers_after_the_teardown_and_is_idempotent() {
    let s = Server::start(vec![], false).await;
    let token = s.create("l").await;
    s.open("l").await;
    let (st, v) = s
        .call("POST", "/v1/instances/l/logout", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], "logged_out");
    assert_eq!(v["connection_status"], "close");
    // The database already says so when the answer arrives.
    let row = s.app.store.instance("l").unwrap().unwrap();
    assert_eq!(row.status.state.as_str(), "logged_out");
    assert!(!s.app.store.session_exists("l").unwrap());
    let (st, v2) = s.admin("POST", "/v1/instances/l/logout", None).await;
    assert_eq!(
        (st, v2["state"].clone()),
        (StatusCode::OK, json!("logged_out"))
    );
    assert_eq!(v2["last_change_at"], v["last_change_at"]);
}

#[tokio::test]
async fn messages_send_when_open_conflict_when_not_and_queue_on_request() {
    let s = Server::start(vec![], false).await;
    s.create("m").await;
    s.open("m").await;
    let mut events = s.app.bus.subscribe();
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances/m/messages",
            Some(json!({"to": "you@console", "text": "hello"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["queued"], false);
    let out = next_out(&mut events).await;
    assert_eq!(out, id);

    let sim = s.app.console_sim("m").unwrap();
    sim.drop_connection(440).unwrap();
    s.wait_state("m", "closed").await;
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances/m/messages",
            Some(json!({"to": "you@console", "text": "x"})),
        )
        .await;
    assert_eq!((st, err_code(&v)), (StatusCode::CONFLICT, "not_open"));
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let (st, v) = s
            .admin(
                "POST",
                "/v1/instances/m/messages?queue=true",
                Some(json!({"to": "15551234567", "text": text})),
            )
            .await;
        assert_eq!(
            (st, v["queued"].clone()),
            (StatusCode::ACCEPTED, json!(true)),
            "{v}"
        );
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    s.open("m").await;
    assert_eq!(next_out(&mut events).await, ids[0]);
    assert_eq!(next_out(&mut events).await, ids[1]);
}

/// `GET .../messages/{id}`: a queued send shows `queued` until the next
/// open sends it; a failed one its reason; a logout fails what waits and
/// takes the rows with it (reported by a `send_failed` event).
#[tokio::test]
async fn a_send_shows_queued_then_sent_and_a_logout_fails_what_waits() {
    let s = Server::start(vec![], false).await;
    s.create("m").await;
    s.open("m").await;
    let mut events = s.app.bus.subscribe();
    let status = |id: String| {
        let s = &s;
        async move {
            s.admin("GET", &format!("/v1/instances/m/messages/{id}"), None)
                .await
        }
    };
    let sim = s.app.console_sim("m").unwrap();
    sim.drop_connection(440).unwrap();
    s.wait_state("m", "closed").await;
    let (st, v) = s
        .admin(
            "POST",
            "/v1/instances/m/messages?queue=true",
            Some(json!({"to": "you@console", "text": "later"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (st, v) = status(id.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].clone(), v["chat"].clone()),
        (json!("queued"), json!("you@console"))
    );
    assert_eq!(v["reason"], Value::Null);
    s.open("m").await;
    assert_eq!(next_out(&mut events).await, id);
    let (_, v) = status(id.clone()).await;
    assert_eq!(v["status"], "sent", "{v}");

    // A failure shows its reason.
    let failed = moonwire::store::OutboxItem {
        id: "3EB0FAILED".into(),
        chat: "x@console".into(),
        body: "{}".into(),
    };
    let seq = s.app.store.outbox_insert("m", &failed, 1).unwrap();
    s.app
        .store
        .outbox_record(
            "m",
            &[(
                seq,
                moonwire::store::SendOutcome::Failed("bad recipient".into()),
            )],
            2,
        )
        .unwrap();
    let (_, v) = status("3EB0FAILED".into()).await;
    assert_eq!(
        (v["status"].clone(), v["reason"].clone()),
        (json!("failed"), json!("bad recipient")),
        "{v}"
    );

    // Unknown ids and instances are 404s.
    let (st, v) = status("nope".into()).await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{v}"
    );
    let (st, _) = s.admin("GET", "/v1/instances/zz/messages/x", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Queued while closed, then a logout: reported failed, not kept.
    sim.drop_connection(440).unwrap();
    s.wait_state("m", "closed").await;
    let (_, v) = s
        .admin(
            "POST",
            "/v1/instances/m/messages?queue=true",
            Some(json!({"to": "you@console", "text": "never"})),
        )
        .await;
    let waiting = v["id"].as_str().unwrap().to_string();
    let (st, _) = s.admin("POST", "/v1/instances/m/logout", None).await;
    assert!(st.is_success(), "{st}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let reason = loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let moonwire::host::HostEvent::SendFailed { id, reason, .. } = ev {
            assert_eq!(id, waiting);
            break reason;
        }
    };
    assert_eq!(reason, "logged out");
    let (st, _) = status(waiting).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the row went with the logout");
}

async fn next_out(rx: &mut tokio::sync::broadcast::Receiver<moonwire::host::HostEvent>) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let moonwire::host::HostEvent::MessageOut { id, .. } = ev {
            return id;
        }
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_never_5xx() {
    let s = Server::start(vec![], false).await;
    s.create("b").await;
    s.open("b").await;
    let post = |path: &'static str, body: Vec<u8>, ctype: Option<&'static str>| {
        let mut r = s.http.post(s.url(path)).bearer_auth(ADMIN).body(body);
        if let Some(c) = ctype {
            r = r.header("Content-Type", c);
        }
        r.send()
    };
    let cases: Vec<(&str, Vec<u8>, Option<&str>, StatusCode)> = vec![
        (
            "/v1/instances",
            b"{not json".to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/instances",
            br#"{"name": 5, "channel": "console"}"#.to_vec(),
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/instances",
            br#"{"name": "x"}"#.to_vec(),
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/instances",
            br#"{"name": "x", "channel": "console", "extra": 1}"#.to_vec(),
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/instances",
            br#"{"name": "x", "channel": "console"}"#.to_vec(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/v1/instances",
            vec![b' '; 200_000],
            Some("application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "/v1/instances/b/messages",
            br#"{"to": "not a jid", "text": "x"}"#.to_vec(),
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/instances/b/messages",
            br#"{"to": "you@console", "text": ""}"#.to_vec(),
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/instances/b/messages",
            br#"{"to": "you@console", "text": 7}"#.to_vec(),
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/instances/b/messages?queue=maybe",
            br#"{"to": "you@console", "text": "x"}"#.to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, body, ctype, want) in cases {
        let resp = post(path, body, ctype).await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{path}: {v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{path}: {v}"
        );
    }
    let (st, v) = s.admin("GET", "/v1/nowhere", None).await;
    assert_eq!((st, err_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn restart_and_delete() {
    let s = Server::start(vec![], false).await;
    let token = s.create("d").await;
    s.open("d").await;
    let (st, _) = s.admin("POST", "/v1/instances/d/restart", None).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    s.wait_state("d", "open").await;
    let (st, v) = s.admin("DELETE", "/v1/instances/d", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, _) = s.admin("GET", "/v1/instances/d", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(s.app.store.instance("d").unwrap().is_none());
    let (st, _) = s.call("GET", "/v1/instances/d", Some(&token), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.admin("DELETE", "/v1/instances/d", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn scripts_status_and_reload() {
    let s = Server::start(vec![], false).await;
    s.create("s").await;
    // The engine loads on its own thread; let it finish first.
    s.app.host.settle().await;
    let (st, v) = s.admin("GET", "/v1/scripts", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0]["instance"], "s");
    assert_eq!(v[0]["generation"], 1);
    let dir = s.app.scripts.config().dir.clone();
    std::fs::write(dir.join("bad.lua"), "x = = 1\n").unwrap();
    let (st, v) = s.admin("POST", "/v1/scripts/reload", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0]["swapped"], false);
    assert_eq!(v[0]["generation"], 1);
    assert_eq!(v[0]["errors"][0]["line"], 1);
    assert!(
        v[0]["errors"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("bad.lua")
    );
    std::fs::write(dir.join("bad.lua"), "x = 1\n").unwrap();
    let (_, v) = s.admin("POST", "/v1/scripts/reload", None).await;
    assert_eq!(
        (v[0]["swapped"].clone(), v[0]["generation"].clone()),
        (json!(true), json!(2))
    );
}

#[tokio::test]
async fn sse_shows_the_state_lines_a_console_drop_prints() {
    let s = Server::start(vec![], false).await;
    let token = s.create("e").await;
    s.create("other").await;
    s.open("e").await;
    let mut resp = s
        .http
        .get(s.url("/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    s.open("other").await; // not this token's: filtered out
    s.app
        .console_sim("e")
        .unwrap()
        .drop_connection(408)
        .unwrap();
    let v = sse_until(&mut resp, |v| v["type"] == "state").await;
    assert_eq!(v["instance"], "e");
    let line = v["line"].as_str().unwrap();
    assert!(
        line.starts_with("reconnecting code=408 kind=connection_lost attempt=1 delay_ms="),
        "{line}"
    );
    let v = sse_until(&mut resp, |v| v["type"] == "state").await;
    assert_eq!(v["line"], "connecting attempt=1");
    let v = sse_until(&mut resp, |v| v["type"] == "state").await;
    assert_eq!(v["line"], "open jid=me@console");
}

#[tokio::test]
async fn webhooks_get_signed_events_and_a_500_is_retried_once() {
    use axum::{Router, body::Bytes, extract::State as S, http::HeaderMap, routing::post};
    type Seen = Arc<std::sync::Mutex<Vec<(HeaderMap, Bytes)>>>;
    let seen: Seen = Default::default();
    async fn hook(S(seen): S<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let mut s = seen.lock().unwrap();
        s.push((headers, body));
        // The first delivery fails, the rest succeed.
        if s.len() == 1 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let s = Server::start(
        vec![WebhookConfig {
            url: url.clone(),
            events: vec!["state".into()],
            secret: Some("s3cret".into()),
        }],
        false,
    )
    .await;
    s.create("w").await;
    s.admin("POST", "/v1/instances/w/connect", None).await;
    s.wait_state("w", "open").await;
    // connecting, then open: two events, the first delivered on its retry.
    for _ in 0..200 {
        if s.webhooks.as_ref().unwrap().stats()[0].delivered >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = &s.webhooks.as_ref().unwrap().stats()[0];
    assert_eq!((stats.delivered, stats.retries, stats.failed), (2, 1, 0));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    // Same event twice (the retry), then the next one.
    assert_eq!(seen[0].1, seen[1].1);
    for (headers, body) in seen.iter() {
        assert_eq!(
            headers["x-moonwire-signature"].to_str().unwrap(),
            sign("s3cret", body)
        );
        assert_eq!(headers["x-moonwire-event"], "state");
    }
    let first: Value = serde_json::from_slice(&seen[0].1).unwrap();
    let second: Value = serde_json::from_slice(&seen[2].1).unwrap();
    assert_eq!(first["line"], "connecting attempt=1");
    assert_eq!(second["line"], "open jid=me@console");
    assert!(!String::from_utf8_lossy(&seen[0].1).contains("s3cret"));
}

#[tokio::test]
async fn metrics_need_the_key_unless_public() {
    let s = Server::start(vec![], false).await;
    s.create("x").await;
    s.open("x").await;
    let resp = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("moonwire_instances{state=\"open\"} 1"),
        "{text}"
    );
    assert!(text.contains("moonwire_state_changes_total"), "{text}");
    let p = Server::start(vec![], true).await;
    let resp = p.http.get(p.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let s = Server::start(vec![], false).await;
    let (st, v) = s.admin("GET", "/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    let mut paths: Vec<&str> = v["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/metrics",
            "/v1/events",
            "/v1/instances",
            "/v1/instances/{name}",
            "/v1/instances/{name}/connect",
            "/v1/instances/{name}/groups",
            "/v1/instances/{name}/groups/{jid}",
            "/v1/instances/{name}/groups/{jid}/invite",
            "/v1/instances/{name}/groups/{jid}/participants",
            "/v1/instances/{name}/hooks/{path}",
            "/v1/instances/{name}/logout",
            "/v1/instances/{name}/media/{id}",
            "/v1/instances/{name}/messages",
            "/v1/instances/{name}/messages/{id}",
            "/v1/instances/{name}/qr",
            "/v1/instances/{name}/restart",
            "/v1/instances/{name}/scan",
            "/v1/openapi.json",
            "/v1/scripts",
            "/v1/scripts/reload",
        ]
    );
    // For .ci/run's schema validator.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn the_admin_key_is_generated_once_with_mode_0600_and_required_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ApiConfig {
        listen: "127.0.0.1:8080".parse().unwrap(),
        key: None,
        metrics_public: false,
    };
    let k1 = api::admin_key(&cfg, dir.path()).unwrap();
    let k2 = api::admin_key(&cfg, dir.path()).unwrap();
    assert_eq!(k1, k2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("api.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = ApiConfig {
        listen: "0.0.0.0:8080".parse().unwrap(),
        ..cfg.clone()
    };
    assert!(
        api::admin_key(&public, dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a loopback")
    );
    let explicit = ApiConfig {
        key: Some("k".into()),
        ..public
    };
    assert_eq!(api::admin_key(&explicit, dir.path()).unwrap(), "k");
}

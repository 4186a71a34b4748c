//! The API's rich messages over real HTTP: content as JSON (media as
//! base64 or by URL under the `[script.http]` address rules, location,
//! poll, mentions, quotes), edits and revokes, the downloaded-media route
//! and its auth, outgoing `message` events carrying the message object,
//! and 4xx for every malformed body.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::server::{ADMIN, Server, err_code};
use moonwire::api;
use moonwire::automation::net::AllowList;
use moonwire::channel::MediaKind;
use moonwire::channel::console::ConsoleInput;
use moonwire::host::HostEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;

/// The next outgoing `message` event's JSON, as webhooks and SSE get it.
async fn next_out(rx: &mut Receiver<HostEvent>) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("an outgoing message in time")
            .unwrap();
        if matches!(ev, HostEvent::MessageOut { .. }) {
            let (kind, v) = api::events::event_json(&ev);
            assert_eq!(kind, "message");
            return v;
        }
    }
}

/// The next incoming `message` event's JSON.
async fn next_in(rx: &mut Receiver<HostEvent>) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("an incoming message in time")
            .unwrap();
        if matches!(ev, HostEvent::MessageIn { .. }) {
            return api::events::event_json(&ev).1;
        }
    }
}

async fn post(s: &Server, name: &str, body: Value) -> (StatusCode, Value) {
    s.admin(
        "POST",
        &format!("/v1/instances/{name}/messages"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn each_content_form_is_sent_and_its_event_carries_the_message() {
    let s = Server::start(vec![], false).await;
    s.create("r").await;
    s.open("r").await;
    let mut events = s.app.bus.subscribe();

    let (st, v) = post(&s, "r", json!({"to": "you@console", "text": "plain"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let e = next_out(&mut events).await;
    assert_eq!(e["id"], v["id"]);
    assert_eq!(
        (
            &e["direction"],
            &e["message_type"],
            &e["text"],
            &e["from_me"]
        ),
        (&json!("out"), &json!("text"), &json!("plain"), &json!(true))
    );

    let png = b"\x89PNG fake image bytes".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let (st, v) = post(
        &s,
        "r",
        json!({"to": "15551234567", "image": {"base64": b64, "file_name": "x.png"},
               "caption": "look", "quote": "c1"}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let e = next_out(&mut events).await;
    assert_eq!(e["chat"], "15551234567@s.whatsapp.net");
    assert_eq!(e["message_type"], "image");
    assert_eq!(e["text"], "look");
    assert_eq!(e["quote"], "c1");
    assert_eq!(
        e["media"],
        json!({"kind": "image", "mime": "image/png", "size": png.len(),
               "file_name": "x.png", "voice": false})
    );
    // Metadata only: the bytes are nowhere in the event.
    assert!(!e.to_string().contains(&b64), "{e}");

    let (st, v) = post(
        &s,
        "r",
        json!({"to": "you@console", "audio": {"base64": "b2dnIQ=="}, "voice": true}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let e = next_out(&mut events).await;
    assert_eq!(
        (
            &e["media"]["kind"],
            &e["media"]["voice"],
            &e["media"]["size"]
        ),
        (&json!("audio"), &json!(true), &json!(4))
    );

    let (st, _) = post(
        &s,
        "r",
        json!({"to": "you@console", "location": {"lat": 52.52, "lng": 13.405, "name": "Berlin"}}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let e = next_out(&mut events).await;
    assert_eq!(e["message_type"], "location");
    assert_eq!(
        e["location"],
        json!({"lat": 52.52, "lng": 13.405, "name": "Berlin"})
    );

    let (st, _) = post(
        &s,
        "r",
        json!({"to": "you@console", "poll": {"name": "Lunch?", "options": ["pizza", "sushi"]}}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let e = next_out(&mut events).await;
    assert_eq!(e["message_type"], "poll");
    assert_eq!(
        e["poll"],
        json!({"name": "Lunch?", "options": ["pizza", "sushi"], "selectable": 1})
    );

    let (st, _) = post(
        &s,
        "r",
        json!({"to": "team@g.us", "text": "hi @15550001111", "mentions": ["15550001111"]}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let e = next_out(&mut events).await;
    assert_eq!(e["is_group"], true);
    assert_eq!(e["mentions"], json!(["15550001111@s.whatsapp.net"]));
}

#[tokio::test]
async fn media_by_url_follows_the_script_http_address_rules() {
    // A local file server: loopback is refused unless allowed.
    let app = axum::Router::new()
        .route(
            "/files/report.pdf",
            axum::routing::get(|| async {
                ([("content-type", "application/pdf")], "%PDF-1.4 tiny")
            }),
        )
        .route(
            "/missing",
            axum::routing::get(|| async { (StatusCode::NOT_FOUND, "no") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");

    let s = Server::start(vec![], false).await;
    s.create("u").await;
    s.open("u").await;
    let (st, v) = post(
        &s,
        "u",
        json!({"to": "you@console", "document": {"url": url("/files/report.pdf")}}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("allow"),
        "{v}"
    );

    let s = Server::launch_with_engine(
        vec![],
        false,
        None,
        |_| {},
        |e| e.http.allow = AllowList::parse(&["127.0.0.1"]).unwrap(),
    )
    .await;
    s.create("u").await;
    s.open("u").await;
    let mut events = s.app.bus.subscribe();
    let (st, v) = post(
        &s,
        "u",
        json!({"to": "you@console", "document": {"url": url("/files/report.pdf")}, "caption": "q3"}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let e = next_out(&mut events).await;
    assert_eq!(
        e["media"],
        json!({"kind": "document", "mime": "application/pdf", "size": 13,
               "file_name": "report.pdf", "voice": false})
    );
    let (st, v) = post(
        &s,
        "u",
        json!({"to": "you@console", "image": {"url": url("/missing")}}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("404"),
        "{v}"
    );
}

#[tokio::test]
async fn edits_and_revokes_go_out_and_need_an_open_instance() {
    let s = Server::start(vec![], false).await;
    s.create("e").await;
    s.open("e").await;
    let mut events = s.app.bus.subscribe();
    let (_, v) = post(&s, "e", json!({"to": "you@console", "text": "draft"})).await;
    let id = v["id"].as_str().unwrap().to_string();
    next_out(&mut events).await;

    let (st, v) = s
        .admin(
            "PATCH",
            &format!("/v1/instances/e/messages/{id}"),
            Some(json!({"chat": "you@console", "text": "final"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let e = next_out(&mut events).await;
    assert_eq!(
        (&e["message_type"], &e["target"], &e["text"]),
        (&json!("edit"), &json!(id), &json!("final"))
    );
    assert_ne!(e["id"], json!(id), "an edit has an id of its own");

    let (st, v) = s
        .admin(
            "DELETE",
            &format!("/v1/instances/e/messages/{id}?chat=you@console"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let e = next_out(&mut events).await;
    assert_eq!(
        (&e["message_type"], &e["target"]),
        (&json!("revoke"), &json!(id))
    );

    s.app
        .console_sim("e")
        .unwrap()
        .drop_connection(440)
        .unwrap();
    s.wait_state("e", "closed").await;
    let (st, v) = s
        .admin(
            "PATCH",
            &format!("/v1/instances/e/messages/{id}"),
            Some(json!({"chat": "you@console", "text": "late"})),
        )
        .await;
    assert_eq!((st, err_code(&v)), (StatusCode::CONFLICT, "not_open"));
    let (st, v) = s
        .admin(
            "DELETE",
            &format!("/v1/instances/e/messages/{id}?chat=you@console"),
            None,
        )
        .await;
    assert_eq!((st, err_code(&v)), (StatusCode::CONFLICT, "not_open"));
}

const DOWNLOADER: &str = r#"
function on_message(m)
  if m.media then
    local path, err = m:download()
    bot.send(m.chat, path and "saved" or ("no: " .. err))
  end
end
"#;

#[tokio::test]
async fn downloaded_media_is_served_to_authorised_callers_only() {
    let s = Server::launch(vec![], false, None, |dir| {
        std::fs::write(dir.join("dl.lua"), DOWNLOADER).unwrap();
    })
    .await;
    let token = s.create("d").await;
    let other = s.create("o").await;
    s.open("d").await;
    let mut events = s.app.bus.subscribe();
    let mut events_in = s.app.bus.subscribe();
    let file = s.dir.path().join("in.jpg");
    std::fs::write(&file, b"jpeg!bytes").unwrap();
    let id = s
        .app
        .console_sim("d")
        .unwrap()
        .deliver_input(ConsoleInput::Media {
            kind: MediaKind::Image,
            path: file,
            caption: None,
            voice: false,
        })
        .unwrap();
    let e = next_out(&mut events).await;
    assert_eq!(e["text"], "saved", "{e}");
    // The inbound event carried the message object: media as metadata,
    // where its bytes are stays out.
    let inbound = next_in(&mut events_in).await;
    assert_eq!(
        (
            &inbound["id"],
            &inbound["message_type"],
            &inbound["direction"]
        ),
        (&json!(id), &json!("image"), &json!("in"))
    );
    assert_eq!(
        inbound["media"],
        json!({"kind": "image", "mime": "image/jpeg", "size": 10, "file_name": "in.jpg",
               "seconds": null, "voice": false, "width": null, "height": null})
    );
    assert!(
        !inbound
            .to_string()
            .contains(&s.dir.path().display().to_string()),
        "{inbound}"
    );

    let path = format!("/v1/instances/d/media/{id}");
    for key in [ADMIN, token.as_str()] {
        let resp = s
            .http
            .get(s.url(&path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "image/jpeg");
        assert_eq!(&resp.bytes().await.unwrap()[..], b"jpeg!bytes");
    }
    let resp = s.http.get(s.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (st, _) = s.call("GET", &path, Some(&other), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for missing in [
        "/v1/instances/d/media/c99",
        "/v1/instances/d/media/..%2F..%2Fmoonwire.db",
        "/v1/instances/nobody/media/c1",
    ] {
        let (st, v) = s.admin("GET", missing, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{missing}: {v}");
    }
}

#[tokio::test]
async fn malformed_rich_bodies_get_4xx_never_5xx() {
    let s = Server::start(vec![], false).await;
    s.create("b").await;
    s.open("b").await;
    let to = "you@console";
    let cases: Vec<Value> = vec![
        json!({"to": to}),
        json!({"to": to, "text": ""}),
        json!({"to": to, "image": {"base64": "aGk="}, "video": {"base64": "aGk="}}),
        json!({"to": to, "image": {}}),
        json!({"to": to, "image": {"base64": "aGk=", "url": "http://example.org/x"}}),
        json!({"to": to, "image": {"base64": "!!not base64!!"}}),
        json!({"to": to, "image": {"base64": ""}}),
        json!({"to": to, "image": {"url": "file:///etc/passwd"}}),
        json!({"to": to, "image": {"url": "not a url"}}),
        json!({"to": to, "image": {"url": "http://127.0.0.1:1/x"}}),
        json!({"to": to, "image": "cat.jpg"}),
        json!({"to": to, "text": "a", "caption": "b"}),
        json!({"to": to, "image": {"base64": "aGk="}, "text": "a", "caption": "b"}),
        json!({"to": to, "image": {"base64": "aGk="}, "voice": true}),
        json!({"to": to, "poll": {"name": "x", "options": ["only"]}}),
        json!({"to": to, "poll": {"name": "x", "options": ["a", "a"]}}),
        json!({"to": to, "poll": {"name": "x"}}),
        json!({"to": to, "location": {"lat": 91, "lng": 0}}),
        json!({"to": to, "location": {"lat": "north", "lng": 0}}),
        json!({"to": to, "text": "x", "location": {"lat": 1, "lng": 2}}),
        json!({"to": to, "text": "x", "mentions": ["nobody"]}),
        json!({"to": to, "text": "x", "mentions": "15550001111"}),
        json!({"to": to, "text": "x", "quote": "a", "quote_id": "b"}),
        json!({"to": to, "text": "x", "colour": "red"}),
        json!({"to": to, "mime": "image/png", "text": "x"}),
    ];
    for body in cases {
        let (st, v) = post(&s, "b", body.clone()).await;
        assert!(st.is_client_error(), "{body}: {st} {v}");
        assert!(v["error"]["message"].is_string(), "{body}: {v}");
    }
    let id = "3EB0AAAA";
    for (method, path, body) in [
        (
            "PATCH",
            format!("/v1/instances/b/messages/{id}"),
            Some(json!({"chat": to})),
        ),
        (
            "PATCH",
            format!("/v1/instances/b/messages/{id}"),
            Some(json!({"chat": to, "text": ""})),
        ),
        (
            "PATCH",
            format!("/v1/instances/b/messages/{id}"),
            Some(json!({"chat": "nope", "text": "x"})),
        ),
        (
            "PATCH",
            format!("/v1/instances/b/messages/{id}"),
            Some(json!({"chat": to, "text": "x", "more": 1})),
        ),
        ("DELETE", format!("/v1/instances/b/messages/{id}"), None),
        (
            "DELETE",
            format!("/v1/instances/b/messages/{id}?chat=nope"),
            None,
        ),
    ] {
        let (st, v) = s.admin(method, &path, body.clone()).await;
        assert!(st.is_client_error(), "{method} {path} {body:?}: {st} {v}");
    }
    // Base64 past the media limit is refused before it is decoded.
    let big = "A".repeat(150_000);
    let s2 =
        Server::launch_with_engine(vec![], false, None, |_| {}, |e| e.max_media = 100_000).await;
    s2.create("b").await;
    s2.open("b").await;
    let (st, v) = post(&s2, "b", json!({"to": to, "document": {"base64": big}})).await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{v}"
    );
}

/// One part: name, file name, type, bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A multipart/form-data body by hand.
fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let boundary = "moonwire-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, ctype, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disp = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = file {
            disp.push_str(&format!("; filename=\"{f}\""));
        }
        body.extend_from_slice(disp.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(c) = ctype {
            body.extend_from_slice(format!("Content-Type: {c}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn a_multipart_upload_sends_its_file() {
    let s = Server::start(vec![], false).await;
    s.create("m").await;
    s.open("m").await;
    let mut events = s.app.bus.subscribe();
    let send = |ctype: String, body: Vec<u8>| {
        s.http
            .post(s.url("/v1/instances/m/messages"))
            .bearer_auth(ADMIN)
            .header("Content-Type", ctype)
            .body(body)
            .send()
    };
    let (ctype, body) = multipart(&[
        (
            "message",
            None,
            None,
            br#"{"to": "you@console", "caption": "minutes"}"#,
        ),
        (
            "document",
            Some("minutes.pdf"),
            Some("application/pdf"),
            b"%PDF-1.7 minutes",
        ),
    ]);
    let resp = send(ctype, body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let e = next_out(&mut events).await;
    assert_eq!(e["text"], "minutes");
    assert_eq!(
        e["media"],
        json!({"kind": "document", "mime": "application/pdf", "size": 16,
               "file_name": "minutes.pdf", "voice": false})
    );

    for parts in [
        // No message part; two files; an unknown part; bad JSON in message.
        vec![("image", Some("a.png"), None, &b"x"[..])],
        vec![
            ("message", None, None, &br#"{"to": "you@console"}"#[..]),
            ("image", Some("a.png"), None, &b"x"[..]),
            ("video", Some("a.mp4"), None, &b"y"[..]),
        ],
        vec![
            ("message", None, None, &br#"{"to": "you@console"}"#[..]),
            ("colour", None, None, &b"red"[..]),
        ],
        vec![("message", None, None, &b"{not json"[..])],
        vec![
            (
                "message",
                None,
                None,
                &br#"{"to": "you@console", "image": {"base64": "aGk="}}"#[..],
            ),
            ("image", Some("a.png"), None, &b"x"[..]),
        ],
    ] {
        let (ctype, body) = multipart(&parts);
        let resp = send(ctype, body).await.unwrap();
        let st = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(st.is_client_error(), "{parts:?}: {st} {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // A broken multipart body (no closing boundary, wrong boundary).
    let resp = send(
        "multipart/form-data; boundary=nope".into(),
        b"--other\r\ngarbage".to_vec(),
    )
    .await
    .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

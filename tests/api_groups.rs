//! The group routes over real HTTP against a console instance's simulated
//! groups: listing, one group's metadata, participant changes with their
//! per-user outcome, the invite link; every 4xx (bad ids and bodies, not an
//! admin, not a member, unknown group, not open, another instance's
//! token); and group events as SSE and webhook JSON.

mod common;

use std::time::Duration;

use common::server::{ADMIN, Server, err_code, sse_until};
use moonwire::api;
use moonwire::channel::console::GroupLine;
use moonwire::host::HostEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};

const G: &str = "team@g.us";

/// An open console instance `r` in group `team@g.us` (created by you,
/// with ann and bob), the bot an admin if `admin`.
async fn server(admin: bool) -> Server {
    let s = Server::start(vec![], false).await;
    s.create("r").await;
    s.open("r").await;
    let sim = s.app.console_sim("r").unwrap();
    sim.group_line(GroupLine::Create {
        chat: G.into(),
        subject: "Team".into(),
        members: vec![
            "you@console".into(),
            "ann@console".into(),
            "bob@console".into(),
        ],
    })
    .unwrap();
    if admin {
        sim.group_line(GroupLine::Promote {
            chat: G.into(),
            user: "me@console".into(),
        })
        .unwrap();
    }
    s.app.host.settle().await;
    s
}

async fn change(s: &Server, group: &str, body: Value) -> (StatusCode, Value) {
    s.admin(
        "POST",
        &format!("/v1/instances/r/groups/{group}/participants"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn groups_are_listed_read_changed_and_linked() {
    let s = server(true).await;
    let (st, v) = s.admin("GET", "/v1/instances/r/groups", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["jid"], G);

    let (st, v) = s
        .admin("GET", &format!("/v1/instances/r/groups/{G}"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["subject"], "Team");
    assert_eq!(v["owner"], "you@console");
    let admins: Vec<&str> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["admin"] == true)
        .map(|p| p["jid"].as_str().unwrap())
        .collect();
    assert_eq!(admins, ["you@console", "me@console"]);

    let (st, v) = change(
        &s,
        G,
        json!({"action": "remove", "users": ["bob@console", "zed@console"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["results"][0],
        json!({"jid": "bob@console", "error": null})
    );
    assert_eq!(v["results"][1]["jid"], "zed@console");
    assert!(
        v["results"][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("404")
    );
    let (_, v) = s
        .admin("GET", &format!("/v1/instances/r/groups/{G}"), None)
        .await;
    assert_eq!(v["participants"].as_array().unwrap().len(), 3, "{v}");

    let (st, v) = change(
        &s,
        G,
        json!({"action": "promote", "users": ["ann@console"]}),
    )
    .await;
    assert_eq!((st, &v["ok"]), (StatusCode::OK, &json!(true)), "{v}");

    let (st, v) = s
        .admin("GET", &format!("/v1/instances/r/groups/{G}/invite"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["link"], "https://chat.whatsapp.com/console-team");
}

#[tokio::test]
async fn every_refusal_is_a_4xx_with_its_reason() {
    let s = server(false).await;
    let other_token = s.create("other").await;
    let cases: Vec<(&str, String, Option<Value>, StatusCode, &str)> = vec![
        (
            "GET",
            "/v1/instances/nope/groups".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/v1/instances/r/groups/15551234567@s.whatsapp.net".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "GET",
            "/v1/instances/r/groups/nowhere@g.us".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            format!("/v1/instances/r/groups/{G}/invite"),
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "POST",
            format!("/v1/instances/r/groups/{G}/participants"),
            Some(json!({"action": "remove", "users": ["bob@console"]})),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "POST",
            format!("/v1/instances/r/groups/{G}/participants"),
            Some(json!({"action": "kick", "users": ["bob@console"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/v1/instances/r/groups/{G}/participants"),
            Some(json!({"action": "add", "users": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/v1/instances/r/groups/{G}/participants"),
            Some(json!({"action": "add", "users": ["not a user"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/v1/instances/r/groups/{G}/participants"),
            Some(json!({"action": "add", "users": ["a@console"], "extra": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/v1/instances/r/groups/{G}/participants"),
            Some(
                json!({"action": "add", "users": (0..1025).map(|i| format!("1555000{i:04}")).collect::<Vec<_>>()}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "GET",
            "/v1/instances/r/groups/a%20b@g.us".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "GET",
            "/v1/instances/other/groups".into(),
            None,
            StatusCode::CONFLICT,
            "not_open",
        ),
    ];
    for (m, path, body, status, code) in cases {
        let (st, v) = s.call(m, &path, Some(ADMIN), body).await;
        assert_eq!((st, err_code(&v)), (status, code), "{m} {path}: {v}");
    }
    // Not an admin: the server's reason is in the message.
    let (_, v) = change(&s, G, json!({"action": "remove", "users": ["bob@console"]})).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an admin"),
        "{v}"
    );
    // Another instance's token reaches nothing of r.
    let (st, v) = s
        .call("GET", "/v1/instances/r/groups", Some(&other_token), None)
        .await;
    assert_eq!((st, err_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    // Not a member any more: 403 for the group.
    s.app
        .console_sim("r")
        .unwrap()
        .group_line(GroupLine::Leave {
            chat: G.into(),
            user: "me@console".into(),
        })
        .unwrap();
    s.app.host.settle().await;
    let (st, v) = s
        .admin("GET", &format!("/v1/instances/r/groups/{G}"), None)
        .await;
    assert_eq!(
        (st, err_code(&v)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{v}"
    );
}

#[tokio::test]
async fn group_events_go_out_as_sse_and_webhook_json() {
    let s = server(true).await;
    let mut bus = s.app.bus.subscribe();
    let mut sse = s
        .http
        .get(s.url("/v1/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    // The stream is up once it carries anything; a join then follows.
    s.app
        .console_sim("r")
        .unwrap()
        .group_line(GroupLine::Join {
            chat: G.into(),
            user: "cy@console".into(),
        })
        .unwrap();
    let want = json!({
        "type": "group",
        "instance": "r",
        "chat": G,
        "action": "add",
        "participants": ["cy@console"],
        "by": "cy@console",
        "value": null,
    });
    let got = sse_until(&mut sse, |v| v["type"] == "group").await;
    assert_eq!(got, want);
    let ev = loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), bus.recv())
            .await
            .expect("a group event")
            .unwrap();
        if matches!(ev, HostEvent::Group { .. }) {
            break ev;
        }
    };
    let (kind, body) = api::events::event_json(&ev);
    assert_eq!((kind, body), ("group", want));
}

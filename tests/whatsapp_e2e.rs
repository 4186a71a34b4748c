//! The real host and whatsapp-rust client against the mock WhatsApp server in
//! `tests/support` (real WebSocket, real Noise handshake, real binary nodes).

mod common;
mod support;

use std::time::Duration;

use moonwire::lifecycle::{ReasonKind, State};
use support::rig::{Rig, WAIT, pairing_code};
use support::{MockConfig, MockServer};

fn reconnecting_for(s: &State, kind: ReasonKind) -> bool {
    matches!(s, State::Reconnecting { reason, .. } if reason.kind == kind)
}

#[tokio::test]
async fn a_fresh_instance_shows_the_servers_qr_and_its_rotation() {
    let server = MockServer::start_with(MockConfig {
        ref_interval: Some(Duration::from_millis(300)),
        ..MockConfig::default()
    })
    .await;
    let rig = Rig::start(&server);

    let (i, code) = rig.first_qr().await;
    let refs = server.qr_codes_sent();
    assert_eq!(code.split(',').next(), Some(refs[0].as_str()), "{code}");
    // The QR also carries the Noise static key the client used with us.
    let statics = server.client_statics();
    let noise_b64 = support::base64(&statics[0]);
    assert_eq!(code.split(',').nth(1), Some(noise_b64.as_str()));

    let (_, next) = rig
        .states
        .wait_for(i + 1, "a rotated code", |s| {
            pairing_code(s).is_some_and(|c| c != code)
        })
        .await;
    let refs = server.qr_codes_sent();
    let rotated = pairing_code(&next).unwrap().split(',').next().unwrap();
    assert!(refs[1..].iter().any(|r| r == rotated), "{rotated} {refs:?}");

    // The client acks each pair-device IQ.
    server
        .wait_until(WAIT, "two acks", |s| {
            s.received()
                .iter()
                .filter(|n| n.tag == "iq" && support::attr(n, "type").as_deref() == Some("result"))
                .count()
                >= 2
        })
        .await;
    assert_eq!(server.connections(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn a_refused_dial_is_a_transport_error_and_reconnects() {
    let server = MockServer::start().await;
    server.refuse_connections(true);
    let rig = Rig::start(&server);
    let (i, state) = rig
        .states
        .wait_for(0, "reconnecting/transport_error", |s| {
            reconnecting_for(s, ReasonKind::TransportError)
        })
        .await;
    assert_eq!(server.connections(), 0);
    assert!(server.refused() >= 1);
    // The cause of the failed dial, not only its kind, in the state and the row.
    let State::Reconnecting { reason, .. } = state else {
        unreachable!()
    };
    let cause = reason.message.unwrap_or_default();
    assert!(cause.starts_with("WebSocket connect to "), "{cause}");
    assert_eq!(rig.states.row(i).last_reason_message, Some(cause));

    // Once the server accepts again, the next attempt gets to pairing.
    server.refuse_connections(false);
    rig.states
        .wait_for(0, "pairing", |s| pairing_code(s).is_some())
        .await;
    rig.stop().await;
}

#[tokio::test]
async fn a_server_that_accepts_one_more_connection_then_refuses() {
    let server = MockServer::start().await;
    server.accept_next(Some(1));
    let rig = Rig::start(&server);
    let (i, _) = rig.first_qr().await;
    assert_eq!(server.drop_tcp(), 1);
    // The reconnect is refused: a transport error, not a lost connection.
    rig.states
        .wait_for(i + 1, "reconnecting/transport_error", |s| {
            reconnecting_for(s, ReasonKind::TransportError)
        })
        .await;
    assert_eq!(server.connections(), 1);
    assert!(server.refused() >= 1);
    server.accept_next(None);
    rig.states
        .wait_for(i + 1, "pairing again", |s| pairing_code(s).is_some())
        .await;
    rig.stop().await;
}

#[tokio::test]
async fn a_dropped_tcp_connection_while_pairing_reconnects_and_pairs_again() {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let (i, _) = rig.first_qr().await;
    assert_eq!(server.drop_tcp(), 1);
    let (j, _) = rig
        .states
        .wait_for(i + 1, "reconnecting/connection_lost", |s| {
            reconnecting_for(s, ReasonKind::ConnectionLost)
        })
        .await;
    rig.states
        .wait_for(j + 1, "pairing again", |s| pairing_code(s).is_some())
        .await;
    assert_eq!(server.connections(), 2);
    rig.stop().await;
}

/// Starts a fresh instance, waits for its first QR, has the server end the
/// stream with `<stream:error code>` and answers the next state after it.
async fn stream_error_while_pairing(code: u16) -> (Rig, MockServer, usize, State) {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let (i, _) = rig.first_qr().await;
    assert_eq!(server.close_with_stream_error(code), 1);
    let (j, next) = rig
        .states
        .wait_for(i + 1, "the state after the stream error", |_| true)
        .await;
    (rig, server, j, next)
}

#[tokio::test]
async fn stream_errors_while_pairing_follow_the_design_table() {
    // 500: bad_session, reconnect with backoff, and the next attempt pairs.
    let (rig, server, j, next) = stream_error_while_pairing(500).await;
    assert!(reconnecting_for(&next, ReasonKind::BadSession), "{next:?}");
    rig.states
        .wait_for(j + 1, "pairing again", |s| pairing_code(s).is_some())
        .await;
    assert_eq!(server.connections(), 2);
    rig.stop().await;

    // 503 and 429: the library sends no event for these; the channel reads
    // the code off the raw stanza, so the machine sees the real reason.
    for (code, kind) in [
        (503, ReasonKind::ServiceUnavailable),
        (429, ReasonKind::RateLimited),
    ] {
        let (rig, _server, _, next) = stream_error_while_pairing(code).await;
        assert!(reconnecting_for(&next, kind), "{code}: {next:?}");
        rig.stop().await;
    }

    // 401: logged out by the server, no reconnect.
    let (rig, server, _, next) = stream_error_while_pairing(401).await;
    assert!(
        matches!(&next, State::LoggedOut { reason, .. } if reason.code == Some(401)),
        "{next:?}"
    );
    assert_eq!(server.connections(), 1);
    rig.stop().await;

    // 440: replaced, stays closed.
    let (rig, server, _, next) = stream_error_while_pairing(440).await;
    assert!(
        matches!(&next, State::Closed { reason, .. } if reason.kind == ReasonKind::Replaced),
        "{next:?}"
    );
    assert_eq!(server.connections(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn a_515_while_pairing_reconnects_and_pairs_again() {
    // whatsapp-rust reports no event for a 515; the channel reads the code
    // off the raw stanza, so the machine reconnects at once (restart
    // required, not counted as a failure) as the close-reason table says.
    let (rig, server, j, next) = stream_error_while_pairing(515).await;
    assert!(matches!(next, State::Connecting { .. }), "{next:?}");
    rig.states
        .wait_for(j + 1, "pairing again", |s| pairing_code(s).is_some())
        .await;
    assert_eq!(server.connections(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn scanning_the_qr_pairs_and_the_515_restarts_as_the_paired_device() {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let (i, code) = rig.first_qr().await;
    let before = rig.stored_device().unwrap();
    assert!(
        before["pn"].is_null() && before["account"].is_null(),
        "{before}"
    );

    assert_eq!(server.scan(&code), 1);
    server
        .wait_until(WAIT, "the client's pair-device-sign", |s| {
            !s.pair_signs().is_empty()
        })
        .await;
    // The client signed with the key index the phone gave it.
    let sign = &server.pair_signs()[0];
    let identity = sign
        .get_optional_child_by_tag(&["pair-device-sign", "device-identity"])
        .expect("device-identity");
    assert_eq!(
        support::attr(identity, "key-index"),
        Some(support::phone::KEY_INDEX.to_string())
    );

    // The server's 515 is a restart, not a failure: straight to connecting.
    let (j, next) = rig
        .states
        .wait_for(i + 1, "connecting after the 515", |s| {
            !matches!(s, State::Pairing { .. })
        })
        .await;
    assert!(matches!(next, State::Connecting { .. }), "{next:?}");
    let row = rig.states.rows.lock().unwrap()[j].clone();
    assert_eq!(row.jid.as_deref(), Some("15551234567@s.whatsapp.net"));
    assert_eq!(row.last_reason_code, Some(515));
    assert_eq!(row.last_reason_kind, Some(ReasonKind::RestartRequired));
    assert!(rig.app.store.session_exists("wa").unwrap());
    // The key store holds the registered device: the phone's JID and LID and
    // the signed account identity.
    let device = rig.stored_device().unwrap();
    assert_eq!(device["pn"]["user"], "15551234567", "{device}");
    assert_eq!(device["pn"]["device"], 1, "{device}");
    assert_eq!(device["lid"]["user"], "100000000000001", "{device}");
    assert!(device["account"].is_array(), "{device}");
    // The next attempt logs in as the device: `<success>`, the login IQs,
    // the offline marker, and the client says Connected.
    let (k, open) = rig
        .states
        .wait_for(j + 1, "open", |s| matches!(s, State::Open { .. }))
        .await;
    assert!(
        matches!(&open, State::Open { jid: Some(j) } if j == "15551234567@s.whatsapp.net"),
        "{open:?}"
    );
    let row = rig.states.rows.lock().unwrap()[k].clone();
    assert_eq!(
        row.connection_status,
        moonwire::lifecycle::ConnectionStatus::Open
    );
    assert_eq!(server.logins(), 1);
    // The login left passive mode and uploads pre-keys (in the background).
    assert!(
        server
            .received()
            .iter()
            .any(|n| n.get_optional_child("active").is_some())
    );
    server
        .wait_until(WAIT, "a pre-key upload", |s| {
            s.received().iter().any(|n| {
                support::attr(n, "xmlns").as_deref() == Some("encrypt")
                    && n.get_optional_child("list").is_some()
            })
        })
        .await;
    rig.stop().await;
}

/// The `moonwire run` binary, configured from its file, over two process
/// lifetimes: pairs through the API's QR, then after SIGTERM and a fresh
/// start logs back in through Noise IK with no QR at all.
#[tokio::test]
async fn the_binary_pairs_and_after_a_restart_logs_back_in_through_ik() {
    let server = MockServer::start().await;
    let sb = common::Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (v1, v2, v3) = support::rig::VERSION;
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[whatsapp]\nurl = \"{}\"\nversion = \"{v1}.{v2}.{v3}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"k\"\n",
            server.url()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/v1/instances/default");
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}")).bearer_auth("k");
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                _ => None,
            }
        }
    };
    let spawn = || {
        sb.cmd()
            .arg("run")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stop = |child: std::process::Child| async move {
        let out = common::terminate(child).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // First run: pair through the API's QR.
    let child = spawn();
    let mut code = None;
    for _ in 0..200 {
        if let Some(v) = get("/qr").await {
            code = v["code"].as_str().map(str::to_string);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let code = code.expect("a QR from the API");
    assert_eq!(server.scan(&code), 1);
    let open = || async {
        let mut state = serde_json::Value::Null;
        for _ in 0..200 {
            state = get("").await.unwrap_or_default();
            if state["state"] == "open" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        state
    };
    let state = open().await;
    assert_eq!(state["state"], "open", "{state}");
    stop(child).await;
    let (ik, qrs, logins) = (
        server.ik_handshakes(),
        server.qr_codes_sent().len(),
        server.logins(),
    );

    // Second run: the stored keys and cached server key log it in.
    let child = spawn();
    let state = open().await;
    assert_eq!(state["state"], "open", "{state}");
    assert_eq!(state["jid"], "15551234567@s.whatsapp.net", "{state}");
    assert_eq!(server.ik_handshakes(), ik + 1);
    assert_eq!(server.qr_codes_sent().len(), qrs, "no new QR");
    assert_eq!(server.logins(), logins + 1);
    stop(child).await;
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["connection_status"], "close", "{v}");
    assert_eq!(v[0]["last_reason_kind"], "stopped", "{v}");
}

/// An open instance whose pre-keys reached the server, and a contact who
/// can write to it.
async fn paired_with_a_contact() -> (MockServer, Rig, &'static str) {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    rig.pair(&server).await;
    server
        .wait_until(WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;
    (server, rig, "15550001111")
}

#[tokio::test]
async fn a_contacts_signal_messages_reach_on_message() {
    let (server, rig, alice) = paired_with_a_contact().await;
    server
        .message_from(alice, "Alice", "hello there")
        .await
        .unwrap();
    server
        .message_from(alice, "Alice", "and again")
        .await
        .unwrap();
    let want = [
        "15550001111@s.whatsapp.net|hello there|Alice",
        "15550001111@s.whatsapp.net|and again|Alice",
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    while rig.messages().len() < want.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.messages(), want, "errors: {:?}", server.errors());
    rig.stop().await;
}

#[tokio::test]
async fn a_script_reply_reaches_the_contact_encrypted_on_the_same_session() {
    let (server, rig, alice) = paired_with_a_contact().await;
    server
        .message_from(alice, "Alice", "echo hi back")
        .await
        .unwrap();
    server
        .wait_until(WAIT, "the reply", |s| {
            s.received().iter().any(|n| {
                n.tag == "message"
                    && support::attr(n, "to").as_deref() == Some("15550001111@s.whatsapp.net")
            })
        })
        .await;
    let inbox = server.deliver_to(alice).await.unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let reply = &inbox[0];
    // m:reply quotes the message it answers.
    let ext = reply
        .extended_text_message
        .as_option()
        .expect("a quoting reply is an extended text");
    assert_eq!(ext.text.as_deref(), Some("hi back"));
    let quoted = ext
        .context_info
        .as_option()
        .and_then(|c| c.quoted_message.as_option())
        .and_then(|q| q.conversation.clone());
    assert_eq!(quoted.as_deref(), Some("echo hi back"));
    rig.stop().await;
}

/// A personal phone (no business name) gives its companion no push name:
/// the client then holds `Connected` back until the phone's app-state key
/// share arrives and the critical collections are synced.
#[tokio::test]
async fn pairing_with_a_personal_phone_syncs_app_state_before_open() {
    let server = MockServer::start_with(MockConfig {
        business_name: None,
        ..MockConfig::default()
    })
    .await;
    let rig = Rig::start(&server);
    rig.pair(&server).await;
    let syncs: Vec<_> = server
        .received()
        .into_iter()
        .filter(|n| support::attr(n, "xmlns").as_deref() == Some("w:sync:app:state"))
        .collect();
    let asked: Vec<String> = syncs
        .iter()
        .flat_map(|n| {
            n.get_optional_child("sync")
                .map(|s| {
                    s.get_children_by_tag("collection")
                        .filter_map(|c| support::attr(c, "name"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    assert!(asked.iter().any(|c| c == "critical_block"), "{asked:?}");
    rig.stop().await;
}

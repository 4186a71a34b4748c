//! The mock WhatsApp server's own behaviour where a second client (Baileys,
//! `tests/peer/`) depends on it: the signed cert chain, pre-keys as a server
//! keeps them, device lists and bundles, one account per instance, and the
//! JSON-line command layer its process form runs.

mod common;
mod support;

use moonwire::lifecycle::State;
use serde_json::Value;
use support::commands::run_line;
use support::rig::{Rig, WAIT};
use support::{MockServer, attr, noise};
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::{IdentityKeyPair, KeyPair, PublicKey};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::node::NodeContent;
use whatsapp_rust::waproto::whatsapp as wa;

fn rng() -> rand_010::rngs::StdRng {
    rand_010::make_rng::<rand_010::rngs::StdRng>()
}

fn bytes(node: &Node, path: &[&str]) -> Vec<u8> {
    match node.get_optional_child_by_tag(path).map(|n| &n.content) {
        Some(Some(NodeContent::Bytes(b))) => b.clone(),
        other => panic!("no bytes at {path:?}: {other:?}"),
    }
}

fn id3(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

/// A client's pre-key upload IQ: `identity`, a signed pre-key and the
/// one-time pre-keys `ids`.
fn upload(identity: &IdentityKeyPair, ids: std::ops::Range<u32>) -> Node {
    let signed = KeyPair::generate(&mut rng());
    let signature = identity
        .private_key()
        .calculate_signature(&signed.public_key.serialize(), &mut rng())
        .unwrap();
    let keys = ids.map(|id| {
        let k = KeyPair::generate(&mut rng());
        NodeBuilder::new("key")
            .children([
                NodeBuilder::new("id").bytes(id3(id)).build(),
                NodeBuilder::new("value")
                    .bytes(k.public_key.public_key_bytes().to_vec())
                    .build(),
            ])
            .build()
    });
    NodeBuilder::new("iq")
        .attr("xmlns", "encrypt")
        .attr("type", "set")
        .attr("id", "up")
        .children([
            NodeBuilder::new("registration")
                .bytes(1234u32.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5]).build(),
            NodeBuilder::new("identity")
                .bytes(identity.public_key().public_key_bytes().to_vec())
                .build(),
            NodeBuilder::new("list").children(keys).build(),
            NodeBuilder::new("skey")
                .children([
                    NodeBuilder::new("id").bytes(id3(1)).build(),
                    NodeBuilder::new("value")
                        .bytes(signed.public_key.public_key_bytes().to_vec())
                        .build(),
                    NodeBuilder::new("signature")
                        .bytes(signature.to_vec())
                        .build(),
                ])
                .build(),
        ])
        .build()
}

fn iq(xmlns: &str, kind: &str, child: Node) -> Node {
    NodeBuilder::new("iq")
        .attr("xmlns", xmlns.to_string())
        .attr("type", kind.to_string())
        .attr("id", "q1")
        .children([child])
        .build()
}

/// `<iq xmlns="encrypt" type="get"><key><user jid/>…</key></iq>`.
fn key_fetch(jids: &[&str]) -> Node {
    iq(
        "encrypt",
        "get",
        NodeBuilder::new("key")
            .children(
                jids.iter()
                    .map(|j| NodeBuilder::new("user").attr("jid", j.to_string()).build()),
            )
            .build(),
    )
}

#[test]
fn the_cert_chain_is_signed_by_the_servers_root() {
    let root = noise::Keys::generate();
    let leaf = noise::Keys::generate();
    let chain = wa::CertChain::decode_from_slice(&noise::cert_chain(&root, &leaf.public)).unwrap();
    let cert = |c: &wa::cert_chain::NoiseCertificate| {
        let details = c.details.clone().unwrap();
        let parsed =
            wa::cert_chain::noise_certificate::Details::decode_from_slice(&details).unwrap();
        (details, c.signature.clone().unwrap(), parsed)
    };
    let (inter_bytes, inter_sig, inter) = cert(chain.intermediate.as_option().unwrap());
    let (leaf_bytes, leaf_sig, leaf_details) = cert(chain.leaf.as_option().unwrap());
    assert_eq!(inter.issuer_serial, Some(0));
    assert_eq!(leaf_details.issuer_serial, inter.serial);
    assert_eq!(leaf_details.key.as_deref(), Some(&leaf.public[..]));
    let root_key = PublicKey::from_djb_public_key_bytes(&root.public).unwrap();
    assert!(root_key.verify_signature(&inter_bytes, &inter_sig));
    let inter_key = PublicKey::from_djb_public_key_bytes(&inter.key.unwrap()).unwrap();
    assert!(inter_key.verify_signature(&leaf_bytes, &leaf_sig));
    // Another root does not verify it.
    let other = PublicKey::from_djb_public_key_bytes(&noise::Keys::generate().public).unwrap();
    assert!(!other.verify_signature(&inter_bytes, &inter_sig));
}

#[tokio::test]
async fn uploads_add_up_and_one_time_keys_go_out_oldest_first() {
    let server = MockServer::start().await;
    let identity = IdentityKeyPair::generate(&mut rng());
    server.upload_as(0, &upload(&identity, 1..4)).unwrap();
    server.upload_as(0, &upload(&identity, 4..6)).unwrap();
    let held: Vec<u32> = server
        .bundle_of(0)
        .unwrap()
        .one_time
        .iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(held, [1, 2, 3, 4, 5]);

    let answer = server
        .answer(None, &key_fetch(&["15551234567:1@s.whatsapp.net"]))
        .await;
    let user = answer[0]
        .get_optional_child_by_tag(&["list", "user"])
        .unwrap();
    assert_eq!(bytes(user, &["key", "id"]), id3(1), "the oldest goes first");
    assert_eq!(
        bytes(user, &["identity"]),
        identity.public_key().public_key_bytes()
    );
    let count = server
        .answer(
            Some(0),
            &iq("encrypt", "get", NodeBuilder::new("count").build()),
        )
        .await;
    let count = count[0].get_optional_child("count").unwrap();
    assert_eq!(attr(count, "value").as_deref(), Some("4"));

    // A new identity (the device linked anew) replaces what was held.
    let other = IdentityKeyPair::generate(&mut rng());
    server.upload_as(0, &upload(&other, 10..12)).unwrap();
    let held: Vec<u32> = server
        .bundle_of(0)
        .unwrap()
        .one_time
        .iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(held, [10, 11]);
}

#[tokio::test]
async fn the_digest_hashes_what_a_client_hashes() {
    let server = MockServer::start().await;
    let none = server
        .answer(
            Some(0),
            &iq("encrypt", "get", NodeBuilder::new("digest").build()),
        )
        .await;
    assert_eq!(
        attr(&none[0], "type").as_deref(),
        Some("error"),
        "no bundle yet: 404"
    );

    let identity = IdentityKeyPair::generate(&mut rng());
    server.upload_as(0, &upload(&identity, 1..4)).unwrap();
    let b = server.bundle_of(0).unwrap();
    let answer = server
        .answer(
            Some(0),
            &iq("encrypt", "get", NodeBuilder::new("digest").build()),
        )
        .await;
    let digest = answer[0].get_optional_child("digest").unwrap();
    let keys: Vec<&[u8]> = b.one_time.iter().map(|(_, k)| &k[..]).collect();
    let want = whatsapp_rust::wacore::prekeys::compute_key_bundle_digest(
        &b.identity,
        &b.signed_public,
        &b.signed_signature,
        &keys,
    );
    assert_eq!(bytes(digest, &["hash"]), want);
    assert_eq!(
        digest
            .get_optional_child("list")
            .and_then(|l| l.children())
            .map(|c| c.len()),
        Some(3)
    );
}

/// The `<user jid>` of a usync answer.
fn usync_user<'a>(answer: &'a Node, jid: &str) -> &'a Node {
    answer
        .get_optional_child_by_tag(&["usync", "list"])
        .and_then(|l| {
            l.get_children_by_tag("user")
                .find(|u| attr(u, "jid").as_deref() == Some(jid))
        })
        .unwrap_or_else(|| panic!("no <user jid={jid}> in {answer:?}"))
}

fn device_ids(user: &Node) -> Vec<(String, Option<String>)> {
    user.get_optional_child_by_tag(&["devices", "device-list"])
        .map(|l| {
            l.get_children_by_tag("device")
                .map(|d| (attr(d, "id").unwrap(), attr(d, "key-index")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn device_lists_and_bundles_name_the_phone_the_companion_and_contacts() {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    rig.pair(&server).await;
    server
        .wait_until(WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;

    let query = NodeBuilder::new("usync")
        .attr("sid", "s1")
        .attr("mode", "query")
        .attr("context", "message")
        .children([
            NodeBuilder::new("query")
                .children([
                    NodeBuilder::new("devices").attr("version", "2").build(),
                    NodeBuilder::new("lid").build(),
                    NodeBuilder::new("contact").build(),
                ])
                .build(),
            NodeBuilder::new("list")
                .children(
                    ["15551234567@s.whatsapp.net", "15550001111@s.whatsapp.net"]
                        .map(|j| NodeBuilder::new("user").attr("jid", j).build()),
                )
                .build(),
        ])
        .build();
    let answer = server.answer(Some(0), &iq("usync", "get", query)).await;
    let me = usync_user(&answer[0], "15551234567@s.whatsapp.net");
    assert_eq!(
        device_ids(me),
        [("0".into(), None), ("1".into(), Some("1".into()))],
        "the phone and the linked companion (with its key index)"
    );
    let index = bytes(me, &["devices", "key-index-list"]);
    let decoded = whatsapp_rust::wacore::adv::decode_key_index_list(&index).unwrap();
    assert_eq!(decoded.valid_indexes, [1]);
    let lid = me.get_optional_child("lid").unwrap();
    assert_eq!(attr(lid, "val").as_deref(), Some("100000000000001@lid"));

    let alice = usync_user(&answer[0], "15550001111@s.whatsapp.net");
    assert_eq!(device_ids(alice), [("0".into(), None)]);
    let lid = alice.get_optional_child("lid").unwrap();
    assert_eq!(attr(lid, "val").as_deref(), Some("200015550001111@lid"));
    let contact = alice.get_optional_child("contact").unwrap();
    assert_eq!(attr(contact, "type").as_deref(), Some("in"));

    // Bundles: the phone (whose identity signed the companion's ADV
    // identity), a contact by LID, and nobody for an unknown LID.
    let answer = server
        .answer(
            Some(0),
            &key_fetch(&["100000000000001@lid", "200015550001111@lid", "999@lid"]),
        )
        .await;
    let list: Vec<&Node> = answer[0]
        .get_optional_child("list")
        .unwrap()
        .get_children_by_tag("user")
        .collect();
    assert_eq!(list.len(), 3);
    for user in &list[..2] {
        for part in [
            &["registration"][..],
            &["identity"],
            &["skey", "signature"],
            &["key", "value"],
        ] {
            bytes(user, part);
        }
    }
    assert!(list[2].get_optional_child("error").is_some());
    // The phone's identity is the account key: it verifies the account
    // signature in the identity the companion signed back at pairing.
    let sign = &server.pair_signs()[0];
    let signed = wa::ADVSignedDeviceIdentity::decode_from_slice(&bytes(
        sign,
        &["pair-device-sign", "device-identity"],
    ))
    .unwrap();
    let companion = server.bundle_of(0).unwrap().identity;
    let mut msg = vec![6, 0];
    msg.extend_from_slice(signed.details.as_deref().unwrap());
    msg.extend_from_slice(&companion);
    let phone = PublicKey::from_djb_public_key_bytes(&bytes(list[0], &["identity"])).unwrap();
    assert!(phone.verify_signature(&msg, signed.account_signature.as_deref().unwrap()));
    rig.stop().await;
}

/// Pairs a fresh instance as account `k`; answers once it is open.
async fn pair_as(server: &MockServer, k: usize) -> Rig {
    let rig = Rig::start(server);
    let (_, code) = rig.first_qr().await;
    assert_eq!(server.scan_as(&code, k).unwrap(), 1);
    rig.states
        .wait_for(0, "open", |s| matches!(s, State::Open { .. }))
        .await;
    server
        .wait_until(WAIT, "its pre-keys", |s| s.has_bundle_for(k))
        .await;
    rig
}

#[tokio::test]
async fn two_instances_are_two_accounts_each_with_its_own_messages() {
    let server = MockServer::start().await;
    let a = pair_as(&server, 0).await;
    let b = pair_as(&server, 1).await;
    let (_, b_jid) = b
        .states
        .wait_for(0, "open", |s| matches!(s, State::Open { jid: Some(_) }))
        .await;
    assert!(
        matches!(&b_jid, State::Open { jid: Some(j) } if j == "15551234568@s.whatsapp.net"),
        "{b_jid:?}"
    );
    server
        .message_to(0, "15550001111", "Alice", "echo to a")
        .await
        .unwrap();
    server
        .message_to(1, "15550002222", "Bob", "echo to b")
        .await
        .unwrap();
    server
        .wait_until(WAIT, "both replies", |s| s.messages_to_contacts() >= 2)
        .await;
    let text = |m: &wa::Message| support::contact::text_of(m).unwrap_or_default();
    let alice: Vec<String> = server
        .deliver_to("15550001111")
        .await
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let bob: Vec<String> = server
        .deliver_to("15550002222")
        .await
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(alice, ["to a"]);
    assert_eq!(bob, ["to b"]);
    assert_eq!(a.messages(), ["15550001111@s.whatsapp.net|echo to a|Alice"]);
    assert_eq!(b.messages(), ["15550002222@s.whatsapp.net|echo to b|Bob"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_message_a_contact_cannot_decrypt_hides_no_other() {
    let server = MockServer::start().await;
    let rig = pair_as(&server, 0).await;
    server
        .message_to(0, "15550001111", "Alice", "echo readable")
        .await
        .unwrap();
    server
        .wait_until(WAIT, "the reply", |s| s.messages_to_contacts() >= 1)
        .await;
    // A forged one beside it: not a Signal message at all.
    let forged = NodeBuilder::new("message")
        .attr("to", "15550001111@s.whatsapp.net")
        .attr("id", "FORGED1")
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![0x33; 40])
            .build()])
        .build();
    server.route_as(0, &forged);
    let (read, failed) = server.deliver("15550001111").await;
    let texts: Vec<String> = read.iter().filter_map(support::contact::text_of).collect();
    assert_eq!(texts, ["readable"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("FORGED1 (msg)"), "{failed:?}");
    rig.stop().await;
}

async fn line(server: &MockServer, l: &str) -> Value {
    serde_json::from_str(&run_line(server, l).await).expect("every answer is one JSON line")
}

#[tokio::test]
async fn a_bad_command_line_gets_an_error_line() {
    let server = MockServer::start().await;
    for bad in [
        "",
        "not json",
        "[1, 2]",
        r#"{"no": "cmd"}"#,
        r#"{"cmd": 7}"#,
        r#"{"cmd": "launch"}"#,
        r#"{"cmd": "scan"}"#,
        r#"{"cmd": "scan", "qr": "a,b"}"#,
        r#"{"cmd": "scan", "qr": 5}"#,
        concat!(
            r#"{"cmd": "scan", "qr": "nosuchref,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,"#,
            r#"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAA"}"#
        ),
        r#"{"cmd": "scan", "qr": "r,AAAA,AAAA,AAAA", "account": -1}"#,
        r#"{"cmd": "scan", "qr": "r,AAAA,AAAA,AAAA", "account": 1e12}"#,
        r#"{"cmd": "message_from", "contact": "15550001111", "text": "hi"}"#,
        r#"{"cmd": "message_from", "contact": "alice", "text": "hi"}"#,
        r#"{"cmd": "message_from", "contact": "15551234567", "text": "to myself"}"#,
        r#"{"cmd": "deliver_to", "contact": "alice"}"#,
        r#"{"cmd": "stream_error", "code": 70000}"#,
        r#"{"cmd": "stream_error", "code": "440"}"#,
        r#"{"cmd": "silent", "on": "yes"}"#,
        r#"{"cmd": "wait", "cond": "nonsense"}"#,
        r#"{"cmd": "wait", "cond": "logins", "timeout_ms": 30}"#,
        r#"{"cmd": "burst", "pairs": [[0]], "count": 1, "text": "x"}"#,
        r#"{"cmd": "burst", "pairs": [[0, "15550001111"]], "count": 1, "text": "x"}"#,
        r#"{"cmd": "account", "k": 1000000}"#,
    ] {
        let answer = line(&server, bad).await;
        assert_eq!(answer["ok"], false, "{bad} → {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let unknown = line(
        &server,
        concat!(
            r#"{"cmd": "scan", "qr": "https://wa.me/settings/linked_devices#nosuchref,"#,
            r#"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,"#,
            r#"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAA"}"#
        ),
    )
    .await;
    assert!(
        unknown["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"nosuchref\" was never sent")),
        "{unknown}"
    );
    // And it still serves.
    let answer = line(&server, r#"{"cmd": "counters"}"#).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["logins"], 0);
    let answer = line(&server, r#"{"cmd": "account", "k": 2}"#).await;
    assert_eq!(answer["pn"], "15551234569", "{answer}");
}

#[tokio::test]
async fn the_command_layer_drives_a_real_client_through_the_same_server() {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let (_, code) = rig.first_qr().await;
    let scan = serde_json::json!({ "cmd": "scan", "qr": code }).to_string();
    assert_eq!(line(&server, &scan).await["sent"], 1);
    let open = line(
        &server,
        r#"{"cmd": "wait", "cond": "bundles", "timeout_ms": 5000}"#,
    )
    .await;
    assert_eq!(open["ok"], true, "{open}");
    let sent = line(
        &server,
        r#"{"cmd": "message_from", "contact": "15550001111", "push_name": "Alice", "text": "echo via commands"}"#,
    )
    .await;
    assert!(sent["id"].as_str().is_some(), "{sent}");
    let replied = line(
        &server,
        r#"{"cmd": "wait", "cond": "messages_to_contacts", "timeout_ms": 5000}"#,
    )
    .await;
    assert_eq!(replied["ok"], true, "{replied}");
    let read = line(
        &server,
        r#"{"cmd": "deliver_to", "contact": "15550001111"}"#,
    )
    .await;
    assert_eq!(read["texts"], serde_json::json!(["via commands"]), "{read}");
    let received = line(&server, r#"{"cmd": "received", "tag": "message"}"#).await;
    let stanzas = received["stanzas"].as_array().unwrap();
    assert!(
        stanzas
            .iter()
            .any(|s| s["attrs"]["to"] == "15550001111@s.whatsapp.net"),
        "{received}"
    );
    rig.stop().await;
}

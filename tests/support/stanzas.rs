//! What the mock server says: answers to the client's stanzas, the login's
//! `<success>`, and the Signal messages contacts and phones send.

use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail};
use sha1::{Digest, Sha1};
use whatsapp_rust::Jid;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::node::NodeContent;
use whatsapp_rust::waproto::whatsapp as wa;

use super::contact::{Bundle, Contact};
use super::directory::{BundleSource, COMPANION_DEVICE, Envelope, Who};
use super::{SERVER, Shared, attr};

/// `message` from `party` (whose JID is `from`) to account `k`'s
/// companion, encrypted from the pre-keys it uploaded, as a `<message>`
/// stanza; with its id.
pub(super) async fn sealed_message(
    shared: &Shared,
    k: usize,
    party: &mut Contact,
    from: &str,
    push_name: &str,
    message: &wa::Message,
) -> anyhow::Result<(String, Node)> {
    let (pn, mut bundle) = {
        let dir = shared.directory.lock().unwrap();
        let a = dir
            .accounts
            .get(k)
            .ok_or_else(|| anyhow!("no account {k}"))?;
        let b = a
            .bundle
            .clone()
            .ok_or_else(|| anyhow!("account {k}'s companion has not uploaded pre-keys yet"))?;
        (a.pn.clone(), b)
    };
    let device = whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress::new(
        &pn,
        u32::from(COMPANION_DEVICE).into(),
    );
    // One one-time key at most, taken from the server's copy so no two
    // parties start a session from the same one.
    bundle.one_time = if party.needs_session(&device, &bundle) {
        let mut dir = shared.directory.lock().unwrap();
        dir.accounts[k]
            .bundle
            .as_mut()
            .and_then(|b| b.take_one_time())
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let (kind, ciphertext) = party.encrypt(&device, &mut bundle, message).await?;
    let id = format!("3EB0{:016X}", shared.next_id.fetch_add(1, Ordering::SeqCst));
    let node = NodeBuilder::new("message")
        .attr("from", from.parse::<Jid>().map_err(|e| anyhow!("{e}"))?)
        .attr("id", id.clone())
        .attr("t", super::now_secs().to_string())
        .attr("type", "text")
        .attr("notify", push_name.to_string())
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", kind)
            .bytes(ciphertext)
            .build()])
        .build();
    Ok((id, node))
}

/// What a personal (non-business) phone sends its new companion: the
/// app-state sync key, as a protocol message from the primary device. The
/// client waits for it before its first full app-state sync.
pub(super) fn app_state_key_share() -> wa::Message {
    use wa::message::{
        AppStateSyncKey, AppStateSyncKeyData, AppStateSyncKeyFingerprint, AppStateSyncKeyId,
        AppStateSyncKeyShare, ProtocolMessage, protocol_message,
    };
    use whatsapp_rust::buffa::MessageField;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let key = AppStateSyncKey {
        key_id: MessageField::some(AppStateSyncKeyId {
            key_id: Some(vec![0, 0, 0, 1, 0, 0]),
        }),
        key_data: MessageField::some(AppStateSyncKeyData {
            key_data: Some(vec![7; 32]),
            fingerprint: MessageField::some(AppStateSyncKeyFingerprint {
                raw_id: Some(1),
                current_index: Some(0),
                device_indexes: vec![0, 1],
            }),
            timestamp: Some(now_ms),
        }),
    };
    wa::Message {
        protocol_message: MessageField::some(ProtocolMessage {
            r#type: Some(protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: MessageField::some(AppStateSyncKeyShare { keys: vec![key] }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the server says to a paired device of account `lid` that logged in.
pub(super) fn success_node(lid: &str) -> anyhow::Result<Node> {
    let now = super::now_secs();
    Ok(NodeBuilder::new("success")
        .attr("t", now.to_string())
        .attr("props", "1")
        .attr("creation", (now - 86_400).to_string())
        .attr("location", "mock")
        .attr(
            "lid",
            format!("{lid}:{COMPANION_DEVICE}@lid")
                .parse::<Jid>()
                .map_err(|e| anyhow!("{e}"))?,
        )
        .build())
}

/// The login's `<iq xmlns="encrypt" type="set">` with the pre-key list.
pub(super) fn is_prekey_upload(node: &Node) -> bool {
    node.tag == "iq"
        && attr(node, "xmlns").as_deref() == Some("encrypt")
        && attr(node, "type").as_deref() == Some("set")
        && node.get_optional_child("identity").is_some()
}

/// A logout's `<iq xmlns="md"><remove-companion-device/></iq>`.
pub(super) fn is_unlink(node: &Node) -> bool {
    node.tag == "iq" && node.get_optional_child("remove-companion-device").is_some()
}

/// The companion's answer to `<pair-success>`.
pub(super) fn is_pair_sign(node: &Node) -> bool {
    node.tag == "iq"
        && attr(node, "type").as_deref() == Some("result")
        && node.get_optional_child("pair-device-sign").is_some()
}

/// The client leaving passive mode (after which the server delivers what
/// queued up and the offline marker).
pub(super) fn is_active(node: &Node) -> bool {
    node.tag == "iq"
        && attr(node, "xmlns").as_deref() == Some("passive")
        && node.get_optional_child("active").is_some()
}

/// `<ib><offline count="0"/></ib>`: nothing queued while offline.
pub(super) fn offline_marker() -> Node {
    NodeBuilder::new("ib")
        .children([NodeBuilder::new("offline").attr("count", "0").build()])
        .build()
}

fn result_to(id: String) -> NodeBuilder {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "result")
        .attr("id", id)
}

fn error_to(id: String, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "error")
        .attr("id", id)
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_string())
            .build()])
        .build()
}

fn bytes(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

/// Files each `<enc>` of a companion's `<message>` into its recipient's
/// mailbox: `<participants><to jid><enc/></to>…</participants>` for a
/// fan-out, a bare `<enc>` for the one device `to` names. Counts a
/// message addressed to a contact.
pub(super) fn route_message(shared: &Shared, account: usize, node: &Node) {
    let Some(id) = attr(node, "id") else { return };
    let mut targets: Vec<(String, &Node)> = Vec::new();
    if let Some(participants) = node.get_optional_child("participants") {
        for to in participants.get_children_by_tag("to") {
            if let (Some(jid), Some(enc)) = (attr(to, "jid"), to.get_optional_child("enc")) {
                targets.push((jid, enc));
            }
        }
    }
    if let (Some(to), Some(enc)) = (attr(node, "to"), node.get_optional_child("enc")) {
        targets.push((to, enc));
    }
    // A group message: its `skmsg` goes to every contact in the group.
    let group_members: Option<Vec<String>> = attr(node, "to")
        .filter(|t| t.ends_with("@g.us"))
        .map(|t| super::groups::members(shared, &t));
    let mut dir = shared.directory.lock().unwrap();
    if let Some(members) = group_members {
        let group = attr(node, "to");
        for (jid, enc) in targets {
            let (Some(kind), Some(ct)) = (attr(enc, "type"), bytes(enc)) else {
                continue;
            };
            let envelope = |group| Envelope {
                account,
                id: id.clone(),
                kind: kind.clone(),
                ciphertext: ct.to_vec(),
                group,
            };
            if jid.ends_with("@g.us") {
                for m in &members {
                    if matches!(
                        dir.resolve(&format!("{m}@s.whatsapp.net")),
                        Some(Who::Contact(_))
                    ) {
                        dir.contact(m).mailbox.push(envelope(group.clone()));
                    }
                }
            } else {
                dir.post(&jid, envelope(None));
            }
        }
        shared.to_contacts.fetch_add(1, Ordering::SeqCst);
        shared.touch();
        return;
    }
    if let Some(to) = attr(node, "to")
        && let Some(Who::Contact(pn)) = dir.resolve(&to)
    {
        dir.contact(&pn).messages += 1;
        shared.to_contacts.fetch_add(1, Ordering::SeqCst);
    }
    for (jid, enc) in targets {
        let (Some(kind), Some(ct)) = (attr(enc, "type"), bytes(enc)) else {
            continue;
        };
        dir.post(
            &jid,
            Envelope {
                account,
                id: id.clone(),
                kind,
                ciphertext: ct.to_vec(),
                group: None,
            },
        );
    }
    shared.touch();
}

/// The SHA-1 over the identity, the signed pre-key and its signature, then
/// each one-time pre-key on offer, in order.
pub fn digest_hash(b: &Bundle) -> Vec<u8> {
    let mut hash = Sha1::new();
    hash.update(b.identity);
    hash.update(b.signed_public);
    hash.update(&b.signed_signature);
    for (_, key) in &b.one_time {
        hash.update(key);
    }
    hash.finalize().to_vec()
}

/// `<digest>`: the key bundle the server holds for the companion, with the
/// SHA-1 both clients compare with their own (identity, signed pre-key and
/// its signature, then each listed pre-key).
fn digest(shared: &Shared, account: Option<usize>, id: String) -> Node {
    let dir = shared.directory.lock().unwrap();
    let Some(b) = account
        .and_then(|k| dir.accounts.get(k))
        .and_then(|a| a.bundle.as_ref())
    else {
        return error_to(id, 404, "item-not-found");
    };
    let id3 = |n: u32| n.to_be_bytes()[1..].to_vec();
    result_to(id)
        .children([NodeBuilder::new("digest")
            .children([
                NodeBuilder::new("registration")
                    .bytes(b.registration_id.to_be_bytes().to_vec())
                    .build(),
                NodeBuilder::new("type").bytes(vec![5u8]).build(),
                NodeBuilder::new("identity")
                    .bytes(b.identity.to_vec())
                    .build(),
                NodeBuilder::new("skey")
                    .children([
                        NodeBuilder::new("id").bytes(id3(b.signed_id)).build(),
                        NodeBuilder::new("value")
                            .bytes(b.signed_public.to_vec())
                            .build(),
                        NodeBuilder::new("signature")
                            .bytes(b.signed_signature.clone())
                            .build(),
                    ])
                    .build(),
                NodeBuilder::new("list")
                    .children(
                        b.one_time
                            .iter()
                            .map(|(k, _)| NodeBuilder::new("id").bytes(id3(*k)).build()),
                    )
                    .build(),
                NodeBuilder::new("hash").bytes(digest_hash(b)).build(),
            ])
            .build()])
        .build()
}

/// `usync`: a `<user>` per asked user with the protocols the query named.
fn usync(shared: &Shared, node: &Node, id: String) -> anyhow::Result<Node> {
    let Some(sync) = node.get_optional_child("usync") else {
        bail!("usync IQ without <usync>");
    };
    let protocols: Vec<String> = sync
        .get_optional_child("query")
        .and_then(|q| q.children())
        .map(|c| c.iter().map(|n| n.tag.to_string()).collect())
        .unwrap_or_default();
    let users: Vec<Node> = {
        let mut dir = shared.directory.lock().unwrap();
        sync.get_optional_child("list")
            .map(|l| {
                l.get_children_by_tag("user")
                    .map(|u| dir.usync_user(u, &protocols))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut answer = NodeBuilder::new("usync");
    for key in ["sid", "mode", "context"] {
        if let Some(v) = attr(sync, key) {
            answer = answer.attr(key, v);
        }
    }
    Ok(result_to(id)
        .children([answer
            .attr("index", "0")
            .attr("last", "true")
            .children([NodeBuilder::new("list").children(users).build()])
            .build()])
        .build())
}

/// `<key>`: a pre-key bundle for each asked device, or an `<error>` for
/// one that does not exist.
async fn bundles(shared: &Shared, node: &Node, id: String) -> Node {
    let jids: Vec<String> = node
        .get_optional_child("key")
        .map(|k| {
            k.get_children_by_tag("user")
                .filter_map(|u| attr(u, "jid"))
                .collect()
        })
        .unwrap_or_default();
    let mut users = Vec::new();
    for jid in jids {
        let source = shared.directory.lock().unwrap().bundle_source(&jid);
        users.push(match source {
            BundleSource::Ready(n) => n,
            BundleSource::Party(p) => p.lock().await.user_node(&jid),
            BundleSource::Missing => NodeBuilder::new("user")
                .attr("jid", jid)
                .children([NodeBuilder::new("error")
                    .attr("code", "404")
                    .attr("text", "item-not-found")
                    .build()])
                .build(),
        });
    }
    result_to(id)
        .children([NodeBuilder::new("list").children(users).build()])
        .build()
}

/// What the server sends back for a stanza from a client logged in as
/// `account` (`None` while pairing). Requests get a result shaped the way
/// clients parse it where that matters (pre-key count, digest, device
/// lists, bundles, app-state sync) and an empty result otherwise so no
/// waiter hangs; results (acks of our IQs) and other stanzas get nothing.
/// The offline marker after `active` is the connection's to send.
pub(super) async fn replies(shared: &Shared, account: Option<usize>, node: &Node) -> Vec<Node> {
    // The server acks what the client sends it.
    if node.tag == "message" || node.tag == "receipt" {
        let Some(id) = attr(node, "id") else {
            return Vec::new();
        };
        let mut ack = NodeBuilder::new("ack")
            .attr("class", node.tag.to_string())
            .attr("id", id)
            .attr("t", super::now_secs().to_string());
        if let Some(to) = attr(node, "to") {
            ack = ack.attr("from", to);
        }
        if let Some(kind) = attr(node, "type").filter(|_| node.tag == "receipt") {
            ack = ack.attr("type", kind);
        }
        return vec![ack.build()];
    }
    if node.tag != "iq" {
        return Vec::new();
    }
    let Some(kind) = attr(node, "type") else {
        return Vec::new();
    };
    if kind != "get" && kind != "set" {
        return Vec::new();
    }
    let Some(id) = attr(node, "id") else {
        return Vec::new();
    };
    let xmlns = attr(node, "xmlns").unwrap_or_default();
    let child = |tag: &str| node.get_optional_child(tag).is_some();
    match xmlns.as_str() {
        // The server's count of the companion's pre-keys: what it holds.
        "encrypt" if kind == "get" && child("count") => {
            let count = {
                let dir = shared.directory.lock().unwrap();
                account
                    .and_then(|k| dir.accounts.get(k))
                    .and_then(|a| a.bundle.as_ref())
                    .map_or(0, |b| b.one_time.len())
            };
            vec![
                result_to(id)
                    .children([NodeBuilder::new("count")
                        .attr("value", count.to_string())
                        .build()])
                    .build(),
            ]
        }
        "encrypt" if kind == "get" && child("digest") => vec![digest(shared, account, id)],
        "encrypt" if kind == "get" && child("key") => vec![bundles(shared, node, id).await],
        "usync" => match usync(shared, node, id.clone()) {
            Ok(n) => vec![n],
            Err(e) => {
                shared.error(format!("{e:#}"));
                vec![error_to(id, 400, "bad-request")]
            }
        },
        "w:g2" => super::groups::answer(shared, account, node, id),
        // App-state sync: every collection asked for is clean and up to date
        // (the mock keeps no app state).
        "w:sync:app:state" => {
            let collections = node
                .get_optional_child("sync")
                .map(|sync| {
                    sync.get_children_by_tag("collection")
                        .filter_map(|c| attr(c, "name"))
                        .map(|name| NodeBuilder::new("collection").attr("name", name).build())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            vec![
                result_to(id)
                    .children([NodeBuilder::new("sync").children(collections).build()])
                    .build(),
            ]
        }
        // The media hosts: the mock's own.
        "w:m" if child("media_conn") => {
            let host = shared.media_host.lock().unwrap().clone();
            vec![
                result_to(id)
                    .children([NodeBuilder::new("media_conn")
                        .attr("auth", super::media::MEDIA_AUTH)
                        .attr("ttl", "3600")
                        .children([NodeBuilder::new("host").attr("hostname", host).build()])
                        .build()])
                    .build(),
            ]
        }
        _ => vec![result_to(id).build()],
    }
}

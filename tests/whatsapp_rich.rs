//! Rich messages end to end against the mock WhatsApp server: a contact
//! (a real Signal party) sends quotes, mentions, reactions, edits,
//! revokes, locations, polls, contact cards and poll votes, which reach
//! `on_message` with their fields; a script's location, poll, mention,
//! quote, reaction, edit and revoke reach the contact, who decrypts them;
//! a read receipt reaches `on_receipt`; `m:read` and `bot.typing` go out
//! as their stanzas.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::MockServer;
use support::rig::{INSTANCE, Rig};
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;

const WAIT: Duration = Duration::from_secs(20);
const ALICE: &str = "15550001111";
const ALICE_JID: &str = "15550001111@s.whatsapp.net";
const BOT_JID: &str = "15551234567@s.whatsapp.net";

/// Records every message's rich fields; "go" makes it send one of each.
const RICH_LUA: &str = r#"
local function push(key, v)
  local l = bot.store.get(key) or {}
  l[#l + 1] = v
  bot.store.set(key, l)
end

function on_message(m)
  local rec = { id = m.id, type = m.type, text = m.text, target = m.target,
    reaction = m.reaction, mentions = table.concat(m.mentions, ","),
    votes = table.concat(m.votes, ",") }
  if m.quoted then
    rec.quoted = { id = m.quoted.id, sender = m.quoted.sender, text = m.quoted.text,
      type = m.quoted.type }
  end
  if m.location then
    rec.location = { lat = m.location.lat, lng = m.location.lng, name = m.location.name }
  end
  if m.poll then
    rec.poll = { name = m.poll.name, options = table.concat(m.poll.options, ","),
      selectable = m.poll.selectable }
  end
  push("rich", rec)
  if m.text == "go" then
    m:reply({ location = { lat = 52.52, lng = 13.405, name = "Berlin" } })
    local poll = bot.send(m.chat, { poll = { name = "Lunch?",
      options = { "pizza", "sushi", "salad" }, selectable = 2 } })
    bot.store.set("poll", poll)
    bot.send(m.chat, { text = "hi @15550001111", mentions = { "15550001111" }, quote = m.id })
    m:react("👍")
    local draft = bot.send(m.chat, "draft")
    bot.store.set("draft", draft)
    bot.edit(m.chat, draft, "final")
    bot.revoke(m.chat, draft)
    local ok = m:read()
    local typing = bot.typing(m.chat)
    bot.store.set("acts", tostring(ok) .. "," .. tostring(typing))
  end
end

function on_receipt(r)
  push("receipts", r.kind .. ":" .. r.chat .. ":" .. table.concat(r.ids, ","))
end
"#;

async fn paired() -> (MockServer, Rig) {
    let server = MockServer::start().await;
    let rig = Rig::start_scripted(&server, &[("rich.lua", RICH_LUA)]);
    rig.pair(&server).await;
    server
        .wait_until(WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;
    (server, rig)
}

fn stored(rig: &Rig, key: &str) -> Value {
    rig.app
        .store
        .kv_get(INSTANCE, "rich", key)
        .unwrap()
        .unwrap_or(Value::Null)
}

/// Waits until the script has recorded `n` items under `key`.
async fn recorded(rig: &Rig, server: &MockServer, key: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Value::Array(v) = stored(rig, key)
            && v.len() >= n
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key}: {} (errors: {:?})",
            stored(rig, key),
            server.errors()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(id: &str, from_me: bool) -> MessageField<wa::MessageKey> {
    MessageField::some(wa::MessageKey {
        remote_jid: Some(BOT_JID.into()),
        from_me: Some(from_me),
        id: Some(id.into()),
        participant: None,
    })
}

#[tokio::test]
async fn a_contacts_rich_messages_reach_on_message_with_their_fields() {
    let (server, rig) = paired().await;
    let first = server.message_from(ALICE, "Alice", "hello").await.unwrap();
    let quote = wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("re: @15551234567".into()),
            context_info: MessageField::some(wa::ContextInfo {
                stanza_id: Some(first.clone()),
                participant: Some(ALICE_JID.into()),
                quoted_message: MessageField::some(wa::Message {
                    conversation: Some("hello".into()),
                    ..Default::default()
                }),
                mentioned_jid: vec![BOT_JID.into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reaction = wa::Message {
        reaction_message: MessageField::some(wa::message::ReactionMessage {
            key: key(&first, false),
            text: Some("❤".into()),
            sender_timestamp_ms: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let protocol = |t, edited: Option<&str>| wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            key: key(&first, false),
            r#type: Some(t),
            edited_message: edited
                .map(|e| {
                    MessageField::some(wa::Message {
                        conversation: Some(e.into()),
                        ..Default::default()
                    })
                })
                .unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    };
    use wa::message::protocol_message::Type as P;
    let location = wa::Message {
        location_message: MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(48.85),
            degrees_longitude: Some(2.35),
            name: Some("Paris".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let poll = wa::Message {
        poll_creation_message_v3: MessageField::some(wa::message::PollCreationMessage {
            name: Some("Tea or coffee?".into()),
            options: ["tea", "coffee"]
                .iter()
                .map(|o| wa::message::poll_creation_message::Option {
                    option_name: Some(o.to_string()),
                    ..Default::default()
                })
                .collect(),
            selectable_options_count: Some(1),
            ..Default::default()
        }),
        message_context_info: MessageField::some(wa::MessageContextInfo {
            message_secret: Some(vec![7; 32]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let card = wa::Message {
        contact_message: MessageField::some(wa::message::ContactMessage {
            display_name: Some("Bob".into()),
            vcard: Some("BEGIN:VCARD\nFN:Bob\nEND:VCARD".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut ids = vec![first.clone()];
    for m in [
        quote,
        reaction,
        protocol(P::MESSAGE_EDIT, Some("hello, edited")),
        protocol(P::REVOKE, None),
        location,
        poll,
        card,
    ] {
        ids.push(server.send_from(0, ALICE, "Alice", &m).await.unwrap());
    }
    let got = recorded(&rig, &server, "rich", ids.len()).await;
    let field = |i: usize, f: &str| got[i][f].clone();
    let types: Vec<Value> = (0..got.len()).map(|i| field(i, "type")).collect();
    assert_eq!(
        types,
        json!([
            "text", "text", "reaction", "edit", "revoke", "location", "poll", "contact"
        ])
        .as_array()
        .unwrap()
        .clone(),
        "{got:?}"
    );
    assert_eq!(field(1, "text"), "re: @15551234567");
    assert_eq!(field(1, "mentions"), BOT_JID);
    assert_eq!(
        field(1, "quoted"),
        json!({"id": first, "sender": ALICE_JID, "text": "hello", "type": "text"})
    );
    assert_eq!(
        (field(2, "target"), field(2, "reaction")),
        (json!(first), json!("❤"))
    );
    assert_eq!(
        (field(3, "target"), field(3, "text")),
        (json!(first), json!("hello, edited"))
    );
    assert_eq!(field(4, "target"), json!(first));
    assert_eq!(
        field(5, "location"),
        json!({"lat": 48.85, "lng": 2.35, "name": "Paris"})
    );
    assert_eq!(
        field(6, "poll"),
        json!({"name": "Tea or coffee?", "options": "tea,coffee", "selectable": 1})
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(&field(i, "id"), id);
    }
    rig.stop().await;
}

fn context(m: &wa::Message) -> Option<&wa::ContextInfo> {
    m.extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .or_else(|| {
            m.location_message
                .as_option()
                .and_then(|l| l.context_info.as_option())
        })
}

#[tokio::test]
async fn a_scripts_rich_sends_reach_the_contact_and_votes_and_receipts_come_back() {
    let (server, rig) = paired().await;
    let go = server.message_from(ALICE, "Alice", "go").await.unwrap();
    // Seven messages: location, poll, mention, reaction, draft, edit, revoke.
    let mut inbox = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while inbox.len() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {inbox:#?}; errors {:?}",
            server.errors()
        );
        inbox.extend(server.deliver_to(ALICE).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let poll_id = stored(&rig, "poll").as_str().unwrap().to_string();
    let draft = stored(&rig, "draft").as_str().unwrap().to_string();

    let loc = inbox[0].location_message.as_option().expect("a location");
    assert_eq!(
        (
            loc.degrees_latitude,
            loc.degrees_longitude,
            loc.name.as_deref()
        ),
        (Some(52.52), Some(13.405), Some("Berlin"))
    );
    assert_eq!(
        context(&inbox[0]).and_then(|c| c.stanza_id.as_deref()),
        Some(go.as_str()),
        "m:reply quotes"
    );

    let poll = inbox[1].poll_creation_message.as_option().expect("a poll");
    assert_eq!(poll.name.as_deref(), Some("Lunch?"));
    let options: Vec<&str> = poll
        .options
        .iter()
        .filter_map(|o| o.option_name.as_deref())
        .collect();
    assert_eq!(options, ["pizza", "sushi", "salad"]);
    assert_eq!(poll.selectable_options_count, Some(2));
    let secret = inbox[1]
        .message_context_info
        .as_option()
        .and_then(|c| c.message_secret.clone())
        .expect("the poll's secret");

    let ctx = context(&inbox[2]).expect("a mention with a quote");
    assert_eq!(ctx.mentioned_jid, [ALICE_JID]);
    assert_eq!(ctx.stanza_id.as_deref(), Some(go.as_str()));

    let r = inbox[3].reaction_message.as_option().expect("a reaction");
    assert_eq!(r.text.as_deref(), Some("👍"));
    assert_eq!(
        r.key.as_option().and_then(|k| k.id.as_deref()),
        Some(go.as_str())
    );

    assert_eq!(inbox[4].conversation.as_deref(), Some("draft"));
    let edit = inbox[5]
        .protocol_message
        .as_option()
        .expect("an edit is a protocol message");
    use wa::message::protocol_message::Type as P;
    assert_eq!(edit.r#type, Some(P::MESSAGE_EDIT));
    assert_eq!(
        edit.key.as_option().and_then(|k| k.id.as_deref()),
        Some(draft.as_str())
    );
    assert_eq!(
        edit.edited_message
            .as_option()
            .and_then(|m| m.conversation.as_deref()),
        Some("final")
    );
    let revoke = inbox[6].protocol_message.as_option().expect("a revoke");
    assert_eq!(revoke.r#type, Some(P::REVOKE));
    assert_eq!(
        revoke.key.as_option().and_then(|k| k.id.as_deref()),
        Some(draft.as_str())
    );

    // m:read and bot.typing went out as their stanzas.
    assert_eq!(stored(&rig, "acts"), "true,true");
    server
        .wait_until(WAIT, "the read receipt and the typing state", |s| {
            let got = s.received();
            let read = got.iter().any(|n| {
                n.tag == "receipt"
                    && support::attr(n, "type").as_deref() == Some("read")
                    && support::attr(n, "id").as_deref() == Some(go.as_str())
            });
            let typing = got.iter().any(|n| {
                n.tag == "chatstate"
                    && support::attr(n, "to").as_deref() == Some(ALICE_JID)
                    && n.get_optional_child("composing").is_some()
            });
            read && typing
        })
        .await;

    // Alice votes for two options: the vote is encrypted with the poll's
    // secret and reaches on_message as their names.
    let hashes: Vec<Vec<u8>> = ["pizza", "salad"]
        .iter()
        .map(|o| wacore::poll::compute_option_hash(o).to_vec())
        .collect();
    let (payload, iv) =
        wacore::poll::encrypt_poll_vote_with_secret(&hashes, &secret, &poll_id, BOT_JID, ALICE_JID)
            .unwrap();
    let vote = wa::Message {
        poll_update_message: MessageField::some(wa::message::PollUpdateMessage {
            poll_creation_message_key: key(&poll_id, true),
            vote: MessageField::some(wa::message::PollEncValue {
                enc_payload: Some(payload),
                enc_iv: Some(iv.to_vec()),
            }),
            sender_timestamp_ms: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    server.send_from(0, ALICE, "Alice", &vote).await.unwrap();
    let got = recorded(&rig, &server, "rich", 2).await;
    assert_eq!(got[1]["type"], "poll_vote", "{got:?}");
    assert_eq!(got[1]["target"], json!(poll_id));
    assert_eq!(got[1]["votes"], "pizza,salad");

    // Alice's phone reads the draft: on_receipt sees it.
    assert_eq!(server.receipt_from(0, ALICE, &[&draft], "read"), 1);
    let receipts = recorded(&rig, &server, "receipts", 1).await;
    assert!(
        receipts
            .iter()
            .any(|r| r == &json!(format!("read:{ALICE_JID}:{draft}"))),
        "{receipts:?}"
    );
    rig.stop().await;
}

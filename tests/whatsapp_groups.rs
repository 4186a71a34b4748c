//! Groups against the mock server, through the real host, the
//! whatsapp-rust client and a Lua script: `info` lists the admins, a
//! non-admin bot's `remove` is `nil, err` with the server's reason,
//! `promote` and `remove` change the mock's group and come back as
//! `on_group`, and a join notification fires `on_group{action="add"}`; a
//! member's group message (sender keys) reaches `on_message` with the
//! group and the member, and the bot's reply is read by every other member.

mod support;

use std::time::Duration;

use moonwire::channel::groups::{GroupOp, GroupReply};
use support::MockServer;
use support::groups::Role;
use support::rig::{INSTANCE, Rig, WAIT};

const G: &str = "120363000000000001";
const ALICE: &str = "15550001111";
const BOB: &str = "15550002222";
const CAROL: &str = "15550003333";

const GROUPS_LUA: &str = r#"
local function rec(key, v)
  local t = bot.store.get(key) or {}
  t[#t + 1] = v
  bot.store.set(key, t)
end
function on_message(m)
  if m.is_group then
    rec("group_messages", string.format("%s %s %s", m.chat, m.sender, m.text or ""))
  end
end
bot.command("hi", function(m)
  bot.send(m.chat, { text = "hi @" .. m.sender:match("^%d+"), mentions = { m.sender } })
end)
function on_group(e)
  rec("events", string.format("%s %s %s by=%s", e.chat, e.action,
    table.concat(e.participants, ","), tostring(e.by)))
end
bot.command("kick", function(m, args)
  local ok, err = bot.groups.remove(args[1], args[2])
  rec("kicks", tostring(ok) .. " " .. tostring(err))
end)
bot.command("warnkick", function(m, args)
  m:reply("removing " .. args[2])
  local ok, err = bot.groups.remove(args[1], args[2])
  rec("warnkicks", tostring(ok) .. " " .. tostring(err))
end)
bot.command("admins", function(m, args)
  local g, err = bot.groups.info(args[1])
  if not g then return rec("admins", "nil " .. err) end
  local list = {}
  for _, p in ipairs(g.participants) do
    if p.admin then list[#list + 1] = p.jid end
  end
  rec("admins", g.subject .. " " .. table.concat(list, ","))
end)
"#;

fn jid(user: &str) -> String {
    format!("{user}@s.whatsapp.net")
}

fn gjid() -> String {
    format!("{G}@g.us")
}

/// An open instance with the groups script, in group `G` made by Alice
/// (with the bot and Bob), the bot not an admin.
async fn in_a_group() -> (MockServer, Rig, String) {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    rig.pair(&server).await;
    server
        .wait_until(WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;
    std::fs::write(rig.dir.join("scripts/groups.lua"), GROUPS_LUA).unwrap();
    rig.app.scripts.reload().await;
    let (me, _) = server.account(0);
    server
        .create_group(G, "Team", &[ALICE, me.as_str(), BOB])
        .unwrap();
    (server, rig, me)
}

fn recorded(rig: &Rig, key: &str) -> Vec<String> {
    match rig.app.store.kv_get(INSTANCE, "groups", key) {
        Ok(Some(serde_json::Value::Array(v))) => v
            .into_iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

async fn wait_recorded(rig: &Rig, server: &MockServer, key: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = recorded(rig, key);
        if got.len() >= n {
            return got;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{key}: {got:?} after {WAIT:?}; mock errors: {:?}",
                server.errors()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn info_lists_the_admins_and_a_non_admin_bots_remove_gets_the_servers_reason() {
    let (server, rig, me) = in_a_group().await;
    let info = match rig.handle.group(GroupOp::Info(gjid())).await.unwrap() {
        GroupReply::Info(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.subject, "Team");
    assert_eq!(info.owner.as_deref(), Some(jid(ALICE).as_str()));
    let admins: Vec<&str> = info
        .participants
        .iter()
        .filter(|p| p.admin)
        .map(|p| p.jid.as_str())
        .collect();
    assert_eq!(admins, [jid(ALICE)]);
    assert!(info.participant(&jid(&me)).is_some(), "{info:?}");

    server
        .message_from(ALICE, "Alice", &format!("!kick {} {BOB}", gjid()))
        .await
        .unwrap();
    let kicks = wait_recorded(&rig, &server, "kicks", 1).await;
    assert_eq!(kicks, ["nil 403 forbidden"]);
    assert_eq!(server.group(G).unwrap().role(BOB), Some(Role::Member));

    server
        .message_from(ALICE, "Alice", "!admins nowhere@g.us")
        .await
        .unwrap();
    let admins = wait_recorded(&rig, &server, "admins", 1).await;
    assert_eq!(admins, ["nil 404 item-not-found"]);
    rig.stop().await;
}

#[tokio::test]
async fn promote_and_remove_change_the_mocks_group_and_fire_on_group() {
    let (server, rig, me) = in_a_group().await;
    // Alice makes the bot an admin: the notification reaches on_group.
    server.promote_in_group(G, &me).unwrap();
    let events = wait_recorded(&rig, &server, "events", 1).await;
    assert_eq!(
        events,
        [format!("{} promote {} by={}", gjid(), jid(&me), jid(ALICE))]
    );
    // The cache learnt it from the event: info says so at once.
    server
        .message_from(ALICE, "Alice", &format!("!admins {}", gjid()))
        .await
        .unwrap();
    let admins = wait_recorded(&rig, &server, "admins", 1).await;
    assert_eq!(admins, [format!("Team {},{}", jid(ALICE), jid(&me))]);

    server
        .message_from(ALICE, "Alice", &format!("!kick {} {BOB}", gjid()))
        .await
        .unwrap();
    let kicks = wait_recorded(&rig, &server, "kicks", 1).await;
    assert_eq!(kicks, ["true nil"]);
    assert_eq!(server.group(G).unwrap().role(BOB), None);
    let events = wait_recorded(&rig, &server, "events", 2).await;
    assert_eq!(
        events[1],
        format!("{} remove {} by={}", gjid(), jid(BOB), jid(&me))
    );

    // Through the handle, a promote changes the mock's group too.
    match rig
        .handle
        .group(GroupOp::Participants {
            jid: gjid(),
            change: moonwire::channel::groups::Change::Promote,
            users: vec![jid(ALICE), jid(CAROL)],
        })
        .await
        .unwrap()
    {
        GroupReply::Changed(r) => {
            assert_eq!(r[0].error, None);
            assert_eq!(r[1].error.as_deref().map(|e| &e[..3]), Some("404"));
        }
        other => panic!("{other:?}"),
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_join_notification_fires_on_group_add() {
    let (server, rig, _) = in_a_group().await;
    server.join_group(G, CAROL).unwrap();
    let events = wait_recorded(&rig, &server, "events", 1).await;
    assert_eq!(
        events,
        [format!("{} add {} by={}", gjid(), jid(CAROL), jid(CAROL))]
    );
    rig.stop().await;
}

#[tokio::test]
async fn list_invite_subject_and_leave_go_through_the_server() {
    let (server, rig, me) = in_a_group().await;
    server
        .create_group("120363000000000002", "Other", &[ALICE])
        .unwrap();
    match rig.handle.group(GroupOp::List).await.unwrap() {
        GroupReply::List(all) => {
            let ids: Vec<&str> = all.iter().map(|g| g.jid.as_str()).collect();
            assert_eq!(ids, [gjid()], "only the groups the bot is in");
        }
        other => panic!("{other:?}"),
    }
    let err = rig
        .handle
        .group(GroupOp::InviteLink(gjid()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    server.promote_in_group(G, &me).unwrap();
    wait_recorded(&rig, &server, "events", 1).await;
    match rig.handle.group(GroupOp::InviteLink(gjid())).await.unwrap() {
        GroupReply::Link(l) => assert_eq!(l, format!("https://chat.whatsapp.com/MOCK{G}")),
        other => panic!("{other:?}"),
    }
    rig.handle
        .group(GroupOp::SetSubject {
            jid: gjid(),
            subject: "Renamed".into(),
        })
        .await
        .unwrap();
    assert_eq!(server.group(G).unwrap().subject, "Renamed");
    rig.handle.group(GroupOp::Leave(gjid())).await.unwrap();
    assert_eq!(server.group(G).unwrap().role(&me), None);
    let err = rig.handle.group(GroupOp::Info(gjid())).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    rig.stop().await;
}

#[tokio::test]
async fn a_members_group_message_reaches_on_message_and_every_member_reads_the_reply() {
    let (server, rig, _) = in_a_group().await;
    let id = server
        .group_message_from(0, G, ALICE, "Alice", "echo hello all")
        .await
        .unwrap();
    let got = wait_recorded(&rig, &server, "group_messages", 1).await;
    assert_eq!(got, [format!("{} {} echo hello all", gjid(), jid(ALICE))]);
    assert!(!id.is_empty());
    // hooks.lua answers "echo ..." with m:reply: to the group, under a
    // sender key each member gets over a 1:1 session.
    server
        .wait_until(WAIT, "the reply to the group", |s| {
            s.received().iter().any(|n| {
                n.tag == "message" && support::attr(n, "to").as_deref() == Some(gjid().as_str())
            })
        })
        .await;
    for member in [ALICE, BOB] {
        let inbox = server.deliver_to(member).await.unwrap();
        let texts: Vec<Option<String>> = inbox.iter().map(support::contact::text_of).collect();
        assert_eq!(
            texts,
            [Some("hello all".to_string())],
            "{member}: {inbox:?}"
        );
        // m:reply quotes the member's message, naming who wrote it.
        let quoted_from = inbox[0]
            .extended_text_message
            .as_option()
            .and_then(|e| e.context_info.as_option())
            .and_then(|c| c.participant.clone());
        assert_eq!(quoted_from, Some(jid(ALICE)), "{member}");
    }
    // A second message from Bob, whose key is new to the bot.
    server
        .group_message_from(0, G, BOB, "Bob", "and me")
        .await
        .unwrap();
    let got = wait_recorded(&rig, &server, "group_messages", 2).await;
    assert_eq!(got[1], format!("{} {} and me", gjid(), jid(BOB)));
    rig.stop().await;
}

#[tokio::test]
async fn a_mention_in_the_group_reaches_the_members() {
    let (server, rig, _) = in_a_group().await;
    server
        .group_message_from(0, G, ALICE, "Alice", "!hi")
        .await
        .unwrap();
    server
        .wait_until(WAIT, "the greeting to the group", |s| {
            s.received().iter().any(|n| {
                n.tag == "message" && support::attr(n, "to").as_deref() == Some(gjid().as_str())
            })
        })
        .await;
    let inbox = server.deliver_to(BOB).await.unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let ext = inbox[0]
        .extended_text_message
        .as_option()
        .expect("a text with mentions is an extended text");
    assert_eq!(ext.text.as_deref(), Some(format!("hi @{ALICE}").as_str()));
    let mentioned = ext
        .context_info
        .as_option()
        .map(|c| c.mentioned_jid.clone())
        .unwrap_or_default();
    assert_eq!(mentioned, [jid(ALICE)]);
    rig.stop().await;
}

#[tokio::test]
async fn hostile_group_notifications_change_nothing_they_should_not() {
    use whatsapp_rust::wacore_binary::builder::NodeBuilder;
    let (server, rig, _) = in_a_group().await;
    let note = |from: &str, children: Vec<whatsapp_rust::wacore_binary::Node>| {
        NodeBuilder::new("notification")
            .attr("from", from.to_string())
            .attr("type", "w:gp2")
            .attr("id", format!("hostile-{}", children.len()))
            .attr("t", "1")
            .children(children)
            .build()
    };
    // No action, an unknown one, a participant without a JID, a subject
    // with no text, and one from a user instead of a group.
    for n in [
        note(&gjid(), vec![]),
        note(&gjid(), vec![NodeBuilder::new("frobnicate").build()]),
        note(
            &gjid(),
            vec![
                NodeBuilder::new("remove")
                    .children([NodeBuilder::new("participant").attr("nojid", "x").build()])
                    .build(),
            ],
        ),
        note(&gjid(), vec![NodeBuilder::new("subject").build()]),
        note(
            &jid(BOB),
            vec![
                NodeBuilder::new("add")
                    .children([NodeBuilder::new("participant")
                        .attr("jid", jid(CAROL))
                        .build()])
                    .build(),
            ],
        ),
    ] {
        assert!(server.send(n) > 0);
    }
    server.join_group(G, CAROL).unwrap();
    let events = wait_recorded(&rig, &server, "events", 1).await;
    let want = format!("{} add {} by={}", gjid(), jid(CAROL), jid(CAROL));
    assert!(events.contains(&want), "{events:?}");
    assert!(
        events.iter().all(|e| !e.contains("frobnicate")),
        "{events:?}"
    );
    // Still open, and the group's metadata is what the server says.
    assert_eq!(rig.handle.snapshot().state.name().as_str(), "open");
    match rig.handle.group(GroupOp::Info(gjid())).await.unwrap() {
        GroupReply::Info(g) => {
            assert_eq!(g.subject, "Team");
            assert_eq!(g.participants.len(), 4);
        }
        other => panic!("{other:?}"),
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_reply_made_before_a_remove_goes_out_before_it() {
    let (server, rig, me) = in_a_group().await;
    server.promote_in_group(G, &me).unwrap();
    wait_recorded(&rig, &server, "events", 1).await;
    let before = server.received().len();
    server
        .message_from(ALICE, "Alice", &format!("!warnkick {} {BOB}", gjid()))
        .await
        .unwrap();
    let kicks = wait_recorded(&rig, &server, "warnkicks", 1).await;
    assert_eq!(kicks, ["true nil"]);
    let received = server.received();
    let new = &received[before..];
    let reply = new
        .iter()
        .position(|n| {
            n.tag == "message" && support::attr(n, "to").as_deref() == Some(jid(ALICE).as_str())
        })
        .expect("the reply went out");
    let remove = new
        .iter()
        .position(|n| {
            n.tag == "iq"
                && support::attr(n, "xmlns").as_deref() == Some("w:g2")
                && n.get_optional_child("remove").is_some()
        })
        .expect("the remove went out");
    assert!(
        reply < remove,
        "the remove went out before the reply made before it"
    );
    rig.stop().await;
}

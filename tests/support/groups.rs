//! Groups on the mock server: their metadata and members, the `w:g2` IQs
//! a client sends about them (info, participating, add / remove / promote
//! / demote, invite, subject, leave) answered as the real server does
//! (403 for a non-admin or non-member, 404 for an unknown group, a code per
//! participant), the `<notification type="w:gp2">` every member's
//! devices get for each change, and group messages from contacts (sender
//! keys: `contact.rs`; routing a companion's group message: `stanzas.rs`).

use std::collections::BTreeMap;

use anyhow::bail;
use whatsapp_rust::Jid;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::node::NodeContent;

use super::{MockServer, SERVER, Shared, attr};

/// A member's role, as `<participant type>` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    Admin,
    SuperAdmin,
}

impl Role {
    fn wire(self) -> Option<&'static str> {
        match self {
            Role::Member => None,
            Role::Admin => Some("admin"),
            Role::SuperAdmin => Some("superadmin"),
        }
    }
}

/// One group as the server holds it. Members are phone numbers.
#[derive(Debug, Clone)]
pub struct MockGroup {
    pub subject: String,
    pub creator: String,
    pub members: Vec<(String, Role)>,
    pub announce: bool,
    pub locked: bool,
}

impl MockGroup {
    pub fn role(&self, user: &str) -> Option<Role> {
        self.members
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, r)| *r)
    }

    fn node(&self, id: &str) -> Node {
        let mut children: Vec<Node> = self
            .members
            .iter()
            .map(|(u, r)| {
                let mut p = NodeBuilder::new("participant").attr("jid", pn_jid(u));
                if let Some(t) = r.wire() {
                    p = p.attr("type", t);
                }
                p.build()
            })
            .collect();
        if self.locked {
            children.push(NodeBuilder::new("locked").build());
        }
        if self.announce {
            children.push(NodeBuilder::new("announcement").build());
        }
        NodeBuilder::new("group")
            .attr("id", id.to_string())
            .attr("subject", self.subject.clone())
            .attr("creator", pn_jid(&self.creator))
            .attr("creation", (super::now_secs() - 3600).to_string())
            .attr("s_t", (super::now_secs() - 3600).to_string())
            .attr("addressing_mode", "pn")
            .children(children)
            .build()
    }
}

/// The groups, by id (the user part of `<id>@g.us`).
pub type Groups = BTreeMap<String, MockGroup>;

fn pn_jid(user: &str) -> Jid {
    Jid::pn(user)
}

fn group_jid(id: &str) -> Jid {
    Jid::group(id)
}

fn result(to: &Node, id: String, children: Vec<Node>) -> Node {
    let mut b = NodeBuilder::new("iq")
        .attr("from", attr(to, "to").unwrap_or_else(|| SERVER.to_string()))
        .attr("type", "result")
        .attr("id", id);
    if !children.is_empty() {
        b = b.children(children);
    }
    b.build()
}

fn error(to: &Node, id: String, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", attr(to, "to").unwrap_or_else(|| SERVER.to_string()))
        .attr("type", "error")
        .attr("id", id)
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_string())
            .build()])
        .build()
}

/// A `w:gp2` notification about group `id`, done by `by`.
fn notification(shared: &Shared, id: &str, by: &str, action: Node) -> Node {
    NodeBuilder::new("notification")
        .attr("from", group_jid(id))
        .attr("type", "w:gp2")
        .attr("id", shared.id())
        .attr("participant", pn_jid(by))
        .attr("t", super::now_secs().to_string())
        .children([action])
        .build()
}

fn participants_node(tag: &'static str, users: &[String]) -> Node {
    NodeBuilder::new(tag)
        .children(users.iter().map(|u| {
            NodeBuilder::new("participant")
                .attr("jid", pn_jid(u))
                .build()
        }))
        .build()
}

/// Sends `node` to every logged-in device of an account in the group
/// (members before and after the change: whoever left hears of it too).
fn notify(shared: &Shared, members: &[String], node: &Node) {
    let accounts: Vec<usize> = {
        let dir = shared.directory.lock().unwrap();
        dir.accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| members.contains(&a.pn))
            .map(|(k, _)| k)
            .collect()
    };
    for k in accounts {
        shared.send_to_account(k, node);
    }
    shared.touch();
}

fn user_of(jid: &str) -> String {
    jid.split(['@', ':']).next().unwrap_or_default().to_string()
}

/// Answers a `w:g2` IQ from account `account`.
pub(super) fn answer(
    shared: &Shared,
    account: Option<usize>,
    node: &Node,
    id: String,
) -> Vec<Node> {
    let Some(me) = account.and_then(|k| {
        shared
            .directory
            .lock()
            .unwrap()
            .accounts
            .get(k)
            .map(|a| a.pn.clone())
    }) else {
        return vec![error(node, id, 401, "not-authorized")];
    };
    let kind = attr(node, "type").unwrap_or_default();
    let child = |tag: &str| node.get_optional_child(tag);
    // Addressed to the group server itself: participating and leave.
    if let Some(_p) = child("participating") {
        let groups = shared.groups.lock().unwrap();
        let mine: Vec<Node> = groups
            .iter()
            .filter(|(_, g)| g.role(&me).is_some())
            .map(|(gid, g)| g.node(gid))
            .collect();
        return vec![result(
            node,
            id,
            vec![NodeBuilder::new("groups").children(mine).build()],
        )];
    }
    if let Some(leave) = child("leave") {
        let gids: Vec<String> = leave
            .get_children_by_tag("group")
            .filter_map(|g| attr(g, "id"))
            .map(|j| user_of(&j))
            .collect();
        for gid in gids {
            let before = {
                let mut groups = shared.groups.lock().unwrap();
                let Some(g) = groups.get_mut(&gid) else {
                    continue;
                };
                let before: Vec<String> = g.members.iter().map(|(u, _)| u.clone()).collect();
                g.members.retain(|(u, _)| *u != me);
                before
            };
            let n = notification(
                shared,
                &gid,
                &me,
                participants_node("remove", std::slice::from_ref(&me)),
            );
            notify(shared, &before, &n);
        }
        return vec![result(node, id, Vec::new())];
    }
    let Some(gid) = attr(node, "to").map(|t| user_of(&t)) else {
        return vec![error(node, id, 400, "bad-request")];
    };
    let mut groups = shared.groups.lock().unwrap();
    let Some(g) = groups.get_mut(&gid) else {
        return vec![error(node, id, 404, "item-not-found")];
    };
    let Some(my_role) = g.role(&me) else {
        return vec![error(node, id, 403, "forbidden")];
    };
    let admin = my_role != Role::Member;
    if child("query").is_some() {
        return vec![result(node, id, vec![g.node(&gid)])];
    }
    if child("invite").is_some() {
        if !admin {
            return vec![error(node, id, 403, "forbidden")];
        }
        let code = format!("MOCK{}", gid.to_uppercase());
        return vec![result(
            node,
            id,
            vec![NodeBuilder::new("invite").attr("code", code).build()],
        )];
    }
    if let Some(s) = child("subject").filter(|_| kind == "set") {
        if g.locked && !admin {
            return vec![error(node, id, 403, "forbidden")];
        }
        let subject = match &s.content {
            Some(NodeContent::String(t)) => t.to_string(),
            Some(NodeContent::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        g.subject = subject.clone();
        let members: Vec<String> = g.members.iter().map(|(u, _)| u.clone()).collect();
        drop(groups);
        let n = notification(
            shared,
            &gid,
            &me,
            NodeBuilder::new("subject")
                .attr("subject", subject)
                .attr("s_o", pn_jid(&me))
                .attr("s_t", super::now_secs().to_string())
                .build(),
        );
        notify(shared, &members, &n);
        return vec![result(node, id, Vec::new())];
    }
    for action in ["add", "remove", "promote", "demote"] {
        let Some(a) = child(action).filter(|_| kind == "set") else {
            continue;
        };
        if !admin {
            return vec![error(node, id, 403, "forbidden")];
        }
        let users: Vec<String> = a
            .get_children_by_tag("participant")
            .filter_map(|p| attr(p, "jid"))
            .map(|j| user_of(&j))
            .collect();
        let before: Vec<String> = g.members.iter().map(|(u, _)| u.clone()).collect();
        let mut done = Vec::new();
        let mut answers = Vec::new();
        for u in users {
            let member = g.role(&u).is_some();
            let err = match action {
                "add" if member => Some("409"),
                "add" => None,
                _ if !member => Some("404"),
                _ => None,
            };
            let mut p = NodeBuilder::new("participant").attr("jid", pn_jid(&u));
            if let Some(e) = err {
                p = p.attr("error", e);
            } else {
                match action {
                    "add" => g.members.push((u.clone(), Role::Member)),
                    "remove" => g.members.retain(|(m, _)| *m != u),
                    "promote" | "demote" => {
                        for (m, r) in &mut g.members {
                            if *m == u {
                                *r = if action == "promote" {
                                    Role::Admin
                                } else {
                                    Role::Member
                                };
                            }
                        }
                    }
                    _ => {}
                }
                done.push(u.clone());
            }
            answers.push(p.build());
        }
        let mut everyone = before;
        everyone.extend(g.members.iter().map(|(u, _)| u.clone()));
        everyone.sort();
        everyone.dedup();
        drop(groups);
        if !done.is_empty() {
            let n = notification(shared, &gid, &me, participants_node(action, &done));
            notify(shared, &everyone, &n);
        }
        return vec![result(
            node,
            id,
            vec![NodeBuilder::new(action).children(answers).build()],
        )];
    }
    vec![result(node, id, Vec::new())]
}

/// The members (phone numbers) of the group `jid` (`<id>@g.us`).
pub(super) fn members(shared: &Shared, jid: &str) -> Vec<String> {
    shared
        .groups
        .lock()
        .unwrap()
        .get(&user_of(jid))
        .map(|g| g.members.iter().map(|(u, _)| u.clone()).collect())
        .unwrap_or_default()
}

impl MockServer {
    /// The contact `user`, a member of group `id`, writes `text` there as
    /// WhatsApp does: its sender key goes to account `k`'s companion over
    /// their 1:1 session (`pkmsg`/`msg` carrying the distribution message)
    /// and the text as a `skmsg` under that key, in one `<message
    /// from="<id>@g.us" participant=...>`. Answers the message id.
    pub async fn group_message_from(
        &self,
        k: usize,
        id: &str,
        user: &str,
        push_name: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        if self.group(id).and_then(|g| g.role(user)).is_none() {
            bail!("{user} is not in group {id}");
        }
        let group = format!("{id}@g.us");
        let party = self
            .shared
            .directory
            .lock()
            .unwrap()
            .contact(user)
            .party
            .clone();
        let mut party = party.lock().await;
        let message = whatsapp_rust::waproto::whatsapp::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
        let (distribution, skmsg) = party.group_encrypt(&group, &message).await?;
        let from = format!("{user}@s.whatsapp.net");
        let (mid, mut node) = super::stanzas::sealed_message(
            &self.shared,
            k,
            &mut party,
            &from,
            push_name,
            &distribution,
        )
        .await?;
        node.attrs.insert("from", group_jid(id));
        node.attrs.insert("participant", pn_jid(user));
        let mut children = node.children().map(<[Node]>::to_vec).unwrap_or_default();
        children.push(
            NodeBuilder::new("enc")
                .attr("v", "2")
                .attr("type", "skmsg")
                .bytes(skmsg)
                .build(),
        );
        node.content = Some(NodeContent::Nodes(children));
        if self.shared.send_to_account(k, &node) == 0 {
            bail!("no connection of account {k} to deliver the message on");
        }
        Ok(mid)
    }

    /// Makes group `<id>@g.us` with `members` (phone numbers; the first
    /// one created it and is its super admin); tells nobody.
    pub fn create_group(&self, id: &str, subject: &str, members: &[&str]) -> anyhow::Result<()> {
        let Some(first) = members.first() else {
            bail!("a group needs a member");
        };
        let g = MockGroup {
            subject: subject.into(),
            creator: first.to_string(),
            members: members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let role = if i == 0 {
                        Role::SuperAdmin
                    } else {
                        Role::Member
                    };
                    (m.to_string(), role)
                })
                .collect(),
            announce: false,
            locked: false,
        };
        self.shared.groups.lock().unwrap().insert(id.into(), g);
        Ok(())
    }

    /// Group `id` as the server holds it now.
    pub fn group(&self, id: &str) -> Option<MockGroup> {
        self.shared.groups.lock().unwrap().get(id).cloned()
    }

    /// `user` joins group `id` (by an invite link): every member's devices
    /// get the `add` notification.
    pub fn join_group(&self, id: &str, user: &str) -> anyhow::Result<()> {
        let members = {
            let mut groups = self.shared.groups.lock().unwrap();
            let Some(g) = groups.get_mut(id) else {
                bail!("no group {id}");
            };
            if g.role(user).is_some() {
                bail!("{user} is in {id} already");
            }
            g.members.push((user.to_string(), Role::Member));
            g.members.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>()
        };
        let n = notification(
            &self.shared,
            id,
            user,
            participants_node("add", &[user.to_string()]),
        );
        notify(&self.shared, &members, &n);
        Ok(())
    }

    /// The creator of group `id` makes `user` an admin, and says so.
    pub fn promote_in_group(&self, id: &str, user: &str) -> anyhow::Result<()> {
        let (creator, members) = {
            let mut groups = self.shared.groups.lock().unwrap();
            let Some(g) = groups.get_mut(id) else {
                bail!("no group {id}");
            };
            let Some(entry) = g.members.iter_mut().find(|(u, _)| u == user) else {
                bail!("{user} is not in {id}");
            };
            entry.1 = Role::Admin;
            (
                g.creator.clone(),
                g.members.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>(),
            )
        };
        let n = notification(
            &self.shared,
            id,
            &creator,
            participants_node("promote", &[user.to_string()]),
        );
        notify(&self.shared, &members, &n);
        Ok(())
    }
}

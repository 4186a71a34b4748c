//! The console's simulated groups: what `/group`, `/join`, `/leave`,
//! `/promote`, `/demote` and `/subject` change, and how the simulated
//! server answers the bot's `bot.groups.*` calls, with the reasons a real
//! server gives (not an admin, not a member, unknown group).

use std::collections::BTreeMap;

use super::groups::{
    Change, GroupAction, GroupEvent, GroupInfo, GroupOp, GroupReply, Participant, UserResult,
};
use super::{ChannelError, recipient};

/// A console line that changes a simulated group (as someone other than
/// the bot would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLine {
    /// `/group CHAT SUBJECT MEMBER...`: the first member creates it and is
    /// its admin; the bot is always a (plain) member.
    Create {
        chat: String,
        subject: String,
        members: Vec<String>,
    },
    /// `/join CHAT USER`.
    Join { chat: String, user: String },
    /// `/leave CHAT USER`.
    Leave { chat: String, user: String },
    /// `/promote CHAT USER`, by the group's creator.
    Promote { chat: String, user: String },
    /// `/demote CHAT USER`, by the group's creator.
    Demote { chat: String, user: String },
    /// `/subject CHAT TEXT`, by the group's creator.
    Subject { chat: String, text: String },
}

/// The most groups one console run may simulate.
const MAX_GROUPS: usize = 1000;

/// The simulated server's groups.
#[derive(Debug, Default)]
pub struct SimGroups {
    groups: BTreeMap<String, GroupInfo>,
}

fn jid(s: &str, what: &str) -> Result<String, String> {
    recipient(s).map_err(|_| format!("{what} {s:?} is not a JID (user@server)"))
}

impl SimGroups {
    /// Applies a console line; the event the server sends for it.
    pub fn line(&mut self, line: GroupLine, bot: &str) -> Result<GroupEvent, String> {
        let ev =
            |chat: &str, action, participants: Vec<String>, by: Option<String>, value| GroupEvent {
                chat: chat.to_string(),
                action,
                participants,
                by,
                value,
            };
        match line {
            GroupLine::Create {
                chat,
                subject,
                members,
            } => {
                if !chat.ends_with("@g.us") {
                    return Err(format!("/group: {chat:?} is not a group id (…@g.us)"));
                }
                if self.groups.contains_key(&chat) {
                    return Err(format!("/group: {chat} exists already"));
                }
                if self.groups.len() >= MAX_GROUPS {
                    return Err(format!("/group: at most {MAX_GROUPS} groups"));
                }
                let mut participants: Vec<Participant> = Vec::new();
                for (i, m) in members.iter().enumerate() {
                    let j = jid(m, "/group: member")?;
                    if participants.iter().all(|p| p.jid != j) {
                        participants.push(Participant {
                            jid: j,
                            admin: i == 0,
                            super_admin: i == 0,
                        });
                    }
                }
                let Some(owner) = participants.first().map(|p| p.jid.clone()) else {
                    return Err("/group needs at least one member".into());
                };
                if participants.iter().all(|p| p.jid != bot) {
                    participants.push(Participant {
                        jid: bot.to_string(),
                        ..Participant::default()
                    });
                }
                let all = participants.iter().map(|p| p.jid.clone()).collect();
                self.groups.insert(
                    chat.clone(),
                    GroupInfo {
                        jid: chat.clone(),
                        subject: subject.clone(),
                        owner: Some(owner.clone()),
                        participants,
                        ..GroupInfo::default()
                    },
                );
                Ok(ev(
                    &chat,
                    GroupAction::Create,
                    all,
                    Some(owner),
                    Some(subject),
                ))
            }
            GroupLine::Join { chat, user } => {
                let user = jid(&user, "/join: user")?;
                let g = self.known(&chat)?;
                if g.participant(&user).is_some() {
                    return Err(format!("/join: {user} is in {chat} already"));
                }
                let e = ev(
                    &chat,
                    GroupAction::Add,
                    vec![user.clone()],
                    Some(user),
                    None,
                );
                g.apply(&e);
                Ok(e)
            }
            GroupLine::Leave { chat, user } => {
                let user = jid(&user, "/leave: user")?;
                let g = self.known(&chat)?;
                if g.participant(&user).is_none() {
                    return Err(format!("/leave: {user} is not in {chat}"));
                }
                let e = ev(
                    &chat,
                    GroupAction::Remove,
                    vec![user.clone()],
                    Some(user),
                    None,
                );
                g.apply(&e);
                Ok(e)
            }
            GroupLine::Promote { chat, user } => self.role(&chat, &user, GroupAction::Promote),
            GroupLine::Demote { chat, user } => self.role(&chat, &user, GroupAction::Demote),
            GroupLine::Subject { chat, text } => {
                let g = self.known(&chat)?;
                let e = ev(
                    &chat,
                    GroupAction::Subject,
                    Vec::new(),
                    g.owner.clone(),
                    Some(text),
                );
                g.apply(&e);
                Ok(e)
            }
        }
    }

    /// `/promote` or `/demote`, by the group's creator.
    fn role(&mut self, chat: &str, user: &str, action: GroupAction) -> Result<GroupEvent, String> {
        let line = action.as_str();
        let user = jid(user, &format!("/{line}: user"))?;
        let g = self.known(chat)?;
        if g.participant(&user).is_none() {
            return Err(format!("/{line}: {user} is not in {chat}"));
        }
        let e = GroupEvent {
            chat: chat.to_string(),
            action,
            participants: vec![user],
            by: g.owner.clone(),
            value: None,
        };
        g.apply(&e);
        Ok(e)
    }

    fn known(&mut self, chat: &str) -> Result<&mut GroupInfo, String> {
        self.groups
            .get_mut(chat)
            .ok_or_else(|| format!("no group {chat} (make one with /group)"))
    }

    /// The bot's own call; the answer, the events the server sends for
    /// it and the console lines that show it.
    pub fn op(
        &mut self,
        op: GroupOp,
        bot: &str,
    ) -> Result<(GroupReply, Vec<GroupEvent>, Vec<String>), ChannelError> {
        let refuse = |s: String| Err(ChannelError::Protocol(s));
        let Some(chat) = op.group().map(str::to_string) else {
            let mine = self
                .groups
                .values()
                .filter(|g| g.participant(bot).is_some())
                .cloned()
                .collect();
            return Ok((GroupReply::List(mine), Vec::new(), Vec::new()));
        };
        let Some(g) = self.groups.get_mut(&chat) else {
            return refuse(format!("404 item-not-found: no group {chat}"));
        };
        if g.participant(bot).is_none() {
            return refuse(format!("403 forbidden: the bot is not in {chat}"));
        }
        let admin = g.is_admin(bot);
        let by = Some(bot.to_string());
        match op {
            GroupOp::List | GroupOp::Info(_) => {
                Ok((GroupReply::Info(g.clone()), Vec::new(), Vec::new()))
            }
            GroupOp::InviteLink(_) if !admin => refuse(format!(
                "403 not-authorized: the bot is not an admin of {chat}"
            )),
            GroupOp::InviteLink(_) => {
                let code = chat.trim_end_matches("@g.us");
                Ok((
                    GroupReply::Link(format!("https://chat.whatsapp.com/console-{code}")),
                    Vec::new(),
                    Vec::new(),
                ))
            }
            GroupOp::SetSubject { subject, .. } => {
                if g.locked && !admin {
                    return refuse(format!(
                        "403 not-authorized: {chat} is locked and the bot is not an admin"
                    ));
                }
                let e = GroupEvent {
                    chat: chat.clone(),
                    action: GroupAction::Subject,
                    participants: Vec::new(),
                    by,
                    value: Some(subject.clone()),
                };
                g.apply(&e);
                let line = format!("bot set the subject of {chat}: {subject}");
                Ok((GroupReply::Done, vec![e], vec![line]))
            }
            GroupOp::Leave(_) => {
                let e = GroupEvent {
                    chat: chat.clone(),
                    action: GroupAction::Remove,
                    participants: vec![bot.to_string()],
                    by,
                    value: None,
                };
                g.apply(&e);
                Ok((GroupReply::Done, vec![e], vec![format!("bot left {chat}")]))
            }
            GroupOp::Participants { change, users, .. } => {
                if !admin {
                    return refuse(format!(
                        "403 not-authorized: the bot is not an admin of {chat}"
                    ));
                }
                let mut results = Vec::with_capacity(users.len());
                let mut done = Vec::new();
                for u in users {
                    let member = g.participant(&u).is_some();
                    let error = match change {
                        Change::Add if member => Some("409 conflict: already in the group"),
                        Change::Add => None,
                        _ if !member => Some("404 item-not-found: not in the group"),
                        _ => None,
                    };
                    if error.is_none() {
                        done.push(u.clone());
                    }
                    results.push(UserResult {
                        jid: u,
                        error: error.map(str::to_string),
                    });
                }
                let mut events = Vec::new();
                let mut lines = Vec::new();
                if !done.is_empty() {
                    let e = GroupEvent {
                        chat: chat.clone(),
                        action: change.action(),
                        participants: done.clone(),
                        by,
                        value: None,
                    };
                    g.apply(&e);
                    events.push(e);
                    let who = done.join(" ");
                    lines.push(match change {
                        Change::Add => format!("bot added {who} to {chat}"),
                        Change::Remove => format!("bot removed {who} from {chat}"),
                        Change::Promote => format!("bot promoted {who} in {chat}"),
                        Change::Demote => format!("bot demoted {who} in {chat}"),
                    });
                }
                Ok((GroupReply::Changed(results), events, lines))
            }
        }
    }
}

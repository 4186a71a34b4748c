//! Groups as every channel reports them: metadata, the changes a group
//! goes through (`on_group`), and the admin operations scripts and the API
//! ask for. Plain data, so the console, WhatsApp, the host's cache, the
//! scripts and the API share one shape.
//!
//! Participants are named in one stable form: the phone-number JID
//! (`<digits>@s.whatsapp.net`) whenever the channel knows it, the LID
//! (`<id>@lid`) only when it does not. Scripts compare `m.sender` with
//! `info().participants[i].jid` and hand either to `bot.send`; the
//! phone-number form is the one a person can read and type, and the one
//! `bot.send("+1555...")` produces.

use serde::{Deserialize, Serialize};

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Participant {
    pub jid: String,
    /// An admin (super admins are admins too).
    pub admin: bool,
    /// The group's creator (or whoever holds that role now).
    pub super_admin: bool,
}

/// A group's metadata (`bot.groups.info`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupInfo {
    pub jid: String,
    pub subject: String,
    pub description: Option<String>,
    /// Who created the group, when the server says.
    pub owner: Option<String>,
    /// Only admins may send.
    pub announce: bool,
    /// Only admins may edit the group's info.
    pub locked: bool,
    pub participants: Vec<Participant>,
}

impl GroupInfo {
    pub fn participant(&self, jid: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.jid == jid)
    }

    pub fn is_admin(&self, jid: &str) -> bool {
        self.participant(jid).is_some_and(|p| p.admin)
    }

    /// Changes the metadata as `ev` says, so a cached copy stays true
    /// without asking the server again.
    pub fn apply(&mut self, ev: &GroupEvent) {
        match ev.action {
            GroupAction::Add => {
                for j in &ev.participants {
                    if self.participant(j).is_none() {
                        self.participants.push(Participant {
                            jid: j.clone(),
                            ..Participant::default()
                        });
                    }
                }
            }
            GroupAction::Remove => self
                .participants
                .retain(|p| !ev.participants.contains(&p.jid)),
            GroupAction::Promote | GroupAction::Demote => {
                let admin = ev.action == GroupAction::Promote;
                for p in &mut self.participants {
                    if ev.participants.contains(&p.jid) {
                        p.admin = admin;
                        if !admin {
                            p.super_admin = false;
                        }
                    }
                }
            }
            GroupAction::Subject => self.subject = ev.value.clone().unwrap_or_default(),
            GroupAction::Description => self.description = ev.value.clone(),
            GroupAction::Announce => self.announce = ev.value.as_deref() == Some("on"),
            GroupAction::Locked => self.locked = ev.value.as_deref() == Some("on"),
            GroupAction::Create => {}
        }
    }
}

/// What happened to a group (`on_group`'s `e.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupAction {
    Add,
    Remove,
    Promote,
    Demote,
    Subject,
    Description,
    /// `value` is "on" (only admins send) or "off".
    Announce,
    /// `value` is "on" (only admins edit the info) or "off".
    Locked,
    Create,
}

impl GroupAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupAction::Add => "add",
            GroupAction::Remove => "remove",
            GroupAction::Promote => "promote",
            GroupAction::Demote => "demote",
            GroupAction::Subject => "subject",
            GroupAction::Description => "description",
            GroupAction::Announce => "announce",
            GroupAction::Locked => "locked",
            GroupAction::Create => "create",
        }
    }
}

/// A change to a group (`on_group(e)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupEvent {
    /// The group.
    pub chat: String,
    pub action: GroupAction,
    /// Who was added, removed, promoted or demoted (for `create`: the
    /// members).
    #[serde(default)]
    pub participants: Vec<String>,
    /// Who did it, when known.
    pub by: Option<String>,
    /// The new subject or description; "on"/"off" for announce and locked.
    pub value: Option<String>,
}

/// The participant changes an admin can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Add,
    Remove,
    Promote,
    Demote,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Remove => "remove",
            Change::Promote => "promote",
            Change::Demote => "demote",
        }
    }

    /// The event a successful change shows up as.
    pub fn action(self) -> GroupAction {
        match self {
            Change::Add => GroupAction::Add,
            Change::Remove => GroupAction::Remove,
            Change::Promote => GroupAction::Promote,
            Change::Demote => GroupAction::Demote,
        }
    }
}

/// A group operation for the channel to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    Info(String),
    /// Every group the account is in.
    List,
    Participants {
        jid: String,
        change: Change,
        users: Vec<String>,
    },
    InviteLink(String),
    SetSubject {
        jid: String,
        subject: String,
    },
    Leave(String),
}

impl GroupOp {
    /// The group it is about (none for `List`).
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupOp::Info(j) | GroupOp::InviteLink(j) | GroupOp::Leave(j) => Some(j),
            GroupOp::Participants { jid, .. } | GroupOp::SetSubject { jid, .. } => Some(jid),
            GroupOp::List => None,
        }
    }
}

/// How one user's change went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserResult {
    pub jid: String,
    /// `None`: done; otherwise the server's reason ("409 conflict", ...).
    pub error: Option<String>,
}

/// What a [`GroupOp`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupReply {
    Info(GroupInfo),
    List(Vec<GroupInfo>),
    /// Per user, in the order asked.
    Changed(Vec<UserResult>),
    Link(String),
    Done,
}

/// Whether a chat id is a group's.
pub fn is_group_jid(jid: &str) -> bool {
    jid.ends_with("@g.us")
}

/// Checks a group id argument: a JID on the group server.
pub fn group_jid(jid: &str) -> Result<String, String> {
    let j = jid.trim();
    match super::recipient(j) {
        Ok(j) if is_group_jid(&j) => Ok(j),
        _ => Err(format!("{jid:?} is not a group id (…@g.us)")),
    }
}

/// The most users one participant change may name (WhatsApp's own limit
/// for a group is about 1024 members).
pub const MAX_USERS: usize = 1024;

/// Checks the users of a participant change: JIDs or phone numbers, none
/// a group, at least one, no more than [`MAX_USERS`]. Duplicates go.
pub fn user_list<S: AsRef<str>>(users: &[S]) -> Result<Vec<String>, String> {
    if users.is_empty() {
        return Err("no users given".into());
    }
    if users.len() > MAX_USERS {
        return Err(format!(
            "{} users given; at most {MAX_USERS} at once",
            users.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(users.len());
    for u in users {
        let j = super::recipient(u.as_ref()).map_err(|e| e.to_string())?;
        if is_group_jid(&j) {
            return Err(format!("{j:?} is a group, not a user"));
        }
        if !out.contains(&j) {
            out.push(j);
        }
    }
    Ok(out)
}

/// `nil, err` text for a change where some users failed: each with why.
pub fn failures(results: &[UserResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.jid)))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> GroupInfo {
        GroupInfo {
            jid: "g1@g.us".into(),
            subject: "Team".into(),
            participants: vec![
                Participant {
                    jid: "a@s.whatsapp.net".into(),
                    admin: true,
                    super_admin: true,
                },
                Participant {
                    jid: "b@s.whatsapp.net".into(),
                    ..Participant::default()
                },
            ],
            ..GroupInfo::default()
        }
    }

    fn ev(action: GroupAction, who: &[&str], value: Option<&str>) -> GroupEvent {
        GroupEvent {
            chat: "g1@g.us".into(),
            action,
            participants: who.iter().map(|s| s.to_string()).collect(),
            by: None,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn events_keep_metadata_true() {
        let mut g = info();
        g.apply(&ev(
            GroupAction::Add,
            &["c@s.whatsapp.net", "b@s.whatsapp.net"],
            None,
        ));
        assert_eq!(g.participants.len(), 3, "b was there already");
        g.apply(&ev(GroupAction::Promote, &["c@s.whatsapp.net"], None));
        assert!(g.is_admin("c@s.whatsapp.net"));
        g.apply(&ev(GroupAction::Demote, &["a@s.whatsapp.net"], None));
        assert!(!g.is_admin("a@s.whatsapp.net"));
        assert!(!g.participants[0].super_admin);
        g.apply(&ev(GroupAction::Remove, &["b@s.whatsapp.net"], None));
        assert!(g.participant("b@s.whatsapp.net").is_none());
        g.apply(&ev(GroupAction::Subject, &[], Some("New")));
        assert_eq!(g.subject, "New");
        g.apply(&ev(GroupAction::Description, &[], Some("About")));
        assert_eq!(g.description.as_deref(), Some("About"));
        g.apply(&ev(GroupAction::Announce, &[], Some("on")));
        g.apply(&ev(GroupAction::Locked, &[], Some("on")));
        assert!(g.announce && g.locked);
        g.apply(&ev(GroupAction::Locked, &[], Some("off")));
        assert!(!g.locked);
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(group_jid(" g1@g.us ").unwrap(), "g1@g.us");
        assert!(group_jid("15551234567").is_err());
        assert!(group_jid("x@s.whatsapp.net").is_err());
        assert_eq!(
            user_list(&["+15551234567", "15551234567@s.whatsapp.net"]).unwrap(),
            ["15551234567@s.whatsapp.net"]
        );
        assert!(user_list::<&str>(&[]).is_err());
        assert!(user_list(&["g@g.us"]).unwrap_err().contains("group"));
        assert!(user_list(&["not a user"]).is_err());
        let many: Vec<String> = (0..=MAX_USERS).map(|i| format!("{i}@lid")).collect();
        assert!(user_list(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn failures_name_each_user() {
        let r = [
            UserResult {
                jid: "a@s.whatsapp.net".into(),
                error: None,
            },
            UserResult {
                jid: "b@s.whatsapp.net".into(),
                error: Some("409 conflict".into()),
            },
        ];
        assert_eq!(
            failures(&r).as_deref(),
            Some("b@s.whatsapp.net: 409 conflict")
        );
        assert_eq!(failures(&r[..1]), None);
    }
}

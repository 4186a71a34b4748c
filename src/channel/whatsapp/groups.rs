//! Groups over whatsapp-rust's `features/groups.rs`: metadata, participant
//! changes, the invite link, subject and leave; and its `GroupUpdate`
//! events as `on_group` events.
//!
//! Participants are named in the one form scripts see (see
//! `channel::groups`): a participant's phone-number JID when the server or
//! the library knows it, its LID otherwise, always without a device part.

use wacore::stanza::groups::{GroupNotificationAction, GroupParticipantInfo};
use wacore::types::events::GroupUpdate;
use whatsapp_rust::features::{GroupError, GroupMetadata, GroupSubject, ParticipantChangeResponse};
use whatsapp_rust::{Client, Jid};

use crate::channel::ChannelError;
use crate::channel::groups::{
    Change, GroupAction, GroupEvent, GroupInfo, GroupOp, GroupReply, Participant, UserResult,
};

/// The form scripts see: the phone number when there is one.
pub fn stable(jid: &Jid, phone_number: Option<&Jid>) -> String {
    let j = match phone_number {
        Some(pn) if jid.is_lid() => pn,
        _ => jid,
    };
    j.to_non_ad().to_string()
}

/// The library's metadata → `bot.groups.info`'s answer.
pub fn info_of(m: &GroupMetadata) -> GroupInfo {
    GroupInfo {
        jid: m.id.to_string(),
        subject: m.subject.clone(),
        description: m.description.clone(),
        owner: m.creator.as_ref().map(|c| stable(c, m.creator_pn.as_ref())),
        announce: m.is_announcement,
        locked: m.is_locked,
        participants: m
            .participants
            .iter()
            .map(|p| Participant {
                jid: stable(&p.jid, p.phone_number.as_ref()),
                admin: p.is_admin(),
                super_admin: p.is_super_admin(),
            })
            .collect(),
    }
}

fn people(ps: &[GroupParticipantInfo]) -> Vec<String> {
    ps.iter()
        .map(|p| stable(&p.jid, p.phone_number.as_ref()))
        .collect()
}

/// A `GroupUpdate` → an `on_group` event; `None` for the changes scripts
/// have no action name for (ephemeral settings, invites, community links).
pub fn event_of(u: &GroupUpdate) -> Option<GroupEvent> {
    let on_off = |on: bool| Some(if on { "on" } else { "off" }.to_string());
    let (action, participants, value) = match &u.action {
        GroupNotificationAction::Add { participants, .. } => {
            (GroupAction::Add, people(participants), None)
        }
        GroupNotificationAction::Remove { participants, .. } => {
            (GroupAction::Remove, people(participants), None)
        }
        GroupNotificationAction::Promote { participants } => {
            (GroupAction::Promote, people(participants), None)
        }
        GroupNotificationAction::Demote { participants } => {
            (GroupAction::Demote, people(participants), None)
        }
        GroupNotificationAction::Subject { subject, .. } => {
            (GroupAction::Subject, Vec::new(), Some(subject.clone()))
        }
        GroupNotificationAction::Description { description, .. } => {
            (GroupAction::Description, Vec::new(), description.clone())
        }
        GroupNotificationAction::Locked { .. } => (GroupAction::Locked, Vec::new(), on_off(true)),
        GroupNotificationAction::Unlocked => (GroupAction::Locked, Vec::new(), on_off(false)),
        GroupNotificationAction::Announce => (GroupAction::Announce, Vec::new(), on_off(true)),
        GroupNotificationAction::NotAnnounce => (GroupAction::Announce, Vec::new(), on_off(false)),
        GroupNotificationAction::Create { .. } => (GroupAction::Create, Vec::new(), None),
        _ => return None,
    };
    Some(GroupEvent {
        chat: u.group_jid.to_string(),
        action,
        participants,
        by: u
            .participant
            .as_ref()
            .map(|p| stable(p, u.participant_pn.as_ref())),
        value,
    })
}

/// The server's reason, as `nil, err` shows it: "403 not-authorized" and
/// the like when the server answered, the library's words otherwise.
fn reason(e: GroupError) -> ChannelError {
    use whatsapp_rust::request::IqError;
    match e {
        GroupError::Iq(IqError::ServerError { code, text, .. }) => {
            ChannelError::Protocol(format!("{code} {text}"))
        }
        GroupError::Iq(IqError::NotConnected) => ChannelError::NotConnected,
        other => ChannelError::Protocol(other.to_string()),
    }
}

fn jid(s: &str) -> Result<Jid, ChannelError> {
    s.parse()
        .map_err(|_| ChannelError::BadRecipient(s.to_string()))
}

/// One user's outcome; the error as "CODE meaning" where the code is one
/// WhatsApp documents for participant changes.
pub fn user_result(r: &ParticipantChangeResponse) -> UserResult {
    outcome(&r.jid, r.phone_number.as_ref(), r.error.as_deref())
}

fn outcome(jid: &Jid, phone_number: Option<&Jid>, error: Option<&str>) -> UserResult {
    UserResult {
        jid: stable(jid, phone_number),
        error: error.map(|code| {
            let meaning = match code {
                "401" => "not-authorized",
                "403" => "forbidden (privacy settings, or not allowed)",
                "404" => "item-not-found (not in the group, or no account)",
                "408" => "recently left the group",
                "409" => "conflict (already in the group)",
                "500" => "the group is full",
                _ => "refused",
            };
            format!("{code} {meaning}")
        }),
    }
}

/// Carries out `op` on `client`.
pub async fn run(client: &Client, op: GroupOp) -> Result<GroupReply, ChannelError> {
    let groups = client.groups();
    match op {
        GroupOp::Info(j) => {
            let m = groups.get_metadata(&jid(&j)?).await.map_err(reason)?;
            Ok(GroupReply::Info(info_of(&m)))
        }
        GroupOp::List => {
            let all = groups.get_participating().await.map_err(reason)?;
            let mut list: Vec<GroupInfo> = all.values().map(info_of).collect();
            list.sort_by(|a, b| a.jid.cmp(&b.jid));
            Ok(GroupReply::List(list))
        }
        GroupOp::Participants {
            jid: j,
            change,
            users,
        } => {
            let g = jid(&j)?;
            let users: Vec<Jid> = users.iter().map(|u| jid(u)).collect::<Result<_, _>>()?;
            let r = match change {
                Change::Add => groups.add_participants(g, &users).await,
                Change::Remove => groups.remove_participants(g, &users).await,
                Change::Promote => groups.promote_participants(g, &users).await,
                Change::Demote => groups.demote_participants(g, &users).await,
            }
            .map_err(reason)?;
            Ok(GroupReply::Changed(r.iter().map(user_result).collect()))
        }
        GroupOp::InviteLink(j) => {
            let code = groups
                .get_invite_link(jid(&j)?, false)
                .await
                .map_err(reason)?;
            let link = if code.starts_with("https://") {
                code
            } else {
                format!("https://chat.whatsapp.com/{code}")
            };
            Ok(GroupReply::Link(link))
        }
        GroupOp::SetSubject { jid: j, subject } => {
            let subject = GroupSubject::new(subject)
                .map_err(|e| ChannelError::Protocol(format!("the subject: {e}")))?;
            groups
                .set_subject(jid(&j)?, subject)
                .await
                .map_err(reason)?;
            Ok(GroupReply::Done)
        }
        GroupOp::Leave(j) => {
            groups.leave(jid(&j)?).await.map_err(reason)?;
            Ok(GroupReply::Done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::EventKind;
    use whatsapp_rust::features::GroupParticipant;
    use whatsapp_rust::features::ParticipantType;

    fn j(s: &str) -> Jid {
        s.parse().unwrap()
    }

    #[test]
    fn participants_are_named_by_phone_number_when_known() {
        assert_eq!(
            stable(&j("123456789@lid"), Some(&j("15551234567@s.whatsapp.net"))),
            "15551234567@s.whatsapp.net"
        );
        assert_eq!(stable(&j("123456789@lid"), None), "123456789@lid");
        assert_eq!(
            stable(&j("15551234567:3@s.whatsapp.net"), None),
            "15551234567@s.whatsapp.net"
        );
    }

    #[test]
    fn metadata_shows_admins_and_the_owner_in_the_stable_form() {
        let m = GroupMetadata {
            id: j("120363000000000001@g.us"),
            subject: "Team".into(),
            creator: Some(j("111@lid")),
            creator_pn: Some(j("15550001111@s.whatsapp.net")),
            is_locked: true,
            participants: vec![
                GroupParticipant {
                    jid: j("111@lid"),
                    phone_number: Some(j("15550001111@s.whatsapp.net")),
                    lid: None,
                    username: None,
                    participant_type: ParticipantType::SuperAdmin,
                    details: None,
                },
                GroupParticipant {
                    jid: j("15550002222@s.whatsapp.net"),
                    phone_number: None,
                    lid: None,
                    username: None,
                    participant_type: ParticipantType::Member,
                    details: None,
                },
            ],
            ..GroupMetadata::default()
        };
        let g = info_of(&m);
        assert_eq!(g.owner.as_deref(), Some("15550001111@s.whatsapp.net"));
        assert!(g.locked && !g.announce);
        assert_eq!(
            g.participants,
            [
                Participant {
                    jid: "15550001111@s.whatsapp.net".into(),
                    admin: true,
                    super_admin: true
                },
                Participant {
                    jid: "15550002222@s.whatsapp.net".into(),
                    admin: false,
                    super_admin: false
                }
            ]
        );
    }

    fn info_from(who: &str, alt: Option<&str>) -> wacore::types::message::MessageInfo {
        let mut info = wacore::types::message::MessageInfo {
            id: "ID1".into(),
            ..Default::default()
        };
        info.source.chat = j("120363000000000001@g.us");
        info.source.is_group = true;
        info.source.sender = j(who);
        info.source.sender_alt = alt.map(j);
        info
    }

    #[test]
    fn a_group_message_names_the_group_and_the_member_in_the_stable_form() {
        let m = whatsapp_rust::waproto::whatsapp::Message {
            conversation: Some("hi".into()),
            ..Default::default()
        };
        let lid = crate::channel::whatsapp::incoming(
            &m,
            &info_from("111:4@lid", Some("15550001111@s.whatsapp.net")),
        );
        assert_eq!(lid.chat, "120363000000000001@g.us");
        assert_eq!(lid.sender, "15550001111@s.whatsapp.net");
        assert!(lid.is_group);
        let pn = crate::channel::whatsapp::incoming(
            &m,
            &info_from("15550001111:2@s.whatsapp.net", Some("111@lid")),
        );
        assert_eq!(pn.sender, "15550001111@s.whatsapp.net", "the same person");
        let only_lid = crate::channel::whatsapp::incoming(&m, &info_from("111@lid", None));
        assert_eq!(only_lid.sender, "111@lid");
    }

    fn participant(jid: &str, pn: Option<&str>) -> GroupParticipantInfo {
        GroupParticipantInfo {
            jid: j(jid),
            phone_number: pn.map(j),
            display_name: None,
            r#type: None,
            lid: None,
            username: None,
            join_time: None,
            group_history_sent_state: None,
        }
    }

    fn update(action: GroupNotificationAction) -> GroupUpdate {
        GroupUpdate::builder()
            .group_jid(j("120363000000000001@g.us"))
            .participant(j("222@lid"))
            .participant_pn(j("15550002222@s.whatsapp.net"))
            .timestamp(wacore::time::now_utc())
            .is_lid_addressing_mode(true)
            .action(action)
            .build()
    }

    #[test]
    fn group_updates_become_on_group_events() {
        let add = event_of(&update(GroupNotificationAction::Add {
            participants: vec![participant("111@lid", Some("15550001111@s.whatsapp.net"))],
            reason: None,
        }))
        .unwrap();
        assert_eq!(
            add,
            GroupEvent {
                chat: "120363000000000001@g.us".into(),
                action: GroupAction::Add,
                participants: vec!["15550001111@s.whatsapp.net".into()],
                by: Some("15550002222@s.whatsapp.net".into()),
                value: None,
            }
        );
        let cases = [
            (
                GroupNotificationAction::Promote {
                    participants: vec![participant("15550001111@s.whatsapp.net", None)],
                },
                GroupAction::Promote,
                None,
            ),
            (
                GroupNotificationAction::Subject {
                    subject: "New".into(),
                    subject_owner: None,
                    subject_time: None,
                },
                GroupAction::Subject,
                Some("New"),
            ),
            (
                GroupNotificationAction::Description {
                    id: "d1".into(),
                    description: Some("About".into()),
                },
                GroupAction::Description,
                Some("About"),
            ),
            (
                GroupNotificationAction::Announce,
                GroupAction::Announce,
                Some("on"),
            ),
            (
                GroupNotificationAction::NotAnnounce,
                GroupAction::Announce,
                Some("off"),
            ),
            (
                GroupNotificationAction::Locked { threshold: None },
                GroupAction::Locked,
                Some("on"),
            ),
            (
                GroupNotificationAction::Unlocked,
                GroupAction::Locked,
                Some("off"),
            ),
        ];
        for (action, want, value) in cases {
            let e = event_of(&update(action)).unwrap();
            assert_eq!((e.action, e.value.as_deref()), (want, value));
        }
        assert!(event_of(&update(GroupNotificationAction::RevokeInvite)).is_none());
        // Through the event mapping the channel uses.
        let mapped = crate::channel::whatsapp::map_event(
            &wacore::types::events::Event::GroupUpdate(update(GroupNotificationAction::Demote {
                participants: vec![participant("111@lid", None)],
            })),
            None,
        );
        assert!(
            matches!(&mapped[..], [EventKind::Group(e)] if e.action == GroupAction::Demote && e.participants == ["111@lid"]),
            "{mapped:?}"
        );
    }

    #[test]
    fn participant_errors_carry_the_code() {
        let r = outcome(
            &j("111@lid"),
            Some(&j("15550002222@s.whatsapp.net")),
            Some("409"),
        );
        assert_eq!(r.jid, "15550002222@s.whatsapp.net");
        assert_eq!(
            r.error.as_deref(),
            Some("409 conflict (already in the group)")
        );
        assert_eq!(outcome(&j("111@lid"), None, None).error, None);
    }
}

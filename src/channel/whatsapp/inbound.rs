//! A received `wa::Message` → the message object scripts see. Pure, so
//! every kind is unit-tested with messages built by hand; the one thing
//! that needs state (a poll vote is encrypted with the poll's secret) is
//! [`read_votes`], given the poll as this device kept it.

use serde::{Deserialize, Serialize};
use wacore::proto_helpers::MessageExt;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::channel::{Incoming, Location, MediaInfo, MediaKind, MediaRef, Poll, Quoted};

use wa::message::protocol_message::Type as ProtocolType;

/// The context (quote, mentions) of whichever part carries it.
fn context_info(b: &wa::Message) -> Option<&wa::ContextInfo> {
    [
        b.extended_text_message.as_option().map(|m| &m.context_info),
        b.image_message.as_option().map(|m| &m.context_info),
        b.video_message.as_option().map(|m| &m.context_info),
        b.audio_message.as_option().map(|m| &m.context_info),
        b.document_message.as_option().map(|m| &m.context_info),
        b.sticker_message.as_option().map(|m| &m.context_info),
        b.location_message.as_option().map(|m| &m.context_info),
        b.contact_message.as_option().map(|m| &m.context_info),
        poll_creation(b).map(|m| &m.context_info),
    ]
    .into_iter()
    .flatten()
    .find_map(|c| c.as_option())
}

fn poll_creation(b: &wa::Message) -> Option<&wa::message::PollCreationMessage> {
    b.poll_creation_message
        .as_option()
        .or_else(|| b.poll_creation_message_v2.as_option())
        .or_else(|| b.poll_creation_message_v3.as_option())
}

/// The CDN reference, when the message has all of it.
fn cdn(
    direct_path: &Option<String>,
    media_key: &Option<Vec<u8>>,
    file_sha256: &Option<Vec<u8>>,
    file_enc_sha256: &Option<Vec<u8>>,
) -> MediaRef {
    match (direct_path, media_key, file_sha256, file_enc_sha256) {
        (Some(d), Some(k), Some(h), Some(e)) => MediaRef::Cdn {
            direct_path: d.clone(),
            media_key: k.clone(),
            file_sha256: h.clone(),
            file_enc_sha256: e.clone(),
        },
        _ => MediaRef::None,
    }
}

/// The media of a message, with its caption.
fn media(b: &wa::Message) -> Option<(MediaInfo, Option<String>)> {
    if let Some(m) = b.image_message.as_option() {
        return Some((
            MediaInfo {
                kind: MediaKind::Image,
                mime: m.mimetype.clone(),
                size: m.file_length,
                width: m.width,
                height: m.height,
                source: cdn(
                    &m.direct_path,
                    &m.media_key,
                    &m.file_sha256,
                    &m.file_enc_sha256,
                ),
                ..MediaInfo::default()
            },
            m.caption.clone(),
        ));
    }
    if let Some(m) = b.video_message.as_option() {
        return Some((
            MediaInfo {
                kind: MediaKind::Video,
                mime: m.mimetype.clone(),
                size: m.file_length,
                seconds: m.seconds,
                width: m.width,
                height: m.height,
                source: cdn(
                    &m.direct_path,
                    &m.media_key,
                    &m.file_sha256,
                    &m.file_enc_sha256,
                ),
                ..MediaInfo::default()
            },
            m.caption.clone(),
        ));
    }
    if let Some(m) = b.audio_message.as_option() {
        return Some((
            MediaInfo {
                kind: MediaKind::Audio,
                mime: m.mimetype.clone(),
                size: m.file_length,
                seconds: m.seconds,
                voice: m.ptt.unwrap_or(false),
                source: cdn(
                    &m.direct_path,
                    &m.media_key,
                    &m.file_sha256,
                    &m.file_enc_sha256,
                ),
                ..MediaInfo::default()
            },
            None,
        ));
    }
    if let Some(m) = b.document_message.as_option() {
        return Some((
            MediaInfo {
                kind: MediaKind::Document,
                mime: m.mimetype.clone(),
                size: m.file_length,
                file_name: m
                    .file_name
                    .as_deref()
                    .or(m.title.as_deref())
                    .map(crate::channel::rich::display_name),
                source: cdn(
                    &m.direct_path,
                    &m.media_key,
                    &m.file_sha256,
                    &m.file_enc_sha256,
                ),
                ..MediaInfo::default()
            },
            m.caption.clone(),
        ));
    }
    if let Some(m) = b.sticker_message.as_option() {
        return Some((
            MediaInfo {
                kind: MediaKind::Sticker,
                mime: m.mimetype.clone(),
                size: m.file_length,
                width: m.width,
                height: m.height,
                source: cdn(
                    &m.direct_path,
                    &m.media_key,
                    &m.file_sha256,
                    &m.file_enc_sha256,
                ),
                ..MediaInfo::default()
            },
            None,
        ));
    }
    None
}

/// The type name scripts see for a quoted (or any) message.
pub fn type_name(b: &wa::Message) -> &'static str {
    if let Some(p) = b.protocol_message.as_option() {
        return match p.r#type {
            Some(ProtocolType::REVOKE) => "revoke",
            Some(ProtocolType::MESSAGE_EDIT) => "edit",
            _ if p.edited_message.is_set() => "edit",
            _ => "unknown",
        };
    }
    if b.conversation.is_some() || b.extended_text_message.is_set() {
        "text"
    } else if b.image_message.is_set() {
        "image"
    } else if b.video_message.is_set() {
        "video"
    } else if b.audio_message.is_set() {
        "audio"
    } else if b.document_message.is_set() {
        "document"
    } else if b.sticker_message.is_set() {
        "sticker"
    } else if b.location_message.is_set() || b.live_location_message.is_set() {
        "location"
    } else if b.contact_message.is_set() || b.contacts_array_message.is_set() {
        "contact"
    } else if b.reaction_message.is_set() {
        "reaction"
    } else if b.poll_update_message.is_set() {
        "poll_vote"
    } else if poll_creation(b).is_some() {
        "poll"
    } else {
        "unknown"
    }
}

/// The text of a message: its text, or a media caption.
fn text_of(b: &wa::Message) -> Option<String> {
    b.text_content()
        .or_else(|| b.get_caption())
        .map(str::to_string)
}

pub fn incoming(m: &wa::Message, info: &wacore::types::message::MessageInfo) -> Incoming {
    let b = m.get_base_message();
    let mut inc = Incoming {
        id: info.id.to_string(),
        chat: info.source.chat.to_string(),
        // In a LID-addressed group the sender is a LID and its phone
        // number comes along: scripts see the one form (`channel::groups`).
        sender: super::groups::stable(&info.source.sender, info.source.sender_alt.as_ref()),
        text: None,
        kind: type_name(b).to_string(),
        from_me: info.source.is_from_me,
        is_group: info.source.is_group,
        push_name: Some(info.push_name.clone()).filter(|n| !n.is_empty()),
        timestamp: info.timestamp.timestamp(),
        ..Incoming::default()
    };
    if let Some(p) = b.protocol_message.as_option() {
        inc.target = p.key.as_option().and_then(|k| k.id.clone());
        if let Some(new) = p.edited_message.as_option() {
            inc.text = text_of(new.get_base_message());
        }
        return inc;
    }
    inc.text = text_of(b);
    if let Some(r) = b.reaction_message.as_option() {
        inc.target = r.key.as_option().and_then(|k| k.id.clone());
        inc.reaction = Some(r.text.clone().unwrap_or_default());
    } else if let Some(v) = b.poll_update_message.as_option() {
        inc.target = v
            .poll_creation_message_key
            .as_option()
            .and_then(|k| k.id.clone());
    } else if let Some(p) = poll_creation(b) {
        inc.poll = Some(Box::new(Poll {
            name: p.name.clone().unwrap_or_default(),
            options: p
                .options
                .iter()
                .filter_map(|o| o.option_name.clone())
                .collect(),
            selectable: p.selectable_options_count.unwrap_or(0),
        }));
    } else if let Some(l) = b.location_message.as_option() {
        inc.location = Some(Box::new(Location {
            lat: l.degrees_latitude.unwrap_or(0.0),
            lng: l.degrees_longitude.unwrap_or(0.0),
            name: l.name.clone().or_else(|| l.address.clone()),
        }));
    } else if let Some(l) = b.live_location_message.as_option() {
        inc.location = Some(Box::new(Location {
            lat: l.degrees_latitude.unwrap_or(0.0),
            lng: l.degrees_longitude.unwrap_or(0.0),
            name: None,
        }));
    } else if let Some((info, caption)) = media(b) {
        inc.text = caption.filter(|c| !c.is_empty());
        inc.media = Some(Box::new(info));
    }
    if let Some(ctx) = context_info(b) {
        inc.mentions = ctx.mentioned_jid.clone();
        if let Some(id) = ctx.stanza_id.clone().filter(|s| !s.is_empty()) {
            let quoted = ctx.quoted_message.as_option().map(|q| q.get_base_message());
            inc.quoted = Some(Box::new(Quoted {
                id,
                sender: ctx.participant.clone(),
                text: quoted.and_then(text_of),
                kind: quoted.map(|q| type_name(q).to_string()),
            }));
        }
    }
    inc
}

/// What this device keeps of a poll it sent: enough to read the votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRecord {
    pub options: Vec<String>,
    #[serde(with = "crate::channel::rich::hex_bytes")]
    pub secret: Vec<u8>,
    /// The JID the poll was sent from (the vote's key is derived from it).
    pub creator: String,
}

/// Reads a poll vote on a poll this device sent: the selected options by
/// name. A vote that does not open (not our poll, another key) has none.
pub fn read_votes(m: &wa::Message, voter: &str, poll_id: &str, poll: &PollRecord) -> Vec<String> {
    let b = m.get_base_message();
    let Some(vote) = b
        .poll_update_message
        .as_option()
        .and_then(|u| u.vote.as_option())
    else {
        return Vec::new();
    };
    let (Some(payload), Some(iv)) = (vote.enc_payload.as_deref(), vote.enc_iv.as_deref()) else {
        return Vec::new();
    };
    let selected = wacore::poll::decrypt_poll_vote_with_fallback(
        wacore::poll::PollVoteCiphertext {
            enc_payload: payload,
            enc_iv: iv,
        },
        &poll.secret,
        poll_id,
        wacore::poll::PollVoteAddressing {
            poll_creator_jid: &poll.creator,
            voter_jid: voter,
        },
        None,
    );
    let Ok(hashes) = selected else {
        return Vec::new();
    };
    poll.options
        .iter()
        .filter(|o| {
            let h = wacore::poll::compute_option_hash(o);
            hashes.iter().any(|s| s.as_slice() == h.as_slice())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wacore::proto_helpers::MessageBuilderExt;
    use wacore::types::message::MessageInfo;
    use whatsapp_rust::buffa::MessageField;

    fn info(id: &str) -> MessageInfo {
        let mut info = MessageInfo {
            id: id.into(),
            ..Default::default()
        };
        info.source.chat = "15550001111@s.whatsapp.net".parse().expect("jid");
        info.source.sender = "15550001111:2@s.whatsapp.net".parse().expect("jid");
        info.push_name = "Ann".into();
        info
    }

    fn key(id: &str) -> MessageField<wa::MessageKey> {
        MessageField::some(wa::MessageKey {
            remote_jid: Some("15550001111@s.whatsapp.net".into()),
            from_me: Some(true),
            id: Some(id.into()),
            participant: None,
        })
    }

    #[test]
    fn text_is_found_through_the_wrappers() {
        let text = wa::Message::text("hello");
        let m = incoming(&text, &info("A1"));
        assert_eq!(m.text.as_deref(), Some("hello"));
        assert_eq!(m.kind, "text");
        assert_eq!(m.id, "A1");
        assert_eq!(m.sender, "15550001111@s.whatsapp.net");
        assert_eq!(m.push_name.as_deref(), Some("Ann"));

        let ext = wa::Message {
            extended_text_message: wa::message::ExtendedTextMessage {
                text: Some("with a link".into()),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&ext, &info("A2")).text.as_deref(),
            Some("with a link")
        );
        let wrap = |inner: wa::Message| wa::message::FutureProofMessage {
            message: inner.into(),
        };
        let eph = wa::Message {
            ephemeral_message: wrap(wa::Message::text("disappearing")).into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&eph, &info("A3")).text.as_deref(),
            Some("disappearing")
        );
        let once = wa::Message {
            view_once_message: wrap(ext.clone()).into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&once, &info("A4")).text.as_deref(),
            Some("with a link")
        );
        let dsm = wa::Message {
            device_sent_message: wa::message::DeviceSentMessage {
                destination_jid: Some("15550002222@s.whatsapp.net".into()),
                message: MessageField::some(wa::Message::text("from my phone")),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&dsm, &info("A5")).text.as_deref(),
            Some("from my phone")
        );
    }

    #[test]
    fn media_carries_its_metadata_caption_and_cdn_reference() {
        let image = wa::Message {
            image_message: wa::message::ImageMessage {
                caption: Some("a cat".into()),
                mimetype: Some("image/jpeg".into()),
                file_length: Some(5120),
                width: Some(640),
                height: Some(480),
                direct_path: Some("/v/t62/abc".into()),
                media_key: Some(vec![1; 32]),
                file_sha256: Some(vec![2; 32]),
                file_enc_sha256: Some(vec![3; 32]),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        let m = incoming(&image, &info("M1"));
        assert_eq!(
            (m.kind.as_str(), m.text.as_deref()),
            ("image", Some("a cat"))
        );
        let media = m.media.unwrap();
        assert_eq!(media.kind, MediaKind::Image);
        assert_eq!(media.mime.as_deref(), Some("image/jpeg"));
        assert_eq!(
            (media.size, media.width, media.height),
            (Some(5120), Some(640), Some(480))
        );
        assert!(
            matches!(media.source, MediaRef::Cdn { ref direct_path, .. } if direct_path == "/v/t62/abc")
        );

        let voice = wa::Message {
            audio_message: wa::message::AudioMessage {
                mimetype: Some("audio/ogg; codecs=opus".into()),
                seconds: Some(7),
                ptt: Some(true),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        let m = incoming(&voice, &info("M2"));
        let media = m.media.unwrap();
        assert_eq!(
            (m.kind.as_str(), media.seconds, media.voice),
            ("audio", Some(7), true)
        );
        // Without the keys there is nothing to download from.
        assert_eq!(media.source, MediaRef::None);

        let doc = wa::Message {
            document_message: wa::message::DocumentMessage {
                file_name: Some("../../report.pdf".into()),
                mimetype: Some("application/pdf".into()),
                caption: Some("the report".into()),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        let m = incoming(&doc, &info("M3"));
        assert_eq!(m.kind, "document");
        assert_eq!(m.text.as_deref(), Some("the report"));
        // A sender's file name is only a name, never a path.
        assert_eq!(m.media.unwrap().file_name.as_deref(), Some("report.pdf"));
        for (msg, kind) in [
            (
                wa::Message {
                    video_message: wa::message::VideoMessage::default().into(),
                    ..Default::default()
                },
                "video",
            ),
            (
                wa::Message {
                    sticker_message: wa::message::StickerMessage::default().into(),
                    ..Default::default()
                },
                "sticker",
            ),
        ] {
            let m = incoming(&msg, &info("M4"));
            assert_eq!(
                (m.kind.as_str(), m.media.map(|x| x.kind.as_str())),
                (kind, Some(kind))
            );
        }
    }

    #[test]
    fn quotes_and_mentions_come_from_the_context() {
        let reply = wa::Message {
            extended_text_message: wa::message::ExtendedTextMessage {
                text: Some("@15550002222 see above".into()),
                context_info: MessageField::some(wa::ContextInfo {
                    stanza_id: Some("ORIG1".into()),
                    participant: Some("15550002222@s.whatsapp.net".into()),
                    quoted_message: MessageField::some(wa::Message::text("the original")),
                    mentioned_jid: vec!["15550002222@s.whatsapp.net".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        let m = incoming(&reply, &info("Q1"));
        assert_eq!(m.mentions, ["15550002222@s.whatsapp.net"]);
        let q = m.quoted.unwrap();
        assert_eq!(q.id, "ORIG1");
        assert_eq!(q.sender.as_deref(), Some("15550002222@s.whatsapp.net"));
        assert_eq!(q.text.as_deref(), Some("the original"));
        assert_eq!(q.kind.as_deref(), Some("text"));
        let plain = incoming(&wa::Message::text("x"), &info("Q2"));
        assert!(plain.quoted.is_none() && plain.mentions.is_empty());
    }

    #[test]
    fn reactions_edits_and_revokes_name_their_target() {
        let react = wacore::proto_helpers::build_reaction_message(
            key("T1").as_option().cloned().unwrap(),
            "👍",
            0,
        );
        let m = incoming(&react, &info("R1"));
        assert_eq!(m.kind, "reaction");
        assert_eq!(
            (m.target.as_deref(), m.reaction.as_deref()),
            (Some("T1"), Some("👍"))
        );
        let removed = wacore::proto_helpers::build_reaction_message(
            key("T1").as_option().cloned().unwrap(),
            "",
            0,
        );
        assert_eq!(
            incoming(&removed, &info("R2")).reaction.as_deref(),
            Some("")
        );

        let edit = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: key("T2"),
                r#type: Some(ProtocolType::MESSAGE_EDIT),
                edited_message: MessageField::some(wa::Message::text("fixed typo")),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = incoming(&edit, &info("E1"));
        assert_eq!((m.kind.as_str(), m.target.as_deref()), ("edit", Some("T2")));
        assert_eq!(m.text.as_deref(), Some("fixed typo"));
        // The edit wrapper other clients use.
        let wrapped = wa::Message {
            edited_message: wa::message::FutureProofMessage {
                message: MessageField::some(edit.clone()),
            }
            .into(),
            ..Default::default()
        };
        assert_eq!(incoming(&wrapped, &info("E2")).kind, "edit");

        let revoke = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: key("T3"),
                r#type: Some(ProtocolType::REVOKE),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = incoming(&revoke, &info("V1"));
        assert_eq!(
            (m.kind.as_str(), m.target.as_deref(), m.text),
            ("revoke", Some("T3"), None)
        );
    }

    #[test]
    fn locations_contacts_polls_and_the_unknown() {
        let loc = wa::Message {
            location_message: wa::message::LocationMessage {
                degrees_latitude: Some(52.52),
                degrees_longitude: Some(13.405),
                name: Some("Berlin".into()),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        let m = incoming(&loc, &info("L1"));
        assert_eq!(m.kind, "location");
        let l = m.location.unwrap();
        assert_eq!(
            (l.lat, l.lng, l.name.as_deref()),
            (52.52, 13.405, Some("Berlin"))
        );
        let contact = wa::Message {
            contact_message: wa::message::ContactMessage {
                display_name: Some("Bob".into()),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        assert_eq!(incoming(&contact, &info("C1")).kind, "contact");
        let poll = wa::Message {
            poll_creation_message_v3: wa::message::PollCreationMessage {
                name: Some("Lunch?".into()),
                options: ["pizza", "sushi"]
                    .iter()
                    .map(|o| wa::message::poll_creation_message::Option {
                        option_name: Some(o.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                selectable_options_count: Some(1),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        let m = incoming(&poll, &info("P1"));
        assert_eq!(m.kind, "poll");
        let p = m.poll.unwrap();
        assert_eq!(
            (p.name.as_str(), p.options.len(), p.selectable),
            ("Lunch?", 2, 1)
        );
        assert_eq!(
            incoming(&wa::Message::default(), &info("U1")).kind,
            "unknown"
        );
    }

    #[test]
    fn a_vote_opens_with_the_polls_secret_and_names_the_options() {
        let record = PollRecord {
            options: vec!["pizza".into(), "sushi".into(), "salad".into()],
            secret: vec![9; 32],
            creator: "15551234567@s.whatsapp.net".into(),
        };
        let voter = "15550001111@s.whatsapp.net";
        let hashes = vec![wacore::poll::compute_option_hash("sushi").to_vec()];
        let (payload, iv) = wacore::poll::encrypt_poll_vote_with_secret(
            &hashes,
            &record.secret,
            "POLL1",
            &record.creator,
            voter,
        )
        .unwrap();
        let vote = wa::Message {
            poll_update_message: MessageField::some(wa::message::PollUpdateMessage {
                poll_creation_message_key: key("POLL1"),
                vote: MessageField::some(wa::message::PollEncValue {
                    enc_payload: Some(payload),
                    enc_iv: Some(iv.to_vec()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = incoming(&vote, &info("PV1"));
        assert_eq!(
            (m.kind.as_str(), m.target.as_deref()),
            ("poll_vote", Some("POLL1"))
        );
        assert_eq!(read_votes(&vote, voter, "POLL1", &record), ["sushi"]);
        // Another poll's secret (or another voter) opens nothing.
        let other = PollRecord {
            secret: vec![8; 32],
            ..record.clone()
        };
        assert!(read_votes(&vote, voter, "POLL1", &other).is_empty());
        assert!(read_votes(&vote, "15550009999@s.whatsapp.net", "POLL1", &record).is_empty());
    }
}

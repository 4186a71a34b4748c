//! An [`Outgoing`] → the `wa::Message` that goes out, and [`send`]. The
//! builders are pure (unit-tested); media is uploaded first (`media.rs`)
//! and the upload's reference put into the message.

use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::media::{
    self as wamedia, AudioOptions, DocumentOptions, ImageOptions, VideoOptions,
};
use whatsapp_rust::upload::UploadResponse;
use whatsapp_rust::waproto::whatsapp as wa;

use wacore::proto_helpers::MessageBuilderExt;
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::{Client, Jid};

use super::inbound::PollRecord;
use super::store::WaStore;
use super::{Recent, find_recent, media as media_io};
use crate::channel::{
    ChannelError, Content, Location, MediaKind, OutBody, OutMedia, Outgoing, Poll,
};

use wa::message::protocol_message::Type as ProtocolType;

/// What a quote and mentions put into the message's context.
pub fn context(quote: Option<wa::ContextInfo>, mentions: &[String]) -> Option<wa::ContextInfo> {
    if quote.is_none() && mentions.is_empty() {
        return None;
    }
    let mut ctx = quote.unwrap_or_default();
    ctx.mentioned_jid = mentions.to_vec();
    Some(ctx)
}

/// A quote of a message that is not at hand (not among the recent ones):
/// its id, and who wrote it if known.
pub fn bare_quote(id: &str, participant: Option<String>) -> wa::ContextInfo {
    wa::ContextInfo {
        stanza_id: Some(id.to_string()),
        participant,
        ..Default::default()
    }
}

pub fn text(text: &str, ctx: Option<wa::ContextInfo>) -> wa::Message {
    match ctx {
        None => wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        },
        Some(ctx) => wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(text.to_string()),
                context_info: MessageField::some(ctx),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

pub fn location(l: &Location, ctx: Option<wa::ContextInfo>) -> wa::Message {
    wa::Message {
        location_message: MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(l.lat),
            degrees_longitude: Some(l.lng),
            name: l.name.clone(),
            context_info: ctx.map(MessageField::some).unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A poll with a fresh secret (a vote is encrypted with it), and what this
/// device keeps to read the votes.
pub fn poll(p: &Poll, ctx: Option<wa::ContextInfo>, creator: String) -> (wa::Message, PollRecord) {
    let secret: [u8; 32] = rand::random();
    let creation = wa::message::PollCreationMessage {
        name: Some(p.name.clone()),
        options: p
            .options
            .iter()
            .map(|o| wa::message::poll_creation_message::Option {
                option_name: Some(o.clone()),
                ..Default::default()
            })
            .collect(),
        selectable_options_count: Some(p.selectable),
        context_info: ctx.map(MessageField::some).unwrap_or_default(),
        ..Default::default()
    };
    // Single choice goes as v3, as WhatsApp Web sends it.
    let mut m = if p.selectable == 1 {
        wa::Message {
            poll_creation_message_v3: MessageField::some(creation),
            ..Default::default()
        }
    } else {
        wa::Message {
            poll_creation_message: MessageField::some(creation),
            ..Default::default()
        }
    };
    m.message_context_info = MessageField::some(wa::MessageContextInfo {
        message_secret: Some(secret.to_vec()),
        ..Default::default()
    });
    (
        m,
        PollRecord {
            options: p.options.clone(),
            secret: secret.to_vec(),
            creator,
        },
    )
}

/// The key of a message this device sent in `chat`.
fn own_key(chat: &str, id: &str, participant: Option<String>) -> MessageField<wa::MessageKey> {
    MessageField::some(wa::MessageKey {
        remote_jid: Some(chat.to_string()),
        from_me: Some(true),
        id: Some(id.to_string()),
        participant,
    })
}

/// Replaces the text of `id` (the library infers the stanza's edit
/// attribute from the protocol message).
pub fn edit(chat: &str, id: &str, new_text: &str, participant: Option<String>) -> wa::Message {
    wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            key: own_key(chat, id, participant),
            r#type: Some(ProtocolType::MESSAGE_EDIT),
            edited_message: MessageField::some(text(new_text, None)),
            timestamp_ms: Some(wacore::time::now_millis()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Deletes `id` for everyone.
pub fn revoke(chat: &str, id: &str) -> wa::Message {
    wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            key: own_key(chat, id, None),
            r#type: Some(ProtocolType::REVOKE),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An uploaded file as the message of its kind.
pub fn media(up: UploadResponse, m: &OutMedia, ctx: Option<wa::ContextInfo>) -> wa::Message {
    let ctx = ctx.map(Box::new);
    let mime = Some(m.mime.clone());
    match m.kind {
        MediaKind::Image => wamedia::image_message(
            up,
            ImageOptions {
                caption: m.caption.clone(),
                mimetype: mime,
                context_info: ctx,
                ..Default::default()
            },
        ),
        MediaKind::Video => wamedia::video_message(
            up,
            VideoOptions {
                caption: m.caption.clone(),
                mimetype: mime,
                context_info: ctx,
                ..Default::default()
            },
        ),
        MediaKind::Audio => wamedia::audio_message(
            up,
            AudioOptions {
                mimetype: mime,
                ptt: Some(m.voice),
                context_info: ctx,
                ..Default::default()
            },
        ),
        MediaKind::Document => wamedia::document_message(
            up,
            DocumentOptions {
                mimetype: mime,
                file_name: m.file_name.clone(),
                title: m.file_name.clone(),
                caption: m.caption.clone(),
                context_info: ctx,
                ..Default::default()
            },
        ),
        MediaKind::Sticker => wa::Message {
            sticker_message: MessageField::some(wa::message::StickerMessage {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: mime,
                context_info: ctx.map(|c| MessageField::some(*c)).unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Content that needs no upload (text with mentions, a location, a poll).
/// `None` for media.
pub fn plain(
    c: &Content,
    ctx: Option<wa::ContextInfo>,
    creator: String,
) -> Option<(wa::Message, Option<PollRecord>)> {
    if c.media.is_some() {
        return None;
    }
    if let Some(p) = &c.poll {
        let (m, r) = poll(p, ctx, creator);
        return Some((m, Some(r)));
    }
    if let Some(l) = &c.location {
        return Some((location(l, ctx), None));
    }
    Some((text(c.text.as_deref().unwrap_or(""), ctx), None))
}

/// Builds the message (uploading media first) and sends it under `out.id`.
pub async fn send(
    client: &Client,
    backend: &WaStore,
    recent: &Recent,
    out: Outgoing,
) -> Result<(), ChannelError> {
    let chat: Jid = out
        .chat
        .parse()
        .map_err(|_| ChannelError::BadRecipient(out.chat.clone()))?;
    let quote = |id: &str| match find_recent(recent, id) {
        Some(ctx) => ctx.build_quote_context(),
        None => bare_quote(id, None),
    };
    // In a group, a key of one's own message names oneself.
    let me = client.pn().map(|j| j.to_non_ad().to_string());
    let mut poll = None;
    let message = match out.body {
        OutBody::Text { text, quote: q } => match q.and_then(|q| find_recent(recent, &q)) {
            Some(ctx) => wa::Message::text_with_context(text, ctx.build_quote_context()),
            None => wa::Message::text(text),
        },
        OutBody::Rich(c) => {
            let ctx = context(c.quote.as_deref().map(quote), &c.mentions);
            match plain(&c, ctx.clone(), me.clone().unwrap_or_default()) {
                Some((m, record)) => {
                    poll = record;
                    m
                }
                None => {
                    let Some(m) = &c.media else {
                        return Err(ChannelError::Protocol("nothing to send".into()));
                    };
                    let up = media_io::upload(client, m).await?;
                    media(up, m, ctx)
                }
            }
        }
        OutBody::React { message_id, emoji } => {
            let key = match find_recent(recent, &message_id) {
                Some(ctx) => ctx.message_key(),
                None => wa::MessageKey {
                    remote_jid: Some(out.chat.clone()),
                    from_me: Some(false),
                    id: Some(message_id),
                    participant: None,
                },
            };
            wacore::proto_helpers::build_reaction_message(key, emoji, wacore::time::now_millis())
        }
        OutBody::Edit { message_id, text } => {
            let participant = chat.is_group().then(|| me.clone()).flatten();
            edit(&out.chat, &message_id, &text, participant)
        }
        OutBody::Revoke { message_id } => revoke(&out.chat, &message_id),
    };
    client
        .send_message_with_options(
            chat,
            message,
            SendOptions::default().with_message_id(&out.id),
        )
        .await
        .map_err(super::send_error)?;
    if let Some(record) = poll {
        // Without it the votes cannot be read; the poll itself went out.
        match serde_json::to_vec(&record) {
            Ok(bytes) => {
                if let Err(e) = backend.put_poll(&out.id, &bytes) {
                    tracing::warn!(id = %out.id, error = %e, "could not keep the poll; its votes will not be readable");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding a poll record"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_mentions_and_a_quote_goes_as_extended_text() {
        let ctx = context(
            Some(bare_quote("Q1", None)),
            &["1555@s.whatsapp.net".into()],
        );
        let m = text("hi @1555", ctx);
        let e = m.extended_text_message.as_option().unwrap();
        let c = e.context_info.as_option().unwrap();
        assert_eq!(c.stanza_id.as_deref(), Some("Q1"));
        assert_eq!(c.mentioned_jid, ["1555@s.whatsapp.net"]);
        assert_eq!(
            text("plain", context(None, &[])).conversation.as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn polls_carry_their_secret_and_single_choice_goes_as_v3() {
        let p = Poll {
            name: "Lunch?".into(),
            options: vec!["pizza".into(), "sushi".into()],
            selectable: 1,
        };
        let (m, r) = poll(&p, None, "1@s.whatsapp.net".into());
        let secret = m
            .message_context_info
            .as_option()
            .and_then(|c| c.message_secret.clone())
            .unwrap();
        assert_eq!(secret, r.secret);
        assert_eq!(secret.len(), 32);
        assert!(m.poll_creation_message_v3.is_set());
        let (m, _) = poll(&Poll { selectable: 0, ..p }, None, String::new());
        assert!(m.poll_creation_message.is_set());
    }

    #[test]
    fn edits_and_revokes_are_protocol_messages_about_own_messages() {
        let e = edit("1@s.whatsapp.net", "ID1", "new", None);
        let p = e.protocol_message.as_option().unwrap();
        assert_eq!(p.r#type, Some(ProtocolType::MESSAGE_EDIT));
        let k = p.key.as_option().unwrap();
        assert_eq!((k.id.as_deref(), k.from_me), (Some("ID1"), Some(true)));
        assert_eq!(
            p.edited_message
                .as_option()
                .unwrap()
                .conversation
                .as_deref(),
            Some("new")
        );
        assert_eq!(
            wacore::types::message::EditAttribute::infer_from_message(&e),
            Some(wacore::types::message::EditAttribute::MessageEdit)
        );
        let r = revoke("1@s.whatsapp.net", "ID2");
        assert_eq!(
            wacore::types::message::EditAttribute::infer_from_message(&r),
            Some(wacore::types::message::EditAttribute::SenderRevoke)
        );
    }
}

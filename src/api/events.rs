//! Host events as the JSON that SSE clients and webhooks receive. Nothing
//! secret (tokens, keys) is ever part of an event.

use serde_json::{Value, json};

use crate::channel::{Content, Incoming, MediaInfo, OutBody, OutMedia, Outgoing};
use crate::host::HostEvent;

/// A received message as JSON: the message object scripts see (media as
/// metadata; where its bytes are stays out).
pub fn incoming_json(m: &Incoming) -> Value {
    json!({
        "id": m.id,
        "chat": m.chat,
        "sender": m.sender,
        "text": m.text,
        "message_type": m.kind,
        "from_me": m.from_me,
        "is_group": m.is_group,
        "push_name": m.push_name,
        "timestamp": m.timestamp,
        "mentions": m.mentions,
        "quoted": m.quoted.as_ref().map(|q| json!({
            "id": q.id, "sender": q.sender, "text": q.text, "type": q.kind,
        })),
        "media": m.media.as_deref().map(media_json),
        "target": m.target,
        "reaction": m.reaction,
        "location": m.location,
        "poll": m.poll,
        "votes": m.votes,
    })
}

fn media_json(m: &MediaInfo) -> Value {
    json!({
        "kind": m.kind.as_str(),
        "mime": m.mime,
        "size": m.size,
        "file_name": m.file_name,
        "seconds": m.seconds,
        "voice": m.voice,
        "width": m.width,
        "height": m.height,
    })
}

fn out_media_json(m: &OutMedia) -> Value {
    json!({
        "kind": m.kind.as_str(),
        "mime": m.mime,
        "size": m.size,
        "file_name": m.file_name,
        "voice": m.voice,
    })
}

/// A sent message as JSON, shaped like a received one where they share
/// fields (media as metadata, never its bytes).
pub fn outgoing_json(out: &Outgoing) -> Value {
    let mut v = json!({
        "id": out.id,
        "chat": out.chat,
        "from_me": true,
        "is_group": out.chat.ends_with("@g.us"),
    });
    match &out.body {
        OutBody::Text { text, quote } => {
            v["message_type"] = json!("text");
            v["text"] = json!(text);
            v["quote"] = json!(quote);
        }
        OutBody::Rich(c) => {
            let Content {
                media,
                location,
                poll,
                mentions,
                quote,
                ..
            } = &**c;
            let kind = match (media, location, poll) {
                (Some(m), _, _) => m.kind.as_str(),
                (_, Some(_), _) => "location",
                (_, _, Some(_)) => "poll",
                _ => "text",
            };
            v["message_type"] = json!(kind);
            v["text"] = json!(c.body_text());
            v["media"] = json!(media.as_ref().map(out_media_json));
            v["location"] = json!(location);
            v["poll"] = json!(poll);
            v["mentions"] = json!(mentions);
            v["quote"] = json!(quote);
        }
        OutBody::React { message_id, emoji } => {
            v["message_type"] = json!("reaction");
            v["target"] = json!(message_id);
            v["reaction"] = json!(emoji);
        }
        OutBody::Edit { message_id, text } => {
            v["message_type"] = json!("edit");
            v["target"] = json!(message_id);
            v["text"] = json!(text);
        }
        OutBody::Revoke { message_id } => {
            v["message_type"] = json!("revoke");
            v["target"] = json!(message_id);
        }
    }
    v
}

/// The event's type name (as used in `[[webhook]] events`) and its JSON.
pub fn event_json(ev: &HostEvent) -> (&'static str, Value) {
    match ev {
        HostEvent::State {
            instance,
            transition,
            row,
        } => (
            "state",
            json!({
                "type": "state",
                "instance": instance,
                "state": transition.state.name().as_str(),
                "line": transition.to_string(),
                "connection_status": row.connection_status.as_str(),
                "last_reason_code": row.last_reason_code,
                "last_reason_kind": row.last_reason_kind.map(|k| k.as_str()),
                "last_reason_message": row.last_reason_message,
                "jid": row.jid,
                "at": transition.at,
            }),
        ),
        HostEvent::Qr {
            instance,
            code,
            kind,
            expires_in_ms,
        } => (
            "qr",
            json!({
                "type": "qr",
                "instance": instance,
                "code": code,
                "kind": kind,
                "expires_in": expires_in_ms.div_ceil(1000),
            }),
        ),
        HostEvent::MessageIn { instance, message } => {
            let mut v = incoming_json(message);
            v["type"] = json!("message");
            v["direction"] = json!("in");
            v["instance"] = json!(instance);
            ("message", v)
        }
        HostEvent::MessageOut {
            instance, message, ..
        } => {
            let mut v = outgoing_json(message);
            v["type"] = json!("message");
            v["direction"] = json!("out");
            v["instance"] = json!(instance);
            ("message", v)
        }
        HostEvent::SendFailed {
            instance,
            id,
            chat,
            reason,
        } => (
            "send_failed",
            json!({
                "type": "send_failed",
                "instance": instance,
                "id": id,
                "chat": chat,
                "reason": reason,
            }),
        ),
        HostEvent::ScriptError { instance, error } => (
            "script_error",
            json!({
                "type": "script_error",
                "instance": instance,
                "file": error.file,
                "line": error.line,
                "context": error.context,
                "message": error.message,
            }),
        ),
        HostEvent::Group { instance, event } => (
            "group",
            json!({
                "type": "group",
                "instance": instance,
                "chat": event.chat,
                "action": event.action.as_str(),
                "participants": event.participants,
                "by": event.by,
                "value": event.value,
            }),
        ),
    }
}

/// The instance an event is about.
pub fn event_instance(ev: &HostEvent) -> &str {
    match ev {
        HostEvent::State { instance, .. }
        | HostEvent::Qr { instance, .. }
        | HostEvent::MessageIn { instance, .. }
        | HostEvent::MessageOut { instance, .. }
        | HostEvent::SendFailed { instance, .. }
        | HostEvent::ScriptError { instance, .. }
        | HostEvent::Group { instance, .. } => instance,
    }
}

//! Host events as the JSON that SSE clients and webhooks receive. Nothing
//! secret (tokens, keys) is ever part of an event.

use serde_json::{Value, json};

use crate::host::HostEvent;

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
        HostEvent::MessageIn { instance, message } => (
            "message",
            json!({
                "type": "message",
                "direction": "in",
                "instance": instance,
                "id": message.id,
                "chat": message.chat,
                "sender": message.sender,
                "text": message.text,
                "message_type": message.kind,
                "from_me": message.from_me,
                "is_group": message.is_group,
                "push_name": message.push_name,
                "timestamp": message.timestamp,
            }),
        ),
        HostEvent::MessageOut { instance, chat, id } => (
            "message",
            json!({
                "type": "message",
                "direction": "out",
                "instance": instance,
                "id": id,
                "chat": chat,
            }),
        ),
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
        | HostEvent::ScriptError { instance, .. } => instance,
    }
}

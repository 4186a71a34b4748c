//! Protocol clients behind one trait. A channel knows nothing of Lua or HTTP:
//! it dials, reports what happened as [`ChannelEvent`]s and carries out sends.

pub mod console;
mod console_groups;
pub mod groups;
pub mod rich;
pub mod whatsapp;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::lifecycle::{PairKind, ReasonKind};
pub use groups::{GroupEvent, GroupInfo, GroupOp, GroupReply};
pub use rich::{
    Action, Content, Location, MediaData, MediaInfo, MediaKind, MediaRef, OutMedia, Poll, Quoted,
    Receipt, ReceiptKind,
};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An incoming message, already reduced to what scripts see (`on_message`'s `m`).
/// It is kept in the inbox as JSON; a field added later reads back from an
/// older row as its default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Incoming {
    pub id: String,
    pub chat: String,
    pub sender: String,
    pub text: Option<String>,
    /// "text", "image", "video", "audio", "document", "sticker", ...
    pub kind: String,
    pub from_me: bool,
    pub is_group: bool,
    pub push_name: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    /// JIDs the message mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted: Option<Box<Quoted>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Box<MediaInfo>>,
    /// The message a reaction, edit, revoke or poll vote is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A reaction's emoji ("" = the reaction was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Box<Location>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Box<Poll>>,
    /// A poll vote's selected options, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<String>,
}

/// What a channel reports. Every event carries the connection it belongs to,
/// so the host can drop what a superseded connection says late.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelEvent {
    pub conn: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    PairingCode {
        code: String,
        kind: PairKind,
        expires_in_ms: u64,
    },
    PairSuccess {
        jid: Option<String>,
    },
    Opened {
        jid: Option<String>,
        push_name: Option<String>,
    },
    AccountId {
        jid: Option<String>,
        push_name: Option<String>,
    },
    Closed {
        code: Option<u16>,
        kind: Option<ReasonKind>,
        message: Option<String>,
        retry_after_ms: Option<u64>,
    },
    /// A message the channel could not hold back its ack for: the host
    /// commits it to the inbox before scripts see it.
    Message(Incoming),
    /// A message the channel committed to the inbox (row `seq`) before
    /// acking it; only new ones are reported.
    Inbox {
        seq: i64,
        message: Incoming,
    },
    /// The server confirmed the send `id` (`error`: it refused it), for a
    /// channel whose [`Channel::confirms_sends`].
    SendAcked {
        id: String,
        error: Option<String>,
    },
    /// Receipts for messages the bot sent.
    Receipt(Receipt),
    /// A group changed (`on_group`).
    Group(Box<GroupEvent>),
    /// The channel could not commit `n` messages to the inbox: their ack
    /// was held back and the server delivers them again (counted).
    InboxFailed {
        n: usize,
    },
}

/// Something to send. The id is chosen before sending (WhatsApp ids are
/// client-made), so callers get it back at once and the send can be async.
/// It waits in the outbox as JSON until it is sent (media bytes given in
/// memory as base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub id: String,
    pub chat: String,
    pub body: OutBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutBody {
    Text {
        text: String,
        quote: Option<String>,
    },
    /// Media, a location, a poll, or text with mentions.
    Rich(Box<Content>),
    React {
        message_id: String,
        emoji: String,
    },
    /// Replaces the text of a message the bot sent.
    Edit {
        message_id: String,
        text: String,
    },
    /// Deletes a message the bot sent, for everyone.
    Revoke {
        message_id: String,
    },
}

impl Outgoing {
    /// A message with any content; plain text (with at most a quote) stays
    /// the lighter `Text`.
    pub fn content(chat: impl Into<String>, content: Content) -> Outgoing {
        let body = match content {
            Content {
                text: Some(text),
                media: None,
                location: None,
                poll: None,
                mentions,
                quote,
            } if mentions.is_empty() => OutBody::Text { text, quote },
            other => OutBody::Rich(Box::new(other)),
        };
        Outgoing {
            id: new_message_id(),
            chat: chat.into(),
            body,
        }
    }

    pub fn edit(
        chat: impl Into<String>,
        message_id: impl Into<String>,
        text: impl Into<String>,
    ) -> Outgoing {
        Outgoing {
            id: new_message_id(),
            chat: chat.into(),
            body: OutBody::Edit {
                message_id: message_id.into(),
                text: text.into(),
            },
        }
    }

    pub fn revoke(chat: impl Into<String>, message_id: impl Into<String>) -> Outgoing {
        Outgoing {
            id: new_message_id(),
            chat: chat.into(),
            body: OutBody::Revoke {
                message_id: message_id.into(),
            },
        }
    }

    /// A copy to show (events, webhooks): media bytes given in memory are
    /// left out, their size stays.
    pub fn without_bytes(&self) -> Outgoing {
        let body = match &self.body {
            OutBody::Rich(c) if matches!(&c.media, Some(m) if matches!(m.data, MediaData::Bytes(_))) =>
            {
                let mut c = c.clone();
                if let Some(m) = &mut c.media {
                    m.data = MediaData::Bytes(bytes::Bytes::new());
                }
                OutBody::Rich(c)
            }
            other => other.clone(),
        };
        Outgoing {
            id: self.id.clone(),
            chat: self.chat.clone(),
            body,
        }
    }

    pub fn text(
        chat: impl Into<String>,
        text: impl Into<String>,
        quote: Option<String>,
    ) -> Outgoing {
        Outgoing {
            id: new_message_id(),
            chat: chat.into(),
            body: OutBody::Text {
                text: text.into(),
                quote,
            },
        }
    }

    pub fn react(
        chat: impl Into<String>,
        message_id: impl Into<String>,
        emoji: impl Into<String>,
    ) -> Outgoing {
        Outgoing {
            id: new_message_id(),
            chat: chat.into(),
            body: OutBody::React {
                message_id: message_id.into(),
                emoji: emoji.into(),
            },
        }
    }
}

/// A fresh message id in WhatsApp's style (`3EB0` + 16 hex digits).
pub fn new_message_id() -> String {
    // By hand: `format!` costs more than everything else a send does.
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let n = rand::random::<u64>();
    let mut id = String::with_capacity(20);
    id.push_str("3EB0");
    for shift in (0..16).rev() {
        id.push(HEX[((n >> (shift * 4)) & 0xF) as usize] as char);
    }
    id
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn message_ids_look_like_whatsapps() {
        let id = super::new_message_id();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("3EB0"));
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        );
        assert_ne!(id, super::new_message_id());
    }
}

/// A recipient that is neither a JID nor a phone number.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("recipient {0:?} is neither a JID (user@server) nor a phone number")]
pub struct BadRecipient(pub String);

/// The one recipient parser (the API, `bot.send` and `m:reply` share it):
/// a JID as given, or a phone number (6 to 15 digits, `+` allowed) turned
/// into a user JID.
pub fn recipient(to: &str) -> Result<String, BadRecipient> {
    let t = to.trim();
    if let Some((user, server)) = t.split_once('@') {
        let user_ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
        let server_ok = !server.is_empty()
            && server
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
        return if user_ok && server_ok {
            Ok(t.to_string())
        } else {
            Err(BadRecipient(to.to_string()))
        };
    }
    let digits = t.strip_prefix('+').unwrap_or(t);
    if (6..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(format!("{digits}@s.whatsapp.net"))
    } else {
        Err(BadRecipient(to.to_string()))
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    #[error("not connected")]
    NotConnected,
    #[error("invalid recipient {0:?}")]
    BadRecipient(String),
    #[error("{0}")]
    Protocol(String),
    #[error("this channel cannot do that")]
    Unsupported,
    /// A download or upload failed; the text says why (size, hash, host).
    #[error("{0}")]
    Media(String),
    /// The connection failed the send; another connection may not.
    #[error("{0}")]
    Interrupted(String),
}

impl ChannelError {
    /// Whether a send that failed so is worth trying again on the next
    /// connection (the others fail for good).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChannelError::NotConnected | ChannelError::Interrupted(_)
        )
    }
}

/// One protocol client. Methods return promptly; slow work is in the returned
/// futures, which the host awaits with its own timeouts.
pub trait Channel: Send + 'static {
    /// Starts one connection attempt. What happens is reported as events
    /// tagged with `conn`; a new call supersedes any earlier connection.
    fn connect(&mut self, conn: u64);
    /// Closes the current connection, if any. Idempotent; never fails.
    fn close(&mut self);
    /// Asks the server to unlink this device (logout). Best effort.
    fn unlink(&mut self) -> BoxFuture<Result<(), ChannelError>>;
    /// Sends a message or reaction under `out.id`. Sends are handed over in
    /// order, one at a time; the future resolves once the message is out
    /// (or, for a channel that [`confirms_sends`](Channel::confirms_sends),
    /// written, its confirmation still to come).
    fn send(&mut self, out: Outgoing) -> BoxFuture<Result<(), ChannelError>>;
    /// Does something that is not a message (a read receipt, typing, a
    /// download); answers the bytes a download wrote, else 0.
    fn act(&mut self, action: Action) -> BoxFuture<Result<u64, ChannelError>> {
        let _ = action;
        Box::pin(std::future::ready(Err(ChannelError::Unsupported)))
    }
    /// Asks the server about a group, or changes one.
    fn group(&mut self, op: GroupOp) -> BoxFuture<Result<GroupReply, ChannelError>> {
        let _ = op;
        Box::pin(std::future::ready(Err(ChannelError::Unsupported)))
    }

    /// Whether the server confirms each send later with
    /// [`EventKind::SendAcked`]: until then a send counts as not delivered,
    /// and goes again (same id) after a reconnect.
    fn confirms_sends(&self) -> bool {
        false
    }
    /// For a channel whose message ids repeat across runs (the console
    /// numbers its messages per run): a tag of this run, put before each id
    /// in the inbox's key, so a new `c1` is not taken for an old one.
    fn inbox_scope(&self) -> Option<String> {
        None
    }
    /// Whether this device was ever paired with an account (and not logged
    /// out since): only then is there anything for a logout to unlink.
    /// When unsure, say yes: asking the server is the safe side.
    fn is_paired(&self) -> bool {
        true
    }
    /// Closes for good and waits until the library has written what it
    /// buffered (keys, device state), so a restart finds them.
    fn shutdown(&mut self) -> BoxFuture<()> {
        self.close();
        Box::pin(std::future::ready(()))
    }
}

//! Protocol clients behind one trait. A channel knows nothing of Lua or HTTP:
//! it dials, reports what happened as [`ChannelEvent`]s and carries out sends.

pub mod console;

use std::future::Future;
use std::pin::Pin;

use crate::lifecycle::{PairKind, ReasonKind};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An incoming message, already reduced to what scripts see (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// What a channel reports. Every event carries the connection it belongs to,
/// so the host can drop what a superseded connection says late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub conn: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    Message(Incoming),
}

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text {
        chat: String,
        text: String,
        quote: Option<String>,
    },
    React {
        chat: String,
        message_id: String,
        emoji: String,
    },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    #[error("not connected")]
    NotConnected,
    #[error("invalid recipient {0:?}")]
    BadRecipient(String),
    #[error("{0}")]
    Protocol(String),
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
    /// Sends a message or reaction; resolves to the message id.
    fn send(&mut self, out: Outgoing) -> BoxFuture<Result<String, ChannelError>>;
}

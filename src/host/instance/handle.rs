//! The handle the rest of the host holds on an instance: commands to its
//! actor, and a snapshot of its state for readers that must not wait.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::GroupCache;
use crate::channel::{Action, ChannelError, GroupOp, GroupReply, Outgoing};
use crate::lifecycle::{LogoutBy, State, StatusRow};

/// What an instance looks like right now, for readers that must not wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    pub row: StatusRow,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError {
    #[error("instance {0} is not open")]
    NotOpen(String),
    #[error("instance {0} has stopped")]
    Gone(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The outbox could not take it.
    #[error("queueing the send failed: {0}")]
    Store(String),
}

pub(super) enum Command {
    Connect,
    Stop,
    Logout {
        by: LogoutBy,
        reply: oneshot::Sender<StatusRow>,
    },
    Send {
        out: Outgoing,
        /// Hold it until the next open instead of refusing while not open.
        queue: bool,
        reply: oneshot::Sender<Result<String, SendError>>,
    },
    /// Something that is not a message (read receipt, typing, download).
    Act {
        action: Action,
        reply: oneshot::Sender<Result<u64, SendError>>,
    },
    /// A group call (`bot.groups.*`, the API's group routes).
    Group {
        op: GroupOp,
        reply: oneshot::Sender<Result<GroupReply, SendError>>,
    },
    /// A send already in the outbox (row `seq`), to go out in order.
    Queued {
        seq: i64,
        out: Outgoing,
    },
    Settle(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to one instance's actor.
#[derive(Clone)]
pub struct InstanceHandle {
    pub(super) name: Arc<str>,
    pub(super) tx: mpsc::UnboundedSender<Command>,
    pub(super) snapshot: watch::Receiver<Snapshot>,
    /// Group metadata, kept fresh by group events.
    pub(super) groups: Arc<std::sync::Mutex<GroupCache>>,
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("name", &self.name)
            .finish()
    }
}

impl InstanceHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the actor has ended (stopped, or its row was deleted).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// A watch on the instance's state, for waiting on changes.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    pub fn connect(&self) {
        let _ = self.tx.send(Command::Connect);
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }

    /// Logs out and answers once the teardown is finished (or with the
    /// current row when there is nothing to tear down).
    pub async fn logout(&self, by: LogoutBy) -> StatusRow {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Logout { by, reply }).is_err() {
            return self.snapshot().row;
        }
        match rx.await {
            Ok(row) => row,
            Err(_) => self.snapshot().row,
        }
    }

    /// Starts a logout without waiting for it (scripts use this).
    pub fn logout_nowait(&self, by: LogoutBy) {
        let (reply, _rx) = oneshot::channel();
        let _ = self.tx.send(Command::Logout { by, reply });
    }

    /// Queues a send in the outbox; only while open. Answers its id once it
    /// is queued: how it went is the outbox's (a `MessageOut` or
    /// `SendFailed` event, the row's status).
    pub async fn send(&self, out: Outgoing) -> Result<String, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Send {
                out,
                queue: false,
                reply,
            })
            .map_err(|_| SendError::Gone(self.name.to_string()))?;
        rx.await
            .map_err(|_| SendError::Gone(self.name.to_string()))?
    }

    /// As [`InstanceHandle::send`], but while not open the send waits in
    /// the outbox for the next open; refused once logged out.
    pub async fn send_queued(&self, out: Outgoing) -> Result<String, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Send {
                out,
                queue: true,
                reply,
            })
            .map_err(|_| SendError::Gone(self.name.to_string()))?;
        rx.await
            .map_err(|_| SendError::Gone(self.name.to_string()))?
    }

    /// A send someone else put in the outbox (row `seq`): the actor sends
    /// it in order. If the actor has stopped it waits in the outbox for the
    /// next start.
    pub fn queued(&self, seq: i64, out: Outgoing) {
        if self.tx.send(Command::Queued { seq, out }).is_err() {
            tracing::info!(instance = %self.name, "the instance has stopped; the send waits in the outbox for the next start");
        }
    }

    /// Does something that is not a message, only while open; answers
    /// what a download wrote (bytes), else 0.
    pub async fn act(&self, action: Action) -> Result<u64, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Act { action, reply })
            .map_err(|_| SendError::Gone(self.name.to_string()))?;
        rx.await
            .map_err(|_| SendError::Gone(self.name.to_string()))?
    }

    /// Resolves once every command and event queued before it is handled.
    pub async fn settle(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Settle(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the instance and ends its actor once its writes are done.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

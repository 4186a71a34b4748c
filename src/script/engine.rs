//! The handle the host holds on one instance's engine. It is `Send`; the
//! engine itself (the Lua state) lives on a worker of the pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::automation::routes::{HookRequest, HookResponse, RouteError, RouteId};
use crate::channel::{GroupEvent, Incoming, Receipt};
use crate::lifecycle::{CloseAnswer, HookCall};

/// Where a route handler's answer goes.
pub(crate) type RouteReply = oneshot::Sender<Result<HookResponse, RouteError>>;

/// A message for the scripts, and the inbox row it came from: the runner
/// tells the host when all its handlers have started
/// ([`Actions::message_started`](super::Actions::message_started)).
pub(crate) struct Inbound {
    pub msg: Incoming,
    pub token: Option<i64>,
}

pub(crate) enum Job {
    Hook(HookCall, Option<oneshot::Sender<CloseAnswer>>),
    Message(Inbound),
    /// Receipts for messages the bot sent (`on_receipt`).
    Receipt(Receipt),
    /// A group changed (`on_group`).
    Group(GroupEvent),
    /// An HTTP request for a script's route (`bot.route`).
    Route {
        route: RouteId,
        req: HookRequest,
        reply: RouteReply,
    },
    Reload {
        /// The folder's generation this load belongs to (instances sharing
        /// a folder report its load errors once).
        folder_gen: u64,
        reply: Option<oneshot::Sender<LoadReport>>,
    },
    /// Answered once every job before it has started (`until_done`:
    /// and every handler they started has finished).
    Settle {
        tx: oneshot::Sender<()>,
        until_done: bool,
    },
    Shutdown(oneshot::Sender<()>),
}

/// The outcome of a (re)load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The generation running after this load (unchanged if it was refused).
    pub generation: u64,
    pub files: Vec<String>,
    pub errors: Vec<super::ScriptError>,
    /// Whether the new generation replaced the old one.
    pub swapped: bool,
}

/// A handle to an instance's engine.
pub struct Engine {
    pub(crate) tx: mpsc::UnboundedSender<Job>,
    pub(crate) status: Arc<Mutex<LoadReport>>,
    /// Whether the running generation defines `on_close` anywhere: if not,
    /// a close needs no round trip through the engine.
    pub(crate) has_on_close: Arc<AtomicBool>,
}

impl Engine {
    /// Queues a lifecycle hook. For an `on_close` whose answer matters the
    /// receiver carries the decision.
    pub fn hook(&self, call: HookCall) -> Option<oneshot::Receiver<CloseAnswer>> {
        let wants_answer = matches!(
            call,
            HookCall::Close {
                answer_seq: Some(_),
                ..
            }
        );
        if wants_answer {
            if !self.has_on_close.load(Ordering::Acquire) {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            self.tx.send(Job::Hook(call, Some(tx))).ok()?;
            Some(rx)
        } else {
            let _ = self.tx.send(Job::Hook(call, None));
            None
        }
    }

    pub fn message(&self, m: Incoming) {
        let _ = self.tx.send(Job::Message(Inbound {
            msg: m,
            token: None,
        }));
    }

    /// As [`Engine::message`], for inbox row `token`: its handlers' start
    /// is reported with `Actions::message_begin` / `message_started`.
    /// Answers false if the engine has stopped (the row was not taken).
    pub fn message_tracked(&self, m: Incoming, token: i64) -> bool {
        self.tx
            .send(Job::Message(Inbound {
                msg: m,
                token: Some(token),
            }))
            .is_ok()
    }

    pub fn receipt(&self, r: Receipt) {
        let _ = self.tx.send(Job::Receipt(r));
    }

    pub fn group(&self, e: GroupEvent) {
        let _ = self.tx.send(Job::Group(e));
    }

    /// Runs a route's handler; the answer, or why there is none. An
    /// engine that has stopped answers `Gone`.
    pub fn route(
        &self,
        route: RouteId,
        req: HookRequest,
    ) -> oneshot::Receiver<Result<HookResponse, RouteError>> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Job::Route { reply, .. })) =
            self.tx.send(Job::Route { route, req, reply })
        {
            let _ = reply.send(Err(RouteError::Gone));
        }
        rx
    }

    /// Reloads the folder (as generation `folder_gen` of it).
    pub fn reload_as(&self, folder_gen: u64) -> oneshot::Receiver<LoadReport> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Reload {
            folder_gen,
            reply: Some(tx),
        });
        rx
    }

    pub fn reload(&self) -> oneshot::Receiver<LoadReport> {
        self.reload_as(0)
    }

    /// Resolves once every job queued before it has run, handlers that
    /// wait included (timers that fire later are not waited for).
    pub fn settle(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Settle {
            tx,
            until_done: true,
        });
        rx
    }

    /// Resolves once every job queued before it has started: its handlers
    /// finished or are waiting.
    pub fn settle_started(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Settle {
            tx,
            until_done: false,
        });
        rx
    }

    /// Cancels waiting handlers, calls `on_unload` and ends the engine.
    pub fn shutdown(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Shutdown(tx));
        rx
    }

    /// The last load's report (generation, files, errors).
    pub fn status(&self) -> LoadReport {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

//! One instance's actor: feeds channel events, commands, timers and script
//! answers into the machine, and carries out its effects in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{EventBus, Hooks, HostEvent, HostSettings, now_ms};
use crate::channel::{Channel, ChannelError, ChannelEvent, EventKind, Outgoing};
use crate::lifecycle::{CloseAnswer, Effect, HookCall, Input, LogoutBy, Machine, State, StatusRow};
use crate::store::Store;

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
}

enum Command {
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
    Settle(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to one instance's actor.
#[derive(Clone)]
pub struct InstanceHandle {
    name: Arc<str>,
    tx: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Snapshot>,
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

    /// Sends through the channel; only while open.
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

    /// Sends now if open, otherwise keeps it (in order, in memory) for the
    /// next open. Returns the id at once.
    pub fn send_queued(&self, out: Outgoing) -> Result<String, SendError> {
        let id = out.id.clone();
        let (reply, _rx) = oneshot::channel();
        self.tx
            .send(Command::Send {
                out,
                queue: true,
                reply,
            })
            .map_err(|_| SendError::Gone(self.name.to_string()))?;
        Ok(id)
    }

    /// Queues a send without waiting for its result; failures are logged.
    pub fn send_nowait(&self, out: Outgoing) {
        let (reply, rx) = oneshot::channel();
        let name = self.name.clone();
        let cmd = Command::Send {
            out,
            queue: false,
            reply,
        };
        if self.tx.send(cmd).is_err() {
            tracing::warn!(instance = %name, "send dropped: the instance has stopped");
            return;
        }
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(instance = %name, error = %e, "send failed"),
                Err(_) => {
                    tracing::warn!(instance = %name, "send dropped: the instance has stopped")
                }
            }
        });
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

/// A status write that has not reached the database yet.
enum Write {
    Status(StatusRow),
    EndSession(StatusRow),
}

struct Actor {
    name: Arc<str>,
    handle: InstanceHandle,
    machine: Machine,
    channel: Box<dyn Channel>,
    store: Arc<Store>,
    hooks: Arc<dyn Hooks>,
    bus: EventBus,
    settings: HostSettings,
    snapshot: watch::Sender<Snapshot>,
    answers_tx: mpsc::UnboundedSender<(u64, CloseAnswer)>,
    /// The connection whose events count; anything else is late news.
    conn: u64,
    inbound: bool,
    timer: Option<(u64, Instant)>,
    unwritten: Option<Write>,
    retry_at: Option<Instant>,
    logout_waiters: Vec<oneshot::Sender<StatusRow>>,
    queue: VecDeque<Input>,
    /// Sends asked to wait for the next open, in order.
    outbox: VecDeque<(Outgoing, oneshot::Sender<Result<String, SendError>>)>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    name: &str,
    restored: StatusRow,
    channel: Box<dyn Channel>,
    mut events: mpsc::UnboundedReceiver<ChannelEvent>,
    store: Arc<Store>,
    hooks: Arc<dyn Hooks>,
    bus: EventBus,
    settings: HostSettings,
) -> (InstanceHandle, tokio::task::JoinHandle<()>) {
    let name: Arc<str> = name.into();
    let seed = now_ms() ^ (name.len() as u64).rotate_left(17) ^ std::process::id() as u64;
    let machine = Machine::new(settings.reconnect.clone(), seed, Some(&restored));
    let (snap_tx, snap_rx) = watch::channel(Snapshot {
        state: machine.state().clone(),
        row: restored,
    });
    let (tx, mut commands) = mpsc::unbounded_channel();
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    let handle = InstanceHandle {
        name: name.clone(),
        tx,
        snapshot: snap_rx,
    };
    let mut actor = Actor {
        name,
        handle: handle.clone(),
        machine,
        channel,
        store,
        hooks,
        bus,
        settings,
        snapshot: snap_tx,
        answers_tx,
        conn: 0,
        inbound: false,
        timer: None,
        unwritten: None,
        retry_at: None,
        logout_waiters: Vec::new(),
        queue: VecDeque::new(),
        outbox: VecDeque::new(),
    };
    let task = tokio::spawn(async move {
        loop {
            let timer_at = actor.timer.map(|(_, at)| at);
            let retry_at = actor.retry_at;
            tokio::select! {
                biased;
                Some(ev) = events.recv() => actor.on_event(ev).await,
                Some((seq, answer)) = answers.recv() => {
                    actor.feed(Input::CloseAnswer { seq, answer }).await
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        actor.feed(Input::Stop).await;
                        actor.flush_writes_before_exit().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => actor.on_command(cmd).await,
                    None => {
                        actor.feed(Input::Stop).await;
                        actor.flush_writes_before_exit().await;
                        break;
                    }
                },
                _ = sleep_until(timer_at), if timer_at.is_some() => {
                    if let Some((token, _)) = actor.timer.take() {
                        actor.feed(Input::TimerDue { token }).await;
                    }
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    actor.retry_at = None;
                    actor.retry_write();
                }
            }
        }
    });
    (handle, task)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    async fn on_event(&mut self, ev: ChannelEvent) {
        if ev.conn != self.conn {
            tracing::debug!(instance = %self.name, conn = ev.conn, current = self.conn, "dropping an event of a superseded connection");
            return;
        }
        let input = match ev.kind {
            EventKind::PairingCode {
                code,
                kind,
                expires_in_ms,
            } => Input::PairingCode {
                code,
                kind,
                expires_in_ms,
            },
            EventKind::PairSuccess { jid } => Input::PairSuccess { jid },
            EventKind::Opened { jid, push_name } => Input::Opened { jid, push_name },
            EventKind::AccountId { jid, push_name } => Input::AccountId { jid, push_name },
            EventKind::Closed {
                code,
                kind,
                message,
                retry_after_ms,
            } => Input::Closed {
                code,
                kind,
                message,
                retry_after_ms,
            },
            EventKind::Message(msg) => {
                if self.inbound && matches!(self.machine.state(), State::Open { .. }) {
                    self.bus.publish(HostEvent::MessageIn {
                        instance: self.name.to_string(),
                        message: msg.clone(),
                    });
                    self.hooks.message(&self.handle, msg);
                } else {
                    tracing::debug!(instance = %self.name, id = %msg.id, "inbound stopped; message not handled");
                }
                return;
            }
        };
        self.feed(input).await;
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect => self.feed(Input::Connect).await,
            Command::Stop => self.feed(Input::Stop).await,
            Command::Logout { by, reply } => match self.machine.state() {
                State::LoggedOut { .. } if self.unwritten.is_none() => {
                    let _ = reply.send(self.machine.row());
                }
                _ => {
                    self.logout_waiters.push(reply);
                    self.feed(Input::Logout { by }).await;
                }
            },
            Command::Send { out, queue, reply } => {
                if !matches!(self.machine.state(), State::Open { .. }) {
                    if queue {
                        self.outbox.push_back((out, reply));
                    } else {
                        let _ = reply.send(Err(SendError::NotOpen(self.name.to_string())));
                    }
                    return;
                }
                self.send_now(out, reply);
            }
            Command::Settle(reply) => {
                let _ = reply.send(());
            }
            Command::Shutdown(_) => {} // handled by the loop
        }
    }

    fn send_now(&mut self, out: Outgoing, reply: oneshot::Sender<Result<String, SendError>>) {
        {
            {
                let chat = out.chat.clone();
                let id = out.id.clone();
                let fut = self.channel.send(out);
                let bus = self.bus.clone();
                let name = self.name.to_string();
                tokio::spawn(async move {
                    let result = fut.await.map(|()| id.clone()).map_err(SendError::from);
                    if result.is_ok() {
                        bus.publish(HostEvent::MessageOut {
                            instance: name,
                            chat,
                            id,
                        });
                    }
                    let _ = reply.send(result);
                });
            }
        }
    }

    /// Sends what waited for an open, in order.
    fn flush_outbox(&mut self) {
        while matches!(self.machine.state(), State::Open { .. }) {
            let Some((out, reply)) = self.outbox.pop_front() else {
                break;
            };
            self.send_now(out, reply);
        }
    }

    /// Steps the machine with `input` and everything the effects queue up.
    async fn feed(&mut self, input: Input) {
        self.queue.push_back(input);
        while let Some(input) = self.queue.pop_front() {
            let now = now_ms();
            let effects = self.machine.step(input, now);
            // Readers (scripts in hooks this step fires) must already see
            // the new state.
            self.snapshot.send_replace(Snapshot {
                state: self.machine.state().clone(),
                row: self.machine.row(),
            });
            let logging_out = matches!(self.machine.state(), State::LoggingOut { .. });
            for effect in effects {
                self.apply(effect).await;
            }
            if logging_out {
                // Unlink and transport close have run (or failed): finish.
                self.queue.push_back(Input::LogoutDone);
            }
            if !self.outbox.is_empty() {
                if matches!(self.machine.state(), State::LoggedOut { .. }) {
                    // The account is gone: nothing queued can go out any more.
                    for (_, reply) in self.outbox.drain(..) {
                        let _ = reply.send(Err(SendError::NotOpen(self.name.to_string())));
                    }
                } else {
                    self.flush_outbox();
                }
            }
        }
    }

    async fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Persist(row) => self.write(Write::Status(row)),
            Effect::EndSession(row) => {
                self.write(Write::EndSession(row));
                if self.unwritten.is_none() {
                    self.answer_logout_waiters();
                }
            }
            Effect::StartAttempt { attempt } => {
                self.conn += 1;
                self.inbound = true;
                tracing::debug!(instance = %self.name, attempt, conn = self.conn, "dialing");
                self.channel.connect(self.conn);
            }
            Effect::ScheduleTimer { token, delay_ms } => {
                self.timer = Some((token, Instant::now() + Duration::from_millis(delay_ms)));
            }
            Effect::CancelTimer { token } => {
                if self.timer.is_some_and(|(t, _)| t == token) {
                    self.timer = None;
                }
            }
            Effect::StopInbound => self.inbound = false,
            Effect::Unlink => {
                match tokio::time::timeout(self.settings.unlink_timeout, self.channel.unlink())
                    .await
                {
                    Ok(Ok(())) => {
                        tracing::info!(instance = %self.name, "the server unlinked this device")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(instance = %self.name, error = %e, "unlink failed; logging out locally anyway")
                    }
                    Err(_) => {
                        tracing::warn!(instance = %self.name, timeout = ?self.settings.unlink_timeout, "unlink timed out; logging out locally anyway")
                    }
                }
            }
            Effect::CloseTransport => {
                // Whatever the old connection still says is late news now.
                self.conn += 1;
                self.channel.close();
            }
            Effect::Hook(call) => self.hook(call),
            Effect::Emit(transition) => {
                tracing::info!(instance = %self.name, "{transition}");
                self.bus.publish(HostEvent::State {
                    instance: self.name.to_string(),
                    transition,
                    row: self.machine.row(),
                });
            }
        }
    }

    fn hook(&mut self, call: HookCall) {
        if let HookCall::Qr {
            code,
            kind,
            expires_in_ms,
        } = &call
        {
            self.bus.publish(HostEvent::Qr {
                instance: self.name.to_string(),
                code: code.clone(),
                kind: kind.as_str(),
                expires_in_ms: *expires_in_ms,
            });
        }
        let seq = match &call {
            HookCall::Close {
                answer_seq: Some(seq),
                ..
            } => Some(*seq),
            _ => None,
        };
        let answer = self.hooks.lifecycle(&self.handle, &call);
        let Some(seq) = seq else { return };
        match answer {
            None => self.queue.push_back(Input::CloseAnswer {
                seq,
                answer: CloseAnswer::Default,
            }),
            Some(rx) => {
                let tx = self.answers_tx.clone();
                // The engine answers as soon as a script decides and bounds
                // every hook itself; this only guards against an engine that
                // is stuck (jobs queued ahead count too, hence the margin).
                let wait = self.settings.hook_timeout * 5 + Duration::from_secs(1);
                let name = self.name.clone();
                tokio::spawn(async move {
                    let answer = match tokio::time::timeout(wait, rx).await {
                        Ok(Ok(a)) => a,
                        Ok(Err(_)) => CloseAnswer::Default,
                        Err(_) => {
                            tracing::warn!(instance = %name, "on_close did not answer in time; using the default");
                            CloseAnswer::Default
                        }
                    };
                    let _ = tx.send((seq, answer));
                });
            }
        }
    }

    /// Writes now; on failure keeps the newest row and retries until it lands.
    fn write(&mut self, w: Write) {
        // A pending session delete must survive a newer plain status write.
        let w = match (self.unwritten.take(), w) {
            (Some(Write::EndSession(_)), Write::Status(row)) => Write::EndSession(row),
            (_, w) => w,
        };
        let result = match &w {
            Write::Status(row) => self.store.write_status(&self.name, row),
            Write::EndSession(row) => self.store.end_session(&self.name, row),
        };
        if let Err(e) = result {
            tracing::error!(instance = %self.name, error = %e, "status write failed; will retry");
            self.unwritten = Some(w);
            self.retry_at = Some(Instant::now() + self.settings.write_retry);
        }
    }

    fn retry_write(&mut self) {
        if let Some(w) = self.unwritten.take() {
            self.write(w);
            if self.unwritten.is_none() {
                tracing::info!(instance = %self.name, "status write succeeded on retry");
                self.answer_logout_waiters();
            }
        }
    }

    fn answer_logout_waiters(&mut self) {
        if matches!(self.machine.state(), State::LoggedOut { .. }) {
            let row = self.machine.row();
            for w in self.logout_waiters.drain(..) {
                let _ = w.send(row.clone());
            }
        }
    }

    /// Before the actor ends, a failed write gets a few more tries.
    async fn flush_writes_before_exit(&mut self) {
        for _ in 0..10 {
            if self.unwritten.is_none() {
                return;
            }
            tokio::time::sleep(self.settings.write_retry).await;
            self.retry_write();
        }
        if self.unwritten.is_some() {
            tracing::error!(instance = %self.name, "giving up on a status write at shutdown; the next start reconciles the row");
        }
    }
}

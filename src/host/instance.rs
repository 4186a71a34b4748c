//! One instance's actor: feeds channel events, commands, timers and script
//! answers into the machine, and carries out its effects in order.

mod flow;
mod groups;
mod handle;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::delivery::{Delivery, SendDone};
use super::{EventBus, Hooks, HostEvent, HostSettings, now_ms};
use crate::channel::{Channel, ChannelError, ChannelEvent, EventKind, GroupEvent};
use crate::lifecycle::{
    CloseAnswer, Effect, HookCall, Input, Machine, Reason, ReasonKind, State, StatusRow,
};
use crate::store::{Store, StoreError};
pub use groups::{FRESH_FOR, GROUP_CALL_TIMEOUT, GroupCache};

use handle::Command;
pub use handle::{InstanceHandle, SendError, Snapshot};

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
    /// The inbox and outbox (host/delivery.rs).
    delivery: Delivery,
    /// Whether the last step left the instance open.
    was_open: bool,
    /// `settle()` callers waiting for an `on_close` decision to come back.
    settle_waiters: Vec<oneshot::Sender<()>>,
    /// Sends in flight, awaited one after another so they leave in order.
    sends: mpsc::UnboundedSender<Outbound>,
    /// Group events that arrived before the open (the offline backlog
    /// comes before `Connected`): delivered at the next open, after the
    /// inbox backlog.
    early_groups: Vec<GroupEvent>,
    /// The row is gone (the instance was deleted): no write can ever land,
    /// so the actor ends instead of retrying for ever.
    gone: bool,
}

/// The longest close message kept: it reaches the row, the log, the API and
/// scripts, and a server or library may say a lot.
const MAX_REASON_MESSAGE: usize = 500;

/// Cuts `message` to [`MAX_REASON_MESSAGE`] bytes on a character boundary.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_REASON_MESSAGE {
        let mut end = MAX_REASON_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// The reason a state carries, if any.
fn reason_of(state: &State) -> Option<&Reason> {
    match state {
        State::Reconnecting { reason, .. }
        | State::Closed { reason, .. }
        | State::LoggedOut { reason, .. } => Some(reason),
        _ => None,
    }
}

/// Channel events handled in one go: consecutive messages among them are
/// committed to the inbox in one transaction.
const EVENT_BATCH: usize = 256;

struct PendingSend {
    fut: crate::channel::BoxFuture<Result<(), ChannelError>>,
    seq: i64,
}

/// What the sender task takes, in order.
enum Outbound {
    Send(PendingSend),
    /// A group call: started once the sends handed over before it are
    /// written, so it never overtakes them on the wire; it runs beside the
    /// sends after it (its answer may take long).
    Group(crate::channel::BoxFuture<()>),
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
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let handle = InstanceHandle {
        name: name.clone(),
        tx,
        snapshot: snap_rx,
        groups: Arc::default(),
    };
    let mut delivery = Delivery::new(name.clone(), store.clone(), bus.clone(), settings.retention);
    delivery.set_scope(channel.inbox_scope());
    if !settings.inbox {
        delivery.bypass_inbox();
    }
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
        delivery,
        was_open: false,
        settle_waiters: Vec::new(),
        sends: spawn_sender(done_tx),
        early_groups: Vec::new(),
        gone: false,
    };
    let task = tokio::spawn(async move {
        loop {
            let timer_at = actor.timer.map(|(_, at)| at);
            let retry_at = actor.retry_at;
            tokio::select! {
                biased;
                Some(ev) = events.recv() => {
                    let mut batch = vec![ev];
                    while batch.len() < EVENT_BATCH
                        && let Ok(ev) = events.try_recv()
                    {
                        batch.push(ev);
                    }
                    actor.on_events(batch).await
                }
                Some(d) = done.recv() => {
                    let mut batch = vec![d];
                    while let Ok(d) = done.try_recv() {
                        batch.push(d);
                    }
                    actor.sends_done(batch)
                }
                Some((seq, answer)) = answers.recv() => {
                    actor.feed(Input::CloseAnswer { seq, answer }).await
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        actor.feed(Input::Stop).await;
                        actor.close_channel().await;
                        actor.flush_writes_before_exit().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => actor.on_command(cmd).await,
                    None => {
                        actor.feed(Input::Stop).await;
                        actor.close_channel().await;
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
            if actor.gone {
                actor.end_gone().await;
                break;
            }
        }
    });
    (handle, task)
}

/// One task per instance awaits sends in the order they were handed over
/// and tells the actor how each went.
fn spawn_sender(done: mpsc::UnboundedSender<SendDone>) -> mpsc::UnboundedSender<Outbound> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            match item {
                Outbound::Send(p) => {
                    let result = p.fut.await;
                    let _ = done.send(SendDone { seq: p.seq, result });
                }
                Outbound::Group(call) => {
                    tokio::spawn(call);
                }
            }
        }
    });
    tx
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    async fn on_event(&mut self, kind: EventKind) {
        let input = match kind {
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
            EventKind::Opened { jid, push_name } => {
                self.handle.forget_groups();
                Input::Opened { jid, push_name }
            }
            EventKind::AccountId { jid, push_name } => Input::AccountId { jid, push_name },
            EventKind::Closed {
                code,
                kind,
                message,
                retry_after_ms,
            } => Input::Closed {
                code,
                kind,
                message: message.map(bounded),
                retry_after_ms,
            },
            // Committed by the channel: handed now if open, else at the
            // next open with the rest of the backlog.
            EventKind::Inbox { seq, message } => {
                if self.inbound && matches!(self.machine.state(), State::Open { .. }) {
                    self.hand(seq, message);
                }
                return;
            }
            EventKind::InboxFailed { n } => {
                self.bus.metrics().inbox_commit_failed(n as u64);
                return;
            }
            EventKind::SendAcked { id, error } => {
                self.delivery.acked(&id, error);
                return;
            }
            EventKind::Message(_) => return, // batched in on_events
            EventKind::Receipt(r) => {
                if self.inbound && matches!(self.machine.state(), State::Open { .. }) {
                    self.hooks.receipt(&self.handle, r);
                }
                return;
            }
            EventKind::Group(ev) => {
                self.on_group_event(*ev);
                return;
            }
        };
        self.feed(input).await;
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect => {
                if matches!(self.unwritten, Some(Write::EndSession(_))) {
                    // Keys of a new pairing must not be caught by the
                    // logout's delete that is still being retried.
                    tracing::warn!(instance = %self.name, "connect refused: the logout is still being written; try again shortly");
                    return;
                }
                self.feed(Input::Connect).await
            }
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
                let accept = match self.machine.state() {
                    State::Open { .. } => true,
                    // No account to send from until someone pairs again.
                    State::LoggingOut { .. } | State::LoggedOut { .. } => false,
                    _ => queue,
                };
                if !accept {
                    let _ = reply.send(Err(SendError::NotOpen(self.name.to_string())));
                    return;
                }
                match self.delivery.insert(&out) {
                    Ok(seq) => {
                        let _ = reply.send(Ok(out.id.clone()));
                        self.delivery.enqueue(seq, out);
                        self.flush_outbox();
                    }
                    Err(e) => {
                        tracing::error!(instance = %self.name, error = %e, "the outbox refused a send");
                        let _ = reply.send(Err(SendError::Store(e.to_string())));
                    }
                }
            }
            Command::Queued { seq, out } => match self.machine.state() {
                State::LoggingOut { .. } | State::LoggedOut { .. } => {
                    self.delivery.refuse(seq, out, "logged out")
                }
                _ => {
                    self.delivery.enqueue(seq, out);
                    self.flush_outbox();
                }
            },
            Command::Act { action, reply } => {
                if !matches!(self.machine.state(), State::Open { .. }) {
                    let _ = reply.send(Err(SendError::NotOpen(self.name.to_string())));
                    return;
                }
                // Not in the send queue: a download must not hold up sends.
                let fut = self.channel.act(action);
                let mut reply = reply;
                tokio::spawn(async move {
                    // Whoever asked may give up (a handler past its
                    // deadline): the transfer stops with it.
                    tokio::select! {
                        r = fut => {
                            let _ = reply.send(r.map_err(SendError::from));
                        }
                        () = reply.closed() => {}
                    }
                });
            }
            Command::Group { op, reply } => self.group_call(op, reply),
            // A decision on its way back from the scripts is pending work.
            Command::Settle(reply) if self.machine.deciding() => self.settle_waiters.push(reply),
            Command::Settle(reply) => {
                let _ = reply.send(());
            }
            Command::Shutdown(_) => {} // handled by the loop
        }
    }

    /// Hands the group events held while connecting to the scripts, in
    /// order.
    fn deliver_early_groups(&mut self) {
        for ev in std::mem::take(&mut self.early_groups) {
            self.deliver_group(ev);
        }
    }

    /// Steps the machine with `input` and everything the effects queue up.
    async fn feed(&mut self, input: Input) {
        self.queue.push_back(input);
        while !self.gone
            && let Some(input) = self.queue.pop_front()
        {
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
            let open = matches!(self.machine.state(), State::Open { .. });
            if self.was_open && !open {
                self.delivery.connection_ended();
            }
            if matches!(self.machine.state(), State::LoggedOut { .. }) {
                // The account is gone: nothing queued can go out any more,
                // and nothing held may reach the next account's scripts.
                self.delivery.fail_all("logged out");
                self.delivery.forget_inbound();
                self.early_groups.clear();
            } else if open && !self.was_open {
                // The backlog (what arrived while away, what a crash cut
                // short) first, then what waited to be sent.
                self.was_open = true;
                self.hand_backlog();
                self.deliver_early_groups();
                self.delivery.release_hold();
                self.flush_outbox();
            }
            self.was_open = open;
        }
        if !self.machine.deciding() {
            for w in self.settle_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    async fn apply(&mut self, effect: Effect) {
        if self.gone {
            return; // nothing of a deleted instance may dial or call hooks
        }
        match effect {
            Effect::Persist(row) => self.write(Write::Status(row)),
            Effect::EndSession(row) => {
                self.write(Write::EndSession(row.clone()));
                if self.unwritten.is_none() {
                    self.answer_logout_waiters(row);
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
            // A device that was never paired is listed on no phone: there
            // is nothing to unlink and nobody to warn.
            Effect::Unlink if !self.channel.is_paired() => {
                tracing::debug!(instance = %self.name, "never paired; nothing to unlink")
            }
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
                let reason = reason_of(&transition.state);
                let cause = reason.and_then(|r| r.message.as_deref());
                // A failed dial is worth a warning with its cause (DNS,
                // refused, TLS...): nothing else tells why it keeps trying.
                match (reason.map(|r| r.kind), cause) {
                    (Some(ReasonKind::TransportError), c) => {
                        tracing::warn!(instance = %self.name, cause = c.unwrap_or("unknown"), "{transition}")
                    }
                    (_, Some(c)) => {
                        tracing::info!(instance = %self.name, cause = c, "{transition}")
                    }
                    (_, None) => tracing::info!(instance = %self.name, "{transition}"),
                }
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
        match result {
            Ok(()) => {}
            Err(StoreError::NoSuchInstance(_)) => {
                tracing::error!(instance = %self.name, "the instance's row is gone (deleted); stopping it");
                self.gone = true;
            }
            Err(e) => {
                tracing::error!(instance = %self.name, error = %e, "status write failed; will retry");
                self.unwritten = Some(w);
                self.retry_at = Some(Instant::now() + self.settings.write_retry);
            }
        }
    }

    /// The row is gone: close the connection, answer whoever waits with
    /// the last state, and let the actor end.
    async fn end_gone(&mut self) {
        self.timer = None;
        self.retry_at = None;
        self.channel.close();
        self.close_channel().await;
        let row = self.machine.row();
        self.answer_logout_waiters(row);
        for w in self.settle_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn retry_write(&mut self) {
        self.flush_outbox();
        self.arm_hold();
        if self.delivery.has_uncommitted() {
            let new = self.delivery.retry();
            self.hand_new(new);
            self.delivery.flush_marks();
            if self.delivery.has_uncommitted() {
                self.retry_at = Some(Instant::now() + self.settings.write_retry);
            }
        }
        if let Some(w) = self.unwritten.take() {
            let ended = match &w {
                Write::EndSession(row) => Some(row.clone()),
                Write::Status(_) => None,
            };
            self.write(w);
            if self.unwritten.is_none() {
                tracing::info!(instance = %self.name, "status write succeeded on retry");
                if let Some(row) = ended {
                    self.answer_logout_waiters(row);
                }
            }
        }
    }

    /// The logout's one transaction has landed: whoever waits is answered,
    /// whatever happened since.
    fn answer_logout_waiters(&mut self, row: StatusRow) {
        for w in self.logout_waiters.drain(..) {
            let _ = w.send(row.clone());
        }
    }

    /// Lets the channel flush its library state, bounded so a hung server
    /// cannot hold up a shutdown.
    async fn close_channel(&mut self) {
        let pending = self.delivery.pending_sends();
        if pending > 0 {
            tracing::info!(instance = %self.name, pending, "stopping with sends not out yet; they wait in the outbox for the next start");
        }
        if tokio::time::timeout(Duration::from_secs(10), self.channel.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(instance = %self.name, "the channel did not finish closing within 10 s");
        }
    }

    /// Before the actor ends, a failed write gets a few more tries.
    async fn flush_writes_before_exit(&mut self) {
        for _ in 0..10 {
            if self.unwritten.is_none() || self.gone {
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

//! The actor's side of durable delivery: which inbox rows go to the
//! scripts and when, and the outbox's queue, in flight and awaiting the
//! server's confirmation.
//!
//! Inbound. Every message is in the inbox before scripts see it: the
//! channel commits it before its ack ([`EventKind::Inbox`]), or the actor
//! commits what a channel could not hold back ([`EventKind::Message`]),
//! batched. Rows are handed in `seq` order, each once per process: a row
//! goes to the scripts only if its `seq` is above every one handed before
//! (`handed_max`). While the instance is not open nothing is handed; at
//! each open the unhandled rows above `handed_max` go first, oldest first,
//! then live ones. The scripts mark a row handled once all its handlers
//! started (`HostActions::message_started`), so a row a crash cut short is
//! handed again at the next start and one that was handled never is.
//!
//! Outbound. Every send is an outbox row before its id is given out. The
//! actor hands queued rows to one sender task in order while open; a send
//! is `sent` once out (or, for a channel that confirms sends, once the
//! server acked it: until then a reconnect sends it again under the same
//! id), `failed` once refused for good or after [`MAX_SEND_ATTEMPTS`].
//!
//! [`EventKind::Inbox`]: crate::channel::EventKind::Inbox
//! [`EventKind::Message`]: crate::channel::EventKind::Message

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EventBus, HostEvent, now_ms};
use crate::channel::{ChannelError, Incoming, Outgoing};
use crate::store::{InboxItem, OutboxItem, SendOutcome, Store, StoreError};

/// A send that failed this often for reasons that may pass (the connection
/// dropped) is given up on.
pub const MAX_SEND_ATTEMPTS: u32 = 5;

/// After a send failed for a reason that may pass, the queue waits this
/// long (or for the next open) before the next try.
pub const SEND_RETRY: Duration = Duration::from_secs(2);

/// Rows read per query when handing the backlog over.
const REPLAY_PAGE: usize = 500;

/// Pruning runs at start-up, then after this many rows handed (or a tenth
/// of `keep_rows`, if more: the row-count part walks that many rows) or
/// this long.
const PRUNE_EVERY_ROWS: u64 = 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long inbox rows and finished sends are kept (`[store]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_days: u64,
    pub keep_rows: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep_days: 7,
            keep_rows: 100_000,
        }
    }
}

/// A send waiting in the outbox.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub out: Outgoing,
    pub attempts: u32,
}

/// How one send handed to the channel went.
pub(super) struct SendDone {
    pub seq: i64,
    pub result: Result<(), ChannelError>,
}

/// The outbox JSON of a send.
pub fn outbox_item(out: &Outgoing) -> Result<OutboxItem, StoreError> {
    Ok(OutboxItem {
        id: out.id.clone(),
        chat: out.chat.clone(),
        body: serde_json::to_string(out).map_err(|source| StoreError::Json {
            op: "encoding a send",
            source,
        })?,
    })
}

pub(super) struct Delivery {
    name: Arc<str>,
    store: Arc<Store>,
    bus: EventBus,
    retention: Retention,
    /// The highest inbox row handed to the scripts by this process.
    handed_max: i64,
    /// Messages a failed commit left; committed (first) on the next try.
    uncommitted: Vec<Incoming>,
    /// Rows handed but not marked yet, for hooks that do not mark them.
    to_mark: Vec<i64>,
    /// Queued sends not handed to the channel, by outbox `seq`.
    queue: BTreeMap<i64, Queued>,
    /// Handed to the sender task; with the connection they went out on.
    in_flight: BTreeMap<i64, (u64, Queued)>,
    /// Handed to the channel before a logout, not back yet: reported as
    /// they end (one that went out was delivered, not failed).
    orphans: BTreeMap<i64, Queued>,
    /// Written to a channel that confirms sends, not confirmed yet.
    unacked: BTreeMap<i64, Queued>,
    unacked_ids: HashMap<String, i64>,
    /// Confirmations that came before the channel said the send was
    /// written (a fast server), by id.
    early_acks: HashMap<String, Option<String>>,
    /// Set by a send that failed for a reason that may pass: nothing is
    /// handed over before then (or the next open), so a bad moment is not
    /// spent in a loop of tries.
    held_until: Option<Instant>,
    handed_since_prune: u64,
    pruned_at: Instant,
    /// `false`: messages skip the inbox (`HostSettings::inbox`, benches
    /// only); `seq`s are then counted here.
    durable: bool,
    bypass_seq: i64,
    /// Put before each id in the inbox's key ([`Channel::inbox_scope`]).
    ///
    /// [`Channel::inbox_scope`]: crate::channel::Channel::inbox_scope
    scope: Option<String>,
}

impl Delivery {
    /// Loads the sends a previous run left queued, and prunes.
    pub fn new(name: Arc<str>, store: Arc<Store>, bus: EventBus, retention: Retention) -> Delivery {
        let mut d = Delivery {
            name,
            store,
            bus,
            retention,
            handed_max: 0,
            uncommitted: Vec::new(),
            to_mark: Vec::new(),
            queue: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            orphans: BTreeMap::new(),
            unacked: BTreeMap::new(),
            unacked_ids: HashMap::new(),
            early_acks: HashMap::new(),
            held_until: None,
            handed_since_prune: 0,
            pruned_at: Instant::now(),
            durable: true,
            bypass_seq: 0,
            scope: None,
        };
        d.load_queued();
        d.prune();
        d
    }

    fn load_queued(&mut self) {
        let rows = match self.store.outbox_queued(&self.name) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(instance = %self.name, error = %e, "cannot read the outbox; queued sends wait for the next start");
                return;
            }
        };
        let mut unreadable = Vec::new();
        for row in rows {
            match serde_json::from_str::<Outgoing>(&row.body) {
                Ok(out) => {
                    self.queue.insert(
                        row.seq,
                        Queued {
                            out,
                            attempts: row.attempts,
                        },
                    );
                }
                Err(e) => unreadable.push((row.seq, row.id, row.chat, e.to_string())),
            }
        }
        for (seq, id, chat, e) in unreadable {
            self.fail(
                seq,
                id,
                chat,
                format!("the queued send cannot be read back: {e}"),
            );
        }
        if !self.queue.is_empty() {
            tracing::info!(instance = %self.name, queued = self.queue.len(), "sends queued by an earlier run wait for the next open");
        }
    }

    // ---------------------------------------------------------------
    // Inbound

    /// Keys messages by `scope` + id from now on.
    pub fn set_scope(&mut self, scope: Option<String>) {
        self.scope = scope;
    }

    /// Messages skip the inbox from now on (to measure what it costs).
    pub fn bypass_inbox(&mut self) {
        self.durable = false;
        self.bypass_seq = self.store.inbox_last_seq().unwrap_or(0);
    }

    /// Whether messages go through the inbox.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Commits messages no channel committed, after any a failed commit
    /// left; answers the rows that are new, in order. On failure they are
    /// kept for [`Delivery::retry`] and nothing is answered.
    pub fn commit(&mut self, msgs: Vec<Incoming>) -> Vec<(i64, Incoming)> {
        if !self.durable {
            return msgs
                .into_iter()
                .map(|m| {
                    self.bypass_seq += 1;
                    (self.bypass_seq, m)
                })
                .collect();
        }
        self.uncommitted.extend(msgs);
        if self.uncommitted.is_empty() {
            return Vec::new();
        }
        let texts: Result<Vec<String>, _> =
            self.uncommitted.iter().map(serde_json::to_string).collect();
        let texts = match texts {
            Ok(t) => t,
            Err(e) => {
                // Plain strings and numbers: cannot happen; never wedge on it.
                tracing::error!(instance = %self.name, error = %e, "cannot encode messages for the inbox; dropped");
                self.uncommitted.clear();
                return Vec::new();
            }
        };
        let keys: Vec<Cow<'_, str>> = self
            .uncommitted
            .iter()
            .map(|m| match &self.scope {
                Some(scope) => Cow::Owned(format!("{scope}{}", m.id)),
                None => Cow::Borrowed(m.id.as_str()),
            })
            .collect();
        let items: Vec<InboxItem<'_>> = self
            .uncommitted
            .iter()
            .zip(&texts)
            .zip(&keys)
            .map(|((m, t), k)| InboxItem {
                chat: &m.chat,
                sender: &m.sender,
                id: k,
                message: t,
            })
            .collect();
        match self.store.inbox_commit(&self.name, &items, now_ms()) {
            Ok(seqs) => {
                let msgs = std::mem::take(&mut self.uncommitted);
                let before = msgs.len();
                let new: Vec<(i64, Incoming)> = seqs
                    .into_iter()
                    .zip(msgs)
                    .filter_map(|(s, m)| s.map(|s| (s, m)))
                    .collect();
                self.redelivered(before - new.len());
                new
            }
            Err(e) => {
                self.bus
                    .metrics()
                    .inbox_commit_failed(self.uncommitted.len() as u64);
                tracing::error!(instance = %self.name, error = %e, waiting = self.uncommitted.len(), "inbox commit failed; the messages wait and are tried again");
                Vec::new()
            }
        }
    }

    /// Whether messages wait for a commit that failed.
    pub fn has_uncommitted(&self) -> bool {
        !self.uncommitted.is_empty()
    }

    /// Tries a failed commit again.
    pub fn retry(&mut self) -> Vec<(i64, Incoming)> {
        self.commit(Vec::new())
    }

    /// Messages seen before and not handed again.
    pub fn redelivered(&self, n: usize) {
        if n > 0 {
            tracing::debug!(instance = %self.name, n, "messages seen before; not handed again");
            self.bus.metrics().inbox_redelivered(n as u64);
        }
    }

    /// Whether the row `seq` may go to the scripts now (it has not gone
    /// before); if so it counts as handed.
    pub fn take(&mut self, seq: i64) -> bool {
        if seq <= self.handed_max {
            return false;
        }
        self.handed_max = seq;
        self.handed_since_prune += 1;
        true
    }

    /// The next rows of the backlog not handed yet, oldest first (empty
    /// once there are none); `None` for a row that cannot be read back.
    pub fn backlog_page(&mut self) -> Vec<(i64, Option<Incoming>)> {
        let rows = match self
            .store
            .inbox_unhandled(&self.name, self.handed_max, REPLAY_PAGE)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(instance = %self.name, error = %e, "cannot read the inbox; its backlog waits for the next open");
                return Vec::new();
            }
        };
        rows.into_iter()
            .map(|row| match serde_json::from_str::<Incoming>(&row.message) {
                Ok(m) => (row.seq, Some(m)),
                Err(e) => {
                    // Never wedge on a row: pass it and say so.
                    tracing::warn!(instance = %self.name, seq = row.seq, error = %e, "an inbox row cannot be read back; marked handled without scripts");
                    (row.seq, None)
                }
            })
            .collect()
    }

    /// A handed row the hooks will not mark themselves.
    pub fn mark_later(&mut self, seq: i64) {
        self.to_mark.push(seq);
    }

    /// Marks what [`Delivery::mark_later`] collected, and prunes when due.
    pub fn flush_marks(&mut self) {
        if !self.to_mark.is_empty() {
            match self
                .store
                .inbox_mark_handled(&self.name, &self.to_mark, now_ms())
            {
                Ok(()) => self.to_mark.clear(),
                Err(e) => {
                    tracing::warn!(instance = %self.name, error = %e, "marking messages handled failed; tried again later (a restart may hand them again)")
                }
            }
        }
        let every = PRUNE_EVERY_ROWS.max(self.retention.keep_rows / 10);
        if self.handed_since_prune >= every || self.pruned_at.elapsed() >= PRUNE_EVERY {
            self.prune();
        }
    }

    fn prune(&mut self) {
        self.handed_since_prune = 0;
        self.pruned_at = Instant::now();
        let keep_ms = self.retention.keep_days.saturating_mul(86_400_000);
        match self
            .store
            .delivery_prune(&self.name, keep_ms, self.retention.keep_rows, now_ms())
        {
            Ok(p) => {
                if p.unhandled > 0 {
                    tracing::warn!(instance = %self.name, n = p.unhandled, days = self.retention.keep_days, "inbox rows never handled are past the age limit; dropped");
                }
                if p.inbox + p.outbox > 0 {
                    tracing::debug!(instance = %self.name, inbox = p.inbox, outbox = p.outbox, "pruned");
                }
                self.bus
                    .metrics()
                    .delivery_pruned(p.inbox as u64, p.outbox as u64);
            }
            Err(e) => {
                tracing::warn!(instance = %self.name, error = %e, "pruning the inbox failed; tried again later")
            }
        }
    }

    /// The account is gone: nothing held may reach the next one's scripts.
    pub fn forget_inbound(&mut self) {
        self.uncommitted.clear();
        self.to_mark.clear();
    }

    // ---------------------------------------------------------------
    // Outbound

    /// A send in the outbox (row `seq`) to go out in order.
    pub fn enqueue(&mut self, seq: i64, out: Outgoing) {
        self.queue.insert(seq, Queued { out, attempts: 0 });
    }

    /// Queues a send in the outbox now; answers its row.
    pub fn insert(&mut self, out: &Outgoing) -> Result<i64, StoreError> {
        let item = outbox_item(out)?;
        self.store.outbox_insert(&self.name, &item, now_ms())
    }

    /// The next send to hand over on connection `conn`: only once nothing
    /// of an earlier connection is still in flight, so the order holds.
    pub fn next_send(&mut self, conn: u64) -> Option<(i64, Outgoing)> {
        if self.in_flight.values().any(|(c, _)| *c != conn) {
            return None;
        }
        match self.held_until {
            Some(t) if Instant::now() < t => return None,
            Some(_) => self.held_until = None,
            None => {}
        }
        let (seq, q) = self.queue.pop_first()?;
        let out = q.out.clone();
        self.in_flight.insert(seq, (conn, q));
        Some((seq, out))
    }

    /// Records how sends went (one transaction), and reports them.
    /// `confirms`: the channel acks sends later, so "written" is not sent.
    pub fn sends_done(&mut self, done: Vec<SendDone>, confirms: bool, open_conn: Option<u64>) {
        let mut outcomes = Vec::with_capacity(done.len());
        let mut events = Vec::new();
        for d in done {
            if let Some(q) = self.orphans.remove(&d.seq) {
                self.orphan_done(q, d.result, confirms, &mut events);
                continue;
            }
            let Some((conn, q)) = self.in_flight.remove(&d.seq) else {
                continue;
            };
            match d.result {
                Ok(()) if confirms && open_conn == Some(conn) => {
                    let id = q.out.id.clone();
                    self.unacked_ids.insert(id.clone(), d.seq);
                    self.unacked.insert(d.seq, q);
                    if let Some(error) = self.early_acks.remove(&id) {
                        self.acked(&id, error);
                    }
                }
                // Written on a connection that is gone: no ack will come.
                Ok(()) if confirms => {
                    self.retry_later(d.seq, q, "the connection ended", &mut outcomes, &mut events)
                }
                Ok(()) => {
                    outcomes.push((d.seq, SendOutcome::Sent));
                    events.push(self.sent_event(q.out));
                }
                Err(e) if e.is_transient() => {
                    self.retry_later(d.seq, q, &e.to_string(), &mut outcomes, &mut events)
                }
                Err(e) => {
                    let reason = e.to_string();
                    outcomes.push((d.seq, SendOutcome::Failed(reason.clone())));
                    events.push(self.failed_event(q.out, reason));
                }
            }
        }
        self.record(&outcomes);
        for ev in events {
            self.bus.publish(ev);
        }
    }

    /// A send handed over before a logout ended: its row went with the
    /// logout, so only the event says how it went. Written to a channel
    /// that confirms sends, no confirmation can come any more.
    fn orphan_done(
        &self,
        q: Queued,
        result: Result<(), ChannelError>,
        confirms: bool,
        events: &mut Vec<HostEvent>,
    ) {
        match result {
            Ok(()) if !confirms => events.push(self.sent_event(q.out)),
            Ok(()) => events
                .push(self.failed_event(q.out, "logged out before the server confirmed it".into())),
            Err(e) => events.push(self.failed_event(q.out, e.to_string())),
        }
    }

    /// A send that did not get through for a reason that may pass: again
    /// after the next open, unless it has had its tries.
    fn retry_later(
        &mut self,
        seq: i64,
        mut q: Queued,
        why: &str,
        outcomes: &mut Vec<(i64, SendOutcome)>,
        events: &mut Vec<HostEvent>,
    ) {
        q.attempts += 1;
        self.held_until = Some(Instant::now() + SEND_RETRY);
        if q.attempts >= MAX_SEND_ATTEMPTS {
            let reason = format!("gave up after {} attempts: {why}", q.attempts);
            outcomes.push((seq, SendOutcome::Failed(reason.clone())));
            events.push(self.failed_event(q.out, reason));
        } else {
            outcomes.push((seq, SendOutcome::Attempted));
            self.queue.insert(seq, q);
        }
    }

    /// The server confirmed (or refused) the send `id`.
    pub fn acked(&mut self, id: &str, error: Option<String>) {
        let Some(seq) = self.unacked_ids.remove(id) else {
            if self.in_flight.values().any(|(_, q)| q.out.id == id) {
                self.early_acks.insert(id.to_string(), error);
            }
            return; // not ours, or confirmed already
        };
        let Some(q) = self.unacked.remove(&seq) else {
            return;
        };
        let (outcome, ev) = match error {
            None => (SendOutcome::Sent, self.sent_event(q.out)),
            Some(e) => {
                let reason = format!("the server refused it: {e}");
                (
                    SendOutcome::Failed(reason.clone()),
                    self.failed_event(q.out, reason),
                )
            }
        };
        self.record(&[(seq, outcome)]);
        self.bus.publish(ev);
    }

    /// Until when handing sends over waits, if it does.
    pub fn held_until(&self) -> Option<Instant> {
        self.held_until
    }

    /// A new connection: what waited goes at once.
    pub fn release_hold(&mut self) {
        self.held_until = None;
    }

    /// The connection ended: what it never confirmed goes again, in order,
    /// after the next open (without waiting out a hold).
    pub fn connection_ended(&mut self) {
        self.unacked_ids.clear();
        self.early_acks.clear();
        let unacked = std::mem::take(&mut self.unacked);
        let mut outcomes = Vec::new();
        let mut events = Vec::new();
        for (seq, q) in unacked {
            self.retry_later(
                seq,
                q,
                "not confirmed before the connection ended",
                &mut outcomes,
                &mut events,
            );
        }
        self.record(&outcomes);
        for ev in events {
            self.bus.publish(ev);
        }
    }

    /// The account is gone: every send still waiting fails (its row went
    /// with the logout); one the channel holds now ends as it ends.
    pub fn fail_all(&mut self, reason: &str) {
        self.unacked_ids.clear();
        self.early_acks.clear();
        // What the channel holds now is reported when it comes back.
        let in_flight = std::mem::take(&mut self.in_flight);
        self.orphans
            .extend(in_flight.into_iter().map(|(seq, (_, q))| (seq, q)));
        let queued = std::mem::take(&mut self.queue)
            .into_values()
            .chain(std::mem::take(&mut self.unacked).into_values());
        let events: Vec<HostEvent> = queued
            .map(|q| self.failed_event(q.out, reason.to_string()))
            .collect();
        if !events.is_empty() {
            tracing::warn!(instance = %self.name, n = events.len(), "{reason}: queued sends failed");
        }
        for ev in events {
            self.bus.publish(ev);
        }
    }

    /// A send that arrived after the account was gone.
    pub fn refuse(&mut self, seq: i64, out: Outgoing, reason: &str) {
        self.record(&[(seq, SendOutcome::Failed(reason.to_string()))]);
        let ev = self.failed_event(out, reason.to_string());
        self.bus.publish(ev);
    }

    fn fail(&mut self, seq: i64, id: String, chat: String, reason: String) {
        self.record(&[(seq, SendOutcome::Failed(reason.clone()))]);
        self.bus.publish(HostEvent::SendFailed {
            instance: self.name.to_string(),
            id,
            chat,
            reason,
        });
    }

    fn sent_event(&self, out: Outgoing) -> HostEvent {
        HostEvent::MessageOut {
            instance: self.name.to_string(),
            message: Arc::new(out.without_bytes()),
            chat: out.chat,
            id: out.id,
        }
    }

    fn failed_event(&self, out: Outgoing, reason: String) -> HostEvent {
        tracing::warn!(instance = %self.name, id = %out.id, reason = %reason, "send failed");
        HostEvent::SendFailed {
            instance: self.name.to_string(),
            id: out.id,
            chat: out.chat,
            reason,
        }
    }

    fn record(&self, outcomes: &[(i64, SendOutcome)]) {
        if outcomes.is_empty() {
            return;
        }
        if let Err(e) = self.store.outbox_record(&self.name, outcomes, now_ms()) {
            // The rows stay queued: at worst a restart sends them again
            // under the same ids.
            tracing::error!(instance = %self.name, error = %e, "recording sends in the outbox failed");
        }
    }

    /// Sends still waiting (queued, in flight, unconfirmed).
    pub fn pending_sends(&self) -> usize {
        self.queue.len() + self.in_flight.len() + self.unacked.len()
    }
}

//! The actor's side of the inbox and outbox: runs of channel events
//! committed together, inbox rows handed to the scripts in order, queued
//! sends handed to the sender task. What is queued and handed lives in
//! `host/delivery.rs`.

use tokio::time::Instant;

use super::{Actor, Outbound, PendingSend};
use crate::channel::{ChannelEvent, EventKind, Incoming};
use crate::host::HostEvent;
use crate::host::delivery::SendDone;
use crate::lifecycle::State;

impl Actor {
    /// Channel events in arrival order; runs of messages are committed to
    /// the inbox together.
    pub(super) async fn on_events(&mut self, batch: Vec<ChannelEvent>) {
        let mut plain: Vec<Incoming> = Vec::new();
        for ev in batch {
            if ev.conn != self.conn {
                tracing::debug!(instance = %self.name, conn = ev.conn, current = self.conn, "dropping an event of a superseded connection");
                continue;
            }
            match ev.kind {
                EventKind::Message(msg) if self.inbound => plain.push(msg),
                EventKind::Message(msg) => {
                    tracing::debug!(instance = %self.name, id = %msg.id, "inbound stopped; message not handled");
                }
                kind => {
                    if !plain.is_empty() {
                        let new = self.delivery.commit(std::mem::take(&mut plain));
                        self.hand_new(new);
                    }
                    self.on_event(kind).await;
                }
            }
        }
        if !plain.is_empty() || self.delivery.has_uncommitted() {
            let new = self.delivery.commit(plain);
            self.hand_new(new);
        }
        if self.delivery.has_uncommitted() && self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.settings.write_retry);
        }
        self.delivery.flush_marks();
    }

    /// Hands queued sends to the sender task, in order, while open.
    pub(super) fn flush_outbox(&mut self) {
        if !matches!(self.machine.state(), State::Open { .. }) {
            return;
        }
        while let Some((seq, out)) = self.delivery.next_send(self.conn) {
            let pending = PendingSend {
                fut: self.channel.send(out),
                seq,
            };
            if self.sends.send(Outbound::Send(pending)).is_err() {
                // The sender task is gone only when the actor ends.
                tracing::error!(instance = %self.name, "the sender task has stopped; sends wait in the outbox");
                return;
            }
        }
    }

    pub(super) fn sends_done(&mut self, done: Vec<SendDone>) {
        let open = matches!(self.machine.state(), State::Open { .. }).then_some(self.conn);
        self.delivery
            .sends_done(done, self.channel.confirms_sends(), open);
        self.flush_outbox();
        self.arm_hold();
    }

    /// A hold on sends ends by itself: come back then for what waits.
    pub(super) fn arm_hold(&mut self) {
        if let Some(t) = self.delivery.held_until() {
            let t = Instant::from_std(t);
            self.retry_at = Some(self.retry_at.map_or(t, |r| r.min(t)));
        }
    }

    /// Hands rows just committed to the scripts (only while open; others
    /// wait for the next open's backlog).
    pub(super) fn hand_new(&mut self, rows: Vec<(i64, Incoming)>) {
        if !matches!(self.machine.state(), State::Open { .. }) {
            return;
        }
        for (seq, msg) in rows {
            self.hand(seq, msg);
        }
    }

    /// Hands the backlog, oldest first, before anything newer.
    pub(super) fn hand_backlog(&mut self) {
        loop {
            let page = self.delivery.backlog_page();
            if page.is_empty() {
                break;
            }
            for (seq, msg) in page {
                match msg {
                    Some(msg) => self.hand(seq, msg),
                    None if self.delivery.take(seq) => self.delivery.mark_later(seq),
                    None => {}
                }
            }
        }
        self.delivery.flush_marks();
    }

    /// One inbox row to the scripts, once per process.
    pub(super) fn hand(&mut self, seq: i64, msg: Incoming) {
        if !self.delivery.take(seq) {
            self.delivery.redelivered(1);
            return;
        }
        self.bus.publish(HostEvent::MessageIn {
            instance: self.name.to_string(),
            message: msg.clone(),
        });
        if !self.delivery.durable() {
            self.hooks.message(&self.handle, msg);
        } else if !self.hooks.deliver(&self.handle, seq, msg) {
            self.delivery.mark_later(seq);
        }
    }
}

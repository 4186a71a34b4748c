//! Group calls on an instance, and its cache of group metadata.
//!
//! Scripts ask "who are the admins?" on every message a moderation bot
//! sees: the answer comes from memory. Group events keep a cached entry
//! true (participants, roles, subject, settings); an entry older than
//! [`FRESH_FOR`] is asked for again, in case an event was missed, and the
//! cache starts empty at every open (the bot may have been away).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Actor, Command, InstanceHandle, SendError};

/// The most group events held before the open; beyond it they are dropped
/// and logged.
const EARLY_LIMIT: usize = 10_000;
use crate::channel::groups::{Change, GroupAction, GroupEvent, GroupInfo, GroupOp, GroupReply};
use crate::host::HostEvent;
use crate::lifecycle::State;

/// How long cached metadata is trusted without asking the server.
pub const FRESH_FOR: Duration = Duration::from_secs(300);

/// The most groups kept; beyond it the oldest entry goes.
const MAX_ENTRIES: usize = 10_000;

/// How long a group call may take before the caller is told it failed.
pub const GROUP_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One instance's group metadata, by group JID.
#[derive(Debug)]
pub struct GroupCache {
    entries: HashMap<String, (GroupInfo, Instant)>,
    fresh_for: Duration,
}

impl Default for GroupCache {
    fn default() -> GroupCache {
        GroupCache::new(FRESH_FOR)
    }
}

impl GroupCache {
    pub fn new(fresh_for: Duration) -> GroupCache {
        GroupCache {
            entries: HashMap::new(),
            fresh_for,
        }
    }

    /// The cached metadata, if it is fresh at `now`.
    pub fn get(&self, jid: &str, now: Instant) -> Option<GroupInfo> {
        self.entries
            .get(jid)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.fresh_for)
            .map(|(g, _)| g.clone())
    }

    pub fn put(&mut self, info: GroupInfo, now: Instant) {
        if self.entries.len() >= MAX_ENTRIES
            && !self.entries.contains_key(&info.jid)
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(info.jid.clone(), (info, now));
    }

    /// Keeps a cached entry true to what happened. The bot leaving (or
    /// being removed) and a group created anew drop the entry: there is
    /// nothing true to keep, and the next `info` asks.
    pub fn apply(&mut self, ev: &GroupEvent, own: Option<&str>) {
        let gone = ev.action == GroupAction::Create
            || (ev.action == GroupAction::Remove
                && own.is_some_and(|me| ev.participants.iter().any(|p| p == me)));
        if gone {
            self.entries.remove(&ev.chat);
        } else if let Some((g, _)) = self.entries.get_mut(&ev.chat) {
            g.apply(ev);
        }
    }

    pub fn forget(&mut self, jid: &str) {
        self.entries.remove(jid);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl InstanceHandle {
    fn cache(&self) -> std::sync::MutexGuard<'_, GroupCache> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group call: `Info` from the cache when it is fresh, anything
    /// else through the channel (only while open). What the answer says
    /// goes into the cache.
    pub async fn group(&self, op: GroupOp) -> Result<GroupReply, SendError> {
        if let GroupOp::Info(jid) = &op
            && let Some(info) = self.cache().get(jid, Instant::now())
        {
            return Ok(GroupReply::Info(info));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Group {
                op: op.clone(),
                reply,
            })
            .map_err(|_| SendError::Gone(self.name.to_string()))?;
        let answer = match tokio::time::timeout(GROUP_CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(SendError::Gone(self.name.to_string())),
            Err(_) => {
                return Err(SendError::Channel(crate::channel::ChannelError::Protocol(
                    format!(
                        "the server did not answer within {} s",
                        GROUP_CALL_TIMEOUT.as_secs()
                    ),
                )));
            }
        };
        self.remember(&op, &answer);
        Ok(answer)
    }

    /// The cache takes in what a call's answer says.
    fn remember(&self, op: &GroupOp, answer: &GroupReply) {
        let now = Instant::now();
        let own = self.snapshot().row.jid;
        let mut cache = self.cache();
        match (op, answer) {
            (_, GroupReply::Info(info)) => cache.put(info.clone(), now),
            (_, GroupReply::List(all)) => {
                for g in all {
                    cache.put(g.clone(), now);
                }
            }
            (GroupOp::Leave(jid), _) => cache.forget(jid),
            (GroupOp::SetSubject { jid, subject }, _) => cache.apply(
                &GroupEvent {
                    chat: jid.clone(),
                    action: GroupAction::Subject,
                    participants: Vec::new(),
                    by: own.clone(),
                    value: Some(subject.clone()),
                },
                own.as_deref(),
            ),
            (GroupOp::Participants { jid, change, .. }, GroupReply::Changed(results)) => {
                let done: Vec<String> = results
                    .iter()
                    .filter(|r| r.error.is_none())
                    .map(|r| r.jid.clone())
                    .collect();
                if !done.is_empty() {
                    cache.apply(
                        &GroupEvent {
                            chat: jid.clone(),
                            action: Change::action(*change),
                            participants: done,
                            by: own.clone(),
                            value: None,
                        },
                        own.as_deref(),
                    );
                }
            }
            _ => {}
        }
    }

    /// A group event reached the instance.
    pub(super) fn group_event(&self, ev: &GroupEvent) {
        let own = self.snapshot().row.jid;
        self.cache().apply(ev, own.as_deref());
    }

    /// The connection (re)opened: what was cached may have missed changes.
    pub(super) fn forget_groups(&self) {
        self.cache().clear();
    }

    /// How many groups are cached (tests, metrics).
    pub fn cached_groups(&self) -> usize {
        self.cache().len()
    }
}

impl Actor {
    /// A group event: into the cache at once; to the bus and the scripts
    /// while open, held for the open before it (the offline backlog comes
    /// before "connected"), dropped once inbound stopped.
    pub(super) fn on_group_event(&mut self, ev: GroupEvent) {
        self.handle.group_event(&ev);
        match self.machine.state() {
            _ if !self.inbound => {
                tracing::debug!(instance = %self.name, chat = %ev.chat, "inbound stopped; group event not handled");
            }
            State::Open { .. } => self.deliver_group(ev),
            _ if self.early_groups.len() < EARLY_LIMIT => self.early_groups.push(ev),
            _ => {
                tracing::warn!(instance = %self.name, chat = %ev.chat, "too many group events before the session opened; dropped");
            }
        }
    }

    pub(super) fn deliver_group(&mut self, ev: GroupEvent) {
        self.bus.publish(HostEvent::Group {
            instance: self.name.to_string(),
            event: ev.clone(),
        });
        self.hooks.group(&self.handle, ev);
    }

    /// Runs a group call off the send queue, only while open; the caller
    /// may give up (a handler past its deadline), which ends the call.
    pub(super) fn group_call(
        &mut self,
        op: GroupOp,
        reply: oneshot::Sender<Result<GroupReply, SendError>>,
    ) {
        if !matches!(self.machine.state(), State::Open { .. }) {
            let _ = reply.send(Err(SendError::NotOpen(self.name.to_string())));
            return;
        }
        let fut = self.channel.group(op);
        let mut reply = reply;
        let call = Box::pin(async move {
            tokio::select! {
                r = fut => {
                    let _ = reply.send(r.map_err(SendError::from));
                }
                () = reply.closed() => {}
            }
        });
        // Behind the sends handed over before it (see `Outbound::Group`).
        if let Err(back) = self.sends.send(super::Outbound::Group(call)) {
            // The sender task ends only with the actor; never drop a call.
            if let super::Outbound::Group(call) = back.0 {
                tokio::spawn(call);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::groups::Participant;

    fn info(jid: &str) -> GroupInfo {
        GroupInfo {
            jid: jid.into(),
            subject: "Team".into(),
            participants: vec![Participant {
                jid: "me@s.whatsapp.net".into(),
                ..Participant::default()
            }],
            ..GroupInfo::default()
        }
    }

    fn ev(action: GroupAction, who: &str) -> GroupEvent {
        GroupEvent {
            chat: "g@g.us".into(),
            action,
            participants: vec![who.into()],
            by: None,
            value: None,
        }
    }

    #[test]
    fn entries_are_fresh_for_the_bound_only() {
        let t0 = Instant::now();
        let mut c = GroupCache::new(Duration::from_secs(10));
        c.put(info("g@g.us"), t0);
        assert!(c.get("g@g.us", t0 + Duration::from_secs(9)).is_some());
        assert!(c.get("g@g.us", t0 + Duration::from_secs(10)).is_none());
        assert!(c.get("other@g.us", t0).is_none());
    }

    #[test]
    fn events_patch_entries_and_the_bot_leaving_drops_them() {
        let t0 = Instant::now();
        let mut c = GroupCache::default();
        c.put(info("g@g.us"), t0);
        c.apply(
            &ev(GroupAction::Add, "x@s.whatsapp.net"),
            Some("me@s.whatsapp.net"),
        );
        c.apply(
            &ev(GroupAction::Promote, "x@s.whatsapp.net"),
            Some("me@s.whatsapp.net"),
        );
        let g = c.get("g@g.us", t0).unwrap();
        assert!(g.is_admin("x@s.whatsapp.net"));
        c.apply(
            &ev(GroupAction::Remove, "x@s.whatsapp.net"),
            Some("me@s.whatsapp.net"),
        );
        assert!(c.get("g@g.us", t0).is_some(), "someone else left");
        c.apply(
            &ev(GroupAction::Remove, "me@s.whatsapp.net"),
            Some("me@s.whatsapp.net"),
        );
        assert!(c.get("g@g.us", t0).is_none(), "the bot left");
        c.put(info("g@g.us"), t0);
        c.apply(&ev(GroupAction::Create, "me@s.whatsapp.net"), None);
        assert!(c.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = GroupCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.put(
                info(&format!("{i}@g.us")),
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(c.get("0@g.us", t0).is_none(), "the oldest went first");
    }
}

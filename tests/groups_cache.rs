//! The instance's group metadata cache, through the real host with a
//! channel that counts the server round trips: a moderation bot asking
//! for the admins on every message costs one query, group events keep the
//! answer true, and an open starts afresh. (The freshness bound itself is
//! unit-tested on the cache, with explicit instants.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moonwire::channel::Incoming;
use moonwire::channel::groups::{
    Change, GroupAction, GroupEvent, GroupInfo, GroupOp, GroupReply, Participant, UserResult,
};
use moonwire::channel::{BoxFuture, Channel, ChannelError, ChannelEvent, EventKind, Outgoing};
use moonwire::host::{EventBus, Hooks, Host, HostEvent, HostSettings, InstanceHandle};
use moonwire::lifecycle::{CloseAnswer, HookCall, StateName};
use moonwire::store::Store;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

const G: &str = "120363000000000001@g.us";
const ME: &str = "15550000000@s.whatsapp.net";
const ANN: &str = "15550001111@s.whatsapp.net";

/// Opens at once; answers group calls from a fixed group and counts them.
struct Counting {
    events: UnboundedSender<ChannelEvent>,
    calls: Arc<AtomicUsize>,
    conn: Arc<Mutex<u64>>,
    /// Sends this group event before the open, as the offline backlog does.
    early: Option<GroupEvent>,
}

fn group() -> GroupInfo {
    GroupInfo {
        jid: G.into(),
        subject: "Team".into(),
        participants: vec![
            Participant {
                jid: ME.into(),
                admin: true,
                super_admin: true,
            },
            Participant {
                jid: ANN.into(),
                ..Participant::default()
            },
        ],
        ..GroupInfo::default()
    }
}

impl Channel for Counting {
    fn connect(&mut self, conn: u64) {
        *self.conn.lock().unwrap() = conn;
        if let Some(ev) = self.early.take() {
            let _ = self.events.send(ChannelEvent {
                conn,
                kind: EventKind::Group(Box::new(ev)),
            });
        }
        let _ = self.events.send(ChannelEvent {
            conn,
            kind: EventKind::Opened {
                jid: Some(ME.into()),
                push_name: None,
            },
        });
    }
    fn close(&mut self) {}
    fn unlink(&mut self) -> BoxFuture<Result<(), ChannelError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn send(&mut self, _: Outgoing) -> BoxFuture<Result<(), ChannelError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn group(&mut self, op: GroupOp) -> BoxFuture<Result<GroupReply, ChannelError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = match op {
            GroupOp::Info(j) if j == G => Ok(GroupReply::Info(group())),
            GroupOp::Info(_) => Err(ChannelError::Protocol("404 item-not-found".into())),
            GroupOp::Participants { users, .. } => Ok(GroupReply::Changed(
                users
                    .into_iter()
                    .map(|jid| UserResult { jid, error: None })
                    .collect(),
            )),
            _ => Err(ChannelError::Unsupported),
        };
        Box::pin(std::future::ready(r))
    }
}

/// Records the group events handed to the scripts.
#[derive(Default)]
struct Recording(Mutex<Vec<GroupEvent>>);

impl Hooks for Recording {
    fn lifecycle(
        &self,
        _: &InstanceHandle,
        _: &HookCall,
    ) -> Option<oneshot::Receiver<CloseAnswer>> {
        None
    }
    fn message(&self, _: &InstanceHandle, _: Incoming) {}
    fn group(&self, _: &InstanceHandle, ev: GroupEvent) {
        self.0.lock().unwrap().push(ev);
    }
    fn settle(&self) -> BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }
}

struct Rig {
    host: Host,
    hooks: Arc<Recording>,
    handle: InstanceHandle,
    calls: Arc<AtomicUsize>,
    events: UnboundedSender<ChannelEvent>,
    conn: Arc<Mutex<u64>>,
}

async fn rig() -> Rig {
    rig_with(None).await
}

async fn rig_with(early: Option<GroupEvent>) -> Rig {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let hooks = Arc::new(Recording::default());
    let host = Host::new(
        store,
        hooks.clone(),
        EventBus::default(),
        HostSettings::default(),
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let conn = Arc::new(Mutex::new(0));
    let slot = Arc::new(Mutex::new(None));
    let (c, k, s) = (calls.clone(), conn.clone(), slot.clone());
    let handle = host
        .add_instance("i", "fake", move |events| {
            *s.lock().unwrap() = Some(events.clone());
            Box::new(Counting {
                events,
                calls: c,
                conn: k,
                early,
            })
        })
        .unwrap();
    handle.connect();
    let mut watch = handle.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|s| s.state.name() == StateName::Open),
    )
    .await
    .expect("open in time")
    .unwrap();
    let events = slot.lock().unwrap().clone().unwrap();
    Rig {
        host,
        hooks,
        handle,
        calls,
        events,
        conn,
    }
}

impl Rig {
    async fn info(&self) -> GroupInfo {
        match self.handle.group(GroupOp::Info(G.into())).await.unwrap() {
            GroupReply::Info(g) => g,
            other => panic!("{other:?}"),
        }
    }

    async fn event(&self, kind: EventKind) {
        let conn = *self.conn.lock().unwrap();
        self.events.send(ChannelEvent { conn, kind }).unwrap();
        self.host.settle().await;
    }
}

fn ev(action: GroupAction, who: &str) -> GroupEvent {
    GroupEvent {
        chat: G.into(),
        action,
        participants: vec![who.into()],
        by: Some(ME.into()),
        value: None,
    }
}

#[tokio::test]
async fn asking_for_the_admins_on_every_message_costs_one_query() {
    let r = rig().await;
    for _ in 0..100 {
        assert!(r.info().await.is_admin(ME));
    }
    assert_eq!(r.calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.handle.cached_groups(), 1);
    // An unknown group is an error each time, and nothing is cached for it.
    assert!(
        r.handle
            .group(GroupOp::Info("x@g.us".into()))
            .await
            .is_err()
    );
    assert_eq!(r.handle.cached_groups(), 1);
    r.host.shutdown().await;
}

#[tokio::test]
async fn group_events_and_the_bots_own_changes_keep_the_cache_true() {
    let r = rig().await;
    r.info().await;
    r.event(EventKind::Group(Box::new(ev(GroupAction::Promote, ANN))))
        .await;
    assert!(r.info().await.is_admin(ANN), "the event patched the cache");
    r.handle
        .group(GroupOp::Participants {
            jid: G.into(),
            change: Change::Remove,
            users: vec![ANN.into()],
        })
        .await
        .unwrap();
    assert!(
        r.info().await.participant(ANN).is_none(),
        "the bot's own change is in the cache before any event"
    );
    r.event(EventKind::Group(Box::new(GroupEvent {
        value: Some("Renamed".into()),
        ..ev(GroupAction::Subject, ANN)
    })))
    .await;
    assert_eq!(r.info().await.subject, "Renamed");
    // One query for the first info, one for the change; none since.
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    // The bot removed from the group: nothing true is left to keep.
    r.event(EventKind::Group(Box::new(ev(GroupAction::Remove, ME))))
        .await;
    assert_eq!(r.handle.cached_groups(), 0);
    r.host.shutdown().await;
}

#[tokio::test]
async fn a_new_open_starts_with_an_empty_cache() {
    let r = rig().await;
    r.info().await;
    let conn = *r.conn.lock().unwrap();
    r.event(EventKind::Closed {
        code: Some(408),
        kind: None,
        message: None,
        retry_after_ms: None,
    })
    .await;
    let mut watch = r.handle.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|s| s.state.name() == StateName::Open),
    )
    .await
    .expect("open again")
    .unwrap();
    assert_ne!(*r.conn.lock().unwrap(), conn, "a new connection");
    r.host.settle().await;
    assert_eq!(r.handle.cached_groups(), 0);
    r.info().await;
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    r.host.shutdown().await;
}

#[tokio::test]
async fn group_events_reach_the_bus() {
    let r = rig().await;
    let mut rx = r.host.bus().subscribe();
    r.event(EventKind::Group(Box::new(ev(GroupAction::Add, ANN))))
        .await;
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an event")
            .unwrap()
        {
            HostEvent::Group { instance, event } => break (instance, event),
            _ => continue,
        }
    };
    assert_eq!(got, ("i".to_string(), ev(GroupAction::Add, ANN)));
    r.host.shutdown().await;
}

#[tokio::test]
async fn a_group_event_before_the_open_reaches_the_scripts_at_the_open() {
    let r = rig_with(Some(ev(GroupAction::Add, ANN))).await;
    r.host.settle().await;
    assert_eq!(*r.hooks.0.lock().unwrap(), [ev(GroupAction::Add, ANN)]);
    // And one while open goes at once.
    r.event(EventKind::Group(Box::new(ev(GroupAction::Remove, ANN))))
        .await;
    assert_eq!(r.hooks.0.lock().unwrap().len(), 2);
    r.host.shutdown().await;
}

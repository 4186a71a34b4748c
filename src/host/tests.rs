//! The host around the machine: the logout sequence with each step failing
//! in turn, and writes that fail and are retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::*;
use crate::channel::{ChannelError, EventKind, Outgoing};
use crate::lifecycle::{LogoutBy, ReasonKind, State, StateName};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unlink {
    Ok,
    Fails,
    Hangs,
}

/// A channel that opens at once and unlinks as told.
struct Fake {
    events: UnboundedSender<ChannelEvent>,
    auto_open: bool,
    unlink: Unlink,
    unlinks: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    paired: Arc<std::sync::atomic::AtomicBool>,
}

impl Channel for Fake {
    fn is_paired(&self) -> bool {
        self.paired.load(Ordering::SeqCst)
    }
    fn connect(&mut self, conn: u64) {
        if !self.auto_open {
            return;
        }
        let _ = self.events.send(ChannelEvent {
            conn,
            kind: EventKind::Opened {
                jid: Some("me@fake".into()),
                push_name: None,
            },
        });
    }
    fn close(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
    fn unlink(&mut self) -> BoxFuture<Result<(), ChannelError>> {
        self.unlinks.fetch_add(1, Ordering::SeqCst);
        match self.unlink {
            Unlink::Ok => Box::pin(std::future::ready(Ok(()))),
            Unlink::Fails => Box::pin(std::future::ready(Err(ChannelError::NotConnected))),
            Unlink::Hangs => Box::pin(std::future::pending()),
        }
    }
    fn send(&mut self, _: Outgoing) -> BoxFuture<Result<(), ChannelError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Counts lifecycle hooks.
#[derive(Default)]
struct Counting {
    calls: Mutex<Vec<String>>,
    messages: Mutex<Vec<String>>,
}

impl Hooks for Counting {
    fn lifecycle(
        &self,
        _: &InstanceHandle,
        call: &HookCall,
    ) -> Option<oneshot::Receiver<CloseAnswer>> {
        let name = match call {
            HookCall::Qr { .. } => "qr".to_string(),
            HookCall::Open { .. } => "open".to_string(),
            HookCall::Close { info, .. } => format!("close {}", info.reason.kind),
            HookCall::Logout { by, .. } => format!("logout {}", by.as_str()),
        };
        self.calls.lock().unwrap().push(name);
        None
    }
    fn message(&self, _: &InstanceHandle, m: Incoming) {
        self.messages.lock().unwrap().push(m.id);
    }
    fn settle(&self) -> BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }
}

struct Rig {
    host: Host,
    store: Arc<Store>,
    hooks: Arc<Counting>,
    handle: InstanceHandle,
    unlinks: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    paired: Arc<std::sync::atomic::AtomicBool>,
    events: Arc<Mutex<Option<UnboundedSender<ChannelEvent>>>>,
}

async fn rig(unlink: Unlink) -> Rig {
    rig_with(unlink, true).await
}

async fn rig_with(unlink: Unlink, auto_open: bool) -> Rig {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let hooks = Arc::new(Counting::default());
    let settings = HostSettings {
        unlink_timeout: Duration::from_millis(100),
        write_retry: Duration::from_millis(20),
        ..HostSettings::default()
    };
    let host = Host::new(store.clone(), hooks.clone(), EventBus::default(), settings).unwrap();
    let unlinks = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let paired = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (u, c, p) = (unlinks.clone(), closes.clone(), paired.clone());
    let events_slot: Arc<Mutex<Option<UnboundedSender<ChannelEvent>>>> = Default::default();
    let slot = events_slot.clone();
    let handle = host
        .add_instance("i", "fake", move |events| {
            *slot.lock().unwrap() = Some(events.clone());
            Box::new(Fake {
                events,
                auto_open,
                unlink,
                unlinks: u,
                closes: c,
                paired: p,
            })
        })
        .unwrap();
    store.session_put("i", "keys", b"secret").unwrap();
    Rig {
        host,
        store,
        hooks,
        handle,
        unlinks,
        closes,
        paired,
        events: events_slot,
    }
}

async fn open(r: &Rig) {
    r.handle.connect();
    let mut w = r.handle.watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        w.wait_for(|s| matches!(s.state, State::Open { .. })),
    )
    .await
    .expect("opened in time")
    .expect("actor alive");
}

fn assert_logged_out(r: &Rig, by: &str) {
    let row = r.store.instance("i").unwrap().unwrap().status;
    assert_eq!(row.state, StateName::LoggedOut);
    assert_eq!(row.last_reason_kind, Some(ReasonKind::LoggedOut));
    assert_eq!(
        row.logout_by.map(LogoutBy::as_str),
        Some(by),
        "who, in the row"
    );
    assert!(!r.store.session_exists("i").unwrap(), "keys deleted");
    let calls = r.hooks.calls.lock().unwrap();
    let logouts: Vec<&String> = calls.iter().filter(|c| c.starts_with("logout")).collect();
    assert_eq!(
        logouts,
        [&format!("logout {by}")],
        "on_logout exactly once: {calls:?}"
    );
}

#[tokio::test]
async fn logout_completes_whatever_the_unlink_does() {
    for unlink in [Unlink::Ok, Unlink::Fails, Unlink::Hangs] {
        let r = rig(unlink).await;
        open(&r).await;
        let row = r.handle.logout(LogoutBy::User).await;
        assert_eq!(row.state, StateName::LoggedOut, "{unlink:?}");
        assert_eq!(r.unlinks.load(Ordering::SeqCst), 1);
        assert!(r.closes.load(Ordering::SeqCst) >= 1, "transport closed");
        assert_logged_out(&r, "user");
        // A second logout answers with the current state and does nothing.
        let again = r.handle.logout(LogoutBy::User).await;
        assert_eq!(again, row);
        assert_eq!(r.unlinks.load(Ordering::SeqCst), 1);
        assert_logged_out(&r, "user");
        r.host.shutdown().await;
    }
}

#[tokio::test]
async fn logout_while_the_socket_is_already_gone() {
    let r = rig(Unlink::Fails).await;
    // Never connected at all.
    let row = r.handle.logout(LogoutBy::Script).await;
    assert_eq!(row.state, StateName::LoggedOut);
    assert_logged_out(&r, "script");
}

#[tokio::test]
async fn a_failed_write_is_retried_and_logout_answers_only_once_it_lands() {
    let r = rig(Unlink::Ok).await;
    open(&r).await;
    r.store
        .with_conn("test", |c| {
            c.execute_batch(
                "CREATE TRIGGER no_writes BEFORE UPDATE ON instances BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
            )
        })
        .unwrap();
    let h = r.handle.clone();
    let mut pending = tokio::spawn(async move { h.logout(LogoutBy::User).await });
    // While the database refuses, the logout does not claim to be done.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut pending)
            .await
            .is_err()
    );
    assert!(
        r.store.session_exists("i").unwrap(),
        "nothing deleted without the status write"
    );
    r.store
        .with_conn("test", |c| c.execute_batch("DROP TRIGGER no_writes;"))
        .unwrap();
    let row = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("logout finished after the retry")
        .unwrap();
    assert_eq!(row.state, StateName::LoggedOut);
    assert_logged_out(&r, "user");
}

#[tokio::test]
async fn a_server_logout_deletes_keys_without_asking_the_server() {
    let r = rig(Unlink::Ok).await;
    open(&r).await;
    let mut w = r.handle.watch();
    // The channel reports the server's 401 on the live connection (the first).
    let events = r.events.lock().unwrap().clone().unwrap();
    events
        .send(ChannelEvent {
            conn: 1,
            kind: EventKind::Closed {
                code: Some(401),
                kind: None,
                message: None,
                retry_after_ms: None,
            },
        })
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        w.wait_for(|s| matches!(s.state, State::LoggedOut { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    r.host.settle().await;
    assert_logged_out(&r, "server");
    assert_eq!(
        r.unlinks.load(Ordering::SeqCst),
        0,
        "the server already unlinked"
    );
    // A late event of that connection changes nothing.
    events
        .send(ChannelEvent {
            conn: 1,
            kind: EventKind::Opened {
                jid: None,
                push_name: None,
            },
        })
        .unwrap();
    r.host.settle().await;
    assert_eq!(r.handle.snapshot().row.state, StateName::LoggedOut);
}

#[tokio::test]
async fn a_logout_cut_short_by_a_crash_is_finished_at_start_up() {
    let store = Arc::new(Store::open_in_memory().unwrap());
    store.ensure_instance("i", "fake", 1).unwrap();
    store.session_put("i", "keys", b"secret").unwrap();
    let mut row = store.instance("i").unwrap().unwrap().status;
    row.state = StateName::LoggingOut;
    store.write_status("i", &row).unwrap();
    let _host = Host::new(
        store.clone(),
        Arc::new(NoHooks),
        EventBus::default(),
        HostSettings::default(),
    )
    .unwrap();
    let row = store.instance("i").unwrap().unwrap().status;
    assert_eq!(row.state, StateName::LoggedOut);
    assert!(!store.session_exists("i").unwrap());
}

fn message(id: &str) -> Incoming {
    Incoming {
        id: id.into(),
        chat: "a@fake".into(),
        sender: "a@fake".into(),
        text: Some("hi".into()),
        kind: "text".into(),
        from_me: false,
        is_group: false,
        push_name: None,
        timestamp: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn messages_before_the_open_are_held_and_delivered_in_order() {
    // The library hands over the offline backlog before it says "connected".
    let r = rig_with(Unlink::Ok, false).await;
    let events = r.events.lock().unwrap().clone().unwrap();
    r.handle.connect();
    r.host.settle().await;
    for id in ["m1", "m2"] {
        events
            .send(ChannelEvent {
                conn: 1,
                kind: EventKind::Message(message(id)),
            })
            .unwrap();
    }
    r.host.settle().await;
    assert!(
        r.hooks.messages.lock().unwrap().is_empty(),
        "not before open"
    );
    events
        .send(ChannelEvent {
            conn: 1,
            kind: EventKind::Opened {
                jid: None,
                push_name: None,
            },
        })
        .unwrap();
    r.host.settle().await;
    assert_eq!(*r.hooks.messages.lock().unwrap(), ["m1", "m2"]);
    // A superseded connection's messages are never delivered.
    events
        .send(ChannelEvent {
            conn: 99,
            kind: EventKind::Message(message("stale")),
        })
        .unwrap();
    r.host.settle().await;
    assert_eq!(*r.hooks.messages.lock().unwrap(), ["m1", "m2"]);
}

#[tokio::test]
async fn queued_sends_are_refused_once_logged_out() {
    let r = rig(Unlink::Ok).await;
    open(&r).await;
    r.handle.logout(LogoutBy::User).await;
    let out = Outgoing::text("a@fake", "hi", None);
    assert!(matches!(
        r.handle.send_queued(out).await,
        Err(SendError::NotOpen(_))
    ));
    // Before any logout, a queued send while closed is accepted.
    let r = rig(Unlink::Ok).await;
    let out = Outgoing::text("a@fake", "later", None);
    let id = out.id.clone();
    assert_eq!(r.handle.send_queued(out).await, Ok(id));
}

#[tokio::test]
async fn a_never_paired_device_is_logged_out_without_asking_the_server() {
    let r = rig(Unlink::Hangs).await;
    r.paired.store(false, Ordering::SeqCst);
    let row = tokio::time::timeout(Duration::from_secs(5), r.handle.logout(LogoutBy::User))
        .await
        .expect("no unlink to wait for");
    assert_eq!(row.state, StateName::LoggedOut);
    assert_eq!(r.unlinks.load(Ordering::SeqCst), 0, "nothing to unlink");
    assert_logged_out(&r, "user");
}

#[tokio::test]
async fn a_deleted_row_ends_the_actor_instead_of_retrying_for_ever() {
    let r = rig(Unlink::Ok).await;
    open(&r).await;
    assert!(r.store.delete_instance("i").unwrap());
    // The next state change cannot be written: the actor ends, and a
    // logout waiting on it is answered instead of hanging.
    let h = r.handle.clone();
    let logout = tokio::spawn(async move { h.logout(LogoutBy::User).await });
    tokio::time::timeout(Duration::from_secs(5), logout)
        .await
        .expect("the logout is answered")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !r.handle.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "actor still running"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(r.host.instance("i").is_none(), "forgotten by the host");
    assert!(r.host.instances().is_empty());
    assert!(r.store.instance("i").unwrap().is_none(), "no row conjured");
    // Commands to it answer at once.
    r.handle.settle().await;
    r.handle.connect();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), r.host.shutdown())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_cause_of_a_close_reaches_the_row_bounded() {
    let r = rig(Unlink::Ok).await;
    open(&r).await;
    let events = r.events.lock().unwrap().clone().unwrap();
    let long = "refused ".repeat(200);
    events
        .send(ChannelEvent {
            conn: 1,
            kind: EventKind::Closed {
                code: None,
                kind: Some(ReasonKind::TransportError),
                message: Some(long.clone()),
                retry_after_ms: None,
            },
        })
        .unwrap();
    r.host.settle().await;
    let row = r.store.instance("i").unwrap().unwrap().status;
    assert_eq!(row.last_reason_kind, Some(ReasonKind::TransportError));
    let message = row.last_reason_message.expect("the cause is kept");
    assert!(message.starts_with("refused refused"), "{message}");
    assert!(message.len() < 600 && message.len() < long.len(), "bounded");
    assert_eq!(
        r.handle.snapshot().row.last_reason_message.as_deref(),
        Some(&*message)
    );
}

//! The actor's inbox and outbox against a scripted channel: what is handed
//! to the hooks and when, and how each send ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::*;
use crate::channel::{ChannelError, EventKind, Outgoing};
use crate::lifecycle::{LogoutBy, State};
use crate::store::{InboxItem, SendStatus};

/// A channel whose sends succeed or fail as scripted, and which may
/// confirm sends later (as WhatsApp does).
struct Scripted {
    events: UnboundedSender<ChannelEvent>,
    sent: Arc<Mutex<Vec<String>>>,
    results: Arc<Mutex<VecDeque<Result<(), ChannelError>>>>,
    confirms: bool,
    conn: Arc<AtomicU64>,
    /// Messages the server has waiting: they come right after the open.
    waiting: Arc<Mutex<Vec<Incoming>>>,
    /// The next send stays in the channel until this is released.
    hold: Hold,
}

type Hold = Arc<Mutex<Option<oneshot::Receiver<()>>>>;

impl Channel for Scripted {
    fn connect(&mut self, conn: u64) {
        self.conn.store(conn, Ordering::SeqCst);
        let _ = self.events.send(ChannelEvent {
            conn,
            kind: EventKind::Opened {
                jid: Some("me@fake".into()),
                push_name: None,
            },
        });
        for m in self.waiting.lock().unwrap().drain(..) {
            let _ = self.events.send(ChannelEvent {
                conn,
                kind: EventKind::Message(m),
            });
        }
    }
    fn close(&mut self) {}
    fn unlink(&mut self) -> BoxFuture<Result<(), ChannelError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn send(&mut self, out: Outgoing) -> BoxFuture<Result<(), ChannelError>> {
        self.sent.lock().unwrap().push(out.id.clone());
        let r = self.results.lock().unwrap().pop_front().unwrap_or(Ok(()));
        let held = self.hold.lock().unwrap().take();
        Box::pin(async move {
            if let Some(held) = held {
                let _ = held.await;
            }
            r
        })
    }
    fn confirms_sends(&self) -> bool {
        self.confirms
    }
}

#[derive(Default)]
struct Seen {
    messages: Mutex<Vec<String>>,
}

impl Hooks for Seen {
    fn lifecycle(
        &self,
        _: &InstanceHandle,
        _: &HookCall,
    ) -> Option<oneshot::Receiver<CloseAnswer>> {
        None
    }
    fn message(&self, _: &InstanceHandle, m: Incoming) {
        self.messages
            .lock()
            .unwrap()
            .push(m.text.unwrap_or_default());
    }
    fn settle(&self) -> BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }
}

struct Rig {
    host: Host,
    store: Arc<Store>,
    hooks: Arc<Seen>,
    handle: InstanceHandle,
    events: UnboundedSender<ChannelEvent>,
    sent: Arc<Mutex<Vec<String>>>,
    results: Arc<Mutex<VecDeque<Result<(), ChannelError>>>>,
    failed: Arc<Mutex<Vec<(String, String)>>>,
    out: Arc<Mutex<Vec<String>>>,
    conn: Arc<AtomicU64>,
    waiting: Arc<Mutex<Vec<Incoming>>>,
    bus: EventBus,
    hold: Hold,
}

fn rig_on(store: Arc<Store>, confirms: bool) -> Rig {
    let hooks = Arc::new(Seen::default());
    let bus = EventBus::default();
    let failed: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let out: Arc<Mutex<Vec<String>>> = Default::default();
    {
        let (failed, out) = (failed.clone(), out.clone());
        bus.observe(move |ev| match ev {
            HostEvent::SendFailed { id, reason, .. } => {
                failed.lock().unwrap().push((id.clone(), reason.clone()))
            }
            HostEvent::MessageOut { id, .. } => out.lock().unwrap().push(id.clone()),
            _ => {}
        });
    }
    let settings = HostSettings {
        write_retry: Duration::from_millis(20),
        reconnect: crate::lifecycle::Settings {
            base_ms: 5,
            cap_ms: 20,
            ..crate::lifecycle::Settings::default()
        },
        ..HostSettings::default()
    };
    let host = Host::new(store.clone(), hooks.clone(), bus.clone(), settings).unwrap();
    let sent: Arc<Mutex<Vec<String>>> = Default::default();
    let results: Arc<Mutex<VecDeque<Result<(), ChannelError>>>> = Default::default();
    let slot: Arc<Mutex<Option<UnboundedSender<ChannelEvent>>>> = Default::default();
    let conn = Arc::new(AtomicU64::new(0));
    let waiting: Arc<Mutex<Vec<Incoming>>> = Default::default();
    let hold: Hold = Default::default();
    let h = hold.clone();
    let (s, r, sl, c, w) = (
        sent.clone(),
        results.clone(),
        slot.clone(),
        conn.clone(),
        waiting.clone(),
    );
    let handle = host
        .add_instance("i", "fake", move |events| {
            *sl.lock().unwrap() = Some(events.clone());
            Box::new(Scripted {
                events,
                sent: s,
                results: r,
                confirms,
                conn: c,
                waiting: w,
                hold: h,
            })
        })
        .unwrap();
    let events = slot.lock().unwrap().clone().unwrap();
    Rig {
        host,
        store,
        hooks,
        handle,
        events,
        sent,
        results,
        failed,
        out,
        conn,
        waiting,
        bus,
        hold,
    }
}

fn rig(confirms: bool) -> Rig {
    rig_on(Arc::new(Store::open_in_memory().unwrap()), confirms)
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
    r.host.settle().await;
}

fn msg(id: &str, text: &str) -> Incoming {
    Incoming {
        id: id.into(),
        chat: "a@fake".into(),
        sender: "a@fake".into(),
        text: Some(text.into()),
        kind: "text".into(),
        ..Incoming::default()
    }
}

impl Rig {
    fn event(&self, kind: EventKind) {
        let conn = self.conn.load(Ordering::SeqCst);
        self.events.send(ChannelEvent { conn, kind }).unwrap();
    }
    fn seen(&self) -> Vec<String> {
        self.hooks.messages.lock().unwrap().clone()
    }
    fn status(&self, id: &str) -> Option<SendStatus> {
        self.store.outbox_status("i", id).unwrap().map(|r| r.status)
    }
    /// The server drops the connection; waits until it is open again.
    async fn drop_connection(&self) {
        self.event(EventKind::Closed {
            code: Some(408),
            kind: None,
            message: None,
            retry_after_ms: None,
        });
        self.host.settle().await;
        let mut w = self.handle.watch();
        tokio::time::timeout(
            Duration::from_secs(10),
            w.wait_for(|s| matches!(s.state, State::Open { .. })),
        )
        .await
        .expect("open again")
        .expect("actor alive");
        self.host.settle().await;
    }
    /// Waits (bounded) until `f` holds.
    /// `moonwire_inbox_commit_failures_total` as the metrics show it.
    fn commit_failures(&self) -> u64 {
        let text = self.bus.metrics().render(&[], &[]);
        text.lines()
            .find_map(|l| l.strip_prefix("moonwire_inbox_commit_failures_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn until(&self, what: &str, f: impl Fn(&Rig) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !f(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            self.host.settle().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn the_same_message_again_is_not_handed_twice() {
    let r = rig(false);
    open(&r).await;
    for (id, text) in [("m1", "one"), ("m1", "one again"), ("m2", "two")] {
        r.event(EventKind::Message(msg(id, text)));
    }
    r.host.settle().await;
    assert_eq!(r.seen(), ["one", "two"]);
    // Also when it comes much later, in another batch.
    r.event(EventKind::Message(msg("m1", "late")));
    r.host.settle().await;
    assert_eq!(r.seen(), ["one", "two"]);
    let rows = r.store.inbox_unhandled("i", 0, 10).unwrap();
    assert!(rows.is_empty(), "the host marked what it handed: {rows:?}");
}

#[tokio::test]
async fn rows_left_unhandled_by_a_crash_come_first_at_the_next_open_oldest_first() {
    let store = Arc::new(Store::open_in_memory().unwrap());
    store.ensure_instance("i", "fake", 1).unwrap();
    let texts = [
        r#"{"id":"a","chat":"c","sender":"s","text":"first"}"#,
        r#"{"id":"b","chat":"c","sender":"s","text":"second"}"#,
    ];
    let seqs = store
        .inbox_commit(
            "i",
            &[
                InboxItem {
                    chat: "c",
                    sender: "s",
                    id: "a",
                    message: texts[0],
                },
                InboxItem {
                    chat: "c",
                    sender: "s",
                    id: "b",
                    message: texts[1],
                },
                InboxItem {
                    chat: "c",
                    sender: "s",
                    id: "h",
                    message: "{\"text\":\"handled\"}",
                },
                InboxItem {
                    chat: "c",
                    sender: "s",
                    id: "x",
                    message: "not json",
                },
            ],
            now_ms(),
        )
        .unwrap();
    store
        .inbox_mark_handled("i", &[seqs[2].unwrap()], 1)
        .unwrap();
    let r = rig_on(store, false);
    // Nothing before the open, however long it takes.
    r.host.settle().await;
    assert!(r.seen().is_empty());
    // The backlog goes before anything the new connection brings.
    r.waiting.lock().unwrap().push(msg("n", "new"));
    open(&r).await;
    assert_eq!(r.seen(), ["first", "second", "new"]);
    // An unreadable row is passed over (and marked) rather than wedging.
    assert!(r.store.inbox_unhandled("i", 0, 10).unwrap().is_empty());
}

#[tokio::test]
async fn a_row_committed_by_the_channel_is_handed_once_whichever_way_it_comes() {
    let r = rig(false);
    // Committed before the open (the offline backlog comes first): its
    // event is ignored while connecting and the row handed at the open.
    let seq = r
        .store
        .inbox_commit(
            "i",
            &[InboxItem {
                chat: "c",
                sender: "s",
                id: "o",
                message: &serde_json::to_string(&msg("o", "offline")).unwrap(),
            }],
            now_ms(),
        )
        .unwrap()[0]
        .unwrap();
    r.handle.connect();
    r.event(EventKind::Inbox {
        seq,
        message: msg("o", "offline"),
    });
    r.host.settle().await;
    // Its event arriving after the open's backlog is not a second copy.
    r.event(EventKind::Inbox {
        seq,
        message: msg("o", "offline"),
    });
    r.host.settle().await;
    assert_eq!(r.seen(), ["offline"]);
}

#[tokio::test]
async fn a_failing_inbox_commit_hands_nothing_until_it_lands() {
    let r = rig(false);
    open(&r).await;
    r.store
        .with_conn("break", |c| {
            c.execute_batch(
                "CREATE TRIGGER no_inbox BEFORE INSERT ON inbox \
                 BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
            )
        })
        .unwrap();
    r.event(EventKind::Message(msg("m1", "one")));
    r.event(EventKind::Message(msg("m2", "two")));
    // Both failed at least twice (the first try and a retry), counted.
    r.until("a retry that fails too", |r| r.commit_failures() >= 4)
        .await;
    assert!(r.seen().is_empty(), "nothing that is not committed");
    r.store
        .with_conn("mend", |c| c.execute_batch("DROP TRIGGER no_inbox;"))
        .unwrap();
    r.until("the retried commit", |r| r.seen().len() == 2).await;
    assert_eq!(r.seen(), ["one", "two"]);
}

#[tokio::test]
async fn queued_sends_go_out_in_order_at_the_open_and_each_ends_once() {
    let r = rig(false);
    let mut ids = Vec::new();
    for text in ["a", "b", "c"] {
        let out = Outgoing::text("x@fake", text, None);
        ids.push(r.handle.send_queued(out).await.unwrap());
    }
    assert!(r.sent.lock().unwrap().is_empty());
    assert_eq!(r.status(&ids[0]), Some(SendStatus::Queued));
    // Not queued and not open: refused as before.
    let refused = r.handle.send(Outgoing::text("x@fake", "now", None)).await;
    assert!(matches!(refused, Err(SendError::NotOpen(_))), "{refused:?}");
    // The second fails for good, the others go.
    r.results.lock().unwrap().extend([
        Ok(()),
        Err(ChannelError::BadRecipient("x@fake".into())),
        Ok(()),
    ]);
    open(&r).await;
    r.until("all ended", |r| r.out.lock().unwrap().len() == 2)
        .await;
    assert_eq!(*r.sent.lock().unwrap(), ids);
    assert_eq!(*r.out.lock().unwrap(), [ids[0].clone(), ids[2].clone()]);
    assert_eq!(r.status(&ids[0]), Some(SendStatus::Sent));
    assert_eq!(r.status(&ids[1]), Some(SendStatus::Failed));
    let failed = r.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, ids[1]);
    assert!(failed[0].1.contains("invalid recipient"), "{failed:?}");
    let rec = r.store.outbox_status("i", &ids[1]).unwrap().unwrap();
    assert!(rec.reason.unwrap().contains("invalid recipient"));
}

#[tokio::test]
async fn a_send_that_cannot_get_through_is_tried_again_then_given_up() {
    let r = rig(false);
    open(&r).await;
    let interrupted = || Err(ChannelError::Interrupted("socket reset".into()));
    r.results.lock().unwrap().push_back(interrupted());
    let id = r
        .handle
        .send(Outgoing::text("x@fake", "a", None))
        .await
        .unwrap();
    r.until("the failed try", |r| r.sent.lock().unwrap().len() == 1)
        .await;
    assert_eq!(
        r.status(&id),
        Some(SendStatus::Queued),
        "kept for the next open"
    );
    // Each reconnect tries again, up to the limit.
    r.results
        .lock()
        .unwrap()
        .extend((0..delivery::MAX_SEND_ATTEMPTS).map(|_| interrupted()));
    for _ in 0..delivery::MAX_SEND_ATTEMPTS {
        if r.status(&id) != Some(SendStatus::Queued) {
            break;
        }
        r.drop_connection().await;
    }
    r.until("given up", |r| r.status(&id) == Some(SendStatus::Failed))
        .await;
    assert_eq!(
        r.sent.lock().unwrap().len(),
        delivery::MAX_SEND_ATTEMPTS as usize
    );
    let rec = r.store.outbox_status("i", &id).unwrap().unwrap();
    assert!(
        rec.reason
            .unwrap()
            .contains("gave up after 5 attempts: socket reset")
    );
    assert_eq!(r.failed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_send_left_queued_by_a_crash_goes_out_at_the_next_start_under_its_id() {
    let store = Arc::new(Store::open_in_memory().unwrap());
    store.ensure_instance("i", "fake", 1).unwrap();
    let out = Outgoing::text("x@fake", "before the crash", None);
    let item = delivery::outbox_item(&out).unwrap();
    store.outbox_insert("i", &item, 1).unwrap();
    store
        .outbox_insert(
            "i",
            &crate::store::OutboxItem {
                id: "broken".into(),
                chat: "x@fake".into(),
                body: "{".into(),
            },
            now_ms(),
        )
        .unwrap();
    let r = rig_on(store, false);
    open(&r).await;
    r.until("sent", |r| r.out.lock().unwrap().len() == 1).await;
    assert_eq!(*r.sent.lock().unwrap(), [out.id]);
    // A row that cannot be read back is reported, not retried for ever.
    assert_eq!(r.status("broken"), Some(SendStatus::Failed));
    assert_eq!(r.failed.lock().unwrap()[0].0, "broken");
}

#[tokio::test]
async fn a_send_the_server_never_confirmed_goes_again_under_the_same_id() {
    let r = rig(true);
    open(&r).await;
    let a = r
        .handle
        .send(Outgoing::text("x@fake", "a", None))
        .await
        .unwrap();
    let b = r
        .handle
        .send(Outgoing::text("x@fake", "b", None))
        .await
        .unwrap();
    r.until("written", |r| r.sent.lock().unwrap().len() == 2)
        .await;
    // Written is not sent: only the server's ack makes it so.
    assert_eq!(r.status(&a), Some(SendStatus::Queued));
    r.event(EventKind::SendAcked {
        id: a.clone(),
        error: None,
    });
    r.host.settle().await;
    assert_eq!(r.status(&a), Some(SendStatus::Sent));
    assert_eq!(*r.out.lock().unwrap(), std::slice::from_ref(&a));
    // The connection drops before b's ack: b goes again after the open.
    r.drop_connection().await;
    r.until("sent again", |r| r.sent.lock().unwrap().len() == 3)
        .await;
    assert_eq!(r.sent.lock().unwrap()[2], b);
    // An ack that comes before the channel said "written" is not lost, and
    // a refusal is a failure with the server's reason.
    let c = r
        .handle
        .send(Outgoing::text("x@fake", "c", None))
        .await
        .unwrap();
    r.event(EventKind::SendAcked {
        id: b.clone(),
        error: None,
    });
    r.event(EventKind::SendAcked {
        id: c.clone(),
        error: Some("479".into()),
    });
    r.until("both ended", |r| r.status(&c) != Some(SendStatus::Queued))
        .await;
    assert_eq!(r.status(&b), Some(SendStatus::Sent));
    assert_eq!(r.status(&c), Some(SendStatus::Failed));
    assert!(r.failed.lock().unwrap()[0].1.contains("479"));
}

#[tokio::test]
async fn a_send_the_channel_holds_at_a_logout_is_reported_as_it_ends() {
    for (confirms, want_out) in [(false, true), (true, false)] {
        let r = rig(confirms);
        open(&r).await;
        let (release, held) = oneshot::channel();
        *r.hold.lock().unwrap() = Some(held);
        let id = r
            .handle
            .send(Outgoing::text("x@fake", "a", None))
            .await
            .unwrap();
        r.until("handed to the channel", |r| {
            r.sent.lock().unwrap().len() == 1
        })
        .await;
        r.handle.logout(LogoutBy::User).await;
        r.host.settle().await;
        assert!(r.failed.lock().unwrap().is_empty(), "not before it ends");
        release.send(()).unwrap();
        r.until("reported", |r| {
            !r.out.lock().unwrap().is_empty() || !r.failed.lock().unwrap().is_empty()
        })
        .await;
        if want_out {
            // It went out: delivered, not failed.
            assert_eq!(*r.out.lock().unwrap(), std::slice::from_ref(&id));
            assert!(r.failed.lock().unwrap().is_empty());
        } else {
            // Written, and no confirmation can come after the logout.
            let failed = r.failed.lock().unwrap().clone();
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0].0, id);
            assert!(
                failed[0].1.contains("before the server confirmed"),
                "{failed:?}"
            );
            assert!(r.out.lock().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn a_logout_fails_what_waits_and_takes_the_rows_with_the_keys() {
    let r = rig(true);
    open(&r).await;
    let written = r
        .handle
        .send(Outgoing::text("x@fake", "a", None))
        .await
        .unwrap();
    r.until("written", |r| r.sent.lock().unwrap().len() == 1)
        .await;
    r.drop_connection().await;
    r.store
        .inbox_commit(
            "i",
            &[InboxItem {
                chat: "c",
                sender: "s",
                id: "z",
                message: "{}",
            }],
            now_ms(),
        )
        .unwrap();
    let row = r.handle.logout(LogoutBy::User).await;
    assert_eq!(row.logout_by, Some(LogoutBy::User));
    r.host.settle().await;
    let failed = r.failed.lock().unwrap().clone();
    assert_eq!(failed, [(written.clone(), "logged out".to_string())]);
    // Reported, not kept: the row went in the logout's transaction.
    assert_eq!(r.status(&written), None);
    assert!(r.store.inbox_unhandled("i", 0, 10).unwrap().is_empty());
    let refused = r
        .handle
        .send_queued(Outgoing::text("x@fake", "b", None))
        .await;
    assert!(matches!(refused, Err(SendError::NotOpen(_))));
}

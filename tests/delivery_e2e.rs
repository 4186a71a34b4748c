//! Durable delivery against the mock WhatsApp server: its offline queue
//! keeps each message until the client acks it and delivers it again at the
//! next login, so these tests see what the real server would: a message
//! sent while moonwire is down, a stanza that comes twice, an ack that must
//! wait for the inbox commit.

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use support::offline::acked_ids;
use support::rig::{Rig, WAIT, fast_settings};
use support::{MockServer, attr};

const ALICE: &str = "15550001111";

fn line(text: &str) -> String {
    format!("{ALICE}@s.whatsapp.net|{text}|Alice")
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs SQL on the instance's database beside the host (tests break it so).
fn sql(dir: &Path, batch: &str) {
    let c = rusqlite::Connection::open(dir.join("moonwire.db")).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch(batch).unwrap();
}

/// How many acks of message `id` the server received.
fn acks(server: &MockServer, id: &str) -> usize {
    server
        .received()
        .iter()
        .filter(|n| acked_ids(n).iter().any(|a| a == id))
        .count()
}

async fn paired(server: &MockServer, dir: &Path) -> Rig {
    let rig = Rig::start_in(server, dir, fast_settings());
    rig.pair(server).await;
    server
        .wait_until(WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;
    rig
}

#[tokio::test]
async fn a_message_sent_while_moonwire_is_down_is_handled_once_after_the_next_login() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rig = paired(&server, dir.path()).await;
    rig.stop().await;

    let id = server
        .message_from(ALICE, "Alice", "while you were away")
        .await
        .unwrap();
    assert_eq!(server.unacked(), std::slice::from_ref(&id));
    let rig = Rig::start_in(&server, dir.path(), fast_settings());
    until("on_message", || !rig.messages().is_empty()).await;
    server.wait_until(WAIT, "the ack", |s| s.acked(&id)).await;
    rig.stop().await;

    // Acked: the next login brings nothing again, and what comes after it
    // is the only other message handled.
    let rig = Rig::start_in(&server, dir.path(), fast_settings());
    until("open", || {
        matches!(
            rig.handle.snapshot().state,
            moonwire::lifecycle::State::Open { .. }
        )
    })
    .await;
    server.message_from(ALICE, "Alice", "later").await.unwrap();
    until("the later message", || rig.messages().len() >= 2).await;
    rig.app.host.settle().await;
    assert_eq!(
        rig.messages(),
        [line("while you were away"), line("later")],
        "errors: {:?}",
        server.errors()
    );
    rig.stop().await;
}

/// A crash between the inbox commit and the ack leaves the library's
/// buffered copy, and the server sends the stanza again: the library hands
/// it to the durability hook once more, and the inbox knows it.
#[tokio::test]
async fn the_same_stanza_delivered_again_is_not_handled_twice() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rig = paired(&server, dir.path()).await;
    // The copy stays as if the process had died right after the commit.
    sql(
        dir.path(),
        "CREATE TRIGGER keep_copy BEFORE DELETE ON wa_pending_inbound BEGIN SELECT RAISE(IGNORE); END;",
    );
    let id = server
        .message_from(ALICE, "Alice", "only once")
        .await
        .unwrap();
    server.wait_until(WAIT, "the ack", |s| s.acked(&id)).await;
    until("on_message", || !rig.messages().is_empty()).await;

    assert_eq!(server.redeliver(&id), 1);
    // Committed again (a no-op) and acked again; not handed again.
    server
        .wait_until(WAIT, "the second ack", |s| acks(s, &id) >= 2)
        .await;
    server.message_from(ALICE, "Alice", "next").await.unwrap();
    until("the next message", || rig.messages().len() >= 2).await;
    rig.app.host.settle().await;
    assert_eq!(rig.messages(), [line("only once"), line("next")]);
    rig.stop().await;
}

/// The inbox commit fails for one message: the client does not ack it
/// (the server's record of stanzas shows the ack of the message after it
/// and none of it), scripts never see it, and the server's redelivery at
/// the next login commits it and gets the ack.
#[tokio::test]
async fn a_failing_inbox_commit_holds_the_ack_back_until_a_redelivery_commits() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rig = paired(&server, dir.path()).await;
    sql(
        dir.path(),
        "CREATE TRIGGER poison BEFORE INSERT ON inbox WHEN NEW.message LIKE '%poison%' \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    );
    let bad = server.message_from(ALICE, "Alice", "poison").await.unwrap();
    let good = server.message_from(ALICE, "Alice", "fine").await.unwrap();
    server
        .wait_until(WAIT, "the ack of the next message", |s| s.acked(&good))
        .await;
    // The stanzas came in order: the first message's ack would be before
    // the second's.
    assert_eq!(acks(&server, &bad), 0, "acked without its commit");
    rig.app.host.settle().await;
    assert_eq!(rig.messages(), [line("fine")], "handed without a commit");
    // And counted, for whoever watches the metrics.
    let metrics = rig.app.bus.metrics().render(&[], &[]);
    assert!(
        metrics.contains("moonwire_inbox_commit_failures_total 1"),
        "{metrics}"
    );

    sql(dir.path(), "DROP TRIGGER poison;");
    let before = server.received().len();
    assert_eq!(server.drop_tcp(), 1);
    server
        .wait_until(WAIT, "the ack after the redelivery", |s| s.acked(&bad))
        .await;
    let received = server.received();
    let at = received
        .iter()
        .position(|n| acked_ids(n).contains(&bad))
        .unwrap();
    assert!(at >= before, "the ack came on the next connection");
    assert!(
        received[before..at]
            .iter()
            .any(|n| attr(n, "xmlns").as_deref() == Some("passive")
                && n.get_optional_child("active").is_some()),
        "after the next login went active, when the server redelivers"
    );
    until("on_message", || rig.messages().len() >= 2).await;
    assert_eq!(rig.messages(), [line("fine"), line("poison")]);
    rig.stop().await;
}

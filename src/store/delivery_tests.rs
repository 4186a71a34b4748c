use serde_json::json;

use super::*;
use crate::lifecycle::{LogoutBy, StateName};

fn mem() -> Store {
    let s = Store::open_in_memory().expect("in-memory store");
    s.ensure_instance("a", "console", 1).expect("a");
    s.ensure_instance("b", "console", 1).expect("b");
    s
}

fn item<'a>(id: &'a str, message: &'a str) -> InboxItem<'a> {
    InboxItem {
        chat: "c@x",
        sender: "s@x",
        id,
        message,
    }
}

fn send(id: &str) -> OutboxItem {
    OutboxItem {
        id: id.into(),
        chat: "c@x".into(),
        body: format!("{{\"text\":\"{id}\"}}"),
    }
}

fn logged_out(at: u64) -> StatusRow {
    StatusRow {
        connection_status: StateName::LoggedOut.connection_status(),
        state: StateName::LoggedOut,
        last_reason_code: Some(401),
        last_reason_kind: Some(crate::lifecycle::ReasonKind::LoggedOut),
        last_reason_message: None,
        last_change_at: at,
        jid: None,
        push_name: None,
        logout_by: Some(LogoutBy::Script),
    }
}

#[test]
fn a_key_seen_before_is_refused_in_the_batch_and_across_commits() {
    let s = mem();
    let first = s
        .inbox_commit(
            "a",
            &[item("1", "m1"), item("2", "m2"), item("1", "again")],
            5,
        )
        .unwrap();
    assert!(first[0].is_some() && first[1].is_some() && first[2].is_none());
    assert!(first[0] < first[1]);
    // A redelivery of a handled row and of an unhandled one: both refused.
    s.inbox_mark_handled("a", &[first[0].unwrap()], 6).unwrap();
    assert_eq!(
        s.inbox_commit("a", &[item("1", "x"), item("2", "y")], 7)
            .unwrap(),
        [None, None]
    );
    // The same id from another sender, chat or instance is another message.
    let other = InboxItem {
        sender: "t@x",
        ..item("1", "m")
    };
    let chat = InboxItem {
        chat: "d@x",
        ..item("1", "m")
    };
    let got = s.inbox_commit("a", &[other, chat], 8).unwrap();
    assert!(got.iter().all(Option::is_some));
    assert!(s.inbox_commit("b", &[item("1", "m")], 8).unwrap()[0].is_some());
    // Only unhandled rows, oldest first, after the given seq.
    let rows = s.inbox_unhandled("a", 0, 10).unwrap();
    let texts: Vec<&str> = rows.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(texts, ["m2", "m", "m"]);
    assert_eq!(
        s.inbox_unhandled("a", rows[0].seq, 1).unwrap(),
        [rows[1].clone()]
    );
}

#[test]
fn a_failing_commit_keeps_nothing_of_the_batch() {
    let s = mem();
    s.with_conn("break", |c| {
        c.execute_batch(
            "CREATE TRIGGER no_inbox BEFORE INSERT ON inbox WHEN NEW.id = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
        )
    })
    .unwrap();
    let err = s
        .inbox_commit("a", &[item("ok", "m1"), item("bad", "m2")], 5)
        .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(s.inbox_unhandled("a", 0, 10).unwrap().is_empty());
    // The first one was rolled back too: it is new when it comes again.
    assert!(s.inbox_commit("a", &[item("ok", "m1")], 6).unwrap()[0].is_some());
}

#[test]
fn handling_lands_whole_or_not_at_all() {
    let s = mem();
    let seq = s.inbox_commit("a", &[item("1", "m")], 5).unwrap()[0].unwrap();
    s.kv_set("a", "bot", "n", &json!(1), 1).unwrap();
    let kv = [
        KvWrite::Set {
            script: "bot".into(),
            key: "n".into(),
            value: json!(2),
        },
        KvWrite::Delete {
            script: "bot".into(),
            key: "gone".into(),
        },
    ];
    // A send whose id is taken makes the transaction fail: nothing of it stays.
    s.outbox_insert("a", &send("dup"), 1).unwrap();
    let err = s
        .commit_handling("a", &[seq], &kv, &[send("new"), send("dup")], 9)
        .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    assert_eq!(s.kv_get("a", "bot", "n").unwrap(), Some(json!(1)));
    assert_eq!(s.inbox_handled("a", seq).unwrap(), Some(false));
    assert_eq!(s.outbox_status("a", "new").unwrap(), None);

    let seqs = s
        .commit_handling("a", &[seq], &kv, &[send("new")], 9)
        .unwrap();
    assert_eq!(seqs.len(), 1);
    assert_eq!(s.kv_get("a", "bot", "n").unwrap(), Some(json!(2)));
    assert_eq!(s.inbox_handled("a", seq).unwrap(), Some(true));
    let queued: Vec<String> = s
        .outbox_queued("a")
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(queued, ["dup", "new"]);
}

#[test]
fn a_send_is_recorded_once_and_its_status_read_back() {
    let s = mem();
    let one = s.outbox_insert("a", &send("one"), 10).unwrap();
    let two = s.outbox_insert("a", &send("two"), 11).unwrap();
    s.outbox_record("a", &[(one, SendOutcome::Attempted)], 12)
        .unwrap();
    assert_eq!(s.outbox_queued("a").unwrap()[0].attempts, 1);
    s.outbox_record(
        "a",
        &[
            (one, SendOutcome::Sent),
            (two, SendOutcome::Failed("bad recipient".into())),
        ],
        13,
    )
    .unwrap();
    // Finished is final.
    s.outbox_record("a", &[(one, SendOutcome::Failed("late".into()))], 14)
        .unwrap();
    let r = s.outbox_status("a", "one").unwrap().unwrap();
    assert_eq!(
        (r.status, r.reason, r.attempts),
        (SendStatus::Sent, None, 1)
    );
    assert_eq!((r.created_at, r.updated_at), (10, 13));
    let r = s.outbox_status("a", "two").unwrap().unwrap();
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (SendStatus::Failed, Some("bad recipient"))
    );
    assert!(s.outbox_queued("a").unwrap().is_empty());
    assert_eq!(s.outbox_status("b", "one").unwrap(), None);
}

#[test]
fn a_logout_takes_the_inbox_and_outbox_with_the_keys_and_records_who() {
    let s = mem();
    s.session_put("a", "creds", b"k").unwrap();
    s.inbox_commit("a", &[item("1", "m")], 5).unwrap();
    s.outbox_insert("a", &send("x"), 5).unwrap();
    s.inbox_commit("b", &[item("1", "m")], 5).unwrap();
    s.end_session("a", &logged_out(9)).unwrap();
    assert!(!s.session_exists("a").unwrap());
    assert!(s.inbox_unhandled("a", 0, 10).unwrap().is_empty());
    assert!(s.outbox_queued("a").unwrap().is_empty());
    // The mark waits at the newest row, so the next account's rows, all
    // after it, walk from there.
    let b_seq = s.inbox_unhandled("b", 0, 10).unwrap()[0].seq;
    assert_eq!(marks(&s, "a"), (b_seq, vec![]));
    // A redelivery after the logout is a new message of the new account.
    let again = s.inbox_commit("a", &[item("1", "m")], 10).unwrap()[0];
    assert!(again.is_some());
    assert_eq!(s.inbox_unhandled("a", 0, 10).unwrap().len(), 1);
    assert_eq!(s.inbox_unhandled("b", 0, 10).unwrap().len(), 1);
    let row = s.instance("a").unwrap().unwrap();
    assert_eq!(row.status.logout_by, Some(LogoutBy::Script));
    assert_eq!(row.to_json()["logout_by"], "script");
}

#[test]
fn a_failing_logout_write_keeps_the_messages_too() {
    let s = mem();
    s.inbox_commit("a", &[item("1", "m")], 5).unwrap();
    s.outbox_insert("a", &send("x"), 5).unwrap();
    s.with_conn("break", |c| {
        c.execute_batch(
            "CREATE TRIGGER no_writes BEFORE UPDATE ON instances \
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
        )
    })
    .unwrap();
    assert!(s.end_session("a", &logged_out(9)).is_err());
    assert_eq!(s.inbox_unhandled("a", 0, 10).unwrap().len(), 1);
    assert_eq!(s.outbox_queued("a").unwrap().len(), 1);
}

#[test]
fn deleting_an_instance_deletes_its_messages() {
    let s = mem();
    s.inbox_commit("a", &[item("1", "m")], 5).unwrap();
    s.outbox_insert("a", &send("x"), 5).unwrap();
    assert!(s.delete_instance("a").unwrap());
    assert!(s.inbox_unhandled("a", 0, 10).unwrap().is_empty());
    assert_eq!(s.outbox_status("a", "x").unwrap(), None);
}

#[test]
fn pruning_keeps_the_newest_rows_and_queued_sends() {
    let s = mem();
    let day = 86_400_000;
    let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        // Rows 0..4 are ten days old, the rest one day.
        let at = if i < 5 { 10 * day } else { 19 * day };
        let seq = s.inbox_commit("a", &[item(id, "m")], at).unwrap()[0].unwrap();
        if i != 1 && i != 7 {
            s.inbox_mark_handled("a", &[seq], at).unwrap();
        }
        let out = s.outbox_insert("a", &send(id), at).unwrap();
        if i != 2 {
            s.outbox_record("a", &[(out, SendOutcome::Sent)], at)
                .unwrap();
        }
    }
    s.inbox_commit("b", &[item("old", "m")], 0).unwrap();
    // Seven days kept: rows 0..4 go, unhandled row 1 with them; then at
    // most 3 rows: handled rows beyond the newest three go, unhandled 7
    // stays. The queued send 2 stays whatever its age.
    let p = s.delivery_prune("a", 7 * day, 3, 20 * day).unwrap();
    assert_eq!(p.unhandled, 1);
    assert_eq!(p.inbox, 5 + 2, "{p:?}");
    let left = s
        .with_conn("count", |c| {
            c.query_row("SELECT COUNT(*) FROM inbox WHERE instance = 'a'", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .unwrap();
    assert_eq!(left, 3);
    assert_eq!(s.inbox_unhandled("a", 0, 10).unwrap().len(), 1);
    assert!(s.outbox_status("a", "2").unwrap().is_some());
    assert!(s.outbox_status("a", "0").unwrap().is_none());
    assert_eq!(p.outbox, 4 + 2, "{p:?}");
    // Another instance's rows are its own business.
    assert_eq!(s.inbox_unhandled("b", 0, 10).unwrap().len(), 1);
    // A redelivery of a pruned message counts as new again: the key is gone.
    assert!(s.inbox_commit("a", &[item("0", "m")], 20 * day).unwrap()[0].is_some());
}

#[test]
fn the_last_run_is_read_from_keys_of_that_form_only() {
    let s = mem();
    assert_eq!(s.inbox_last_run("a", "r").unwrap(), 0);
    s.inbox_commit(
        "a",
        &[
            item("r2/c1", "m"),
            item("r10/c4", "m"),
            // An id of an older data dir, one without a number, another
            // instance's: none of them a run.
            item("c99", "m"),
            item("rx/c1", "m"),
            item("r", "m"),
        ],
        1,
    )
    .unwrap();
    s.inbox_commit("b", &[item("r50/c1", "m")], 1).unwrap();
    assert_eq!(s.inbox_last_run("a", "r").unwrap(), 10);
    assert_eq!(s.inbox_last_run("b", "r").unwrap(), 50);
}

#[test]
fn the_row_count_counts_only_the_instances_own_rows() {
    let s = mem();
    // a and b take turns, so b's rows sit between a's.
    for i in 0..6 {
        for inst in ["a", "b"] {
            let seq = s
                .inbox_commit(inst, &[item(&format!("{i}"), "m")], 5)
                .unwrap()[0]
                .unwrap();
            s.inbox_mark_handled(inst, &[seq], 5).unwrap();
            let out = s.outbox_insert(inst, &send(&format!("{i}")), 5).unwrap();
            s.outbox_record(inst, &[(out, SendOutcome::Sent)], 5)
                .unwrap();
        }
    }
    let p = s.delivery_prune("a", 1000, 2, 6).unwrap();
    assert_eq!((p.inbox, p.outbox), (4, 4), "{p:?}");
    let ids = |table: &str, inst: &str| {
        s.with_conn("ids", |c| {
            c.prepare(&format!(
                "SELECT id FROM {table} WHERE instance = ?1 ORDER BY seq"
            ))?
            .query_map([inst], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
    };
    assert_eq!(ids("inbox", "a"), ["4", "5"]);
    assert_eq!(ids("outbox", "a"), ["4", "5"]);
    assert_eq!(ids("inbox", "b").len(), 6);
    assert_eq!(ids("outbox", "b").len(), 6);
}

/// The instance's handled mark, and the rows marked one by one.
fn marks(s: &Store, inst: &str) -> (i64, Vec<i64>) {
    s.with_conn("marks", |c| {
        let mark = c
            .query_row(
                "SELECT handled_through FROM inbox_progress WHERE instance = ?1",
                [inst],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })?;
        let singles = c
            .prepare(
                "SELECT seq FROM inbox WHERE instance = ?1 AND handled_at IS NOT NULL ORDER BY seq",
            )?
            .query_map([inst], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok((mark, singles))
    })
    .unwrap()
}

/// The `seq`s of the instance's rows not handled, oldest first.
fn unhandled_seqs(s: &Store, inst: &str) -> Vec<i64> {
    s.inbox_unhandled(inst, 0, 10_000)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

fn commit_rows(s: &Store, inst: &str, ids: &[&str]) -> Vec<i64> {
    let items: Vec<InboxItem<'_>> = ids.iter().map(|id| item(id, id)).collect();
    s.inbox_commit(inst, &items, 5)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

#[test]
fn rows_started_in_order_move_one_mark_and_write_no_row() {
    let s = mem();
    let a = commit_rows(&s, "a", &["1"]);
    // Another instance's rows between this one's do not hold its mark.
    commit_rows(&s, "b", &["1", "2"]);
    let a2 = commit_rows(&s, "a", &["2", "3"]);
    s.commit_handling("a", &[a[0], a2[0], a2[1]], &[], &[], 9)
        .unwrap();
    assert_eq!(marks(&s, "a"), (a2[1], vec![]));
    assert!(s.inbox_unhandled("a", 0, 10).unwrap().is_empty());
    assert_eq!(s.inbox_handled("a", a[0]).unwrap(), Some(true));
    assert_eq!(s.inbox_unhandled("b", 0, 10).unwrap().len(), 2);
    assert_eq!(marks(&s, "b"), (0, vec![]));
}

#[test]
fn the_mark_stops_before_a_row_still_waiting_and_walks_on_once_it_started() {
    let s = mem();
    let r = commit_rows(&s, "a", &["1", "2", "3", "4", "5"]);
    // 2 waits for its handlers; 3 and 4 started; 5 was marked by itself
    // (no script runs for it) before any of them.
    s.inbox_mark_handled("a", &[r[4]], 8).unwrap();
    assert_eq!(marks(&s, "a"), (0, vec![r[4]]));
    s.commit_handling("a", &[r[0], r[2], r[3]], &[], &[], 9)
        .unwrap();
    assert_eq!(marks(&s, "a"), (r[0], vec![r[2], r[3], r[4]]));
    let left = unhandled_seqs(&s, "a");
    assert_eq!(left, [r[1]]);
    assert_eq!(s.inbox_handled("a", r[1]).unwrap(), Some(false));
    assert_eq!(s.inbox_handled("a", r[3]).unwrap(), Some(true));
    // A row not waiting is never pruned by count; one handled may be.
    let p = s.delivery_prune("a", 1_000_000, 1, 10).unwrap();
    assert_eq!(p.inbox, 3, "{p:?}");
    // Once 2 started, the mark moves to it; the next rows started walk it
    // over 5, marked before.
    s.commit_handling("a", &[r[1]], &[], &[], 10).unwrap();
    assert_eq!(marks(&s, "a"), (r[1], vec![r[4]]));
    assert!(s.inbox_unhandled("a", 0, 10).unwrap().is_empty());
    let r6 = commit_rows(&s, "a", &["6"]);
    s.commit_handling("a", &r6, &[], &[], 11).unwrap();
    assert_eq!(marks(&s, "a"), (r6[0], vec![r[4]]));
    // Started again (a second report) or long gone: nothing changes.
    s.commit_handling("a", &[r[0], 999_999], &[], &[], 12)
        .unwrap();
    assert_eq!(marks(&s, "a").0, r6[0]);
}

#[test]
fn a_version_5_file_gets_a_mark_below_its_first_unhandled_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &super::schema::MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 5;
             INSERT INTO inbox (seq, instance, chat, sender, id, message, received_at, handled_at) VALUES
               (1, 'a', 'c', 's', '1', 'm1', 1, 2),
               (2, 'a', 'c', 's', '2', 'm2', 1, NULL),
               (3, 'a', 'c', 's', '3', 'm3', 1, 2),
               (4, 'b', 'c', 's', '1', 'n1', 1, 2);",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(marks(&s, "a"), (1, vec![1, 3]));
    assert_eq!(marks(&s, "b").0, 4);
    let left: Vec<String> = s
        .inbox_unhandled("a", 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .collect();
    assert_eq!(left, ["m2"]);
    assert!(s.inbox_unhandled("b", 0, 10).unwrap().is_empty());
}

#[test]
fn pruning_by_age_never_drops_a_young_row_when_the_clock_went_back() {
    let s = mem();
    let day = 86_400_000;
    let old = commit_rows_at(&s, "a", "old", 5 * day);
    let young = commit_rows_at(&s, "a", "young", 19 * day);
    // The clock went back: stamped old, but after a young row.
    let late = commit_rows_at(&s, "a", "late", day);
    let p = s.delivery_prune("a", 7 * day, 100, 20 * day).unwrap();
    assert_eq!((p.inbox, p.unhandled), (1, 1), "{p:?}");
    let left = unhandled_seqs(&s, "a");
    assert_eq!(left, [young, late]);
    assert!(old < young);
}

fn commit_rows_at(s: &Store, inst: &str, id: &str, at: u64) -> i64 {
    s.inbox_commit(inst, &[item(id, id)], at).unwrap()[0].unwrap()
}

#[test]
fn rows_started_past_a_long_walk_are_marked_too() {
    let s = mem();
    let waiting = commit_rows(&s, "a", &["w"])[0];
    let ids: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = commit_rows(&s, "a", &ids);
    s.commit_handling("a", &started, &[], &[], 9).unwrap();
    let left = unhandled_seqs(&s, "a");
    assert_eq!(left, [waiting]);
    assert_eq!(s.inbox_handled("a", started[4999]).unwrap(), Some(true));
    // Once the row that waited started, the mark moves in walks.
    s.commit_handling("a", &[waiting], &[], &[], 10).unwrap();
    let r = commit_rows(&s, "a", &["next"]);
    s.commit_handling("a", &r, &[], &[], 11).unwrap();
    s.commit_handling("a", &r, &[], &[], 11).unwrap();
    assert!(marks(&s, "a").0 > waiting);
    assert!(s.inbox_unhandled("a", 0, 10).unwrap().is_empty());
}

#[test]
fn a_new_instance_starts_its_mark_at_the_newest_row() {
    let s = mem();
    let a = commit_rows(&s, "a", &["1", "2", "3"]);
    s.ensure_instance("c", "console", 2).unwrap();
    // Everything before is someone else's: nothing of c's to walk over.
    assert_eq!(marks(&s, "c").0, a[2]);
    let c = commit_rows(&s, "c", &["1"]);
    assert_eq!(s.inbox_unhandled("c", 0, 10).unwrap()[0].seq, c[0]);
    // An instance with rows but no mark (its first row marked by itself)
    // gets one below its first waiting row.
    s.with_conn("forget", |c| {
        c.execute("DELETE FROM inbox_progress WHERE instance = 'a'", [])?;
        c.execute("UPDATE inbox SET handled_at = 3 WHERE seq = ?1", [a[0]])
    })
    .unwrap();
    s.ensure_instance("a", "console", 3).unwrap();
    assert_eq!(marks(&s, "a").0, a[1] - 1);
    assert_eq!(s.inbox_unhandled("a", 0, 10).unwrap().len(), 2);
}

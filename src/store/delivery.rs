//! The inbox and the outbox: messages in transit, so that nothing that
//! arrived is lost or handled twice and nothing sent is dropped.
//!
//! The store sees messages as JSON text under their keys; what they mean is
//! the host's business.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError, json_err, sql, to_sql_int};

/// Rows walked per commit to move the handled mark ([`mark_started`]).
const MARK_WALK: i64 = 4096;

/// SQL for the instance's (`?1`) handled mark: rows up to it are handled.
const MARK: &str = "COALESCE((SELECT handled_through FROM inbox_progress WHERE instance = ?1), 0)";

/// One message for the inbox: the key a redelivery repeats, and the message
/// as JSON.
#[derive(Debug, Clone, Copy)]
pub struct InboxItem<'a> {
    pub chat: &'a str,
    pub sender: &'a str,
    pub id: &'a str,
    pub message: &'a str,
}

/// An inbox row that has not been handled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    pub seq: i64,
    pub message: String,
}

/// A send for the outbox: its id, recipient and body as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub chat: String,
    pub body: String,
}

/// A queued send, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub id: String,
    pub chat: String,
    pub body: String,
    /// How many times it was handed to the channel before.
    pub attempts: u32,
}

/// Where a send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    Queued,
    Sent,
    Failed,
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Queued => "queued",
            SendStatus::Sent => "sent",
            SendStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<SendStatus> {
        match s {
            "queued" => Some(SendStatus::Queued),
            "sent" => Some(SendStatus::Sent),
            "failed" => Some(SendStatus::Failed),
            _ => None,
        }
    }
}

/// What `GET .../messages/{id}` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    pub id: String,
    pub chat: String,
    pub status: SendStatus,
    /// Why it failed.
    pub reason: Option<String>,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    Failed(String),
    /// Handed to the channel once more, not confirmed (yet).
    Attempted,
}

/// A `bot.store` change a message's handlers made.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWrite {
    Set {
        script: String,
        key: String,
        value: serde_json::Value,
    },
    Delete {
        script: String,
        key: String,
    },
}

/// What pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub inbox: usize,
    /// Of those, rows never handled (older than the age limit).
    pub unhandled: usize,
    pub outbox: usize,
}

/// The inbox's and outbox's rows of `instance` go (a logout, a delete).
pub(super) fn delete_delivery(
    conn: &Connection,
    op: &'static str,
    instance: &str,
) -> Result<(), StoreError> {
    for table in super::schema::DELIVERY_TABLES {
        // Table names come from our own constant list, never from input.
        conn.execute(
            &format!("DELETE FROM {table} WHERE instance = ?1"),
            [instance],
        )
        .map_err(sql(op))?;
    }
    Ok(())
}

/// Puts the instance's handled mark at the newest row of the inbox (any
/// instance's): the next account's rows all come after it (`seq` is never
/// given out twice), so its first batch walks only its own rows instead of
/// every other instance's from the start.
pub(super) fn mark_all_handled(
    conn: &Connection,
    op: &'static str,
    instance: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO inbox_progress (instance, handled_through) \
         SELECT ?1, COALESCE(MAX(seq), 0) FROM inbox",
        [instance],
    )
    .map_err(sql(op))?;
    Ok(())
}

/// Gives an instance without one its handled mark: just below its first
/// row not handled, or at the inbox's newest row. Without a mark the walks
/// from 0 would cross every other instance's rows (a new instance, one
/// that has not received anything yet).
pub(super) fn ensure_mark(
    conn: &Connection,
    op: &'static str,
    instance: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO inbox_progress (instance, handled_through) SELECT ?1, COALESCE( \
         (SELECT MIN(seq) - 1 FROM inbox WHERE +instance = ?1 AND handled_at IS NULL), \
         (SELECT COALESCE(MAX(seq), 0) FROM inbox))",
        [instance],
    )
    .map_err(sql(op))?;
    Ok(())
}

fn insert_outbox(
    conn: &Connection,
    op: &'static str,
    instance: &str,
    item: &OutboxItem,
    now: i64,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO outbox (instance, id, chat, body, status, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?5)",
    )
    .and_then(|mut st| st.execute(params![instance, item.id, item.chat, item.body, now]))
    .map_err(sql(op))?;
    Ok(conn.last_insert_rowid())
}

/// Marks the rows one by one.
fn mark_handled(
    conn: &Connection,
    op: &'static str,
    instance: &str,
    seqs: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    let mut st = conn
        .prepare_cached(
            "UPDATE inbox SET handled_at = ?3 WHERE instance = ?1 AND seq = ?2 AND handled_at IS NULL",
        )
        .map_err(sql(op))?;
    for seq in seqs {
        st.execute(params![instance, seq, now]).map_err(sql(op))?;
    }
    Ok(())
}

/// Counts the rows `started` as handled. The instance's rows from its
/// handled mark up to the newest of them are walked in order: while each
/// is one of them or was marked before, the mark moves over it (one write
/// for the lot, the usual case: scripts start rows in order). Past the
/// first row that is neither (a row still waiting for its handlers), the
/// rest are marked one by one, so the mark never passes a row not handled.
/// The walk covers at most [`MARK_WALK`] rows: a row that stays waiting
/// (one a process handed nothing of until its restart) costs later batches
/// that much, never more, and rows past the walk are marked one by one.
fn mark_started(
    conn: &Connection,
    op: &'static str,
    instance: &str,
    started: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    let mut started = started.to_vec();
    started.sort_unstable();
    started.dedup();
    let Some(&newest) = started.last() else {
        return Ok(());
    };
    let from: i64 = conn
        .prepare_cached(&format!("SELECT {MARK}"))
        .and_then(|mut st| st.query_row([instance], |r| r.get(0)))
        .map_err(sql(op))?;
    if newest <= from {
        return Ok(());
    }
    let mut mark = from;
    let mut gap = false;
    let mut singles = Vec::new();
    let mut walked = from;
    {
        // `+instance`: walk `seq` (the rowid), not the key index.
        let mut st = conn
            .prepare_cached(
                "SELECT seq, handled_at IS NOT NULL FROM inbox \
                 WHERE seq > ?2 AND seq <= ?3 AND +instance = ?1 ORDER BY seq LIMIT ?4",
            )
            .map_err(sql(op))?;
        let rows = st
            .query_map(params![instance, from, newest, MARK_WALK], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?))
            })
            .map_err(sql(op))?;
        for row in rows {
            let (seq, marked) = row.map_err(sql(op))?;
            walked = seq;
            let now_started = started.binary_search(&seq).is_ok();
            if !gap && (marked || now_started) {
                mark = seq;
            } else if !marked && !now_started {
                gap = true;
            } else if now_started && !marked {
                singles.push(seq);
            }
        }
    }
    singles.extend(started.iter().filter(|s| **s > walked));
    if mark > from {
        conn.prepare_cached(
            "INSERT INTO inbox_progress (instance, handled_through) VALUES (?1, ?2) \
             ON CONFLICT (instance) DO UPDATE SET handled_through = \
             max(handled_through, excluded.handled_through)",
        )
        .and_then(|mut st| st.execute(params![instance, mark]))
        .map_err(sql(op))?;
    }
    mark_handled(conn, op, instance, &singles, now)
}

fn write_kv(
    conn: &Connection,
    op: &'static str,
    instance: &str,
    w: &KvWrite,
    now: i64,
) -> Result<(), StoreError> {
    match w {
        KvWrite::Set { script, key, value } => {
            let text = serde_json::to_string(value).map_err(json_err(op))?;
            conn.prepare_cached(
                "INSERT INTO kv (instance, script, key, value, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (instance, script, key) \
                 DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .and_then(|mut st| st.execute(params![instance, script, key, text, now]))
            .map_err(sql(op))?;
        }
        KvWrite::Delete { script, key } => {
            conn.prepare_cached("DELETE FROM kv WHERE instance = ?1 AND script = ?2 AND key = ?3")
                .and_then(|mut st| st.execute(params![instance, script, key]))
                .map_err(sql(op))?;
        }
    }
    Ok(())
}

impl Store {
    /// Commits a batch of arrived messages in one transaction, in order.
    /// Answers, for each, its new row's `seq`, or `None` when its (chat,
    /// sender, id) is in the inbox already (a redelivery, or the same
    /// message twice in the batch): that one must not reach scripts again.
    pub fn inbox_commit(
        &self,
        instance: &str,
        items: &[InboxItem<'_>],
        now_ms: u64,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        const OP: &str = "inbox_commit";
        let now = to_sql_int(OP, "received_at", now_ms)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        let mut out = Vec::with_capacity(items.len());
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO inbox (instance, chat, sender, id, message, received_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (instance, chat, sender, id) DO NOTHING",
                )
                .map_err(sql(OP))?;
            for item in items {
                let changed = st
                    .execute(params![
                        instance,
                        item.chat,
                        item.sender,
                        item.id,
                        item.message,
                        now
                    ])
                    .map_err(sql(OP))?;
                out.push((changed == 1).then(|| tx.last_insert_rowid()));
            }
        }
        tx.commit().map_err(sql(OP))?;
        Ok(out)
    }

    /// Up to `limit` rows not handled yet with a `seq` above `after`,
    /// oldest first.
    pub fn inbox_unhandled(
        &self,
        instance: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        const OP: &str = "inbox_unhandled";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn();
        // `seq` is walked from the handled mark (or `after`) on.
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT seq, message FROM inbox WHERE seq > max(?2, {MARK}) \
                 AND +instance = ?1 AND handled_at IS NULL ORDER BY seq LIMIT ?3"
            ))
            .map_err(sql(OP))?;
        st.query_map(params![instance, after, limit], |r| {
            Ok(InboxRow {
                seq: r.get(0)?,
                message: r.get(1)?,
            })
        })
        .map_err(sql(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(OP))
    }

    /// The highest `seq` the inbox has given out so far (to anyone).
    pub fn inbox_last_seq(&self) -> Result<i64, StoreError> {
        const OP: &str = "inbox_last_seq";
        self.conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM inbox", [], |r| r.get(0))
            .map_err(sql(OP))
    }

    /// The highest `n` of the inbox keys `{prefix}{n}/…` of `instance` (0:
    /// none): the run a channel that numbers its messages per run tagged
    /// them with.
    pub fn inbox_last_run(&self, instance: &str, prefix: &str) -> Result<u64, StoreError> {
        const OP: &str = "inbox_last_run";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id FROM inbox WHERE instance = ?1 AND substr(id, 1, length(?2)) = ?2",
            )
            .map_err(sql(OP))?;
        let ids = st
            .query_map(params![instance, prefix], |r| r.get::<_, String>(0))
            .map_err(sql(OP))?;
        let mut max = 0;
        for id in ids {
            let id = id.map_err(sql(OP))?;
            let run = id
                .get(prefix.len()..)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(n, _)| n.parse::<u64>().ok());
            if let Some(n) = run {
                max = max.max(n);
            }
        }
        Ok(max)
    }

    /// Whether the row `seq` is handled (`None`: no such row).
    pub fn inbox_handled(&self, instance: &str, seq: i64) -> Result<Option<bool>, StoreError> {
        const OP: &str = "inbox_handled";
        self.conn()
            .query_row(
                &format!(
                    "SELECT handled_at IS NOT NULL OR seq <= {MARK} FROM inbox \
                     WHERE instance = ?1 AND seq = ?2"
                ),
                params![instance, seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(OP))
    }

    /// Marks rows handled (rows already marked, or gone, are left alone),
    /// in any order: rows before them still waiting stay unhandled.
    pub fn inbox_mark_handled(
        &self,
        instance: &str,
        seqs: &[i64],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.commit_handling(instance, seqs, &[], &[], now_ms)
            .map(|_| ())
    }

    /// What handling messages changed, in one transaction: the rows
    /// `handled` are marked, the script key-values written and the sends
    /// queued (answered with their outbox `seq`s, in order). Either all of
    /// it lands or none: a crash before the commit hands the messages to
    /// scripts again, with nothing of the first run kept.
    pub fn commit_handling(
        &self,
        instance: &str,
        handled: &[i64],
        kv: &[KvWrite],
        sends: &[OutboxItem],
        now_ms: u64,
    ) -> Result<Vec<i64>, StoreError> {
        const OP: &str = "commit_handling";
        let now = to_sql_int(OP, "handled_at", now_ms)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        for w in kv {
            write_kv(&tx, OP, instance, w, now)?;
        }
        let mut seqs = Vec::with_capacity(sends.len());
        for item in sends {
            seqs.push(insert_outbox(&tx, OP, instance, item, now)?);
        }
        mark_started(&tx, OP, instance, handled, now)?;
        tx.commit().map_err(sql(OP))?;
        Ok(seqs)
    }

    /// Queues one send; answers its `seq`.
    pub fn outbox_insert(
        &self,
        instance: &str,
        item: &OutboxItem,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        const OP: &str = "outbox_insert";
        let now = to_sql_int(OP, "created_at", now_ms)?;
        insert_outbox(&self.conn(), OP, instance, item, now)
    }

    /// The sends still queued, in the order they were made.
    pub fn outbox_queued(&self, instance: &str) -> Result<Vec<OutboxRow>, StoreError> {
        const OP: &str = "outbox_queued";
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT seq, id, chat, body, attempts FROM outbox \
                 WHERE instance = ?1 AND status = 'queued' ORDER BY seq",
            )
            .map_err(sql(OP))?;
        st.query_map([instance], |r| {
            Ok(OutboxRow {
                seq: r.get(0)?,
                id: r.get(1)?,
                chat: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get(4)?,
            })
        })
        .map_err(sql(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(OP))
    }

    /// Records how sends went, in one transaction. Only queued rows change:
    /// a send is sent or failed once.
    pub fn outbox_record(
        &self,
        instance: &str,
        outcomes: &[(i64, SendOutcome)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        const OP: &str = "outbox_record";
        let now = to_sql_int(OP, "updated_at", now_ms)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        {
            let mut done = tx
                .prepare_cached(
                    "UPDATE outbox SET status = ?3, reason = ?4, updated_at = ?5 \
                     WHERE instance = ?1 AND seq = ?2 AND status = 'queued'",
                )
                .map_err(sql(OP))?;
            let mut tried = tx
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, updated_at = ?3 \
                     WHERE instance = ?1 AND seq = ?2 AND status = 'queued'",
                )
                .map_err(sql(OP))?;
            for (seq, outcome) in outcomes {
                match outcome {
                    SendOutcome::Sent => done.execute(params![
                        instance,
                        seq,
                        SendStatus::Sent.as_str(),
                        None::<&str>,
                        now
                    ]),
                    SendOutcome::Failed(reason) => done.execute(params![
                        instance,
                        seq,
                        SendStatus::Failed.as_str(),
                        reason,
                        now
                    ]),
                    SendOutcome::Attempted => tried.execute(params![instance, seq, now]),
                }
                .map_err(sql(OP))?;
            }
        }
        tx.commit().map_err(sql(OP))
    }

    /// Where the send `id` of `instance` stands, if the outbox knows it.
    pub fn outbox_status(
        &self,
        instance: &str,
        id: &str,
    ) -> Result<Option<SendRecord>, StoreError> {
        const OP: &str = "outbox_status";
        let raw = self
            .conn()
            .query_row(
                "SELECT id, chat, status, reason, attempts, created_at, updated_at FROM outbox \
                 WHERE instance = ?1 AND id = ?2",
                [instance, id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(sql(OP))?;
        let Some((id, chat, status, reason, attempts, created, updated)) = raw else {
            return Ok(None);
        };
        let row = format!("outbox {instance}/{id}");
        Ok(Some(SendRecord {
            status: SendStatus::parse(&status)
                .ok_or_else(|| super::corrupt(&row, "status", &status))?,
            created_at: super::from_sql_int(&row, "created_at", created)?,
            updated_at: super::from_sql_int(&row, "updated_at", updated)?,
            id,
            chat,
            reason,
            attempts,
        }))
    }

    /// Drops rows of `instance` older than `keep_ms` and, beyond the newest
    /// `keep_rows`, handled inbox rows and finished sends. A queued send is
    /// never dropped; a message not handled goes only with age.
    pub fn delivery_prune(
        &self,
        instance: &str,
        keep_ms: u64,
        keep_rows: u64,
        now_ms: u64,
    ) -> Result<Pruned, StoreError> {
        const OP: &str = "delivery_prune";
        let cutoff = to_sql_int(OP, "cutoff", now_ms.saturating_sub(keep_ms))?;
        let keep = to_sql_int(OP, "keep_rows", keep_rows)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(OP))?;
        // By age: `seq` and `received_at` grow together (one counter, one
        // clock), so the rows below the first one young enough to keep are
        // found by walking `seq` from the oldest, without an index on age.
        // All rows below it are old by its definition, so a clock that
        // went back can only keep a row longer, never drop a young one.
        let young: Option<i64> = tx
            .query_row(
                "SELECT seq FROM inbox WHERE received_at >= ?1 ORDER BY seq LIMIT 1",
                [cutoff],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(OP))?;
        let young = young.unwrap_or(i64::MAX);
        let unhandled = tx
            .execute(
                &format!(
                    "DELETE FROM inbox WHERE seq < ?2 AND +instance = ?1 \
                     AND handled_at IS NULL AND seq > {MARK}"
                ),
                params![instance, young],
            )
            .map_err(sql(OP))?;
        let mut inbox = unhandled
            + tx.execute(
                "DELETE FROM inbox WHERE seq < ?2 AND +instance = ?1",
                params![instance, young],
            )
            .map_err(sql(OP))?;
        // The row-count parts walk `seq` (the rowid) from the newest row
        // down and from the oldest up, never sorting the instance's rows:
        // `+instance` keeps SQLite off the key index, whose plan sorted
        // all of them at every prune.
        inbox += tx
            .execute(
                &format!(
                    "DELETE FROM inbox WHERE seq <= \
                     (SELECT seq FROM inbox WHERE +instance = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2) \
                     AND +instance = ?1 AND (handled_at IS NOT NULL OR seq <= {MARK})"
                ),
                params![instance, keep],
            )
            .map_err(sql(OP))?;
        let mut outbox = tx
            .execute(
                "DELETE FROM outbox WHERE instance = ?1 AND status != 'queued' AND updated_at < ?2",
                params![instance, cutoff],
            )
            .map_err(sql(OP))?;
        outbox += tx
            .execute(
                "DELETE FROM outbox WHERE seq <= \
                 (SELECT seq FROM outbox WHERE +instance = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2) \
                 AND +instance = ?1 AND status != 'queued'",
                params![instance, keep],
            )
            .map_err(sql(OP))?;
        tx.commit().map_err(sql(OP))?;
        Ok(Pruned {
            inbox,
            unhandled,
            outbox,
        })
    }
}

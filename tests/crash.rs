//! The crash harness: the real binary killed with SIGKILL at random points
//! while a scripted sender pushes numbered messages at it, restarted on the
//! same data dir each round. The script appends each message it handles to
//! `bot.store` and answers it; what must hold at the end:
//! - every number was handled at least once, and each message exactly once.
//!   The console numbers its ids from c1 in every run, so the sender tags
//!   each line it writes with a serial (`17 s42`): that is the message's
//!   identity here (a number the sender had to send again has another);
//! - every answer (a queued send) reached the console, in the order the
//!   messages were handled; one the process wrote but could not record as
//!   sent before the kill goes again under the same id (counted, allowed);
//! - `status --json` never says open for a process that is gone, and no
//!   inbox row or queued send is left over.
//!
//! The same for a WhatsApp instance under `moonwire run`, through the mock
//! server: there the server keeps each message until the client acks it,
//! so the sender sends each number once and each must be handled exactly
//! once; the answers are checked by the ids `bot.send` gave them.
//!
//! The last line each test prints is `N rounds, N sent, N handled, N
//! duplicates, N lost`; any duplicate or loss fails it.
//! `MOONWIRE_CRASH_SEED` replays a run.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{LINE_WAIT, Sandbox, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;
/// New numbers per round (numbers not answered yet are sent again too).
const PER_ROUND: u64 = 12;

/// Logs each message by its serial, then answers it: both land together
/// with the message's handled mark, or neither does.
const SCRIPT: &str = r#"
function on_message(m)
  local n, serial = (m.text or ""):match("^(%d+) (s%d+)$")
  if not n then return end
  local log = bot.store.get("log") or {}
  log[#log + 1] = serial .. " " .. n
  bot.store.set("log", log)
  local id, err = bot.send(m.chat, "ok " .. n .. " " .. serial)
  if not id then bot.log.error("send refused: " .. tostring(err)) end
end
"#;

/// An answer line: the number and the serial of the message it answers.
fn answer(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("bot> ok ")?;
    let (n, id) = rest.split_once(' ')?;
    Some((n.parse().ok()?, id.to_string()))
}

fn console_row(dir: &Path) -> serde_json::Value {
    let out = common::command(dir)
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "console"))
        .cloned()
        .expect("a console row")
}

struct Tally {
    /// Every answer line, in the order the console printed them.
    answers: Vec<(u64, String)>,
    answered: BTreeSet<u64>,
    /// Lines the sender wrote that were numbers.
    sent: u64,
}

impl Tally {
    fn take(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            if let Some((n, id)) = answer(&line) {
                self.answered.insert(n);
                self.answers.push((n, id));
            }
        }
    }
}

fn start(sb: &Sandbox) -> Session {
    let mut s = sb.session_with(|c| {
        // Long enough that answers made right after a /drop wait in the
        // outbox for the reconnect.
        c.env("MOONWIRE_RECONNECT_BASE_MS", "40");
    });
    s.expect_starting("* open", LINE_WAIT);
    s
}

fn rng() -> StdRng {
    let seed = std::env::var("MOONWIRE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen::<u64>());
    println!("seed {seed} (MOONWIRE_CRASH_SEED={seed} replays it)");
    StdRng::seed_from_u64(seed)
}

#[test]
fn the_console_killed_at_random_points_loses_nothing_and_handles_nothing_twice() {
    let mut rng = rng();
    let sb = Sandbox::new();
    sb.script("crash.lua", SCRIPT);
    let mut tally = Tally {
        answers: Vec::new(),
        answered: BTreeSet::new(),
        sent: 0,
    };
    let mut next = 1u64;

    for round in 0..ROUNDS {
        let mut s = start(&sb);
        // What was not answered yet goes again, then new numbers.
        let mut numbers: Vec<u64> = (1..next).filter(|n| !tally.answered.contains(n)).collect();
        numbers.extend(next..next + PER_ROUND);
        next += PER_ROUND;
        let kill_after = rng.gen_range(0..=numbers.len());
        for (i, n) in numbers.iter().enumerate() {
            if i == kill_after {
                break;
            }
            tally.sent += 1;
            s.send(&format!("{n} s{}", tally.sent));
            match rng.gen_range(0..10) {
                // A dropped connection: answers made meanwhile queue.
                0 => s.send("/drop 428"),
                // Wait for some answer, so kills land after handling too.
                1 | 2 => {
                    s.wait_line_opt(Duration::from_millis(200), |l| answer(l).is_some());
                }
                _ => {}
            }
        }
        // Half the rounds drop the connection right before the kill:
        // answers not out yet wait in the outbox when the process dies.
        if rng.gen_bool(0.5) {
            s.send("/drop 428");
        }
        // Somewhere between at once and a little later.
        s.drain(Duration::from_millis(rng.gen_range(0..40)));
        tally.take(s.seen.drain(..).collect::<Vec<_>>());
        let (status, rest, stderr) = s.signal("KILL");
        assert!(
            status.code().is_none(),
            "round {round}: killed, not {status}\n{stderr}"
        );
        tally.take(rest);
        let row = console_row(sb.path());
        assert_eq!(
            (row["connection_status"].as_str(), row["state"].as_str()),
            (Some("close"), Some("closed")),
            "round {round}: a row left by a killed process is repaired: {row}"
        );
        assert_eq!(
            row["last_reason_kind"], "interrupted",
            "round {round}: {row}"
        );
    }

    // A last, clean run: everything not answered yet goes again, and it
    // runs until every number has its answer.
    let mut s = start(&sb);
    let missing: Vec<u64> = (1..next).filter(|n| !tally.answered.contains(n)).collect();
    for n in &missing {
        tally.sent += 1;
        s.send(&format!("{n} s{}", tally.sent));
    }
    let deadline = Instant::now() + LINE_WAIT;
    while (1..next).any(|n| !tally.answered.contains(&n)) && Instant::now() < deadline {
        tally.take(s.seen.drain(..).collect::<Vec<_>>());
        s.wait_line_opt(Duration::from_millis(200), |l| answer(l).is_some());
        tally.take(s.seen.drain(..).collect::<Vec<_>>());
    }
    let (rest, stderr) = s.finish();
    tally.take(rest);
    let row = console_row(sb.path());
    assert_eq!(row["connection_status"], "close", "{row}");
    assert_eq!(row["last_reason_kind"], "stopped", "{row}");

    // What the script logged, by message id.
    let store = moonwire::store::Store::open(&sb.path().join("data/moonwire.db")).unwrap();
    let log: Vec<(String, u64)> = match store.kv_get("console", "crash", "log").unwrap() {
        Some(serde_json::Value::Array(v)) => v
            .iter()
            .map(|e| {
                let (id, n) = e.as_str().unwrap().split_once(' ').unwrap();
                (id.to_string(), n.parse().unwrap())
            })
            .collect(),
        other => panic!("no log in bot.store: {other:?}\n{stderr}"),
    };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &log {
        *by_id.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: usize = by_id.values().map(|c| c - 1).sum();
    let handled_numbers: BTreeSet<u64> = log.iter().map(|(_, n)| *n).collect();
    let never_handled: Vec<u64> = (1..next).filter(|n| !handled_numbers.contains(n)).collect();
    // An answer seen for an id the log does not hold: handled, then lost.
    let logged: BTreeSet<&str> = log.iter().map(|(id, _)| id.as_str()).collect();
    let answered_not_logged: BTreeSet<&str> = tally
        .answers
        .iter()
        .map(|(_, id)| id.as_str())
        .filter(|id| !logged.contains(id))
        .collect();
    // Each logged message's answer, first time seen, in handling order;
    // a later copy of the same answer is the same send again.
    let mut first_seen: Vec<&str> = Vec::new();
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &tally.answers {
        let c = copies.entry(id.as_str()).or_default();
        if *c == 0 {
            first_seen.push(id.as_str());
        }
        *c += 1;
    }
    let resent: usize = copies.values().map(|c| c - 1).sum();
    let log_ids: Vec<&str> = log.iter().map(|(id, _)| id.as_str()).collect();
    let unanswered: Vec<&str> = log_ids
        .iter()
        .copied()
        .filter(|id| !copies.contains_key(id))
        .collect();
    // Committed, never handled: the sender wrote the number again, but this
    // message itself was lost.
    let left_in = store.inbox_unhandled("console", 0, 1000).unwrap();
    let lost = never_handled.len() + answered_not_logged.len() + unanswered.len() + left_in.len();
    let left_out = store.outbox_queued("console").unwrap();

    println!(
        "{} numbers; {} answers printed, {} of them a send again after a kill",
        next - 1,
        tally.answers.len(),
        resent
    );
    println!(
        "{ROUNDS} rounds, {} sent, {} handled, {duplicates} duplicates, {lost} lost",
        tally.sent,
        log.len()
    );
    assert_eq!(duplicates, 0, "ids handled twice: {by_id:?}");
    assert!(never_handled.is_empty(), "never handled: {never_handled:?}");
    assert!(
        answered_not_logged.is_empty(),
        "answered but not in bot.store: {answered_not_logged:?}"
    );
    assert!(
        unanswered.is_empty(),
        "handled, never answered: {unanswered:?}"
    );
    assert_eq!(first_seen, log_ids, "answers out of handling order");
    assert!(left_in.is_empty(), "inbox rows left unhandled: {left_in:?}");
    assert!(left_out.is_empty(), "sends left queued: {left_out:?}");
}

// ---------------------------------------------------------------------------
// WhatsApp, through the mock server

const WA_ROUNDS: usize = 20;
const WA_PER_ROUND: u64 = 8;
const ALICE: &str = "15550001111";

/// Logs each message with the id of its answer.
const WA_SCRIPT: &str = r#"
function on_message(m)
  local n = tonumber(m.text)
  if not n then return end
  local id, err = bot.send(m.chat, "ok " .. m.text)
  if not id then bot.log.error("send refused: " .. tostring(err)) end
  local log = bot.store.get("log") or {}
  log[#log + 1] = m.id .. " " .. m.text .. " " .. tostring(id)
  bot.store.set("log", log)
end
"#;

/// The script's log as the file holds it (read beside the running
/// process, without repairing anything): (message id, number, answer id).
fn wa_log(data: &Path) -> Vec<(String, u64, String)> {
    let c = rusqlite::Connection::open_with_flags(
        data.join("moonwire.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let text: Option<String> = c
        .query_row(
            "SELECT value FROM kv WHERE instance = 'default' AND script = 'crash' AND key = 'log'",
            [],
            |r| r.get(0),
        )
        .ok();
    let Some(text) = text else { return Vec::new() };
    let v: Vec<String> = serde_json::from_str(&text).unwrap();
    v.iter()
        .map(|e| {
            let mut p = e.split(' ');
            let id = p.next().unwrap().to_string();
            let n = p.next().unwrap().parse().unwrap();
            (id, n, p.next().unwrap().to_string())
        })
        .collect()
}

/// Inbox rows not handled and sends not finished, as the file says now.
fn wa_pending(data: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        data.join("moonwire.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row(
        "SELECT (SELECT COUNT(*) FROM inbox WHERE instance = 'default' AND handled_at IS NULL \
           AND seq > COALESCE((SELECT handled_through FROM inbox_progress WHERE instance = 'default'), 0)) \
         + (SELECT COUNT(*) FROM outbox WHERE instance = 'default' AND status = 'queued')",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn default_row(dir: &Path) -> serde_json::Value {
    let out = common::command(dir)
        .args(["status", "--json"])
        .output()
        .expect("status");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "default"))
        .cloned()
        .expect("a default row")
}

/// Ids of the `<message>` stanzas the client sent, in order.
fn sent_ids(server: &support::MockServer) -> Vec<String> {
    server
        .received()
        .iter()
        .filter(|n| n.tag == "message")
        .filter_map(|n| support::attr(n, "id"))
        .collect()
}

#[tokio::test]
async fn a_whatsapp_instance_killed_at_random_points_loses_nothing_and_handles_nothing_twice() {
    let mut rng = rng();
    let server = support::MockServer::start().await;
    let sb = Sandbox::new();
    sb.script("crash.lua", WA_SCRIPT);
    let port = common::free_port();
    let (v1, v2, v3) = support::rig::VERSION;
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[whatsapp]\nurl = \"{}\"\nversion = \"{v1}.{v2}.{v3}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"k\"\n",
            server.url()
        ),
    )
    .unwrap();
    let data = sb.path().join("data");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/v1/instances/default");
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}")).bearer_auth("k");
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                _ => None,
            }
        }
    };
    let spawn = || common::Reaper::new(common::spawn_run(sb.cmd()));

    // Pair once, and let the first message set the Signal session up.
    let mut child = spawn();
    let deadline = Instant::now() + LINE_WAIT;
    let code = loop {
        if let Some(v) = get("/qr").await
            && let Some(c) = v["code"].as_str()
        {
            break c.to_string();
        }
        assert!(Instant::now() < deadline, "no QR");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(server.scan(&code), 1);
    server
        .wait_until(support::rig::WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;
    let mut sent = 0u64;
    let mut next = 1u64;
    server.message_from(ALICE, "Alice", "1").await.unwrap();
    sent += 1;
    next += 1;
    let deadline = Instant::now() + LINE_WAIT;
    while wa_log(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first message was not handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = common::terminate(child.take()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for round in 0..WA_ROUNDS {
        let mut child = spawn();
        // Some numbers wait at the server for the login, some come while
        // it runs; the kill lands anywhere from the login on.
        let early = rng.gen_range(0..=WA_PER_ROUND);
        for _ in 0..early {
            server
                .message_from(ALICE, "Alice", &next.to_string())
                .await
                .unwrap();
            next += 1;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..600))).await;
        for _ in early..WA_PER_ROUND {
            server
                .message_from(ALICE, "Alice", &next.to_string())
                .await
                .unwrap();
            next += 1;
            sent += 1;
        }
        // Mostly while that burst is being handled.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..60))).await;
        let mut c = child.take();
        c.kill().unwrap(); // SIGKILL
        let status = tokio::task::spawn_blocking(move || c.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: killed, not {status}"
        );
        let row = default_row(sb.path());
        assert_eq!(
            (row["connection_status"].as_str(), row["state"].as_str()),
            (Some("close"), Some("closed")),
            "round {round}: a row left by a killed process is repaired: {row}"
        );
    }

    // A last, clean run until every number is handled and every answer out.
    let mut child = spawn();
    let deadline = Instant::now() + support::rig::WAIT;
    loop {
        let open = get("").await.is_some_and(|v| v["state"] == "open");
        if open {
            break;
        }
        assert!(Instant::now() < deadline, "the last run never opened");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    loop {
        let log = wa_log(&data);
        let out = sent_ids(&server);
        let done = log.len() as u64 >= next - 1
            && log.iter().all(|(_, _, rid)| out.contains(rid))
            && server.unacked().is_empty()
            && wa_pending(&data) == 0;
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = common::terminate(child.take()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let row = default_row(sb.path());
    assert_eq!(row["connection_status"], "close", "{row}");
    assert_eq!(row["last_reason_kind"], "stopped", "{row}");

    let log = wa_log(&data);
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut by_number: BTreeMap<u64, usize> = BTreeMap::new();
    for (id, n, _) in &log {
        *by_id.entry(id.as_str()).or_default() += 1;
        *by_number.entry(*n).or_default() += 1;
    }
    let duplicates: usize = by_id.values().map(|c| c - 1).sum::<usize>()
        + by_number.values().map(|c| c - 1).sum::<usize>();
    let never_handled: Vec<u64> = (1..next).filter(|n| !by_number.contains_key(n)).collect();
    let out = sent_ids(&server);
    let mut first_seen: Vec<&str> = Vec::new();
    for id in &out {
        if !first_seen.contains(&id.as_str()) {
            first_seen.push(id);
        }
    }
    let answers: Vec<&str> = log.iter().map(|(_, _, rid)| rid.as_str()).collect();
    let unanswered: Vec<&str> = answers
        .iter()
        .copied()
        .filter(|rid| !first_seen.contains(rid))
        .collect();
    let answers_seen: Vec<&str> = first_seen
        .iter()
        .copied()
        .filter(|id| answers.contains(id))
        .collect();
    let resent = out
        .iter()
        .filter(|id| answers.contains(&id.as_str()))
        .count()
        - answers_seen.len();
    let store = moonwire::store::Store::open(&data.join("moonwire.db")).unwrap();
    let left_in = store.inbox_unhandled("default", 0, 1000).unwrap();
    let left_out = store.outbox_queued("default").unwrap();
    let lost = never_handled.len() + unanswered.len() + left_in.len();
    println!(
        "{} numbers; {} answers sent, {resent} of them again under the same id after a kill; {} unacked at the server",
        next - 1,
        out.len(),
        server.unacked().len()
    );
    println!(
        "{WA_ROUNDS} rounds, {sent} sent, {} handled, {duplicates} duplicates, {lost} lost",
        log.len()
    );
    assert_eq!(duplicates, 0, "handled twice: {log:?}");
    assert!(
        never_handled.is_empty(),
        "never handled: {never_handled:?}\n{stderr}"
    );
    assert!(unanswered.is_empty(), "answers never sent: {unanswered:?}");
    assert_eq!(answers_seen, answers, "answers out of handling order");
    assert!(left_in.is_empty(), "inbox rows left unhandled: {left_in:?}");
    assert!(left_out.is_empty(), "sends left queued: {left_out:?}");
    assert!(
        server.unacked().is_empty(),
        "not acked: {:?}",
        server.unacked()
    );
}

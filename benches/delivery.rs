//! What the inbox costs: inbound throughput through the whole host (console
//! channel, actor, inbox, Lua engine with a trivial `on_message`) with the
//! inbox on, and off (`HostSettings::inbox = false`: messages go straight
//! to the scripts, nothing durable); then the store's commits alone, per
//! message, on a file in WAL mode.
//!
//! Run with `cargo bench --bench delivery`; `BENCH_N` sets the messages per
//! run (default 5000), `BENCH_RUNS` the runs per mode (default 3, the
//! median is shown).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moonwire::channel::console::ConsoleOut;
use moonwire::config::ChannelKind;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostEvent, HostSettings};
use moonwire::lifecycle::State;
use moonwire::script::EngineConfig;
use moonwire::store::{InboxItem, KvWrite, Store};

/// Trivial, and tells the bench when the last message was handled.
const SCRIPT: &str = r#"
function on_message(m)
  if m.text == "last" then bot.send(m.chat, "done") end
end
"#;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this process has used so far, all threads (Linux; 0
/// elsewhere): with the wall time, how many cores a run kept busy.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // After the command name's closing parenthesis, utime and stime are
    // the 12th and 13th fields, in clock ticks (100 per second).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Seconds for `n` messages pushed at once to be handled, and the CPU
/// seconds spent meanwhile.
async fn through_the_host(inbox: bool, n: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    std::fs::write(scripts.join("t.lua"), SCRIPT).expect("script");
    let store = Arc::new(Store::open(&dir.path().join("moonwire.db")).expect("store"));
    let bus = EventBus::default();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Instant>();
    let done_tx = std::sync::Mutex::new(done_tx);
    bus.observe(move |ev| {
        if let HostEvent::MessageOut { .. } = ev {
            let _ = done_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Instant::now());
        }
    });
    let settings = HostSettings {
        inbox,
        ..HostSettings::default()
    };
    let engine = EngineConfig {
        dir: scripts,
        ..EngineConfig::default()
    };
    let app = App::new(
        store,
        bus,
        settings,
        engine,
        Arc::new(ConsoleOut::logging()),
    )
    .expect("app");
    let handle = app
        .start_instance("bench", ChannelKind::Console)
        .expect("instance");
    handle.connect();
    let mut w = handle.watch();
    tokio::time::timeout(
        Duration::from_secs(30),
        w.wait_for(|s| matches!(s.state, State::Open { .. })),
    )
    .await
    .expect("open in time")
    .expect("actor alive");
    app.host.settle().await;
    let sim = app.console_sim("bench").expect("a simulated server");
    let cpu = cpu_seconds();
    let start = Instant::now();
    for _ in 1..n {
        sim.deliver("x");
    }
    sim.deliver("last");
    let end = tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(300)))
        .await
        .expect("waiter")
        .expect("the last message handled");
    let secs = end.duration_since(start).as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    handle.stop();
    app.shutdown().await;
    (secs, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Microseconds per message of `f` run over `n` messages.
fn per_message(n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn commits_alone(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("moonwire.db")).expect("store");
    let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let body = r#"{"id":"m","chat":"a@console","sender":"a@console","text":"x","kind":"text"}"#;
    fn item<'a>(id: &'a str, body: &'a str) -> InboxItem<'a> {
        InboxItem {
            chat: "a@console",
            sender: "a@console",
            id,
            message: body,
        }
    }
    let mut seqs = Vec::with_capacity(n);
    let one = per_message(n, || {
        for id in &ids {
            let s = store
                .inbox_commit("one", &[item(id, body)], 1)
                .expect("commit");
            seqs.push(s[0].expect("new"));
        }
    });
    let batched = per_message(n, || {
        for chunk in ids.chunks(64) {
            let items: Vec<InboxItem<'_>> = chunk.iter().map(|id| item(id, body)).collect();
            store.inbox_commit("batched", &items, 1).expect("commit");
        }
    });
    let again = per_message(n, || {
        for chunk in ids.chunks(64) {
            let items: Vec<InboxItem<'_>> = chunk.iter().map(|id| item(id, body)).collect();
            store.inbox_commit("batched", &items, 1).expect("commit");
        }
    });
    let marks = per_message(n, || {
        for s in &seqs {
            store
                .commit_handling("one", &[*s], &[], &[], 2)
                .expect("mark");
        }
    });
    let kv = [KvWrite::Set {
        script: "t".into(),
        key: "n".into(),
        value: serde_json::json!(1),
    }];
    let marks_kv = per_message(n, || {
        for s in &seqs {
            store
                .commit_handling("one", &[*s], &kv, &[], 3)
                .expect("mark");
        }
    });
    println!("store alone, {n} messages, file in WAL mode (synchronous=NORMAL):");
    println!("  inbox commit, one per transaction    {one:7.1} us/message");
    println!("  inbox commit, 64 per transaction     {batched:7.1} us/message");
    println!("  the same again (all redeliveries)    {again:7.1} us/message");
    println!("  handled mark, one per transaction    {marks:7.1} us/message");
    println!("  handled mark + one bot.store write   {marks_kv:7.1} us/message");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("BENCH_N", 5000).max(2);
    let runs = env("BENCH_RUNS", 3).max(1);
    // Warm up (page cache, allocator, Lua) once each way.
    through_the_host(true, n / 5).await;
    through_the_host(false, n / 5).await;

    let mut on = Vec::new();
    let mut off = Vec::new();
    let (mut cpu_on, mut cpu_off) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (secs, cpu) = through_the_host(true, n).await;
        on.push(secs);
        cpu_on.push(cpu / secs);
        let (secs, cpu) = through_the_host(false, n).await;
        off.push(secs);
        cpu_off.push(cpu / secs);
    }
    let (on, off) = (median(on), median(off));
    let (cpu_on, cpu_off) = (median(cpu_on), median(cpu_off));
    let (rate_on, rate_off) = (n as f64 / on, n as f64 / off);
    println!("through the host, {n} messages pushed at once, median of {runs}:");
    println!(
        "  inbox off  {rate_off:9.0} messages/s  {:6.1} us/message  {cpu_off:4.2} cores busy",
        off * 1e6 / n as f64
    );
    println!(
        "  inbox on   {rate_on:9.0} messages/s  {:6.1} us/message  {cpu_on:4.2} cores busy",
        on * 1e6 / n as f64
    );
    println!(
        "  loss {:.1} %  ({:.1} us/message for the inbox)",
        (1.0 - rate_on / rate_off) * 100.0,
        (on - off) * 1e6 / n as f64
    );
    commits_alone(n);
}

//! Message dispatch: a trivial Lua `on_message` that replies "pong", against
//! a native Rust handler doing the same on its own thread, so the ratio
//! isolates what the Lua engine costs per message.
//!
//! Run with `cargo bench --bench dispatch`; `BENCH_N` sets the open-loop
//! message count (default 20000), `BENCH_CLOSED` the closed-loop round trips
//! (default 2000).

mod common;

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Recorder;
use moonwire::channel::{Incoming, OutBody, Outgoing};
use moonwire::script::{Actions, Engine, EngineConfig, Pool};

const SCRIPT: &str = r#"function on_message(m) m:reply("pong") end"#;
const WARMUP: usize = 500;
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn counting() -> (Arc<Recorder>, Receiver<(Instant, Outgoing)>) {
    Recorder::new()
}

fn incoming(i: usize) -> Incoming {
    common::incoming(i, "ping")
}

/// The index of the message a reply answers (its quoted id).
fn answered(out: &Outgoing) -> usize {
    match &out.body {
        OutBody::Text {
            text,
            quote: Some(q),
        } if text == "pong" => q.parse().expect("quoted id is an index"),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// One way of getting messages to a handler.
trait Dispatch {
    fn dispatch(&self, m: Incoming);
}

struct Lua(Engine);

impl Dispatch for Lua {
    fn dispatch(&self, m: Incoming) {
        self.0.message(m);
    }
}

struct Native {
    tx: Option<Sender<Incoming>>,
    thread: Option<JoinHandle<()>>,
}

impl Native {
    fn spawn(actions: Arc<dyn Actions>) -> Native {
        let (tx, rx) = mpsc::channel::<Incoming>();
        let handler = move |m: &Incoming| {
            let out = Outgoing::text(m.chat.as_str(), "pong", Some(m.id.clone()));
            if let Err(e) = actions.send(out) {
                eprintln!("native send failed: {e}");
            }
        };
        let thread = std::thread::Builder::new()
            .name("native".into())
            .spawn(move || {
                while let Ok(m) = rx.recv() {
                    handler(&m);
                }
            })
            .expect("spawn the native thread");
        Native {
            tx: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Dispatch for Native {
    fn dispatch(&self, m: Incoming) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Figures {
    name: &'static str,
    msgs_per_sec: f64,
    open: (Duration, Duration),
    closed: (Duration, Duration),
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx]
}

fn p50_p99(mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort_unstable();
    (percentile(&lat, 50.0), percentile(&lat, 99.0))
}

fn recv_reply(rx: &Receiver<(Instant, Outgoing)>) -> (Instant, usize) {
    let (at, out) = rx
        .recv_timeout(REPLY_TIMEOUT)
        .expect("a reply within the timeout");
    (at, answered(&out))
}

/// Send one, wait for its reply, repeat: the per-message hook latency.
fn closed_loop(
    path: &dyn Dispatch,
    rx: &Receiver<(Instant, Outgoing)>,
    first: usize,
    rounds: usize,
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(rounds);
    for i in first..first + rounds {
        let m = incoming(i);
        let sent = Instant::now();
        path.dispatch(m);
        let (at, idx) = recv_reply(rx);
        assert_eq!(idx, i, "replies come back in order");
        lat.push(at.duration_since(sent));
    }
    lat
}

/// Enqueue all `n` at once, then collect every reply.
fn open_loop(
    path: &dyn Dispatch,
    rx: &Receiver<(Instant, Outgoing)>,
    first: usize,
    n: usize,
) -> (f64, Vec<Duration>) {
    let msgs: Vec<Incoming> = (first..first + n).map(incoming).collect();
    let mut sent = Vec::with_capacity(n);
    let start = Instant::now();
    for m in msgs {
        sent.push(Instant::now());
        path.dispatch(m);
    }
    let mut got: Vec<Option<Instant>> = vec![None; n];
    let mut last = start;
    for _ in 0..n {
        let (at, idx) = recv_reply(rx);
        let slot = &mut got[idx - first];
        assert!(slot.is_none(), "message {idx} answered twice");
        *slot = Some(at);
        last = last.max(at);
    }
    let lat = sent
        .iter()
        .zip(&got)
        .map(|(s, r)| r.expect("every message answered").duration_since(*s))
        .collect();
    (n as f64 / last.duration_since(start).as_secs_f64(), lat)
}

fn measure(
    name: &'static str,
    path: &dyn Dispatch,
    rx: &Receiver<(Instant, Outgoing)>,
    n: usize,
    rounds: usize,
) -> Figures {
    closed_loop(path, rx, 0, WARMUP);
    let (msgs_per_sec, open) = open_loop(path, rx, WARMUP, n);
    let closed = closed_loop(path, rx, WARMUP + n, rounds);
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "no stray replies"
    );
    Figures {
        name,
        msgs_per_sec,
        open: p50_p99(open),
        closed: p50_p99(closed),
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a count")),
        Err(_) => default,
    }
}

fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let n = env_usize("BENCH_N", 20_000).max(1);
    let rounds = env_usize("BENCH_CLOSED", 2_000).max(1);

    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("pong.lua"), SCRIPT).expect("write the script");

    let lua = {
        let (actions, rx) = counting();
        let config = EngineConfig {
            dir: dir.path().to_path_buf(),
            ..EngineConfig::default()
        };
        let pool = Pool::new(1).expect("start the engine pool");
        let engine = pool.spawn(config, actions, 1).expect("spawn the engine");
        engine.settle().blocking_recv().expect("the engine settles");
        let status = engine.status();
        assert!(
            status.errors.is_empty() && status.files.len() == 1,
            "script loaded: {status:?}"
        );
        let path = Lua(engine);
        let f = measure("lua", &path, &rx, n, rounds);
        let _ = path.0.shutdown().blocking_recv();
        f
    };

    let native = {
        let (actions, rx) = counting();
        let path = Native::spawn(actions);
        measure("native", &path, &rx, n, rounds)
    };

    println!(
        "dispatch: open loop N={n} (all enqueued at once), closed loop {rounds} round trips, {WARMUP} warm-up"
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "path", "msgs/s", "open p50", "open p99", "closed p50", "closed p99"
    );
    for f in [&lua, &native] {
        println!(
            "{:<8} {:>12.0} {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>10.1}µs",
            f.name,
            f.msgs_per_sec,
            us(f.open.0),
            us(f.open.1),
            us(f.closed.0),
            us(f.closed.1),
        );
    }
    let ratio = |a: Duration, b: Duration| us(a) / us(b).max(f64::MIN_POSITIVE);
    println!(
        "{:<8} {:>11.2}x {:>11.2}x {:>11.2}x {:>11.2}x {:>11.2}x",
        "lua/nat",
        lua.msgs_per_sec / native.msgs_per_sec,
        ratio(lua.open.0, native.open.0),
        ratio(lua.open.1, native.open.1),
        ratio(lua.closed.0, native.closed.0),
        ratio(lua.closed.1, native.closed.1),
    );
    println!(
        "peak RSS (VmHWM): {}",
        peak_rss().unwrap_or_else(|| "unavailable".into())
    );
}

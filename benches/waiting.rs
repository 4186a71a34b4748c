//! Many handlers waiting at once: one instance gets a burst of N messages
//! whose handlers each `bot.sleep(100)`; prints the wall time until all
//! have answered and the memory they took while waiting.
//!
//! Run with `cargo bench --bench waiting`; `BENCH_WAITERS` sets N (10000).

mod common;

use std::time::{Duration, Instant};

use common::{Recorder, incoming, peak_rss_kb, rss_kb};
use moonwire::script::{EngineConfig, Pool};

fn main() {
    let n: usize = std::env::var("BENCH_WAITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("w.lua"),
        "function on_message(m) bot.sleep(100) m:reply('done') end\n",
    )
    .expect("write the script");
    let (actions, replies) = Recorder::new();
    let pool = Pool::new(1).expect("pool");
    let engine = pool
        .spawn(
            EngineConfig {
                dir: dir.path().to_path_buf(),
                max_waiting: n,
                ..EngineConfig::default()
            },
            actions,
            1,
        )
        .expect("engine");
    let _ = engine.settle().blocking_recv();
    let before = rss_kb();
    let started = Instant::now();
    for i in 0..n {
        engine.message(incoming(i, "sleep"));
    }
    let _ = engine.settle_started().blocking_recv();
    let queued = started.elapsed();
    let during = rss_kb();
    for _ in 0..n {
        replies
            .recv_timeout(Duration::from_secs(60))
            .expect("every handler answers");
    }
    let wall = started.elapsed();
    println!("waiting: {n} handlers on one instance, each bot.sleep(100)");
    println!(
        "all started in {:.0} ms, all answered in {:.0} ms (the sleep itself is 100 ms)",
        queued.as_secs_f64() * 1000.0,
        wall.as_secs_f64() * 1000.0
    );
    println!(
        "rss: {before} kB before, {during} kB with all waiting ({:.2} kB per waiting handler), peak {} kB",
        during.saturating_sub(before) as f64 / n as f64,
        peak_rss_kb()
    );
    let _ = engine.shutdown().blocking_recv();
}

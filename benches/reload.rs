//! Reload under a steady message stream: from a script's write to the
//! first message the new generation answers (the watcher's debounce
//! included), over 100 reloads, and whether any message was lost or
//! answered twice across them. Engine, watcher and folder are the real
//! ones; replies are recorded at the `Actions` boundary.
//!
//! Run with `cargo bench --bench reload`; `BENCH_RELOADS` sets the count.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Recorder, incoming, percentile, text_of};
use moonwire::script::{EngineConfig, Pool, watch};

fn version(v: usize) -> String {
    format!("function on_message(m) m:reply('v{v} ' .. m.text) end\n")
}

fn main() {
    let reloads: usize = std::env::var("BENCH_RELOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("t.lua");
    std::fs::write(&file, version(0)).expect("write the script");
    let (actions, replies) = Recorder::new();
    let pool = Pool::new(1).expect("pool");
    let engine = Arc::new(
        pool.spawn(
            EngineConfig {
                dir: dir.path().to_path_buf(),
                ..EngineConfig::default()
            },
            actions,
            1,
        )
        .expect("engine"),
    );
    let _ = engine.settle().blocking_recv();
    let e = engine.clone();
    let _watcher = watch::watch(dir.path(), watch::DEBOUNCE, move || {
        drop(e.reload());
    })
    .expect("watch the folder");

    // The steady stream: one message every millisecond.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, sent, engine) = (stop.clone(), sent.clone(), engine.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                engine.message(incoming(i, &format!("m{i}")));
                i += 1;
                sent.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let mut answers: HashMap<String, usize> = HashMap::new();
    let mut latency = Vec::with_capacity(reloads);
    let mut record = |out: &moonwire::channel::Outgoing| -> Option<usize> {
        let text = text_of(out);
        let (v, msg) = text.split_once(' ')?;
        *answers.entry(msg.to_string()).or_insert(0) += 1;
        v.strip_prefix('v')?.parse().ok()
    };
    for v in 1..=reloads {
        // An in-place save, as most editors' "write" does.
        std::fs::write(&file, version(v)).expect("rewrite the script");
        let written = Instant::now();
        loop {
            let (at, out) = replies
                .recv_timeout(Duration::from_secs(30))
                .expect("replies keep coming");
            if record(&out) == Some(v) {
                latency.push(at.duration_since(written));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("the sender");
    let total = sent.load(Ordering::Relaxed);
    let _ = engine.settle().blocking_recv();
    while let Ok((_, out)) = replies.recv_timeout(Duration::from_millis(500)) {
        record(&out);
    }
    let lost = (0..total)
        .filter(|i| !answers.contains_key(&format!("m{i}")))
        .count();
    let twice = answers.values().filter(|n| **n > 1).count();
    latency.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reload: {reloads} reloads under a stream of one message per ms (watcher debounce {} ms)",
        watch::DEBOUNCE.as_millis()
    );
    println!(
        "write -> first answer of the new generation: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(percentile(&latency, 50.0)),
        ms(percentile(&latency, 90.0)),
        ms(percentile(&latency, 100.0)),
    );
    println!("{total} messages sent, {lost} lost, {twice} answered twice");
    let _ = engine.shutdown().blocking_recv();
}

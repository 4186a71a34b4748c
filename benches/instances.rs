//! Memory per instance: starts N simulated (console) instances, each with
//! its own Lua state running the default script on the shared engine
//! workers, opens them all, and prints the resident-set growth per
//! instance, the time to open them all and the process's OS threads.
//! `BENCH_INSTANCES` sets N (default 2000).

mod common;

use common::rss_kb;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moonwire::channel::console::ConsoleOut;
use moonwire::config::ChannelKind;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostSettings};
use moonwire::lifecycle::State;
use moonwire::script::EngineConfig;

fn main() {
    let n: usize = std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_dir, scripts, store) = common::data_dir_with_default_script();
        let app = App::new(
            store,
            EventBus::default(),
            HostSettings::default(),
            EngineConfig {
                dir: scripts,
                ..EngineConfig::default()
            },
            Arc::new(ConsoleOut::logging()),
        )
        .expect("app");
        let before = rss_kb();
        let started = Instant::now();
        let mut handles = Vec::new();
        for i in 0..n {
            let h = app
                .start_instance(&format!("bot{i}"), ChannelKind::Console)
                .expect("instance");
            h.connect();
            handles.push(h);
        }
        for h in &handles {
            let mut w = h.watch();
            tokio::time::timeout(Duration::from_secs(30), w.wait_for(|s| matches!(s.state, State::Open { .. })))
                .await
                .expect("opened")
                .expect("alive");
        }
        app.host.settle().await;
        let elapsed = started.elapsed();
        let after = rss_kb();
        println!("instances: {n} opened in {:.0} ms", elapsed.as_secs_f64() * 1000.0);
        println!(
            "rss: {before} kB before, {after} kB after, {:.1} kB per instance (host actor + Lua state + default script)",
            (after.saturating_sub(before)) as f64 / n as f64
        );
        println!(
            "os threads: {} (engine workers: {}, tokio: one per core, plus the blocking pool)",
            common::threads(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        app.shutdown().await;
    });
}

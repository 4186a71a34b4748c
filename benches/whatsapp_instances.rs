//! Memory and time per WhatsApp instance, with the real whatsapp-rust client
//! against the in-process mock server: starts N instances, has the mock's
//! phone scan each QR, waits until all are open, then keeps them open for a
//! while (pings, nothing else) to see whether memory grows. Prints figures.
//! `BENCH_WA_INSTANCES` sets N (default 50), `BENCH_WA_HOLD_S` the hold (20).
//!
//! The resident set includes the mock server's side of every connection,
//! so the per-instance figure is an upper bound for moonwire's share.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use common::rss_kb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moonwire::channel::console::ConsoleOut;
use moonwire::config::ChannelKind;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostEvent, HostSettings};
use moonwire::lifecycle::StateName;
use moonwire::script::EngineConfig;
use support::MockServer;
use support::rig::VERSION;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env_num("BENCH_WA_INSTANCES", 50) as usize;
    let hold = Duration::from_secs(env_num("BENCH_WA_HOLD_S", 20));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = MockServer::start().await;
        let (_dir, scripts, store) = common::data_dir_with_default_script();
        let bus = EventBus::default();
        // The latest QR and state per instance.
        let qrs: Arc<Mutex<HashMap<String, String>>> = Default::default();
        let states: Arc<Mutex<HashMap<String, StateName>>> = Default::default();
        {
            let (qrs, states) = (qrs.clone(), states.clone());
            bus.observe(move |ev| match ev {
                HostEvent::Qr { instance, code, .. } => {
                    qrs.lock().unwrap().insert(instance.clone(), code.clone());
                }
                HostEvent::State {
                    instance,
                    transition,
                    ..
                } => {
                    states
                        .lock()
                        .unwrap()
                        .insert(instance.clone(), transition.state.name());
                }
                _ => {}
            });
        }
        let app = App::new(
            store,
            bus,
            HostSettings::default(),
            EngineConfig {
                dir: scripts,
                ..EngineConfig::default()
            },
            Arc::new(ConsoleOut::logging()),
        )
        .expect("app")
        .with_whatsapp_url(server.url())
        .with_whatsapp_version(VERSION);

        let before = rss_kb();
        let started = Instant::now();
        let mut handles = Vec::new();
        for i in 0..n {
            let h = app
                .start_instance(&format!("wa{i}"), ChannelKind::Whatsapp)
                .expect("instance");
            h.connect();
            handles.push(h);
        }
        // Scan each QR shown once, as the phone would (an instance that
        // had to reconnect shows a new one).
        let mut scanned = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let open = states
                .lock()
                .unwrap()
                .values()
                .filter(|s| **s == StateName::Open)
                .count();
            if open == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {open} of {n} instances opened"
            );
            let pending: Vec<(String, String)> = qrs
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, code)| !scanned.contains(*code))
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect();
            // Each instance links its own account (instance `waK` as
            // account K).
            for (instance, code) in pending {
                let k = instance
                    .trim_start_matches("wa")
                    .parse::<usize>()
                    .expect("instance waK");
                if server.scan_as(&code, k).is_ok_and(|sent| sent > 0) {
                    scanned.insert(code);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let opened_in = started.elapsed();
        let after_open = rss_kb();
        tokio::time::sleep(hold).await;
        let after_hold = rss_kb();

        let per = |kb: u64| kb.saturating_sub(before) as f64 / n as f64;
        println!("whatsapp instances (real client against the mock): {n}");
        println!(
            "paired and open in {:.0} ms ({:.1} ms per instance)",
            opened_in.as_secs_f64() * 1000.0,
            opened_in.as_secs_f64() * 1000.0 / n as f64
        );
        println!(
            "RSS before {before} kB, all open {after_open} kB ({:.0} kB per instance), after {} s open {after_hold} kB ({:.0} kB per instance)",
            per(after_open),
            hold.as_secs(),
            per(after_hold),
        );
        println!(
            "growth while open: {:+} kB total",
            after_hold as i64 - after_open as i64
        );
        for h in &handles {
            h.stop();
        }
        app.shutdown().await;
    });
}

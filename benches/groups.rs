//! What asking for a group's admins on every message costs: one instance
//! gets N group messages whose handler calls `bot.groups.info(m.chat)`
//! (answered from the instance's `GroupCache`, as a fresh entry is),
//! looks for the sender among the participants and replies; the same
//! without the call is the baseline. Prints messages per second and the
//! cost per call for a group of M members. The host adds a task hop per
//! call on top (the call runs on its runtime); this measures the engine
//! and the cache.
//!
//! Run with `cargo bench --bench groups`; `BENCH_MESSAGES` sets N (5000),
//! `BENCH_MEMBERS` sets M (1000).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Recorder, incoming};
use moonwire::channel::groups::{GroupInfo, GroupOp, GroupReply, Participant};
use moonwire::host::instance::GroupCache;
use moonwire::script::{Actions, BoxFuture, EngineConfig, Pool, ScriptError};

const GROUP: &str = "120363000000000001@g.us";

/// The recorder's sends, and group calls answered from a cache.
struct Cached {
    inner: Arc<Recorder>,
    cache: Mutex<GroupCache>,
}

impl Actions for Cached {
    fn instance(&self) -> &str {
        self.inner.instance()
    }
    fn state(&self) -> String {
        self.inner.state()
    }
    fn send(&self, out: moonwire::channel::Outgoing) -> Result<(), String> {
        self.inner.send(out)
    }
    fn logout(&self) {}
    fn store_get(&self, a: &str, b: &str) -> Result<Option<serde_json::Value>, String> {
        self.inner.store_get(a, b)
    }
    fn store_set(&self, a: &str, b: &str, v: &serde_json::Value) -> Result<(), String> {
        self.inner.store_set(a, b, v)
    }
    fn store_delete(&self, a: &str, b: &str) -> Result<(), String> {
        self.inner.store_delete(a, b)
    }
    fn report(&self, error: &ScriptError, generation: u64) {
        self.inner.report(error, generation)
    }
    fn group(&self, op: GroupOp) -> BoxFuture<Result<GroupReply, String>> {
        let r = match op {
            GroupOp::Info(j) => self
                .cache
                .lock()
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    c.get(&j, tokio::time::Instant::now())
                        .ok_or_else(|| "not cached".to_string())
                })
                .map(GroupReply::Info),
            _ => Err("not in this bench".into()),
        };
        Box::pin(std::future::ready(r))
    }
}

fn run(n: usize, members: usize, script: &str) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("g.lua"), script).expect("write the script");
    let (recorder, replies) = Recorder::new();
    let mut cache = GroupCache::default();
    cache.put(
        GroupInfo {
            jid: GROUP.into(),
            subject: "Bench".into(),
            participants: (0..members)
                .map(|i| Participant {
                    jid: format!("{}@s.whatsapp.net", 15_550_000_000u64 + i as u64),
                    admin: i < 3,
                    super_admin: i == 0,
                })
                .collect(),
            ..GroupInfo::default()
        },
        tokio::time::Instant::now(),
    );
    let actions = Arc::new(Cached {
        inner: recorder,
        cache: Mutex::new(cache),
    });
    let pool = Pool::new(1).expect("pool");
    let engine = pool
        .spawn(
            EngineConfig {
                dir: dir.path().to_path_buf(),
                ..EngineConfig::default()
            },
            actions,
            1,
        )
        .expect("engine");
    let _ = engine.settle().blocking_recv();
    let started = Instant::now();
    for i in 0..n {
        let mut m = incoming(i, "hello");
        m.chat = GROUP.into();
        m.is_group = true;
        m.sender = format!(
            "{}@s.whatsapp.net",
            15_550_000_000u64 + (i % members) as u64
        );
        engine.message(m);
    }
    for _ in 0..n {
        replies
            .recv_timeout(Duration::from_secs(120))
            .expect("every handler answers");
    }
    let wall = started.elapsed();
    let _ = engine.shutdown().blocking_recv();
    wall
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("BENCH_MESSAGES", 5000);
    let members = env("BENCH_MEMBERS", 1000);
    let with_info = r#"
function on_message(m)
  local g = bot.groups.info(m.chat)
  local admin = false
  for _, p in ipairs(g.participants) do
    if p.jid == m.sender then admin = p.admin break end
  end
  m:reply(admin and "admin" or "member")
end
"#;
    let baseline = "function on_message(m) m:reply('member') end\n";
    let base = run(n, members, baseline);
    let info = run(n, members, with_info);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("groups: {n} group messages, a group of {members} members, one worker");
    println!(
        "baseline (reply only): {:.0} messages/s; with bot.groups.info + admin lookup: {:.0} messages/s",
        rate(base),
        rate(info)
    );
    println!(
        "cost of asking the cache per message: {:.1} µs",
        (info.as_secs_f64() - base.as_secs_f64()) * 1e6 / n as f64
    );
}

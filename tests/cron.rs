//! `bot.cron` in the real host on an injected clock: runs, cancel, reload
//! disposal, catch-up across a restart, the queue's bound, and bad specs
//! as load errors. (When a spec runs — DST in two zones, steps, names — is
//! unit-tested in automation::cron.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moonwire::automation::clock::ManualClock;
use moonwire::automation::cron::Zone;
use moonwire::channel::console::ConsoleOut;
use moonwire::config::ChannelKind;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostEvent, HostSettings};
use moonwire::script::EngineConfig;
use moonwire::store::Store;
use serde_json::Value;

const INSTANCE: &str = "c";

/// Unix ms of an RFC 3339 time.
fn at(t: &str) -> u64 {
    t.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64
}

const BUMP: &str = "local function bump(k) bot.store.set(k, (bot.store.get(k) or 0) + 1) end\n";

struct Bot {
    app: Arc<App>,
    data: PathBuf,
}

impl Bot {
    async fn start(data: &Path, scripts: &Path, clock: &ManualClock) -> Bot {
        Bot::start_with(data, scripts, clock, |_| {}).await
    }

    async fn start_with(
        data: &Path,
        scripts: &Path,
        clock: &ManualClock,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Bot {
        let store = Arc::new(Store::open(&data.join("moonwire.db")).unwrap());
        let mut engine = EngineConfig {
            dir: scripts.to_path_buf(),
            clock: clock.clock(),
            zone: Some(Zone::utc()),
            ..EngineConfig::default()
        };
        tweak(&mut engine);
        let app = Arc::new(
            App::new(
                store,
                EventBus::default(),
                HostSettings::default(),
                engine,
                Arc::new(ConsoleOut::logging()),
            )
            .unwrap(),
        );
        app.start_instance(INSTANCE, ChannelKind::Console).unwrap();
        let bot = Bot {
            app,
            data: data.to_path_buf(),
        };
        bot.wait("the first load", || {
            bot.app
                .scripts
                .status()
                .iter()
                .any(|(_, r)| r.generation >= 1)
        })
        .await;
        bot
    }

    fn get(&self, script: &str, key: &str) -> Option<Value> {
        self.app.store.kv_get(INSTANCE, script, key).unwrap()
    }

    fn count(&self, key: &str) -> i64 {
        self.get("t", key).and_then(|v| v.as_i64()).unwrap_or(0)
    }

    async fn wait(&self, what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "{what}: not within 20 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_count(&self, key: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(key) < n {
            assert!(
                Instant::now() < deadline,
                "{key} stayed at {} (want {n})",
                self.count(key)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.count(key), n, "{key}");
    }

    async fn stop(self) -> PathBuf {
        self.app.shutdown().await;
        self.data
    }
}

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    for (name, src) in files {
        std::fs::write(dir.path().join("scripts").join(name), src).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_runs_its_handler_when_the_clock_gets_there() {
    let clock = ManualClock::new(at("2025-01-06T07:59:30Z")); // a Monday
    let dir = folder(&[(
        "t.lua",
        &format!(
            "{BUMP}H = bot.cron('0 8 * * 1-5', function() bump('a'); bot.store.set('next', H:next()) end)\n\
             function on_load() bot.store.set('next', H:next()) end\n"
        ),
    )]);
    let bot = Bot::start(dir.path(), &dir.path().join("scripts"), &clock).await;
    bot.wait("on_load", || bot.get("t", "next").is_some()).await;
    assert_eq!(
        bot.get("t", "next"),
        Some((at("2025-01-06T08:00:00Z") / 1000).into())
    );
    assert_eq!(bot.count("a"), 0);

    clock.set(at("2025-01-06T08:00:00Z"));
    bot.wait_count("a", 1).await;
    bot.wait("next after the run", || {
        bot.get("t", "next") == Some((at("2025-01-07T08:00:00Z") / 1000).into())
    })
    .await;
    clock.set(at("2025-01-07T08:00:05Z"));
    bot.wait_count("a", 2).await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_cron_does_not_run() {
    let clock = ManualClock::new(at("2025-01-06T07:00:00Z"));
    let dir = folder(&[(
        "t.lua",
        &format!(
            "{BUMP}local A = bot.cron('0 8 * * *', function() bump('a') end)\n\
             local B = bot.cron('0 8 * * *', function() bump('b') end)\n\
             function on_load()\n\
               bot.store.set('first', A:cancel())\n\
               bot.store.set('again', A:cancel())\n\
               bot.store.set('next', A:next() or 'none')\n\
             end\n"
        ),
    )]);
    let bot = Bot::start(dir.path(), &dir.path().join("scripts"), &clock).await;
    bot.wait("on_load", || bot.get("t", "next").is_some()).await;
    assert_eq!(bot.get("t", "first"), Some(true.into()));
    assert_eq!(bot.get("t", "again"), Some(false.into()));
    assert_eq!(bot.get("t", "next"), Some("none".into()));
    clock.set(at("2025-01-06T08:00:00Z"));
    // Due at the same time, registered after A: had A run, it ran first.
    bot.wait_count("b", 1).await;
    assert_eq!(bot.count("a"), 0);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crons_end_with_their_generation_and_a_refused_reload_starts_none() {
    let clock = ManualClock::new(at("2025-01-06T07:00:00Z"));
    let dir = folder(&[(
        "old.lua",
        &format!("{BUMP}bot.cron('0 8 * * *', function() bump('old') end)\n"),
    )]);
    let scripts = dir.path().join("scripts");
    let bot = Bot::start(dir.path(), &scripts, &clock).await;

    // A reload that fails: its cron never starts, the old one goes on.
    std::fs::write(
        scripts.join("new.lua"),
        format!("{BUMP}bot.cron('0 8 * * *', function() bump('refused') end)\n"),
    )
    .unwrap();
    std::fs::write(scripts.join("zz.lua"), "this is not lua\n").unwrap();
    let r = bot.app.scripts.reload().await;
    assert!(!r[0].1.swapped, "{r:?}");
    clock.set(at("2025-01-06T08:00:00Z"));
    // (Counters are per script: the old file's "old", the new file's "refused".)
    bot.wait("old ran", || bot.get("old", "old") == Some(1.into()))
        .await;

    // Now one that succeeds: the old generation's cron is gone with it.
    std::fs::remove_file(scripts.join("zz.lua")).unwrap();
    std::fs::remove_file(scripts.join("old.lua")).unwrap();
    std::fs::write(
        scripts.join("new.lua"),
        format!("{BUMP}bot.cron('0 8 * * *', function() bump('new') end)\n"),
    )
    .unwrap();
    let r = bot.app.scripts.reload().await;
    assert!(r[0].1.swapped, "{r:?}");
    clock.set(at("2025-01-07T08:00:00Z"));
    bot.wait("new ran", || bot.get("new", "new") == Some(1.into()))
        .await;
    bot.app.host.settle().await;
    assert_eq!(
        bot.get("old", "old"),
        Some(1.into()),
        "the disposed cron ran"
    );
    assert_eq!(
        bot.get("new", "refused"),
        None,
        "the refused load's cron ran"
    );
    bot.stop().await;
}

const CATCH: &str = "local function bump(k) bot.store.set(k, (bot.store.get(k) or 0) + 1) end\n\
    bot.cron('0 8 * * *', function() bump('plain') end)\n\
    bot.cron('0 8 * * *', function() bump('caught') end, {catch_up = true})\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_missed_while_down_is_made_up_only_with_catch_up() {
    let clock = ManualClock::new(at("2025-01-06T07:00:00Z"));
    let dir = folder(&[("t.lua", CATCH)]);
    let scripts = dir.path().join("scripts");
    let data = Bot::start(dir.path(), &scripts, &clock).await.stop().await;

    // Down over 08:00, back at 09:30: the catch-up cron runs once at start.
    clock.set(at("2025-01-06T09:30:00Z"));
    let bot = Bot::start(&data, &scripts, &clock).await;
    // Registered first: had "plain" caught up, it would have gone first.
    bot.wait_count("caught", 1).await;
    assert_eq!(bot.count("plain"), 0);
    // Both run at their next time.
    clock.set(at("2025-01-07T08:00:00Z"));
    bot.wait_count("plain", 1).await;
    bot.wait_count("caught", 2).await;
    let data = bot.stop().await;

    // Down over several runs: still once.
    clock.set(at("2025-01-10T12:00:00Z"));
    let bot = Bot::start(&data, &scripts, &clock).await;
    bot.wait_count("caught", 3).await;
    assert_eq!(bot.count("plain"), 1);
    let data = bot.stop().await;

    // Back before anything was due: nothing to make up.
    clock.set(at("2025-01-11T07:00:00Z"));
    let bot = Bot::start(&data, &scripts, &clock).await;
    clock.set(at("2025-01-11T08:00:00Z"));
    bot.wait_count("caught", 4).await;
    bot.wait_count("plain", 2).await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_right_at_the_time_runs_it_late() {
    let clock = ManualClock::new(at("2025-01-06T07:59:50Z"));
    let dir = folder(&[("t.lua", CATCH)]);
    let scripts = dir.path().join("scripts");
    let data = Bot::start(dir.path(), &scripts, &clock).await.stop().await;
    // 20 s late is late, not missed: both run, catch-up or not.
    clock.set(at("2025-01-06T08:00:20Z"));
    let bot = Bot::start(&data, &scripts, &clock).await;
    bot.wait_count("plain", 1).await;
    bot.wait_count("caught", 1).await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_runs_wait_for_a_free_slot_like_everything_else() {
    let clock = ManualClock::new(at("2025-01-06T07:00:00Z"));
    let dir = folder(&[(
        "t.lua",
        "local function log(s) local l = bot.store.get('log') or {}; l[#l + 1] = s; bot.store.set('log', l) end\n\
         bot.cron('0 8 * * *', function() log('a-start'); bot.sleep(200); log('a-end') end)\n\
         bot.cron('0 8 * * *', function() log('b') end)\n",
    )]);
    let bot = Bot::start_with(dir.path(), &dir.path().join("scripts"), &clock, |e| {
        e.max_waiting = 1
    })
    .await;
    clock.set(at("2025-01-06T08:00:00Z"));
    bot.wait("both ran", || {
        bot.get("t", "log")
            .and_then(|v| v.as_array().map(Vec::len))
            .is_some_and(|n| n == 3)
    })
    .await;
    // With one handler allowed to wait, b starts only once a is done.
    assert_eq!(
        bot.get("t", "log"),
        Some(serde_json::json!(["a-start", "a-end", "b"]))
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_zones_and_options_are_load_errors_at_the_line() {
    let clock = ManualClock::new(at("2025-01-06T07:00:00Z"));
    let dir = folder(&[
        ("a.lua", "\nbot.cron('61 * * * *', function() end)\n"),
        ("b.lua", "bot.cron('0 8 * *', function() end)\n"),
        (
            "c.lua",
            "bot.cron('0 8 * * *', function() end, {tz = 'Mars/Olympus'})\n",
        ),
        (
            "d.lua",
            "bot.cron('0 8 * * *', function() end, {catchup = true})\n",
        ),
        ("e.lua", "bot.cron('0 0 30 2 *', function() end)\n"),
        ("f.lua", "bot.cron('0 8 * * *', 'not a function')\n"),
        (
            "ok.lua",
            "bot.cron('0 8 * * mon-fri', function() end, {tz = 'Europe/Berlin'})\n",
        ),
    ]);
    let bot = Bot::start(dir.path(), &dir.path().join("scripts"), &clock).await;
    let (_, report) = bot.app.scripts.status().remove(0);
    let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    let want = [
        "a.lua:2: bot.cron: bad cron spec \"61 * * * *\": minute field \"61\"",
        "b.lua:1: bot.cron: bad cron spec \"0 8 * *\": 4 fields; expected 5",
        "c.lua:1: bot.cron: unknown time zone \"Mars/Olympus\"",
        "d.lua:1: bot.cron: unknown option \"catchup\" (known: tz, catch_up)",
        "e.lua:1: bot.cron: bad cron spec \"0 0 30 2 *\": never matches a real date",
        "f.lua:1: bot.cron needs a function to call, got string",
    ];
    assert_eq!(errors.len(), want.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(want) {
        assert!(got.contains(want), "{got}\nwant {want}");
    }
    bot.stop().await;
}

/// The morning-summary example on the injected clock: the summary goes
/// out at 8:00 on weekdays, to the chat that asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_morning_summary_example_goes_out_on_weekday_mornings() {
    let clock = ManualClock::new(at("2025-01-10T07:00:00Z")); // a Friday
    let dir = tempfile::tempdir().unwrap();
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/morning-summary");
    let bot = Bot::start(dir.path(), &scripts, &clock).await;
    let sent = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let sent = sent.clone();
        bot.app.bus.observe(move |ev| {
            if let HostEvent::MessageOut { chat, .. } = ev {
                sent.lock().unwrap().push(chat.clone());
            }
        });
    }
    let handle = bot.app.host.instance(INSTANCE).unwrap();
    handle.connect();
    bot.wait("open", || handle.snapshot().state.name().as_str() == "open")
        .await;
    let sim = bot.app.console_sim(INSTANCE).unwrap();
    sim.deliver("!summary here");
    sim.deliver("good morning");
    sim.deliver("anyone?");
    bot.wait("the subscription's answer", || {
        sent.lock().unwrap().len() == 1
    })
    .await;
    bot.app.host.settle().await;

    clock.set(at("2025-01-10T08:00:00Z"));
    bot.wait("Friday's summary", || sent.lock().unwrap().len() == 2)
        .await;
    let last = |bot: &Bot| {
        bot.get("morning-summary", "last_summary")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(
        last(&bot),
        "☀️ Good morning! 2 messages in 1 chat since the last summary:\n• you@console: 2"
    );
    // Saturday and Sunday: none. Monday: the next one, with nothing new
    // (a witness that the cron is still there and nothing went out between).
    clock.set(at("2025-01-11T08:00:00Z"));
    clock.set(at("2025-01-12T08:00:00Z"));
    clock.set(at("2025-01-13T08:00:00Z"));
    bot.wait("Monday's summary", || sent.lock().unwrap().len() == 3)
        .await;
    bot.app.host.settle().await;
    assert_eq!(sent.lock().unwrap().len(), 3);
    assert!(sent.lock().unwrap().iter().all(|c| c == "you@console"));
    assert_eq!(
        last(&bot),
        "☀️ Good morning! Nothing came in since the last summary."
    );
    bot.stop().await;
}

/// A route call whose caller gave up while it waited behind a busy slot
/// (a cron's handler here) is dropped, not run for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_call_abandoned_in_the_queue_is_not_run() {
    use moonwire::automation::routes::{HookRequest, RouteDispatch};
    let clock = ManualClock::new(at("2025-01-06T07:00:00Z"));
    let dir = folder(&[(
        "t.lua",
        &format!(
            "{BUMP}bot.cron('0 8 * * *', function() bump('cron'); bot.sleep(300); bump('cron-done') end)\n\
             bot.route('GET', '/r', function() bump('route') return 'ok' end)\n"
        ),
    )]);
    let bot = Bot::start_with(dir.path(), &dir.path().join("scripts"), &clock, |e| {
        e.max_waiting = 1
    })
    .await;
    let id = bot
        .app
        .scripts
        .routes()
        .table(INSTANCE)
        .unwrap()
        .find("GET", "/r")
        .unwrap()
        .id;
    let req = || HookRequest {
        method: "GET".into(),
        path: "/r".into(),
        ..HookRequest::default()
    };
    clock.set(at("2025-01-06T08:00:00Z"));
    bot.wait_count("cron", 1).await;
    // The cron's handler holds the one slot: this call queues, and its
    // caller gives up.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        bot.app.scripts.dispatch(INSTANCE, id, req()),
    )
    .await;
    assert!(gave_up.is_err(), "answered while the slot was taken");
    // A later call is answered after the first was dealt with (in order).
    let answer = bot.app.scripts.dispatch(INSTANCE, id, req()).await.unwrap();
    assert_eq!(answer.body, b"ok");
    assert_eq!(bot.count("cron-done"), 1);
    assert_eq!(bot.count("route"), 1, "the abandoned call ran");
    bot.stop().await;
}

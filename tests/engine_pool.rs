//! Many instances on few engine workers: a busy instance does not stop
//! another on the same worker, instances sharing a folder report a load
//! error once, and an instance with its own folder runs its own scripts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moonwire::channel::console::ConsoleOut;
use moonwire::config::{ChannelKind, InstanceConfig};
use moonwire::host::app::{App, StartOptions};
use moonwire::host::{EventBus, HostEvent, HostSettings, InstanceHandle};
use moonwire::lifecycle::State;
use moonwire::script::EngineConfig;
use moonwire::store::Store;

fn app(dir: &Path, scripts: &Path, workers: usize) -> (App, EventBus) {
    let store = Arc::new(Store::open(&dir.join("moonwire.db")).unwrap());
    let bus = EventBus::default();
    let engine = EngineConfig {
        dir: scripts.to_path_buf(),
        workers,
        ..EngineConfig::default()
    }
    .with_hook_timeout(Duration::from_millis(200));
    let app = App::new(
        store,
        bus.clone(),
        HostSettings::default(),
        engine,
        Arc::new(ConsoleOut::logging()),
    )
    .unwrap();
    (app, bus)
}

async fn open(h: &InstanceHandle) {
    h.connect();
    let mut w = h.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        w.wait_for(|s| matches!(s.state, State::Open { .. })),
    )
    .await
    .expect("opened in time")
    .expect("instance alive");
}

/// Records which instance each outgoing message came from.
fn senders(bus: &EventBus) -> Arc<Mutex<Vec<String>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    bus.observe(move |ev| {
        if let HostEvent::MessageOut { instance, .. } = ev {
            o.lock().unwrap().push(instance.clone());
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_does_not_stop_another_on_the_same_worker() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("b.lua"),
        r#"
function on_message(m)
  if m.text == "busy" then
    -- Thirty runs of real work with waits between: busy for a long while.
    for i = 1, 30 do
      local t = os.clock()
      while os.clock() - t < 0.02 do end
      bot.sleep(1)
    end
    m:reply("busy done")
  elseif m.text == "spin" then
    while true do end
  else
    m:reply("pong")
  end
end
"#,
    )
    .unwrap();
    // One worker: both instances' Lua states on the same thread.
    let (app, bus) = app(dir.path(), &scripts, 1);
    let seen = senders(&bus);
    let a = app.start_instance("a", ChannelKind::Console).unwrap();
    let b = app.start_instance("b", ChannelKind::Console).unwrap();
    open(&a).await;
    open(&b).await;
    app.host.settle().await;
    let sim_a = app.console_sim("a").unwrap();
    let sim_b = app.console_sim("b").unwrap();
    sim_a.deliver("spin");
    sim_a.deliver("busy");
    sim_b.deliver("ping");
    app.host.settle().await;
    let order = seen.lock().unwrap().clone();
    assert_eq!(order, vec!["b".to_string(), "a".to_string()], "{order:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_folder_reports_a_load_error_once_and_own_folders_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("scripts");
    let own = dir.path().join("shop");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(shared.join("broken.lua"), "x = = 1\n").unwrap();
    std::fs::write(
        shared.join("hello.lua"),
        "function on_message(m) m:reply('shared') end\n",
    )
    .unwrap();
    std::fs::write(
        own.join("shop.lua"),
        "function on_message(m) m:reply('shop') end\n",
    )
    .unwrap();
    let (app, bus) = app(dir.path(), &shared, 2);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    bus.observe(move |ev| {
        if let HostEvent::ScriptError { instance, error } = ev {
            e.lock().unwrap().push(format!("{instance}: {error}"));
        }
    });
    let mut handles = Vec::new();
    for name in ["one", "two", "three"] {
        handles.push(app.start_instance(name, ChannelKind::Console).unwrap());
    }
    let shop = app
        .start_configured(
            "shop",
            ChannelKind::Console,
            StartOptions::from_config(&InstanceConfig {
                name: "shop".into(),
                channel: ChannelKind::Console,
                phone: None,
                scripts: Some(own.clone()),
            }),
        )
        .unwrap();
    handles.push(shop);
    for h in &handles {
        open(h).await;
    }
    app.host.settle().await;
    let errs = errors.lock().unwrap().clone();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("broken.lua:1:"), "{errs:?}");
    // A reload of the folder is a new generation: reported once again.
    let reports = app.scripts.reload().await;
    assert_eq!(reports.len(), 4);
    app.host.settle().await;
    let errs = errors.lock().unwrap().clone();
    assert_eq!(errs.len(), 2, "{errs:?}");
    // Each folder's scripts run for their own instances.
    let files_of = |name: &str| -> Vec<String> {
        let (_, status) = app
            .scripts
            .status()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap();
        status
            .files
            .iter()
            .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
            .collect()
    };
    assert_eq!(files_of("one"), vec!["broken.lua", "hello.lua"]);
    assert_eq!(files_of("shop"), vec!["shop.lua"]);
    app.shutdown().await;
}

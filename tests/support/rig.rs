//! The real host (library API) with one WhatsApp instance pointed at a
//! [`MockServer`](super::MockServer), recording every state it goes through
//! and, through a Lua script, every lifecycle hook it calls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moonwire::channel::console::ConsoleOut;
use moonwire::config::ChannelKind;
use moonwire::host::app::App;
use moonwire::host::instance::InstanceHandle;
use moonwire::host::{EventBus, HostEvent, HostSettings};
use moonwire::lifecycle::{Settings, State, StatusRow};
use moonwire::script::EngineConfig;
use moonwire::store::Store;
use tokio::sync::Notify;

use super::MockServer;

/// Any version: the mock does not check it, and pinning it skips the HTTP
/// fetch the client would otherwise make before each attempt.
pub const VERSION: (u32, u32, u32) = (2, 3000, 1_000_000_000);

/// How long a wait for something that must happen may take before the test
/// fails: generous, since a loaded 2-core machine is slow and only a failing
/// test ever waits it out.
pub const WAIT: Duration = Duration::from_secs(15);

/// The instance every rig runs.
pub const INSTANCE: &str = "wa";

/// Records each lifecycle hook call as `name:kind` in the script store.
pub const HOOKS_LUA: &str = r#"
local function record(name, info)
  local calls = bot.store.get("calls") or {}
  calls[#calls + 1] = name .. ":" .. ((info and info.kind) or "")
  bot.store.set("calls", calls)
end
function on_open(info) record("on_open") end
function on_close(info) record("on_close", info) end
function on_logout(info) record("on_logout", info) end
function on_message(m)
  local seen = bot.store.get("messages") or {}
  seen[#seen + 1] = m.sender .. "|" .. (m.text or "") .. "|" .. (m.push_name or "")
  bot.store.set("messages", seen)
  if m.text and m.text:sub(1, 5) == "echo " then
    m:reply(m.text:sub(6))
  end
end
"#;

/// The instance's row as the SQLite file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRow {
    pub connection_status: String,
    pub state: String,
    pub last_reason_code: Option<u16>,
    pub last_reason_kind: Option<String>,
}

impl DbRow {
    /// `kind/code`, `-` for what is missing.
    pub fn reason(&self) -> String {
        format!(
            "{}/{}",
            self.last_reason_kind.as_deref().unwrap_or("-"),
            self.last_reason_code
                .map(|c| c.to_string())
                .unwrap_or("-".into())
        )
    }
}

/// Every state the instance went through, in order (a watch would miss the
/// short ones: with a 10 ms base, `reconnecting` lasts a few ms).
#[derive(Default)]
pub struct States {
    pub seen: Mutex<Vec<State>>,
    /// The status row the event carried with each state in `seen`.
    pub rows: Mutex<Vec<StatusRow>>,
    /// The row read back from the database file when each state was shown:
    /// the host persists a state before it shows it, so this is what a
    /// reader of the file saw at that moment (`None`: unreadable).
    pub db: Mutex<Vec<Option<DbRow>>>,
    /// When each state was shown, on this process's clock.
    pub times: Mutex<Vec<Instant>>,
    /// The transition's own time (unix ms), for delays given as deadlines.
    pub at_ms: Mutex<Vec<u64>>,
    changed: Notify,
}

impl States {
    /// Waits for a state after index `from` that `pred` accepts; returns its
    /// index and the state.
    pub async fn wait_for(
        &self,
        from: usize,
        what: &str,
        pred: impl Fn(&State) -> bool,
    ) -> (usize, State) {
        self.wait_for_within(WAIT, from, what, pred)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As `wait_for`, with its own deadline, answering an error instead of
    /// panicking.
    pub async fn wait_for_within(
        &self,
        within: Duration,
        from: usize,
        what: &str,
        pred: impl Fn(&State) -> bool,
    ) -> Result<(usize, State), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            {
                let seen = self.seen.lock().unwrap();
                if let Some(i) = (from..seen.len()).find(|&i| pred(&seen[i])) {
                    return Ok((i, seen[i].clone()));
                }
                if tokio::time::Instant::now() >= deadline {
                    let names: Vec<_> = seen[from.min(seen.len())..]
                        .iter()
                        .map(|s| s.name().as_str())
                        .collect();
                    return Err(format!(
                        "timed out waiting for {what}; states since: {names:?}"
                    ));
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
        }
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn row(&self, i: usize) -> StatusRow {
        self.rows.lock().unwrap()[i].clone()
    }

    /// The row in the database file when state `i` was shown.
    pub fn db_row(&self, i: usize) -> Option<DbRow> {
        self.db.lock().unwrap()[i].clone()
    }

    /// When state `i` was shown.
    pub fn time(&self, i: usize) -> Instant {
        self.times.lock().unwrap()[i]
    }

    /// The delay state `i` declared before the next dial: 0 for a dial at
    /// once, the backoff, or the time to a ban's expiry; `None` if it plans
    /// no dial.
    pub fn declared_delay(&self, i: usize) -> Option<u64> {
        let at = self.at_ms.lock().unwrap()[i];
        match &self.seen.lock().unwrap()[i] {
            State::Connecting { .. } => Some(0),
            State::Reconnecting { delay_ms, .. } => Some(*delay_ms),
            State::Closed {
                retry_at: Some(t), ..
            } => Some(t.saturating_sub(at)),
            _ => None,
        }
    }

    pub fn since(&self, from: usize) -> Vec<State> {
        let seen = self.seen.lock().unwrap();
        seen[from.min(seen.len())..].to_vec()
    }
}

pub struct Rig {
    pub app: App,
    pub handle: InstanceHandle,
    pub states: Arc<States>,
    pub dir: PathBuf,
    /// Keeps a rig-owned data dir alive.
    _tmp: Option<tempfile::TempDir>,
}

/// Fast reconnects, so every case takes milliseconds of backoff.
pub fn fast_settings() -> HostSettings {
    HostSettings {
        reconnect: Settings {
            base_ms: 10,
            cap_ms: 50,
            ..Settings::default()
        },
        ..HostSettings::default()
    }
}

impl Rig {
    /// A fresh data dir, fast reconnects, connected at once.
    pub fn start(server: &MockServer) -> Rig {
        Rig::start_with(server, fast_settings())
    }

    pub fn start_with(server: &MockServer, settings: HostSettings) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let mut rig = Rig::start_in(server, tmp.path(), settings);
        rig._tmp = Some(tmp);
        rig
    }

    /// A host over `dir` (kept by the caller, so a second host can start
    /// over the same database after the first stopped).
    pub fn start_in(server: &MockServer, dir: &Path, settings: HostSettings) -> Rig {
        Rig::start_scripted_in(server, dir, settings, &[])
    }

    /// A fresh data dir with `scripts` (name, source) beside `hooks.lua`.
    pub fn start_scripted(server: &MockServer, scripts: &[(&str, &str)]) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let mut rig = Rig::start_scripted_in(server, tmp.path(), fast_settings(), scripts);
        rig._tmp = Some(tmp);
        rig
    }

    pub fn start_scripted_in(
        server: &MockServer,
        dir: &Path,
        settings: HostSettings,
        extra: &[(&str, &str)],
    ) -> Rig {
        let scripts = dir.join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        std::fs::write(scripts.join("hooks.lua"), HOOKS_LUA).unwrap();
        for (name, src) in extra {
            std::fs::write(scripts.join(name), src).unwrap();
        }
        let db_path = dir.join("moonwire.db");
        let store = Arc::new(Store::open(&db_path).unwrap());
        let bus = EventBus::default();
        let states = Arc::new(States::default());
        {
            let states = states.clone();
            let file = Mutex::new(DbReader::new(db_path));
            bus.observe(move |ev| {
                if let HostEvent::State {
                    transition, row, ..
                } = ev
                {
                    let shown = Instant::now();
                    let db = file.lock().unwrap().read(INSTANCE);
                    // Rows first: whoever sees the state may look its row up.
                    states.rows.lock().unwrap().push(row.clone());
                    states.db.lock().unwrap().push(db);
                    states.times.lock().unwrap().push(shown);
                    states.at_ms.lock().unwrap().push(transition.at);
                    states.seen.lock().unwrap().push(transition.state.clone());
                    states.changed.notify_waiters();
                }
            });
        }
        let engine = EngineConfig {
            dir: scripts,
            media_dir: dir.join("media"),
            ..EngineConfig::default()
        };
        let app = App::new(
            store,
            bus,
            settings,
            engine,
            Arc::new(ConsoleOut::logging()),
        )
        .unwrap()
        .with_whatsapp_url(server.url())
        .with_whatsapp_version(VERSION)
        .with_whatsapp_media_roots(vec![server.media_root()])
        // Quick to notice a silent server, yet with room enough that a
        // loaded test machine (a build beside it) does not look like one.
        .with_whatsapp_ping(Duration::from_millis(500), Duration::from_secs(3))
        .with_whatsapp_login_timeout(Duration::from_secs(3));
        let handle = app.start_instance(INSTANCE, ChannelKind::Whatsapp).unwrap();
        handle.connect();
        Rig {
            app,
            handle,
            states,
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub async fn stop(self) {
        self.handle.stop();
        self.app.shutdown().await;
    }

    /// The hook calls recorded so far, as `name:kind`.
    pub fn hook_calls(&self) -> Vec<String> {
        self.recorded("calls")
    }

    /// The messages `on_message` saw, as `sender|text|push_name`.
    pub fn messages(&self) -> Vec<String> {
        self.recorded("messages")
    }

    fn recorded(&self, key: &str) -> Vec<String> {
        match self.app.store.kv_get(INSTANCE, "hooks", key) {
            Ok(Some(serde_json::Value::Array(v))) => v
                .into_iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The hook calls beyond the first `from`, once every hook queued so
    /// far has run (the actor's queue, then the scripts').
    pub async fn settled_hook_calls(&self, from: usize) -> Vec<String> {
        self.app.host.settle().await;
        self.hook_calls()
            .get(from..)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    /// Waits until the instance's scripts are loaded: before that a close
    /// reaches no `on_close` (the engine skips the round trip while it does
    /// not know of one). Answers the generation.
    pub async fn scripts_loaded(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let generation = self.generation();
            if generation > 0 {
                return generation;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scripts did not load within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The loaded script generation (0: not loaded yet).
    pub fn generation(&self) -> u64 {
        self.app
            .scripts
            .status()
            .into_iter()
            .find(|(name, _)| name == INSTANCE)
            .map(|(_, report)| report.generation)
            .unwrap_or(0)
    }

    /// The instance's row in the database file now.
    pub fn file_row(&self) -> Option<DbRow> {
        DbReader::new(self.dir.join("moonwire.db")).read(INSTANCE)
    }

    /// The whatsapp-rust device row in the instance's key store, as JSON.
    pub fn stored_device(&self) -> Option<serde_json::Value> {
        let db = rusqlite::Connection::open(self.dir.join("moonwire.db")).unwrap();
        let bytes: Vec<u8> = db
            .query_row(
                "SELECT value FROM wa_kv WHERE instance = ?1 AND ns = 'device' AND key = ''",
                [INSTANCE],
                |r| r.get(0),
            )
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits for the first QR code and for the scripts to be loaded;
    /// answers the QR state's index and the code.
    pub async fn first_qr(&self) -> (usize, String) {
        let (i, state) = self
            .states
            .wait_for(0, "pairing", |s| pairing_code(s).is_some())
            .await;
        self.scripts_loaded().await;
        (i, pairing_code(&state).unwrap_or_default().to_string())
    }

    /// Waits for the first QR code and has the mock's phone scan it; answers
    /// once the instance is open as the paired device, with the index of
    /// that `open`.
    pub async fn pair(&self, server: &MockServer) -> usize {
        let (_, code) = self.first_qr().await;
        assert_eq!(server.scan(&code), 1, "no connection took the scan");
        let (i, _) = self
            .states
            .wait_for(0, "open after the scan", |s| {
                matches!(s, State::Open { .. })
            })
            .await;
        i
    }
}

pub fn pairing_code(s: &State) -> Option<&str> {
    match s {
        State::Pairing { code, .. } => Some(code),
        _ => None,
    }
}

/// Reads the instance row from the database file on its own connection, as
/// any other reader of the file would.
struct DbReader {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl DbReader {
    fn new(path: PathBuf) -> DbReader {
        DbReader { path, conn: None }
    }

    fn read(&mut self, instance: &str) -> Option<DbRow> {
        if self.conn.is_none() {
            let c = rusqlite::Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?;
            c.busy_timeout(Duration::from_secs(2)).ok()?;
            self.conn = Some(c);
        }
        self.conn
            .as_ref()?
            .query_row(
                "SELECT connection_status, state, last_reason_code, last_reason_kind \
                 FROM instances WHERE name = ?1",
                [instance],
                |r| {
                    Ok(DbRow {
                        connection_status: r.get(0)?,
                        state: r.get(1)?,
                        last_reason_code: r.get(2)?,
                        last_reason_kind: r.get(3)?,
                    })
                },
            )
            .ok()
    }
}

//! Where scripts meet instances: the `Hooks` the host calls, backed by one
//! Lua engine per instance on the shared worker pool, and the `Actions`
//! scripts take on an instance.
//!
//! Instances may share a scripts folder (the default one, or an
//! `[[instance]] scripts` folder). A folder reloads as a whole: every
//! engine on it gets the same folder generation, and a load error of that
//! generation is reported once, not once per instance.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::oneshot;

use super::{EventBus, Hooks, HostEvent, InstanceHandle, now_ms};
use crate::channel::{BoxFuture, Incoming, Outgoing};
use crate::lifecycle::{CloseAnswer, HookCall, LogoutBy, State};
use crate::script::{Actions, Engine, EngineConfig, LoadReport, Pool, ScriptError, watch};
use crate::store::Store;

/// One scripts folder and the instances running it.
#[derive(Default)]
struct Folder {
    generation: u64,
    /// Load errors of `generation` already reported.
    reported: HashSet<String>,
    watcher: Option<watch::Watcher>,
}

type Folders = Arc<Mutex<BTreeMap<PathBuf, Folder>>>;

struct HostActions {
    handle: InstanceHandle,
    store: Arc<Store>,
    bus: EventBus,
    dir: PathBuf,
    folders: Folders,
}

impl HostActions {
    /// Whether this load error was already reported for the folder's
    /// generation (by another instance sharing it).
    fn already_reported(&self, error: &ScriptError, generation: u64) -> bool {
        if generation == 0 {
            return false;
        }
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = folders.get_mut(&self.dir) else {
            return false;
        };
        if f.generation != generation {
            return false;
        }
        !f.reported.insert(format!("{}\u{0}{error}", error.context))
    }
}

impl Actions for HostActions {
    fn instance(&self) -> &str {
        self.handle.name()
    }

    fn state(&self) -> String {
        self.handle.snapshot().state.name().as_str().to_string()
    }

    fn send(&self, out: Outgoing) -> Result<(), String> {
        if !matches!(self.handle.snapshot().state, State::Open { .. }) {
            return Err("not open".into());
        }
        self.handle.send_nowait(out);
        Ok(())
    }

    fn logout(&self) {
        self.handle.logout_nowait(LogoutBy::Script);
    }

    fn store_get(&self, script: &str, key: &str) -> Result<Option<serde_json::Value>, String> {
        self.store
            .kv_get(self.handle.name(), script, key)
            .map_err(|e| e.to_string())
    }

    fn store_set(&self, script: &str, key: &str, value: &serde_json::Value) -> Result<(), String> {
        self.store
            .kv_set(self.handle.name(), script, key, value, now_ms())
            .map_err(|e| e.to_string())
    }

    fn store_delete(&self, script: &str, key: &str) -> Result<(), String> {
        self.store
            .kv_delete(self.handle.name(), script, key)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn hook_done(&self, hook: &str, elapsed: std::time::Duration, ok: bool) {
        self.bus.metrics().hook(hook, elapsed, ok);
    }

    fn reloaded(&self, swapped: bool) {
        self.bus.metrics().reload(swapped);
    }

    fn report(&self, error: &ScriptError, generation: u64) {
        let instance = self.handle.name();
        if self.already_reported(error, generation) {
            tracing::debug!(instance = %instance, "script error already reported for this folder: {error}");
            return;
        }
        tracing::error!(instance = %instance, hook = %error.context, "script error: {error}");
        let data = serde_json::json!({
            "file": error.file,
            "line": error.line,
            "context": error.context,
            "message": error.message,
        });
        if let Err(e) = self
            .store
            .journal_append(now_ms(), Some(instance), "script_error", &data)
        {
            tracing::warn!(error = %e, "could not journal a script error");
        }
        self.bus.publish(HostEvent::ScriptError {
            instance: instance.to_string(),
            error: error.clone(),
        });
    }
}

struct Attached {
    engine: Engine,
    dir: PathBuf,
}

/// The scripting side of the host: one engine per attached instance.
pub struct ScriptHooks {
    config: EngineConfig,
    store: Arc<Store>,
    bus: EventBus,
    pool: Pool,
    engines: Mutex<BTreeMap<String, Attached>>,
    folders: Folders,
    /// Set once `watch` was called: folders attached later are watched too.
    watching: Mutex<Option<(Weak<ScriptHooks>, tokio::runtime::Handle)>>,
}

impl ScriptHooks {
    /// Starts the engine workers (`config.workers`, 0: one per core).
    pub fn new(
        config: EngineConfig,
        store: Arc<Store>,
        bus: EventBus,
    ) -> std::io::Result<ScriptHooks> {
        Ok(ScriptHooks {
            pool: Pool::new(config.workers)?,
            config,
            store,
            bus,
            engines: Default::default(),
            folders: Default::default(),
            watching: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Starts the instance's engine on `dir` (default: the configured
    /// folder), which loads the folder.
    pub fn attach(&self, handle: &InstanceHandle, dir: Option<&Path>) -> std::io::Result<()> {
        let dir = dir.map_or_else(|| self.config.dir.clone(), Path::to_path_buf);
        let generation = {
            let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
            let f = folders.entry(dir.clone()).or_default();
            if f.generation == 0 {
                f.generation = 1;
            }
            f.generation
        };
        let actions = Arc::new(HostActions {
            handle: handle.clone(),
            store: self.store.clone(),
            bus: self.bus.clone(),
            dir: dir.clone(),
            folders: self.folders.clone(),
        });
        let mut config = self.config.clone();
        config.dir = dir.clone();
        let engine = self.pool.spawn(config, actions, generation)?;
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                handle.name().to_string(),
                Attached {
                    engine,
                    dir: dir.clone(),
                },
            );
        self.watch_folder(&dir);
        Ok(())
    }

    /// Calls the instance's `on_unload` and stops its engine.
    pub async fn detach(&self, instance: &str) {
        let engine = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(instance);
        if let Some(a) = engine {
            let _ = a.engine.shutdown().await;
        }
    }

    /// Reloads the folders changed on disk: every engine on `dir`.
    pub async fn reload_folder(&self, dir: &Path) -> Vec<(String, LoadReport)> {
        let generation = {
            let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
            let f = folders.entry(dir.to_path_buf()).or_default();
            f.generation += 1;
            f.reported.clear();
            f.generation
        };
        let pending: Vec<(String, oneshot::Receiver<LoadReport>)> = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, a)| a.dir == dir)
            .map(|(name, a)| (name.clone(), a.engine.reload_as(generation)))
            .collect();
        let mut out = Vec::new();
        for (name, rx) in pending {
            if let Ok(r) = rx.await {
                out.push((name, r));
            }
        }
        out
    }

    /// Reloads every folder; one report per instance.
    pub async fn reload(&self) -> Vec<(String, LoadReport)> {
        let dirs: Vec<PathBuf> = {
            let engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
            let mut d: Vec<PathBuf> = engines.values().map(|a| a.dir.clone()).collect();
            d.sort();
            d.dedup();
            d
        };
        let mut out = Vec::new();
        for d in dirs {
            out.extend(self.reload_folder(&d).await);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The last load report of each instance.
    pub fn status(&self) -> Vec<(String, LoadReport)> {
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, a)| (n.clone(), a.engine.status()))
            .collect()
    }

    /// Calls `on_unload` everywhere and stops the engines.
    pub async fn shutdown(&self) {
        let engines: Vec<Attached> =
            std::mem::take(&mut *self.engines.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        let pending: Vec<_> = engines.iter().map(|a| a.engine.shutdown()).collect();
        for rx in pending {
            let _ = rx.await;
        }
    }

    /// Reloads each folder when it changes on disk, from now on. Needs a
    /// tokio runtime.
    pub fn watch(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime to reload scripts on; reload needs a restart");
            return;
        };
        *self.watching.lock().unwrap_or_else(|e| e.into_inner()) = Some((Arc::downgrade(self), rt));
        let dirs: Vec<PathBuf> = self
            .folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for d in dirs {
            self.watch_folder(&d);
        }
    }

    fn watch_folder(&self, dir: &Path) {
        let Some((me, rt)) = self
            .watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        let f = folders.entry(dir.to_path_buf()).or_default();
        if f.watcher.is_some() {
            return;
        }
        if !dir.is_dir() {
            tracing::info!(dir = %dir.display(), "no scripts folder; running without scripts");
            return;
        }
        let d = dir.to_path_buf();
        match watch::watch(dir, watch::DEBOUNCE, move || {
            let Some(me) = me.upgrade() else { return };
            let d = d.clone();
            rt.spawn(async move {
                me.reload_folder(&d).await;
            });
        }) {
            Ok(w) => f.watcher = Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the scripts folder; reload needs a restart")
            }
        }
    }

    fn settle_with(&self, f: impl Fn(&Engine) -> oneshot::Receiver<()>) -> BoxFuture<()> {
        let pending: Vec<oneshot::Receiver<()>> = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| f(&a.engine))
            .collect();
        Box::pin(async move {
            for rx in pending {
                let _ = rx.await;
            }
        })
    }

    fn with_engine<R>(&self, instance: &str, f: impl FnOnce(&Engine) -> R) -> Option<R> {
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(instance)
            .map(|a| f(&a.engine))
    }
}

impl Hooks for ScriptHooks {
    fn lifecycle(
        &self,
        instance: &InstanceHandle,
        call: &HookCall,
    ) -> Option<oneshot::Receiver<CloseAnswer>> {
        self.with_engine(instance.name(), |e| e.hook(call.clone()))
            .flatten()
    }

    fn message(&self, instance: &InstanceHandle, msg: Incoming) {
        self.with_engine(instance.name(), |e| e.message(msg));
    }

    fn settle(&self) -> BoxFuture<()> {
        self.settle_with(Engine::settle)
    }

    fn settle_started(&self) -> BoxFuture<()> {
        self.settle_with(Engine::settle_started)
    }
}

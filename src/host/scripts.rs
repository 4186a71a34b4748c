//! Where scripts meet instances: the `Hooks` the host calls, backed by one
//! Lua engine per instance on the shared worker pool, and the `Actions`
//! scripts take on an instance.
//!
//! Instances may share a scripts folder (the default one, or an
//! `[[instance]] scripts` folder). A folder reloads as a whole: every
//! engine on it gets the same folder generation, and a load error of that
//! generation is reported once, not once per instance.
//!
//! The automation pieces meet here too: one guarded HTTP client for every
//! instance's `bot.http` (its requests run on the host's runtime: the
//! engine workers have no network driver), the route tables the API
//! serves, and the dispatcher that turns a request into an engine job.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{EventBus, Hooks, InstanceHandle};
use crate::automation::http::HttpClient;
use crate::automation::routes::{
    HookRequest, HookResponse, RouteDispatch, RouteError, RouteId, Routes,
};
use crate::channel::{BoxFuture, GroupEvent, Incoming, Receipt};
use crate::lifecycle::{CloseAnswer, HookCall};
use crate::script::{Engine, EngineConfig, LoadReport, Pool, watch};
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

mod actions;

pub use actions::media_file_name;
use actions::{HostActions, Net};

struct Attached {
    engine: Engine,
    dir: PathBuf,
    /// Route requests handed to the engine and not answered yet.
    routes_pending: Arc<AtomicUsize>,
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
    net: Net,
}

impl ScriptHooks {
    /// Starts the engine workers (`config.workers`, 0: one per core).
    pub fn new(
        config: EngineConfig,
        store: Arc<Store>,
        bus: EventBus,
    ) -> std::io::Result<ScriptHooks> {
        let observer: Arc<dyn crate::automation::http::HttpObserver> = bus.metrics().clone();
        let http = HttpClient::new(config.http.clone(), Some(observer))
            .map_err(|e| std::io::Error::other(format!("starting the HTTP client: {e}")))?;
        let rt = tokio::runtime::Handle::try_current().ok();
        if rt.is_none() {
            tracing::warn!("no async runtime: bot.http will fail");
        }
        Ok(ScriptHooks {
            pool: Pool::new(config.workers)?,
            config,
            store,
            bus,
            engines: Default::default(),
            folders: Default::default(),
            watching: Mutex::new(None),
            net: Net {
                http,
                rt,
                routes: Arc::new(Routes::new()),
            },
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The scripts' HTTP client (`[script.http]` rules); the API fetches
    /// media URLs with it too.
    pub fn http(&self) -> &HttpClient {
        &self.net.http
    }

    /// Every instance's script routes, for the API to serve.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.net.routes
    }

    /// How long the API waits for a route's answer: the handler deadline,
    /// and a moment for the engine to cancel and report it first.
    pub fn route_deadline(&self) -> Duration {
        self.config.handler_deadline + Duration::from_millis(250)
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
            net: self.net.clone(),
            hook_metrics: Mutex::new(Vec::new()),
            media_dir: self.config.media_dir.clone(),
            max_media: self.config.max_media,
            handling: Mutex::default(),
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
                    routes_pending: Arc::default(),
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
        self.net.routes.remove(instance);
        self.net.http.forget(instance);
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
        let engines: Vec<(String, Attached)> =
            std::mem::take(&mut *self.engines.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        for (name, _) in &engines {
            self.net.routes.remove(name);
        }
        let pending: Vec<_> = engines.iter().map(|(_, a)| a.engine.shutdown()).collect();
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
        self.with_attached(instance, |a| f(&a.engine))
    }

    fn with_attached<R>(&self, instance: &str, f: impl FnOnce(&Attached) -> R) -> Option<R> {
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(instance)
            .map(f)
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

    fn receipt(&self, instance: &InstanceHandle, r: Receipt) {
        self.with_engine(instance.name(), |e| e.receipt(r));
    }

    fn group(&self, instance: &InstanceHandle, ev: GroupEvent) {
        self.with_engine(instance.name(), |e| e.group(ev));
    }

    /// The engine marks the row once the message's handlers all started.
    fn deliver(&self, instance: &InstanceHandle, seq: i64, msg: Incoming) -> bool {
        self.with_engine(instance.name(), |e| e.message_tracked(msg, seq))
            .unwrap_or(false)
    }

    fn settle(&self) -> BoxFuture<()> {
        self.settle_with(Engine::settle)
    }

    fn settle_started(&self) -> BoxFuture<()> {
        self.settle_with(Engine::settle_started)
    }
}

/// Counts a route request as pending until its answer (or the caller)
/// goes.
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RouteDispatch for ScriptHooks {
    /// Hands the request to the instance's engine as a job. At most
    /// `max_waiting` requests per instance wait for an answer at once: a
    /// flood of calls to a public route is answered 503, not queued
    /// without bound.
    fn dispatch(
        &self,
        instance: &str,
        route: RouteId,
        req: HookRequest,
    ) -> BoxFuture<Result<HookResponse, RouteError>> {
        let limit = self.config.max_waiting.max(1);
        let sent = self.with_attached(instance, |a| {
            let n = a.routes_pending.fetch_add(1, Ordering::SeqCst);
            let guard = Pending(a.routes_pending.clone());
            if n >= limit {
                return Err(RouteError::Busy);
            }
            Ok((guard, a.engine.route(route, req)))
        });
        Box::pin(async move {
            match sent {
                None => Err(RouteError::Gone),
                Some(Err(e)) => Err(e),
                Some(Ok((_guard, rx))) => rx.await.unwrap_or(Err(RouteError::Gone)),
            }
        })
    }
}

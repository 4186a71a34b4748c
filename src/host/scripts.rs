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

use super::{EventBus, Hooks, HostEvent, InstanceHandle, now_ms};
use crate::automation::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use crate::automation::routes::{
    HookRequest, HookResponse, RouteDispatch, RouteError, RouteId, RouteTable, Routes,
};
use crate::channel::rich::{extension_for_mime, safe_component};
use crate::channel::{
    Action, BoxFuture, GroupEvent, GroupOp, GroupReply, Incoming, MediaInfo, Outgoing, Receipt,
};
use crate::lifecycle::{CloseAnswer, HookCall, LogoutBy, State};
use crate::script::{Actions, Engine, EngineConfig, LoadReport, Pool, ScriptError, watch};
use crate::store::{KvWrite, OutboxItem, Store};

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
    net: Net,
    hook_metrics: Mutex<Vec<(String, crate::host::metrics::HookHandles)>>,
    /// The data dir's `media/` folder and the media size limit.
    media_dir: PathBuf,
    max_media: u64,
    /// What the handlers of the message being started do, committed with
    /// its handled mark.
    handling: Mutex<Handling>,
}

/// Messages' handling while their handlers start: the `bot.store` writes
/// and the sends they make before they first wait, committed with the
/// rows' handled marks at the end of the engine's batch of jobs
/// (`Actions::messages_done`), so a burst costs one transaction. Only this
/// instance's worker touches it, so the lock is uncontended.
#[derive(Default)]
struct Handling {
    /// The inbox row whose handlers are running.
    message: Option<i64>,
    /// Rows whose handlers have all started, not committed yet.
    handled: Vec<i64>,
    kv: Vec<KvWrite>,
    sends: Vec<(OutboxItem, Outgoing)>,
    /// `bot.logout()` was called: it follows the sends made before it.
    logout: bool,
}

impl Handling {
    fn pending(&self) -> bool {
        !self.handled.is_empty() || !self.kv.is_empty() || !self.sends.is_empty() || self.logout
    }
}

/// What `bot.http` and `bot.route` need of the host.
#[derive(Clone)]
struct Net {
    http: HttpClient,
    /// The runtime requests run on; `None` outside one (no `bot.http`).
    rt: Option<tokio::runtime::Handle>,
    routes: Arc<Routes>,
}

/// A download in progress: removed unless it was moved into place.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The name a message's media is saved under in `media/<instance>/`: its
/// id (made safe: ids come from outside) and an extension from the file
/// name or the type. The API's media route finds it by the same rule.
pub fn media_file_name(id: &str, media: &MediaInfo) -> String {
    let from_name = media
        .file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()));
    let ext = from_name
        .or_else(|| {
            media
                .mime
                .as_deref()
                .and_then(extension_for_mime)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "bin".into());
    format!("{}.{ext}", safe_component(id))
}

/// Aborts the request when the handler waiting for it goes (cancelled at
/// its deadline, or its engine stopped).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HostActions {
    fn handling(&self) -> std::sync::MutexGuard<'_, Handling> {
        self.handling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inside a message's handlers' start, `f` records a write there
    /// (answers true). Outside, what earlier messages left uncommitted is
    /// committed first, so a write made now lands after theirs.
    fn buffered(&self, f: impl FnOnce(&mut Handling)) -> bool {
        let mut h = self.handling();
        if h.message.is_some() {
            f(&mut h);
            return true;
        }
        let pending = h.pending();
        drop(h);
        if pending {
            self.commit_handled();
        }
        false
    }

    /// Commits the handled marks of the messages started since the last
    /// commit with what their handlers did, in one transaction, then hands
    /// their sends to the actor (and a `bot.logout()` after them). If the
    /// commit fails nothing of it happened: the sends are reported failed,
    /// and the messages go to the scripts again at the next start.
    fn commit_handled(&self) {
        let (handled, kv, sends, logout) = {
            let mut h = self.handling();
            (
                std::mem::take(&mut h.handled),
                std::mem::take(&mut h.kv),
                std::mem::take(&mut h.sends),
                std::mem::take(&mut h.logout),
            )
        };
        let instance = self.handle.name();
        let items: Vec<OutboxItem> = sends.iter().map(|(i, _)| i.clone()).collect();
        match self
            .store
            .commit_handling(instance, &handled, &kv, &items, now_ms())
        {
            Ok(seqs) => {
                for (seq, (_, out)) in seqs.into_iter().zip(sends) {
                    self.handle.queued(seq, out);
                }
            }
            Err(e) => {
                tracing::error!(instance = %instance, error = %e, n = handled.len(), "committing messages' handling failed; their store writes are lost and they are handled again at the next start");
                for (_, out) in sends {
                    self.bus.publish(HostEvent::SendFailed {
                        instance: instance.to_string(),
                        id: out.id,
                        chat: out.chat,
                        reason: format!("the outbox could not take it: {e}"),
                    });
                }
            }
        }
        if logout {
            self.handle.logout_nowait(LogoutBy::Script);
        }
    }

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

    /// Into the outbox: while connecting or reconnecting the send waits
    /// there for the open (the instance comes back by itself); in any other
    /// state that is not open there is nothing to wait for.
    fn send(&self, out: Outgoing) -> Result<(), String> {
        if !matches!(
            self.handle.snapshot().state,
            State::Open { .. } | State::Connecting { .. } | State::Reconnecting { .. }
        ) {
            return Err("not open".into());
        }
        let item = crate::host::delivery::outbox_item(&out).map_err(|e| e.to_string())?;
        let mut slot = Some((item, out));
        if self.buffered(|h| h.sends.extend(slot.take())) {
            return Ok(());
        }
        let Some((item, out)) = slot else {
            return Ok(());
        };
        let seq = self
            .store
            .outbox_insert(self.handle.name(), &item, now_ms())
            .map_err(|e| format!("the outbox refused the send: {e}"))?;
        self.handle.queued(seq, out);
        Ok(())
    }

    fn message_begin(&self, token: i64) {
        self.handling().message = Some(token);
    }

    /// The message counts as handled once the batch it is in commits.
    fn message_started(&self, token: i64) {
        let mut h = self.handling();
        h.message = None;
        h.handled.push(token);
    }

    fn messages_done(&self) {
        if self.handling().pending() {
            self.commit_handled();
        }
    }

    fn logout(&self) {
        if self.buffered(|h| h.logout = true) {
            return;
        }
        self.handle.logout_nowait(LogoutBy::Script);
    }

    fn store_get(&self, script: &str, key: &str) -> Result<Option<serde_json::Value>, String> {
        {
            // A message's handlers read what they wrote.
            let h = self.handling();
            let newest = h.kv.iter().rev().find_map(|w| match w {
                KvWrite::Set {
                    script: s,
                    key: k,
                    value,
                } if s == script && k == key => Some(Some(value.clone())),
                KvWrite::Delete { script: s, key: k } if s == script && k == key => Some(None),
                _ => None,
            });
            if let Some(v) = newest {
                return Ok(v);
            }
        }
        self.store
            .kv_get(self.handle.name(), script, key)
            .map_err(|e| e.to_string())
    }

    fn store_set(&self, script: &str, key: &str, value: &serde_json::Value) -> Result<(), String> {
        if self.buffered(|h| {
            h.kv.push(KvWrite::Set {
                script: script.to_string(),
                key: key.to_string(),
                value: value.clone(),
            })
        }) {
            return Ok(());
        }
        self.store
            .kv_set(self.handle.name(), script, key, value, now_ms())
            .map_err(|e| e.to_string())
    }

    fn store_delete(&self, script: &str, key: &str) -> Result<(), String> {
        if self.buffered(|h| {
            h.kv.push(KvWrite::Delete {
                script: script.to_string(),
                key: key.to_string(),
            })
        }) {
            return Ok(());
        }
        self.store
            .kv_delete(self.handle.name(), script, key)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn hook_done(&self, hook: &str, elapsed: std::time::Duration, ok: bool) {
        // Only this instance's worker calls this: the lock is uncontended,
        // and the family behind it is looked up once per hook name.
        let mut cache = self.hook_metrics.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(h, _)| h == hook) {
            Some((_, m)) => m.record(elapsed, ok),
            None => {
                let m = self.bus.metrics().hook_handles(hook);
                m.record(elapsed, ok);
                cache.push((hook.to_string(), m));
            }
        }
    }

    fn reloaded(&self, swapped: bool) {
        self.bus.metrics().reload(swapped);
    }

    fn http(&self, req: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        let Some(rt) = &self.net.rt else {
            return Box::pin(std::future::ready(Err(HttpError::Transport(
                "bot.http needs the host's async runtime".into(),
            ))));
        };
        let client = self.net.http.clone();
        let instance = self.handle.name().to_string();
        let task = AbortOnDrop(rt.spawn(async move { client.request(&instance, req).await }));
        Box::pin(async move {
            let mut task = task;
            match (&mut task.0).await {
                Ok(r) => r,
                Err(e) => Err(HttpError::Transport(format!(
                    "the request task failed: {e}"
                ))),
            }
        })
    }

    fn act(&self, action: Action) -> Result<(), String> {
        if !matches!(self.handle.snapshot().state, State::Open { .. }) {
            return Err("not open".into());
        }
        let Some(rt) = &self.net.rt else {
            return Err("needs the host's async runtime".into());
        };
        let handle = self.handle.clone();
        rt.spawn(async move {
            if let Err(e) = handle.act(action).await {
                tracing::warn!(instance = %handle.name(), error = %e, "a read receipt or typing indicator failed");
            }
        });
        Ok(())
    }

    fn download(&self, m: &Incoming) -> BoxFuture<Result<PathBuf, String>> {
        let fail = |e: String| -> BoxFuture<Result<PathBuf, String>> {
            Box::pin(std::future::ready(Err(e)))
        };
        let Some(media) = m.media.clone() else {
            return fail("this message has no media to download".into());
        };
        let Some(rt) = &self.net.rt else {
            return fail("downloads need the host's async runtime".into());
        };
        let max = self.max_media;
        if let Some(size) = media.size
            && size > max
        {
            return fail(format!(
                "the file is {size} bytes, more than the limit of {} MiB ([script] max_media_mb)",
                max / (1024 * 1024)
            ));
        }
        let dir = self.media_dir.join(safe_component(self.handle.name()));
        let name = media_file_name(&m.id, &media);
        let handle = self.handle.clone();
        let task = AbortOnDrop(rt.spawn(async move {
            let path = dir.join(&name);
            // Written whole or not at all (renamed into place once checked),
            // so a file that is there is the download.
            if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                return Ok(path);
            }
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let part = Partial(dir.join(format!("{name}.{:016x}.part", rand::random::<u64>())));
            let action = Action::Download {
                media: *media,
                to: part.0.clone(),
                max_bytes: max,
            };
            handle.act(action).await.map_err(|e| e.to_string())?;
            tokio::fs::rename(&part.0, &path)
                .await
                .map_err(|e| format!("cannot move the download into place: {e}"))?;
            Ok(path)
        }));
        Box::pin(async move {
            let mut task = task;
            match (&mut task.0).await {
                Ok(r) => r,
                Err(e) => Err(format!("the download task failed: {e}")),
            }
        })
    }

    fn group(&self, op: GroupOp) -> BoxFuture<Result<GroupReply, String>> {
        let Some(rt) = &self.net.rt else {
            return Box::pin(std::future::ready(Err(
                "group calls need the host's async runtime".into(),
            )));
        };
        let handle = self.handle.clone();
        let task = AbortOnDrop(rt.spawn(async move {
            handle.group(op).await.map_err(|e| match e {
                crate::host::SendError::Channel(c) => c.to_string(),
                crate::host::SendError::NotOpen(_) => "not open".to_string(),
                other => other.to_string(),
            })
        }));
        Box::pin(async move {
            let mut task = task;
            match (&mut task.0).await {
                Ok(r) => r,
                Err(e) => Err(format!("the group call failed: {e}")),
            }
        })
    }

    fn set_routes(&self, table: RouteTable) {
        let generation = table.generation();
        if !self.net.routes.replace(self.handle.name(), table) {
            tracing::warn!(instance = %self.handle.name(), generation, "a newer generation's routes are in place; kept them");
        }
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

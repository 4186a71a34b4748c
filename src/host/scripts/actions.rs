//! What scripts do to their instance (`Actions`): sends into the outbox,
//! `bot.store`, logout, downloads, group calls and `bot.http`, and the
//! buffer that commits a message's handling with its handled mark.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::Folders;
use crate::automation::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use crate::automation::routes::{RouteTable, Routes};
use crate::channel::rich::{extension_for_mime, safe_component};
use crate::channel::{Action, BoxFuture, GroupOp, GroupReply, Incoming, MediaInfo, Outgoing};
use crate::host::{EventBus, HostEvent, InstanceHandle, now_ms};
use crate::lifecycle::{LogoutBy, State};
use crate::script::{Actions, ScriptError};
use crate::store::{KvWrite, OutboxItem, Store};

pub(super) struct HostActions {
    pub(super) handle: InstanceHandle,
    pub(super) store: Arc<Store>,
    pub(super) bus: EventBus,
    pub(super) dir: PathBuf,
    pub(super) folders: Folders,
    pub(super) net: Net,
    pub(super) hook_metrics: Mutex<Vec<(String, crate::host::metrics::HookHandles)>>,
    /// The data dir's `media/` folder and the media size limit.
    pub(super) media_dir: PathBuf,
    pub(super) max_media: u64,
    /// What the handlers of the message being started do, committed with
    /// its handled mark.
    pub(super) handling: Mutex<Handling>,
}

/// Messages' handling while their handlers start: the `bot.store` writes
/// and the sends they make before they first wait, committed with the
/// rows' handled marks at the end of the engine's batch of jobs
/// (`Actions::messages_done`), so a burst costs one transaction. Only this
/// instance's worker touches it, so the lock is uncontended.
#[derive(Default)]
pub(super) struct Handling {
    /// The inbox row whose handlers are running.
    message: Option<i64>,
    /// Rows whose handlers have all started, not committed yet.
    handled: Vec<i64>,
    kv: Vec<KvWrite>,
    sends: Vec<(OutboxItem, Outgoing)>,
    /// `bot.logout()` was called: it follows the sends made before it.
    logout: bool,
    /// Group changes asked for meanwhile: they go to the server once what
    /// came before them is committed and queued, with the answer for the
    /// handler waiting on them.
    changes: Vec<(GroupOp, GroupAnswer)>,
}

type GroupAnswer = tokio::sync::oneshot::Sender<Result<GroupReply, String>>;

impl Handling {
    fn pending(&self) -> bool {
        !self.handled.is_empty()
            || !self.kv.is_empty()
            || !self.sends.is_empty()
            || self.logout
            || !self.changes.is_empty()
    }
}

/// What `bot.http` and `bot.route` need of the host.
#[derive(Clone)]
pub(super) struct Net {
    pub(super) http: HttpClient,
    /// The runtime requests run on; `None` outside one (no `bot.http`).
    pub(super) rt: Option<tokio::runtime::Handle>,
    pub(super) routes: Arc<Routes>,
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
        let (handled, kv, sends, logout, changes) = {
            let mut h = self.handling();
            (
                std::mem::take(&mut h.handled),
                std::mem::take(&mut h.kv),
                std::mem::take(&mut h.sends),
                std::mem::take(&mut h.logout),
                std::mem::take(&mut h.changes),
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
                for (op, answer) in changes {
                    // A handler cancelled meanwhile asked for nothing.
                    if !answer.is_closed() {
                        self.start_group_call(op, answer);
                    }
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
                // Nothing of the run happened, so neither may its changes.
                for (_, answer) in changes {
                    let _ = answer.send(Err(format!("not done: the store could not commit: {e}")));
                }
            }
        }
        if logout {
            self.handle.logout_nowait(LogoutBy::Script);
        }
    }

    /// Sends a group call to the instance; `answer` gets the server's.
    fn start_group_call(&self, op: GroupOp, mut answer: GroupAnswer) {
        let Some(rt) = &self.net.rt else {
            let _ = answer.send(Err("group calls need the host's async runtime".into()));
            return;
        };
        let handle = self.handle.clone();
        rt.spawn(async move {
            let call = handle.group(op);
            let r = tokio::select! {
                r = call => r.map_err(|e| match e {
                    crate::host::SendError::Channel(c) => c.to_string(),
                    crate::host::SendError::NotOpen(_) => "not open".to_string(),
                    other => other.to_string(),
                }),
                // The handler waiting for it was cancelled.
                () = answer.closed() => return,
            };
            let _ = answer.send(r);
        });
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

    /// A change (anything but `Info`, `List`, `InviteLink`) asked for in a
    /// message's handlers' start waits for that start's commit, as a send
    /// does: the server makes it at once and nothing rolls it back, so it
    /// must neither overtake the sends made before it nor happen for a run
    /// a crash undoes. A group call the server answers fast could finish
    /// within the handler's first run, before the commit. Reads go at once.
    fn group(&self, op: GroupOp) -> BoxFuture<Result<GroupReply, String>> {
        let (answer, rx) = tokio::sync::oneshot::channel();
        let read = matches!(
            op,
            GroupOp::Info(_) | GroupOp::List | GroupOp::InviteLink(_)
        );
        let mut slot = Some((op, answer));
        if (read || !self.buffered(|h| h.changes.extend(slot.take())))
            && let Some((op, answer)) = slot.take()
        {
            self.start_group_call(op, answer);
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the group call was dropped".into()))
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

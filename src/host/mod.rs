//! The supervisor: one actor per instance, where channels, the machine, the
//! store and the scripts meet. Nothing else knows all of them.

pub mod app;
pub mod delivery;
#[cfg(test)]
mod delivery_tests;
pub mod instance;
pub mod metrics;
pub mod scripts;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::channel::{BoxFuture, Channel, ChannelEvent, GroupEvent, Incoming, Outgoing, Receipt};
use crate::lifecycle::{
    CloseAnswer, ConnectionStatus, HookCall, ReasonKind, Settings, StateName, StatusRow, Transition,
};
use crate::store::Store;

pub use delivery::Retention;
pub use instance::{InstanceHandle, SendError, Snapshot};

/// What scripts (or anything else) plug into. Calls must return at once: the
/// host never waits on a hook, only on the answer channel it gets back.
pub trait Hooks: Send + Sync + 'static {
    /// A lifecycle hook. For `Close` with an `answer_seq`, the returned
    /// receiver carries the decision; `None` means "no opinion".
    fn lifecycle(
        &self,
        instance: &InstanceHandle,
        call: &HookCall,
    ) -> Option<oneshot::Receiver<CloseAnswer>>;
    /// An incoming message, in arrival order per instance.
    fn message(&self, instance: &InstanceHandle, msg: Incoming);
    /// Inbox row `seq` for the scripts. Answers whether these hooks mark it
    /// handled themselves (once every handler has started); if not, the
    /// host marks it as soon as it is handed over.
    fn deliver(&self, instance: &InstanceHandle, seq: i64, msg: Incoming) -> bool {
        let _ = seq;
        self.message(instance, msg);
        false
    }
    /// Receipts for messages the instance sent.
    fn receipt(&self, _instance: &InstanceHandle, _receipt: Receipt) {}
    /// A group changed (`on_group`).
    fn group(&self, _instance: &InstanceHandle, _event: GroupEvent) {}
    /// Resolves once every hook call queued before it has finished.
    fn settle(&self) -> BoxFuture<()>;
    /// Resolves once every hook call queued before it has started: it
    /// finished, or it waits (for a timer, the network, ...).
    fn settle_started(&self) -> BoxFuture<()> {
        self.settle()
    }
}

/// Hooks that do nothing: the host without scripts.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn lifecycle(
        &self,
        _: &InstanceHandle,
        _: &HookCall,
    ) -> Option<oneshot::Receiver<CloseAnswer>> {
        None
    }
    fn message(&self, _: &InstanceHandle, _: Incoming) {}
    fn settle(&self) -> BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }
}

/// Things worth telling the outside (console lines, logs, later SSE/webhooks).
#[derive(Debug, Clone)]
pub enum HostEvent {
    State {
        instance: String,
        transition: Transition,
        row: StatusRow,
    },
    Qr {
        instance: String,
        code: String,
        kind: &'static str,
        expires_in_ms: u64,
    },
    MessageIn {
        instance: String,
        message: Incoming,
    },
    MessageOut {
        instance: String,
        chat: String,
        id: String,
        /// What was sent (media as metadata: the bytes are not kept).
        message: Arc<Outgoing>,
    },
    ScriptError {
        instance: String,
        error: crate::script::ScriptError,
    },
    /// A group changed.
    Group {
        instance: String,
        event: GroupEvent,
    },
    /// A send that will not be delivered, and why.
    SendFailed {
        instance: String,
        id: String,
        chat: String,
        reason: String,
    },
}

type Observer = Arc<dyn Fn(&HostEvent) + Send + Sync>;

/// Fans host events out: synchronous observers (in order, on the actor) and
/// a broadcast for anything that may lag.
#[derive(Clone)]
pub struct EventBus {
    observers: Arc<Mutex<Vec<Observer>>>,
    tx: broadcast::Sender<HostEvent>,
    metrics: Arc<metrics::Metrics>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus {
            observers: Default::default(),
            tx: broadcast::channel(1024).0,
            metrics: Default::default(),
        }
    }
}

impl EventBus {
    /// The process's metrics; every published event is counted there.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// Observers run inside the instance actor, in event order: keep them quick.
    pub fn observe(&self, f: impl Fn(&HostEvent) + Send + Sync + 'static) {
        self.observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(f));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.tx.subscribe()
    }

    pub fn publish(&self, ev: HostEvent) {
        self.metrics.observe(&ev);
        let observers = self
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for o in observers {
            o(&ev);
        }
        // No subscriber is fine.
        let _ = self.tx.send(ev);
    }
}

/// Host-wide knobs, from the config.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub reconnect: Settings,
    /// How long `on_close` may take to answer before the default applies.
    pub hook_timeout: Duration,
    /// How long a logout waits for the server to confirm the unlink.
    pub unlink_timeout: Duration,
    /// Pause between retries of a failed status write (or inbox commit).
    pub write_retry: Duration,
    /// How long the inbox and finished sends are kept (`[store]`).
    pub retention: Retention,
    /// `false` only to measure what the inbox costs (`benches/delivery.rs`):
    /// messages then go straight to the scripts and nothing of them is
    /// durable. No configuration key sets it.
    pub inbox: bool,
}

impl Default for HostSettings {
    fn default() -> HostSettings {
        HostSettings {
            reconnect: Settings::default(),
            hook_timeout: Duration::from_millis(1000),
            unlink_timeout: Duration::from_secs(5),
            write_retry: Duration::from_millis(500),
            retention: Retention::default(),
            inbox: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("another moonwire process is using {0} (its lock is held)")]
    Locked(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("instance {0:?} already exists")]
    Duplicate(String),
}

/// An exclusive lock on a data dir: one host per database, and a way for
/// `status` to tell a crashed host's rows from a live one's.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("moonwire.lock")
    }

    /// Takes the lock, or says who has it. The OS drops it when the process
    /// dies, however it dies.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, HostError> {
        let path = Self::path(data_dir);
        std::fs::create_dir_all(data_dir).map_err(|source| HostError::Io {
            op: "creating data dir",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| HostError::Io {
                op: "opening lock",
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(HostError::Locked(path)),
            Err(std::fs::TryLockError::Error(source)) => Err(HostError::Io {
                op: "locking",
                path,
                source,
            }),
        }
    }
}

/// Unix milliseconds: the host's one clock read, fed to the machine.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// All instances of one process.
pub struct Host {
    store: Arc<Store>,
    hooks: Arc<dyn Hooks>,
    bus: EventBus,
    settings: HostSettings,
    instances: Mutex<BTreeMap<String, InstanceHandle>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Host {
    /// Repairs rows a crashed process left behind (a row left open or
    /// connecting becomes closed/interrupted) before any instance starts.
    pub fn new(
        store: Arc<Store>,
        hooks: Arc<dyn Hooks>,
        bus: EventBus,
        settings: HostSettings,
    ) -> Result<Host, HostError> {
        for r in store.reconcile(now_ms())? {
            tracing::warn!(
                instance = %r.name,
                previous = r.previous_state.as_str(),
                has_session = r.has_session,
                "found the instance marked live after an unclean stop; marked closed (interrupted)"
            );
        }
        // A crash between "logging out" and its one transaction must not
        // bring the session back: finish the logout now.
        for row in store.instances()? {
            if row.status.state == StateName::LoggingOut {
                let ended = StatusRow {
                    connection_status: ConnectionStatus::Close,
                    state: StateName::LoggedOut,
                    last_reason_code: Some(401),
                    last_reason_kind: Some(ReasonKind::LoggedOut),
                    last_reason_message: None,
                    last_change_at: now_ms(),
                    jid: None,
                    push_name: None,
                    logout_by: row.status.logout_by,
                };
                store.end_session(&row.name, &ended)?;
                tracing::warn!(instance = %row.name, "finished a logout an unclean stop interrupted");
            }
        }
        Ok(Host {
            store,
            hooks,
            bus,
            settings,
            instances: Default::default(),
            tasks: Default::default(),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Starts an instance's actor. `make_channel` gets the sender its events go to.
    pub fn add_instance(
        &self,
        name: &str,
        channel_kind: &str,
        make_channel: impl FnOnce(mpsc::UnboundedSender<ChannelEvent>) -> Box<dyn Channel>,
    ) -> Result<InstanceHandle, HostError> {
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        instances.retain(|_, h| !h.is_closed());
        if instances.contains_key(name) {
            return Err(HostError::Duplicate(name.into()));
        }
        let row = self.store.ensure_instance(name, channel_kind, now_ms())?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let channel = make_channel(events_tx);
        let (handle, task) = instance::spawn(
            name,
            row.status,
            channel,
            events_rx,
            self.store.clone(),
            self.hooks.clone(),
            self.bus.clone(),
            self.settings.clone(),
        );
        instances.insert(name.into(), handle.clone());
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(handle)
    }

    /// Stops an instance's actor and forgets it (its rows stay).
    pub async fn remove_instance(&self, name: &str) -> Option<InstanceHandle> {
        let handle = self
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)?;
        handle.shutdown().await;
        Some(handle)
    }

    /// The running instance of that name. An actor that ended by itself
    /// (its row was deleted) is forgotten here.
    pub fn instance(&self, name: &str) -> Option<InstanceHandle> {
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if instances.get(name).is_some_and(InstanceHandle::is_closed) {
            instances.remove(name);
        }
        instances.get(name).cloned()
    }

    pub fn instances(&self) -> Vec<InstanceHandle> {
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        instances.retain(|_, h| !h.is_closed());
        instances.values().cloned().collect()
    }

    /// Waits until everything queued so far — events, hooks and what the
    /// hooks asked for — has been handled. Timers are not waited for.
    pub async fn settle(&self) {
        for _ in 0..4 {
            for h in self.instances() {
                h.settle().await;
            }
            self.hooks.settle().await;
        }
        for h in self.instances() {
            h.settle().await;
        }
    }

    /// As `settle`, but handlers that wait are not waited for: everything
    /// queued so far has started.
    pub async fn settle_started(&self) {
        for _ in 0..4 {
            for h in self.instances() {
                h.settle().await;
            }
            self.hooks.settle_started().await;
        }
        for h in self.instances() {
            h.settle().await;
        }
    }

    /// Stops every instance (rows end `close`, reason `stopped`) and waits
    /// for their actors to finish their writes.
    pub async fn shutdown(&self) {
        for h in self.instances() {
            h.shutdown().await;
        }
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "an instance task ended abnormally");
            }
        }
    }
}

#[cfg(test)]
mod tests;

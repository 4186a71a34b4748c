//! The whole running process: host, scripts and the channels behind each
//! instance, so `moonwire run`, the API and tests create and remove
//! instances the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scripts::ScriptHooks;
use super::{EventBus, Host, HostError, HostSettings, InstanceHandle, now_ms};
use crate::channel::console::{ConsoleOut, ConsoleSim, PairingStore, SESSION_KEY};
use crate::channel::whatsapp::{WhatsappChannel, WhatsappOptions};
use crate::config::ChannelKind;
use crate::lifecycle::{LogoutBy, StateName};
use crate::script::EngineConfig;
use crate::store::{CreatedBy, NewInstance, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("instance {0:?} not found")]
    NotFound(String),
    #[error("starting the script engine: {0}")]
    Engine(std::io::Error),
    #[error("instance {0:?} already exists")]
    Exists(String),
    #[error("instance {0:?} comes from the config file; remove it there instead")]
    Configured(String),
    #[error(
        "instance {name:?} was created through the API on channel {stored:?}, but the config file names it on {configured:?}: delete it through the API or rename one of them"
    )]
    ChannelClash {
        name: String,
        stored: String,
        configured: &'static str,
    },
    #[error("instance {0:?} is not a simulated (console) instance; scan its QR with the phone")]
    NotSimulated(String),
    #[error("instance {name:?}: {why}")]
    NothingToScan { name: String, why: String },
}

/// How an instance is started, besides its name and channel.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// WhatsApp: pair with a code for this number instead of a QR.
    pub phone: Option<String>,
    /// Console: a new account is not paired and pairing waits for a scan
    /// (`/scan`, `POST .../scan`), so the QR can be looked at.
    pub manual_scan: bool,
    /// The instance's own scripts folder (default: the shared one).
    pub scripts: Option<std::path::PathBuf>,
}

impl StartOptions {
    /// What an `[[instance]]` entry asks for.
    pub fn from_config(inst: &crate::config::InstanceConfig) -> StartOptions {
        StartOptions {
            phone: inst.phone.clone(),
            scripts: inst.scripts.clone(),
            ..StartOptions::default()
        }
    }
}

type NameLocks = Arc<Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// Held while one operation on an instance name runs (see
/// [`App::lock_name`]). The name's entry goes when nobody holds or waits.
pub struct NameLock {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    name: String,
    names: NameLocks,
}

impl Drop for NameLock {
    fn drop(&mut self) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        self.guard.take();
        // Waiters clone the entry under this same lock, so one reference
        // left means the map's own.
        if names
            .get(&self.name)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            names.remove(&self.name);
        }
    }
}

struct SimPairing {
    store: Arc<Store>,
    instance: String,
}

impl PairingStore for SimPairing {
    fn mark_paired(&self) -> Result<(), String> {
        self.store
            .session_put(&self.instance, SESSION_KEY, b"1")
            .map_err(|e| e.to_string())
    }
}

pub struct App {
    pub store: Arc<Store>,
    pub bus: EventBus,
    pub host: Host,
    pub scripts: Arc<ScriptHooks>,
    console_out: Arc<ConsoleOut>,
    sims: Mutex<BTreeMap<String, Arc<ConsoleSim>>>,
    names: NameLocks,
    /// What each WhatsApp instance starts from (its phone is its own).
    whatsapp: WhatsappOptions,
}

impl App {
    /// `console_out` is where simulated instances show what the bot sends.
    pub fn new(
        store: Arc<Store>,
        bus: EventBus,
        settings: HostSettings,
        engine: EngineConfig,
        console_out: Arc<ConsoleOut>,
    ) -> Result<App, AppError> {
        let scripts = Arc::new(
            ScriptHooks::new(engine, store.clone(), bus.clone()).map_err(AppError::Engine)?,
        );
        let host = Host::new(store.clone(), scripts.clone(), bus.clone(), settings)?;
        Ok(App {
            store,
            bus,
            host,
            scripts,
            console_out,
            sims: Default::default(),
            names: Default::default(),
            whatsapp: WhatsappOptions::new(crate::channel::whatsapp::transport::DEFAULT_URL),
        })
    }

    /// Where WhatsApp instances connect (`[whatsapp] url`; tests point it at
    /// a local server).
    pub fn with_whatsapp_url(mut self, url: impl Into<String>) -> App {
        self.whatsapp.url = url.into();
        self
    }

    /// Everything under `[whatsapp]`.
    pub fn with_whatsapp_config(self, c: &crate::config::WhatsappConfig) -> App {
        self.with_whatsapp_url(&c.url)
            .with_whatsapp_ping(
                Duration::from_millis(c.ping_interval_ms),
                Duration::from_millis(c.ping_timeout_ms),
            )
            .with_whatsapp_version_opt(c.version)
            .with_whatsapp_login_timeout(Duration::from_millis(c.login_timeout_ms))
    }

    /// Certificates (DER) a WhatsApp media host may present besides the
    /// public roots. For tests against the mock server's media host only:
    /// nothing in the config or the command line reaches it.
    pub fn with_whatsapp_media_roots(mut self, roots: Vec<Vec<u8>>) -> App {
        self.whatsapp.media_roots = roots;
        self
    }

    /// How long an attempt may go without a login or a pairing code
    /// (`[whatsapp] login_timeout_ms`).
    pub fn with_whatsapp_login_timeout(mut self, timeout: Duration) -> App {
        self.whatsapp.login_timeout = timeout;
        self
    }

    /// How soon a silent server is taken for dead (`[whatsapp]
    /// ping_interval_ms`, `ping_timeout_ms`).
    pub fn with_whatsapp_ping(mut self, interval: Duration, timeout: Duration) -> App {
        self.whatsapp.ping_interval = interval;
        self.whatsapp.ping_timeout = timeout;
        self
    }

    /// Pins the web app version WhatsApp clients announce instead of
    /// fetching it over HTTP per attempt (`[whatsapp] version`; tests against
    /// the offline mock server need it).
    pub fn with_whatsapp_version(self, version: (u32, u32, u32)) -> App {
        self.with_whatsapp_version_opt(Some(version))
    }

    /// As `with_whatsapp_version`; `None` keeps fetching it.
    pub fn with_whatsapp_version_opt(mut self, version: Option<(u32, u32, u32)>) -> App {
        self.whatsapp.version = version;
        self
    }

    /// Starts a configured instance (creating its row if new) with its
    /// scripts; does not connect it.
    pub fn start_instance(
        &self,
        name: &str,
        channel: ChannelKind,
    ) -> Result<InstanceHandle, AppError> {
        self.start_configured(name, channel, StartOptions::default())
    }

    /// As `start_instance`; `phone` makes a WhatsApp instance pair with a
    /// code for that number instead of a QR.
    pub fn start_instance_with(
        &self,
        name: &str,
        channel: ChannelKind,
        phone: Option<String>,
    ) -> Result<InstanceHandle, AppError> {
        let opts = StartOptions {
            phone,
            ..StartOptions::default()
        };
        self.start_configured(name, channel, opts)
    }

    /// Starts an instance the config file (or `moonwire console`) names.
    /// The config file is the truth for the names it lists: an instance the
    /// API made under the same name becomes a configured one (its token and
    /// session stay), unless it runs on another channel, which is an error.
    pub fn start_configured(
        &self,
        name: &str,
        channel: ChannelKind,
        opts: StartOptions,
    ) -> Result<InstanceHandle, AppError> {
        if let Some(row) = self.store.instance(name)?
            && row.created_by == CreatedBy::Api
        {
            if row.channel != channel.as_str() {
                return Err(AppError::ChannelClash {
                    name: name.to_string(),
                    stored: row.channel,
                    configured: channel.as_str(),
                });
            }
            self.store.adopt_instance(name)?;
            tracing::warn!(instance = %name, "created through the API, now named by the config file: it is a configured instance from now on (its token still works)");
        }
        self.start(name, channel, &opts)
    }

    fn start(
        &self,
        name: &str,
        channel: ChannelKind,
        opts: &StartOptions,
    ) -> Result<InstanceHandle, AppError> {
        let handle = match channel {
            ChannelKind::Console => {
                // A brand-new simulated account starts paired (unless it is
                // to be scanned by hand); after a logout it has to pair
                // again, like a real one.
                let row = self.store.instance(name)?;
                let has_session = self.store.session_exists(name)?;
                let manual_scan = opts.manual_scan || row.as_ref().is_some_and(|r| r.manual_scan);
                let new_account = match &row {
                    None => true,
                    Some(r) => r.status.state == StateName::Idle && !has_session,
                };
                let paired = if new_account {
                    !manual_scan
                } else {
                    has_session
                };
                let pairing = Arc::new(SimPairing {
                    store: self.store.clone(),
                    instance: name.to_string(),
                });
                let sim = ConsoleSim::new(paired, self.console_out.clone(), pairing.clone());
                sim.set_manual_scan(manual_scan);
                // The simulated server numbers messages from c1 in every
                // run; the inbox tells runs apart by a number of its own.
                let last = self
                    .store
                    .inbox_last_run(name, crate::channel::console::RUN_PREFIX)?;
                sim.set_run(last + 1);
                let handle = self.host.add_instance(name, channel.as_str(), |events| {
                    Box::new(sim.channel(events))
                })?;
                if new_account && paired {
                    pairing.mark_paired().map_err(|e| {
                        AppError::Host(HostError::Io {
                            op: "marking the simulated account paired",
                            path: name.into(),
                            source: std::io::Error::other(e),
                        })
                    })?;
                }
                self.sims
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), sim);
                handle
            }
            ChannelKind::Whatsapp => {
                let mut options = self.whatsapp.clone();
                options.phone = opts.phone.clone();
                let store = self.store.clone();
                self.host.add_instance(name, channel.as_str(), |events| {
                    Box::new(WhatsappChannel::new(store, name, options, events))
                })?
            }
        };
        self.scripts
            .attach(&handle, opts.scripts.as_deref())
            .map_err(AppError::Engine)?;
        Ok(handle)
    }

    /// Whether the instance's account is paired: it could connect without
    /// a QR, and a logout has something to unlink.
    pub fn is_paired(&self, name: &str) -> Result<bool, AppError> {
        let row = self
            .store
            .instance(name)?
            .ok_or_else(|| AppError::NotFound(name.to_string()))?;
        Ok(match ChannelKind::parse(&row.channel) {
            Some(ChannelKind::Whatsapp) => crate::channel::whatsapp::is_paired(&self.store, name),
            _ => self.store.session_exists(name)?,
        })
    }

    /// Starts every instance the API made (and the config file does not
    /// name): they are rows like the configured ones. Returns those to
    /// connect now: the ones that were paired and had been connected.
    pub fn restore_api_instances(
        &self,
        configured: &[&str],
    ) -> Result<Vec<InstanceHandle>, AppError> {
        let mut connect = Vec::new();
        for row in self.store.instances()? {
            if row.created_by != CreatedBy::Api || configured.contains(&row.name.as_str()) {
                continue;
            }
            let Some(channel) = ChannelKind::parse(&row.channel) else {
                tracing::error!(instance = %row.name, channel = %row.channel, "an API instance on an unknown channel; left stopped");
                continue;
            };
            let opts = StartOptions {
                manual_scan: row.manual_scan,
                ..StartOptions::default()
            };
            let handle = self.start(&row.name, channel, &opts)?;
            if row.status.state != StateName::Idle && self.is_paired(&row.name)? {
                connect.push(handle);
            }
        }
        Ok(connect)
    }

    /// The simulated server behind a console-channel instance.
    pub fn console_sim(&self, name: &str) -> Option<Arc<ConsoleSim>> {
        self.sims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Serialises operations on one instance name: a create, delete,
    /// logout or connect of `name` waits for the one before it, so they
    /// never interleave into an instance half made and half deleted.
    pub async fn lock_name(&self, name: &str) -> NameLock {
        let lock = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        NameLock {
            guard: Some(lock.lock_owned().await),
            name: name.to_string(),
            names: self.names.clone(),
        }
    }

    /// Creates an instance through the API: its row and token digest in one
    /// transaction, then its actor and scripts. Does not connect it.
    pub async fn create_instance(
        &self,
        name: &str,
        channel: ChannelKind,
        manual_scan: bool,
        token_hash: &str,
    ) -> Result<InstanceHandle, AppError> {
        let _lock = self.lock_name(name).await;
        if self.host.instance(name).is_some() || self.store.instance(name)?.is_some() {
            return Err(AppError::Exists(name.to_string()));
        }
        let new = NewInstance {
            name,
            channel: channel.as_str(),
            created_by: CreatedBy::Api,
            manual_scan,
            token_hash: Some(token_hash),
        };
        match self.store.create_instance(&new, now_ms()) {
            Ok(_) => {}
            Err(StoreError::Exists(_)) => return Err(AppError::Exists(name.to_string())),
            Err(e) => return Err(e.into()),
        }
        let opts = StartOptions {
            manual_scan,
            ..StartOptions::default()
        };
        match self.start(name, channel, &opts) {
            Ok(h) => Ok(h),
            Err(e) => {
                // Nothing half made stays behind.
                self.discard(name).await;
                if let Err(e) = self.store.delete_instance(name) {
                    tracing::error!(instance = %name, error = %e, "could not remove the row of a failed create");
                }
                Err(e)
            }
        }
    }

    fn instance_handle(&self, name: &str) -> Result<InstanceHandle, AppError> {
        self.host
            .instance(name)
            .ok_or_else(|| AppError::NotFound(name.to_string()))
    }

    /// Asks the instance to connect, serialised with the other operations.
    pub async fn connect_instance(&self, name: &str) -> Result<InstanceHandle, AppError> {
        let _lock = self.lock_name(name).await;
        let h = self.instance_handle(name)?;
        h.connect();
        h.settle().await;
        Ok(h)
    }

    /// Stops and connects again.
    pub async fn restart_instance(&self, name: &str) -> Result<InstanceHandle, AppError> {
        let _lock = self.lock_name(name).await;
        let h = self.instance_handle(name)?;
        h.stop();
        h.connect();
        h.settle().await;
        Ok(h)
    }

    /// Logs out; answers once the teardown is written.
    pub async fn logout_instance(&self, name: &str) -> Result<InstanceHandle, AppError> {
        let _lock = self.lock_name(name).await;
        let h = self.instance_handle(name)?;
        h.logout(LogoutBy::User).await;
        Ok(h)
    }

    /// The simulated phone scans the code a console instance shows.
    pub async fn scan_instance(&self, name: &str) -> Result<InstanceHandle, AppError> {
        let _lock = self.lock_name(name).await;
        let h = self.instance_handle(name)?;
        let sim = self
            .console_sim(name)
            .ok_or_else(|| AppError::NotSimulated(name.to_string()))?;
        sim.scan().map_err(|e| AppError::NothingToScan {
            name: name.to_string(),
            why: e,
        })?;
        h.settle().await;
        Ok(h)
    }

    /// Logs out, stops, and removes every row of an instance the API made.
    /// A configured instance is refused: the config file would bring it
    /// back at the next start.
    pub async fn delete_instance(&self, name: &str) -> Result<(), AppError> {
        let _lock = self.lock_name(name).await;
        let handle = self.instance_handle(name)?;
        if self
            .store
            .instance(name)?
            .is_some_and(|r| r.created_by == CreatedBy::Config)
        {
            return Err(AppError::Configured(name.to_string()));
        }
        handle.logout(LogoutBy::User).await;
        self.discard(name).await;
        self.store.delete_instance(name)?;
        Ok(())
    }

    /// Stops an instance's scripts and actor and forgets its simulator.
    async fn discard(&self, name: &str) {
        self.scripts.detach(name).await;
        self.host.remove_instance(name).await;
        self.sims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Ends everything: hook work finishes, `on_unload` runs, instances stop
    /// with their rows `close`/`stopped`.
    pub async fn shutdown(&self) {
        // Bounded: a script wedged in C code (a pathological pattern) must
        // not keep the process from stopping and writing its rows.
        let grace = std::time::Duration::from_secs(5);
        if tokio::time::timeout(grace, self.host.settle())
            .await
            .is_err()
        {
            tracing::warn!("pending hook work did not finish within 5 s; stopping anyway");
        }
        if tokio::time::timeout(grace, self.scripts.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("on_unload did not finish within 5 s; stopping anyway");
        }
        self.host.shutdown().await;
    }
}

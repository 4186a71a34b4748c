//! The whole running process: host, scripts and the channels behind each
//! instance, so `moonwire run`, the API and tests create and remove
//! instances the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scripts::ScriptHooks;
use super::{EventBus, Host, HostError, HostSettings, InstanceHandle};
use crate::channel::console::{ConsoleOut, ConsoleSim, PairingStore, SESSION_KEY};
use crate::channel::whatsapp::{WhatsappChannel, WhatsappOptions};
use crate::config::ChannelKind;
use crate::lifecycle::LogoutBy;
use crate::script::EngineConfig;
use crate::store::Store;

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

    /// Starts an instance (creating its row if new) with its scripts; does
    /// not connect it.
    pub fn start_instance(
        &self,
        name: &str,
        channel: ChannelKind,
    ) -> Result<InstanceHandle, AppError> {
        self.start_instance_with(name, channel, None)
    }

    /// Starts an instance as an `[[instance]]` entry describes it: its
    /// phone, its own scripts folder.
    pub fn start_configured(
        &self,
        inst: &crate::config::InstanceConfig,
    ) -> Result<InstanceHandle, AppError> {
        self.start_inner(
            &inst.name,
            inst.channel,
            inst.phone.clone(),
            inst.scripts.as_deref(),
        )
    }

    /// As `start_instance`; `phone` makes a WhatsApp instance pair with a
    /// code for that number instead of a QR.
    pub fn start_instance_with(
        &self,
        name: &str,
        channel: ChannelKind,
        phone: Option<String>,
    ) -> Result<InstanceHandle, AppError> {
        self.start_inner(name, channel, phone, None)
    }

    fn start_inner(
        &self,
        name: &str,
        channel: ChannelKind,
        phone: Option<String>,
        scripts: Option<&std::path::Path>,
    ) -> Result<InstanceHandle, AppError> {
        let handle = match channel {
            ChannelKind::Console => {
                // A brand-new simulated account starts paired; after a
                // logout it has to pair again, like a real one.
                let existed = self.store.instance(name)?.is_some();
                let paired = !existed || self.store.session_exists(name)?;
                let pairing = Arc::new(SimPairing {
                    store: self.store.clone(),
                    instance: name.to_string(),
                });
                let sim = ConsoleSim::new(paired, self.console_out.clone(), pairing.clone());
                let handle = self.host.add_instance(name, channel.as_str(), |events| {
                    Box::new(sim.channel(events))
                })?;
                if !existed {
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
                options.phone = phone;
                let store = self.store.clone();
                self.host.add_instance(name, channel.as_str(), |events| {
                    Box::new(WhatsappChannel::new(store, name, options, events))
                })?
            }
        };
        self.scripts
            .attach(&handle, scripts)
            .map_err(AppError::Engine)?;
        Ok(handle)
    }

    /// The simulated server behind a console-channel instance.
    pub fn console_sim(&self, name: &str) -> Option<Arc<ConsoleSim>> {
        self.sims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Logs out, stops, and removes every row of the instance.
    pub async fn delete_instance(&self, name: &str) -> Result<(), AppError> {
        let handle = self
            .host
            .instance(name)
            .ok_or_else(|| AppError::NotFound(name.to_string()))?;
        handle.logout(LogoutBy::User).await;
        self.scripts.detach(name).await;
        self.host.remove_instance(name).await;
        self.sims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.store.delete_instance(name)?;
        Ok(())
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

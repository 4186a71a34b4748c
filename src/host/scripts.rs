//! Where scripts meet instances: the `Hooks` the host calls, backed by one
//! Lua engine per instance, and the `Actions` scripts take on an instance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{EventBus, Hooks, HostEvent, InstanceHandle, now_ms};
use crate::channel::{BoxFuture, Incoming, Outgoing};
use crate::lifecycle::{CloseAnswer, HookCall, LogoutBy, State};
use crate::script::{Actions, Engine, EngineConfig, LoadReport, ScriptError};
use crate::store::Store;

struct HostActions {
    handle: InstanceHandle,
    store: Arc<Store>,
    bus: EventBus,
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

    fn report(&self, error: &ScriptError) {
        let instance = self.handle.name();
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

/// The scripting side of the host: one engine per attached instance.
pub struct ScriptHooks {
    config: EngineConfig,
    store: Arc<Store>,
    bus: EventBus,
    engines: Mutex<BTreeMap<String, Engine>>,
}

impl ScriptHooks {
    pub fn new(config: EngineConfig, store: Arc<Store>, bus: EventBus) -> ScriptHooks {
        ScriptHooks {
            config,
            store,
            bus,
            engines: Default::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Starts the instance's engine, which loads the scripts folder.
    pub fn attach(&self, handle: &InstanceHandle) -> std::io::Result<()> {
        let actions = Arc::new(HostActions {
            handle: handle.clone(),
            store: self.store.clone(),
            bus: self.bus.clone(),
        });
        let engine = Engine::spawn(
            self.config.clone(),
            actions,
            tokio::runtime::Handle::try_current().ok(),
        )?;
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle.name().to_string(), engine);
        Ok(())
    }

    /// Calls the instance's `on_unload` and stops its engine.
    pub async fn detach(&self, instance: &str) {
        let engine = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(instance);
        if let Some(e) = engine {
            let _ = e.shutdown().await;
        }
    }

    /// Reloads every engine; one report per instance.
    pub async fn reload(&self) -> Vec<(String, LoadReport)> {
        let pending: Vec<(String, oneshot::Receiver<LoadReport>)> = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, e)| (name.clone(), e.reload()))
            .collect();
        let mut out = Vec::new();
        for (name, rx) in pending {
            if let Ok(r) = rx.await {
                out.push((name, r));
            }
        }
        out
    }

    /// The last load report of each instance.
    pub fn status(&self) -> Vec<(String, LoadReport)> {
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, e)| (n.clone(), e.status()))
            .collect()
    }

    /// Calls `on_unload` everywhere and stops the engines.
    pub async fn shutdown(&self) {
        let engines: Vec<Engine> =
            std::mem::take(&mut *self.engines.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        for e in &engines {
            let _ = e.shutdown().await;
        }
    }

    fn with_engine<R>(&self, instance: &str, f: impl FnOnce(&Engine) -> R) -> Option<R> {
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

    fn settle(&self) -> BoxFuture<()> {
        let pending: Vec<oneshot::Receiver<()>> = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Engine::settle)
            .collect();
        Box::pin(async move {
            for rx in pending {
                let _ = rx.await;
            }
        })
    }
}

//! The Lua side: a sandboxed mlua engine per instance, the `bot` API, limits,
//! and hot reload. The engine runs on its own thread so a slow
//! script never holds up the network; the host talks to it through jobs.

mod api;
mod engine;
mod sandbox;
pub mod watch;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::channel::Outgoing;

pub use engine::{Engine, LoadReport, check_paths};

/// One problem in one script, located as precisely as Lua allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub file: String,
    pub line: Option<u32>,
    /// Where it happened: "load", "on_message", "timer", ...
    pub context: String,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What scripts may do to the world. The host implements it on a live
/// instance; `moonwire check` on a dry run. Calls run on the engine thread
/// and must return promptly.
pub trait Actions: Send + Sync + 'static {
    fn instance(&self) -> &str;
    /// The lifecycle state name ("open", "reconnecting", ...).
    fn state(&self) -> String;
    /// Queues a send; `Err` says why it cannot be sent now.
    fn send(&self, out: Outgoing) -> Result<(), String>;
    fn logout(&self);
    fn store_get(&self, script: &str, key: &str) -> Result<Option<serde_json::Value>, String>;
    fn store_set(&self, script: &str, key: &str, value: &serde_json::Value) -> Result<(), String>;
    fn store_delete(&self, script: &str, key: &str) -> Result<(), String>;
    /// A script failed: tell the operator (stderr, journal, events).
    fn report(&self, error: &ScriptError);
    /// A hook (or command, timer) finished; for metrics.
    fn hook_done(&self, _hook: &str, _elapsed: Duration, _ok: bool) {}
    /// A reload finished; for metrics.
    fn reloaded(&self, _swapped: bool) {}
}

/// Engine settings, from `[script]` and `scripts`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub dir: PathBuf,
    pub hook_timeout: Duration,
    pub memory_limit: usize,
    pub command_prefix: String,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            dir: PathBuf::from("./scripts"),
            hook_timeout: Duration::from_millis(1000),
            memory_limit: 64 * 1024 * 1024,
            command_prefix: "!".into(),
        }
    }
}

//! The Lua side: sandboxed mlua states, the `bot` API, limits, and hot
//! reload.
//!
//! Execution model: a fixed pool of worker threads (`pool`), each driving
//! the Lua states of many instances on a single-threaded tokio executor.
//! Every hook, command, hear, timer, cron and route call runs in a
//! coroutine of its own (`handler`): a call that waits (`bot.sleep`,
//! `bot.http`) suspends only that coroutine while the worker runs other
//! handlers. Each run between waits has a CPU budget (`budget`), enforced
//! in Lua code by a count hook and in the library functions moonwire
//! reimplements (`strlib`, `lpattern`, `prelude.lua`); each handler's whole
//! life has a deadline.

mod api;
mod budget;
mod check;
mod convert;
mod engine;
mod errors;
mod generation;
mod handler;
mod lpattern;
mod pool;
mod prelude;
mod runner;
mod sandbox;
mod strlib;
pub mod watch;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::automation::clock::Clock;
use crate::automation::cron::Zone;
use crate::automation::http::{HttpError, HttpPolicy, HttpRequest, HttpResponse};
use crate::automation::routes::RouteTable;
use crate::channel::{Action, GroupOp, GroupReply, Incoming, Outgoing};

/// What a waiting host call returns to the engine.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

pub use check::{CheckReport, check_paths};
pub use engine::{Engine, LoadReport};
pub use pool::Pool;

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

impl ScriptError {
    /// Whether it came from loading the folder (the same for every instance
    /// that shares it) rather than from running a handler.
    pub fn is_load_error(&self) -> bool {
        matches!(self.context.as_str(), "load" | "reload" | "on_load")
    }
}

/// What scripts may do to the world. The host implements it on a live
/// instance; `moonwire check` on a dry run. Calls run on an engine worker
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
    /// `generation` is the folder generation of a load error (so instances
    /// sharing a folder can report it once), 0 otherwise.
    fn report(&self, error: &ScriptError, generation: u64);
    /// A hook (or command, timer) finished; for metrics.
    fn hook_done(&self, _hook: &str, _elapsed: Duration, _ok: bool) {}
    /// A reload finished; for metrics.
    fn reloaded(&self, _swapped: bool) {}
    /// Makes a `bot.http` request. The future is awaited on the engine's
    /// worker, which has no network driver: run the request elsewhere.
    fn http(&self, _req: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        Box::pin(std::future::ready(Err(HttpError::Transport(
            "bot.http is not available here".into(),
        ))))
    }
    /// A generation was swapped in (or lost a script): these are the
    /// instance's routes now.
    fn set_routes(&self, _table: RouteTable) {}
    /// The handlers of inbox row `token` are about to start: what they do
    /// until [`Actions::message_started`] belongs to that message.
    fn message_begin(&self, _token: i64) {}
    /// Every handler of inbox row `token` has started (finished, or waits):
    /// the message counts as handled.
    fn message_started(&self, _token: i64) {}
    /// The engine finished a batch of jobs (or stops): the messages
    /// started in it may be committed as handled together.
    fn messages_done(&self) {}
    /// Starts something that is not a message (a read receipt, typing);
    /// `Err` says why it cannot be done now.
    fn act(&self, _action: Action) -> Result<(), String> {
        Err("not available here".into())
    }
    /// A group call (`bot.groups.*`); the answer, or the server's reason.
    /// Awaited on the engine's worker: run the call elsewhere.
    fn group(&self, _op: GroupOp) -> BoxFuture<Result<GroupReply, String>> {
        Box::pin(std::future::ready(Err(
            "group calls are not available here".into(),
        )))
    }
    /// Downloads the message's media into the data dir's `media/` folder;
    /// the file's path, or why not. Awaited on the engine's worker: run the
    /// transfer elsewhere.
    fn download(&self, _m: &Incoming) -> BoxFuture<Result<PathBuf, String>> {
        Box::pin(std::future::ready(Err(
            "downloads are not available here".into()
        )))
    }
}

/// Engine settings, from `[script]` and `scripts`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The scripts folder (an instance may have its own).
    pub dir: PathBuf,
    /// CPU time of one run between waits.
    pub hook_timeout: Duration,
    /// A handler's whole life, waits included.
    pub handler_deadline: Duration,
    /// How long `on_close` may take to decide, waits included.
    pub decision_deadline: Duration,
    pub memory_limit: usize,
    pub command_prefix: String,
    /// Handlers waiting at once per instance; more work queues.
    pub max_waiting: usize,
    /// Engine worker threads (0: one per core).
    pub workers: usize,
    /// `bot.cron`'s default zone (`[script] timezone`); `None`: the system's.
    pub zone: Option<Zone>,
    /// What `bot.cron` reads the time from.
    pub clock: Clock,
    /// `[script.http]`.
    pub http: HttpPolicy,
    /// The data dir's `media/` folder: downloads go to `<instance>/` in it,
    /// and media sends may read from it.
    pub media_dir: PathBuf,
    /// The largest media file a download or send may be
    /// (`[script] max_media_mb`).
    pub max_media: u64,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            dir: PathBuf::from("./scripts"),
            hook_timeout: Duration::from_millis(1000),
            handler_deadline: Duration::from_secs(60),
            decision_deadline: Duration::from_secs(5),
            memory_limit: 64 * 1024 * 1024,
            command_prefix: "!".into(),
            max_waiting: 256,
            workers: 0,
            zone: None,
            clock: Clock::system(),
            http: HttpPolicy::default(),
            media_dir: PathBuf::from("./data/media"),
            max_media: 64 * 1024 * 1024,
        }
    }
}

impl EngineConfig {
    /// The decision deadline the host should use for an `on_close` budget.
    pub fn with_hook_timeout(mut self, t: Duration) -> EngineConfig {
        self.hook_timeout = t;
        self.decision_deadline = t * 5;
        self
    }
}

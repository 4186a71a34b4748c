//! One instance's Lua engine: a thread that owns the current generation of
//! scripts and runs hooks, commands and timers one at a time, in order.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mlua::{ChunkMode, Function, IntoLuaMulti, Lua, MultiValue, Table, Value};
use tokio::sync::oneshot;

use super::api::{self, Shared};
use super::{Actions, EngineConfig, ScriptError, sandbox};
use crate::channel::Incoming;
use crate::lifecycle::{CloseAnswer, HookCall};

enum Job {
    Hook(HookCall, Option<oneshot::Sender<CloseAnswer>>),
    Message(Incoming),
    Reload(Option<oneshot::Sender<LoadReport>>),
    Settle(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The outcome of a (re)load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The generation running after this load (unchanged if it was refused).
    pub generation: u64,
    pub files: Vec<String>,
    pub errors: Vec<ScriptError>,
    /// Whether the new generation replaced the old one.
    pub swapped: bool,
}

/// A handle to an instance's engine thread.
pub struct Engine {
    tx: mpsc::Sender<Job>,
    status: Arc<Mutex<LoadReport>>,
    /// Whether the running generation defines `on_close` anywhere: if not,
    /// a close needs no round trip through the Lua thread.
    has_on_close: Arc<AtomicBool>,
}

impl Engine {
    /// Starts the thread and loads the scripts folder. Scripts that fail to
    /// load are reported and left out; the others run.
    pub fn spawn(
        config: EngineConfig,
        actions: Arc<dyn Actions>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> std::io::Result<Engine> {
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(LoadReport::default()));
        let st = status.clone();
        let has_on_close = Arc::new(AtomicBool::new(false));
        let flag = has_on_close.clone();
        std::thread::Builder::new()
            .name(format!("lua-{}", actions.instance()))
            .spawn(move || {
                let _guard = runtime.as_ref().map(|r| r.enter());
                Runner::new(config, actions, st, flag).run(rx);
            })?;
        Ok(Engine {
            tx,
            status,
            has_on_close,
        })
    }

    /// Queues a lifecycle hook. For an `on_close` whose answer matters the
    /// receiver carries the decision.
    pub fn hook(&self, call: HookCall) -> Option<oneshot::Receiver<CloseAnswer>> {
        let wants_answer = matches!(
            call,
            HookCall::Close {
                answer_seq: Some(_),
                ..
            }
        );
        if wants_answer {
            if !self.has_on_close.load(Ordering::Acquire) {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            self.tx.send(Job::Hook(call, Some(tx))).ok()?;
            Some(rx)
        } else {
            let _ = self.tx.send(Job::Hook(call, None));
            None
        }
    }

    pub fn message(&self, m: Incoming) {
        let _ = self.tx.send(Job::Message(m));
    }

    pub fn reload(&self) -> oneshot::Receiver<LoadReport> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Reload(Some(tx)));
        rx
    }

    /// Resolves once every job queued before it has run.
    pub fn settle(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Settle(tx));
        rx
    }

    /// Calls `on_unload` and ends the thread.
    pub fn shutdown(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Job::Shutdown(tx));
        rx
    }

    /// The last load's report (generation, files, errors).
    pub fn status(&self) -> LoadReport {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Script {
    idx: usize,
    name: String,
    file: String,
    env: Table,
}

/// One loaded set of scripts in one Lua state.
struct Generation {
    shared: Rc<Shared>,
    scripts: Vec<Script>,
    meta: Table,
    matcher: Function,
    // Declared last: dropped after everything that refers into it.
    lua: Lua,
}

/// Lists `*.lua` files directly in `dir`, by file name.
pub fn list_scripts(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "lua"))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Turns an mlua error into `file:line: message`, looking through callback
/// wrappers and tracebacks for the Lua line responsible.
fn script_error(err: &mlua::Error, file: &str, context: &str) -> ScriptError {
    fn root(err: &mlua::Error) -> (String, Option<String>) {
        match err {
            mlua::Error::CallbackError { traceback, cause } => {
                let (m, t) = root(cause);
                (m, t.or_else(|| Some(traceback.clone())))
            }
            mlua::Error::WithContext { cause, .. } => root(cause),
            mlua::Error::RuntimeError(m) => (m.clone(), None),
            mlua::Error::SyntaxError { message, .. } => (message.clone(), None),
            mlua::Error::MemoryError(m) => (format!("out of memory: {m}"), None),
            other => (other.to_string(), None),
        }
    }
    fn split_location(text: &str) -> Option<(String, u32, String)> {
        // "<path>.lua:<line>: <message>"
        let idx = text.find(".lua:")?;
        let (path, rest) = text.split_at(idx + 4);
        let rest = rest.strip_prefix(':')?;
        let colon = rest.find(':')?;
        let line: u32 = rest[..colon].parse().ok()?;
        let path = path.trim_start_matches("...");
        Some((
            path.trim().to_string(),
            line,
            rest[colon + 1..].trim().to_string(),
        ))
    }
    let (message, traceback) = root(err);
    let first = message.lines().next().unwrap_or("").to_string();
    if let Some((path, line, msg)) = split_location(&first) {
        return ScriptError {
            file: path,
            line: Some(line),
            context: context.into(),
            message: msg,
        };
    }
    let from_trace = traceback.as_deref().and_then(|t| {
        t.lines()
            .filter_map(|l| split_location(l.trim()))
            .next()
            .map(|(p, l, _)| (p, l))
    });
    match from_trace {
        Some((path, line)) => ScriptError {
            file: path,
            line: Some(line),
            context: context.into(),
            message: first,
        },
        None => ScriptError {
            file: file.into(),
            line: None,
            context: context.into(),
            message: first,
        },
    }
}

impl Generation {
    /// Loads `files` into a fresh state: each file compiled and run in its own
    /// environment, then each `on_load`. Failing scripts are left out and
    /// their errors returned.
    fn load(
        files: &[PathBuf],
        module_dir: &Path,
        config: &EngineConfig,
        actions: &Arc<dyn Actions>,
    ) -> (Option<Generation>, Vec<ScriptError>) {
        let mut errors = Vec::new();
        let engine_err = |e: mlua::Error| ScriptError {
            file: module_dir.display().to_string(),
            line: None,
            context: "engine".into(),
            message: e.to_string(),
        };
        let lua = match sandbox::new_state(config.memory_limit) {
            Ok(l) => l,
            Err(e) => return (None, vec![engine_err(e)]),
        };
        let shared = Rc::new(Shared {
            actions: actions.clone(),
            prefix: config.command_prefix.clone(),
            module_dir: module_dir.to_path_buf(),
            commands: Default::default(),
            hears: Default::default(),
            timers: Default::default(),
            next_timer: Default::default(),
            files: Default::default(),
        });
        let (meta, matcher) = match api::message_meta(&lua, actions).and_then(|meta| {
            let string: Table = lua.globals().get("string")?;
            Ok((meta, string.get::<Function>("match")?))
        }) {
            Ok(x) => x,
            Err(e) => return (None, vec![engine_err(e)]),
        };
        let mut scripts = Vec::new();
        for (idx, path) in files.iter().enumerate() {
            let file = path.display().to_string();
            shared.files.borrow_mut().push(file.clone());
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.clone());
            let src = match std::fs::read(path) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(ScriptError {
                        file: file.clone(),
                        line: None,
                        context: "load".into(),
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            let result = api::script_env(&lua, &shared, idx, &name).and_then(|env| {
                sandbox::with_budget(&lua, config.hook_timeout, || {
                    lua.load(src)
                        .set_name(format!("@{file}"))
                        .set_mode(ChunkMode::Text)
                        .set_environment(env.clone())
                        .exec()
                })?;
                Ok(env)
            });
            match result {
                Ok(env) => scripts.push(Script {
                    idx,
                    name,
                    file,
                    env,
                }),
                Err(e) => {
                    shared.forget_script(idx);
                    errors.push(script_error(&e, &file, "load"));
                }
            }
        }
        let mut g = Generation {
            shared,
            scripts,
            meta,
            matcher,
            lua,
        };
        let mut failed = Vec::new();
        for s in &g.scripts {
            if let Err(e) = g.call(s, "on_load", (), config) {
                failed.push(s.idx);
                errors.push(e);
            }
        }
        for idx in failed {
            g.shared.forget_script(idx);
            g.scripts.retain(|s| s.idx != idx);
        }
        (Some(g), errors)
    }

    /// Calls a script's global `hook` if it defines one.
    fn call(
        &self,
        s: &Script,
        hook: &str,
        args: impl IntoLuaMulti,
        config: &EngineConfig,
    ) -> Result<Value, ScriptError> {
        let f = match s.env.raw_get::<Value>(hook) {
            Ok(Value::Function(f)) => f,
            _ => return Ok(Value::Nil),
        };
        self.run(&f, args, &s.file, hook, config)
    }

    fn run(
        &self,
        f: &Function,
        args: impl IntoLuaMulti,
        file: &str,
        context: &str,
        config: &EngineConfig,
    ) -> Result<Value, ScriptError> {
        let started = Instant::now();
        let result = sandbox::with_budget(&self.lua, config.hook_timeout, || f.call::<Value>(args));
        self.shared
            .actions
            .hook_done(context, started.elapsed(), result.is_ok());
        result.map_err(|e| {
            if matches!(e, mlua::Error::MemoryError(_)) {
                // Give the next hook room again if the garbage can go.
                let _ = self.lua.gc_collect();
            }
            script_error(&e, file, context)
        })
    }

    fn file_of(&self, idx: usize) -> String {
        self.shared
            .files
            .borrow()
            .get(idx)
            .cloned()
            .unwrap_or_default()
    }
}

struct Runner {
    config: EngineConfig,
    actions: Arc<dyn Actions>,
    status: Arc<Mutex<LoadReport>>,
    has_on_close: Arc<AtomicBool>,
    current: Option<Generation>,
    generation: u64,
}

impl Runner {
    fn new(
        config: EngineConfig,
        actions: Arc<dyn Actions>,
        status: Arc<Mutex<LoadReport>>,
        has_on_close: Arc<AtomicBool>,
    ) -> Runner {
        Runner {
            config,
            actions,
            status,
            has_on_close,
            current: None,
            generation: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        self.reload();
        loop {
            let next = self.current.as_ref().and_then(|g| g.shared.next_due());
            let job = match next {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                },
            };
            match job {
                Some(Job::Hook(call, answer)) => self.hook(call, answer),
                Some(Job::Message(m)) => self.message(&m),
                Some(Job::Reload(reply)) => {
                    let report = self.reload();
                    if let Some(tx) = reply {
                        let _ = tx.send(report);
                    }
                }
                Some(Job::Settle(tx)) => {
                    let _ = tx.send(());
                }
                Some(Job::Shutdown(tx)) => {
                    self.unload();
                    let _ = tx.send(());
                    return;
                }
                None => {}
            }
            self.fire_timers();
        }
        self.unload();
    }

    fn report(&self, e: &ScriptError) {
        self.actions.report(e);
    }

    /// Loads the folder into a fresh generation and swaps it in only if it
    /// loaded cleanly (or if nothing runs yet).
    fn reload(&mut self) -> LoadReport {
        let files = match list_scripts(&self.config.dir) {
            Ok(f) => f,
            Err(message) => {
                let e = ScriptError {
                    file: self.config.dir.display().to_string(),
                    line: None,
                    context: "reload".into(),
                    message,
                };
                self.report(&e);
                return LoadReport {
                    generation: self.generation,
                    errors: vec![e],
                    ..self.status()
                };
            }
        };
        let (g, errors) = Generation::load(&files, &self.config.dir, &self.config, &self.actions);
        for e in &errors {
            self.report(e);
        }
        let first = self.current.is_none() && self.generation == 0;
        let accept = g.is_some() && (errors.is_empty() || first);
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        if accept {
            self.unload();
            self.current = g;
            self.generation += 1;
            let any = self.current.as_ref().is_some_and(|g| {
                g.scripts
                    .iter()
                    .any(|s| matches!(s.env.raw_get::<Value>("on_close"), Ok(Value::Function(_))))
            });
            self.has_on_close.store(any, Ordering::Release);
            let loaded: Vec<String> = self
                .current
                .as_ref()
                .map(|g| g.scripts.iter().map(|s| s.file.clone()).collect())
                .unwrap_or_default();
            tracing::info!(instance = %self.actions.instance(), generation = self.generation, scripts = ?loaded, "scripts loaded");
        } else {
            tracing::error!(instance = %self.actions.instance(), generation = self.generation, "reload refused; the previous scripts keep running");
        }
        self.actions.reloaded(accept);
        let report = LoadReport {
            generation: self.generation,
            files: names,
            errors,
            swapped: accept,
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = report.clone();
        report
    }

    fn status(&self) -> LoadReport {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `on_unload` for every script, then the generation (and its timers) goes.
    fn unload(&mut self) {
        if let Some(g) = self.current.take() {
            for s in &g.scripts {
                if let Err(e) = g.call(s, "on_unload", (), &self.config) {
                    self.report(&e);
                }
            }
        }
    }

    /// Runs a lifecycle hook in every script. For `on_close` the answer is
    /// sent as soon as the first script decides, so slow scripts after it
    /// cannot push the decision past the host's deadline.
    fn hook(&mut self, call: HookCall, mut answer: Option<oneshot::Sender<CloseAnswer>>) {
        let mut send = |a: CloseAnswer| {
            if let Some(tx) = answer.take() {
                let _ = tx.send(a);
            }
        };
        let Some(g) = &self.current else {
            send(CloseAnswer::Default);
            return;
        };
        let lua = &g.lua;
        let instance = self.actions.instance().to_string();
        // A fresh argument per script: one script editing `r.code` must not
        // change what the next one sees.
        let build = || -> mlua::Result<(&'static str, Table)> {
            let t = lua.create_table()?;
            Ok(match &call {
                HookCall::Qr {
                    code,
                    kind,
                    expires_in_ms,
                } => {
                    t.raw_set("code", code.as_str())?;
                    t.raw_set("kind", kind.as_str())?;
                    t.raw_set("expires_in", expires_in_ms.div_ceil(1000))?;
                    ("on_qr", t)
                }
                HookCall::Open { jid, push_name } => {
                    t.raw_set("instance", instance.as_str())?;
                    t.raw_set("jid", jid.as_deref())?;
                    t.raw_set("push_name", push_name.as_deref())?;
                    ("on_open", t)
                }
                HookCall::Close { info, .. } => {
                    t.raw_set("code", info.reason.code)?;
                    t.raw_set("kind", info.reason.kind.as_str())?;
                    t.raw_set("message", info.reason.message.as_deref())?;
                    t.raw_set("attempt", info.attempt)?;
                    t.raw_set("will_reconnect", info.will_reconnect)?;
                    t.raw_set("delay_ms", info.delay_ms)?;
                    ("on_close", t)
                }
                HookCall::Logout { reason, by } => {
                    t.raw_set("code", reason.code)?;
                    t.raw_set("kind", reason.kind.as_str())?;
                    t.raw_set("by", by.as_str())?;
                    ("on_logout", t)
                }
            })
        };
        let mut decided = false;
        for s in &g.scripts {
            let (hook, arg) = match build() {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "could not build a hook argument");
                    break;
                }
            };
            match g.call(s, hook, arg, &self.config) {
                Ok(v) if hook == "on_close" && !decided => match decode_answer(&v) {
                    Ok(Some(a)) => {
                        decided = true;
                        send(a);
                    }
                    Ok(None) => {}
                    Err(msg) => self.actions.report(&ScriptError {
                        file: s.file.clone(),
                        line: None,
                        context: "on_close".into(),
                        message: msg,
                    }),
                },
                Ok(_) => {}
                Err(e) => self.actions.report(&e),
            }
        }
        send(CloseAnswer::Default);
    }

    fn message(&mut self, m: &Incoming) {
        let Some(g) = &self.current else { return };
        // Each call gets its own copy: one script changing `m.chat` must
        // not redirect another script's reply.
        let fresh = || api::message_table(&g.lua, &g.meta, m);
        let msg = match fresh() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "could not build a message for scripts");
                return;
            }
        };
        for s in &g.scripts {
            let own = fresh().unwrap_or_else(|_| msg.clone());
            if let Err(e) = g.call(s, "on_message", own, &self.config) {
                self.report(&e);
            }
        }
        let Some(text) = m.text.as_deref() else {
            return;
        };
        if let Some(rest) = text.strip_prefix(self.config.command_prefix.as_str()) {
            let rest = rest.trim_start();
            let (name, args_text) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            let found = g
                .shared
                .commands
                .borrow()
                .iter()
                .find(|c| c.name == name)
                .map(|c| (c.func.clone(), c.script));
            if let Some((func, script)) = found {
                let args = (|| -> mlua::Result<Table> {
                    let t = g.lua.create_table()?;
                    for (i, w) in args_text.split_whitespace().enumerate() {
                        t.raw_set(i + 1, w)?;
                    }
                    t.raw_set("text", args_text)?;
                    Ok(t)
                })();
                match args {
                    Ok(args) => {
                        let file = g.file_of(script);
                        if let Err(e) = g.run(
                            &func,
                            (fresh().unwrap_or_else(|_| msg.clone()), args),
                            &file,
                            "command",
                            &self.config,
                        ) {
                            self.report(&e);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not build command arguments"),
                }
            }
        }
        let hears: Vec<(Function, String, usize)> = g
            .shared
            .hears
            .borrow()
            .iter()
            .map(|h| (h.func.clone(), h.pattern.clone(), h.script))
            .collect();
        for (func, pattern, script) in hears {
            let caps = g.matcher.call::<MultiValue>((text, pattern.as_str()));
            let caps = match caps {
                Ok(c) if c.front().is_some_and(|v| !v.is_nil()) => c,
                Ok(_) => continue,
                Err(e) => {
                    self.report(&script_error(&e, &g.file_of(script), "hear"));
                    continue;
                }
            };
            let mut args = MultiValue::new();
            args.push_back(Value::Table(fresh().unwrap_or_else(|_| msg.clone())));
            args.extend(caps);
            if let Err(e) = g.run(&func, args, &g.file_of(script), "hear", &self.config) {
                self.report(&e);
            }
        }
    }

    /// Runs the timers that are due now, each once.
    fn fire_timers(&mut self) {
        let Some(g) = &self.current else { return };
        let now = Instant::now();
        let due: Vec<u64> = g
            .shared
            .timers
            .borrow()
            .iter()
            .filter(|(_, t)| t.due <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let entry = {
                let mut timers = g.shared.timers.borrow_mut();
                match timers.get_mut(&id) {
                    Some(t) => {
                        let out = (t.func.clone(), t.script);
                        match t.every {
                            Some(every) => t.due = Instant::now() + every,
                            None => {
                                timers.remove(&id);
                            }
                        }
                        Some(out)
                    }
                    None => None, // cancelled by an earlier timer
                }
            };
            if let Some((func, script)) = entry
                && let Err(e) = g.run(&func, (), &g.file_of(script), "timer", &self.config)
            {
                self.report(&e);
            }
        }
    }
}

/// Reads `on_close`'s return value (README: Hooks); `Ok(None)` is "no opinion".
fn decode_answer(v: &Value) -> Result<Option<CloseAnswer>, String> {
    let delay = |n: f64| -> Result<u64, String> {
        if n.is_finite() && n >= 0.0 {
            Ok(n as u64)
        } else {
            Err(format!(
                "on_close returned a delay of {n} ms; expected a number >= 0"
            ))
        }
    };
    match v {
        Value::Nil => Ok(None),
        Value::Boolean(false) => Ok(Some(CloseAnswer::Stay)),
        Value::Boolean(true) => Ok(Some(CloseAnswer::Reconnect { delay_ms: None })),
        Value::Integer(n) => Ok(Some(CloseAnswer::Reconnect {
            delay_ms: Some(delay(*n as f64)?),
        })),
        Value::Number(n) => Ok(Some(CloseAnswer::Reconnect {
            delay_ms: Some(delay(*n)?),
        })),
        Value::Table(t) => {
            let reconnect: Value = t.raw_get("reconnect").map_err(|e| e.to_string())?;
            let delay_ms: Value = t.raw_get("delay_ms").map_err(|e| e.to_string())?;
            let delay_ms = match delay_ms {
                Value::Nil => None,
                Value::Integer(n) => Some(delay(n as f64)?),
                Value::Number(n) => Some(delay(n)?),
                other => {
                    return Err(format!(
                        "on_close returned delay_ms = {}; expected a number",
                        other.type_name()
                    ));
                }
            };
            match reconnect {
                Value::Boolean(false) => Ok(Some(CloseAnswer::Stay)),
                Value::Boolean(true) | Value::Nil => Ok(Some(CloseAnswer::Reconnect { delay_ms })),
                other => Err(format!(
                    "on_close returned reconnect = {}; expected a boolean",
                    other.type_name()
                )),
            }
        }
        other => Err(format!(
            "on_close returned a {}; expected nil, a boolean, a number or a table",
            other.type_name()
        )),
    }
}

/// `moonwire check`: loads each path (a folder of scripts, or one file) with
/// the given dry-run actions and returns every problem found.
pub fn check_paths(
    paths: &[PathBuf],
    config: &EngineConfig,
    actions: Arc<dyn Actions>,
) -> Vec<ScriptError> {
    let mut errors = Vec::new();
    for path in paths {
        let (files, module_dir) = if path.is_dir() {
            match list_scripts(path) {
                Ok(f) => (f, path.clone()),
                Err(message) => {
                    errors.push(ScriptError {
                        file: path.display().to_string(),
                        line: None,
                        context: "check".into(),
                        message,
                    });
                    continue;
                }
            }
        } else if path.is_file() {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (vec![path.clone()], dir)
        } else {
            errors.push(ScriptError {
                file: path.display().to_string(),
                line: None,
                context: "check".into(),
                message: "no such file or folder".into(),
            });
            continue;
        };
        let (g, errs) = Generation::load(&files, &module_dir, config, &actions);
        errors.extend(errs);
        if let Some(g) = g {
            for s in &g.scripts {
                if let Err(e) = g.call(s, "on_unload", (), config) {
                    errors.push(e);
                }
            }
            tracing::debug!(scripts = g.scripts.len(), names = ?g.scripts.iter().map(|s| &s.name).collect::<Vec<_>>(), "checked");
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_as_the_design_says() {
        let lua = Lua::new();
        let eval = |src: &str| -> Value { lua.load(src).eval().unwrap() };
        assert_eq!(decode_answer(&eval("nil")), Ok(None));
        assert_eq!(decode_answer(&eval("false")), Ok(Some(CloseAnswer::Stay)));
        assert_eq!(
            decode_answer(&eval("true")),
            Ok(Some(CloseAnswer::Reconnect { delay_ms: None }))
        );
        assert_eq!(
            decode_answer(&eval("2500")),
            Ok(Some(CloseAnswer::Reconnect {
                delay_ms: Some(2500)
            }))
        );
        assert_eq!(
            decode_answer(&eval("12.9")),
            Ok(Some(CloseAnswer::Reconnect { delay_ms: Some(12) }))
        );
        assert_eq!(
            decode_answer(&eval("{reconnect=false, delay_ms=5}")),
            Ok(Some(CloseAnswer::Stay))
        );
        assert_eq!(
            decode_answer(&eval("{delay_ms=700}")),
            Ok(Some(CloseAnswer::Reconnect {
                delay_ms: Some(700)
            }))
        );
        assert!(decode_answer(&eval("-1")).is_err());
        assert!(
            decode_answer(&eval("'soon'"))
                .unwrap_err()
                .contains("string")
        );
        assert!(decode_answer(&eval("{reconnect='yes'}")).is_err());
    }

    #[test]
    fn errors_are_located_at_the_lua_line() {
        let lua = Lua::new();
        let err = lua
            .load("local x = 1\nerror('boom')")
            .set_name("@scripts/a.lua")
            .exec()
            .unwrap_err();
        let e = script_error(&err, "scripts/a.lua", "load");
        assert_eq!(e.to_string(), "scripts/a.lua:2: boom");
        let err = lua
            .load("x = = 1")
            .set_name("@/tmp/s/b.lua")
            .exec()
            .unwrap_err();
        let e = script_error(&err, "/tmp/s/b.lua", "load");
        assert_eq!(e.file, "/tmp/s/b.lua");
        assert_eq!(e.line, Some(1));
    }
}

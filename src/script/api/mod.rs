//! The `bot` table each script sees, its `print` and `require`, and what
//! one generation's scripts registered.

pub mod content;
pub mod cron;
mod data;
pub mod groups;
mod http;
pub mod message;
mod register;
pub mod route;
mod wait;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use mlua::{ChunkMode, Function, Lua, MultiValue, Table, Value};

use super::prelude::{self, FResult};
use super::runner::LocalQueue;
use super::{Actions, ScriptError, sandbox};
use crate::automation::clock::Clock;
use crate::automation::cron::Zone;
use crate::automation::routes::RouteTable;
use crate::channel::{Action, Outgoing, recipient};

pub use register::{CommandReg, HearReg, TimerReg};
pub use wait::{take_wait_location, take_waited};

/// What one generation's scripts share: the instance's actions and what
/// they registered. API closures hold it weakly; the generation owns it.
pub struct Ctx {
    pub actions: Arc<dyn Actions>,
    pub prefix: String,
    pub module_dir: PathBuf,
    pub gen_id: u64,
    /// Script display names, by index.
    pub files: RefCell<Vec<String>>,
    /// Chunk names (scripts and modules), to locate errors.
    pub known: RefCell<Vec<String>>,
    pub commands: RefCell<Vec<CommandReg>>,
    pub hears: RefCell<Vec<HearReg>>,
    pub timers: RefCell<BTreeMap<u64, TimerReg>>,
    pub next_timer: Cell<u64>,
    /// Warnings found while loading (a command registered twice).
    pub notes: RefCell<Vec<ScriptError>>,
    /// Where timer firings are queued for the runner.
    pub queue: Weak<LocalQueue>,
    /// Set once the generation is replaced: registrations stop working.
    pub disposed: Cell<bool>,
    /// The longest `bot.sleep` can wait (the handler deadline).
    pub max_sleep: Duration,
    /// Set once the generation is swapped in: crons start, routes close.
    pub live: Cell<bool>,
    /// `bot.route` registrations; published when the generation goes live.
    pub routes: RefCell<route::RouteRegs>,
    /// `bot.cron` registrations and their scheduler.
    pub crons: cron::Crons,
    /// Where media sends may read files, and the size limit.
    pub media: content::MediaPolicy,
    /// API functions that do not depend on the script, made once per
    /// generation and put in every script's `bot` (thousands of instances
    /// each load a few scripts).
    shared: RefCell<HashMap<&'static str, Function>>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        actions: Arc<dyn Actions>,
        prefix: String,
        module_dir: PathBuf,
        gen_id: u64,
        queue: Weak<LocalQueue>,
        max_sleep: Duration,
        zone: Zone,
        clock: Clock,
        media: content::MediaPolicy,
    ) -> Ctx {
        Ctx {
            actions,
            prefix,
            module_dir,
            gen_id,
            files: Default::default(),
            known: Default::default(),
            commands: Default::default(),
            hears: Default::default(),
            timers: Default::default(),
            next_timer: Cell::new(0),
            notes: Default::default(),
            queue,
            disposed: Cell::new(false),
            max_sleep,
            live: Cell::new(false),
            routes: RefCell::new(route::RouteRegs::new(gen_id)),
            crons: cron::Crons::new(zone, clock),
            media,
            shared: Default::default(),
        }
    }

    /// The generation's one copy of the API function `key`, made by `make`
    /// the first time.
    pub fn shared(
        &self,
        key: &'static str,
        make: impl FnOnce() -> mlua::Result<Function>,
    ) -> mlua::Result<Function> {
        if let Some(f) = self.shared.borrow().get(key) {
            return Ok(f.clone());
        }
        let f = make()?;
        self.shared.borrow_mut().insert(key, f.clone());
        Ok(f)
    }

    /// The generation was swapped in: its crons start now (a catch-up run
    /// is queued), and `bot.route` is closed.
    pub fn go_live(self: &Rc<Self>) {
        self.live.set(true);
        cron::go_live(self);
    }

    /// The routes as they stand, for the API.
    pub fn route_table(&self) -> RouteTable {
        self.routes.borrow().table()
    }

    /// Forgets everything a script registered (it failed to load). Says
    /// whether it had routes (the published table is then out of date).
    pub fn forget_script(&self, idx: usize) -> bool {
        cron::forget_script(self, idx);
        let had_routes = self.routes.borrow_mut().forget(idx);
        self.commands.borrow_mut().retain(|c| c.script != idx);
        self.hears.borrow_mut().retain(|h| h.script != idx);
        self.timers.borrow_mut().retain(|_, t| {
            let keep = t.script != idx;
            if !keep && let Some(task) = &t.task {
                task.abort();
            }
            keep
        });
        had_routes
    }

    /// The generation is replaced: its timers and crons stop, its
    /// registrations go.
    pub fn dispose(&self) {
        self.disposed.set(true);
        for (_, t) in std::mem::take(&mut *self.timers.borrow_mut()) {
            if let Some(task) = t.task {
                task.abort();
            }
        }
        cron::dispose(self);
        self.routes.borrow_mut().clear();
        self.commands.borrow_mut().clear();
        self.hears.borrow_mut().clear();
    }

    pub fn file_of(&self, idx: usize) -> String {
        self.files.borrow().get(idx).cloned().unwrap_or_default()
    }
}

/// The innermost frame of script code (a chunk loaded from a file) on the
/// running thread, as `(file, line)`.
pub fn caller_location(lua: &Lua) -> Option<(String, u32)> {
    for level in 1..12 {
        let d = lua.inspect_stack(level)?;
        let line = d.curr_line();
        if line <= 0 {
            continue;
        }
        if let Some(src) = d.source().source.as_deref()
            && let Some(path) = src.strip_prefix('@')
        {
            return Some((path.to_string(), line as u32));
        }
    }
    None
}

/// Where the running script called from, as `file:line`.
pub fn here(lua: &Lua) -> String {
    match caller_location(lua) {
        Some((f, l)) => format!("{f}:{l}"),
        None => "?".into(),
    }
}

/// Refuses option names a function does not know: a misspelt option
/// would otherwise be silently ignored.
pub fn check_options(t: &Table, known: &[&str], what: &str) -> FResult<()> {
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let name = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("a {} key", other.type_name()),
        };
        if !known.contains(&name.as_str()) {
            return prelude::msg(format!(
                "{what}: unknown option {name:?} (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// A string argument (numbers are accepted as Lua does), as bytes.
pub fn bytes_arg(v: &Value, what: &str) -> FResult<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(n) => Ok(n.to_string().into_bytes()),
        Value::Number(n) => Ok(n.to_string().into_bytes()),
        other => prelude::msg(format!("{what} needs a string, got {}", other.type_name())),
    }
}

/// `tostring` of each value, joined by spaces (print, bot.log).
fn join_args(lua: &Lua, args: MultiValue) -> FResult<String> {
    let tostring: Function = lua.globals().get("tostring")?;
    let mut parts = Vec::with_capacity(args.len());
    for v in args {
        let s: mlua::String = tostring.call(v)?;
        parts.push(s.to_string_lossy());
    }
    Ok(parts.join(" "))
}

/// `nil, message`: what library functions return for a failure that is
/// not a mistake in the script.
pub fn nil_err(lua: &Lua, message: impl AsRef<str>) -> FResult<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(message.as_ref())?),
    ]))
}

/// A chat argument: a JID or a phone number (as a string or a number).
fn chat_arg(v: Value, what: &str) -> FResult<String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        Value::Integer(n) => Ok(n.to_string()),
        other => prelude::msg(format!(
            "{what} needs a chat id (a JID or a phone number), got {}",
            other.type_name()
        )),
    }
}

/// A message id argument.
fn id_arg(v: Value, what: &str) -> FResult<String> {
    match v {
        Value::String(s) if !s.as_bytes().is_empty() => Ok(s.to_string_lossy()),
        other => prelude::msg(format!(
            "{what} needs the id of a message the bot sent, got {}",
            other.type_name()
        )),
    }
}

/// `id` or `nil, reason`, as every send returns.
pub fn send_result(lua: &Lua, actions: &Arc<dyn Actions>, out: Outgoing) -> FResult<MultiValue> {
    let id = out.id.clone();
    Ok(match actions.send(out) {
        Ok(()) => MultiValue::from_vec(vec![Value::String(lua.create_string(&id)?)]),
        Err(e) => MultiValue::from_vec(vec![Value::Nil, Value::String(lua.create_string(&e)?)]),
    })
}

/// Module names are plain dotted names inside the scripts folder.
fn module_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.')
        && !name.contains("..");
    ok.then(|| dir.join(format!("{}.lua", name.replace('.', "/"))))
}

fn print_fn(lua: &Lua, script: &str) -> mlua::Result<Function> {
    let script = script.to_string();
    prelude::function(lua, move |lua, args: MultiValue| {
        tracing::info!(target: "moonwire::script", script = %script, "{}", join_args(lua, args)?);
        Ok(())
    })
}

/// A script's (or module's) `require`: modules load once per script, each
/// in its own environment with `bot`, `print` and `require`.
fn require_fn(
    lua: &Lua,
    ctx: &Rc<Ctx>,
    bot: Table,
    script: &str,
    loaded: Rc<RefCell<HashMap<String, Value>>>,
) -> mlua::Result<Function> {
    let weak = Rc::downgrade(ctx);
    let script = script.to_string();
    prelude::function(lua, move |lua, name: Value| {
        let Some(ctx) = weak.upgrade() else {
            return prelude::msg("require: the scripts were reloaded");
        };
        let Value::String(name) = name else {
            return prelude::msg(format!(
                "bad argument #1 to 'require' (string expected, got {})",
                name.type_name()
            ));
        };
        let name = name.to_string_lossy();
        if let Some(v) = loaded.borrow().get(&name) {
            return Ok(v.clone());
        }
        let Some(path) = module_path(&ctx.module_dir, &name) else {
            return prelude::msg(format!(
                "require {name:?}: not a module name in the scripts folder"
            ));
        };
        let src = match std::fs::read(&path) {
            Ok(s) => s,
            Err(e) => return prelude::msg(format!("require {name:?}: {}: {e}", path.display())),
        };
        let chunk = path.display().to_string();
        ctx.known.borrow_mut().push(chunk.clone());
        let env = sandbox::new_env(lua)?;
        env.raw_set("bot", bot.clone())?;
        env.raw_set("print", print_fn(lua, &script)?)?;
        env.raw_set(
            "require",
            require_fn(lua, &ctx, bot.clone(), &script, loaded.clone())?,
        )?;
        let f = lua
            .load(src)
            .set_name(format!("@{chunk}"))
            .set_mode(ChunkMode::Text)
            .set_environment(env)
            .into_function()
            .map_err(|e| {
                prelude::Fail::Msg(
                    super::errors::script_error(
                        &e,
                        &chunk,
                        "require",
                        None,
                        std::slice::from_ref(&chunk),
                    )
                    .to_string(),
                )
            })?;
        let mut r = prelude::call(
            lua,
            &f,
            MultiValue::from_vec(vec![Value::String(lua.create_string(&name)?)]),
        )?;
        let value = match r.pop_front() {
            None | Some(Value::Nil) => Value::Boolean(true),
            Some(v) => v,
        };
        loaded.borrow_mut().insert(name, value.clone());
        Ok(value)
    })
}

/// Builds the environment of one script: sandbox globals plus its own `bot`,
/// `print` and `require`.
pub fn script_env(lua: &Lua, ctx: &Rc<Ctx>, idx: usize, name: &str) -> mlua::Result<Table> {
    let env = sandbox::new_env(lua)?;
    let bot = bot_table(lua, ctx, idx, name)?;
    env.raw_set("bot", bot.clone())?;
    env.raw_set("print", print_fn(lua, name)?)?;
    env.raw_set(
        "require",
        require_fn(lua, ctx, bot, name, Default::default())?,
    )?;
    Ok(env)
}

/// A script's `bot` table. Its functions are made on first use, a group
/// at a time (most scripts use a few of them, and thousands of instances
/// each load their scripts): `bot.command` makes the registration group,
/// `bot.store` the data group, and so on.
fn bot_table(lua: &Lua, ctx: &Rc<Ctx>, idx: usize, name: &str) -> mlua::Result<Table> {
    let bot = lua.create_table()?;
    bot.raw_set("instance", ctx.actions.instance())?;
    bot.raw_set("prefix", ctx.prefix.as_str())?;
    let weak = Rc::downgrade(ctx);
    let script = name.to_string();
    let made = Cell::new(0u16);
    let index = lua.create_function(move |lua, (bot, key): (Table, Value)| {
        let Value::String(k) = &key else {
            return Ok(Value::Nil);
        };
        let group: u16 = match &*k.as_bytes() {
            b"state" | b"send" | b"logout" => 0,
            b"command" | b"commands" | b"hear" | b"every" | b"after" => 1,
            b"store" | b"json" => 2,
            b"sleep" => 3,
            b"http" | b"crypto" => 4,
            b"route" => 5,
            b"cron" => 6,
            b"log" => 7,
            b"groups" => 8,
            _ => return Ok(Value::Nil),
        };
        // Made once: a name the script set to nil afterwards stays nil.
        if made.get() & (1 << group) != 0 {
            return Ok(Value::Nil);
        }
        made.set(made.get() | (1 << group));
        let Some(ctx) = weak.upgrade() else {
            return Ok(Value::Nil);
        };
        match group {
            0 => core_functions(lua, &bot, &ctx)?,
            1 => register::install(lua, &bot, &ctx, idx)?,
            2 => data::install(lua, &bot, &ctx, &script)?,
            3 => wait::install(lua, &bot, &ctx)?,
            4 => http::install(lua, &bot, &ctx)?,
            5 => route::install(lua, &bot, &ctx, idx)?,
            6 => cron::install(lua, &bot, &ctx, idx, &script)?,
            8 => groups::install(lua, &bot, &ctx)?,
            _ => log_functions(lua, &bot, &script)?,
        }
        bot.raw_get::<Value>(key)
    })?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", index)?;
    meta.raw_set("__metatable", false)?;
    bot.set_metatable(Some(meta));
    Ok(bot)
}

/// `bot.state`, `bot.send`, `bot.logout`.
fn core_functions(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let actions = ctx.actions.clone();
    let a = actions.clone();
    bot.raw_set(
        "state",
        ctx.shared("state", || {
            prelude::function(lua, move |_, ()| Ok(a.state()))
        })?,
    )?;

    let a = actions.clone();
    let policy = ctx.media.clone();
    bot.raw_set(
        "send",
        ctx.shared("send", || {
            prelude::function(lua, move |lua, (chat, v): (Value, Value)| {
                let chat = chat_arg(chat, "bot.send")?;
                let content = match content::parse(v, &policy, "bot.send") {
                    Ok(c) => c,
                    Err(content::ContentError::Raise(e)) => return prelude::msg(e),
                    Err(content::ContentError::Invalid(e)) => return nil_err(lua, e),
                };
                let chat = match recipient(&chat) {
                    Ok(c) => c,
                    Err(e) => return nil_err(lua, e.to_string()),
                };
                send_result(lua, &a, Outgoing::content(chat, content))
            })
        })?,
    )?;

    let a = actions.clone();
    bot.raw_set(
        "edit",
        ctx.shared("edit", || {
            prelude::function(lua, move |lua, (chat, id, text): (Value, Value, Value)| {
                let chat = chat_arg(chat, "bot.edit")?;
                let id = id_arg(id, "bot.edit")?;
                let text = match text {
                    Value::String(s) => s.to_string_lossy(),
                    other => {
                        return prelude::msg(format!(
                            "bot.edit needs the new text, got {}",
                            other.type_name()
                        ));
                    }
                };
                if text.is_empty() {
                    return nil_err(lua, "bot.edit: the new text is empty");
                }
                let chat = match recipient(&chat) {
                    Ok(c) => c,
                    Err(e) => return nil_err(lua, e.to_string()),
                };
                send_result(lua, &a, Outgoing::edit(chat, id, text))
            })
        })?,
    )?;

    let a = actions.clone();
    bot.raw_set(
        "revoke",
        ctx.shared("revoke", || {
            prelude::function(lua, move |lua, (chat, id): (Value, Value)| {
                let chat = chat_arg(chat, "bot.revoke")?;
                let id = id_arg(id, "bot.revoke")?;
                let chat = match recipient(&chat) {
                    Ok(c) => c,
                    Err(e) => return nil_err(lua, e.to_string()),
                };
                send_result(lua, &a, Outgoing::revoke(chat, id))
            })
        })?,
    )?;

    let a = actions.clone();
    bot.raw_set(
        "typing",
        ctx.shared("typing", || {
            prelude::function(lua, move |lua, (chat, on): (Value, Value)| {
                let chat = chat_arg(chat, "bot.typing")?;
                let on = match on {
                    Value::Nil => true,
                    Value::Boolean(b) => b,
                    other => {
                        return prelude::msg(format!(
                            "bot.typing's second argument is true or false, got {}",
                            other.type_name()
                        ));
                    }
                };
                let chat = match recipient(&chat) {
                    Ok(c) => c,
                    Err(e) => return nil_err(lua, e.to_string()),
                };
                match a.act(Action::Typing { chat, on }) {
                    Ok(()) => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
                    Err(e) => nil_err(lua, e),
                }
            })
        })?,
    )?;

    let a = actions.clone();
    bot.raw_set(
        "logout",
        ctx.shared("logout", || {
            prelude::function(lua, move |_, ()| {
                a.logout();
                Ok(())
            })
        })?,
    )?;

    Ok(())
}

/// `bot.log.*`, with the script's name on every line.
fn log_functions(lua: &Lua, bot: &Table, name: &str) -> mlua::Result<()> {
    let log = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        let script = name.to_string();
        log.raw_set(
            level,
            prelude::function(lua, move |lua, args: MultiValue| {
                let msg = join_args(lua, args)?;
                match level {
                    "debug" => {
                        tracing::debug!(target: "moonwire::script", script = %script, "{msg}")
                    }
                    "info" => tracing::info!(target: "moonwire::script", script = %script, "{msg}"),
                    "warn" => tracing::warn!(target: "moonwire::script", script = %script, "{msg}"),
                    _ => tracing::error!(target: "moonwire::script", script = %script, "{msg}"),
                }
                Ok(())
            })?,
        )?;
    }
    bot.raw_set("log", log)?;
    Ok(())
}

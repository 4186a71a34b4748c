//! The `bot` table each script sees, and the message objects.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{
    ChunkMode, Function, Lua, LuaSerdeExt, MultiValue, Table, UserData, UserDataMethods, Value,
};

use super::Actions;
use super::sandbox;
use crate::channel::{Incoming, Outgoing};

pub struct CommandReg {
    pub script: usize,
    pub name: String,
    pub description: Option<String>,
    pub func: Function,
}

pub struct HearReg {
    pub script: usize,
    pub pattern: String,
    pub func: Function,
}

pub struct TimerEntry {
    pub script: usize,
    pub due: Instant,
    pub every: Option<Duration>,
    pub func: Function,
}

/// What one generation's scripts registered, shared by their API closures.
pub struct Shared {
    pub actions: Arc<dyn Actions>,
    pub prefix: String,
    pub module_dir: PathBuf,
    pub commands: RefCell<Vec<CommandReg>>,
    pub hears: RefCell<Vec<HearReg>>,
    pub timers: RefCell<BTreeMap<u64, TimerEntry>>,
    pub next_timer: RefCell<u64>,
    /// Display names of the scripts, by index.
    pub files: RefCell<Vec<String>>,
}

impl Shared {
    /// Forgets everything a script registered (it failed to load).
    pub fn forget_script(&self, idx: usize) {
        self.commands.borrow_mut().retain(|c| c.script != idx);
        self.hears.borrow_mut().retain(|h| h.script != idx);
        self.timers.borrow_mut().retain(|_, t| t.script != idx);
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.timers.borrow().values().map(|t| t.due).min()
    }
}

/// An error located at the Lua code that called into the API.
pub fn located(lua: &Lua, msg: impl std::fmt::Display) -> mlua::Error {
    for level in 1..4 {
        if let Some(d) = lua.inspect_stack(level) {
            let src = d.source();
            let line = d.curr_line();
            if let Some(short) = src.short_src.as_deref()
                && line > 0
                && src.what != "C"
            {
                return mlua::Error::RuntimeError(format!("{short}:{line}: {msg}"));
            }
        }
    }
    mlua::Error::RuntimeError(msg.to_string())
}

fn join_args(lua: &Lua, args: MultiValue) -> mlua::Result<String> {
    let tostring: Function = lua.globals().get("tostring")?;
    let mut parts = Vec::with_capacity(args.len());
    for v in args {
        parts.push(tostring.call::<String>(v)?);
    }
    Ok(parts.join(" "))
}

fn send_result(lua: &Lua, actions: &Arc<dyn Actions>, out: Outgoing) -> mlua::Result<MultiValue> {
    let id = out.id.clone();
    match actions.send(out) {
        Ok(()) => Ok(MultiValue::from_vec(vec![Value::String(
            lua.create_string(&id)?,
        )])),
        Err(e) => Ok(MultiValue::from_vec(vec![
            Value::Nil,
            Value::String(lua.create_string(&e)?),
        ])),
    }
}

struct TimerHandle {
    id: u64,
    shared: Weak<Shared>,
}

impl UserData for TimerHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("cancel", |_, this, ()| {
            Ok(match this.shared.upgrade() {
                Some(s) => s.timers.borrow_mut().remove(&this.id).is_some(),
                None => false,
            })
        });
    }
}

fn add_timer(
    lua: &Lua,
    shared: &Rc<Shared>,
    script: usize,
    ms: f64,
    func: Function,
    repeat: bool,
) -> mlua::Result<mlua::AnyUserData> {
    if !ms.is_finite() || ms < 0.0 || (repeat && ms < 1.0) {
        let what = if repeat { "bot.every" } else { "bot.after" };
        return Err(located(
            lua,
            format!(
                "{what} needs a delay in milliseconds (>= {}), got {ms}",
                if repeat { 1 } else { 0 }
            ),
        ));
    }
    let every = Duration::from_millis(ms as u64);
    let id = {
        let mut n = shared.next_timer.borrow_mut();
        *n += 1;
        *n
    };
    shared.timers.borrow_mut().insert(
        id,
        TimerEntry {
            script,
            due: Instant::now() + every,
            every: repeat.then_some(every),
            func,
        },
    );
    lua.create_userdata(TimerHandle {
        id,
        shared: Rc::downgrade(shared),
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

/// Builds the environment of one script: sandbox globals plus its own `bot`,
/// `print` and `require`.
pub fn script_env(lua: &Lua, shared: &Rc<Shared>, idx: usize, name: &str) -> mlua::Result<Table> {
    let env = sandbox::new_env(lua)?;
    let bot = bot_table(lua, shared, idx, name)?;
    env.raw_set("bot", bot.clone())?;
    let script = name.to_string();
    env.raw_set(
        "print",
        lua.create_function(move |lua, args: MultiValue| {
            tracing::info!(target: "moonwire::script", script = %script, "{}", join_args(lua, args)?);
            Ok(())
        })?,
    )?;
    let loaded: Rc<RefCell<HashMap<String, Value>>> = Default::default();
    let dir = shared.module_dir.clone();
    let bot_for_modules = bot;
    env.raw_set(
        "require",
        lua.create_function(move |lua, name: String| {
            if let Some(v) = loaded.borrow().get(&name) {
                return Ok(v.clone());
            }
            let Some(path) = module_path(&dir, &name) else {
                return Err(located(
                    lua,
                    format!("require {name:?}: not a module name in the scripts folder"),
                ));
            };
            let src = std::fs::read_to_string(&path)
                .map_err(|e| located(lua, format!("require {name:?}: {}: {e}", path.display())))?;
            let menv = sandbox::new_env(lua)?;
            menv.raw_set("bot", bot_for_modules.clone())?;
            let value: Value = lua
                .load(src)
                .set_name(format!("@{}", path.display()))
                .set_mode(ChunkMode::Text)
                .set_environment(menv)
                .call(name.clone())?;
            let value = if value.is_nil() {
                Value::Boolean(true)
            } else {
                value
            };
            loaded.borrow_mut().insert(name, value.clone());
            Ok(value)
        })?,
    )?;
    Ok(env)
}

fn bot_table(lua: &Lua, shared: &Rc<Shared>, idx: usize, name: &str) -> mlua::Result<Table> {
    let bot = lua.create_table()?;
    let actions = shared.actions.clone();
    bot.raw_set("instance", actions.instance())?;
    // Lets help texts show the configured prefix.
    bot.raw_set("prefix", shared.prefix.as_str())?;

    let a = actions.clone();
    bot.raw_set("state", lua.create_function(move |_, ()| Ok(a.state()))?)?;

    let a = actions.clone();
    bot.raw_set(
        "send",
        lua.create_function(move |lua, (chat, text): (String, String)| {
            if chat.trim().is_empty() {
                return Err(located(lua, "bot.send needs a chat id"));
            }
            send_result(lua, &a, Outgoing::text(chat, text, None))
        })?,
    )?;

    let a = actions.clone();
    bot.raw_set(
        "logout",
        lua.create_function(move |_, ()| {
            a.logout();
            Ok(())
        })?,
    )?;

    let s = Rc::downgrade(shared);
    let prefix = shared.prefix.clone();
    bot.raw_set(
        "command",
        lua.create_function(move |lua, (name, func, description): (String, Function, Option<String>)| {
            let name = name.strip_prefix(prefix.as_str()).unwrap_or(&name).to_string();
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(located(lua, format!("bot.command needs a name without spaces, got {name:?}")));
            }
            let Some(shared) = s.upgrade() else { return Ok(()) };
            let mut cmds = shared.commands.borrow_mut();
            if let Some(existing) = cmds.iter_mut().find(|c| c.name == name) {
                if existing.script != idx {
                    let owner = shared.files.borrow().get(existing.script).cloned().unwrap_or_default();
                    tracing::warn!(command = %name, owner = %owner, "command already registered by an earlier script; keeping that one");
                    return Ok(());
                }
                existing.func = func;
                existing.description = description;
            } else {
                cmds.push(CommandReg { script: idx, name, description, func });
            }
            Ok(())
        })?,
    )?;

    let s = Rc::downgrade(shared);
    bot.raw_set(
        "commands",
        lua.create_function(move |lua, ()| {
            let list = lua.create_table()?;
            if let Some(shared) = s.upgrade() {
                let mut cmds: Vec<(String, Option<String>)> = shared
                    .commands
                    .borrow()
                    .iter()
                    .map(|c| (c.name.clone(), c.description.clone()))
                    .collect();
                cmds.sort();
                for (i, (name, description)) in cmds.into_iter().enumerate() {
                    let t = lua.create_table()?;
                    t.raw_set("name", name)?;
                    t.raw_set("description", description)?;
                    list.raw_set(i + 1, t)?;
                }
            }
            Ok(list)
        })?,
    )?;

    let s = Rc::downgrade(shared);
    bot.raw_set(
        "hear",
        lua.create_function(move |lua, (pattern, func): (String, Function)| {
            // A malformed pattern fails here, at the line that registered it.
            let string: Table = lua.globals().get("string")?;
            let matcher: Function = string.get("match")?;
            if let Err(e) = matcher.call::<Value>(("", pattern.as_str())) {
                let msg = e.to_string();
                let msg = msg
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("runtime error: ");
                return Err(located(
                    lua,
                    format!("bot.hear: bad pattern {pattern:?}: {msg}"),
                ));
            }
            if let Some(shared) = s.upgrade() {
                shared.hears.borrow_mut().push(HearReg {
                    script: idx,
                    pattern,
                    func,
                });
            }
            Ok(())
        })?,
    )?;

    let s = Rc::downgrade(shared);
    bot.raw_set(
        "every",
        lua.create_function(move |lua, (ms, func): (f64, Function)| match s.upgrade() {
            Some(s) => add_timer(lua, &s, idx, ms, func, true).map(Value::UserData),
            None => Ok(Value::Nil),
        })?,
    )?;
    let s = Rc::downgrade(shared);
    bot.raw_set(
        "after",
        lua.create_function(move |lua, (ms, func): (f64, Function)| match s.upgrade() {
            Some(s) => add_timer(lua, &s, idx, ms, func, false).map(Value::UserData),
            None => Ok(Value::Nil),
        })?,
    )?;

    let store = lua.create_table()?;
    let (a, script) = (actions.clone(), name.to_string());
    store.raw_set(
        "get",
        lua.create_function(move |lua, key: String| match a.store_get(&script, &key) {
            Ok(Some(v)) => lua.to_value(&v),
            Ok(None) => Ok(Value::Nil),
            Err(e) => Err(located(lua, format!("bot.store.get({key:?}): {e}"))),
        })?,
    )?;
    let (a, script) = (actions.clone(), name.to_string());
    store.raw_set(
        "set",
        lua.create_function(move |lua, (key, value): (String, Value)| {
            let result = if value.is_nil() {
                a.store_delete(&script, &key)
            } else {
                let json: serde_json::Value = lua.from_value(value).map_err(|e| {
                    located(lua, format!("bot.store.set({key:?}): only nil, booleans, numbers, strings and tables can be stored ({e})"))
                })?;
                a.store_set(&script, &key, &json)
            };
            result.map_err(|e| located(lua, format!("bot.store.set({key:?}): {e}")))
        })?,
    )?;
    let (a, script) = (actions.clone(), name.to_string());
    store.raw_set(
        "delete",
        lua.create_function(move |lua, key: String| {
            a.store_delete(&script, &key)
                .map_err(|e| located(lua, format!("bot.store.delete({key:?}): {e}")))
        })?,
    )?;
    bot.raw_set("store", store)?;

    let log = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        let script = name.to_string();
        log.raw_set(
            level,
            lua.create_function(move |lua, args: MultiValue| {
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
    Ok(bot)
}

/// The metatable giving messages `m:reply` and `m:react`.
pub fn message_meta(lua: &Lua, actions: &Arc<dyn Actions>) -> mlua::Result<Table> {
    let methods = lua.create_table()?;
    let a = actions.clone();
    methods.raw_set(
        "reply",
        lua.create_function(move |lua, (m, text): (Table, String)| {
            let chat: String = m.raw_get("chat")?;
            let id: String = m.raw_get("id")?;
            send_result(lua, &a, Outgoing::text(chat, text, Some(id)))
        })?,
    )?;
    let a = actions.clone();
    methods.raw_set(
        "react",
        lua.create_function(move |lua, (m, emoji): (Table, String)| {
            let chat: String = m.raw_get("chat")?;
            let id: String = m.raw_get("id")?;
            send_result(lua, &a, Outgoing::react(chat, id, emoji))
        })?,
    )?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", methods)?;
    // Scripts must not reach (and rewire) the methods other scripts use.
    meta.raw_set("__metatable", false)?;
    Ok(meta)
}

pub fn message_table(lua: &Lua, meta: &Table, m: &Incoming) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("id", m.id.as_str())?;
    t.raw_set("chat", m.chat.as_str())?;
    t.raw_set("sender", m.sender.as_str())?;
    t.raw_set("text", m.text.as_deref())?;
    t.raw_set("type", m.kind.as_str())?;
    t.raw_set("from_me", m.from_me)?;
    t.raw_set("is_group", m.is_group)?;
    t.raw_set("push_name", m.push_name.as_deref())?;
    t.raw_set("timestamp", m.timestamp)?;
    t.set_metatable(Some(meta.clone()));
    Ok(t)
}

//! What scripts register: commands, hear patterns and timers.

use std::rc::{Rc, Weak};
use std::time::Duration;

use mlua::{Function, Lua, Table, UserData, UserDataMethods, Value};
use tokio::task::AbortHandle;

use super::super::prelude::{self, FResult};
use super::super::runner::Local;
use super::super::{ScriptError, strlib};
use super::{Ctx, caller_location, here};

pub struct CommandReg {
    pub script: usize,
    pub name: String,
    pub description: Option<String>,
    pub func: Function,
    /// Where it was registered, `file:line`.
    pub at: String,
}

pub struct HearReg {
    pub script: usize,
    pub pattern: String,
    pub func: Function,
}

pub struct TimerReg {
    pub script: usize,
    pub func: Function,
    pub every: Option<Duration>,
    /// The sleeping task; None for a timer that was due at once.
    pub task: Option<AbortHandle>,
}

struct TimerHandle {
    id: u64,
    ctx: Weak<Ctx>,
}

impl UserData for TimerHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("cancel", |_, this, ()| {
            Ok(match this.ctx.upgrade() {
                Some(ctx) => match ctx.timers.borrow_mut().remove(&this.id) {
                    Some(t) => {
                        if let Some(task) = t.task {
                            task.abort();
                        }
                        true
                    }
                    None => false,
                },
                None => false,
            })
        });
    }
}

fn add_timer(
    lua: &Lua,
    ctx: &Rc<Ctx>,
    script: usize,
    ms: Value,
    func: Value,
    repeat: bool,
) -> FResult<Value> {
    let what = if repeat { "bot.every" } else { "bot.after" };
    let min = if repeat { 1.0 } else { 0.0 };
    let ms = match ms {
        Value::Integer(n) => n as f64,
        Value::Number(n) => n,
        other => {
            return prelude::msg(format!(
                "{what} needs a delay in milliseconds, got {}",
                other.type_name()
            ));
        }
    };
    if !ms.is_finite() || ms < min {
        return prelude::msg(format!(
            "{what} needs a delay in milliseconds (>= {min}), got {ms}"
        ));
    }
    let Value::Function(func) = func else {
        return prelude::msg(format!(
            "{what} needs a function to call, got {}",
            func.type_name()
        ));
    };
    let every = Duration::from_millis(ms.min(u32::MAX as f64) as u64);
    if ctx.disposed.get() {
        // A handler of a replaced generation still running: its timers
        // would outlive it.
        return Ok(Value::Nil);
    }
    let id = ctx.next_timer.get() + 1;
    ctx.next_timer.set(id);
    let queue = ctx.queue.clone();
    let gen_id = ctx.gen_id;
    let task = if every.is_zero() {
        // Due now: queued at once, so it runs right after the handler that
        // asked for it, before messages that come later.
        if let Some(q) = queue.upgrade() {
            q.push(Local::Timer {
                generation: gen_id,
                id,
            });
        }
        None
    } else {
        Some(
            tokio::task::spawn_local(async move {
                let mut due = tokio::time::Instant::now() + every;
                loop {
                    tokio::time::sleep_until(due).await;
                    let Some(q) = queue.upgrade() else { return };
                    q.push(Local::Timer {
                        generation: gen_id,
                        id,
                    });
                    if !repeat {
                        return;
                    }
                    due = tokio::time::Instant::now() + every;
                }
            })
            .abort_handle(),
        )
    };
    ctx.timers.borrow_mut().insert(
        id,
        TimerReg {
            script,
            func,
            every: repeat.then_some(every),
            task,
        },
    );
    Ok(Value::UserData(lua.create_userdata(TimerHandle {
        id,
        ctx: Rc::downgrade(ctx),
    })?))
}

pub fn install(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>, idx: usize) -> mlua::Result<()> {
    let weak = Rc::downgrade(ctx);
    bot.raw_set(
        "command",
        prelude::function(lua, move |lua, (name, func, description): (Value, Value, Value)| {
            let Some(ctx) = weak.upgrade() else { return Ok(()) };
            let Value::String(name) = name else {
                return prelude::msg(format!(
                    "bot.command needs a name, got {}",
                    name.type_name()
                ));
            };
            let Value::Function(func) = func else {
                return prelude::msg(format!(
                    "bot.command needs a function, got {}",
                    func.type_name()
                ));
            };
            let description = match description {
                Value::Nil => None,
                Value::String(s) => Some(s.to_string_lossy()),
                other => {
                    return prelude::msg(format!(
                        "bot.command's description must be a string, got {}",
                        other.type_name()
                    ));
                }
            };
            let name = name.to_string_lossy();
            let name = name.strip_prefix(ctx.prefix.as_str()).unwrap_or(&name).to_string();
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return prelude::msg(format!(
                    "bot.command needs a name without spaces, got {name:?}"
                ));
            }
            let at = here(lua);
            let mut cmds = ctx.commands.borrow_mut();
            if let Some(existing) = cmds.iter_mut().find(|c| c.name == name) {
                if existing.script != idx {
                    let message = format!(
                        "command {}{name} is registered twice: at {} and at {at}; the first one is kept",
                        ctx.prefix, existing.at
                    );
                    tracing::warn!("{message}");
                    let (file, line) = caller_location(lua).map_or((None, None), |(f, l)| (Some(f), Some(l)));
                    ctx.notes.borrow_mut().push(ScriptError {
                        file: file.unwrap_or_else(|| ctx.file_of(idx)),
                        line,
                        context: "load".into(),
                        message,
                    });
                    return Ok(());
                }
                existing.func = func;
                existing.description = description;
                existing.at = at;
            } else {
                cmds.push(CommandReg {
                    script: idx,
                    name,
                    description,
                    func,
                    at,
                });
            }
            Ok(())
        })?,
    )?;

    let weak = Rc::downgrade(ctx);
    bot.raw_set(
        "commands",
        ctx.shared("commands", || {
            prelude::function(lua, move |lua, ()| {
                let list = lua.create_table()?;
                if let Some(ctx) = weak.upgrade() {
                    let mut cmds: Vec<(String, Option<String>)> = ctx
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
            })
        })?,
    )?;

    let weak = Rc::downgrade(ctx);
    bot.raw_set(
        "hear",
        prelude::function(lua, move |_, (pattern, func): (Value, Value)| {
            let Value::String(pattern) = pattern else {
                return prelude::msg(format!(
                    "bot.hear needs a Lua pattern, got {}",
                    pattern.type_name()
                ));
            };
            let Value::Function(func) = func else {
                return prelude::msg(format!(
                    "bot.hear needs a function, got {}",
                    func.type_name()
                ));
            };
            let pattern = pattern.to_string_lossy();
            // A malformed pattern fails here, at the line that registered it.
            if let Some(problem) = strlib::pattern_problem(&pattern) {
                return prelude::msg(format!("bot.hear: bad pattern {pattern:?}: {problem}"));
            }
            if let Some(ctx) = weak.upgrade() {
                ctx.hears.borrow_mut().push(HearReg {
                    script: idx,
                    pattern,
                    func,
                });
            }
            Ok(())
        })?,
    )?;

    for (name, repeat) in [("every", true), ("after", false)] {
        let weak = Rc::downgrade(ctx);
        bot.raw_set(
            name,
            prelude::function(lua, move |lua, (ms, func): (Value, Value)| {
                match weak.upgrade() {
                    Some(ctx) => add_timer(lua, &ctx, idx, ms, func, repeat),
                    None => Ok(Value::Nil),
                }
            })?,
        )?;
    }
    Ok(())
}

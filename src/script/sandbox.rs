//! The per-script environment and the time budget.
//!
//! The budget is a raw Lua count hook rather than mlua's `set_hook`: mlua
//! keeps one hooked thread, so a loop inside a coroutine would escape it.
//! Lua copies a thread's hook into every coroutine it creates, so a raw hook
//! set once on the main thread covers them all.

use std::cell::Cell;
use std::time::Instant;

use mlua::{Lua, Table, Value, ffi};

const COUNT: i32 = 1000;

thread_local! {
    /// When the running hook must stop; None while no hook runs.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static BUDGET_MS: Cell<u64> = const { Cell::new(0) };
}

unsafe extern "C-unwind" fn budget_hook(l: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    let over = DEADLINE.with(|d| d.get().is_some_and(|at| Instant::now() >= at));
    if over {
        let ms = BUDGET_MS.with(|b| b.get());
        // SAFETY: `l` is the running thread handed to the hook by Lua. Every
        // Rust value is dropped before lua_error unwinds this frame. Checking
        // every instruction from here on means a `pcall` around the loop
        // cannot swallow the stop for long.
        unsafe {
            ffi::lua_sethook(l, Some(budget_hook), ffi::LUA_MASKCOUNT, 1);
            // Level 0 inside a hook is the Lua function that was running.
            ffi::luaL_where(l, 0);
            {
                let msg = format!("script exceeded its time budget of {ms} ms");
                ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
            }
            ffi::lua_concat(l, 2);
            ffi::lua_error(l);
        }
    }
}

/// Installs the budget hook on the state's main thread.
pub fn install_budget(lua: &Lua) -> mlua::Result<()> {
    // SAFETY: exec_raw runs the closure on the main state inside a protected
    // call; lua_sethook cannot fail.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::lua_sethook(state, Some(budget_hook), ffi::LUA_MASKCOUNT, COUNT);
        })
    }
}

/// Runs `f` with a deadline `budget` from now.
pub fn with_budget<R>(lua: &Lua, budget: std::time::Duration, f: impl FnOnce() -> R) -> R {
    // A previous overrun may have left the count at 1: re-arm.
    let _ = install_budget(lua);
    BUDGET_MS.with(|b| b.set(budget.as_millis() as u64));
    DEADLINE.with(|d| d.set(Some(Instant::now() + budget)));
    let r = f();
    DEADLINE.with(|d| d.set(None));
    r
}

const BASE: &[&str] = &[
    "assert",
    "error",
    "ipairs",
    "next",
    "pairs",
    "pcall",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "select",
    "setmetatable",
    "getmetatable",
    "tonumber",
    "tostring",
    "type",
    "xpcall",
    "_VERSION",
];

const LIBS: &[&str] = &["string", "table", "math", "utf8", "coroutine"];

/// Creates the state with only the libraries the sandbox hands out.
pub fn new_state(memory_limit: usize) -> mlua::Result<Lua> {
    let libs = mlua::StdLib::STRING
        | mlua::StdLib::TABLE
        | mlua::StdLib::MATH
        | mlua::StdLib::UTF8
        | mlua::StdLib::COROUTINE
        | mlua::StdLib::OS;
    let lua = Lua::new_with(libs, mlua::LuaOptions::default())?;
    lua.set_memory_limit(memory_limit)?;
    // Strings share one metatable; keep scripts from reaching (and changing)
    // the shared string library through it.
    // `("").dump` reaches the real string table through that metatable:
    // remove bytecode dumping at the source.
    // Finalizers run with hooks off (Lua 5.4 disables them inside `__gc`), so
    // a `__gc` loop would escape the time budget: refuse such metatables.
    // A metatable only becomes a finalizer when set with `__gc` present, so
    // checking at `setmetatable` is enough.
    lua.load(
        r#"
        getmetatable("").__metatable = false
        string.dump = nil
        local raw_setmetatable, rawget, error = setmetatable, rawget, error
        setmetatable = function(t, mt)
          if mt ~= nil and rawget(mt, "__gc") ~= nil then
            error("__gc metamethods are not allowed in moonwire scripts", 2)
          end
          return raw_setmetatable(t, mt)
        end
        "#,
    )
    .set_name("=sandbox")
    .exec()?;
    install_budget(&lua)?;
    Ok(lua)
}

/// A fresh global table for one script: whitelisted base functions, copies
/// of the safe libraries, and an `os` cut down to time/clock/date.
pub fn new_env(lua: &Lua) -> mlua::Result<Table> {
    let g = lua.globals();
    let env = lua.create_table()?;
    for name in BASE {
        env.raw_set(*name, g.raw_get::<Value>(*name)?)?;
    }
    for name in LIBS {
        let lib: Table = g.raw_get(*name)?;
        let copy = lua.create_table()?;
        for pair in lib.pairs::<Value, Value>() {
            let (k, v) = pair?;
            copy.raw_set(k, v)?;
        }
        if *name == "string" {
            // Bytecode has no way back in (no `load`), but leave no way out either.
            copy.raw_set("dump", Value::Nil)?;
        }
        env.raw_set(*name, copy)?;
    }
    let os: Table = g.raw_get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date"] {
        safe_os.raw_set(name, os.raw_get::<Value>(name)?)?;
    }
    env.raw_set("os", safe_os)?;
    env.raw_set("_G", env.clone())?;
    Ok(env)
}

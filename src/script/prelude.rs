//! The sandbox prelude (prelude.lua) and the way Rust functions fail.
//!
//! mlua turns an `Err` returned by a Rust callback into a userdata error
//! with a traceback, which scripts see as "runtime error: ..." and cannot
//! match like Lua's own errors. moonwire's library functions instead return
//! `FAIL, message` (or `RETHROW, value`) and are called through a small Lua
//! wrapper that raises it as a plain Lua error at the script's line, exactly
//! as a C library function would.

use mlua::{Function, IntoLua, LightUserData, Lua, MultiValue, Table, Value};

use super::budget;

static FAIL: u8 = 0;
static RETHROW: u8 = 0;

fn marker(p: &'static u8) -> Value {
    Value::LightUserData(LightUserData(p as *const u8 as *mut std::ffi::c_void))
}

/// What a moonwire library function may fail with.
#[derive(Debug)]
pub enum Fail {
    /// A message, raised at the calling line.
    Msg(String),
    /// A Lua error value, raised again unchanged.
    Rethrow(Value),
    /// An error of mlua itself (memory, conversions).
    Lua(mlua::Error),
}

impl From<mlua::Error> for Fail {
    fn from(e: mlua::Error) -> Fail {
        Fail::Lua(e)
    }
}

pub type FResult<T> = Result<T, Fail>;

pub fn msg<T>(m: impl Into<String>) -> FResult<T> {
    Err(Fail::Msg(m.into()))
}

/// Turns a library function's result into what its Lua wrapper expects.
pub fn finish<R: mlua::IntoLuaMulti>(lua: &Lua, r: FResult<R>) -> mlua::Result<MultiValue> {
    match r {
        Ok(v) => v.into_lua_multi(lua),
        Err(Fail::Msg(m)) => Ok(MultiValue::from_vec(vec![marker(&FAIL), m.into_lua(lua)?])),
        Err(Fail::Rethrow(v)) => Ok(MultiValue::from_vec(vec![marker(&RETHROW), v])),
        Err(Fail::Lua(e)) => Err(e),
    }
}

/// The functions the prelude hands back, kept per state.
pub struct Prelude {
    wrap: Function,
    raw_pcall: Function,
}

impl Prelude {
    /// Runs the prelude on the state's globals (once, before any script).
    pub fn install(lua: &Lua) -> mlua::Result<()> {
        let overran = lua.create_function(|_, ()| Ok(budget::overran()))?;
        let t: Table = lua
            .load(include_str!("prelude.lua"))
            .set_name("=sandbox")
            .call((
                marker(&FAIL),
                marker(&RETHROW),
                Value::LightUserData(Lua::poll_pending()),
                overran,
            ))?;
        lua.set_app_data(Prelude {
            wrap: t.raw_get("wrap")?,
            raw_pcall: t.raw_get("raw_pcall")?,
        });
        Ok(())
    }

    fn get(lua: &Lua) -> mlua::Result<(Function, Function)> {
        let p = lua
            .app_data_ref::<Prelude>()
            .ok_or_else(|| mlua::Error::RuntimeError("the sandbox prelude is missing".into()))?;
        Ok((p.wrap.clone(), p.raw_pcall.clone()))
    }
}

/// A Rust function as scripts should see it: its `Fail`s become Lua errors.
pub fn function<A, R, F>(lua: &Lua, f: F) -> mlua::Result<Function>
where
    A: mlua::FromLuaMulti,
    R: mlua::IntoLuaMulti,
    F: Fn(&Lua, A) -> FResult<R> + 'static,
{
    let raw = lua.create_function(move |lua, args: A| finish(lua, f(lua, args)))?;
    wrap(lua, raw)
}

/// Wraps a function that already returns `finish`'s shape.
pub fn wrap(lua: &Lua, raw: Function) -> mlua::Result<Function> {
    let (wrap, _) = Prelude::get(lua)?;
    wrap.call(raw)
}

/// Calls a Lua function from Rust; its error comes back as the Lua value it
/// raised, to be rethrown unchanged.
pub fn call(lua: &Lua, f: &Function, args: MultiValue) -> FResult<MultiValue> {
    let (_, pcall) = Prelude::get(lua)?;
    let mut all = MultiValue::with_capacity(args.len() + 1);
    all.push_back(Value::Function(f.clone()));
    all.extend(args);
    let mut r: MultiValue = pcall.call(all)?;
    match r.pop_front() {
        Some(Value::Boolean(true)) => Ok(r),
        _ => Err(Fail::Rethrow(r.pop_front().unwrap_or(Value::Nil))),
    }
}

//! A Lua state with only what scripts may use, and each script's globals.
//!
//! Each script's global table is small: its own names, `bot`, `print`,
//! `require`, and its own copy-on-write views of the libraries; everything
//! else is read through to one shared base per state that scripts cannot
//! reach (its metatable is hidden). Writing `string.trim = f` lands in the
//! script's own view, as a copy would, without copying every library per
//! script (it matters with thousands of instances).

use mlua::{Lua, Table, Value};

use super::{budget, prelude, strlib};

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

const LIBS: &[&str] = &["string", "table", "math", "utf8", "coroutine", "os"];

/// What every script's environment reads through to.
struct Base {
    base_meta: Table,
    lib_metas: Vec<(&'static str, Table)>,
}

/// Creates the state with only the libraries the sandbox hands out, the
/// prelude's replacements installed and the budget hook on the main thread.
pub fn new_state(memory_limit: usize) -> mlua::Result<Lua> {
    let libs = mlua::StdLib::STRING
        | mlua::StdLib::TABLE
        | mlua::StdLib::MATH
        | mlua::StdLib::UTF8
        | mlua::StdLib::COROUTINE
        | mlua::StdLib::OS;
    let lua = Lua::new_with(libs, mlua::LuaOptions::default())?;
    lua.set_memory_limit(memory_limit)?;
    prelude::Prelude::install(&lua)?;
    strlib::install(&lua, memory_limit)?;
    budget::install_main(&lua)?;

    let g = lua.globals();
    let base = lua.create_table()?;
    for name in BASE {
        base.raw_set(*name, g.raw_get::<Value>(*name)?)?;
    }
    // Only time, clock and date of `os`.
    let os: Table = g.raw_get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date"] {
        safe_os.raw_set(name, os.raw_get::<Value>(name)?)?;
    }
    let make_views: mlua::Function = lua
        .load(
            r#"
            local base, libs, next, rawget = ...
            local base_meta = { __index = base, __metatable = false }
            local metas = {}
            for name, lib in pairs(libs) do
              metas[name] = {
                __index = lib,
                __metatable = false,
                -- pairs() sees the script's own entries, then the library's.
                __pairs = function(view)
                  local own, k = true, nil
                  return function()
                    while true do
                      local v
                      if own then
                        k, v = next(view, k)
                        if k == nil then own = false else return k, v end
                      else
                        k, v = next(lib, k)
                        if k == nil then return nil end
                        if rawget(view, k) == nil then return k, v end
                      end
                    end
                  end, view, nil
                end,
              }
            end
            return base_meta, metas
            "#,
        )
        .set_name("=sandbox")
        .into_function()?;
    let libs_t = lua.create_table()?;
    for name in LIBS {
        let lib: Table = if *name == "os" {
            safe_os.clone()
        } else {
            g.raw_get(*name)?
        };
        libs_t.raw_set(*name, lib)?;
    }
    let next: Value = g.raw_get("next")?;
    let rawget: Value = g.raw_get("rawget")?;
    let (base_meta, metas): (Table, Table) = make_views.call((base, libs_t, next, rawget))?;
    let mut lib_metas = Vec::new();
    for name in LIBS {
        lib_metas.push((*name, metas.raw_get::<Table>(*name)?));
    }
    lua.set_app_data(Base {
        base_meta,
        lib_metas,
    });
    Ok(lua)
}

/// A fresh global table for one script (or module): its own library
/// views, the base read through, `_G` itself.
pub fn new_env(lua: &Lua) -> mlua::Result<Table> {
    let (base_meta, lib_metas) = {
        let b = lua
            .app_data_ref::<Base>()
            .ok_or_else(|| mlua::Error::RuntimeError("not a sandbox state".into()))?;
        (b.base_meta.clone(), b.lib_metas.clone())
    };
    let env = lua.create_table_with_capacity(0, 16)?;
    for (name, meta) in lib_metas {
        let view = lua.create_table()?;
        view.set_metatable(Some(meta));
        env.raw_set(name, view)?;
    }
    env.raw_set("_G", env.clone())?;
    env.set_metatable(Some(base_meta));
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lua: &Lua, env: &Table, src: &str) -> mlua::Result<Value> {
        lua.load(src).set_environment(env.clone()).eval()
    }

    #[test]
    fn scripts_see_the_libraries_but_cannot_change_them_for_others() {
        let lua = new_state(16 << 20).unwrap();
        let a = new_env(&lua).unwrap();
        let b = new_env(&lua).unwrap();
        run(
            &lua,
            &a,
            "function string.trim(s) return (s:gsub('^%s+', '')) end x = 1",
        )
        .unwrap();
        assert_eq!(
            run(&lua, &a, "return string.trim('  hi')")
                .unwrap()
                .to_string()
                .unwrap(),
            "hi"
        );
        assert!(run(&lua, &b, "return string.trim").unwrap().is_nil());
        assert!(run(&lua, &b, "return x").unwrap().is_nil());
        assert!(run(&lua, &b, "return getmetatable(_G)").unwrap() == Value::Boolean(false));
        assert!(run(&lua, &b, "return getmetatable(string)").unwrap() == Value::Boolean(false));
        assert!(run(&lua, &b, "return getmetatable('').__index").is_err());
        let n: i64 = run(
            &lua,
            &a,
            "local n = 0 for k in pairs(string) do n = n + 1 end return n",
        )
        .unwrap()
        .as_integer()
        .unwrap();
        assert!(n > 15, "{n}");
        for gone in [
            "io",
            "debug",
            "load",
            "loadfile",
            "dofile",
            "require",
            "collectgarbage",
        ] {
            assert!(
                run(&lua, &b, &format!("return {gone}")).unwrap().is_nil(),
                "{gone}"
            );
        }
        assert!(run(&lua, &b, "return os.execute").unwrap().is_nil());
        assert!(run(&lua, &b, "return string.dump").unwrap().is_nil());
        assert!(
            run(&lua, &b, "setmetatable({}, {__gc = function() end})")
                .unwrap_err()
                .to_string()
                .contains("__gc")
        );
    }
}

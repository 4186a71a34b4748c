//! `bot.store` (JSON values per script, in SQLite) and `bot.json`.

use std::rc::Rc;

use mlua::{Lua, MultiValue, Table, Value};

use super::super::convert::{self, MAX_DEPTH};
use super::super::prelude::{self, FResult};
use super::Ctx;

fn key_arg(v: Value, what: &str) -> FResult<String> {
    match v {
        Value::String(s) => match s.to_str() {
            Ok(k) => Ok(k.to_string()),
            Err(_) => prelude::msg(format!("{what} needs a UTF-8 key")),
        },
        Value::Integer(n) => Ok(n.to_string()),
        other => prelude::msg(format!(
            "{what} needs a string key, got {}",
            other.type_name()
        )),
    }
}

fn nil_err(lua: &Lua, msg: impl AsRef<str>) -> FResult<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(msg.as_ref())?),
    ]))
}

pub fn install(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>, script: &str) -> mlua::Result<()> {
    let store = lua.create_table()?;
    let (a, name) = (ctx.actions.clone(), script.to_string());
    store.raw_set(
        "get",
        prelude::function(lua, move |lua, key: Value| {
            let key = key_arg(key, "bot.store.get")?;
            match a.store_get(&name, &key) {
                Ok(Some(v)) => convert::from_json(lua, &v).or_else(|e| {
                    prelude::msg(format!("bot.store.get({key:?}): the stored value {e}"))
                }),
                Ok(None) => Ok(Value::Nil),
                Err(e) => prelude::msg(format!("bot.store.get({key:?}): {e}")),
            }
        })?,
    )?;
    let (a, name) = (ctx.actions.clone(), script.to_string());
    store.raw_set(
        "set",
        prelude::function(lua, move |_, (key, value): (Value, Value)| {
            let key = key_arg(key, "bot.store.set")?;
            let result = if value.is_nil() {
                a.store_delete(&name, &key)
            } else {
                let json = match convert::to_json(&value) {
                    Ok(j) => j,
                    Err(e) => {
                        return prelude::msg(format!(
                            "bot.store.set({key:?}): {e}; nothing was stored"
                        ));
                    }
                };
                a.store_set(&name, &key, &json)
            };
            result.or_else(|e| prelude::msg(format!("bot.store.set({key:?}): {e}")))
        })?,
    )?;
    let (a, name) = (ctx.actions.clone(), script.to_string());
    store.raw_set(
        "delete",
        prelude::function(lua, move |_, key: Value| {
            let key = key_arg(key, "bot.store.delete")?;
            a.store_delete(&name, &key)
                .or_else(|e| prelude::msg(format!("bot.store.delete({key:?}): {e}")))
        })?,
    )?;
    bot.raw_set("store", store)?;

    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        ctx.shared("json.encode", || {
            prelude::function(lua, |lua, v: Value| match convert::to_json(&v) {
                Ok(j) => match serde_json::to_string(&j) {
                    Ok(s) => Ok(MultiValue::from_vec(vec![Value::String(
                        lua.create_string(&s)?,
                    )])),
                    Err(e) => nil_err(lua, e.to_string()),
                },
                Err(e) => nil_err(lua, format!("cannot encode: {e}")),
            })
        })?,
    )?;
    json.raw_set(
        "decode",
        ctx.shared("json.decode", || {
            prelude::function(lua, |lua, s: Value| {
                let Value::String(s) = s else {
                    return nil_err(
                        lua,
                        format!("bot.json.decode needs a string, got {}", s.type_name()),
                    );
                };
                let bytes = s.as_bytes();
                let parsed: serde_json::Value = match serde_json::from_slice(&bytes) {
                    Ok(v) => v,
                    Err(e) => return nil_err(lua, format!("invalid JSON: {e}")),
                };
                match convert::from_json(lua, &parsed) {
                    Ok(v) => Ok(MultiValue::from_vec(vec![v])),
                    Err(e) => nil_err(
                        lua,
                        format!("cannot decode: the value {e} (the limit is {MAX_DEPTH})"),
                    ),
                }
            })
        })?,
    )?;
    bot.raw_set("json", json)?;
    Ok(())
}

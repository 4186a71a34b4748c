//! The message object handlers get: one read-only userdata per message,
//! shared by every handler of it. Fields are made into Lua values only when
//! read (most handlers read two or three), and because it is read-only no
//! handler can change what another sees or where its reply goes.

use std::sync::Arc;

use mlua::{AnyUserData, Function, Lua, MetaMethod, UserData, UserDataMethods, Value};

use super::super::Actions;
use super::super::prelude;
use super::send_result;
use crate::channel::{Incoming, Outgoing};

pub struct Message(pub Arc<Incoming>);

/// `m:reply`, `m:react`: made once per state.
struct Methods {
    reply: Function,
    react: Function,
}

fn text_arg(lua: &Lua, v: Value, what: &str) -> prelude::FResult<String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        Value::Integer(_) | Value::Number(_) => Ok(lua
            .coerce_string(v)?
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()),
        other => prelude::msg(format!("{what} needs a string, got {}", other.type_name())),
    }
}

fn this(ud: &AnyUserData) -> prelude::FResult<Arc<Incoming>> {
    match ud.borrow::<Message>() {
        Ok(m) => Ok(m.0.clone()),
        Err(_) => prelude::msg("call it as m:reply(...) on a message"),
    }
}

/// Installs the methods; call once per state, after the prelude.
pub fn install(lua: &Lua, actions: &Arc<dyn Actions>) -> mlua::Result<()> {
    let a = actions.clone();
    let reply = prelude::function(lua, move |lua, (m, text): (AnyUserData, Value)| {
        let m = this(&m)?;
        let text = text_arg(lua, text, "m:reply")?;
        send_result(
            lua,
            &a,
            Outgoing::text(m.chat.as_str(), text, Some(m.id.clone())),
        )
    })?;
    let a = actions.clone();
    let react = prelude::function(lua, move |lua, (m, emoji): (AnyUserData, Value)| {
        let m = this(&m)?;
        let emoji = text_arg(lua, emoji, "m:react")?;
        send_result(
            lua,
            &a,
            Outgoing::react(m.chat.as_str(), m.id.as_str(), emoji),
        )
    })?;
    lua.set_app_data(Methods { reply, react });
    Ok(())
}

pub fn object(lua: &Lua, m: Arc<Incoming>) -> mlua::Result<AnyUserData> {
    lua.create_userdata(Message(m))
}

const FIELDS: &[&str] = &[
    "id",
    "chat",
    "sender",
    "text",
    "type",
    "from_me",
    "is_group",
    "push_name",
    "timestamp",
    "mentions",
];

fn field(lua: &Lua, m: &Incoming, key: &[u8]) -> mlua::Result<Value> {
    let s = |v: &str| lua.create_string(v).map(Value::String);
    let opt = |v: &Option<String>| match v {
        Some(v) => s(v),
        None => Ok(Value::Nil),
    };
    match key {
        b"id" => s(&m.id),
        b"chat" => s(&m.chat),
        b"sender" => s(&m.sender),
        b"text" => opt(&m.text),
        b"type" => s(&m.kind),
        b"from_me" => Ok(Value::Boolean(m.from_me)),
        b"is_group" => Ok(Value::Boolean(m.is_group)),
        b"push_name" => opt(&m.push_name),
        b"timestamp" => Ok(Value::Integer(m.timestamp)),
        b"mentions" => Ok(Value::Table(lua.create_table()?)),
        b"reply" | b"react" => {
            let methods = lua
                .app_data_ref::<Methods>()
                .ok_or_else(|| mlua::Error::RuntimeError("message methods missing".into()))?;
            Ok(Value::Function(if key == b"reply" {
                methods.reply.clone()
            } else {
                methods.react.clone()
            }))
        }
        _ => Ok(Value::Nil),
    }
}

impl UserData for Message {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| match key {
            Value::String(k) => field(lua, &this.0, &k.as_bytes()),
            _ => Ok(Value::Nil),
        });
        methods.add_meta_method(MetaMethod::NewIndex, |_, _, (key, _): (Value, Value)| {
            let key = match key {
                Value::String(k) => k.to_string_lossy(),
                other => other.type_name().to_string(),
            };
            Err::<(), _>(mlua::Error::RuntimeError(format!(
                "message fields are read-only (tried to set {key:?}); copy what you need into a table"
            )))
        });
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("message {} from {}", this.0.id, this.0.sender))
        });
        // pairs(m) lists the fields, for debugging scripts.
        methods.add_meta_method(MetaMethod::Pairs, |lua, this, ()| {
            let t = lua.create_table()?;
            for f in FIELDS {
                t.raw_set(*f, field(lua, &this.0, f.as_bytes())?)?;
            }
            let next: Function = lua.globals().raw_get("next")?;
            Ok((next, t, Value::Nil))
        });
    }
}

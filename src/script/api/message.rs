//! The message object handlers get: one read-only userdata per message,
//! shared by every handler of it. Fields are made into Lua values only when
//! read (most handlers read two or three), and because it is read-only no
//! handler can change what another sees or where its reply goes.

use std::rc::Rc;
use std::sync::Arc;

use mlua::{AnyUserData, Function, Lua, MetaMethod, MultiValue, UserData, UserDataMethods, Value};

use super::super::prelude;
use super::content::{self, ContentError};
use super::wait::waiting_function;
use super::{Ctx, nil_err, send_result};
use crate::channel::{Action, Incoming, Outgoing};

pub struct Message(pub Arc<Incoming>);

/// `m:reply`, `m:react`, `m:read`, `m:download`: made once per
/// generation (they reach its media policy).
struct Methods {
    reply: Function,
    react: Function,
    read: Function,
    download: Function,
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

fn this(ud: &AnyUserData, what: &str) -> prelude::FResult<Arc<Incoming>> {
    match ud.borrow::<Message>() {
        Ok(m) => Ok(m.0.clone()),
        Err(_) => prelude::msg(format!("call it as m:{what}(...) on a message")),
    }
}

/// Installs the methods for a generation's state.
pub fn install(lua: &Lua, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let a = ctx.actions.clone();
    let policy = ctx.media.clone();
    let reply = prelude::function(lua, move |lua, (m, v): (AnyUserData, Value)| {
        let m = this(&m, "reply")?;
        let mut c = match content::parse(v, &policy, "m:reply") {
            Ok(c) => c,
            Err(ContentError::Raise(e)) => return prelude::msg(e),
            Err(ContentError::Invalid(e)) => return nil_err(lua, e),
        };
        // A reply quotes what it answers unless told otherwise.
        c.quote.get_or_insert_with(|| m.id.clone());
        send_result(lua, &a, Outgoing::content(m.chat.as_str(), c))
    })?;
    let a = ctx.actions.clone();
    let react = prelude::function(lua, move |lua, (m, emoji): (AnyUserData, Value)| {
        let m = this(&m, "react")?;
        let emoji = text_arg(lua, emoji, "m:react")?;
        send_result(
            lua,
            &a,
            Outgoing::react(m.chat.as_str(), m.id.as_str(), emoji),
        )
    })?;
    let a = ctx.actions.clone();
    let read = prelude::function(lua, move |lua, m: AnyUserData| {
        let m = this(&m, "read")?;
        let action = Action::Read {
            chat: m.chat.clone(),
            sender: m.is_group.then(|| m.sender.clone()),
            ids: vec![m.id.clone()],
        };
        match a.act(action) {
            Ok(()) => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
            Err(e) => nil_err(lua, e),
        }
    })?;
    let a = ctx.actions.clone();
    let download = waiting_function(lua, "m:download", move |lua, m: AnyUserData| {
        let m = this(&m, "download");
        let started = m.map(|m| (m.media.is_some(), a.download(&m)));
        async move {
            let (has_media, fut) = started?;
            if !has_media {
                return nil_err(&lua, "this message has no media to download");
            }
            match fut.await {
                Ok(path) => Ok(MultiValue::from_vec(vec![Value::String(
                    lua.create_string(path.display().to_string())?,
                )])),
                Err(e) => nil_err(&lua, e),
            }
        }
    })?;
    lua.set_app_data(Methods {
        reply,
        react,
        read,
        download,
    });
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
    "quoted",
    "media",
    "target",
    "reaction",
    "location",
    "poll",
    "votes",
];

fn list(lua: &Lua, items: &[String]) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, s) in items.iter().enumerate() {
        t.raw_set(i + 1, s.as_str())?;
    }
    Ok(Value::Table(t))
}

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
        b"mentions" => list(lua, &m.mentions),
        b"votes" => list(lua, &m.votes),
        b"target" => opt(&m.target),
        b"reaction" => opt(&m.reaction),
        b"quoted" => match &m.quoted {
            None => Ok(Value::Nil),
            Some(q) => {
                let t = lua.create_table()?;
                t.raw_set("id", q.id.as_str())?;
                t.raw_set("sender", q.sender.as_deref())?;
                t.raw_set("text", q.text.as_deref())?;
                t.raw_set("type", q.kind.as_deref())?;
                Ok(Value::Table(t))
            }
        },
        b"media" => match &m.media {
            None => Ok(Value::Nil),
            Some(md) => {
                let t = lua.create_table()?;
                t.raw_set("kind", md.kind.as_str())?;
                t.raw_set("mime", md.mime.as_deref())?;
                t.raw_set("size", md.size)?;
                t.raw_set("file_name", md.file_name.as_deref())?;
                t.raw_set("seconds", md.seconds)?;
                t.raw_set("voice", md.voice)?;
                t.raw_set("width", md.width)?;
                t.raw_set("height", md.height)?;
                Ok(Value::Table(t))
            }
        },
        b"location" => match &m.location {
            None => Ok(Value::Nil),
            Some(l) => {
                let t = lua.create_table()?;
                t.raw_set("lat", l.lat)?;
                t.raw_set("lng", l.lng)?;
                t.raw_set("name", l.name.as_deref())?;
                Ok(Value::Table(t))
            }
        },
        b"poll" => match &m.poll {
            None => Ok(Value::Nil),
            Some(p) => {
                let t = lua.create_table()?;
                t.raw_set("name", p.name.as_str())?;
                t.raw_set("options", list(lua, &p.options)?)?;
                t.raw_set("selectable", p.selectable)?;
                Ok(Value::Table(t))
            }
        },
        b"reply" | b"react" | b"read" | b"download" => {
            let methods = lua
                .app_data_ref::<Methods>()
                .ok_or_else(|| mlua::Error::RuntimeError("message methods missing".into()))?;
            Ok(Value::Function(match key {
                b"reply" => methods.reply.clone(),
                b"react" => methods.react.clone(),
                b"read" => methods.read.clone(),
                _ => methods.download.clone(),
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

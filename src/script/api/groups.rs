//! `bot.groups.*` (all wait) and the `on_group` event table.
//!
//! A mistake in the arguments (a table where a group id goes) is raised
//! at the script's line; an id that is no group's, and whatever the server
//! refuses (not an admin, not a member, unknown group), is `nil, err`.

use std::rc::Rc;

use mlua::{Lua, MultiValue, Table, Value};

use super::super::prelude::{self, FResult};
use super::wait::waiting_function;
use super::{Ctx, nil_err};
use crate::channel::groups::{
    Change, GroupEvent, GroupInfo, GroupOp, GroupReply, failures, group_jid, user_list,
};

/// The longest subject WhatsApp takes.
const MAX_SUBJECT: usize = 100;

/// `on_group`'s `e`.
pub fn event_table(lua: &Lua, e: &GroupEvent) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("chat", e.chat.as_str())?;
    t.raw_set("action", e.action.as_str())?;
    t.raw_set(
        "participants",
        lua.create_sequence_from(e.participants.iter().map(String::as_str))?,
    )?;
    t.raw_set("by", e.by.as_deref())?;
    t.raw_set("value", e.value.as_deref())?;
    Ok(t)
}

/// `bot.groups.info`'s answer.
pub fn info_table(lua: &Lua, g: &GroupInfo) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("jid", g.jid.as_str())?;
    t.raw_set("subject", g.subject.as_str())?;
    t.raw_set("description", g.description.as_deref())?;
    t.raw_set("owner", g.owner.as_deref())?;
    t.raw_set("announce", g.announce)?;
    t.raw_set("locked", g.locked)?;
    let ps = lua.create_table_with_capacity(g.participants.len(), 0)?;
    for (i, p) in g.participants.iter().enumerate() {
        let pt = lua.create_table_with_capacity(0, 3)?;
        pt.raw_set("jid", p.jid.as_str())?;
        pt.raw_set("admin", p.admin)?;
        pt.raw_set("super_admin", p.super_admin)?;
        ps.raw_set(i + 1, pt)?;
    }
    t.raw_set("participants", ps)?;
    Ok(t)
}

/// A group id argument; `Err(Ok(text))` is an id that is not a group's
/// (`nil, err`), a raise otherwise.
fn jid_arg(v: &Value, what: &str) -> FResult<Result<String, String>> {
    match v {
        Value::String(s) => Ok(group_jid(&s.to_string_lossy()).map_err(|e| format!("{what}: {e}"))),
        other => prelude::msg(format!(
            "{what} needs a group id (…@g.us), got {}",
            other.type_name()
        )),
    }
}

/// The users of a participant change: one JID or phone number, or a list.
fn users_arg(v: &Value, what: &str) -> FResult<Result<Vec<String>, String>> {
    let one = |v: &Value| -> FResult<String> {
        match v {
            Value::String(s) => Ok(s.to_string_lossy()),
            Value::Integer(n) => Ok(n.to_string()),
            other => prelude::msg(format!(
                "{what}: a user is a JID or a phone number, got {}",
                other.type_name()
            )),
        }
    };
    let raw = match v {
        Value::Table(t) => {
            let mut out = Vec::new();
            for v in t.sequence_values::<Value>() {
                out.push(one(&v?)?);
                if out.len() > crate::channel::groups::MAX_USERS {
                    break;
                }
            }
            out
        }
        other => vec![one(other)?],
    };
    Ok(user_list(&raw).map_err(|e| format!("{what}: {e}")))
}

/// Runs `op` (when the arguments made one) and turns the answer into
/// Lua values.
async fn call(lua: Lua, ctx_op: Result<(Rc<Ctx>, GroupOp), String>) -> FResult<MultiValue> {
    let (ctx, op) = match ctx_op {
        Ok(x) => x,
        Err(e) => return nil_err(&lua, e),
    };
    let fut = ctx.actions.group(op);
    drop(ctx);
    match fut.await {
        Err(e) => nil_err(&lua, e),
        Ok(GroupReply::Info(g)) => Ok(MultiValue::from_vec(vec![Value::Table(info_table(
            &lua, &g,
        )?)])),
        Ok(GroupReply::List(all)) => {
            let t = lua.create_table_with_capacity(all.len(), 0)?;
            for (i, g) in all.iter().enumerate() {
                t.raw_set(i + 1, info_table(&lua, g)?)?;
            }
            Ok(MultiValue::from_vec(vec![Value::Table(t)]))
        }
        Ok(GroupReply::Changed(results)) => match failures(&results) {
            Some(e) => nil_err(&lua, e),
            None => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
        },
        Ok(GroupReply::Link(link)) => Ok(MultiValue::from_vec(vec![Value::String(
            lua.create_string(&link)?,
        )])),
        Ok(GroupReply::Done) => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
    }
}

pub fn install(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let groups = lua.create_table()?;
    let weak = || Rc::downgrade(ctx);

    let w = weak();
    groups.raw_set(
        "info",
        waiting_function(lua, "bot.groups.info", move |lua, jid: Value| {
            let made = (|| -> FResult<Result<(Rc<Ctx>, GroupOp), String>> {
                let ctx = w.upgrade().ok_or(prelude::Fail::Msg(
                    "bot.groups: the scripts were reloaded".into(),
                ))?;
                Ok(jid_arg(&jid, "bot.groups.info")?.map(|j| (ctx, GroupOp::Info(j))))
            })();
            async move { call(lua, made?).await }
        })?,
    )?;

    let w = weak();
    groups.raw_set(
        "list",
        waiting_function(lua, "bot.groups.list", move |lua, ()| {
            let ctx = w.upgrade();
            async move {
                let Some(ctx) = ctx else {
                    return prelude::msg("bot.groups: the scripts were reloaded");
                };
                call(lua, Ok((ctx, GroupOp::List))).await
            }
        })?,
    )?;

    for (name, change) in [
        ("add", Change::Add),
        ("remove", Change::Remove),
        ("promote", Change::Promote),
        ("demote", Change::Demote),
    ] {
        let w = weak();
        let what: &'static str = match change {
            Change::Add => "bot.groups.add",
            Change::Remove => "bot.groups.remove",
            Change::Promote => "bot.groups.promote",
            Change::Demote => "bot.groups.demote",
        };
        groups.raw_set(
            name,
            waiting_function(lua, what, move |lua, (jid, users): (Value, Value)| {
                let made = (|| -> FResult<Result<(Rc<Ctx>, GroupOp), String>> {
                    let ctx = w.upgrade().ok_or(prelude::Fail::Msg(
                        "bot.groups: the scripts were reloaded".into(),
                    ))?;
                    let jid = jid_arg(&jid, what)?;
                    let users = users_arg(&users, what)?;
                    Ok(jid.and_then(|jid| {
                        users.map(|users| (ctx, GroupOp::Participants { jid, change, users }))
                    }))
                })();
                async move { call(lua, made?).await }
            })?,
        )?;
    }

    let w = weak();
    groups.raw_set(
        "invite_link",
        waiting_function(lua, "bot.groups.invite_link", move |lua, jid: Value| {
            let made = (|| -> FResult<Result<(Rc<Ctx>, GroupOp), String>> {
                let ctx = w.upgrade().ok_or(prelude::Fail::Msg(
                    "bot.groups: the scripts were reloaded".into(),
                ))?;
                Ok(jid_arg(&jid, "bot.groups.invite_link")?.map(|j| (ctx, GroupOp::InviteLink(j))))
            })();
            async move { call(lua, made?).await }
        })?,
    )?;

    let w = weak();
    groups.raw_set(
        "set_subject",
        waiting_function(
            lua,
            "bot.groups.set_subject",
            move |lua, (jid, subject): (Value, Value)| {
                let what = "bot.groups.set_subject";
                let made = (|| -> FResult<Result<(Rc<Ctx>, GroupOp), String>> {
                    let ctx = w.upgrade().ok_or(prelude::Fail::Msg(
                        "bot.groups: the scripts were reloaded".into(),
                    ))?;
                    let jid = jid_arg(&jid, what)?;
                    let subject = match subject {
                        Value::String(s) => s.to_string_lossy(),
                        other => {
                            return prelude::msg(format!(
                                "{what} needs the new subject, got {}",
                                other.type_name()
                            ));
                        }
                    };
                    let subject = subject.trim().to_string();
                    let n = subject.chars().count();
                    if n == 0 {
                        return Ok(Err(format!("{what}: the subject is empty")));
                    }
                    if n > MAX_SUBJECT {
                        return Ok(Err(format!(
                            "{what}: the subject has {n} characters; at most {MAX_SUBJECT}"
                        )));
                    }
                    Ok(jid.map(|jid| (ctx, GroupOp::SetSubject { jid, subject })))
                })();
                async move { call(lua, made?).await }
            },
        )?,
    )?;

    let w = weak();
    groups.raw_set(
        "leave",
        waiting_function(lua, "bot.groups.leave", move |lua, jid: Value| {
            let made = (|| -> FResult<Result<(Rc<Ctx>, GroupOp), String>> {
                let ctx = w.upgrade().ok_or(prelude::Fail::Msg(
                    "bot.groups: the scripts were reloaded".into(),
                ))?;
                Ok(jid_arg(&jid, "bot.groups.leave")?.map(|j| (ctx, GroupOp::Leave(j))))
            })();
            async move { call(lua, made?).await }
        })?,
    )?;

    bot.raw_set("groups", groups)?;
    Ok(())
}

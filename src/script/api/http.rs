//! `bot.http` (outbound requests, waiting) and `bot.crypto` (checking a
//! caller's signature).
//!
//! The request itself is the host's business (`Actions::http`: the guarded
//! client, on a runtime with a network driver); here the script's
//! arguments are read and checked before anything is sent, and the answer
//! becomes `{status=, headers=, body=}` or `nil, err`. A mistake in the
//! arguments is raised at the script's line; what goes wrong on the way
//! (refused address, timeout, body over the limit) is `nil, err`.

use std::rc::Rc;
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, Value};

use super::super::prelude::{self, FResult};
use super::route::header_table;
use super::wait::waiting_function;
use super::{Ctx, bytes_arg, check_options};
use crate::automation::crypto;
use crate::automation::http::{HttpError, HttpRequest, HttpResponse};

fn string_arg(v: &Value, what: &str) -> FResult<String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        other => prelude::msg(format!(
            "{what} must be a string, got {}",
            other.type_name()
        )),
    }
}

/// `headers` and `timeout_ms` from an options table (and for `request`
/// also `method`, `url` and `body`).
fn apply(req: &mut HttpRequest, t: &Table, what: &str, full: bool) -> FResult<()> {
    let known: &[&str] = if full {
        &["method", "url", "headers", "body", "timeout_ms"]
    } else {
        &["headers", "timeout_ms"]
    };
    check_options(t, known, what)?;
    if full {
        match t.raw_get::<Value>("method")? {
            Value::Nil => {}
            v => req.method = string_arg(&v, &format!("{what}: method"))?,
        }
        req.url = match t.raw_get::<Value>("url")? {
            Value::Nil => return prelude::msg(format!("{what} needs a url")),
            v => string_arg(&v, &format!("{what}: url"))?,
        };
        match t.raw_get::<Value>("body")? {
            Value::Nil => {}
            v => req.body = bytes_arg(&v, &format!("{what}: body"))?,
        }
    }
    match t.raw_get::<Value>("headers")? {
        Value::Nil => {}
        Value::Table(h) => {
            for pair in h.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let name = string_arg(&k, &format!("{what}: a header name"))?;
                let value = match v {
                    Value::String(s) => s.to_string_lossy(),
                    Value::Integer(n) => n.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return prelude::msg(format!(
                            "{what}: header {name:?} must be a string, got {}",
                            other.type_name()
                        ));
                    }
                };
                req.headers.push((name, value));
            }
        }
        other => {
            return prelude::msg(format!(
                "{what}: headers must be a table of name = value, got {}",
                other.type_name()
            ));
        }
    }
    match t.raw_get::<Value>("timeout_ms")? {
        Value::Nil => {}
        v => {
            let ms = match v {
                Value::Integer(n) => n as f64,
                Value::Number(n) => n,
                other => {
                    return prelude::msg(format!(
                        "{what}: timeout_ms must be a number, got {}",
                        other.type_name()
                    ));
                }
            };
            if !ms.is_finite() || ms <= 0.0 {
                return prelude::msg(format!("{what}: timeout_ms must be above 0, got {ms}"));
            }
            // The client cuts it to [script.http] timeout_ms.
            req.timeout = Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
        }
    }
    Ok(())
}

fn options(v: Value, what: &str) -> FResult<Option<Table>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => Ok(Some(t)),
        other => prelude::msg(format!(
            "{what}'s options must be a table such as {{headers = {{...}}, timeout_ms = 5000}}, got {}",
            other.type_name()
        )),
    }
}

/// `{status=, headers=, body=}`, or `nil, err`.
fn result(lua: &Lua, r: Result<HttpResponse, HttpError>) -> FResult<MultiValue> {
    Ok(match r {
        Ok(resp) => {
            let t = lua.create_table()?;
            t.raw_set("status", resp.status)?;
            t.raw_set("headers", header_table(lua, &resp.headers)?)?;
            t.raw_set("body", lua.create_string(&resp.body)?)?;
            MultiValue::from_vec(vec![Value::Table(t)])
        }
        Err(e) => MultiValue::from_vec(vec![
            Value::Nil,
            Value::String(lua.create_string(e.to_string())?),
        ]),
    })
}

pub fn install(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let http = lua.create_table()?;

    let a = ctx.actions.clone();
    http.raw_set(
        "request",
        ctx.shared("http.request", || waiting_function(lua, "bot.http.request", move |lua, opts: Value| {
            let what = "bot.http.request";
            let req = match opts {
                Value::Table(t) => {
                    let mut req = HttpRequest::get("");
                    apply(&mut req, &t, what, true).map(|()| req)
                }
                other => prelude::msg(format!(
                    "{what} needs a table {{method=, url=, headers=, body=, timeout_ms=}}, got {}",
                    other.type_name()
                )),
            };
            let sent = req.map(|r| a.http(r));
            async move { result(&lua, sent?.await) }
        }))?,
    )?;

    let a = ctx.actions.clone();
    http.raw_set(
        "get",
        ctx.shared("http.get", || {
            waiting_function(
                lua,
                "bot.http.get",
                move |lua, (url, opts): (Value, Value)| {
                    let what = "bot.http.get";
                    let req = (|| -> FResult<HttpRequest> {
                        let mut req =
                            HttpRequest::get(string_arg(&url, &format!("{what}: the url"))?);
                        if let Some(t) = options(opts, what)? {
                            apply(&mut req, &t, what, false)?;
                        }
                        Ok(req)
                    })();
                    let sent = req.map(|r| a.http(r));
                    async move { result(&lua, sent?.await) }
                },
            )
        })?,
    )?;

    let a = ctx.actions.clone();
    http.raw_set(
        "post",
        ctx.shared("http.post", || {
            waiting_function(
                lua,
                "bot.http.post",
                move |lua, (url, body, opts): (Value, Value, Value)| {
                    let what = "bot.http.post";
                    let req = (|| -> FResult<HttpRequest> {
                        let url = string_arg(&url, &format!("{what}: the url"))?;
                        let body = match &body {
                            Value::Nil => Vec::new(),
                            v => bytes_arg(v, &format!("{what}: the body"))?,
                        };
                        let mut req = HttpRequest::post(url, body);
                        if let Some(t) = options(opts, what)? {
                            apply(&mut req, &t, what, false)?;
                        }
                        Ok(req)
                    })();
                    let sent = req.map(|r| a.http(r));
                    async move { result(&lua, sent?.await) }
                },
            )
        })?,
    )?;
    bot.raw_set("http", http)?;

    let c = lua.create_table()?;
    c.raw_set(
        "hmac_sha256",
        ctx.shared("crypto.hmac_sha256", || {
            prelude::function(lua, |_, (key, data): (Value, Value)| {
                let key = bytes_arg(&key, "bot.crypto.hmac_sha256: the key")?;
                let data = bytes_arg(&data, "bot.crypto.hmac_sha256: the data")?;
                Ok(crypto::hmac_sha256_hex(&key, &data))
            })
        })?,
    )?;
    c.raw_set(
        "equal",
        ctx.shared("crypto.equal", || {
            prelude::function(lua, |_, (a, b): (Value, Value)| {
                let a = bytes_arg(&a, "bot.crypto.equal")?;
                let b = bytes_arg(&b, "bot.crypto.equal")?;
                Ok(crypto::equal(&a, &b))
            })
        })?,
    )?;
    bot.raw_set("crypto", c)?;
    Ok(())
}

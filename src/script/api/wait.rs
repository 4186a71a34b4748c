//! Calls that wait: they suspend only the calling handler's coroutine.
//!
//! A waiting call is an mlua async function: its future is polled when the
//! coroutine resumes, and while it is pending the coroutine yields to the
//! engine. Two things are noted for the handler on the way: that it really
//! waited (a bare `coroutine.yield` at handler level is not a wait, so it
//! does not get a fresh time budget), and where (a handler cancelled at its
//! deadline is reported at the line it was waiting on).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, Value};

use super::super::prelude::{self, FResult};
use super::{Ctx, caller_location};

thread_local! {
    static WAITED: Cell<bool> = const { Cell::new(false) };
    static WAIT_AT: RefCell<Option<(String, u32, &'static str)>> = const { RefCell::new(None) };
}

/// Clears the "waited" mark before a run; returns whether it was set by
/// the run that just ended.
pub fn take_waited() -> bool {
    WAITED.with(|w| w.replace(false))
}

/// Where the handler that just ran last started waiting, and on what.
pub fn take_wait_location() -> Option<(String, u32, &'static str)> {
    WAIT_AT.with(|w| w.borrow_mut().take())
}

pub fn note_wait_location(lua: &Lua, what: &'static str) {
    let at = caller_location(lua).map(|(f, l)| (f, l, what));
    WAIT_AT.with(|w| *w.borrow_mut() = at);
}

/// Marks the running handler as waiting whenever the inner future is pending.
struct Waiting<F>(Pin<Box<F>>);

impl<F: Future> Future for Waiting<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = self.0.as_mut().poll(cx);
        if r.is_pending() {
            WAITED.with(|w| w.set(true));
        }
        r
    }
}

/// A waiting function as scripts see it: errors raised at the script's
/// line, the wait noted for the handler.
pub fn waiting_function<A, R, F, Fut>(
    lua: &Lua,
    what: &'static str,
    f: F,
) -> mlua::Result<mlua::Function>
where
    A: mlua::FromLuaMulti + 'static,
    R: mlua::IntoLuaMulti + 'static,
    F: Fn(Lua, A) -> Fut + 'static,
    Fut: Future<Output = FResult<R>> + 'static,
{
    let raw = lua.create_async_function(move |lua: Lua, args: A| {
        note_wait_location(&lua, what);
        let fut = f(lua.clone(), args);
        Waiting(Box::pin(async move {
            let r = fut.await;
            prelude::finish(&lua, r)
        }))
    })?;
    prelude::wrap(lua, raw)
}

pub fn install(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let max = ctx.max_sleep;
    bot.raw_set(
        "sleep",
        ctx.shared("sleep", || {
            waiting_function(lua, "bot.sleep", move |_, ms: Value| async move {
                let ms = match ms {
                    Value::Integer(n) => n as f64,
                    Value::Number(n) => n,
                    other => {
                        return prelude::msg(format!(
                            "bot.sleep needs a time in milliseconds, got {}",
                            other.type_name()
                        ));
                    }
                };
                if !ms.is_finite() || ms < 0.0 {
                    return prelude::msg(format!(
                        "bot.sleep needs a time in milliseconds (>= 0), got {ms}"
                    ));
                }
                // Past the handler deadline the handler is cancelled anyway.
                let d = Duration::from_secs_f64(ms / 1000.0).min(max + Duration::from_secs(1));
                tokio::time::sleep(d).await;
                Ok(MultiValue::new())
            })
        })?,
    )?;
    Ok(())
}

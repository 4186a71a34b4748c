//! One handler call: a Lua function running in a coroutine of its own,
//! polled by the worker's executor. Each poll is one run under the CPU
//! budget; a wait (a pending host call) ends the run and the next poll
//! starts a fresh one. A coroutine that yields without waiting keeps its
//! run's deadline, so a bare `coroutine.yield` loop cannot renew it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::{IntoLuaMulti, MultiValue, Thread};

use super::api;
use super::budget;

type LuaFuture = Pin<Box<dyn Future<Output = mlua::Result<MultiValue>>>>;

pub struct Handler {
    fut: LuaFuture,
    pub thread: Thread,
    budget: Duration,
    /// The deadline of a run interrupted by a bare yield.
    keep: Option<Instant>,
    /// Where it last waited, and on what.
    pub wait_at: Option<(String, u32, &'static str)>,
}

impl Handler {
    pub fn new(thread: Thread, args: impl IntoLuaMulti + 'static, budget: Duration) -> Handler {
        let fut = thread.clone().into_async::<MultiValue>(args);
        Handler {
            fut: Box::pin(fut),
            thread,
            budget,
            keep: None,
            wait_at: None,
        }
    }
}

impl Future for Handler {
    type Output = mlua::Result<MultiValue>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let deadline = this
            .keep
            .take()
            .unwrap_or_else(|| Instant::now() + this.budget);
        let _run = budget::Run::until(deadline, this.budget);
        api::take_waited();
        let r = this.fut.as_mut().poll(cx);
        if r.is_pending() {
            if !api::take_waited() {
                this.keep = Some(deadline);
            }
            if let Some(at) = api::take_wait_location() {
                this.wait_at = Some(at);
            }
        }
        r
    }
}

//! Jobs that come from outside WhatsApp: a request for a script's route
//! (`bot.route`) and a cron that came due (`bot.cron`).

use std::rc::Rc;
use std::time::Instant;

use super::{Outcome, Runner, Started};
use crate::automation::routes::{HookRequest, HookResponse, RouteError, RouteId};
use crate::script::ScriptError;
use crate::script::api::{cron, route};
use crate::script::engine::RouteReply;

impl Runner {
    /// Runs a route's handler as a coroutine; its answer goes to `reply`.
    pub(super) fn route(
        self: &Rc<Self>,
        id: RouteId,
        req: HookRequest,
        reply: RouteReply,
        seq: u64,
    ) {
        // The caller gave up while it queued (the API's own deadline): no
        // one would see the answer.
        if reply.is_closed() {
            return;
        }
        let Some(g) = self.current() else {
            let _ = reply.send(Err(RouteError::Gone));
            return;
        };
        // A request matched in a table a reload has since replaced.
        let found = (g.id == id.generation)
            .then(|| g.ctx.routes.borrow().handler(id.index))
            .flatten();
        let Some((func, script)) = found else {
            let _ = reply.send(Err(RouteError::Gone));
            return;
        };
        let what = g.ctx.routes.borrow().describe(id.index);
        let file: Rc<str> = g.ctx.file_of(script).into();
        let arg = match route::request_table(&g.lua, &req) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(instance = %self.actions.instance(), route = %what, error = %e, "could not build a route request for scripts");
                let _ = reply.send(Err(RouteError::Failed));
                return;
            }
        };
        let started_at = Instant::now();
        let started = self.start(&g, func, arg, file.clone(), "route", seq);
        let me = self.clone();
        let finish = move |outcome: Outcome| -> Result<HookResponse, RouteError> {
            match outcome {
                Ok(v) => route::answer(v).map_err(|why| {
                    me.report(ScriptError {
                        file: file.to_string(),
                        line: None,
                        context: "route".into(),
                        message: format!("the handler of route {what} {why}"),
                    });
                    RouteError::Failed
                }),
                // Cancelled at the handler deadline (already reported).
                Err(_) if started_at.elapsed() >= me.config.handler_deadline => {
                    Err(RouteError::Deadline)
                }
                Err(_) => Err(RouteError::Failed),
            }
        };
        match started {
            Started::Done(outcome) => {
                let _ = reply.send(finish(outcome));
            }
            waiting @ Started::Waiting(_) => {
                tokio::task::spawn_local(async move {
                    let _ = reply.send(finish(waiting.outcome().await));
                });
            }
        }
    }

    /// Starts a cron's handler, unless the cron is gone (cancelled, or its
    /// generation replaced) since it was queued.
    pub(super) fn cron(self: &Rc<Self>, generation: u64, id: u64, seq: u64) {
        let Some(g) = self.current() else { return };
        if g.id != generation {
            return;
        }
        if let Some((func, script)) = cron::handler(&g.ctx, id) {
            let file: Rc<str> = g.ctx.file_of(script).into();
            self.start(&g, func, (), file, "cron", seq);
        }
    }
}

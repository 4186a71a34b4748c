//! One instance's engine on its worker thread: takes jobs in arrival order,
//! starts handlers for them, keeps the running generation and reloads it.
//!
//! Jobs are started in order; a handler that waits does not hold up the
//! next job. At most `max_waiting` handlers wait at once: beyond that jobs
//! stay queued (never dropped) until one finishes. A reload is the one job
//! the dispatcher awaits, so no message is handled half by the old and
//! half by the new generation.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use mlua::{Function, IntoLuaMulti, MultiValue, Table, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;

use super::api::message;
use super::engine::{Inbound, Job, LoadReport};
use super::errors::{self, Limiter};
use super::generation::Generation;
use super::handler::Handler;
use super::{Actions, EngineConfig, ScriptError, budget, strlib};
use crate::channel::{GroupEvent, Incoming, Receipt};
use crate::lifecycle::{CloseAnswer, HookCall};

mod answer;
mod load;
mod outside;

pub use answer::decode_answer;

/// Work the runner makes for itself (timers and crons firing, a reload
/// retried).
pub enum Local {
    Timer { generation: u64, id: u64 },
    Cron { generation: u64, id: u64 },
    Reload,
}

/// Where timers and retries queue their work for the dispatcher.
#[derive(Default)]
pub struct LocalQueue {
    jobs: RefCell<VecDeque<Local>>,
    notify: Notify,
}

impl LocalQueue {
    pub fn push(&self, job: Local) {
        self.jobs.borrow_mut().push_back(job);
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Local> {
        self.jobs.borrow_mut().pop_front()
    }
}

/// Makes one script's hook argument.
type ArgBuilder = Box<dyn Fn(&mlua::Lua) -> mlua::Result<Option<Table>>>;

/// How a handler ended: its first return value, or its (reported) error.
pub type Outcome = Result<Value, ScriptError>;

/// A handler that finished at once, or the way to learn how it ended.
pub enum Started {
    Done(Outcome),
    Waiting(oneshot::Receiver<Outcome>),
}

impl Started {
    pub async fn outcome(self) -> Outcome {
        match self {
            Started::Done(r) => r,
            Started::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(ScriptError {
                    file: String::new(),
                    line: None,
                    context: "handler".into(),
                    message: "the handler was cancelled".into(),
                })
            }),
        }
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "messages are most jobs: boxing them would cost an allocation each"
)]
enum Item {
    Job(Job),
    Local(Local),
}

pub struct Runner {
    config: EngineConfig,
    actions: Arc<dyn Actions>,
    status: Arc<Mutex<LoadReport>>,
    has_on_close: Arc<AtomicBool>,
    current: RefCell<Option<Rc<Generation>>>,
    generation: Cell<u64>,
    folder_gen: Cell<u64>,
    local: Rc<LocalQueue>,
    /// Handlers suspended right now.
    waiting: Cell<usize>,
    slot_free: Notify,
    /// Live (suspended) handlers by the sequence number of their job.
    live: RefCell<BTreeMap<u64, usize>>,
    settles: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
    seq: Cell<u64>,
    tasks: RefCell<HashMap<u64, AbortHandle>>,
    next_task: Cell<u64>,
    limiter: RefCell<Limiter>,
    flushing: Cell<bool>,
}

impl Runner {
    pub fn new(
        mut config: EngineConfig,
        actions: Arc<dyn Actions>,
        status: Arc<Mutex<LoadReport>>,
        has_on_close: Arc<AtomicBool>,
        folder_gen: u64,
    ) -> Rc<Runner> {
        // Read the system's zone once per engine, not per load.
        if config.zone.is_none() {
            config.zone = Some(crate::automation::cron::Zone::system());
        }
        Rc::new(Runner {
            config,
            actions,
            status,
            has_on_close,
            current: RefCell::new(None),
            generation: Cell::new(0),
            folder_gen: Cell::new(folder_gen),
            local: Rc::new(LocalQueue::default()),
            waiting: Cell::new(0),
            slot_free: Notify::new(),
            live: Default::default(),
            settles: Default::default(),
            seq: Cell::new(0),
            tasks: Default::default(),
            next_task: Cell::new(0),
            limiter: Default::default(),
            flushing: Cell::new(false),
        })
    }

    /// The dispatcher: loads the folder, then runs jobs until shut down.
    pub async fn run(self: Rc<Self>, mut rx: mpsc::UnboundedReceiver<Job>) {
        let seq = self.next_seq();
        let report = self.reload(seq).await;
        self.publish(report);
        let mut backlog: VecDeque<Item> = VecDeque::new();
        loop {
            // Work made while handling earlier jobs (timers due now) goes
            // before jobs that arrive after it; then everything that
            // arrived, in order; a shutdown goes first.
            while let Some(l) = self.local.pop() {
                backlog.push_back(Item::Local(l));
            }
            while let Ok(job) = rx.try_recv() {
                if let Job::Shutdown(tx) = job {
                    self.shutdown(backlog.len()).await;
                    let _ = tx.send(());
                    return;
                }
                backlog.push_back(Item::Job(job));
            }
            let Some(front) = backlog.front() else {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => backlog.push_back(Item::Job(job)),
                        None => {
                            self.shutdown(0).await;
                            return;
                        }
                    },
                    _ = self.local.notify.notified() => {}
                }
                continue;
            };
            let needs_slot = matches!(
                front,
                Item::Job(
                    Job::Message(_)
                        | Job::Receipt(_)
                        | Job::Group(_)
                        | Job::Hook(..)
                        | Job::Route { .. }
                ) | Item::Local(Local::Timer { .. } | Local::Cron { .. })
            );
            if needs_slot && self.waiting.get() >= self.config.max_waiting {
                tokio::select! {
                    _ = self.slot_free.notified() => {}
                    job = rx.recv() => match job {
                        Some(Job::Shutdown(tx)) => {
                            self.shutdown(backlog.len()).await;
                            let _ = tx.send(());
                            return;
                        }
                        Some(job) => backlog.push_back(Item::Job(job)),
                        None => {
                            self.shutdown(backlog.len()).await;
                            return;
                        }
                    },
                }
                continue;
            }
            let mut done = 0;
            while let Some(item) = backlog.pop_front() {
                let seq = self.next_seq();
                match item {
                    Item::Job(Job::Message(m)) => self.message(m, seq),
                    Item::Job(Job::Receipt(r)) => self.receipt(r, seq),
                    Item::Job(Job::Group(e)) => self.group(e, seq),
                    Item::Job(Job::Hook(call, answer)) => self.hook(call, answer, seq),
                    Item::Job(Job::Route { route, req, reply }) => {
                        self.route(route, req, reply, seq)
                    }
                    Item::Job(Job::Reload { folder_gen, reply }) => {
                        self.folder_gen.set(folder_gen);
                        let report = self.reload(seq).await;
                        self.publish(report.clone());
                        if let Some(tx) = reply {
                            let _ = tx.send(report);
                        }
                    }
                    Item::Job(Job::Settle { tx, until_done }) => {
                        if until_done {
                            self.settles.borrow_mut().push((seq, tx));
                            self.check_settles();
                        } else {
                            let _ = tx.send(());
                        }
                    }
                    Item::Job(Job::Shutdown(tx)) => {
                        self.shutdown(backlog.len()).await;
                        let _ = tx.send(());
                        return;
                    }
                    Item::Local(Local::Timer { generation, id }) => self.timer(generation, id, seq),
                    Item::Local(Local::Cron { generation, id }) => self.cron(generation, id, seq),
                    Item::Local(Local::Reload) => {
                        let report = self.reload(seq).await;
                        self.publish(report);
                    }
                }
                // What this job queued for itself (a timer due at once)
                // comes next, before jobs that arrive later.
                while let Some(l) = self.local.pop() {
                    backlog.push_back(Item::Local(l));
                }
                done += 1;
                let next_needs_slot = matches!(
                    backlog.front(),
                    Some(
                        Item::Job(
                            Job::Message(_)
                                | Job::Receipt(_)
                                | Job::Group(_)
                                | Job::Hook(..)
                                | Job::Route { .. }
                        ) | Item::Local(Local::Timer { .. } | Local::Cron { .. })
                    )
                );
                if done >= 64 || (next_needs_slot && self.waiting.get() >= self.config.max_waiting)
                {
                    break;
                }
            }
            self.actions.messages_done();
            // Let other instances on this worker and resumed handlers run.
            tokio::task::yield_now().await;
        }
    }

    fn next_seq(&self) -> u64 {
        let s = self.seq.get() + 1;
        self.seq.set(s);
        s
    }

    fn current(&self) -> Option<Rc<Generation>> {
        self.current.borrow().clone()
    }

    fn publish(&self, report: LoadReport) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = report;
    }

    // ---------------------------------------------------------------
    // Reporting

    pub fn report(self: &Rc<Self>, e: ScriptError) {
        if e.is_load_error() {
            // One per file and folder generation already (reloads are
            // debounced): never folded, so each generation's show.
            self.actions.report(&e, self.folder_gen.get());
            return;
        }
        let now = Instant::now();
        let admitted = self.limiter.borrow_mut().admit(&e, now);
        if let Some(e) = admitted {
            self.actions.report(&e, 0);
        }
        if self.limiter.borrow().pending() && !self.flushing.get() {
            self.flushing.set(true);
            let me = Rc::downgrade(self);
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(errors::REPEAT_WINDOW).await;
                    let Some(me) = me.upgrade() else { return };
                    let out = me.limiter.borrow_mut().flush(Instant::now());
                    for e in out {
                        me.actions.report(&e, 0);
                    }
                    if !me.limiter.borrow().pending() {
                        me.flushing.set(false);
                        return;
                    }
                }
            });
        }
    }

    // ---------------------------------------------------------------
    // Handlers

    /// Runs `f` as a handler: at once, until it finishes or first waits.
    pub fn start(
        self: &Rc<Self>,
        g: &Rc<Generation>,
        f: Function,
        args: impl IntoLuaMulti + 'static,
        file: Rc<str>,
        context: &'static str,
        seq: u64,
    ) -> Started {
        let started = Instant::now();
        let thread = match g.thread_for(f) {
            Ok(t) => t,
            Err(e) => {
                let e = errors::script_error(&e, &file, context, None, &g.known());
                self.report(e.clone());
                return Started::Done(Err(e));
            }
        };
        let mut h = Handler::new(thread, args, self.config.hook_timeout);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut h).poll(&mut cx) {
            Poll::Ready(r) => Started::Done(self.finish(g, h, r, &file, context, started)),
            Poll::Pending => {
                let (tx, rx) = oneshot::channel();
                let deadline =
                    tokio::time::Instant::from_std(started + self.config.handler_deadline);
                *self.live.borrow_mut().entry(seq).or_insert(0) += 1;
                self.waiting.set(self.waiting.get() + 1);
                let id = self.next_task.get() + 1;
                self.next_task.set(id);
                let me = self.clone();
                let g = g.clone();
                let task = tokio::task::spawn_local(async move {
                    let outcome = match tokio::time::timeout_at(deadline, &mut h).await {
                        Ok(r) => me.finish(&g, h, r, &file, context, started),
                        Err(_) => Err(me.deadline_passed(&h, &file, context)),
                    };
                    let _ = tx.send(outcome);
                    me.ended(seq, id);
                });
                self.tasks.borrow_mut().insert(id, task.abort_handle());
                Started::Waiting(rx)
            }
        }
    }

    fn finish(
        self: &Rc<Self>,
        g: &Rc<Generation>,
        h: Handler,
        r: mlua::Result<MultiValue>,
        file: &str,
        context: &'static str,
        started: Instant,
    ) -> Outcome {
        self.actions
            .hook_done(context, started.elapsed(), r.is_ok());
        match r {
            Ok(mut values) => {
                g.give_back(h.thread);
                Ok(values.pop_front().unwrap_or(Value::Nil))
            }
            Err(e) => {
                if matches!(e, mlua::Error::MemoryError(_)) {
                    // Give the next handler room again if the garbage can go.
                    let _ = g.lua.gc_collect();
                }
                let e = errors::script_error(&e, file, context, Some(&h.thread), &g.known());
                self.report(e.clone());
                Err(e)
            }
        }
    }

    fn deadline_passed(self: &Rc<Self>, h: &Handler, file: &str, context: &str) -> ScriptError {
        let ms = self.config.handler_deadline.as_millis();
        let (at, what) = match &h.wait_at {
            Some((f, l, what)) => (Some((f.clone(), *l)), format!(" (waiting in {what})")),
            None => (errors::thread_location(&h.thread), String::new()),
        };
        let (file, line) = match at {
            Some((f, l)) => (f, Some(l)),
            None => (file.to_string(), None),
        };
        self.actions
            .hook_done(context, self.config.handler_deadline, false);
        let e = ScriptError {
            file,
            line,
            context: context.to_string(),
            message: format!("handler exceeded its deadline of {ms} ms{what} and was cancelled"),
        };
        self.report(e.clone());
        e
    }

    fn ended(&self, seq: u64, id: u64) {
        self.tasks.borrow_mut().remove(&id);
        self.waiting.set(self.waiting.get().saturating_sub(1));
        {
            let mut live = self.live.borrow_mut();
            if let Some(n) = live.get_mut(&seq) {
                *n -= 1;
                if *n == 0 {
                    live.remove(&seq);
                }
            }
        }
        self.slot_free.notify_one();
        self.check_settles();
    }

    /// Answers `settle()` callers whose earlier work has all finished.
    fn check_settles(&self) {
        let oldest = self.live.borrow().keys().next().copied();
        let mut settles = self.settles.borrow_mut();
        let mut i = 0;
        while i < settles.len() {
            if oldest.is_none_or(|o| o > settles[i].0) {
                let (_, tx) = settles.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }
    }

    // ---------------------------------------------------------------
    // Jobs

    /// Starts a message's handlers. For an inbox row, everything its
    /// handlers do before they first wait is bracketed by
    /// `message_begin`/`message_started`: the host commits it together
    /// with the row's handled mark. The start (not the end) is the mark,
    /// because a handler may wait for minutes and a crash meanwhile must
    /// not run its first half twice.
    fn message(self: &Rc<Self>, m: Inbound, seq: u64) {
        let Inbound { msg, token } = m;
        if let Some(t) = token {
            self.actions.message_begin(t);
        }
        self.start_message(msg, seq);
        if let Some(t) = token {
            self.actions.message_started(t);
        }
    }

    fn start_message(self: &Rc<Self>, m: Incoming, seq: u64) {
        let Some(g) = self.current() else { return };
        let m = Arc::new(m);
        let obj = match message::object(&g.lua, m.clone()) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "could not build a message for scripts");
                return;
            }
        };
        let scripts: Vec<(Function, Rc<str>)> = g
            .scripts
            .borrow()
            .iter()
            .filter_map(|s| g.hook(s, "on_message").map(|f| (f, s.file.clone())))
            .collect();
        for (f, file) in scripts {
            self.start(&g, f, obj.clone(), file, "on_message", seq);
        }
        let Some(text) = m.text.as_deref() else {
            return;
        };
        if let Some(rest) = text.strip_prefix(self.config.command_prefix.as_str()) {
            let rest = rest.trim_start();
            let (name, args_text) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            let found = g
                .ctx
                .commands
                .borrow()
                .iter()
                .find(|c| c.name == name)
                .map(|c| (c.func.clone(), c.script));
            if let Some((func, script)) = found {
                match command_args(&g.lua, args_text) {
                    Ok(args) => {
                        let file: Rc<str> = g.ctx.file_of(script).into();
                        self.start(&g, func, (obj.clone(), args), file, "command", seq);
                    }
                    Err(e) => tracing::error!(error = %e, "could not build command arguments"),
                }
            }
        }
        let hears: Vec<(Function, String, usize)> = g
            .ctx
            .hears
            .borrow()
            .iter()
            .map(|h| (h.func.clone(), h.pattern.clone(), h.script))
            .collect();
        if hears.is_empty() {
            return;
        }
        // All of a message's patterns share one budget: the text is anyone's.
        let run = budget::Run::start(self.config.hook_timeout);
        let mut matched = Vec::new();
        for (func, pattern, script) in hears {
            match strlib::hear_match(&g.lua, text, &pattern) {
                Ok(Some(caps)) => matched.push((func, caps, script)),
                Ok(None) => {}
                Err(e) => {
                    let msg = match e {
                        super::prelude::Fail::Msg(m) => m,
                        other => format!("{other:?}"),
                    };
                    self.report(ScriptError {
                        file: g.ctx.file_of(script),
                        line: None,
                        context: "hear".into(),
                        message: format!("bot.hear pattern {pattern:?}: {msg}"),
                    });
                    if budget::overran() {
                        break;
                    }
                }
            }
        }
        drop(run);
        for (func, caps, script) in matched {
            let mut args = MultiValue::new();
            args.push_back(Value::UserData(obj.clone()));
            args.extend(caps);
            let file: Rc<str> = g.ctx.file_of(script).into();
            self.start(&g, func, args, file, "hear", seq);
        }
    }

    /// Every script's `on_receipt`, each with its own table.
    fn receipt(self: &Rc<Self>, r: Receipt, seq: u64) {
        let Some(g) = self.current() else { return };
        self.each_script(
            &g,
            "on_receipt",
            move |lua| {
                let t = lua.create_table()?;
                t.raw_set("chat", r.chat.as_str())?;
                t.raw_set("sender", r.sender.as_str())?;
                t.raw_set("kind", r.kind.as_str())?;
                let ids = lua.create_table_with_capacity(r.ids.len(), 0)?;
                for (i, id) in r.ids.iter().enumerate() {
                    ids.raw_set(i + 1, id.as_str())?;
                }
                t.raw_set("ids", ids)?;
                Ok(Some(t))
            },
            seq,
        );
    }

    /// Every script's `on_group`, each with its own table.
    fn group(self: &Rc<Self>, e: GroupEvent, seq: u64) {
        let Some(g) = self.current() else { return };
        self.each_script(
            &g,
            "on_group",
            move |lua| super::api::groups::event_table(lua, &e).map(Some),
            seq,
        );
    }

    fn timer(self: &Rc<Self>, generation: u64, id: u64, seq: u64) {
        let Some(g) = self.current() else { return };
        if g.id != generation {
            return;
        }
        let entry = {
            let mut timers = g.ctx.timers.borrow_mut();
            match timers.get(&id) {
                Some(t) if t.every.is_some() => Some((t.func.clone(), t.script)),
                Some(_) => timers.remove(&id).map(|t| (t.func, t.script)),
                None => None, // cancelled
            }
        };
        if let Some((func, script)) = entry {
            let file: Rc<str> = g.ctx.file_of(script).into();
            self.start(&g, func, (), file, "timer", seq);
        }
    }

    /// Calls `hook` in every script that defines it, each with its own
    /// argument table (one script editing it must not change what the next
    /// sees); returns how each call started, in file order.
    fn each_script(
        self: &Rc<Self>,
        g: &Rc<Generation>,
        hook: &'static str,
        build: impl Fn(&mlua::Lua) -> mlua::Result<Option<Table>>,
        seq: u64,
    ) -> Vec<(Rc<str>, Started)> {
        let scripts: Vec<(Function, Rc<str>)> = g
            .scripts
            .borrow()
            .iter()
            .filter_map(|s| g.hook(s, hook).map(|f| (f, s.file.clone())))
            .collect();
        let mut out = Vec::with_capacity(scripts.len());
        for (f, file) in scripts {
            let arg = match build(&g.lua) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, hook, "could not build a hook argument");
                    break;
                }
            };
            let started = match arg {
                Some(t) => self.start(g, f, t, file.clone(), hook, seq),
                None => self.start(g, f, (), file.clone(), hook, seq),
            };
            out.push((file, started));
        }
        out
    }

    fn hook(
        self: &Rc<Self>,
        call: HookCall,
        answer: Option<oneshot::Sender<CloseAnswer>>,
        seq: u64,
    ) {
        let Some(g) = self.current() else {
            if let Some(tx) = answer {
                let _ = tx.send(CloseAnswer::Default);
            }
            return;
        };
        let instance = self.actions.instance().to_string();
        let (hook, build): (&'static str, ArgBuilder) = match call {
            HookCall::Qr {
                code,
                kind,
                expires_in_ms,
            } => (
                "on_qr",
                Box::new(move |lua| {
                    let t = lua.create_table()?;
                    t.raw_set("code", code.as_str())?;
                    t.raw_set("kind", kind.as_str())?;
                    t.raw_set("expires_in", expires_in_ms.div_ceil(1000))?;
                    Ok(Some(t))
                }),
            ),
            HookCall::Open { jid, push_name } => (
                "on_open",
                Box::new(move |lua| {
                    let t = lua.create_table()?;
                    t.raw_set("instance", instance.as_str())?;
                    t.raw_set("jid", jid.as_deref())?;
                    t.raw_set("push_name", push_name.as_deref())?;
                    Ok(Some(t))
                }),
            ),
            HookCall::Close { info, .. } => (
                "on_close",
                Box::new(move |lua| {
                    let t = lua.create_table()?;
                    t.raw_set("code", info.reason.code)?;
                    t.raw_set("kind", info.reason.kind.as_str())?;
                    t.raw_set("message", info.reason.message.as_deref())?;
                    t.raw_set("attempt", info.attempt)?;
                    t.raw_set("will_reconnect", info.will_reconnect)?;
                    t.raw_set("delay_ms", info.delay_ms)?;
                    Ok(Some(t))
                }),
            ),
            HookCall::Logout { reason, by } => (
                "on_logout",
                Box::new(move |lua| {
                    let t = lua.create_table()?;
                    t.raw_set("code", reason.code)?;
                    t.raw_set("kind", reason.kind.as_str())?;
                    t.raw_set("by", by.as_str())?;
                    Ok(Some(t))
                }),
            ),
        };
        let started = self.each_script(&g, hook, build, seq);
        let Some(tx) = answer else { return };
        // The first script (in file order) that answers decides, within
        // the decision deadline, waits included.
        let me = self.clone();
        let deadline = self.config.decision_deadline;
        tokio::task::spawn_local(async move {
            let decide = async {
                for (file, s) in started {
                    if let Ok(v) = s.outcome().await {
                        match decode_answer(&v) {
                            Ok(Some(a)) => return a,
                            Ok(None) => {}
                            Err(message) => me.report(ScriptError {
                                file: file.to_string(),
                                line: None,
                                context: "on_close".into(),
                                message,
                            }),
                        }
                    }
                }
                CloseAnswer::Default
            };
            let answer = match tokio::time::timeout(deadline, decide).await {
                Ok(a) => a,
                Err(_) => {
                    tracing::warn!(instance = %me.actions.instance(), "on_close did not answer within {} ms; using the default", deadline.as_millis());
                    CloseAnswer::Default
                }
            };
            let _ = tx.send(answer);
        });
    }
}

fn command_args(lua: &mlua::Lua, args_text: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (i, w) in args_text.split_whitespace().enumerate() {
        t.raw_set(i + 1, w)?;
    }
    t.raw_set("text", args_text)?;
    Ok(t)
}

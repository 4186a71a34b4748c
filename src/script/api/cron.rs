//! `bot.cron`: wall clock schedules, one scheduler task per generation.
//!
//! A cron registered while the scripts load waits until its generation is
//! swapped in (a refused reload never starts it). One local task sleeps
//! until the earliest due run, then queues every due cron in registration
//! order as `Local::Cron` work, so runs go through the runner's queue like
//! timers (they respect `max_waiting`) and crons due at the same minute
//! start in the order they were registered.
//!
//! Catch-up across restarts: for each cron the store keeps the instant up
//! to which its runs were dealt with (`seen_ms`), in the instance's kv
//! table under the script name `cron/<script>` (a file name never contains
//! '/', so it cannot clash with a script's own `bot.store`) and the key
//! `<spec> <zone>#<n>` (`n`: the how-manieth cron with that spec and zone
//! the script registered). It is written when the cron starts, after each
//! due run, and when it is cancelled or its generation ends (never past a
//! run that was due but not yet handled). At start a run due after
//! `seen_ms` was missed: it runs once with `{catch_up = true}`. One due
//! less than a minute ago (a restart or reload right at its time) is late,
//! not missed, and runs either way, as a running cron's would.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};

use mlua::{Function, Lua, Table, UserData, UserDataMethods, Value};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::super::prelude::{self, FResult};
use super::super::runner::Local;
use super::{Ctx, check_options};
use crate::automation::clock::Clock;
use crate::automation::cron::{CronTimer, MISSED_AFTER_MS, Schedule, Zone};

enum State {
    /// Registered while loading; starts when the generation goes live.
    Pending {
        schedule: Schedule,
        catch_up: bool,
    },
    Running(CronTimer),
}

pub struct CronReg {
    pub script: usize,
    pub func: Function,
    /// Where `seen_ms` is kept: (kv script name, key).
    store: (String, String),
    state: State,
}

/// One generation's crons.
pub struct Crons {
    zone: Zone,
    clock: Clock,
    regs: RefCell<BTreeMap<u64, CronReg>>,
    next_id: Cell<u64>,
    /// Registrations per (script, spec, zone), for the store keys.
    ordinals: RefCell<HashMap<String, u32>>,
    /// Tells the scheduler the set changed.
    wake: Rc<Notify>,
    task: RefCell<Option<AbortHandle>>,
}

impl Crons {
    pub fn new(zone: Zone, clock: Clock) -> Crons {
        Crons {
            zone,
            clock,
            regs: Default::default(),
            next_id: Cell::new(0),
            ordinals: Default::default(),
            wake: Rc::new(Notify::new()),
            task: RefCell::new(None),
        }
    }
}

fn load_seen(ctx: &Ctx, store: &(String, String)) -> Option<u64> {
    match ctx.actions.store_get(&store.0, &store.1) {
        Ok(v) => v.and_then(|v| v.get("seen_ms").and_then(serde_json::Value::as_u64)),
        Err(e) => {
            tracing::warn!(instance = %ctx.actions.instance(), cron = %store.1, error = %e, "cannot read when the cron last ran; not catching up");
            None
        }
    }
}

fn save_seen(ctx: &Ctx, store: &(String, String), ms: u64) {
    let v = serde_json::json!({ "seen_ms": ms });
    if let Err(e) = ctx.actions.store_set(&store.0, &store.1, &v) {
        tracing::warn!(instance = %ctx.actions.instance(), cron = %store.1, error = %e, "cannot record that the cron ran");
    }
}

/// What a cron has dealt with by `now`: everything before its next run.
fn seen_by(timer: &CronTimer, now: u64) -> u64 {
    match timer.next_due() {
        Some(due) => now.min(due.saturating_sub(1)),
        None => now,
    }
}

/// Starts a cron: reads where it left off, queues a catch-up (or late)
/// run, notes the start.
fn start(ctx: &Ctx, id: u64, reg: &mut CronReg, now: u64) {
    let State::Pending { schedule, catch_up } = &reg.state else {
        return;
    };
    let seen = load_seen(ctx, &reg.store);
    let late = seen
        .filter(|s| *s < now)
        .and_then(|s| schedule.next_after(s))
        .is_some_and(|due| due <= now && now - due <= MISSED_AFTER_MS);
    let (timer, catch_up_now) = CronTimer::start(schedule.clone(), *catch_up, now, seen);
    if (late || catch_up_now)
        && let Some(q) = ctx.queue.upgrade()
    {
        q.push(Local::Cron {
            generation: ctx.gen_id,
            id,
        });
    }
    save_seen(ctx, &reg.store, now);
    reg.state = State::Running(timer);
}

/// The generation went live: start what it registered, in order.
pub fn go_live(ctx: &Rc<Ctx>) {
    let now = ctx.crons.clock.now_ms();
    let any = {
        let mut regs = ctx.crons.regs.borrow_mut();
        for (id, reg) in regs.iter_mut() {
            start(ctx, *id, reg, now);
        }
        !regs.is_empty()
    };
    if any {
        ensure_scheduler(ctx);
    }
}

fn ensure_scheduler(ctx: &Rc<Ctx>) {
    let crons = &ctx.crons;
    if crons.task.borrow().is_some() {
        crons.wake.notify_one();
        return;
    }
    let weak = Rc::downgrade(ctx);
    let wake = crons.wake.clone();
    let clock = crons.clock.clone();
    let task = tokio::task::spawn_local(async move {
        loop {
            let next = {
                let Some(ctx) = weak.upgrade() else { return };
                ctx.crons
                    .regs
                    .borrow()
                    .values()
                    .filter_map(|r| match &r.state {
                        State::Running(t) => t.next_due(),
                        State::Pending { .. } => None,
                    })
                    .min()
            };
            match next {
                Some(at) => tokio::select! {
                    _ = clock.sleep_until(at) => {}
                    _ = wake.notified() => continue,
                },
                None => {
                    wake.notified().await;
                    continue;
                }
            }
            let Some(ctx) = weak.upgrade() else { return };
            fire(&ctx, clock.now_ms());
        }
    });
    *crons.task.borrow_mut() = Some(task.abort_handle());
}

/// Queues every cron due at `now`, in registration order.
fn fire(ctx: &Ctx, now: u64) {
    let Some(q) = ctx.queue.upgrade() else { return };
    let mut polled = Vec::new();
    for (id, reg) in ctx.crons.regs.borrow_mut().iter_mut() {
        let State::Running(t) = &mut reg.state else {
            continue;
        };
        if t.next_due().is_some_and(|d| d <= now) {
            if t.poll(now) {
                q.push(Local::Cron {
                    generation: ctx.gen_id,
                    id: *id,
                });
            }
            polled.push(reg.store.clone());
        }
    }
    for store in polled {
        save_seen(ctx, &store, now);
    }
}

/// Ends a cron: notes how far it got.
fn stop(ctx: &Ctx, reg: &CronReg) {
    if let State::Running(t) = &reg.state {
        save_seen(ctx, &reg.store, seen_by(t, ctx.crons.clock.now_ms()));
    }
}

pub fn forget_script(ctx: &Ctx, idx: usize) {
    let gone: Vec<CronReg> = {
        let mut regs = ctx.crons.regs.borrow_mut();
        let ids: Vec<u64> = regs
            .iter()
            .filter(|(_, r)| r.script == idx)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| regs.remove(&id)).collect()
    };
    for r in &gone {
        stop(ctx, r);
    }
    ctx.crons.wake.notify_one();
}

pub fn dispose(ctx: &Ctx) {
    if let Some(t) = ctx.crons.task.borrow_mut().take() {
        t.abort();
    }
    let gone = std::mem::take(&mut *ctx.crons.regs.borrow_mut());
    for r in gone.values() {
        stop(ctx, r);
    }
}

/// The handler of a cron that is due, if it still exists.
pub fn handler(ctx: &Ctx, id: u64) -> Option<(Function, usize)> {
    ctx.crons
        .regs
        .borrow()
        .get(&id)
        .map(|r| (r.func.clone(), r.script))
}

struct CronHandle {
    id: u64,
    ctx: Weak<Ctx>,
}

impl UserData for CronHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("cancel", |_, this, ()| {
            let Some(ctx) = this.ctx.upgrade() else {
                return Ok(false);
            };
            let reg = ctx.crons.regs.borrow_mut().remove(&this.id);
            Ok(match reg {
                Some(r) => {
                    stop(&ctx, &r);
                    ctx.crons.wake.notify_one();
                    true
                }
                None => false,
            })
        });
        // When it runs next, in Unix seconds; nil once cancelled or never.
        methods.add_method("next", |_, this, ()| {
            let Some(ctx) = this.ctx.upgrade() else {
                return Ok(None);
            };
            let now = ctx.crons.clock.now_ms();
            let regs = ctx.crons.regs.borrow();
            let next = regs.get(&this.id).and_then(|r| match &r.state {
                State::Running(t) => t.next_due(),
                State::Pending { schedule, .. } => schedule.next_after(now),
            });
            Ok(next.map(|ms| (ms / 1000) as i64))
        });
    }
}

struct Options {
    tz: Option<String>,
    catch_up: bool,
}

fn options(v: Value) -> FResult<Options> {
    let t = match v {
        Value::Nil => {
            return Ok(Options {
                tz: None,
                catch_up: false,
            });
        }
        Value::Table(t) => t,
        other => {
            return prelude::msg(format!(
                "bot.cron's options must be a table such as {{tz = \"Europe/Berlin\"}}, got {}",
                other.type_name()
            ));
        }
    };
    check_options(&t, &["tz", "catch_up"], "bot.cron")?;
    let tz = match t.raw_get::<Value>("tz")? {
        Value::Nil => None,
        Value::String(s) => Some(s.to_string_lossy()),
        other => {
            return prelude::msg(format!(
                "bot.cron: tz must be a time zone name such as \"Europe/Berlin\", got {}",
                other.type_name()
            ));
        }
    };
    let catch_up = match t.raw_get::<Value>("catch_up")? {
        Value::Nil => false,
        Value::Boolean(b) => b,
        other => {
            return prelude::msg(format!(
                "bot.cron: catch_up must be a boolean, got {}",
                other.type_name()
            ));
        }
    };
    Ok(Options { tz, catch_up })
}

fn add(
    lua: &Lua,
    ctx: &Rc<Ctx>,
    script: usize,
    script_name: &str,
    (spec, func, opts): (Value, Value, Value),
) -> FResult<Value> {
    let Value::String(spec) = spec else {
        return prelude::msg(format!(
            "bot.cron needs a 5-field spec such as \"0 8 * * 1-5\", got {}",
            spec.type_name()
        ));
    };
    let Value::Function(func) = func else {
        return prelude::msg(format!(
            "bot.cron needs a function to call, got {}",
            func.type_name()
        ));
    };
    let opts = options(opts)?;
    let spec = spec.to_string_lossy();
    let zone = Zone::pick(opts.tz.as_deref(), &ctx.crons.zone)
        .or_else(|e| prelude::msg(format!("bot.cron: {e}")))?;
    let schedule =
        Schedule::parse(&spec, zone).or_else(|e| prelude::msg(format!("bot.cron: {e}")))?;
    if ctx.disposed.get() {
        // A handler of a replaced generation: its crons would outlive it.
        return Ok(Value::Nil);
    }
    let norm = spec.split_whitespace().collect::<Vec<_>>().join(" ");
    let key = {
        let mut ordinals = ctx.crons.ordinals.borrow_mut();
        let n = ordinals
            .entry(format!(
                "{script}\u{0}{norm}\u{0}{}",
                schedule.zone().name()
            ))
            .or_insert(0);
        let key = format!("{norm} {}#{n}", schedule.zone().name());
        *n += 1;
        key
    };
    let id = ctx.crons.next_id.get() + 1;
    ctx.crons.next_id.set(id);
    let mut reg = CronReg {
        script,
        func,
        store: (format!("cron/{script_name}"), key),
        state: State::Pending {
            schedule,
            catch_up: opts.catch_up,
        },
    };
    if ctx.live.get() {
        start(ctx, id, &mut reg, ctx.crons.clock.now_ms());
    }
    ctx.crons.regs.borrow_mut().insert(id, reg);
    if ctx.live.get() {
        ensure_scheduler(ctx);
    }
    Ok(Value::UserData(lua.create_userdata(CronHandle {
        id,
        ctx: Rc::downgrade(ctx),
    })?))
}

pub fn install(
    lua: &Lua,
    bot: &Table,
    ctx: &Rc<Ctx>,
    idx: usize,
    script_name: &str,
) -> mlua::Result<()> {
    let weak = Rc::downgrade(ctx);
    let name = script_name.to_string();
    bot.raw_set(
        "cron",
        prelude::function(lua, move |lua, args: (Value, Value, Value)| {
            match weak.upgrade() {
                Some(ctx) => add(lua, &ctx, idx, &name, args),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(())
}

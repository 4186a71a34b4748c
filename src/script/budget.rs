//! The CPU budget of a handler run: a deadline per run between waits,
//! checked by a raw Lua count hook and by the library functions moonwire
//! implements in Rust (patterns, `string.rep`), so that neither a Lua loop
//! nor a single library call can hold an engine thread past it.
//!
//! Why a raw hook and not mlua's `set_hook`: mlua keeps one hooked thread,
//! and every handler here is a coroutine of its own. Lua copies a thread's
//! hook into each coroutine created from it, so setting the raw hook once on
//! every handler thread covers the coroutines scripts make too.
//!
//! Why an "overrun" flag: Lua runs a hook with hooks disabled, and an error
//! raised there keeps them disabled for code Lua runs before unwinding (an
//! `xpcall` message handler, the to-be-closed variables of a coroutine that
//! died of it). The sandbox's `pcall`, `xpcall` and `coroutine` wrappers read
//! this flag: once a run overran, nothing more of the script is run until the
//! handler is gone.

use std::cell::Cell;
use std::time::{Duration, Instant};

use mlua::ffi;

/// VM instructions between two deadline checks.
const COUNT: i32 = 1000;

thread_local! {
    /// When the running run must stop; None outside runs.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static BUDGET_MS: Cell<u64> = const { Cell::new(0) };
    /// Set once the running run overran; cleared when the next run starts.
    static OVERRUN: Cell<bool> = const { Cell::new(false) };
}

pub fn message() -> String {
    format!(
        "script exceeded its time budget of {} ms",
        BUDGET_MS.with(Cell::get)
    )
}

/// Whether the running run is past its deadline; marks it overrun if so.
pub fn time_up() -> bool {
    let over = DEADLINE.with(|d| d.get().is_some_and(|at| Instant::now() >= at));
    if over {
        OVERRUN.with(|o| o.set(true));
    }
    over
}

pub fn overran() -> bool {
    OVERRUN.with(Cell::get)
}

unsafe extern "C-unwind" fn budget_hook(l: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    if time_up() {
        // SAFETY: `l` is the running thread handed to the hook by Lua. The
        // message is pushed before lua_error unwinds this frame, and no Rust
        // value that needs dropping is alive across it (the String is
        // dropped inside the block).
        unsafe {
            // Level 0 inside a hook is the Lua function that was running.
            ffi::luaL_where(l, 0);
            {
                let msg = message();
                ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
            }
            ffi::lua_concat(l, 2);
            ffi::lua_error(l);
        }
    }
}

/// Installs the count hook on one Lua thread (a handler's coroutine, or the
/// main thread for top-level chunks).
///
/// # Safety
/// `thread` must be a live `lua_State` of a state owned by the calling
/// thread, not running right now.
pub unsafe fn install(thread: *mut ffi::lua_State) {
    // SAFETY: the caller guarantees `thread` is valid; lua_sethook only
    // writes the thread's hook fields.
    unsafe { ffi::lua_sethook(thread, Some(budget_hook), ffi::LUA_MASKCOUNT, COUNT) };
}

/// Installs the hook on a thread object (`Thread::to_pointer` is the
/// thread's `lua_State`).
pub fn install_on(thread: &mlua::Thread) {
    let state = thread.to_pointer() as *mut ffi::lua_State;
    // SAFETY: the pointer of a thread value is its lua_State; it belongs to
    // the state this worker owns and is not running (it was just made or
    // has finished).
    unsafe { install(state) };
}

/// Installs the hook on the state's main thread.
pub fn install_main(lua: &mlua::Lua) -> mlua::Result<()> {
    // SAFETY: exec_raw runs the closure on the main state inside a protected
    // call; lua_sethook cannot fail.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            install(state);
        })
    }
}

/// One run under a deadline; ends (and restores the outer one) on drop.
pub struct Run {
    outer: Option<Instant>,
    outer_ms: u64,
    outer_overrun: bool,
}

impl Run {
    /// Starts a run ending at `deadline`; `budget` is what error messages say.
    pub fn until(deadline: Instant, budget: Duration) -> Run {
        let run = Run {
            outer: DEADLINE.with(Cell::get),
            outer_ms: BUDGET_MS.with(Cell::get),
            outer_overrun: OVERRUN.with(Cell::get),
        };
        DEADLINE.with(|d| d.set(Some(deadline)));
        BUDGET_MS.with(|b| b.set(budget.as_millis() as u64));
        OVERRUN.with(|o| o.set(false));
        run
    }

    pub fn start(budget: Duration) -> Run {
        Run::until(Instant::now() + budget, budget)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.outer));
        BUDGET_MS.with(|b| b.set(self.outer_ms));
        OVERRUN.with(|o| o.set(self.outer_overrun));
    }
}

/// Runs `f` as one run of `budget`.
pub fn with_budget<R>(budget: Duration, f: impl FnOnce() -> R) -> R {
    let _run = Run::start(budget);
    f()
}

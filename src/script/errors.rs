//! Script errors as exactly one `file:line: message`, and a limiter for the
//! same error repeated (a failing `bot.every(1, f)` must not flood the log,
//! the journal and the event stream).

use std::collections::HashMap;
use std::ffi::CStr;
use std::time::{Duration, Instant};

use mlua::ffi;

use super::ScriptError;

/// The innermost message of an mlua error and the traceback it carried.
fn root(err: &mlua::Error) -> (String, Option<String>) {
    match err {
        mlua::Error::CallbackError { traceback, cause } => {
            let (m, t) = root(cause);
            (m, t.or_else(|| Some(traceback.clone())))
        }
        mlua::Error::WithContext { cause, .. } => root(cause),
        mlua::Error::RuntimeError(m) => (m.clone(), None),
        mlua::Error::SyntaxError { message, .. } => (message.clone(), None),
        mlua::Error::MemoryError(_) => ("out of memory".into(), None),
        other => (other.to_string(), None),
    }
}

/// Splits `path:line: rest` off a message; `path` must look like a chunk
/// name (one of `known`, or anything for a `.lua` file).
fn split_location(text: &str, known: &[String]) -> Option<(String, u32, String)> {
    let mut search = 0;
    while let Some(off) = text[search..].find(':') {
        let colon = search + off;
        let path = &text[..colon];
        let rest = &text[colon + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(':') {
            let path_ok = known
                .iter()
                .any(|k| k == path || k.ends_with(path.trim_start_matches("...")))
                || path.ends_with(".lua");
            if path_ok && let Ok(line) = rest[..digits].parse::<u32>() {
                let msg = rest[digits + 1..].trim_start().to_string();
                let path = resolve(path, known);
                return Some((path, line, msg));
            }
        }
        search = colon + 1;
    }
    None
}

/// A chunk name Lua shortened ("...tail") back to the known full one.
fn resolve(path: &str, known: &[String]) -> String {
    if let Some(tail) = path.strip_prefix("...") {
        if let Some(k) = known.iter().find(|k| k.ends_with(tail)) {
            return k.clone();
        }
        return tail.to_string();
    }
    path.to_string()
}

/// Where a (dead or suspended) coroutine stopped: its innermost Lua frame.
pub fn thread_location(thread: &mlua::Thread) -> Option<(String, u32)> {
    let l = thread.to_pointer() as *mut ffi::lua_State;
    for level in 0..32 {
        // SAFETY: `l` is the lua_State of a thread of a state this worker
        // owns, not running now. lua_Debug is plain data Lua fills in.
        unsafe {
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            if ffi::lua_getstack(l, level, &mut ar) == 0 {
                return None;
            }
            if ffi::lua_getinfo(l, c"Sl".as_ptr(), &mut ar) == 0 || ar.currentline <= 0 {
                continue;
            }
            if ar.source.is_null() {
                continue;
            }
            let src = CStr::from_ptr(ar.source).to_string_lossy();
            if let Some(path) = src.strip_prefix('@') {
                return Some((path.to_string(), ar.currentline as u32));
            }
        }
    }
    None
}

/// Turns an mlua error into one `file:line: message`. `thread` is the
/// handler's coroutine when there is one (it still holds the frames);
/// `known` are the chunk names of the generation.
pub fn script_error(
    err: &mlua::Error,
    file: &str,
    context: &str,
    thread: Option<&mlua::Thread>,
    known: &[String],
) -> ScriptError {
    let (message, traceback) = root(err);
    let first = message.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("runtime error: ").unwrap_or(first);
    let make = |file: String, line: Option<u32>, message: String| ScriptError {
        file,
        line,
        context: context.into(),
        message,
    };
    if let Some((path, line, mut msg)) = split_location(first, known) {
        // Lua adds a location per level some errors pass through
        // (coroutine.wrap does): keep the innermost.
        while let Some((_, _, inner)) = split_location(&msg, known) {
            msg = inner;
        }
        return make(path, Some(line), msg);
    }
    if let Some((path, line)) = thread.and_then(thread_location) {
        return make(path, Some(line), first.to_string());
    }
    let from_trace = traceback.as_deref().and_then(|t| {
        t.lines()
            .filter_map(|l| split_location(l.trim(), known))
            .next()
            .map(|(p, l, _)| (p, l))
    });
    match from_trace {
        Some((path, line)) => make(path, Some(line), first.to_string()),
        None => make(file.to_string(), None, first.to_string()),
    }
}

/// How long identical errors are folded into one report.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

struct Seen {
    since: Instant,
    suppressed: u64,
    last: ScriptError,
}

/// Folds an error repeated within `REPEAT_WINDOW` into a count.
#[derive(Default)]
pub struct Limiter {
    seen: HashMap<String, Seen>,
}

impl Limiter {
    /// What to report now for `e`: itself, or nothing (it is counted).
    pub fn admit(&mut self, e: &ScriptError, now: Instant) -> Option<ScriptError> {
        let key = format!("{}\u{0}{}\u{0}{e}", e.context, e.line.unwrap_or(0));
        match self.seen.get_mut(&key) {
            Some(s) if now.duration_since(s.since) < REPEAT_WINDOW => {
                s.suppressed += 1;
                s.last = e.clone();
                None
            }
            Some(s) => {
                let out = repeated(e, s.suppressed);
                s.since = now;
                s.suppressed = 0;
                Some(out)
            }
            None => {
                if self.seen.len() > 1024 {
                    self.seen.retain(|_, s| s.suppressed > 0);
                }
                self.seen.insert(
                    key,
                    Seen {
                        since: now,
                        suppressed: 0,
                        last: e.clone(),
                    },
                );
                Some(e.clone())
            }
        }
    }

    /// The counts of windows that have ended, to report; forgets them.
    pub fn flush(&mut self, now: Instant) -> Vec<ScriptError> {
        let mut out = Vec::new();
        self.seen.retain(|_, s| {
            if now.duration_since(s.since) < REPEAT_WINDOW {
                return true;
            }
            if s.suppressed > 0 {
                out.push(repeated_only(&s.last, s.suppressed));
            }
            false
        });
        out
    }

    /// Whether a flush will have something to say.
    pub fn pending(&self) -> bool {
        self.seen.values().any(|s| s.suppressed > 0)
    }
}

fn repeated(e: &ScriptError, n: u64) -> ScriptError {
    if n == 0 {
        return e.clone();
    }
    ScriptError {
        message: format!("{} (and {n} more times in the last second)", e.message),
        ..e.clone()
    }
}

fn repeated_only(e: &ScriptError, n: u64) -> ScriptError {
    ScriptError {
        message: format!("{} (repeated {n} times)", e.message),
        ..e.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(msg: &str) -> ScriptError {
        ScriptError {
            file: "c.lua".into(),
            line: Some(3),
            context: "timer".into(),
            message: msg.into(),
        }
    }

    #[test]
    fn each_error_has_one_location() {
        let known = vec!["notes.txt".to_string(), "/tmp/s/c.lua".to_string()];
        let e = script_error(
            &mlua::Error::RuntimeError("notes.txt:1: syntax error near 'x'".into()),
            "notes.txt",
            "load",
            None,
            &known,
        );
        assert_eq!(e.to_string(), "notes.txt:1: syntax error near 'x'");
        let e = script_error(
            &mlua::Error::RuntimeError(
                "/tmp/s/c.lua:2: /tmp/s/c.lua:2: script exceeded its time budget of 5 ms".into(),
            ),
            "/tmp/s/c.lua",
            "timer",
            None,
            &known,
        );
        assert_eq!(
            e.to_string(),
            "/tmp/s/c.lua:2: script exceeded its time budget of 5 ms"
        );
        let e = script_error(
            &mlua::Error::RuntimeError("...s/c.lua:7: boom".into()),
            "x",
            "load",
            None,
            &known,
        );
        assert_eq!(e.to_string(), "/tmp/s/c.lua:7: boom");
        let e = script_error(
            &mlua::Error::MemoryError("not enough memory".into()),
            "/tmp/s/c.lua",
            "load",
            None,
            &known,
        );
        assert_eq!(e.to_string(), "/tmp/s/c.lua: out of memory");
    }

    #[test]
    fn repeats_are_folded_into_a_count() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert!(l.admit(&err("boom"), t0).is_some());
        for i in 1..=1249 {
            assert!(
                l.admit(&err("boom"), t0 + Duration::from_micros(i * 500))
                    .is_none()
            );
        }
        // Another error is not folded into this one.
        assert!(l.admit(&err("other"), t0).is_some());
        assert!(l.pending());
        let out = l.flush(t0 + Duration::from_millis(1500));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to_string(), "c.lua:3: boom (repeated 1249 times)");
        assert!(!l.pending());
        assert!(l.admit(&err("boom"), t0 + Duration::from_secs(3)).is_some());
    }
}

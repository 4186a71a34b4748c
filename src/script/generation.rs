//! One loaded set of scripts in one Lua state: reading the files, running
//! their top levels, and the handler threads the state keeps for reuse.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::SystemTime;

use mlua::{ChunkMode, Function, Lua, Table, Thread, Value};

use super::api::{self, Ctx};
use super::runner::LocalQueue;
use super::{Actions, EngineConfig, ScriptError, budget, errors, sandbox};
use crate::automation::cron::Zone;

/// The hooks a script may define (README's table), for dispatch and for
/// spotting misspellings.
pub const HOOKS: &[&str] = &[
    "on_load",
    "on_unload",
    "on_qr",
    "on_open",
    "on_close",
    "on_logout",
    "on_message",
    "on_group",
    "on_receipt",
];

/// Finished handler threads kept for reuse, per state.
const THREAD_POOL: usize = 16;

pub struct Script {
    pub idx: usize,
    pub name: String,
    pub file: Rc<str>,
    pub env: Table,
}

/// What a file looked like when it was read, to notice a write racing the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

pub struct Generation {
    pub id: u64,
    pub ctx: Rc<Ctx>,
    pub scripts: RefCell<Vec<Script>>,
    /// The hook names as Lua strings, made once: looking a hook up with a
    /// Rust `&str` would intern the name again on every call.
    hook_keys: Vec<(&'static str, mlua::String)>,
    threads: RefCell<Vec<Thread>>,
    stamps: Vec<(PathBuf, Stamp)>,
    // Declared last: dropped after everything that refers into it.
    pub lua: Lua,
}

/// The outcome of loading a folder.
pub struct Loaded {
    pub generation: Generation,
    /// Problems of scripts that were left out.
    pub errors: Vec<ScriptError>,
}

/// Lists `*.lua` files directly in `dir`, by file name.
pub fn list_scripts(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "lua"))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Reads a file and notes its stamp; refuses a file that changed while read.
fn read_settled(path: &Path) -> Result<(Vec<u8>, Stamp), String> {
    let before = Stamp::of(path).ok_or_else(|| "cannot read: it is gone".to_string())?;
    let src = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    match Stamp::of(path) {
        Some(after) if after == before && after.len == src.len() as u64 => Ok((src, after)),
        _ => Err("changed while being read".into()),
    }
}

impl Generation {
    /// Loads `files` into a fresh state, each top level in its own
    /// environment under the time budget. Scripts that fail are left out
    /// and their errors returned. `on_load` is not run here.
    pub fn load(
        files: &[PathBuf],
        module_dir: &Path,
        config: &EngineConfig,
        actions: &Arc<dyn Actions>,
        queue: Weak<LocalQueue>,
        id: u64,
    ) -> Result<Loaded, ScriptError> {
        let engine_err = |e: mlua::Error| ScriptError {
            file: module_dir.display().to_string(),
            line: None,
            context: "load".into(),
            message: format!("cannot start the Lua engine: {e}"),
        };
        let lua = sandbox::new_state(config.memory_limit).map_err(engine_err)?;
        let ctx = Rc::new(Ctx::new(
            actions.clone(),
            config.command_prefix.clone(),
            module_dir.to_path_buf(),
            id,
            queue,
            config.handler_deadline,
            config.zone.clone().unwrap_or_else(Zone::utc),
            config.clock.clone(),
            api::content::MediaPolicy {
                scripts: module_dir.to_path_buf(),
                media: config.media_dir.clone(),
                max_bytes: config.max_media,
            },
        ));
        api::message::install(&lua, &ctx).map_err(engine_err)?;
        let mut errors = Vec::new();
        let mut scripts = Vec::new();
        let mut stamps = Vec::new();
        for (idx, path) in files.iter().enumerate() {
            let file = path.display().to_string();
            ctx.files.borrow_mut().push(file.clone());
            ctx.known.borrow_mut().push(file.clone());
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.clone());
            let src = match read_settled(path) {
                Ok((s, stamp)) => {
                    stamps.push((path.clone(), stamp));
                    s
                }
                Err(message) => {
                    errors.push(ScriptError {
                        file: file.clone(),
                        line: None,
                        context: "load".into(),
                        message,
                    });
                    continue;
                }
            };
            let result = api::script_env(&lua, &ctx, idx, &name).and_then(|env| {
                budget::with_budget(config.hook_timeout, || {
                    lua.load(src)
                        .set_name(format!("@{file}"))
                        .set_mode(ChunkMode::Text)
                        .set_environment(env.clone())
                        .exec()
                })?;
                Ok(env)
            });
            match result {
                Ok(env) => scripts.push(Script {
                    idx,
                    name,
                    file: file.as_str().into(),
                    env,
                }),
                Err(e) => {
                    ctx.forget_script(idx);
                    if matches!(e, mlua::Error::MemoryError(_)) {
                        let _ = lua.gc_collect();
                    }
                    let known = ctx.known.borrow().clone();
                    errors.push(errors::script_error(&e, &file, "load", None, &known));
                }
            }
        }
        let mut hook_keys = Vec::with_capacity(HOOKS.len());
        for h in HOOKS {
            hook_keys.push((*h, lua.create_string(h).map_err(engine_err)?));
        }
        Ok(Loaded {
            generation: Generation {
                id,
                ctx,
                scripts: RefCell::new(scripts),
                hook_keys,
                threads: RefCell::new(Vec::new()),
                stamps,
                lua,
            },
            errors,
        })
    }

    /// A script's global `hook`, if it defines one.
    pub fn hook(&self, s: &Script, hook: &str) -> Option<Function> {
        let found = match self.hook_keys.iter().find(|(n, _)| *n == hook) {
            Some((_, key)) => s.env.raw_get::<Value>(key.clone()),
            None => s.env.raw_get::<Value>(hook),
        };
        match found {
            Ok(Value::Function(f)) => Some(f),
            _ => None,
        }
    }

    pub fn defines(&self, hook: &str) -> bool {
        self.scripts
            .borrow()
            .iter()
            .any(|s| self.hook(s, hook).is_some())
    }

    /// Leaves a script out (its `on_load` failed). Says whether it had
    /// routes.
    pub fn drop_script(&self, idx: usize) -> bool {
        let had_routes = self.ctx.forget_script(idx);
        self.scripts.borrow_mut().retain(|s| s.idx != idx);
        had_routes
    }

    /// A coroutine for `f`: a finished one reused, or a new one with the
    /// budget hook installed.
    pub fn thread_for(&self, f: Function) -> mlua::Result<Thread> {
        if let Some(t) = self.threads.borrow_mut().pop() {
            t.reset(f)?;
            return Ok(t);
        }
        let t = self.lua.create_thread(f)?;
        budget::install_on(&t);
        Ok(t)
    }

    /// Takes back a thread whose handler returned normally. Threads that
    /// errored or were cancelled are never reused: resetting them would run
    /// their pending to-be-closed variables, possibly with hooks off.
    pub fn give_back(&self, t: Thread) {
        if t.status() == mlua::ThreadStatus::Finished {
            let mut pool = self.threads.borrow_mut();
            if pool.len() < THREAD_POOL {
                pool.push(t);
            }
        }
    }

    /// A file that changed since it was read for this generation.
    pub fn changed_since_read(&self) -> Option<&Path> {
        self.stamps
            .iter()
            .find(|(p, s)| Stamp::of(p).as_ref() != Some(s))
            .map(|(p, _)| p.as_path())
    }

    pub fn known(&self) -> Vec<String> {
        self.ctx.known.borrow().clone()
    }

    /// Global functions named almost like a hook: they would never be
    /// called. `(file, line, name, hook)`.
    pub fn misspelled_hooks(&self) -> Vec<(String, Option<u32>, String, &'static str)> {
        let mut out = Vec::new();
        for s in self.scripts.borrow().iter() {
            for pair in s.env.pairs::<Value, Value>() {
                let Ok((Value::String(k), Value::Function(f))) = pair else {
                    continue;
                };
                let name = k.to_string_lossy();
                if HOOKS.contains(&name.as_str()) {
                    continue;
                }
                if let Some(hook) = nearest_hook(&name) {
                    let line = f.info().line_defined.map(|l| l as u32);
                    out.push((s.file.to_string(), line, name, hook));
                }
            }
        }
        out
    }
}

/// The hook a global function name was probably meant to be: hooks all
/// start with "on", so only such names are suspects.
pub fn nearest_hook(name: &str) -> Option<&'static str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "");
    let n = norm(name);
    if n.len() < 4 || !n.starts_with("on") {
        return None;
    }
    let mut best: Option<(usize, &'static str)> = None;
    for hook in HOOKS {
        let h = norm(hook);
        let d = edit_distance(&n, &h);
        // "on_msg" for "on_message": an abbreviation of the hook's word.
        let abbreviation = n.get(..3) == h.get(..3) && is_subsequence(&n, &h);
        if d <= 2 || abbreviation {
            let d = if abbreviation { d.min(2) } else { d };
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, hook));
            }
        }
    }
    best.map(|(_, h)| h)
}

fn is_subsequence(small: &str, big: &str) -> bool {
    let mut it = big.chars();
    small.chars().all(|c| it.any(|b| b == c))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelled_hooks_point_at_the_nearest() {
        assert_eq!(nearest_hook("on_mesage"), Some("on_message"));
        assert_eq!(nearest_hook("onmessage"), Some("on_message"));
        assert_eq!(nearest_hook("on_msg"), Some("on_message"));
        assert_eq!(nearest_hook("OnOpen"), Some("on_open"));
        assert_eq!(nearest_hook("on_clsoe"), Some("on_close"));
        assert_eq!(nearest_hook("greet"), None);
        assert_eq!(nearest_hook("helper"), None);
        assert_eq!(nearest_hook("on_startup"), None);
    }
}

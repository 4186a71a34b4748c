//! Loading a generation: the reload job, `check`, and the end of an
//! instance's scripts.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::ScriptError;
use super::super::engine::LoadReport;
use super::super::generation::{Generation, list_scripts};
use super::{Local, Outcome, Runner, Started};

impl Runner {
    /// Waits for every started handler to end.
    pub(super) async fn all_done(started: Vec<(Rc<str>, Started)>) -> Vec<(Rc<str>, Outcome)> {
        let mut out = Vec::with_capacity(started.len());
        for (file, s) in started {
            out.push((file, s.outcome().await));
        }
        out
    }

    /// Loads the folder into a fresh generation and swaps it in only if
    /// every file loaded (or if nothing runs yet, with what loaded).
    pub(super) async fn reload(self: &Rc<Self>, seq: u64) -> LoadReport {
        let dir = self.config.dir.clone();
        let files = match list_scripts(&dir) {
            Ok(f) => f,
            Err(message) => {
                let e = ScriptError {
                    file: dir.display().to_string(),
                    line: None,
                    context: "reload".into(),
                    message,
                };
                self.report(e.clone());
                return LoadReport {
                    generation: self.generation.get(),
                    errors: vec![e],
                    ..self.status()
                };
            }
        };
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        let id = self.generation.get() + 1;
        let loaded = match Generation::load(
            &files,
            &dir,
            &self.config,
            &self.actions,
            Rc::downgrade(&self.local),
            id,
        ) {
            Ok(l) => l,
            Err(e) => {
                self.report(e.clone());
                return LoadReport {
                    generation: self.generation.get(),
                    files: names,
                    errors: vec![e],
                    swapped: false,
                };
            }
        };
        let mut errors = loaded.errors;
        let new = loaded.generation;
        let changed = new.changed_since_read().map(|p| p.display().to_string());
        let racing = errors
            .iter()
            .any(|e| e.message == "changed while being read");
        if changed.is_some() || racing {
            // A save in progress: never run what was half written. The
            // watcher fires again when it settles; retry soon anyway.
            new.ctx.dispose();
            tracing::info!(instance = %self.actions.instance(), file = ?changed, "a script changed while being read; reloading again shortly");
            let q = Rc::downgrade(&self.local);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(q) = q.upgrade() {
                    q.push(Local::Reload);
                }
            });
            return self.status();
        }
        let running = self.current().is_some();
        if running && !errors.is_empty() {
            new.ctx.dispose();
            for e in &errors {
                self.report(e.clone());
            }
            tracing::error!(instance = %self.actions.instance(), generation = self.generation.get(), "reload refused; the previous scripts keep running");
            self.actions.reloaded(false);
            return LoadReport {
                generation: self.generation.get(),
                files: names,
                errors,
                swapped: false,
            };
        }
        for e in &errors {
            self.report(e.clone());
        }
        for (file, line, name, hook) in new.misspelled_hooks() {
            tracing::warn!(instance = %self.actions.instance(), "{file}:{}: global function {name} looks like a misspelling of the hook {hook}; it will never be called", line.unwrap_or(0));
        }
        // The old generation says goodbye and goes (handlers still waiting
        // in it finish there), then the new one starts.
        let old = self.current.borrow_mut().take();
        if let Some(old) = old {
            let started = self.each_script(&old, "on_unload", |_| Ok(None), seq);
            Self::all_done(started).await;
            old.ctx.dispose();
        }
        let new = Rc::new(new);
        self.has_on_close
            .store(new.defines("on_close"), Ordering::Release);
        *self.current.borrow_mut() = Some(new.clone());
        self.generation.set(id);
        new.ctx.go_live();
        self.actions.set_routes(new.ctx.route_table());
        let started = self.each_script(&new, "on_load", |_| Ok(None), seq);
        let mut routes_changed = false;
        for (file, r) in Self::all_done(started).await {
            if let Err(e) = r {
                let idx = new
                    .scripts
                    .borrow()
                    .iter()
                    .find(|s| s.file == file)
                    .map(|s| s.idx);
                if let Some(idx) = idx {
                    routes_changed |= new.drop_script(idx);
                }
                errors.push(e);
            }
        }
        if routes_changed {
            self.actions.set_routes(new.ctx.route_table());
        }
        self.has_on_close
            .store(new.defines("on_close"), Ordering::Release);
        let loaded: Vec<String> = new
            .scripts
            .borrow()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        tracing::info!(instance = %self.actions.instance(), generation = id, scripts = ?loaded, "scripts loaded");
        self.actions.reloaded(true);
        LoadReport {
            generation: id,
            files: names,
            errors,
            swapped: true,
        }
    }

    /// `moonwire check` of some files: load them, run every `on_load` and
    /// `on_unload`, and say what went wrong and what looks wrong.
    pub async fn check_files(
        self: &Rc<Self>,
        files: &[std::path::PathBuf],
        dir: &std::path::Path,
    ) -> (Vec<ScriptError>, Vec<ScriptError>) {
        let loaded = match Generation::load(
            files,
            dir,
            &self.config,
            &self.actions,
            Rc::downgrade(&self.local),
            1,
        ) {
            Ok(l) => l,
            Err(e) => return (vec![e], Vec::new()),
        };
        let mut errors = loaded.errors;
        let g = Rc::new(loaded.generation);
        *self.current.borrow_mut() = Some(g.clone());
        let seq = self.next_seq();
        for hook in ["on_load", "on_unload"] {
            let started = self.each_script(&g, hook, |_| Ok(None), seq);
            for (_, r) in Self::all_done(started).await {
                if let Err(e) = r {
                    errors.push(e);
                }
            }
        }
        let mut warnings: Vec<ScriptError> = g.ctx.notes.borrow().clone();
        for (file, line, name, hook) in g.misspelled_hooks() {
            warnings.push(ScriptError {
                file,
                line,
                context: "check".into(),
                message: format!(
                    "global function {name} looks like a misspelling of the hook {hook}; it will never be called"
                ),
            });
        }
        g.ctx.dispose();
        *self.current.borrow_mut() = None;
        (errors, warnings)
    }

    pub(super) fn status(&self) -> LoadReport {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends the instance's scripts: waiting handlers are cancelled, every
    /// `on_unload` runs (bounded), the generation goes.
    pub(super) async fn shutdown(self: &Rc<Self>, dropped: usize) {
        // What the last batch's messages did lands before anything else.
        self.actions.messages_done();
        if dropped > 0 {
            tracing::warn!(instance = %self.actions.instance(), dropped, "scripts stopped with work still queued");
        }
        for (_, t) in self.tasks.borrow_mut().drain() {
            t.abort();
        }
        let Some(g) = self.current.borrow_mut().take() else {
            return;
        };
        let seq = self.next_seq();
        let started = self.each_script(&g, "on_unload", |_| Ok(None), seq);
        let bound = self.config.handler_deadline.min(Duration::from_secs(5));
        if tokio::time::timeout(bound, Self::all_done(started))
            .await
            .is_err()
        {
            tracing::warn!(instance = %self.actions.instance(), "on_unload did not finish within {} ms", bound.as_millis());
        }
        g.ctx.dispose();
        for (_, t) in self.tasks.borrow_mut().drain() {
            t.abort();
        }
        for (_, tx) in self.settles.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
    }
}

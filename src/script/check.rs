//! `moonwire check`: load scripts with the real engine on dry-run actions
//! and report errors and likely mistakes, without connecting anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::generation::list_scripts;
use super::runner::Runner;
use super::{Actions, EngineConfig, ScriptError};

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Scripts that would fail to load (or whose `on_load`/`on_unload` fails).
    pub errors: Vec<ScriptError>,
    /// Things that load but look wrong: a misspelled hook, a command
    /// registered twice.
    pub warnings: Vec<ScriptError>,
}

/// Loads each path (a folder of scripts, or one file) and reports.
pub fn check_paths(
    paths: &[PathBuf],
    config: &EngineConfig,
    actions: Arc<dyn Actions>,
) -> CheckReport {
    let mut report = CheckReport::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report.errors.push(ScriptError {
                file: String::new(),
                line: None,
                context: "check".into(),
                message: format!("cannot start the checker: {e}"),
            });
            return report;
        }
    };
    let local = tokio::task::LocalSet::new();
    for path in paths {
        let (files, dir) = if path.is_dir() {
            match list_scripts(path) {
                Ok(f) => (f, path.clone()),
                Err(message) => {
                    report.errors.push(ScriptError {
                        file: path.display().to_string(),
                        line: None,
                        context: "check".into(),
                        message,
                    });
                    continue;
                }
            }
        } else if path.is_file() {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (vec![path.clone()], dir)
        } else {
            report.errors.push(ScriptError {
                file: path.display().to_string(),
                line: None,
                context: "check".into(),
                message: "no such file or folder".into(),
            });
            continue;
        };
        let mut config = config.clone();
        config.dir = dir.clone();
        let runner = Runner::new(
            config,
            actions.clone(),
            Arc::new(Mutex::new(Default::default())),
            Arc::new(AtomicBool::new(false)),
            0,
        );
        let (errors, warnings) = local.block_on(&rt, runner.check_files(&files, &dir));
        report.errors.extend(errors);
        report.warnings.extend(warnings);
    }
    report
}

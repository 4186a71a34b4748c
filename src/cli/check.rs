//! `moonwire check`: load scripts with the real API in dry run and report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use moonwire::channel::Outgoing;
use moonwire::config::Config;
use moonwire::script::{Actions, ScriptError, check_paths};

/// Everything succeeds and nothing leaves the process.
#[derive(Default)]
struct DryRun {
    store: Mutex<HashMap<(String, String), serde_json::Value>>,
}

impl Actions for DryRun {
    fn instance(&self) -> &str {
        "check"
    }
    fn state(&self) -> String {
        "open".into()
    }
    fn send(&self, _: Outgoing) -> Result<(), String> {
        Ok(())
    }
    fn logout(&self) {}
    fn store_get(&self, script: &str, key: &str) -> Result<Option<serde_json::Value>, String> {
        let s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        Ok(s.get(&(script.to_string(), key.to_string())).cloned())
    }
    fn store_set(&self, script: &str, key: &str, value: &serde_json::Value) -> Result<(), String> {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        s.insert((script.to_string(), key.to_string()), value.clone());
        Ok(())
    }
    fn store_delete(&self, script: &str, key: &str) -> Result<(), String> {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        s.remove(&(script.to_string(), key.to_string()));
        Ok(())
    }
    fn report(&self, _: &ScriptError, _: u64) {}
}

pub fn run(config: &Config, paths: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let paths = if paths.is_empty() {
        // Every folder the configuration runs: the shared one and each
        // instance's own.
        let mut p = vec![config.scripts.clone()];
        for i in &config.instances {
            if let Some(d) = &i.scripts
                && !p.contains(d)
            {
                p.push(d.clone());
            }
        }
        p
    } else {
        paths
    };
    let report = check_paths(
        &paths,
        &super::engine_config(config),
        Arc::new(DryRun::default()),
    );
    for e in &report.errors {
        println!("{e}");
    }
    for w in &report.warnings {
        match w.line {
            Some(line) => println!("{}:{line}: warning: {}", w.file, w.message),
            None => println!("{}: warning: {}", w.file, w.message),
        }
    }
    if report.errors.is_empty() {
        eprintln!(
            "no problems in {}{}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match report.warnings.len() {
                0 => String::new(),
                n => format!(" ({n} warning{})", if n == 1 { "" } else { "s" }),
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

//! `moonwire status`: what the database says, made true first.

use std::process::ExitCode;

use anyhow::Context;
use moonwire::config::Config;
use moonwire::host::{DataDirLock, HostError, now_ms};
use moonwire::store::Store;

pub fn run(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let db = config.db_path();
    let rows = if db.exists() {
        let store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
        // With no live host holding the lock, a row saying open/connecting
        // is a crash's leftover: repair it before showing it.
        match DataDirLock::acquire(&config.data_dir) {
            Ok(_lock) => {
                store.reconcile(now_ms())?;
            }
            Err(HostError::Locked(_)) => {}
            Err(e) => return Err(e.into()),
        }
        store.instances()?
    } else {
        Vec::new()
    };
    if json {
        let arr: Vec<_> = rows.iter().map(|r| r.to_json()).collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no instances yet ({})", db.display());
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let s = &r.status;
            let reason = match (s.last_reason_code, s.last_reason_kind) {
                (Some(c), Some(k)) => format!("{c} {k}"),
                (None, Some(k)) => k.to_string(),
                _ => "-".into(),
            };
            [
                r.name.clone(),
                r.channel.clone(),
                s.connection_status.as_str().into(),
                s.state.as_str().into(),
                reason,
                s.jid.clone().unwrap_or_else(|| "-".into()),
                // Last: the cause can be long, and nothing comes after it.
                s.last_reason_message.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "CHANNEL",
        "STATUS",
        "STATE",
        "LAST REASON",
        "JID",
        "CAUSE",
    ];
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &[&str]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&header);
    for row in &table {
        print(&row.each_ref().map(String::as_str));
    }
    Ok(ExitCode::SUCCESS)
}

//! `moonwire console`: the instance `console` on a simulated connection,
//! through the real host, machine and store.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moonwire::channel::console::ConsoleOut;
use moonwire::config::{ChannelKind, Config};
use moonwire::host::app::{App, StartOptions};
use moonwire::host::{DataDirLock, EventBus, Host, HostEvent};
use moonwire::store::Store;
use tokio::io::AsyncBufReadExt;

const INSTANCE: &str = "console";

/// A line of stdin, understood.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Message(String),
    Drop(u16),
    Logout,
    Connect,
    Scan,
    Sleep(u64),
    Quit,
    Empty,
}

fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(if line.trim().is_empty() {
            Line::Empty
        } else {
            Line::Message(line.to_string())
        });
    };
    let mut parts = cmd.split_whitespace();
    let name = parts.next().unwrap_or("");
    let arg = parts.next();
    let extra = parts.next();
    let need = |what: &str| {
        format!(
            "/{name} needs {what}, e.g. /{name} {}",
            if name == "drop" { "408" } else { "100" }
        )
    };
    let parsed = match name {
        "drop" => Line::Drop(
            arg.ok_or_else(|| need("a close code"))?
                .parse()
                .map_err(|_| need("a close code (a number up to 65535)"))?,
        ),
        "sleep" => Line::Sleep(
            arg.ok_or_else(|| need("milliseconds"))?
                .parse()
                .map_err(|_| need("a whole number of milliseconds"))?,
        ),
        "logout" | "connect" | "scan" | "quit" if arg.is_some() => {
            return Err(format!("/{name} takes no argument"));
        }
        "logout" => Line::Logout,
        "connect" => Line::Connect,
        "scan" => Line::Scan,
        "quit" => Line::Quit,
        _ => {
            return Err(format!(
                "unknown command /{name} (known: /drop CODE, /logout, /connect, /scan, /sleep MS, /quit)"
            ));
        }
    };
    if extra.is_some() {
        return Err(format!("/{name} takes one argument"));
    }
    Ok(parsed)
}

pub fn run(config: &Config, manual_scan: bool) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    let code = rt.block_on(run_async(config, manual_scan));
    // stdin is read by a blocking thread no one can interrupt: after a
    // signal it may still wait for a line that never comes.
    rt.shutdown_background();
    code
}

async fn run_async(config: &Config, manual_scan: bool) -> anyhow::Result<ExitCode> {
    // Ctrl-C and SIGTERM end the run like /quit: hooks finish, on_unload
    // runs, the row ends closed/stopped, exit 0. Listening starts here, so
    // a signal during start-up is not lost.
    let mut signals = super::run::StopSignals::new();
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let db = config.db_path();
    let store = Arc::new(Store::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let out = Arc::new(ConsoleOut::default());
    let bus = EventBus::default();
    {
        let out = out.clone();
        bus.observe(move |ev| {
            if let HostEvent::State { transition, .. } = ev {
                out.line(&format!("* {transition}"));
            }
        });
    }
    let app = App::new(
        store,
        bus,
        super::host_settings(config),
        super::engine_config(config),
        out.clone(),
    )?;
    let opts = StartOptions {
        manual_scan,
        ..StartOptions::default()
    };
    let handle = app.start_configured(INSTANCE, ChannelKind::Console, opts)?;
    let sim = app
        .console_sim(INSTANCE)
        .context("the console instance has no simulated server")?;
    app.scripts.watch();
    let host = &app.host;
    handle.connect();
    settle(host).await;

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let read = tokio::select! {
            read = lines.next_line() => read,
            () = signals.recv() => break,
        };
        let line = match read {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "reading stdin failed; treating it as end of input");
                break;
            }
        };
        match parse(&line) {
            Ok(Line::Empty) => continue,
            Ok(Line::Message(text)) => sim.deliver(&text),
            Ok(Line::Drop(code)) => {
                if let Err(e) = sim.drop_connection(code) {
                    eprintln!("console: /drop {code} ignored: {e}");
                }
            }
            Ok(Line::Logout) => sim.server_logout(),
            Ok(Line::Connect) => handle.connect(),
            Ok(Line::Scan) => {
                if let Err(e) = sim.scan() {
                    let hint = if manual_scan {
                        ""
                    } else {
                        " (pairing waits for /scan only with --manual-scan)"
                    };
                    eprintln!("console: /scan ignored: {e}{hint}");
                }
            }
            Ok(Line::Sleep(ms)) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    () = signals.recv() => break,
                }
            }
            Ok(Line::Quit) => break,
            Err(e) => eprintln!("console: {e}"),
        }
        // Each line's work starts before the next line is read; handlers
        // that wait go on meanwhile (end of input waits for them).
        settle_started(host).await;
    }

    // End of input: finish what hooks are doing, then go quiet and stop.
    settle(host).await;
    out.close();
    app.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Lets queued work start, bounded like `settle`.
async fn settle_started(host: &Host) {
    if tokio::time::timeout(Duration::from_secs(10), host.settle_started())
        .await
        .is_err()
    {
        tracing::warn!("pending work did not start within 10 s; going on");
    }
}

/// Lets queued work finish, bounded so a wedged hook cannot hang the console.
async fn settle(host: &Host) {
    if tokio::time::timeout(Duration::from_secs(10), host.settle())
        .await
        .is_err()
    {
        tracing::warn!("pending work did not settle within 10 s; going on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse("hello"), Ok(Line::Message("hello".into())));
        assert_eq!(parse("  "), Ok(Line::Empty));
        assert_eq!(parse("/drop 408"), Ok(Line::Drop(408)));
        assert_eq!(parse("/sleep 50\r"), Ok(Line::Sleep(50)));
        assert_eq!(parse("/logout"), Ok(Line::Logout));
        assert_eq!(parse("/connect"), Ok(Line::Connect));
        assert_eq!(parse("/scan"), Ok(Line::Scan));
        assert!(parse("/scan now").is_err());
        assert_eq!(parse("/quit"), Ok(Line::Quit));
        assert!(parse("/drop").unwrap_err().contains("close code"));
        assert!(parse("/drop abc").unwrap_err().contains("close code"));
        assert!(parse("/drop 99999").is_err());
        assert!(parse("/sleep -1").is_err());
        assert!(parse("/logout now").is_err());
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
    }
}

//! The mock WhatsApp server of `tests/support` as its own process, for a
//! client that is not in this crate (Baileys, in `tests/peer/`): prints
//! `{"url": …, "cert_root": …}` as its first stdout line, then answers each
//! JSON command line on stdin with one JSON line (see
//! `tests/support/commands.rs`), and exits when stdin closes.
//!
//! `cargo run --example mock_server [-- --personal] [--ref-interval-ms N]`:
//! `--personal` plays a personal phone (no business name: the phone shares
//! its app-state key), `--ref-interval-ms` sends a fresh `pair-device`
//! that often.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use support::{MockConfig, MockServer};

fn config(args: &[String]) -> Result<MockConfig, String> {
    let mut config = MockConfig::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--personal" => config.business_name = None,
            "--ref-interval-ms" => {
                let ms = args
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or("--ref-interval-ms takes a number")?;
                config.ref_interval = Some(Duration::from_millis(ms));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(config)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mock_server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock_server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let server = MockServer::start_with(config).await;
        let mut out = tokio::io::stdout();
        let hello = serde_json::json!({
            "url": server.url(),
            "cert_root": hex::encode(server.cert_root()),
        });
        let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
        let frame = |line: String| {
            let mut line = line.into_bytes();
            line.push(b'\n');
            line
        };
        if out.write_all(&frame(hello.to_string())).await.is_err() {
            return;
        }
        let _ = out.flush().await;
        // One command at a time, in order: each answer follows its line.
        while let Ok(Some(raw)) = lines.next_segment().await {
            let answer = match std::str::from_utf8(&raw) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => support::commands::run_line(&server, line.trim()).await,
                Err(e) => serde_json::json!({ "ok": false, "error": format!("not UTF-8: {e}") })
                    .to_string(),
            };
            if out.write_all(&frame(answer)).await.is_err() || out.flush().await.is_err() {
                return;
            }
        }
    });
    std::process::ExitCode::SUCCESS
}

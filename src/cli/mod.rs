//! Subcommands. Only ones that work are listed.

mod account;
mod check;
mod console;
mod run;
mod status;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use moonwire::config::{Config, LogFormat, Overrides};
use moonwire::host::HostSettings;
use moonwire::lifecycle::Settings;
use moonwire::script::EngineConfig;

#[derive(Debug, Parser)]
#[command(
    name = "moonwire",
    version,
    about = "A personal bot host for WhatsApp, scripted in Lua"
)]
pub struct Cli {
    /// Config file (default: ./moonwire.toml if present) [env: MOONWIRE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where moonwire.db lives [env: MOONWIRE_DATA_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log level or filter, e.g. "debug" [env: MOONWIRE_LOG]
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    /// First reconnect delay ceiling [env: MOONWIRE_RECONNECT_BASE_MS]
    #[arg(long, global = true, value_name = "MS")]
    reconnect_base_ms: Option<u64>,
    /// Longest reconnect delay [env: MOONWIRE_RECONNECT_CAP_MS]
    #[arg(long, global = true, value_name = "MS")]
    reconnect_cap_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat with your scripts on stdin/stdout over a simulated connection
    Console {
        /// Scripts folder [env: MOONWIRE_SCRIPTS]
        #[arg(long, value_name = "DIR")]
        scripts: Option<PathBuf>,
    },
    /// Run every configured instance, the scripts, the API and webhooks until Ctrl-C/SIGTERM
    Run {
        /// Scripts folder [env: MOONWIRE_SCRIPTS]
        #[arg(long, value_name = "DIR")]
        scripts: Option<PathBuf>,
    },
    /// Pair an instance: show the QR code (or a pairing code with --phone) until paired
    Pair {
        /// Which configured instance (default: the only one)
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// Pair with an 8-character code for this phone number instead of a QR
        #[arg(long, value_name = "NUMBER")]
        phone: Option<String>,
    },
    /// Log an instance out: unlink it on the server and delete its keys
    Logout {
        /// Which configured instance (default: the only one)
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// Load scripts in a dry run and report problems as path:line: message
    Check {
        /// Script files or folders (default: the scripts folder)
        paths: Vec<PathBuf>,
    },
    /// Show every instance's connection state
    Status {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let scripts = match &cli.command {
        Command::Console { scripts } | Command::Run { scripts } => scripts.clone(),
        Command::Status { .. }
        | Command::Check { .. }
        | Command::Pair { .. }
        | Command::Logout { .. } => None,
    };
    let overrides = Overrides {
        config: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        scripts,
        reconnect_base_ms: cli.reconnect_base_ms,
        reconnect_cap_ms: cli.reconnect_cap_ms,
        log: cli.log.clone(),
    };
    // Config errors stop us before the database is touched.
    let config = Config::load(&overrides)?;
    init_logging(&config)?;
    match cli.command {
        Command::Console { .. } => console::run(&config),
        Command::Run { .. } => run::run(&config),
        Command::Pair { instance, phone } => account::pair(&config, instance, phone),
        Command::Logout { instance } => account::logout(&config, instance),
        Command::Status { json } => status::run(&config, json),
        Command::Check { paths } => check::run(&config, paths),
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log filter {:?}", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match config.log.format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// The host's knobs from the config.
pub fn host_settings(config: &Config) -> HostSettings {
    let r = &config.reconnect;
    HostSettings {
        reconnect: Settings {
            base_ms: r.base_ms,
            cap_ms: r.cap_ms,
            stable_ms: r.stable_ms,
            max_per_minute: r.max_per_minute,
            ..Settings::default()
        },
        hook_timeout: std::time::Duration::from_millis(config.script.hook_timeout_ms),
        ..HostSettings::default()
    }
}

pub fn engine_config(config: &Config) -> EngineConfig {
    let s = &config.script;
    EngineConfig {
        dir: config.scripts.clone(),
        handler_deadline: std::time::Duration::from_millis(s.handler_deadline_ms),
        memory_limit: (s.memory_limit_mb as usize).saturating_mul(1024 * 1024),
        command_prefix: s.command_prefix.clone(),
        max_waiting: s.max_waiting as usize,
        workers: s.workers.unwrap_or(0) as usize,
        zone: s.timezone.as_deref().and_then(|tz| {
            // Checked when the config was read; this cannot fail.
            moonwire::automation::cron::Zone::named(tz)
                .inspect_err(|e| tracing::warn!("[script] timezone: {e}"))
                .ok()
        }),
        http: moonwire::automation::http::HttpPolicy::from_config(&s.http),
        ..EngineConfig::default()
    }
    .with_hook_timeout(std::time::Duration::from_millis(s.hook_timeout_ms))
}

/// The async runtime the long-running commands use.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Shows a pairing code on stdout: a QR drawn in the terminal, or the
/// 8-character code to type on the phone.
pub fn show_code(instance: &str, code: &str, kind: &str) {
    if kind == "pair_code" {
        println!(
            "[{instance}] on your phone: Linked devices > Link with phone number, then enter {code}"
        );
        return;
    }
    match terminal::qr(code) {
        Ok(art) => println!("[{instance}] scan with WhatsApp > Linked devices:\n{art}"),
        Err(e) => println!("[{instance}] {e}; the code is {code}"),
    }
}

/// Shows every pairing code the host announces, as it comes.
pub fn show_codes(bus: &moonwire::host::EventBus) {
    bus.observe(|ev| {
        if let moonwire::host::HostEvent::Qr {
            instance,
            code,
            kind,
            ..
        } = ev
        {
            show_code(instance, code, kind);
        }
    });
}

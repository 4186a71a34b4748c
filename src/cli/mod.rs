//! Subcommands. Only ones that work are listed.

mod account;
mod check;
mod console;
mod logging;
mod run;
mod status;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use moonwire::config::{Config, ConfigError, ENV_LOG, ENV_SCRIPTS, Overrides};
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
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from.
#[derive(Debug, Args)]
struct ConfigArg {
    /// Config file (default: ./moonwire.toml if present) [env: MOONWIRE_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DataDirArg {
    /// Where moonwire.db lives [env: MOONWIRE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LogArg {
    /// Log level or filter, e.g. "debug" [env: MOONWIRE_LOG]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

/// For the commands that keep connections up.
#[derive(Debug, Args)]
struct ReconnectArgs {
    /// First reconnect delay ceiling [env: MOONWIRE_RECONNECT_BASE_MS]
    #[arg(long, value_name = "MS")]
    reconnect_base_ms: Option<u64>,
    /// Longest reconnect delay [env: MOONWIRE_RECONNECT_CAP_MS]
    #[arg(long, value_name = "MS")]
    reconnect_cap_ms: Option<u64>,
}

/// Everything a command that runs instances reads.
#[derive(Debug, Args)]
struct HostArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    log: LogArg,
    #[command(flatten)]
    reconnect: ReconnectArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat with your scripts on stdin/stdout over a simulated connection
    Console {
        #[command(flatten)]
        host: HostArgs,
        /// Scripts folder [env: MOONWIRE_SCRIPTS]
        #[arg(long, value_name = "DIR")]
        scripts: Option<PathBuf>,
        /// A new simulated account is not paired, and pairing waits for
        /// `/scan`, so the QR and `on_qr` can be tried
        #[arg(long)]
        manual_scan: bool,
    },
    /// Run every configured instance, the scripts, the API and webhooks until Ctrl-C/SIGTERM
    Run {
        #[command(flatten)]
        host: HostArgs,
        /// Scripts folder [env: MOONWIRE_SCRIPTS]
        #[arg(long, value_name = "DIR")]
        scripts: Option<PathBuf>,
    },
    /// Pair an instance: show the QR code (or a pairing code with --phone) until paired
    Pair {
        #[command(flatten)]
        host: HostArgs,
        /// Which configured instance (default: the only one)
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// Pair with an 8-character code for this phone number instead of a QR
        #[arg(long, value_name = "NUMBER")]
        phone: Option<String>,
    },
    /// Log an instance out: unlink it on the server and delete its keys
    Logout {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        data_dir: DataDirArg,
        #[command(flatten)]
        log: LogArg,
        /// Which configured instance (default: the only one)
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// Load scripts in a dry run and report problems as path:line: message
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArg,
        /// Script files or folders (default: the scripts folder)
        paths: Vec<PathBuf>,
    },
    /// Show every instance's connection state
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// The flags that feed the configuration; those a command does not
    /// take stay unset.
    fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        let host = |o: &mut Overrides, h: &HostArgs| {
            o.config = h.config.config.clone();
            o.data_dir = h.data_dir.data_dir.clone();
            o.log = h.log.log.clone();
            o.reconnect_base_ms = h.reconnect.reconnect_base_ms;
            o.reconnect_cap_ms = h.reconnect.reconnect_cap_ms;
        };
        match self {
            Command::Console {
                host: h, scripts, ..
            }
            | Command::Run { host: h, scripts } => {
                host(&mut o, h);
                o.scripts = scripts.clone();
            }
            Command::Pair { host: h, .. } => host(&mut o, h),
            Command::Logout {
                config,
                data_dir,
                log,
                ..
            } => {
                o.config = config.config.clone();
                o.data_dir = data_dir.data_dir.clone();
                o.log = log.log.clone();
            }
            Command::Check { config, log, .. } => {
                o.config = config.config.clone();
                o.log = log.log.clone();
            }
            Command::Status {
                config, data_dir, ..
            } => {
                o.config = config.config.clone();
                o.data_dir = data_dir.data_dir.clone();
            }
        }
        o
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = cli.command.overrides();
    // Config errors stop us before the database is touched.
    let mut config = Config::load(&overrides)?;
    let console = matches!(cli.command, Command::Console { .. });
    if console && overrides.log.is_none() && std::env::var_os(ENV_LOG).is_none() {
        // Log lines would interleave with the chat: only what needs a look.
        config.log.level = "warn".into();
    }
    if matches!(cli.command, Command::Console { .. } | Command::Run { .. }) {
        check_scripts_folder(&config, &overrides)?;
    }
    logging::init(&config)?;
    match cli.command {
        Command::Console {
            manual_scan,
            scripts,
            ..
        } => console::run(&config, manual_scan, scripts.is_some()),
        Command::Run { .. } => run::run(&config),
        Command::Pair {
            instance, phone, ..
        } => account::pair(&config, instance, phone),
        Command::Logout { instance, .. } => account::logout(&config, instance),
        Command::Status { json, .. } => status::run(&config, json),
        Command::Check { paths, .. } => check::run(&config, paths),
    }
}

/// A scripts folder named on the command line or in the environment must
/// exist: a typo would otherwise run the bot without its scripts, quietly.
fn check_scripts_folder(config: &Config, overrides: &Overrides) -> Result<(), ConfigError> {
    if config.scripts.is_dir() {
        return Ok(());
    }
    let message = format!(
        "{}: no such folder (create it, or fix the path)",
        config.scripts.display()
    );
    if overrides.scripts.is_some() {
        return Err(ConfigError::Flag {
            flag: moonwire::config::FLAG_SCRIPTS.into(),
            message,
        });
    }
    if std::env::var_os(ENV_SCRIPTS).is_some() {
        return Err(ConfigError::Env {
            var: ENV_SCRIPTS.into(),
            message,
        });
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
            factor: r.factor,
            stable_ms: r.stable_ms,
            max_per_minute: r.max_per_minute,
            flap_closes: r.flap_closes,
            flap_window_ms: r.flap_window_ms,
        },
        hook_timeout: std::time::Duration::from_millis(config.script.hook_timeout_ms),
        retention: moonwire::host::Retention {
            keep_days: config.store.inbox_keep_days,
            keep_rows: config.store.inbox_keep_rows,
        },
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
        media_dir: config.data_dir.join("media"),
        max_media: s.max_media_mb.saturating_mul(1024 * 1024),
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

//! moonwire's configuration: defaults, overlaid by a TOML file, then the
//! environment, then command-line flags (later layers win).
//!
//! Every error names where the bad value came from (file and line, environment
//! variable, or flag) so that an operator can fix it without guessing.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod env;
mod file;
#[cfg(test)]
mod tests;

pub use env::valid_instance_name;
use env::*;
use file::*;

/// Looked for in the working directory when no file is named explicitly.
pub const DEFAULT_FILE_NAME: &str = "moonwire.toml";
/// The database file inside `data_dir`.
pub const DB_FILE_NAME: &str = "moonwire.db";
/// Events a webhook may subscribe to.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "state",
    "qr",
    "message",
    "script_error",
    "send_failed",
    "group",
];
/// Plain log levels accepted for `log.level`.
pub const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

pub const ENV_CONFIG: &str = "MOONWIRE_CONFIG";
pub const ENV_DATA_DIR: &str = "MOONWIRE_DATA_DIR";
pub const ENV_SCRIPTS: &str = "MOONWIRE_SCRIPTS";
pub const ENV_RECONNECT_BASE_MS: &str = "MOONWIRE_RECONNECT_BASE_MS";
pub const ENV_RECONNECT_CAP_MS: &str = "MOONWIRE_RECONNECT_CAP_MS";
pub const ENV_API_LISTEN: &str = "MOONWIRE_API_LISTEN";
pub const ENV_API_KEY: &str = "MOONWIRE_API_KEY";
pub const ENV_LOG: &str = "MOONWIRE_LOG";

/// Flag names used in error messages for [`Overrides`] values.
pub const FLAG_CONFIG: &str = "--config";
pub const FLAG_DATA_DIR: &str = "--data-dir";
pub const FLAG_SCRIPTS: &str = "--scripts";
pub const FLAG_RECONNECT_BASE_MS: &str = "--reconnect-base-ms";
pub const FLAG_RECONNECT_CAP_MS: &str = "--reconnect-cap-ms";
pub const FLAG_LOG: &str = "--log";

const DEFAULT_DATA_DIR: &str = "./data";
const DEFAULT_SCRIPTS: &str = "./scripts";
const DEFAULT_WHATSAPP_URL: &str = "wss://web.whatsapp.com/ws/chat";
const DEFAULT_API_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
const MAX_MEMORY_LIMIT_MB: u64 = 4096;
/// WhatsApp's own limit for a document is 2 GB.
const MAX_MEDIA_MB: u64 = 2048;
const MAX_WORKERS: u64 = 256;
const MAX_HTTP_BODY_MB: u64 = 1024;
const MAX_HTTP_IN_FLIGHT: usize = 1024;
const MAX_INBOX_KEEP_DAYS: u64 = 3650;
const MAX_INBOX_KEEP_ROWS: u64 = 100_000_000;

/// The fully resolved configuration.
///
/// Relative `data_dir`/`scripts` from a file are resolved against the file's
/// directory (so a config works wherever it is started from); from the
/// environment, flags or defaults they are resolved against the working
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub scripts: PathBuf,
    /// Never empty.
    pub instances: Vec<InstanceConfig>,
    pub reconnect: ReconnectConfig,
    pub script: ScriptConfig,
    pub store: StoreConfig,
    pub whatsapp: WhatsappConfig,
    /// `None`: no API server.
    pub api: Option<ApiConfig>,
    pub webhooks: Vec<WebhookConfig>,
    pub log: LogConfig,
    /// The file that was read, if any.
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            scripts: PathBuf::from(DEFAULT_SCRIPTS),
            instances: vec![InstanceConfig::default()],
            reconnect: ReconnectConfig::default(),
            script: ScriptConfig::default(),
            store: StoreConfig::default(),
            whatsapp: WhatsappConfig::default(),
            api: None,
            webhooks: Vec::new(),
            log: LogConfig::default(),
            source: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChannelKind {
    #[default]
    Whatsapp,
    /// A simulated connection, for trying scripts without a phone.
    Console,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Console => "console",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "whatsapp" => Some(ChannelKind::Whatsapp),
            "console" => Some(ChannelKind::Console),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub channel: ChannelKind,
    /// Digits only, country code first; pairs with a code instead of a QR.
    pub phone: Option<String>,
    /// This instance's own scripts folder (default: the shared one).
    pub scripts: Option<PathBuf>,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            name: "default".to_string(),
            channel: ChannelKind::Whatsapp,
            phone: None,
            scripts: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectConfig {
    pub base_ms: u64,
    /// Always >= `base_ms`.
    pub cap_ms: u64,
    /// Each failure multiplies the backoff's ceiling by this (1..=10).
    pub factor: u32,
    /// How long a connection must stay up before the backoff resets.
    pub stable_ms: u64,
    pub max_per_minute: u32,
    /// More than this many closes within `flap_window_ms` wait the cap.
    pub flap_closes: u32,
    pub flap_window_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        let m = crate::lifecycle::Settings::default();
        ReconnectConfig {
            base_ms: m.base_ms,
            cap_ms: m.cap_ms,
            factor: m.factor,
            stable_ms: m.stable_ms,
            max_per_minute: m.max_per_minute,
            flap_closes: m.flap_closes,
            flap_window_ms: m.flap_window_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptConfig {
    pub hook_timeout_ms: u64,
    pub memory_limit_mb: u64,
    pub command_prefix: String,
    /// A handler's whole life, waits included.
    pub handler_deadline_ms: u64,
    /// Engine worker threads; `None`: one per core.
    pub workers: Option<u64>,
    /// Handlers waiting at once per instance.
    pub max_waiting: u64,
    /// The largest media file `m:download()` fetches and a send reads.
    pub max_media_mb: u64,
    /// An IANA time zone name for `bot.cron`, checked against the time
    /// zone database; `None`: the system's zone.
    pub timezone: Option<String>,
    pub http: ScriptHttpConfig,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        ScriptConfig {
            hook_timeout_ms: 1000,
            memory_limit_mb: 64,
            command_prefix: "!".to_string(),
            handler_deadline_ms: 60_000,
            workers: None,
            max_waiting: 256,
            max_media_mb: 64,
            timezone: None,
            http: ScriptHttpConfig::default(),
        }
    }
}

/// `[script.http]`: the limits of `bot.http`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptHttpConfig {
    /// A request's default timeout and the longest a script may ask for.
    pub timeout_ms: u64,
    pub max_body_mb: u64,
    /// Requests of one instance on the wire at once; more wait their turn.
    pub max_in_flight: usize,
    /// Non-public hosts scripts may reach anyway.
    pub allow: crate::automation::net::AllowList,
}

impl Default for ScriptHttpConfig {
    fn default() -> Self {
        ScriptHttpConfig {
            timeout_ms: 10_000,
            max_body_mb: 8,
            max_in_flight: 4,
            allow: Default::default(),
        }
    }
}

/// `[store]`: how long the inbox keeps messages (for telling a redelivery
/// from a new message) and the outbox finished sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub inbox_keep_days: u64,
    /// Per instance.
    pub inbox_keep_rows: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            inbox_keep_days: 7,
            inbox_keep_rows: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsappConfig {
    pub url: String,
    /// Ping a server that has been quiet this long.
    pub ping_interval_ms: u64,
    /// A ping unanswered this long means the socket is dead.
    pub ping_timeout_ms: u64,
    /// An attempt with no login and no pairing code this long is given up.
    pub login_timeout_ms: u64,
    /// The web client version to announce; `None`: ask WhatsApp's site for
    /// the current one before each attempt.
    pub version: Option<(u32, u32, u32)>,
}

impl Default for WhatsappConfig {
    fn default() -> Self {
        WhatsappConfig {
            url: DEFAULT_WHATSAPP_URL.to_string(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 10_000,
            login_timeout_ms: 30_000,
            version: None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// `None`: no authentication.
    pub key: Option<String>,
    pub metrics_public: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_API_LISTEN,
            key: None,
            metrics_public: false,
        }
    }
}

// Hand-written so that logging the config never leaks the key.
impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("metrics_public", &self.metrics_public)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// A non-empty subset of [`WEBHOOK_EVENTS`]; all of them when the file
    /// leaves `events` out.
    pub events: Vec<String>,
    pub secret: Option<String>,
}

// Hand-written so that logging the config never leaks the secret.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A plain level from the file; `MOONWIRE_LOG`/`--log` may also give an
    /// EnvFilter directive string such as `info,moonwire=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Values given on the command line; None = not given.
#[derive(Default, Debug, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub scripts: Option<PathBuf>,
    pub reconnect_base_ms: Option<u64>,
    pub reconnect_cap_ms: Option<u64>,
    pub log: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: config file not found (given by {given_by})", path.display())]
    NotFound { path: PathBuf, given_by: String },
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bad key or value in a config file.
    #[error("{}", file_message(path, *line, key, message))]
    File {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
    /// Only reachable if the built-in defaults were inconsistent.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn file_message(path: &Path, line: Option<usize>, key: &str, message: &str) -> String {
    let mut out = path.display().to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    if !key.is_empty() {
        out.push_str(": ");
        out.push_str(key);
    }
    out.push_str(": ");
    out.push_str(message);
    out
}

impl Config {
    /// Reads the real process environment.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("MOONWIRE_"))
            .collect();
        let cwd = std::env::current_dir().map_err(|e| ConfigError::Read {
            path: PathBuf::from("."),
            source: e,
        })?;
        Config::load_from(overrides, &env, &cwd)
    }

    /// Testable core: `env` gives the environment variables, `cwd` is where
    /// ./moonwire.toml is looked for and what relative env/flag paths are
    /// resolved against.
    pub fn load_from(
        overrides: &Overrides,
        env: &HashMap<String, String>,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let explicit = match &overrides.config {
            Some(p) => Some((non_empty_path(p, Source::Flag(FLAG_CONFIG))?, FLAG_CONFIG)),
            None => match env.get(ENV_CONFIG) {
                Some(v) => Some((non_empty_env_path(ENV_CONFIG, v)?, ENV_CONFIG)),
                None => None,
            },
        };

        let file = match explicit {
            Some((path, given_by)) => {
                let path = cwd.join(path);
                match std::fs::read_to_string(&path) {
                    Ok(text) => Some((path, text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ConfigError::NotFound {
                            path,
                            given_by: given_by.to_string(),
                        });
                    }
                    Err(e) => return Err(ConfigError::Read { path, source: e }),
                }
            }
            None => {
                let path = cwd.join(DEFAULT_FILE_NAME);
                if path.exists() {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => Some((path, text)),
                        Err(e) => return Err(ConfigError::Read { path, source: e }),
                    }
                } else {
                    None
                }
            }
        };

        let mut layered = match &file {
            Some((path, text)) => parse_file(text, path)?,
            None => Layered::default(),
        };
        if !layered.data_dir_set {
            layered.config.data_dir = resolve(cwd, Path::new(DEFAULT_DATA_DIR));
        }
        if !layered.scripts_set {
            layered.config.scripts = resolve(cwd, Path::new(DEFAULT_SCRIPTS));
        }

        apply_env(&mut layered, env, cwd)?;
        apply_overrides(&mut layered, overrides, cwd)?;
        check_backoff(&layered)?;
        Ok(layered.config)
    }

    /// Parse a file's text only (defaults filled, validated); `origin` is used
    /// in error messages and relative paths are resolved against its directory.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let layered = parse_file(text, origin)?;
        check_backoff(&layered)?;
        Ok(layered.config)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE_NAME)
    }
}

// ---------------------------------------------------------------------------
// Where a value came from, so that cross-field errors can blame the right layer.

#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    Default,
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    Env(&'static str),
    Flag(&'static str),
}

impl Source {
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let message = message.into();
        match self {
            Source::Default => ConfigError::Invalid {
                key: key.to_string(),
                message,
            },
            Source::File { path, line } => ConfigError::File {
                path: path.clone(),
                line: *line,
                key: key.to_string(),
                message,
            },
            Source::Env(var) => ConfigError::Env {
                var: (*var).to_string(),
                message,
            },
            Source::Flag(flag) => ConfigError::Flag {
                flag: (*flag).to_string(),
                message,
            },
        }
    }

    /// Precedence of the layer, to blame the most specific one.
    fn rank(&self) -> u8 {
        match self {
            Source::Default => 0,
            Source::File { .. } => 1,
            Source::Env(_) => 2,
            Source::Flag(_) => 3,
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Default => "default".to_string(),
            Source::File {
                path,
                line: Some(line),
            } => format!("{}:{line}", path.display()),
            Source::File { path, line: None } => path.display().to_string(),
            Source::Env(var) => (*var).to_string(),
            Source::Flag(flag) => (*flag).to_string(),
        }
    }
}

#[derive(Debug, Default)]
struct Layered {
    config: Config,
    data_dir_set: bool,
    scripts_set: bool,
    base_src: Source,
    cap_src: Source,
}

fn check_backoff(l: &Layered) -> Result<(), ConfigError> {
    let r = &l.config.reconnect;
    if r.cap_ms >= r.base_ms {
        return Ok(());
    }
    // Blame whichever of the two was set by the more specific layer.
    let (src, key, msg) = if l.base_src.rank() > l.cap_src.rank() {
        (
            &l.base_src,
            "reconnect.base_ms",
            format!(
                "must not exceed reconnect.cap_ms ({}, from {}), got {}",
                r.cap_ms,
                l.cap_src.describe(),
                r.base_ms
            ),
        )
    } else {
        (
            &l.cap_src,
            "reconnect.cap_ms",
            format!(
                "must be at least reconnect.base_ms ({}, from {}), got {}",
                r.base_ms,
                l.base_src.describe(),
                r.cap_ms
            ),
        )
    };
    Err(src.error(key, msg))
}

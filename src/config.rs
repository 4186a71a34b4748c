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

/// Looked for in the working directory when no file is named explicitly.
pub const DEFAULT_FILE_NAME: &str = "moonwire.toml";
/// The database file inside `data_dir`.
pub const DB_FILE_NAME: &str = "moonwire.db";
/// Events a webhook may subscribe to.
pub const WEBHOOK_EVENTS: [&str; 4] = ["state", "qr", "message", "script_error"];
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
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            name: "default".to_string(),
            channel: ChannelKind::Whatsapp,
            phone: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectConfig {
    pub base_ms: u64,
    /// Always >= `base_ms`.
    pub cap_ms: u64,
    /// How long a connection must stay up before the backoff resets.
    pub stable_ms: u64,
    pub max_per_minute: u32,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            base_ms: 1000,
            cap_ms: 60_000,
            stable_ms: 30_000,
            max_per_minute: 12,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptConfig {
    pub hook_timeout_ms: u64,
    pub memory_limit_mb: u64,
    pub command_prefix: String,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        ScriptConfig {
            hook_timeout_ms: 1000,
            memory_limit_mb: 64,
            command_prefix: "!".to_string(),
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

// ---------------------------------------------------------------------------
// The file layer.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    data_dir: Option<Spanned<String>>,
    scripts: Option<Spanned<String>>,
    instance: Option<Spanned<Vec<RawInstance>>>,
    reconnect: Option<RawReconnect>,
    script: Option<RawScript>,
    whatsapp: Option<RawWhatsapp>,
    api: Option<RawApi>,
    webhook: Option<Vec<RawWebhook>>,
    log: Option<RawLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    phone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    base_ms: Option<Spanned<u64>>,
    cap_ms: Option<Spanned<u64>>,
    stable_ms: Option<Spanned<u64>>,
    max_per_minute: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    hook_timeout_ms: Option<Spanned<u64>>,
    memory_limit_mb: Option<Spanned<u64>>,
    command_prefix: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhatsapp {
    url: Option<Spanned<String>>,
    ping_interval_ms: Option<Spanned<u64>>,
    ping_timeout_ms: Option<Spanned<u64>>,
    login_timeout_ms: Option<Spanned<u64>>,
    version: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    metrics_public: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<Spanned<String>>,
    events: Option<Spanned<Vec<Spanned<String>>>>,
    secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

/// Builds errors pointing into one file's text.
struct FileCtx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl FileCtx<'_> {
    fn src_at(&self, offset: Option<usize>) -> Source {
        Source::File {
            path: self.path.to_path_buf(),
            line: offset.map(|o| line_of(self.text, o)),
        }
    }

    fn src<T>(&self, v: &Spanned<T>) -> Source {
        self.src_at(Some(v.span().start))
    }

    fn err<T>(&self, v: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.src(v).error(key, message)
    }

    fn err_line(&self, line: Option<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::File {
            path: self.path.to_path_buf(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn positive<T: Copy + PartialEq + Default>(
        &self,
        v: &Spanned<T>,
        key: &str,
    ) -> Result<T, ConfigError> {
        let value = *v.get_ref();
        if value == T::default() {
            return Err(self.err(v, key, "must be at least 1"));
        }
        Ok(value)
    }
}

fn parse_file(text: &str, origin: &Path) -> Result<Layered, ConfigError> {
    let ctx = FileCtx { text, path: origin };
    let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(&ctx, &e))?;
    let base_dir = origin.parent().unwrap_or(Path::new(""));

    let mut l = Layered::default();
    l.config.source = Some(origin.to_path_buf());

    if let Some(v) = &raw.data_dir {
        l.config.data_dir = resolve(base_dir, Path::new(file_path(&ctx, v, "data_dir")?));
        l.data_dir_set = true;
    }
    if let Some(v) = &raw.scripts {
        l.config.scripts = resolve(base_dir, Path::new(file_path(&ctx, v, "scripts")?));
        l.scripts_set = true;
    }

    if let Some(list) = &raw.instance {
        l.config.instances = parse_instances(&ctx, list)?;
    }

    if let Some(r) = &raw.reconnect {
        let c = &mut l.config.reconnect;
        if let Some(v) = &r.base_ms {
            c.base_ms = ctx.positive(v, "reconnect.base_ms")?;
            l.base_src = ctx.src(v);
        }
        if let Some(v) = &r.cap_ms {
            c.cap_ms = ctx.positive(v, "reconnect.cap_ms")?;
            l.cap_src = ctx.src(v);
        }
        if let Some(v) = &r.stable_ms {
            c.stable_ms = ctx.positive(v, "reconnect.stable_ms")?;
        }
        if let Some(v) = &r.max_per_minute {
            c.max_per_minute = ctx.positive(v, "reconnect.max_per_minute")?;
        }
    }

    if let Some(s) = &raw.script {
        let c = &mut l.config.script;
        if let Some(v) = &s.hook_timeout_ms {
            c.hook_timeout_ms = ctx.positive(v, "script.hook_timeout_ms")?;
        }
        if let Some(v) = &s.memory_limit_mb {
            let mb = *v.get_ref();
            if mb == 0 || mb > MAX_MEMORY_LIMIT_MB {
                return Err(ctx.err(
                    v,
                    "script.memory_limit_mb",
                    format!("must be between 1 and {MAX_MEMORY_LIMIT_MB}, got {mb}"),
                ));
            }
            c.memory_limit_mb = mb;
        }
        if let Some(v) = &s.command_prefix {
            check_command_prefix(v.get_ref())
                .map_err(|m| ctx.err(v, "script.command_prefix", m))?;
            c.command_prefix = v.get_ref().clone();
        }
    }

    if let Some(w) = &raw.whatsapp {
        if let Some(v) = &w.url {
            let url = v.get_ref();
            if !has_scheme_and_rest(url, &["ws://", "wss://"]) {
                return Err(ctx.err(
                    v,
                    "whatsapp.url",
                    format!("must be a ws:// or wss:// URL, got {url:?}"),
                ));
            }
            l.config.whatsapp.url = url.clone();
        }
        if let Some(v) = &w.ping_interval_ms {
            l.config.whatsapp.ping_interval_ms = ctx.positive(v, "whatsapp.ping_interval_ms")?;
        }
        if let Some(v) = &w.ping_timeout_ms {
            l.config.whatsapp.ping_timeout_ms = ctx.positive(v, "whatsapp.ping_timeout_ms")?;
        }
        if let Some(v) = &w.login_timeout_ms {
            l.config.whatsapp.login_timeout_ms = ctx.positive(v, "whatsapp.login_timeout_ms")?;
        }
        if let Some(v) = &w.version {
            l.config.whatsapp.version =
                Some(parse_version(v.get_ref()).map_err(|m| ctx.err(v, "whatsapp.version", m))?);
        }
    }

    if let Some(a) = &raw.api {
        let mut api = ApiConfig::default();
        if let Some(v) = &a.listen {
            api.listen = parse_socket_addr(v.get_ref()).map_err(|m| ctx.err(v, "api.listen", m))?;
        }
        if let Some(v) = &a.key {
            if v.get_ref().is_empty() {
                return Err(ctx.err(
                    v,
                    "api.key",
                    "must not be empty (leave it out to run without a key)",
                ));
            }
            api.key = Some(v.get_ref().clone());
        }
        if let Some(b) = a.metrics_public {
            api.metrics_public = b;
        }
        l.config.api = Some(api);
    }

    if let Some(hooks) = &raw.webhook {
        for (i, h) in hooks.iter().enumerate() {
            l.config.webhooks.push(parse_webhook(&ctx, i, h)?);
        }
    }

    if let Some(lg) = &raw.log {
        if let Some(v) = &lg.level {
            let level = v.get_ref().to_ascii_lowercase();
            if !LOG_LEVELS.contains(&level.as_str()) {
                return Err(ctx.err(
                    v,
                    "log.level",
                    format!(
                        "must be one of {}, got {:?}",
                        LOG_LEVELS.join("/"),
                        v.get_ref()
                    ),
                ));
            }
            l.config.log.level = level;
        }
        if let Some(v) = &lg.format {
            l.config.log.format = LogFormat::parse(v.get_ref()).ok_or_else(|| {
                ctx.err(
                    v,
                    "log.format",
                    format!("must be \"text\" or \"json\", got {:?}", v.get_ref()),
                )
            })?;
        }
    }

    Ok(l)
}

fn file_path<'a>(
    ctx: &FileCtx<'_>,
    v: &'a Spanned<String>,
    key: &str,
) -> Result<&'a str, ConfigError> {
    if v.get_ref().is_empty() {
        return Err(ctx.err(v, key, "must not be empty"));
    }
    Ok(v.get_ref())
}

fn parse_instances(
    ctx: &FileCtx<'_>,
    list: &Spanned<Vec<RawInstance>>,
) -> Result<Vec<InstanceConfig>, ConfigError> {
    if list.get_ref().is_empty() {
        return Err(ctx.err(
            list,
            "instance",
            "must list at least one instance (leave it out for the default)",
        ));
    }
    let mut out: Vec<InstanceConfig> = Vec::new();
    let mut seen: HashMap<String, Option<usize>> = HashMap::new();
    for (i, raw) in list.get_ref().iter().enumerate() {
        let key = |field: &str| format!("instance[{i}].{field}");
        let Some(name_v) = &raw.name else {
            return Err(ctx.err_line(
                array_table_line(ctx.text, "instance", i),
                &key("name"),
                "required",
            ));
        };
        let name = name_v.get_ref();
        if !valid_instance_name(name) {
            return Err(ctx.err(
                name_v,
                &key("name"),
                format!(
                    "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit, got {name:?}"
                ),
            ));
        }
        let line = Some(line_of(ctx.text, name_v.span().start));
        if let Some(first) = seen.insert(name.clone(), line) {
            let also = first
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            return Err(ctx.err(
                name_v,
                &key("name"),
                format!("duplicate instance name {name:?}{also}"),
            ));
        }
        let channel = match &raw.channel {
            Some(v) => ChannelKind::parse(v.get_ref()).ok_or_else(|| {
                ctx.err(
                    v,
                    &key("channel"),
                    format!("must be \"whatsapp\" or \"console\", got {:?}", v.get_ref()),
                )
            })?,
            None => ChannelKind::Whatsapp,
        };
        let phone = match &raw.phone {
            Some(v) => {
                check_phone(v.get_ref()).map_err(|m| ctx.err(v, &key("phone"), m))?;
                Some(v.get_ref().clone())
            }
            None => None,
        };
        out.push(InstanceConfig {
            name: name.clone(),
            channel,
            phone,
        });
    }
    Ok(out)
}

fn parse_webhook(
    ctx: &FileCtx<'_>,
    i: usize,
    h: &RawWebhook,
) -> Result<WebhookConfig, ConfigError> {
    let key = |field: &str| format!("webhook[{i}].{field}");
    let Some(url_v) = &h.url else {
        return Err(ctx.err_line(
            array_table_line(ctx.text, "webhook", i),
            &key("url"),
            "required",
        ));
    };
    let url = url_v.get_ref();
    if !has_scheme_and_rest(url, &["http://", "https://"]) {
        return Err(ctx.err(
            url_v,
            &key("url"),
            format!("must be an http:// or https:// URL, got {url:?}"),
        ));
    }
    let events = match &h.events {
        None => WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect(),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(ctx.err(
                    list,
                    &key("events"),
                    format!(
                        "must name at least one of {} (leave it out for all)",
                        WEBHOOK_EVENTS.join(", ")
                    ),
                ));
            }
            let mut events: Vec<String> = Vec::new();
            for ev in list.get_ref() {
                let name = ev.get_ref();
                if !WEBHOOK_EVENTS.contains(&name.as_str()) {
                    return Err(ctx.err(
                        ev,
                        &key("events"),
                        format!(
                            "unknown event {name:?}, expected one of {}",
                            WEBHOOK_EVENTS.join(", ")
                        ),
                    ));
                }
                if events.contains(name) {
                    return Err(ctx.err(ev, &key("events"), format!("{name:?} listed twice")));
                }
                events.push(name.clone());
            }
            events
        }
    };
    let secret = match &h.secret {
        Some(v) if v.get_ref().is_empty() => {
            return Err(ctx.err(
                v,
                &key("secret"),
                "must not be empty (leave it out to send unsigned)",
            ));
        }
        Some(v) => Some(v.get_ref().clone()),
        None => None,
    };
    Ok(WebhookConfig {
        url: url.clone(),
        events,
        secret,
    })
}

/// Turns a toml error into one naming the file, line and dotted key.
fn toml_error(ctx: &FileCtx<'_>, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return ctx.err_line(None, "", message);
    };
    let offset = span.start.min(ctx.text.len());
    let mut key = key_at(ctx.text, offset);
    // Inline tables put several keys on one line; the message knows which.
    if let Some(field) = unknown_field_name(&message)
        && key.rsplit('.').next() != Some(field)
    {
        if key.is_empty() {
            key = field.to_string();
        } else {
            key = format!("{key}.{field}");
        }
    }
    ctx.err_line(Some(line_of(ctx.text, offset)), &key, message)
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A best-effort dotted key for the line holding `offset` (the toml crate
/// knows the key but does not expose it).
fn key_at(text: &str, offset: usize) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let idx = (line_of(text, offset) - 1).min(lines.len().saturating_sub(1));
    let mut table = String::new();
    let mut line_key: Option<String> = None;
    let mut header_idx = None;
    // Walk up to the table header; the nearest `key =` on the way is the key
    // (it may be several lines up for a multi-line array).
    for j in (0..=idx).rev() {
        let t = lines[j].trim();
        if t.starts_with('[') {
            header_idx = Some(j);
            table = header_name(t).unwrap_or_default();
            break;
        }
        if line_key.is_none()
            && !t.starts_with('#')
            && let Some(eq) = t.find('=')
        {
            line_key = Some(clean_key(&t[..eq]));
        }
    }
    // Array-of-tables entries are numbered like the errors from validation.
    if let Some(h) = header_idx
        && lines[h].trim().starts_with("[[")
    {
        let n = lines[..h]
            .iter()
            .filter(|l| {
                let t = l.trim();
                t.starts_with("[[") && header_name(t).as_deref() == Some(table.as_str())
            })
            .count();
        table = format!("{table}[{n}]");
    }
    match (table.is_empty(), line_key) {
        (_, None) => table,
        (true, Some(k)) => k,
        (false, Some(k)) => format!("{table}.{k}"),
    }
}

fn header_name(line: &str) -> Option<String> {
    let t = line.trim_start_matches('[');
    let end = t.find(']')?;
    Some(clean_key(&t[..end]))
}

fn clean_key(k: &str) -> String {
    k.split('.')
        .map(|s| s.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// Line of the `i`th `[[name]]` header, for errors about a missing field.
fn array_table_line(text: &str, name: &str, i: usize) -> Option<usize> {
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim();
            t.starts_with("[[") && header_name(t).as_deref() == Some(name)
        })
        .nth(i)
        .map(|(n, _)| n + 1)
}

// ---------------------------------------------------------------------------
// The environment and flag layers.

fn apply_env(
    l: &mut Layered,
    env: &HashMap<String, String>,
    cwd: &Path,
) -> Result<(), ConfigError> {
    if let Some(v) = env.get(ENV_DATA_DIR) {
        l.config.data_dir = resolve(cwd, &non_empty_env_path(ENV_DATA_DIR, v)?);
        l.data_dir_set = true;
    }
    if let Some(v) = env.get(ENV_SCRIPTS) {
        l.config.scripts = resolve(cwd, &non_empty_env_path(ENV_SCRIPTS, v)?);
        l.scripts_set = true;
    }
    if let Some(v) = env.get(ENV_RECONNECT_BASE_MS) {
        let src = Source::Env(ENV_RECONNECT_BASE_MS);
        l.config.reconnect.base_ms = positive_ms(parse_env_ms(ENV_RECONNECT_BASE_MS, v)?, &src)?;
        l.base_src = src;
    }
    if let Some(v) = env.get(ENV_RECONNECT_CAP_MS) {
        let src = Source::Env(ENV_RECONNECT_CAP_MS);
        l.config.reconnect.cap_ms = positive_ms(parse_env_ms(ENV_RECONNECT_CAP_MS, v)?, &src)?;
        l.cap_src = src;
    }
    if let Some(v) = env.get(ENV_API_LISTEN) {
        let listen = parse_socket_addr(v.trim()).map_err(|m| env_err(ENV_API_LISTEN, m))?;
        l.config.api.get_or_insert_with(ApiConfig::default).listen = listen;
    }
    if let Some(v) = env.get(ENV_API_KEY) {
        if v.is_empty() {
            return Err(env_err(ENV_API_KEY, "must not be empty"));
        }
        // A key only makes sense with a server, so it turns the API on.
        l.config.api.get_or_insert_with(ApiConfig::default).key = Some(v.clone());
    }
    if let Some(v) = env.get(ENV_LOG) {
        l.config.log.level = parse_log_directive(v).map_err(|m| env_err(ENV_LOG, m))?;
    }
    Ok(())
}

fn apply_overrides(l: &mut Layered, o: &Overrides, cwd: &Path) -> Result<(), ConfigError> {
    if let Some(p) = &o.data_dir {
        l.config.data_dir = resolve(cwd, &non_empty_path(p, Source::Flag(FLAG_DATA_DIR))?);
        l.data_dir_set = true;
    }
    if let Some(p) = &o.scripts {
        l.config.scripts = resolve(cwd, &non_empty_path(p, Source::Flag(FLAG_SCRIPTS))?);
        l.scripts_set = true;
    }
    if let Some(ms) = o.reconnect_base_ms {
        let src = Source::Flag(FLAG_RECONNECT_BASE_MS);
        l.config.reconnect.base_ms = positive_ms(ms, &src)?;
        l.base_src = src;
    }
    if let Some(ms) = o.reconnect_cap_ms {
        let src = Source::Flag(FLAG_RECONNECT_CAP_MS);
        l.config.reconnect.cap_ms = positive_ms(ms, &src)?;
        l.cap_src = src;
    }
    if let Some(v) = &o.log {
        l.config.log.level = parse_log_directive(v).map_err(|m| ConfigError::Flag {
            flag: FLAG_LOG.to_string(),
            message: m,
        })?;
    }
    Ok(())
}

fn env_err(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.to_string(),
        message: message.into(),
    }
}

fn non_empty_env_path(var: &str, v: &str) -> Result<PathBuf, ConfigError> {
    if v.is_empty() {
        return Err(env_err(var, "must not be empty"));
    }
    Ok(PathBuf::from(v))
}

fn non_empty_path(p: &Path, src: Source) -> Result<PathBuf, ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(src.error("", "must not be empty"));
    }
    Ok(p.to_path_buf())
}

fn parse_env_ms(var: &str, v: &str) -> Result<u64, ConfigError> {
    v.trim().parse::<u64>().map_err(|_| {
        env_err(
            var,
            format!("expected a whole number of milliseconds, got {v:?}"),
        )
    })
}

fn positive_ms(ms: u64, src: &Source) -> Result<u64, ConfigError> {
    if ms == 0 {
        return Err(src.error("", "must be at least 1"));
    }
    Ok(ms)
}

/// Accepts a plain level (normalised to lower case) or an EnvFilter-style
/// directive list. Bare words must be levels, so that a typo such as `debgu`
/// is caught instead of silently becoming a target filter; only the shape is
/// checked here, the logger has the last word.
fn parse_log_directive(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("must not be empty".to_string());
    }
    let lower = v.to_ascii_lowercase();
    if LOG_LEVELS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    let is_level = |s: &str| {
        let s = s.to_ascii_lowercase();
        s == "off" || LOG_LEVELS.contains(&s.as_str())
    };
    let mut directives = Vec::new();
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match d.rfind('=') {
            Some(eq) => {
                let (target, level) = (&d[..eq], &d[eq + 1..]);
                !target.is_empty() && !target.contains(char::is_whitespace) && is_level(level)
            }
            None => is_level(d),
        };
        if !ok {
            return Err(format!(
                "bad directive {d:?}: expected a level ({}/off) or target=level, e.g. \"info,moonwire=debug\"",
                LOG_LEVELS.join("/")
            ));
        }
        directives.push(d);
    }
    if directives.is_empty() {
        return Err(format!("no directives in {v:?}"));
    }
    // EnvFilter does not trim, so drop the spaces people put after commas.
    Ok(directives.join(","))
}

// ---------------------------------------------------------------------------
// Value checks shared by the layers.

/// Lexically joins `p` onto `base` unless it is absolute, dropping `./` so
/// paths read naturally in logs.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let rest: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let joined = base.join(rest);
    if joined.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        joined
    }
}

/// `^[a-z0-9][a-z0-9_-]{0,62}$`, by hand to avoid a regex dependency.
pub fn valid_instance_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    alnum(first) && rest.len() <= 62 && rest.iter().all(|&b| alnum(b) || b == b'_' || b == b'-')
}

fn check_phone(phone: &str) -> Result<(), String> {
    let ok = (6..=15).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 6 to 15 digits with the country code and no '+' or spaces, got {phone:?}"
        ))
    }
}

fn check_command_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_string());
    }
    if prefix.chars().any(char::is_whitespace) {
        return Err(format!("must not contain whitespace, got {prefix:?}"));
    }
    Ok(())
}

/// `"2.3000.1027934701"` → `(2, 3000, 1027934701)`.
fn parse_version(s: &str) -> Result<(u32, u32, u32), String> {
    let bad = || format!("must be three numbers like \"2.3000.1027934701\", got {s:?}");
    let mut parts = s.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c), None) => Ok((a?, b?, c?)),
        _ => Err(bad()),
    }
}

fn has_scheme_and_rest(url: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|s| {
        url.get(..s.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(s))
            && url.len() > s.len()
            && !url.chars().any(char::is_whitespace)
    })
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("expected an address like 127.0.0.1:8080, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn origin() -> &'static Path {
        Path::new("moonwire.toml")
    }

    fn parse(text: &str) -> Config {
        match Config::from_toml_str(text, origin()) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn file_err(text: &str) -> String {
        match Config::from_toml_str(text, origin()) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(o: &Overrides, e: &[(&str, &str)], cwd: &Path) -> Result<Config, ConfigError> {
        Config::load_from(o, &env(e), cwd)
    }

    fn load_err(o: &Overrides, e: &[(&str, &str)], cwd: &Path) -> String {
        match load(o, e, cwd) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_contains(haystack: &str, needles: &[&str]) {
        for n in needles {
            assert!(haystack.contains(n), "{haystack:?} should contain {n:?}");
        }
    }

    const FULL: &str = r#"data_dir = "./state"
scripts = "/opt/moonwire/scripts"

[[instance]]
name = "main"
channel = "whatsapp"
phone = "15551234567"

[[instance]]
name = "sim_1"
channel = "console"

[reconnect]
base_ms = 500
cap_ms = 30000
stable_ms = 10000
max_per_minute = 6

[script]
hook_timeout_ms = 250
memory_limit_mb = 128
command_prefix = "/"

[whatsapp]
url = "ws://127.0.0.1:9000/ws"
ping_interval_ms = 5000
ping_timeout_ms = 2000
login_timeout_ms = 7000
version = "2.3000.1027934701"

[api]
listen = "0.0.0.0:9090"
key = "sekrit"
metrics_public = true

[[webhook]]
url = "https://example.org/hook"
events = ["state", "qr", "message", "script_error"]
secret = "hush"

[[webhook]]
url = "http://localhost/only-qr"
events = ["qr"]

[log]
level = "debug"
format = "json"
"#;

    // ---- defaults -------------------------------------------------------

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.scripts, PathBuf::from("./scripts"));
        assert_eq!(
            c.instances,
            vec![InstanceConfig {
                name: "default".into(),
                channel: ChannelKind::Whatsapp,
                phone: None
            }]
        );
        assert_eq!(
            c.reconnect,
            ReconnectConfig {
                base_ms: 1000,
                cap_ms: 60000,
                stable_ms: 30000,
                max_per_minute: 12
            }
        );
        assert_eq!(c.script.hook_timeout_ms, 1000);
        assert_eq!(c.script.memory_limit_mb, 64);
        assert_eq!(c.script.command_prefix, "!");
        assert_eq!(c.whatsapp.url, "wss://web.whatsapp.com/ws/chat");
        assert_eq!(c.api, None);
        assert!(c.webhooks.is_empty());
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.source, None);
        assert_eq!(c.db_path(), Path::new("./data").join("moonwire.db"));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("");
        assert_eq!(
            c,
            Config {
                source: Some(origin().to_path_buf()),
                ..Config::default()
            }
        );
    }

    #[test]
    fn nothing_anywhere_gives_defaults_under_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&Overrides::default(), &[], dir.path()).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.scripts, dir.path().join("scripts"));
        assert_eq!(c.db_path(), dir.path().join("data").join("moonwire.db"));
        assert_eq!(c.source, None);
        assert_eq!(c.instances, vec![InstanceConfig::default()]);
        assert_eq!(c.reconnect, ReconnectConfig::default());
        assert_eq!(c.api, None);
    }

    // ---- a full file ----------------------------------------------------

    #[test]
    fn full_file_sets_every_key() {
        let c = Config::from_toml_str(FULL, Path::new("/etc/moonwire/moonwire.toml")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/moonwire/state"));
        assert_eq!(c.scripts, PathBuf::from("/opt/moonwire/scripts"));
        assert_eq!(
            c.instances,
            vec![
                InstanceConfig {
                    name: "main".into(),
                    channel: ChannelKind::Whatsapp,
                    phone: Some("15551234567".into())
                },
                InstanceConfig {
                    name: "sim_1".into(),
                    channel: ChannelKind::Console,
                    phone: None
                },
            ]
        );
        assert_eq!(
            c.reconnect,
            ReconnectConfig {
                base_ms: 500,
                cap_ms: 30000,
                stable_ms: 10000,
                max_per_minute: 6
            }
        );
        assert_eq!(
            c.script,
            ScriptConfig {
                hook_timeout_ms: 250,
                memory_limit_mb: 128,
                command_prefix: "/".into()
            }
        );
        assert_eq!(c.whatsapp.url, "ws://127.0.0.1:9000/ws");
        assert_eq!(c.whatsapp.ping_interval_ms, 5000);
        assert_eq!(c.whatsapp.ping_timeout_ms, 2000);
        assert_eq!(c.whatsapp.login_timeout_ms, 7000);
        assert_eq!(c.whatsapp.version, Some((2, 3000, 1027934701)));
        assert_eq!(
            c.api,
            Some(ApiConfig {
                listen: "0.0.0.0:9090".parse().unwrap(),
                key: Some("sekrit".into()),
                metrics_public: true
            })
        );
        assert_eq!(
            c.webhooks,
            vec![
                WebhookConfig {
                    url: "https://example.org/hook".into(),
                    events: vec![
                        "state".into(),
                        "qr".into(),
                        "message".into(),
                        "script_error".into()
                    ],
                    secret: Some("hush".into())
                },
                WebhookConfig {
                    url: "http://localhost/only-qr".into(),
                    events: vec!["qr".into()],
                    secret: None
                },
            ]
        );
        assert_eq!(
            c.log,
            LogConfig {
                level: "debug".into(),
                format: LogFormat::Json
            }
        );
        assert_eq!(c.source, Some(PathBuf::from("/etc/moonwire/moonwire.toml")));
        assert_eq!(
            c.db_path(),
            PathBuf::from("/etc/moonwire/state/moonwire.db")
        );
    }

    #[test]
    fn dotted_and_inline_tables_are_accepted() {
        let c = parse(
            "reconnect.base_ms = 7\napi = { listen = \"127.0.0.1:1\" }\ninstance = [{ name = \"a\" }]\n",
        );
        assert_eq!(c.reconnect.base_ms, 7);
        assert_eq!(c.api.unwrap().listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.instances[0].name, "a");
    }

    #[test]
    fn file_relative_paths_resolve_against_the_file_directory() {
        let cwd = tempfile::tempdir().unwrap();
        let sub = cwd.path().join("conf");
        fs::create_dir(&sub).unwrap();
        fs::write(
            sub.join("mw.toml"),
            "data_dir = \"d\"\nscripts = \"../s\"\n",
        )
        .unwrap();
        let c = load(
            &Overrides::default(),
            &[(ENV_CONFIG, "conf/mw.toml")],
            cwd.path(),
        )
        .unwrap();
        assert_eq!(c.data_dir, sub.join("d"));
        assert_eq!(c.scripts, sub.join("../s"));
        assert_eq!(c.source, Some(sub.join("mw.toml")));
    }

    #[test]
    fn env_and_flag_relative_paths_resolve_against_cwd() {
        let cwd = tempfile::tempdir().unwrap();
        let sub = cwd.path().join("conf");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("mw.toml"), "data_dir = \"d\"\n").unwrap();
        let o = Overrides {
            config: Some("conf/mw.toml".into()),
            scripts: Some("./flag-scripts".into()),
            ..Overrides::default()
        };
        let c = load(&o, &[(ENV_DATA_DIR, "env-data")], cwd.path()).unwrap();
        assert_eq!(c.data_dir, cwd.path().join("env-data"));
        assert_eq!(c.scripts, cwd.path().join("flag-scripts"));
    }

    #[test]
    fn file_without_paths_keeps_defaults_under_cwd() {
        let cwd = tempfile::tempdir().unwrap();
        let sub = cwd.path().join("conf");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("mw.toml"), "[log]\nlevel = \"warn\"\n").unwrap();
        let c = load(
            &Overrides::default(),
            &[(ENV_CONFIG, "conf/mw.toml")],
            cwd.path(),
        )
        .unwrap();
        assert_eq!(c.data_dir, cwd.path().join("data"));
        assert_eq!(c.scripts, cwd.path().join("scripts"));
        assert_eq!(c.log.level, "warn");
    }

    // ---- which file -----------------------------------------------------

    #[test]
    fn implicit_file_is_read_only_if_present() {
        let cwd = tempfile::tempdir().unwrap();
        let c = load(&Overrides::default(), &[], cwd.path()).unwrap();
        assert_eq!(c.source, None);
        fs::write(
            cwd.path().join("moonwire.toml"),
            "[reconnect]\nbase_ms = 42\n",
        )
        .unwrap();
        let c = load(&Overrides::default(), &[], cwd.path()).unwrap();
        assert_eq!(c.source, Some(cwd.path().join("moonwire.toml")));
        assert_eq!(c.reconnect.base_ms, 42);
    }

    #[test]
    fn explicit_file_replaces_the_implicit_one() {
        let cwd = tempfile::tempdir().unwrap();
        fs::write(
            cwd.path().join("moonwire.toml"),
            "[reconnect]\nbase_ms = 1\n",
        )
        .unwrap();
        fs::write(cwd.path().join("env.toml"), "[reconnect]\nbase_ms = 2\n").unwrap();
        fs::write(cwd.path().join("flag.toml"), "[reconnect]\nbase_ms = 3\n").unwrap();
        let e = [(ENV_CONFIG, "env.toml")];
        let c = load(&Overrides::default(), &e, cwd.path()).unwrap();
        assert_eq!(c.reconnect.base_ms, 2);
        let o = Overrides {
            config: Some("flag.toml".into()),
            ..Overrides::default()
        };
        let c = load(&o, &e, cwd.path()).unwrap();
        assert_eq!(c.reconnect.base_ms, 3);
        assert_eq!(c.source, Some(cwd.path().join("flag.toml")));
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_the_path() {
        let cwd = tempfile::tempdir().unwrap();
        let o = Overrides {
            config: Some("nope.toml".into()),
            ..Overrides::default()
        };
        let err = load(&o, &[], cwd.path()).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }), "{err:?}");
        assert_contains(&err.to_string(), &["nope.toml", "--config", "not found"]);

        let msg = load_err(
            &Overrides::default(),
            &[(ENV_CONFIG, "/no/such/file.toml")],
            cwd.path(),
        );
        assert_contains(&msg, &["/no/such/file.toml", "MOONWIRE_CONFIG"]);

        let msg = load_err(&Overrides::default(), &[(ENV_CONFIG, "")], cwd.path());
        assert_contains(&msg, &["MOONWIRE_CONFIG", "empty"]);
    }

    #[test]
    fn errors_in_a_loaded_file_name_its_path() {
        let cwd = tempfile::tempdir().unwrap();
        fs::write(
            cwd.path().join("moonwire.toml"),
            "\n[reconnect]\nbase_ms = 0\n",
        )
        .unwrap();
        let msg = load_err(&Overrides::default(), &[], cwd.path());
        let want = format!(
            "{}:3: reconnect.base_ms: must be at least 1",
            cwd.path().join("moonwire.toml").display()
        );
        assert_eq!(msg, want);
    }

    // ---- precedence -----------------------------------------------------

    fn precedence_fixture() -> tempfile::TempDir {
        let cwd = tempfile::tempdir().unwrap();
        fs::write(
            cwd.path().join("moonwire.toml"),
            "data_dir = \"/file/data\"\nscripts = \"/file/scripts\"\n\
             [reconnect]\nbase_ms = 100\ncap_ms = 1000\n[log]\nlevel = \"warn\"\n",
        )
        .unwrap();
        cwd
    }

    const ENV_ALL: [(&str, &str); 5] = [
        (ENV_DATA_DIR, "/env/data"),
        (ENV_SCRIPTS, "/env/scripts"),
        (ENV_RECONNECT_BASE_MS, "200"),
        (ENV_RECONNECT_CAP_MS, "2000"),
        (ENV_LOG, "debug"),
    ];

    #[test]
    fn file_beats_defaults() {
        let cwd = precedence_fixture();
        let c = load(&Overrides::default(), &[], cwd.path()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/file/data"));
        assert_eq!(c.scripts, PathBuf::from("/file/scripts"));
        assert_eq!((c.reconnect.base_ms, c.reconnect.cap_ms), (100, 1000));
        assert_eq!(c.log.level, "warn");
        // Keys the file leaves out keep their defaults.
        assert_eq!(c.reconnect.stable_ms, 30000);
    }

    #[test]
    fn env_beats_file() {
        let cwd = precedence_fixture();
        let c = load(&Overrides::default(), &ENV_ALL, cwd.path()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/env/data"));
        assert_eq!(c.scripts, PathBuf::from("/env/scripts"));
        assert_eq!((c.reconnect.base_ms, c.reconnect.cap_ms), (200, 2000));
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn flags_beat_env() {
        let cwd = precedence_fixture();
        let o = Overrides {
            config: None,
            data_dir: Some("/flag/data".into()),
            scripts: Some("/flag/scripts".into()),
            reconnect_base_ms: Some(300),
            reconnect_cap_ms: Some(3000),
            log: Some("error".into()),
        };
        let c = load(&o, &ENV_ALL, cwd.path()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/flag/data"));
        assert_eq!(c.scripts, PathBuf::from("/flag/scripts"));
        assert_eq!((c.reconnect.base_ms, c.reconnect.cap_ms), (300, 3000));
        assert_eq!(c.log.level, "error");
    }

    #[test]
    fn each_layer_overrides_only_what_it_sets() {
        let cwd = precedence_fixture();
        let o = Overrides {
            reconnect_cap_ms: Some(5000),
            ..Overrides::default()
        };
        let c = load(&o, &[(ENV_RECONNECT_BASE_MS, "250")], cwd.path()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/file/data"));
        assert_eq!((c.reconnect.base_ms, c.reconnect.cap_ms), (250, 5000));
        assert_eq!(c.log.level, "warn");
    }

    #[test]
    fn env_api_settings() {
        let cwd = tempfile::tempdir().unwrap();
        let c = load(
            &Overrides::default(),
            &[(ENV_API_LISTEN, "127.0.0.1:7000")],
            cwd.path(),
        )
        .unwrap();
        let api = c.api.unwrap();
        assert_eq!(api.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(api.key, None);

        // A key alone turns the API on at the default (loopback) address.
        let c = load(&Overrides::default(), &[(ENV_API_KEY, "k")], cwd.path()).unwrap();
        let api = c.api.unwrap();
        assert_eq!(api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(api.key.as_deref(), Some("k"));

        fs::write(
            cwd.path().join("moonwire.toml"),
            "[api]\nlisten = \"0.0.0.0:1\"\nkey = \"file\"\nmetrics_public = true\n",
        )
        .unwrap();
        let c = load(
            &Overrides::default(),
            &[(ENV_API_LISTEN, "[::1]:2"), (ENV_API_KEY, "env")],
            cwd.path(),
        )
        .unwrap();
        assert_eq!(
            c.api,
            Some(ApiConfig {
                listen: "[::1]:2".parse().unwrap(),
                key: Some("env".into()),
                metrics_public: true
            })
        );
    }

    #[test]
    fn log_directives_from_env_and_flags() {
        let cwd = tempfile::tempdir().unwrap();
        let c = load(&Overrides::default(), &[(ENV_LOG, "DEBUG")], cwd.path()).unwrap();
        assert_eq!(c.log.level, "debug");
        let c = load(
            &Overrides::default(),
            &[(ENV_LOG, "info,moonwire::lifecycle=trace")],
            cwd.path(),
        )
        .unwrap();
        assert_eq!(c.log.level, "info,moonwire::lifecycle=trace");
        let o = Overrides {
            log: Some("moonwire=off".into()),
            ..Overrides::default()
        };
        assert_eq!(load(&o, &[], cwd.path()).unwrap().log.level, "moonwire=off");
        let o = Overrides {
            log: Some(" warn, moonwire=TRACE ,".into()),
            ..Overrides::default()
        };
        assert_eq!(
            load(&o, &[], cwd.path()).unwrap().log.level,
            "warn,moonwire=TRACE"
        );
    }

    // ---- cross-field backoff checks ------------------------------------

    #[test]
    fn cap_below_base_in_file() {
        let msg = file_err("[reconnect]\nbase_ms = 5000\ncap_ms = 100\n");
        assert_eq!(
            msg,
            "moonwire.toml:3: reconnect.cap_ms: must be at least reconnect.base_ms (5000, from moonwire.toml:2), got 100"
        );
    }

    #[test]
    fn cap_below_default_base() {
        let msg = file_err("[reconnect]\ncap_ms = 999\n");
        assert_contains(
            &msg,
            &[
                "moonwire.toml:2",
                "reconnect.cap_ms",
                "1000",
                "default",
                "999",
            ],
        );
    }

    #[test]
    fn cap_equal_to_base_is_fine() {
        let c = parse("[reconnect]\nbase_ms = 10\ncap_ms = 10\n");
        assert_eq!((c.reconnect.base_ms, c.reconnect.cap_ms), (10, 10));
    }

    #[test]
    fn cap_below_base_across_layers_blames_the_most_specific() {
        let cwd = precedence_fixture(); // base 100, cap 1000 in the file
        let msg = load_err(
            &Overrides::default(),
            &[(ENV_RECONNECT_BASE_MS, "5000")],
            cwd.path(),
        );
        assert_contains(
            &msg,
            &[
                "MOONWIRE_RECONNECT_BASE_MS",
                "reconnect.cap_ms",
                "1000",
                "moonwire.toml:5",
            ],
        );
        assert!(msg.starts_with("MOONWIRE_RECONNECT_BASE_MS: "), "{msg}");

        let o = Overrides {
            reconnect_cap_ms: Some(50),
            ..Overrides::default()
        };
        let msg = load_err(&o, &[], cwd.path());
        assert!(msg.starts_with("--reconnect-cap-ms: "), "{msg}");
        assert_contains(&msg, &["reconnect.base_ms", "100"]);

        // The default cap (60000) is below an env base of 100000.
        let empty = tempfile::tempdir().unwrap();
        let msg = load_err(
            &Overrides::default(),
            &[(ENV_RECONNECT_BASE_MS, "100000")],
            empty.path(),
        );
        assert!(msg.starts_with("MOONWIRE_RECONNECT_BASE_MS: "), "{msg}");
        assert_contains(&msg, &["60000", "default"]);

        // A later layer can repair a bad combination in an earlier one.
        fs::write(
            empty.path().join("moonwire.toml"),
            "[reconnect]\nbase_ms = 5000\ncap_ms = 100\n",
        )
        .unwrap();
        let c = load(
            &Overrides::default(),
            &[(ENV_RECONNECT_CAP_MS, "9000")],
            empty.path(),
        )
        .unwrap();
        assert_eq!((c.reconnect.base_ms, c.reconnect.cap_ms), (5000, 9000));
    }

    // ---- unknown keys, wrong types, syntax -------------------------------

    #[test]
    fn unknown_top_level_key() {
        let msg = file_err("data_dir = \"x\"\nbogus = 1\n");
        assert_contains(&msg, &["moonwire.toml:2: bogus: unknown field `bogus`"]);
    }

    #[test]
    fn unknown_top_level_table() {
        let msg = file_err("data_dir = \"x\"\n\n[bogus]\na = 1\n");
        assert_contains(&msg, &["moonwire.toml:3: bogus: unknown field `bogus`"]);
    }

    #[test]
    fn unknown_nested_key() {
        let msg = file_err("[reconnect]\nbase_ms = 1\n# comment = x\nfoo = 2\n");
        assert_contains(
            &msg,
            &["moonwire.toml:4: reconnect.foo: unknown field `foo`"],
        );
    }

    #[test]
    fn unknown_key_in_second_instance() {
        let msg = file_err("[[instance]]\nname = \"a\"\n\n[[instance]]\nnam = \"b\"\n");
        assert_contains(
            &msg,
            &["moonwire.toml:5: instance[1].nam: unknown field `nam`"],
        );
    }

    #[test]
    fn unknown_key_in_inline_and_dotted_tables() {
        let msg = file_err("api = { listen = \"127.0.0.1:1\", bogus = 1 }\n");
        assert_contains(&msg, &["moonwire.toml:1: api.bogus: unknown field `bogus`"]);
        let msg = file_err("log.colour = true\n");
        assert_contains(
            &msg,
            &["moonwire.toml:1: log.colour: unknown field `colour`"],
        );
    }

    #[test]
    fn wrong_types() {
        let msg = file_err("[reconnect]\nbase_ms = \"abc\"\n");
        assert_contains(&msg, &["moonwire.toml:2: reconnect.base_ms: invalid type"]);
        let msg = file_err("\n\n[reconnect]\nmax_per_minute = -1\n");
        assert_contains(&msg, &["moonwire.toml:4: reconnect.max_per_minute:", "-1"]);
        let msg = file_err("reconnect = 5\n");
        assert_contains(&msg, &["moonwire.toml:1: reconnect: invalid type"]);
        let msg = file_err("[api]\nmetrics_public = \"yes\"\n");
        assert_contains(&msg, &["moonwire.toml:2: api.metrics_public: invalid type"]);
        let msg = file_err("data_dir = 3\n");
        assert_contains(&msg, &["moonwire.toml:1: data_dir: invalid type"]);
    }

    #[test]
    fn wrong_type_inside_a_multiline_array() {
        let msg = file_err("[[webhook]]\nurl = \"https://x\"\nevents = [\n  \"qr\",\n  2,\n]\n");
        assert_contains(&msg, &["moonwire.toml:5: webhook[0].events: invalid type"]);
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let msg = file_err("data_dir = \"x\"\nscripts = \n");
        assert!(msg.starts_with("moonwire.toml:2: scripts: "), "{msg}");
        let msg = file_err("data_dir = \"x\"\ndata_dir = \"y\"\n");
        assert_contains(&msg, &["moonwire.toml:2: data_dir: duplicate key"]);
        assert!(!msg.contains('\n'), "{msg:?}");
    }

    // ---- impossible values ----------------------------------------------

    #[test]
    fn impossible_values_name_key_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "[reconnect]\nbase_ms = 0\n",
                "moonwire.toml:2: reconnect.base_ms: must be at least 1",
            ),
            (
                "[reconnect]\ncap_ms = 0\n",
                "moonwire.toml:2: reconnect.cap_ms: must be at least 1",
            ),
            (
                "[reconnect]\nmax_per_minute = 0\n",
                "moonwire.toml:2: reconnect.max_per_minute: must be at least 1",
            ),
            (
                "[reconnect]\nstable_ms = 0\n",
                "moonwire.toml:2: reconnect.stable_ms: must be at least 1",
            ),
            (
                "[script]\nhook_timeout_ms = 0\n",
                "moonwire.toml:2: script.hook_timeout_ms: must be at least 1",
            ),
            (
                "[script]\nmemory_limit_mb = 0\n",
                "moonwire.toml:2: script.memory_limit_mb: must be between 1 and 4096",
            ),
            (
                "[script]\nmemory_limit_mb = 4097\n",
                "moonwire.toml:2: script.memory_limit_mb: must be between 1 and 4096",
            ),
            (
                "[script]\ncommand_prefix = \"\"\n",
                "moonwire.toml:2: script.command_prefix: must not be empty",
            ),
            (
                "[script]\ncommand_prefix = \"! \"\n",
                "moonwire.toml:2: script.command_prefix: must not contain whitespace",
            ),
            (
                "[script]\ncommand_prefix = \"a\\tb\"\n",
                "moonwire.toml:2: script.command_prefix: must not contain whitespace",
            ),
            (
                "[[instance]]\nname = \"Main\"\n",
                "moonwire.toml:2: instance[0].name: must be 1-63",
            ),
            (
                "[[instance]]\nname = \"\"\n",
                "moonwire.toml:2: instance[0].name: must be 1-63",
            ),
            (
                "[[instance]]\nname = \"-a\"\n",
                "moonwire.toml:2: instance[0].name: must be 1-63",
            ),
            (
                "[[instance]]\nname = \"a b\"\n",
                "moonwire.toml:2: instance[0].name: must be 1-63",
            ),
            (
                "[[instance]]\nname = \"a\"\nchannel = \"telegram\"\n",
                "moonwire.toml:3: instance[0].channel: must be \"whatsapp\" or \"console\"",
            ),
            (
                "[whatsapp]\nversion = \"2.3000\"\n",
                "moonwire.toml:2: whatsapp.version: must be three numbers like \"2.3000.1027934701\", got \"2.3000\"",
            ),
            (
                "[whatsapp]\nversion = \"2.x.1\"\n",
                "moonwire.toml:2: whatsapp.version: must be three numbers like \"2.3000.1027934701\", got \"2.x.1\"",
            ),
            (
                "[whatsapp]\nping_timeout_ms = 0\n",
                "moonwire.toml:2: whatsapp.ping_timeout_ms: must be at least 1",
            ),
            (
                "[[instance]]\nname = \"a\"\nphone = \"12345\"\n",
                "moonwire.toml:3: instance[0].phone: must be 6 to 15 digits",
            ),
            (
                "[[instance]]\nname = \"a\"\nphone = \"1234567890123456\"\n",
                "moonwire.toml:3: instance[0].phone: must be 6 to 15 digits",
            ),
            (
                "[[instance]]\nname = \"a\"\nphone = \"+15551234567\"\n",
                "moonwire.toml:3: instance[0].phone: must be 6 to 15 digits",
            ),
            (
                "[[instance]]\nname = \"a\"\nphone = \"1555 123 4567\"\n",
                "moonwire.toml:3: instance[0].phone: must be 6 to 15 digits",
            ),
            (
                "[whatsapp]\nurl = \"https://web.whatsapp.com/ws/chat\"\n",
                "moonwire.toml:2: whatsapp.url: must be a ws:// or wss:// URL",
            ),
            (
                "[whatsapp]\nurl = \"wss://\"\n",
                "moonwire.toml:2: whatsapp.url: must be a ws:// or wss:// URL",
            ),
            (
                "[api]\nlisten = \"localhost\"\n",
                "moonwire.toml:2: api.listen: expected an address like 127.0.0.1:8080",
            ),
            (
                "[api]\nlisten = \"127.0.0.1:99999\"\n",
                "moonwire.toml:2: api.listen: expected an address",
            ),
            (
                "[api]\nkey = \"\"\n",
                "moonwire.toml:2: api.key: must not be empty",
            ),
            (
                "[[webhook]]\nurl = \"ftp://example.org\"\n",
                "moonwire.toml:2: webhook[0].url: must be an http:// or https:// URL",
            ),
            (
                "[[webhook]]\nurl = \"example.org\"\n",
                "moonwire.toml:2: webhook[0].url: must be an http:// or https:// URL",
            ),
            (
                "[[webhook]]\nurl = \"https://x\"\nevents = []\n",
                "moonwire.toml:3: webhook[0].events: must name at least one of",
            ),
            (
                "[[webhook]]\nurl = \"https://x\"\nevents = [\"qr\", \"typing\"]\n",
                "moonwire.toml:3: webhook[0].events: unknown event \"typing\"",
            ),
            (
                "[[webhook]]\nurl = \"https://x\"\nevents = [\"qr\", \"qr\"]\n",
                "moonwire.toml:3: webhook[0].events: \"qr\" listed twice",
            ),
            (
                "[[webhook]]\nurl = \"https://x\"\nsecret = \"\"\n",
                "moonwire.toml:3: webhook[0].secret: must not be empty",
            ),
            (
                "[[webhook]]\nevents = [\"qr\"]\n",
                "moonwire.toml:1: webhook[0].url: required",
            ),
            (
                "[log]\nlevel = \"verbose\"\n",
                "moonwire.toml:2: log.level: must be one of trace/debug/info/warn/error",
            ),
            (
                "[log]\nlevel = \"info,moonwire=debug\"\n",
                "moonwire.toml:2: log.level: must be one of",
            ),
            (
                "[log]\nformat = \"xml\"\n",
                "moonwire.toml:2: log.format: must be \"text\" or \"json\"",
            ),
            (
                "data_dir = \"\"\n",
                "moonwire.toml:1: data_dir: must not be empty",
            ),
            (
                "scripts = \"\"\n",
                "moonwire.toml:1: scripts: must not be empty",
            ),
        ];
        for (text, want) in cases {
            let msg = file_err(text);
            assert!(
                msg.starts_with(want),
                "for {text:?}:\n got  {msg}\n want {want}..."
            );
        }
    }

    #[test]
    fn error_message_matches_the_documented_shape() {
        let text = "data_dir = \"d\"\n\n[[instance]]\nname = \"a\"\n\n[reconnect]\nbase_ms = 0\n";
        assert_eq!(
            file_err(text),
            "moonwire.toml:7: reconnect.base_ms: must be at least 1"
        );
    }

    #[test]
    fn boundary_values_are_accepted() {
        let c = parse(
            "[[instance]]\nname = \"a\"\nphone = \"123456\"\n\
             [[instance]]\nname = \"b\"\nphone = \"123456789012345\"\n\
             [reconnect]\nbase_ms = 1\ncap_ms = 1\nstable_ms = 1\nmax_per_minute = 1\n\
             [script]\nhook_timeout_ms = 1\nmemory_limit_mb = 4096\ncommand_prefix = \"!!\"\n\
             [whatsapp]\nurl = \"WSS://host\"\n",
        );
        assert_eq!(c.script.memory_limit_mb, 4096);
        assert_eq!(c.script.command_prefix, "!!");
        assert_eq!(c.instances[1].phone.as_deref(), Some("123456789012345"));
        assert_eq!(
            parse("[script]\nmemory_limit_mb = 1\n")
                .script
                .memory_limit_mb,
            1
        );
        assert_eq!(parse("[log]\nlevel = \"WARN\"\n").log.level, "warn");
    }

    // ---- instances --------------------------------------------------------

    #[test]
    fn absent_instance_gives_default() {
        let c = parse("data_dir = \"x\"\n");
        assert_eq!(c.instances, vec![InstanceConfig::default()]);
        assert_eq!(c.instances[0].name, "default");
        assert_eq!(c.instances[0].channel, ChannelKind::Whatsapp);
    }

    #[test]
    fn instance_channel_defaults_to_whatsapp() {
        let c = parse("[[instance]]\nname = \"a\"\n");
        assert_eq!(c.instances[0].channel, ChannelKind::Whatsapp);
        assert_eq!(c.instances[0].phone, None);
    }

    #[test]
    fn duplicate_instance_names() {
        let msg = file_err(
            "[[instance]]\nname = \"bot\"\n\n[[instance]]\nname = \"other\"\n\n[[instance]]\nname = \"bot\"\n",
        );
        assert_eq!(
            msg,
            "moonwire.toml:8: instance[2].name: duplicate instance name \"bot\" (first at line 2)"
        );
    }

    #[test]
    fn instance_name_is_required_and_list_not_empty() {
        let msg = file_err("[[instance]]\nname = \"a\"\n[[instance]]\nchannel = \"console\"\n");
        assert_eq!(msg, "moonwire.toml:3: instance[1].name: required");
        let msg = file_err("instance = []\n");
        assert_contains(
            &msg,
            &["moonwire.toml:1: instance: must list at least one instance"],
        );
    }

    #[test]
    fn instance_name_rule() {
        let ok = ["a", "0", "bot-1", "bot_1", "a-", &"a".repeat(63)];
        for n in ok {
            assert!(valid_instance_name(n), "{n:?} should be valid");
        }
        let long = "a".repeat(64);
        let bad = ["", "-a", "_a", "A", "aB", "a.b", "a b", "é", long.as_str()];
        for n in bad {
            assert!(!valid_instance_name(n), "{n:?} should be invalid");
        }
    }

    // ---- api and webhooks ---------------------------------------------------

    #[test]
    fn api_absent_is_none_and_empty_table_uses_defaults() {
        assert_eq!(parse("data_dir = \"x\"\n").api, None);
        assert_eq!(parse("[api]\n").api, Some(ApiConfig::default()));
        assert_eq!(
            ApiConfig::default().listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn webhook_events_default_to_all() {
        let c = parse("[[webhook]]\nurl = \"https://x/y\"\n");
        assert_eq!(
            c.webhooks[0].events,
            WEBHOOK_EVENTS.map(String::from).to_vec()
        );
        assert_eq!(c.webhooks[0].secret, None);
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Config::from_toml_str(FULL, Path::new("/etc/moonwire.toml")).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sekrit"), "{dbg}");
        assert!(!dbg.contains("hush"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    // ---- bad env and flag values ------------------------------------------

    #[test]
    fn bad_env_values_name_the_variable() {
        let cwd = tempfile::tempdir().unwrap();
        let o = Overrides::default();
        assert_eq!(
            load_err(&o, &[(ENV_RECONNECT_BASE_MS, "abc")], cwd.path()),
            "MOONWIRE_RECONNECT_BASE_MS: expected a whole number of milliseconds, got \"abc\""
        );
        assert_eq!(
            load_err(&o, &[(ENV_RECONNECT_CAP_MS, "-5")], cwd.path()),
            "MOONWIRE_RECONNECT_CAP_MS: expected a whole number of milliseconds, got \"-5\""
        );
        assert_eq!(
            load_err(&o, &[(ENV_RECONNECT_BASE_MS, "1.5")], cwd.path()),
            "MOONWIRE_RECONNECT_BASE_MS: expected a whole number of milliseconds, got \"1.5\""
        );
        assert_eq!(
            load_err(&o, &[(ENV_RECONNECT_BASE_MS, "0")], cwd.path()),
            "MOONWIRE_RECONNECT_BASE_MS: must be at least 1"
        );
        assert_eq!(
            load_err(&o, &[(ENV_RECONNECT_CAP_MS, "0")], cwd.path()),
            "MOONWIRE_RECONNECT_CAP_MS: must be at least 1"
        );
        let cases: &[(&str, &str, &str)] = &[
            (ENV_API_LISTEN, "8080", "expected an address"),
            (ENV_API_LISTEN, "", "expected an address"),
            (ENV_API_KEY, "", "must not be empty"),
            (ENV_LOG, "", "must not be empty"),
            (ENV_LOG, "loud", "bad directive"),
            (ENV_LOG, "moonwire=loud", "bad directive"),
            (ENV_LOG, "=debug", "bad directive"),
            (ENV_LOG, "info, moonwire = debug", "bad directive"),
            (ENV_LOG, "debgu", "bad directive"),
            (ENV_LOG, ",", "no directives"),
            (ENV_DATA_DIR, "", "must not be empty"),
            (ENV_SCRIPTS, "", "must not be empty"),
        ];
        for (var, val, want) in cases {
            let msg = load_err(&o, &[(var, val)], cwd.path());
            assert!(msg.starts_with(&format!("{var}: ")), "{var}={val:?}: {msg}");
            assert!(msg.contains(want), "{var}={val:?}: {msg}");
        }
        // Surrounding whitespace in numbers is forgiven.
        let c = load(&o, &[(ENV_RECONNECT_BASE_MS, " 20 ")], cwd.path()).unwrap();
        assert_eq!(c.reconnect.base_ms, 20);
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        let cwd = tempfile::tempdir().unwrap();
        let o = Overrides {
            reconnect_base_ms: Some(0),
            ..Overrides::default()
        };
        assert_eq!(
            load_err(&o, &[], cwd.path()),
            "--reconnect-base-ms: must be at least 1"
        );
        let o = Overrides {
            reconnect_cap_ms: Some(0),
            ..Overrides::default()
        };
        assert_eq!(
            load_err(&o, &[], cwd.path()),
            "--reconnect-cap-ms: must be at least 1"
        );
        let o = Overrides {
            log: Some(String::new()),
            ..Overrides::default()
        };
        assert_eq!(load_err(&o, &[], cwd.path()), "--log: must not be empty");
        let o = Overrides {
            data_dir: Some(PathBuf::new()),
            ..Overrides::default()
        };
        assert_eq!(
            load_err(&o, &[], cwd.path()),
            "--data-dir: must not be empty"
        );
        let o = Overrides {
            config: Some(PathBuf::new()),
            ..Overrides::default()
        };
        assert_eq!(load_err(&o, &[], cwd.path()), "--config: must not be empty");
    }

    #[test]
    fn flags_are_checked_even_when_env_is_bad_first() {
        // Env is applied before flags, so a bad env value is reported even if
        // a flag would have replaced it: the environment is still wrong.
        let cwd = tempfile::tempdir().unwrap();
        let o = Overrides {
            reconnect_base_ms: Some(10),
            ..Overrides::default()
        };
        let msg = load_err(&o, &[(ENV_RECONNECT_BASE_MS, "x")], cwd.path());
        assert!(msg.starts_with("MOONWIRE_RECONNECT_BASE_MS: "), "{msg}");
    }

    // ---- small helpers ------------------------------------------------------

    #[test]
    fn enum_names_round_trip() {
        for k in [ChannelKind::Whatsapp, ChannelKind::Console] {
            assert_eq!(ChannelKind::parse(k.as_str()), Some(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(ChannelKind::parse("WhatsApp"), None);
        for f in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(LogFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(LogFormat::parse("yaml"), None);
    }

    #[test]
    fn resolve_is_lexical() {
        assert_eq!(
            resolve(Path::new("/a"), Path::new("./b")),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            resolve(Path::new("/a"), Path::new("/b")),
            PathBuf::from("/b")
        );
        assert_eq!(resolve(Path::new(""), Path::new("./b")), PathBuf::from("b"));
        assert_eq!(resolve(Path::new(""), Path::new(".")), PathBuf::from("."));
        assert_eq!(
            resolve(Path::new("/a"), Path::new(".")),
            PathBuf::from("/a")
        );
    }

    #[test]
    fn relative_origin_resolves_relative_paths() {
        let c =
            Config::from_toml_str("data_dir = \"./d\"\n", Path::new("conf/moonwire.toml")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("conf/d"));
        let c = parse("data_dir = \"./d\"\n");
        assert_eq!(c.data_dir, PathBuf::from("d"));
    }
}

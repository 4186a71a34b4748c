//! Reading moonwire.toml: the raw shapes serde fills, and the checks that
//! turn them into a `Config` with errors naming file, line and key.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    data_dir: Option<Spanned<String>>,
    scripts: Option<Spanned<String>>,
    instance: Option<Spanned<Vec<RawInstance>>>,
    reconnect: Option<RawReconnect>,
    script: Option<RawScript>,
    store: Option<RawStore>,
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
    scripts: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    base_ms: Option<Spanned<u64>>,
    cap_ms: Option<Spanned<u64>>,
    factor: Option<Spanned<u32>>,
    stable_ms: Option<Spanned<u64>>,
    max_per_minute: Option<Spanned<u32>>,
    flap_closes: Option<Spanned<u32>>,
    flap_window_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    hook_timeout_ms: Option<Spanned<u64>>,
    memory_limit_mb: Option<Spanned<u64>>,
    command_prefix: Option<Spanned<String>>,
    handler_deadline_ms: Option<Spanned<u64>>,
    workers: Option<Spanned<u64>>,
    max_waiting: Option<Spanned<u64>>,
    max_media_mb: Option<Spanned<u64>>,
    timezone: Option<Spanned<String>>,
    http: Option<RawScriptHttp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScriptHttp {
    timeout_ms: Option<Spanned<u64>>,
    max_body_mb: Option<Spanned<u64>>,
    max_in_flight: Option<Spanned<usize>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    inbox_keep_days: Option<Spanned<u64>>,
    inbox_keep_rows: Option<Spanned<u64>>,
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

/// A larger factor reaches the cap within two or three failures anyway.
const MAX_BACKOFF_FACTOR: u32 = 10;

pub(super) fn parse_file(text: &str, origin: &Path) -> Result<Layered, ConfigError> {
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
        l.config.instances = parse_instances(&ctx, list, base_dir)?;
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
        if let Some(v) = &r.factor {
            let f = *v.get_ref();
            if !(1..=MAX_BACKOFF_FACTOR).contains(&f) {
                return Err(ctx.err(
                    v,
                    "reconnect.factor",
                    format!("must be between 1 and {MAX_BACKOFF_FACTOR}, got {f}"),
                ));
            }
            c.factor = f;
        }
        if let Some(v) = &r.flap_closes {
            c.flap_closes = ctx.positive(v, "reconnect.flap_closes")?;
        }
        if let Some(v) = &r.flap_window_ms {
            c.flap_window_ms = ctx.positive(v, "reconnect.flap_window_ms")?;
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
        if let Some(v) = &s.handler_deadline_ms {
            c.handler_deadline_ms = ctx.positive(v, "script.handler_deadline_ms")?;
        }
        if let Some(v) = &s.workers {
            let n = *v.get_ref();
            if n == 0 || n > MAX_WORKERS {
                return Err(ctx.err(
                    v,
                    "script.workers",
                    format!("must be between 1 and {MAX_WORKERS}, got {n}"),
                ));
            }
            c.workers = Some(n);
        }
        if let Some(v) = &s.max_waiting {
            c.max_waiting = ctx.positive(v, "script.max_waiting")?;
        }
        if let Some(v) = &s.max_media_mb {
            let mb = *v.get_ref();
            if mb == 0 || mb > MAX_MEDIA_MB {
                return Err(ctx.err(
                    v,
                    "script.max_media_mb",
                    format!("must be between 1 and {MAX_MEDIA_MB}, got {mb}"),
                ));
            }
            c.max_media_mb = mb;
        }
        if let Some(v) = &s.timezone {
            check_timezone(v.get_ref()).map_err(|m| ctx.err(v, "script.timezone", m))?;
            c.timezone = Some(v.get_ref().clone());
        }
        if let Some(h) = &s.http {
            parse_script_http(&ctx, h, &mut c.http)?;
        }
    }

    if let Some(st) = &raw.store {
        let c = &mut l.config.store;
        for (v, key, max, slot) in [
            (
                &st.inbox_keep_days,
                "store.inbox_keep_days",
                MAX_INBOX_KEEP_DAYS,
                &mut c.inbox_keep_days,
            ),
            (
                &st.inbox_keep_rows,
                "store.inbox_keep_rows",
                MAX_INBOX_KEEP_ROWS,
                &mut c.inbox_keep_rows,
            ),
        ] {
            if let Some(v) = v {
                let n = *v.get_ref();
                if n == 0 || n > max {
                    return Err(ctx.err(v, key, format!("must be between 1 and {max}, got {n}")));
                }
                *slot = n;
            }
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

fn check_timezone(name: &str) -> Result<(), String> {
    match jiff::tz::db().get(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\""
        )),
    }
}

fn parse_script_http(
    ctx: &FileCtx<'_>,
    h: &RawScriptHttp,
    c: &mut ScriptHttpConfig,
) -> Result<(), ConfigError> {
    if let Some(v) = &h.timeout_ms {
        c.timeout_ms = ctx.positive(v, "script.http.timeout_ms")?;
    }
    if let Some(v) = &h.max_body_mb {
        let mb = *v.get_ref();
        if mb == 0 || mb > MAX_HTTP_BODY_MB {
            return Err(ctx.err(
                v,
                "script.http.max_body_mb",
                format!("must be between 1 and {MAX_HTTP_BODY_MB}, got {mb}"),
            ));
        }
        c.max_body_mb = mb;
    }
    if let Some(v) = &h.max_in_flight {
        let n = *v.get_ref();
        if n == 0 || n > MAX_HTTP_IN_FLIGHT {
            return Err(ctx.err(
                v,
                "script.http.max_in_flight",
                format!("must be between 1 and {MAX_HTTP_IN_FLIGHT}, got {n}"),
            ));
        }
        c.max_in_flight = n;
    }
    if let Some(list) = &h.allow {
        let mut allow = crate::automation::net::AllowList::default();
        for entry in list.get_ref() {
            allow
                .add(entry.get_ref())
                .map_err(|e| ctx.err(entry, "script.http.allow", e.to_string()))?;
        }
        c.allow = allow;
    }
    Ok(())
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
    base_dir: &Path,
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
        let scripts = match &raw.scripts {
            Some(v) => Some(resolve(
                base_dir,
                Path::new(file_path(ctx, v, &key("scripts"))?),
            )),
            None => None,
        };
        out.push(InstanceConfig {
            name: name.clone(),
            channel,
            phone,
            scripts,
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

pub(super) fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A best-effort dotted key for the line holding `offset` (the toml crate
/// knows the key but does not expose it).
pub(super) fn key_at(text: &str, offset: usize) -> String {
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

pub(super) fn header_name(line: &str) -> Option<String> {
    let t = line.trim_start_matches('[');
    let end = t.find(']')?;
    Some(clean_key(&t[..end]))
}

pub(super) fn clean_key(k: &str) -> String {
    k.split('.')
        .map(|s| s.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// Line of the `i`th `[[name]]` header, for errors about a missing field.
pub(super) fn array_table_line(text: &str, name: &str, i: usize) -> Option<usize> {
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

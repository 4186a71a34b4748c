//! The environment and flag layers, and the value checks all layers share.

use super::*;

pub(super) fn apply_env(
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

pub(super) fn apply_overrides(
    l: &mut Layered,
    o: &Overrides,
    cwd: &Path,
) -> Result<(), ConfigError> {
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

pub(super) fn env_err(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.to_string(),
        message: message.into(),
    }
}

pub(super) fn non_empty_env_path(var: &str, v: &str) -> Result<PathBuf, ConfigError> {
    if v.is_empty() {
        return Err(env_err(var, "must not be empty"));
    }
    Ok(PathBuf::from(v))
}

pub(super) fn non_empty_path(p: &Path, src: Source) -> Result<PathBuf, ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(src.error("", "must not be empty"));
    }
    Ok(p.to_path_buf())
}

pub(super) fn parse_env_ms(var: &str, v: &str) -> Result<u64, ConfigError> {
    v.trim().parse::<u64>().map_err(|_| {
        env_err(
            var,
            format!("expected a whole number of milliseconds, got {v:?}"),
        )
    })
}

pub(super) fn positive_ms(ms: u64, src: &Source) -> Result<u64, ConfigError> {
    if ms == 0 {
        return Err(src.error("", "must be at least 1"));
    }
    Ok(ms)
}

/// Accepts a plain level (normalised to lower case) or an EnvFilter-style
/// directive list. Bare words must be levels, so that a typo such as `debgu`
/// is caught instead of silently becoming a target filter; only the shape is
/// checked here, the logger has the last word.
pub(super) fn parse_log_directive(v: &str) -> Result<String, String> {
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
pub(super) fn resolve(base: &Path, p: &Path) -> PathBuf {
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

pub(super) fn check_phone(phone: &str) -> Result<(), String> {
    let ok = (6..=15).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 6 to 15 digits with the country code and no '+' or spaces, got {phone:?}"
        ))
    }
}

pub(super) fn check_command_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_string());
    }
    if prefix.chars().any(char::is_whitespace) {
        return Err(format!("must not contain whitespace, got {prefix:?}"));
    }
    Ok(())
}

/// `"2.3000.1027934701"` → `(2, 3000, 1027934701)`.
pub(super) fn parse_version(s: &str) -> Result<(u32, u32, u32), String> {
    let bad = || format!("must be three numbers like \"2.3000.1027934701\", got {s:?}");
    let mut parts = s.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c), None) => Ok((a?, b?, c?)),
        _ => Err(bad()),
    }
}

pub(super) fn has_scheme_and_rest(url: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|s| {
        url.get(..s.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(s))
            && url.len() > s.len()
            && !url.chars().any(char::is_whitespace)
    })
}

pub(super) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("expected an address like 127.0.0.1:8080, got {s:?}"))
}

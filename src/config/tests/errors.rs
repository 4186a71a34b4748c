//! Config tests: every bad input is an error that names its key and place.

use super::*;

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
            "[reconnect]\nfactor = 0\n",
            "moonwire.toml:2: reconnect.factor: must be between 1 and 10, got 0",
        ),
        (
            "[reconnect]\nfactor = 11\n",
            "moonwire.toml:2: reconnect.factor: must be between 1 and 10, got 11",
        ),
        (
            "[reconnect]\nflap_closes = 0\n",
            "moonwire.toml:2: reconnect.flap_closes: must be at least 1",
        ),
        (
            "[reconnect]\nflap_window_ms = 0\n",
            "moonwire.toml:2: reconnect.flap_window_ms: must be at least 1",
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
            "[script]\nhandler_deadline_ms = 0\n",
            "moonwire.toml:2: script.handler_deadline_ms: must be at least 1",
        ),
        (
            "[script]\nworkers = 0\n",
            "moonwire.toml:2: script.workers: must be between 1 and 256",
        ),
        (
            "[script]\nworkers = 257\n",
            "moonwire.toml:2: script.workers: must be between 1 and 256",
        ),
        (
            "[script]\nmax_waiting = 0\n",
            "moonwire.toml:2: script.max_waiting: must be at least 1",
        ),
        (
            "[script]\nmax_media_mb = 0\n",
            "moonwire.toml:2: script.max_media_mb: must be between 1 and 2048, got 0",
        ),
        (
            "[script]\nmax_media_mb = 4096\n",
            "moonwire.toml:2: script.max_media_mb: must be between 1 and 2048, got 4096",
        ),
        (
            "[store]\ninbox_keep_days = 0\n",
            "moonwire.toml:2: store.inbox_keep_days: must be between 1 and 3650, got 0",
        ),
        (
            "\n[store]\ninbox_keep_rows = 100\ninbox_keep_days = 3651\n",
            "moonwire.toml:4: store.inbox_keep_days: must be between 1 and 3650, got 3651",
        ),
        (
            "[store]\ninbox_keep_rows = 0\n",
            "moonwire.toml:2: store.inbox_keep_rows: must be between 1 and 100000000, got 0",
        ),
        (
            "[store]\ninbox_keep_rows = -5\n",
            "moonwire.toml:2: store.inbox_keep_rows: invalid value",
        ),
        (
            "[store]\ninbox_keep = 5\n",
            "moonwire.toml:2: store.inbox_keep: unknown field `inbox_keep`",
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
    let c = Config::from_toml_str("data_dir = \"./d\"\n", Path::new("conf/moonwire.toml")).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("conf/d"));
    let c = parse("data_dir = \"./d\"\n");
    assert_eq!(c.data_dir, PathBuf::from("d"));
}

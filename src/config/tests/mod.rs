//! Config tests: defaults, layering and precedence; errors in `errors.rs`.

use super::*;
use std::fs;

mod automation;
mod errors;

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
scripts = "./sim"

[reconnect]
base_ms = 500
cap_ms = 30000
factor = 3
stable_ms = 10000
max_per_minute = 6
flap_closes = 8
flap_window_ms = 120000

[script]
hook_timeout_ms = 250
memory_limit_mb = 128
command_prefix = "/"
handler_deadline_ms = 9000
workers = 3
max_waiting = 17
max_media_mb = 16
timezone = "America/New_York"

[store]
inbox_keep_days = 30
inbox_keep_rows = 5000

[script.http]
timeout_ms = 2500
max_body_mb = 2
max_in_flight = 3
allow = ["192.168.1.10", "*.lan", "nas.home"]

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
            phone: None,
            scripts: None,
        }]
    );
    assert_eq!(
        c.reconnect,
        ReconnectConfig {
            base_ms: 1000,
            cap_ms: 60000,
            factor: 2,
            stable_ms: 30000,
            max_per_minute: 12,
            flap_closes: 5,
            flap_window_ms: 60000,
        }
    );
    assert_eq!(c.script.hook_timeout_ms, 1000);
    assert_eq!(c.script.memory_limit_mb, 64);
    assert_eq!(c.script.command_prefix, "!");
    assert_eq!(c.script.timezone, None);
    assert_eq!(
        (c.store.inbox_keep_days, c.store.inbox_keep_rows),
        (7, 100_000)
    );
    assert_eq!(
        c.script.http,
        ScriptHttpConfig {
            timeout_ms: 10_000,
            max_body_mb: 8,
            max_in_flight: 4,
            allow: Default::default(),
        }
    );
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
                phone: Some("15551234567".into()),
                scripts: None,
            },
            InstanceConfig {
                name: "sim_1".into(),
                channel: ChannelKind::Console,
                phone: None,
                scripts: Some(PathBuf::from("/etc/moonwire/sim")),
            },
        ]
    );
    assert_eq!(
        c.reconnect,
        ReconnectConfig {
            base_ms: 500,
            cap_ms: 30000,
            factor: 3,
            stable_ms: 10000,
            max_per_minute: 6,
            flap_closes: 8,
            flap_window_ms: 120000,
        }
    );
    assert_eq!(
        c.script,
        ScriptConfig {
            hook_timeout_ms: 250,
            memory_limit_mb: 128,
            command_prefix: "/".into(),
            handler_deadline_ms: 9000,
            workers: Some(3),
            max_waiting: 17,
            max_media_mb: 16,
            timezone: Some("America/New_York".into()),
            http: ScriptHttpConfig {
                timeout_ms: 2500,
                max_body_mb: 2,
                max_in_flight: 3,
                allow: crate::automation::net::AllowList::parse(&[
                    "192.168.1.10",
                    "*.lan",
                    "nas.home"
                ])
                .unwrap(),
            },
        }
    );
    assert_eq!(
        c.store,
        StoreConfig {
            inbox_keep_days: 30,
            inbox_keep_rows: 5000
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
